"""Verdict statuses (ok / mislabeled / skipped / error) and tags as a set.

Outside oracles: packaging (what pip uses) for wheel file names and, driven
with a chosen libc version instead of the host's, for the platform tags a
glibc or musl system accepts (``packaging._manylinux.platform_tags``,
``packaging._musllinux.platform_tags``); the cross compilers' targets for
the architecture of each fixture; the shell's view of exit codes.
"""

from __future__ import annotations

import functools
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest
from elfbuild import COMPILERS, BuildError, compile_c
from packaging import _manylinux, _musllinux
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from wheelbuild import build_wheel

from fastelf import cli
from fastelf.audit import AuditResult, Status, audit_path, audit_wheel, platform_tags_of
from fastelf.errors import WheelError

GLIBC_SYSTEMS = [(2, m) for m in range(0, 51)] + [(3, 0), (3, 2)]
MUSL_SYSTEMS = [(1, 0), (1, 1), (1, 2), (1, 5), (2, 0), (2, 1)]
ARCHES = ["x86_64", "i686", "aarch64", "armv7l", "s390x"]


# ------------------------------------------------------------------ packaging as the oracle

@functools.lru_cache(maxsize=None)
def accepted_tags(libc: str, version: tuple, arch: str) -> tuple:
    """The platform tags packaging generates for a Linux system with this libc version.

    packaging reads the version from the running interpreter; its detection
    function is replaced for the call.  ``_have_compatible_abi`` (which checks
    that sys.executable is itself an armhf/i686 binary) is replaced too, and
    a ``_manylinux`` override module is hidden, so only the version decides.
    """
    needed = {"glibc": ("_get_glibc_version", "_have_compatible_abi", "_GLibCVersion"),
              "musl": ("_get_musl_version", "_MuslVersion")}[libc]
    mod = _manylinux if libc == "glibc" else _musllinux
    if not all(hasattr(mod, n) for n in needed):
        pytest.skip(f"this packaging version lacks {mod.__name__}.{needed}")
    with pytest.MonkeyPatch.context() as mp:
        if libc == "glibc":
            mp.setattr(mod, "_get_glibc_version", lambda: mod._GLibCVersion(*version))
            mp.setattr(mod, "_have_compatible_abi", lambda *_a, **_k: True)
            mp.setitem(sys.modules, "_manylinux", None)     # import _manylinux fails
        else:
            mp.setattr(mod, "_get_musl_version", lambda *_a: mod._MuslVersion(*version))
        return tuple(mod.platform_tags([arch]))


def test_the_oracle_is_driven_by_the_version_given():
    """Without this, every comparison below could pass against an empty list."""
    assert "manylinux_2_17_x86_64" in accepted_tags("glibc", (2, 28), "x86_64")
    assert "manylinux_2_30_x86_64" not in accepted_tags("glibc", (2, 28), "x86_64")
    assert "musllinux_1_2_aarch64" in accepted_tags("musl", (1, 2), "aarch64")
    assert accepted_tags("musl", (1, 1), "aarch64") != accepted_tags("musl", (1, 2), "aarch64")


# ------------------------------------------------------------------ fixtures

class Fixture(NamedTuple):
    key: str
    arch: str          # the compiler's target (elfbuild.COMPILERS), not fastelf's answer
    libc: str
    result: AuditResult


_SOURCES = {   # key -> (compiler, C source); the symbols used pick the libc version needed
    "glibc_basic": ("gcc", "#include <stdlib.h>\nvoid *PyInit_m(void) { return malloc(8); }\n"),
    "glibc_memcpy": ("gcc", "#include <string.h>\n"
                            "void c(char *d, const char *s, size_t n) { memcpy(d, s, n); }\n"
                            "void *PyInit_m(void) { return (void *)c; }\n"),
    "glibc_getrandom": ("gcc", "#include <sys/random.h>\nvoid *PyInit_m(void) "
                               "{ char b[4]; return (void *)(long)getrandom(b, 4, 0); }\n"),
    "glibc_arc4random": ("gcc", "#include <stdlib.h>\n"
                                "void *PyInit_m(void) { return (void *)(long)arc4random(); }\n"),
    "aarch64": ("aarch64", "#include <stdio.h>\nvoid *PyInit_m(void) "
                           "{ char b[8]; return (void *)(long)snprintf(b, 8, \"%d\", 7); }\n"),
    "i686": ("i686", "#include <stdlib.h>\nvoid *PyInit_m(void) { return malloc(8); }\n"),
    "s390x": ("s390x", "#include <string.h>\nvoid *PyInit_m(void) "
                       "{ static char b[8]; return memset(b, 1, 8); }\n"),
    "musl_old": ("musl", "#include <stdio.h>\nvoid *PyInit_m(void) "
                         "{ char b[8]; return (void *)(long)snprintf(b, 8, \"%d\", 7); }\n"),
    "musl_new": ("musl", "#define _GNU_SOURCE\n#include <stdlib.h>\n"   # musl >= 1.2.2
                         "void *PyInit_m(void) { return reallocarray(0, 4, 4); }\n"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict")
    cache: dict = {}

    def get(key: str) -> Fixture | None:
        if key not in cache:
            cc, src = _SOURCES[key]
            try:
                so = compile_c(root / "elfs", f"{key}.so", src, cc=cc)
            except BuildError:
                so = None          # e.g. a cross C library not installed yet
            if so is None:
                cache[key] = None
            else:
                arch = COMPILERS[cc][1]
                w = build_wheel(root / "wheels", {f"pkg/{key}.so": so}, name=key,
                                tags=f"linux_{arch}")
                cache[key] = Fixture(key, arch, "musl" if cc == "musl" else "glibc",
                                     audit_wheel(w))
        return cache[key]
    return get


def elf_member(fx: Fixture) -> tuple:
    """(member path, bytes) of the fixture's one ELF file."""
    member = fx.result.elfs[0].path
    with zipfile.ZipFile(fx.result.path) as zf:
        return member, zf.read(member)


def need(built, key: str) -> Fixture:
    fx = built(key)
    if fx is None:
        pytest.skip(f"fixture {key}: compiler or C library not installed")
    return fx


@pytest.fixture
def mk(tmp_path):
    counter = iter(range(1000))

    def make(files, tags, **kw):
        kw.setdefault("name", f"w{next(counter)}")
        return build_wheel(tmp_path / "wheels", files, tags=tags, **kw)
    return make


# ------------------------------------------------------------------ tags as a set

@pytest.mark.parametrize("key", sorted(_SOURCES))
def test_installable_on_agrees_with_packaging(built, key):
    """installable_on(libc, v, arch) == some tag of the verdict is one packaging accepts there."""
    fx = need(built, key)
    r = fx.result
    assert r.status is Status.OK and r.arch == fx.arch and r.libc == fx.libc and r.tags
    outcomes = set()
    for libc, systems in (("glibc", GLIBC_SYSTEMS), ("musl", MUSL_SYSTEMS)):
        for version in systems:
            for arch in ARCHES:
                accepted = accepted_tags(libc, version, arch)
                expected = any(t in accepted for t in r.tags)
                assert r.installable_on(libc, version, arch) == expected, (libc, version, arch)
                # and satisfies() says yes to one of those tags exactly then
                assert any(r.satisfies(t) for t in accepted) == expected, (libc, version, arch)
                outcomes.add(expected)
    assert outcomes == {True, False}


@pytest.mark.parametrize("key", sorted(_SOURCES))
def test_satisfies_every_versioned_tag_as_packaging_implies(built, key):
    """A tag manylinux_X_Y (musllinux_X_Y) is satisfied exactly when a system at libc X.Y
    would accept one of the policy tags the wheel satisfies; legacy aliases map through
    packaging's own table; linux_<arch> follows the compiler's target arch."""
    fx = need(built, key)
    r = fx.result
    legacy = {name: ver for ver, name in _manylinux._LEGACY_MANYLINUX_MAP.items()}
    beyond_list = []
    for arch in ARCHES:
        for family, libc, systems in (("manylinux", "glibc", GLIBC_SYSTEMS),
                                      ("musllinux", "musl", MUSL_SYSTEMS)):
            for major, minor in systems:
                tag = f"{family}_{major}_{minor}_{arch}"
                expected = any(t in accepted_tags(libc, (major, minor), arch) for t in r.tags)
                assert r.satisfies(tag) == expected, tag
                if expected and tag not in r.tags:
                    beyond_list.append(tag)
        for name, ver in legacy.items():
            tag = f"{name}_{arch}"
            assert r.satisfies(tag) == any(t in accepted_tags("glibc", tuple(ver), arch)
                                           for t in r.tags), tag
        assert r.satisfies(f"linux_{arch}") == (arch == fx.arch)
    # the point of satisfies(): tags that are no policy (e.g. manylinux_2_30) are in the set
    assert beyond_list, "every satisfied tag was a policy tag: the test proves nothing"
    for tag in ("any", "win_amd64", "macosx_11_0_arm64", "linux", "manylinux_x_y_x86_64"):
        assert not r.satisfies(tag)


def test_the_reported_gap(built):
    """manylinux_2_30 is satisfied by a wheel meeting manylinux_2_28 (not a policy tag)."""
    r = need(built, "glibc_memcpy").result
    assert "manylinux_2_30_x86_64" not in r.tags
    assert "manylinux_2_30_x86_64" in accepted_tags("glibc", (2, 30), "x86_64")
    assert r.satisfies("manylinux_2_30_x86_64") and r.installable_on("glibc", (2, 30), "x86_64")
    assert not r.satisfies("manylinux_2_30_aarch64") and not r.satisfies("musllinux_1_2_x86_64")


def test_claiming_a_satisfied_non_policy_tag_is_ok_and_retag_accepts_it(built, mk, tmp_path):
    fx = need(built, "glibc_memcpy")
    so, data = elf_member(fx)
    w0 = Path(fx.result.path)
    w = mk({so: data}, tags=["manylinux_2_30_x86_64", "manylinux_3_0_x86_64"])
    r = audit_wheel(w)
    assert r.status is Status.OK and not r.unsatisfied_claims
    # retag to a satisfied tag that is no policy: accepted without --force
    out = io.StringIO()
    assert cli.main(["retag", str(w0), "--plat", "manylinux_2_30_x86_64",
                     "-w", str(tmp_path / "re")], out=out) == 0
    assert out.getvalue().strip().endswith("-manylinux_2_30_x86_64.whl")
    # and to one it does not meet: refused
    assert cli.main(["retag", str(w0), "--plat", "manylinux_2_12_x86_64",
                     "-w", str(tmp_path / "re2")], out=io.StringIO()) == 1


def test_pure_skipped_and_unreadable_installability(mk, tmp_path):
    pure = audit_wheel(mk({"p/__init__.py": b""}, tags="any", python_tag="py3", abi_tag="none"))
    assert pure.status is Status.OK and pure.satisfies("any")
    assert pure.installable_on("glibc", (2, 17), "x86_64")
    assert pure.installable_on("musl", (1, 1), "aarch64")
    assert not pure.satisfies("linux_x86_64") and not pure.satisfies("manylinux_2_17_x86_64")
    win = audit_wheel(mk({"p/__init__.py": b""}, tags="win_amd64"))
    assert win.status is Status.SKIPPED and not win.installable_on("glibc", (2, 41), "x86_64")
    junk = tmp_path / "junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip")
    bad = audit_path(junk)
    assert bad.status is Status.ERROR and not bad.satisfies("any")
    assert not bad.installable_on("glibc", (2, 41), "x86_64")


# ------------------------------------------------------------------ file names

@pytest.mark.parametrize("name", [
    "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "a-1.0-1-py3-none-any.whl",                                 # build tag
    "b-1.0-cp311-cp311-macosx_10_9_x86_64.macosx_11_0_arm64.whl",
    "c-1.0-cp311-cp311-Linux_X86_64.whl",                       # installers lowercase tags
    "zip-deflate-empty-blocks-1.0-py3-none-any.whl",            # too many parts
    "nope.whl", "<bytes>", "d-1.0-py3-none-any.zip",
])
def test_platform_tags_follow_packaging(name):
    try:
        tags = parse_wheel_filename(name)[3]
    except InvalidWheelFilename:     # packaging refuses the name: no tag is claimed
        assert platform_tags_of(name) == []
        return
    got = platform_tags_of(name)
    assert sorted(got) == sorted({t.platform for t in tags})
    raw = name[:-4].rsplit("-", 1)[1].lower().split(".")
    assert got == raw                                           # the name's order is kept


@pytest.mark.parametrize("bad_name", ["not-a-wheel-name-at-all.whl", "pkg-1.0-py3-none-any.zip"])
def test_an_invalid_wheel_name_is_an_error(mk, bad_name):
    """pip (packaging.utils.parse_wheel_filename) refuses the name, so no tag can be checked:
    the wheel is not judged 'ok' on a name whose claims were never read."""
    w = mk({"p/__init__.py": b""}, tags="any", filename="good-1.0-py3-none-any.whl")
    bad = w.with_name(bad_name)
    w.rename(bad)
    with pytest.raises(InvalidWheelFilename):
        parse_wheel_filename(bad_name)
    r = audit_path(bad)
    assert r.status is Status.ERROR and "not a valid wheel file name" in r.error
    with pytest.raises(WheelError, match="not a valid wheel file name"):
        audit_wheel(bad.read_bytes(), filename=bad_name)
    assert audit_wheel(bad.read_bytes()).status is Status.OK        # no name, nothing claimed


# ------------------------------------------------------------------ statuses

def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastelf", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("tags", [["win_amd64"], ["macosx_11_0_arm64", "macosx_10_9_x86_64"],
                                  ["win32", "any"]])
def test_non_linux_wheel_is_skipped_not_ok(mk, tags):
    w = mk({"p/__init__.py": b"", "p/x.dll": b"MZ" + bytes(64)}, tags=tags)
    r = audit_wheel(w)
    assert r.status is Status.SKIPPED and not r.ok and r.unsatisfied_claims == {}
    assert "not a Linux wheel" in r.reason and tags[0] in r.reason
    d = r.to_dict()
    assert d["status"] == "skipped" and d["ok"] is False and d["reason"] == r.reason
    assert set(d["unchecked_claims"]) == {t for t in tags if t != "any"}
    proc = run("show", w)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())          # the paragraph is wrapped
    assert "skipped" in text and "not a Linux wheel" in text and "pure-Python" not in text
    proc = run("show", "--json", w)
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "skipped"


@pytest.mark.parametrize("tags", [["any"], ["macosx_11_0_arm64"], ["win_amd64", "win32"]])
def test_linux_elf_without_a_linux_tag_is_mislabeled(built, mk, tags):
    fx = need(built, "glibc_basic")
    other = built("aarch64")
    files = {"p/__init__.py": b""}
    for f in (fx,) + ((other,) if other else ()):
        member, data = elf_member(f)
        files[f"p/{f.key}/{member.rsplit('/', 1)[1]}"] = data
    w = mk(files, tags=tags, python_tag="py3", abi_tag="none")
    r = audit_wheel(w)
    assert r.status is Status.MISLABELED and not r.ok
    assert set(r.unsatisfied_claims) == set(tags) and r.unchecked_claims == {}
    for why in r.unsatisfied_claims.values():    # every ELF file is named, other arch too
        assert all(m in why for m in files if m.endswith(".so")), why
    assert all(m in r.reason for m in files if m.endswith(".so"))
    proc = run("audit", w)
    assert proc.returncode == 1 and proc.stdout.startswith("BAD"), proc
    assert json.loads(run("show", "--json", w).stdout)["status"] == "mislabeled"


def test_mixed_linux_and_other_tags_judge_the_linux_ones(built, mk):
    fx = need(built, "glibc_memcpy")
    member, data = elf_member(fx)
    w = mk({member: data}, tags=["manylinux2014_x86_64", "win_amd64"])
    good = audit_wheel(w)
    assert good.status is Status.OK and good.unchecked_claims.keys() == {"win_amd64"}
    assert not good.satisfies("win_amd64")
    out = io.StringIO()
    assert cli.main(["show", str(w)], out=out) == 0
    assert "Not checked (not Linux platform tags): win_amd64" in out.getvalue()
    bad = audit_wheel(mk({member: data}, tags=["manylinux2010_x86_64", "macosx_11_0_arm64"]))
    assert bad.status is Status.MISLABELED
    assert list(bad.unsatisfied_claims) == ["manylinux2010_x86_64"]
    assert "memcpy" in bad.unsatisfied_claims["manylinux2010_x86_64"]
    # `any` beside a Linux tag still promises every platform
    anyw = audit_wheel(mk({member: data}, tags=["manylinux2014_x86_64", "any"]))
    assert anyw.status is Status.MISLABELED and list(anyw.unsatisfied_claims) == ["any"]
    # a pure wheel tagged for Linux and Windows: the Linux tag is unsatisfied, not skipped
    pure = audit_wheel(mk({"p/__init__.py": b""}, tags=["linux_x86_64", "win_amd64"]))
    assert pure.status is Status.MISLABELED and pure.skip_reason is None


def test_batch_counts_exit_codes_and_json(built, mk, tmp_path):
    fx = need(built, "glibc_memcpy")
    member, data = elf_member(fx)
    ok = mk({member: data}, tags="manylinux2014_x86_64", name="a_ok")
    win = mk({"p/__init__.py": b""}, tags="win_amd64", name="b_win")
    mac = mk({"p/__init__.py": b""}, tags="macosx_11_0_arm64", name="c_mac")
    anyelf = mk({member: data}, tags="any", name="d_any", python_tag="py3", abi_tag="none")
    junk = tmp_path / "wheels" / "e_junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip")

    def summary(proc):
        line = proc.stderr.strip().splitlines()[-1]
        return {k: int(n) for n, k in re.findall(r"(\d+) (ok|mislabeled|skipped|unreadable)",
                                                 line)}

    proc = run("audit", ok, win, mac)
    assert proc.returncode == 0, proc.stderr                  # skipped is not a failure
    assert summary(proc) == {"ok": 1, "mislabeled": 0, "skipped": 2, "unreadable": 0}
    assert [ln.split()[0] for ln in proc.stdout.splitlines()] == ["OK", "SKIP", "SKIP"]
    proc = run("audit", "-q", ok, win, mac, anyelf)
    assert proc.returncode == 1 and proc.stdout.count("\n") == 1 and "d_any" in proc.stdout
    assert summary(proc) == {"ok": 1, "mislabeled": 1, "skipped": 2, "unreadable": 0}
    proc = run("audit", "--json", "--jobs", "2", tmp_path / "wheels")
    assert proc.returncode == 3, proc.stderr
    docs = {Path(d["path"]).name.split("-")[0]: d for d in map(json.loads,
                                                              proc.stdout.splitlines())}
    assert {k: d["status"] for k, d in docs.items()} == {
        "a_ok": "ok", "b_win": "skipped", "c_mac": "skipped", "d_any": "mislabeled",
        "e_junk": "error"}
    for d in docs.values():
        assert d["version"] == 2 and d["ok"] == (d["status"] == "ok")
        assert (d["reason"] is None) == (d["status"] == "ok")
        assert {"wheel", "path", "pure"} <= d.keys()          # schema 1 fields kept
    assert summary(proc) == {"ok": 1, "mislabeled": 1, "skipped": 2, "unreadable": 1}
