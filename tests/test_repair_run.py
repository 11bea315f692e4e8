"""Repaired wheels run: the real loaders load them with the original libraries gone.

Oracles: the repaired wheel is installed with pip into a fresh venv and
imported in a subprocess with the original libraries moved away (and the
unrepaired wheel fails there); the musl program runs under
/lib/ld-musl-x86_64.so.1; the aarch64 program runs under qemu-aarch64 with
the aarch64 sysroot.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from elfbuild import compile_c, have_compiler
from realwheels import glibc_tag_for, readelf_dynamic, readelf_version_needs
from repair_support import (
    DATA_CODE,
    EXT,
    MUSL_LOADER,
    NEEDS_GCC_AND_READELF,
    PY,
    check_record,
    clean_env,
    expected_name,
    extract,
    hidden,
    members,
    venv_with,
)
from wheelbuild import build_wheel

from fastelf.repair import repair_wheel

pytestmark = NEEDS_GCC_AND_READELF


# ------------------------------------------------------------------ it runs

def test_repaired_wheel_imports_in_a_fresh_venv(fx, repaired, tmp_path):
    res, _x = repaired
    good = venv_with(res.output, tmp_path / "good")
    bad = venv_with(fx.wheel, tmp_path / "bad")
    code = "import pkg, pkg.sub; print(pkg.value(), pkg.sub.value())"
    # control: the unrepaired wheel works only while the loader can find the originals
    ok = subprocess.run([str(bad), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                        env=clean_env(LD_LIBRARY_PATH=str(fx.private)))
    assert ok.stdout.split() == ["42", "80"], ok.stderr
    with hidden(fx.private):
        run = subprocess.run([str(good), "-c", code], capture_output=True, text=True,
                             cwd=tmp_path, env=clean_env())
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["42", "80"]
        fail = subprocess.run([str(bad), "-c", code], capture_output=True, text=True,
                              cwd=tmp_path, env=clean_env())
        assert fail.returncode != 0
        assert "ImportError" in fail.stderr and "libbaz.so.2" in fail.stderr
    # pip installed the grafted libraries where the extension's RPATH points
    site = next((tmp_path / "good" / "lib").glob("python*/site-packages"))
    assert sorted(p.name for p in (site / "pkg.libs").iterdir()) == sorted(
        Path(m).name for _h, m in res.grafted.values())


def test_musl_program_runs_under_the_musl_loader(musl, tmp_path):
    libs = musl.libs
    # the expected output, from the real musl loader with the originals on its path
    ref = subprocess.run([MUSL_LOADER, "--library-path", str(libs), str(musl.prog)],
                         capture_output=True, text=True, check=True).stdout
    assert ref == "musl value 30\n"
    res = repair_wheel(musl.wheel, tmp_path / "out", ldpaths=str(libs))
    assert res.tags == ["musllinux_1_1_x86_64"]
    check_record(res.output)
    x = extract(res.output, tmp_path / "x")
    names = {p.name: expected_name(p.name, hashlib.sha256(p.read_bytes()).hexdigest())
             for p in (musl.dep, musl.val)}
    assert sorted(p.name for p in (x / "mpkg.libs").iterdir()) == sorted(names.values())
    d = readelf_dynamic(x / "mpkg/bin/prog")
    assert names["libmval.so.3"] in d["NEEDED"] and d["RPATH"] == "$ORIGIN/../../mpkg.libs"
    assert readelf_dynamic(x / "mpkg.libs" / names["libmval.so.3"])["RPATH"] == "$ORIGIN"
    assert os.access(x / "mpkg/bin/prog", os.X_OK)              # the mode survived
    unrepaired = extract(musl.wheel, tmp_path / "y")
    with hidden(libs):
        run = subprocess.run([MUSL_LOADER, str(x / "mpkg/bin/prog")], capture_output=True,
                             text=True, env=clean_env())
        assert (run.returncode, run.stdout) == (0, ref), run.stderr
        run = subprocess.run([str(x / "mpkg/bin/prog")], capture_output=True, text=True,
                             env=clean_env())                   # via its PT_INTERP
        assert (run.returncode, run.stdout) == (0, ref), run.stderr
        fail = subprocess.run([MUSL_LOADER, str(unrepaired / "mpkg/bin/prog")],
                              capture_output=True, text=True, env=clean_env())
        assert fail.returncode != 0 and "libmval.so.3" in fail.stderr


QEMU_AARCH64 = shutil.which("qemu-aarch64")
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"


@pytest.mark.skipif(not have_compiler("aarch64") or QEMU_AARCH64 is None or not os.path.exists(
    f"{AARCH64_SYSROOT}/lib/ld-linux-aarch64.so.1"), reason="aarch64 gcc and qemu-aarch64 needed")
def test_aarch64_program_repaired_on_x86_64_runs_under_qemu(tmp_path):
    libs = tmp_path / "alibs"
    lib = compile_c(libs, "liba64.so.1", "int a64v(void) { return 64; }\n", cc="aarch64",
                    args=["-Wl,-soname,liba64.so.1"])
    prog = compile_c(tmp_path / "abuild", "prog", """
#include <stdio.h>
extern int a64v(void);
int main(void) { printf("a64 %d\\n", a64v()); return 0; }
""", cc="aarch64", shared=False, libs=[str(lib)])
    wheel = build_wheel(tmp_path / "in", {"apkg/__init__.py": "", "apkg/bin/prog": prog},
                        name="apkg", tags="linux_aarch64", python_tag="py3", abi_tag="none")
    res = repair_wheel(wheel, tmp_path / "out", ldpaths=str(libs))
    assert res.tags[0] == glibc_tag_for(readelf_version_needs(prog), "aarch64")
    assert set(res.grafted) == {"liba64.so.1"}
    check_record(res.output)
    x = extract(res.output, tmp_path / "x")
    unrepaired = extract(wheel, tmp_path / "y")
    qemu = [QEMU_AARCH64, "-L", AARCH64_SYSROOT]
    with hidden(libs):
        run = subprocess.run(qemu + [str(x / "apkg/bin/prog")], capture_output=True, text=True,
                             env=clean_env())
        assert (run.returncode, run.stdout) == (0, "a64 64\n"), run.stderr
        fail = subprocess.run(qemu + [str(unrepaired / "apkg/bin/prog")], capture_output=True,
                              text=True, env=clean_env())
        assert fail.returncode != 0 and "liba64.so.1" in fail.stderr


# ------------------------------------------------------------------ .data and libpython

def test_libpython_and_scripts_members(fx, datawheel, tmp_path):
    wheel, pyext = datawheel
    res = repair_wheel(wheel, tmp_path / "out", ld_library_path=str(fx.private))
    check_record(res.output)
    assert set(res.grafted) == {"libbaz.so.2", "libbar.so.1"}
    after = members(res.output)
    assert not any("libpython" in n for n in after)
    x = extract(res.output, tmp_path / "x")
    # libpython: the NEEDED entry is removed (auditwheel >= 6.4 does the same), nothing grafted
    names = {so: expected_name(so, fx.sha[so]) for so in ("libbaz.so.2", "libbar.so.1")}
    ext = readelf_dynamic(x / "dpkg" / f"_ext{EXT}")
    assert ext["NEEDED"] == [names.get(n, n) for n in readelf_dynamic(pyext)["NEEDED"]
                             if not n.startswith("libpython")]
    # .data/scripts installs to bin/: the ELF moves to dpkg.scripts/, a shim takes its place
    moved = readelf_dynamic(x / "dpkg.scripts/dprog")
    assert moved["RPATH"] == "$ORIGIN/../dpkg.libs" and names["libbaz.so.2"] in moved["NEEDED"]
    shim = after["dpkg-1.0.data/scripts/dprog"]
    assert shim.startswith(b"#!python\n") and b"dpkg.scripts/dprog" in shim
    assert os.access(x / "dpkg-1.0.data/scripts/dprog", os.X_OK)
    assert os.access(x / "dpkg.scripts/dprog", os.X_OK)
    # and it all works from a fresh venv with the originals gone
    py = venv_with(res.output, tmp_path / "venv")
    with hidden(fx.private):
        run = subprocess.run([str(py), "-c", DATA_CODE], capture_output=True, text=True,
                             cwd=tmp_path, env=clean_env())
        assert (run.returncode, run.stdout) == (0, "42 80\n"), run.stderr
        run = subprocess.run([str(tmp_path / "venv" / "bin" / "dprog")], capture_output=True,
                             text=True, cwd=tmp_path, env=clean_env())
        assert (run.returncode, run.stdout) == (0, "prog 42\n"), run.stderr


def test_platlib_member_runs_after_install(fx, tmp_path):
    wheel = build_wheel(tmp_path / "in", {
        "ppkg-1.0.data/platlib/dplat/__init__.py": "from ._ext2 import value\n",
        f"ppkg-1.0.data/platlib/dplat/_ext2{EXT}": fx.ext2,
    }, name="ppkg", python_tag=PY, abi_tag=PY)
    res = repair_wheel(wheel, tmp_path / "out", ld_library_path=str(fx.private))
    py = venv_with(res.output, tmp_path / "venv")
    with hidden(fx.private):
        run = subprocess.run([str(py), "-c", "import dplat; print(dplat.value())"],
                             capture_output=True, text=True, cwd=tmp_path, env=clean_env())
    assert (run.returncode, run.stdout) == (0, "80\n"), run.stderr
