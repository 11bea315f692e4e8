"""The toolchains the fixtures are built with: each works, or its tests say why they skip.

Locally a missing or broken cross toolchain only skips the tests of its
architecture (see ``elfbuild.toolchain_problem``).  In CI (``CI=true``) every
toolchain must work, so a package that ``.ci/run`` forgot to install fails here
with the package names instead of hiding behind skips.
"""

import os
import shutil

import elfbuild as eb
import pytest

IN_CI = os.environ.get("CI") == "true"
# Tools the tests run besides the compilers: executable -> Debian package.
TOOLS = {"readelf": "binutils", "strip": "binutils", "objcopy": "binutils",
         "patchelf": "patchelf", "qemu-aarch64": "qemu-user", "qemu-arm": "qemu-user",
         "qemu-i386": "qemu-user", "qemu-s390x": "qemu-user", "qemu-ppc": "qemu-user"}


def test_probe_tells_a_broken_toolchain_from_a_working_one(tmp_path, monkeypatch):
    if not eb.usable_cc("gcc"):
        pytest.skip(eb.toolchain_problem("gcc"))
    # A "cross compiler" that compiles but cannot find its C runtime, as gcc-X without
    # libc6-dev-X-cross does: it must be reported broken, with the linker's words.
    fake = tmp_path / "fake-linux-gnu-gcc"
    fake.write_text('#!/bin/sh\nexec gcc -nostartfiles -B/nonexistent "$@" '
                    '/nonexistent/crti.o\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    problem = eb.toolchain_problem("fake-linux-gnu-gcc")
    assert problem is not None and "cannot link" in problem and "crti.o" in problem
    missing = eb.toolchain_problem("no-such-linux-gnu-gcc")
    assert missing.startswith("no-such-linux-gnu-gcc not installed")


@pytest.mark.skipif(not IN_CI, reason="only CI must have every toolchain (.ci/run installs them)")
def test_every_toolchain_and_tool_works_in_ci():
    broken = {exe: eb.toolchain_problem(exe) for exe in eb.TOOLCHAINS}
    broken = {exe: why for exe, why in broken.items() if why}
    missing = {tool: pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None}
    assert not broken and not missing, (
        "CI lacks toolchains or tools that tests need; add their packages to .ci/run: "
        + "; ".join(list(broken.values()) + [f"{t} (Debian: {p})" for t, p in missing.items()]))
