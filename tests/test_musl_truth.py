"""musllinux_1_1 vs 1_2, DT_RELR, and the generated policies, against outside oracles.

Oracles: the host's real loaders (Debian's musl 1.2.3 at /lib/ld-musl-x86_64.so.1, which
predates musl's DT_RELR support in 1.2.4, and glibc 2.36, the first with it); ``nm -D``
of the host's musl ``libc.so``; readelf for what the fixtures really contain; the raw
measurements of musl's release builds (``../shared/musl`` beside the clone, when present)
that ``tools/policy-sources/musl.json`` is derived from; and auditwheel's policy data,
which ``tools/gen_policies.py`` turns into ``policies.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from elfbuild import compile_c, have_compiler
from realwheels import (
    auditwheel_policies,
    auditwheel_show,
    have_auditwheel,
    readelf_undefined,
    readelf_version_needs,
)
from wheelbuild import build_wheel

from fastelf import _elf
from fastelf import policy as pol
from fastelf.audit import audit_wheel
from fastelf.report import show_text

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "tools" / "gen_policies.py"
FACTS = json.loads((ROOT / "tools" / "policy-sources" / "musl.json").read_text())
MUSL_LOADER = Path("/lib/ld-musl-x86_64.so.1")
MUSL_EXT = ".cpython-311-x86_64-linux-musl.so"
GLIBC_EXT = ".cpython-311-x86_64-linux-gnu.so"

needs_musl = pytest.mark.skipif(not have_compiler("musl") or not MUSL_LOADER.exists(),
                                reason="musl-gcc / musl loader not installed")
needs_gcc = pytest.mark.skipif(not have_compiler("gcc"), reason="gcc not installed")


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_policies", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _key(release: str) -> tuple:
    return tuple(int(x) for x in release.lstrip("v").split("."))


def _raw_musl_dir() -> Path | None:
    """The raw musl measurements: $FASTELF_MUSL_FACTS, ../shared/musl, or /work/shared/musl."""
    for d in (os.environ.get("FASTELF_MUSL_FACTS"), ROOT.parent / "shared" / "musl",
              Path("/work/shared/musl")):
        if d and (Path(d) / "musl_exports.json").exists():
            return Path(d)
    return None


# ------------------------------------------------------------------ host musl oracle

class HostMusl(NamedTuple):
    version: str        # e.g. "1.2.3", from the loader's own banner
    exports: frozenset  # nm -D --defined-only of its libc.so


def _host_musl() -> HostMusl | None:
    nm = shutil.which("nm")
    if not MUSL_LOADER.exists() or nm is None:
        return None
    banner = subprocess.run([str(MUSL_LOADER)], capture_output=True, text=True).stderr
    m = re.search(r"Version (\d+\.\d+\.\d+)", banner)
    if m is None:
        return None
    out = subprocess.run([nm, "-D", "--defined-only", str(MUSL_LOADER.resolve())],
                         capture_output=True, text=True, check=True).stdout
    names = frozenset(line.split()[-1] for line in out.splitlines() if len(line.split()) == 3)
    return HostMusl(m.group(1), names)


@pytest.fixture(scope="module")
def host_musl() -> HostMusl:
    found = _host_musl()
    if found is None:
        pytest.skip("no musl loader on this host")
    return found


def test_musl_facts_agree_with_host_musl(host_musl):
    """The committed table against the host's real musl: a symbol first exported in a
    release at or below the host's is in its libc.so, a later one is not; the LFS64
    names are there before 1.2.4 and gone from 1.2.4."""
    assert _key(FACTS["measured_releases"][0]) <= _key(host_musl.version) \
        <= _key(FACTS["measured_releases"][-1])
    checked = 0
    for name, fact in FACTS["only_1_2"].items():
        if "x86_64" in fact["arches"]:
            expect = _key(fact["since"]) <= _key(host_musl.version)
            assert (name in host_musl.exports) == expect, (name, fact, host_musl.version)
            checked += 1
    assert checked == 10
    lfs64 = set(FACTS["lfs64_remap_since_1_2_4"])
    assert len(lfs64) == 60
    if _key(host_musl.version) < (1, 2, 4):
        assert lfs64 <= host_musl.exports
    else:
        assert not lfs64 & host_musl.exports


# Debian's musl package patches upstream (debian/changelog): "Remove crypt functionality"
# (1.2.2-2, Debian bug #947193) and "Import musl-fts" (1.2.2-4, #989746).
DEBIAN_REMOVED = {"crypt", "crypt_r", "encrypt", "setkey"}
DEBIAN_ADDED = {"fts_children", "fts_close", "fts_open", "fts_read", "fts_set"}


def test_raw_export_table_matches_host_musl(host_musl):
    """Every symbol the raw table says x86_64 musl <host version> exports is in nm -D of the
    host's libc.so, and nothing else is, but for Debian's own patches to its musl."""
    raw = _raw_musl_dir()
    if raw is None:
        pytest.skip("raw musl measurements (../shared/musl) not present")
    table = json.loads((raw / "musl_exports.json").read_text())["x86_64"]
    release = "v" + host_musl.version
    if release not in table["built_versions"]:
        pytest.skip(f"musl {host_musl.version} was not measured")
    listed = {name for name, s in table["symbols"].items() if release in s["in"]}
    debian = Path("/usr/share/doc/musl/changelog.Debian.gz").exists()
    removed, added = (DEBIAN_REMOVED, DEBIAN_ADDED) if debian else (set(), set())
    assert listed - host_musl.exports == removed
    assert host_musl.exports - listed == added


def test_committed_musl_facts_are_derived_from_raw():
    """tools/policy-sources/musl.json is what --refresh-musl derives from the raw data."""
    raw = _raw_musl_dir()
    if raw is None:
        pytest.skip("raw musl measurements (../shared/musl) not present")
    assert _gen_module().refresh_musl(raw, FACTS) == FACTS


# ------------------------------------------------------------------ generated policies

@pytest.mark.skipif(not have_auditwheel(), reason="auditwheel not installed")
def test_policies_json_is_generated(tmp_path):
    """policies.json is exactly what tools/gen_policies.py makes of its sources."""
    out = tmp_path / "policies.json"
    subprocess.run([sys.executable, str(GEN), "--output", str(out)], check=True)
    committed = (ROOT / "src" / "fastelf" / "policies.json").read_text()
    assert out.read_text() == committed
    assert subprocess.run([sys.executable, str(GEN), "--check", "--output", str(out)]
                          ).returncode == 0
    out.write_text(committed.replace('"2.17"', '"2.16"', 1))
    assert subprocess.run([sys.executable, str(GEN), "--check", "--output", str(out)],
                          capture_output=True).returncode == 1


@pytest.mark.skipif(not have_auditwheel(), reason="auditwheel not installed")
@pytest.mark.parametrize("libc", [pol.GLIBC, pol.MUSL])
def test_expanded_policies_equal_auditwheels(libc):
    """Expanding the incremental policies.json gives back auditwheel's full policies: the
    same policies per arch, in the same order, with the same libraries (plus Alpine's libc
    name for musl), symbol versions and blacklists."""
    theirs = auditwheel_policies(libc)
    empty = set()
    for arch in pol.all_arches(libc):
        want = [p for p in theirs if arch in p["symbol_versions"]]
        ours = pol.policies_for(libc, arch)
        assert [p.name for p in ours] == [p["name"] for p in want]
        for p, w in zip(ours, want):
            extra = {FACTS["alpine_libc_names"]["names"][arch]} if libc == pol.MUSL else set()
            assert p.libraries == set(w["lib_whitelist"]) | extra, p.tag
            assert list(p.aliases) == w["aliases"]
            versions = w["symbol_versions"][arch]
            empty |= {(p.tag, k) for k, v in versions.items() if not v}
            assert {k: set(v) for k, v in p.symbol_versions.items()} == {
                k: {f"{k}_{x}" for x in v} for k, v in versions.items() if v}
            assert {k: set(v) for k, v in p.blacklist.items()} == {
                k: set(v) for k, v in w["blacklist"].items()}
    # auditwheel lists these prefixes with no version ("none allowed"); fastelf, like before
    # its policies were generated, leaves them ungoverned (docs/auditwheel-differences.md, 8)
    assert empty == (EMPTY_IN_AUDITWHEEL if libc == pol.GLIBC else set())


EMPTY_IN_AUDITWHEEL = {
    ("manylinux_2_5_i686", "LIBATOMIC"), ("manylinux_2_5_i686", "ZLIB"),
    ("manylinux_2_5_x86_64", "LIBATOMIC"), ("manylinux_2_5_x86_64", "ZLIB"),
    ("manylinux_2_12_i686", "LIBATOMIC"), ("manylinux_2_12_x86_64", "LIBATOMIC"),
    ("manylinux_2_17_x86_64", "LIBATOMIC"), ("manylinux_2_17_s390x", "LIBATOMIC")}


@pytest.mark.parametrize("arch", pol.all_arches(pol.MUSL))
def test_policies_follow_recorded_musl_facts(arch):
    """Every symbol musl 1.1.24 lacks fails musllinux_1_1 and passes 1_2 on the arches it
    was measured on (and, being arch-independent C, on unmeasured 64-bit arches too); no
    LFS64 name, which the 1.2.4+ loader still resolves, fails any policy."""
    by_name = {p.name: p for p in pol.policies_for(pol.MUSL, arch)}
    new = by_name["musllinux_1_2"]
    lfs64 = set(FACTS["lfs64_remap_since_1_2_4"])
    assert not any(new.lacks_symbol(n) for n in FACTS["only_1_2"])
    assert not any(p.lacks_symbol(n) for p in by_name.values() for n in lfs64)
    old = by_name.get("musllinux_1_1")
    if old is None:
        assert arch == "loongarch64"      # musl 1.1 has no loongarch64 port
        return
    measured = arch in FACTS["measured_arches"]
    for name, fact in FACTS["only_1_2"].items():
        on_arch = arch in fact["arches"] if measured else \
            set(fact["arches"]) == set(FACTS["measured_arches"])
        assert old.lacks_symbol(name) == on_arch, (name, arch)
    assert "__timelocal64" not in old.unavailable_symbols     # not a musl symbol at all


def test_dt_relr_since_in_policies():
    """glibc: the policies allowing GLIBC_ABI_DT_RELR (auditwheel's data) apply DT_RELR, from
    their own release; musl: only 1.2.4+ loaders, so musllinux_1_2 with a caveat."""
    for arch in pol.all_arches(pol.GLIBC):
        for p in pol.policies_for(pol.GLIBC, arch):
            allows = p.version_allowed("GLIBC_ABI_DT_RELR")
            assert (p.dt_relr_since is not None) == allows, p.tag
            if allows:
                assert _key(p.libc_version) >= (2, 36)
    for arch in pol.all_arches(pol.MUSL):
        since = {p.name: p.dt_relr_since for p in pol.policies_for(pol.MUSL, arch)}
        assert since.get("musllinux_1_1", None) is None
        assert since["musllinux_1_2"] == FACTS["dt_relr_since"] == "1.2.4"


# ------------------------------------------------------------------ fixtures

RELR_LIB = r"""
static int value = 42;
static const char *names[] = {"alpha", "beta", "gamma"};
int *pointers[] = {&value, &value};
const char *relr_name(int i) { return names[i]; }
int relr_value(void) { return *pointers[1]; }
"""

RELR_LIBC_LIB = r"""
#include <stdlib.h>
static const char *names[] = {"alpha", "beta", "gamma"};
const char *relr_name(int i) { return names[i]; }
int relr_value(void) { return getenv(names[1]) ? 0 : 42; }
"""

RELR_MAIN = r"""
#include <stdio.h>
const char *relr_name(int i);
int relr_value(void);
int main(void) { printf("%s %d\n", relr_name(1), relr_value()); return 0; }
"""

PACK = "-Wl,-z,pack-relative-relocs"


def _has_relr(path: Path) -> bool:
    """readelf's view: the dynamic section has a (RELR) entry."""
    out = subprocess.run(["readelf", "-d", "--wide", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return "(RELR)" in out


def _build_pair(d: Path, cc: str, stem: str, source: str, *, relr: bool) -> tuple:
    """lib<stem>.so (with DT_RELR when ``relr``) and a program linked against it."""
    lib = compile_c(d, f"lib{stem}.so", source, cc, args=[PACK] if relr else [])
    exe = compile_c(d, f"main_{stem}", RELR_MAIN, cc, shared=False,
                    args=["-Wl,-rpath,$ORIGIN"], libs=[str(lib)])
    return lib, exe


def _run(exe: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)


def _wheel(tmp_path: Path, member: str, so: Path, tags: str) -> Path:
    return build_wheel(tmp_path / "wheels", {member: so}, tags=tags,
                       name=so.name.split(".")[0])


def _check(r, tag: str):
    return next(c for c in r.policies if c.tag == tag)


# ------------------------------------------------------------------ musl + DT_RELR

@needs_musl
def test_musl_dt_relr_crashes_old_loader_and_is_not_musllinux_1_1(tmp_path, host_musl):
    """The host's musl (1.2.3 < 1.2.4) crashes on a DT_RELR library; fastelf gives it no
    musllinux_1_1 and says it needs musl >= 1.2.4.  The same source without DT_RELR runs
    and is musllinux_1_1."""
    relr_lib, relr_exe = _build_pair(tmp_path, "musl", "relr", RELR_LIB, relr=True)
    plain_lib, plain_exe = _build_pair(tmp_path, "musl", "plain", RELR_LIB, relr=False)
    assert _has_relr(relr_lib) and not _has_relr(plain_lib)
    assert _elf.parse(relr_lib.read_bytes()).relr and not _elf.parse(plain_lib.read_bytes()).relr

    plain = _run(plain_exe)
    assert (plain.returncode, plain.stdout) == (0, "beta 42\n")
    crashed = _run(relr_exe)
    if _key(host_musl.version) < _key(FACTS["dt_relr_since"]):
        assert crashed.returncode != 0 and crashed.stdout != "beta 42\n"
    else:
        assert crashed.stdout == "beta 42\n"

    member = "pkg/relr" + MUSL_EXT
    r = audit_wheel(_wheel(tmp_path, member, relr_lib, "musllinux_1_1_x86_64"))
    assert r.libc == "musl" and r.best_tag == "musllinux_1_2_x86_64"
    old = _check(r, "musllinux_1_1_x86_64")
    assert not old.satisfied and list(old.dt_relr) == [member]
    assert old.fails_beyond_libraries()
    assert "musllinux_1_1_x86_64" in r.unsatisfied_claims and not r.ok
    notes = [p for p in r.problems if "DT_RELR" in p]
    assert len(notes) == 1 and "musl >= 1.2.4" in notes[0] and member in notes[0]
    assert "musl >= 1.2.4" in " ".join(show_text(r).split())
    assert [e.to_dict()["dt_relr"] for e in r.elfs] == [True]

    r2 = audit_wheel(_wheel(tmp_path, "pkg/plain" + MUSL_EXT, plain_lib, "musllinux_1_1_x86_64"))
    assert r2.best_tag == "musllinux_1_1_x86_64" and r2.ok
    assert not any("DT_RELR" in p for p in r2.problems)


SYMBOLS_1_2 = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>
int use(char *buf, size_t n) {
    struct winsize ws;
    void *p = reallocarray(NULL, 4, 4);
    free(p);
    return pthread_getname_np(pthread_self(), buf, n) + (int)gettid() + tcgetwinsize(0, &ws);
}
"""

WEAK_GETTID = r"""
#include <sys/types.h>
extern pid_t gettid(void) __attribute__((weak));
int use(void) { return gettid ? (int)gettid() : -1; }
"""

LFS64 = r"""
#include <stdio.h>
extern FILE *fopen64(const char *, const char *);
extern int fseeko64(FILE *, long long, int);
int use(const char *p) { FILE *f = fopen64(p, "r"); return f ? fseeko64(f, 0, 0) : -1; }
"""


@needs_musl
def test_musl_1_2_symbols_weak_imports_and_lfs64(tmp_path, host_musl):
    """Strong imports of 1.2-only symbols (pthread_getname_np, gettid, ...) fail
    musllinux_1_1 and name each symbol; a weak gettid import passes (the musl 1.1.24
    loader loads it, recorded facts); LFS64 imports pass every policy."""
    strong = compile_c(tmp_path, "libstrong.so", SYMBOLS_1_2, "musl")
    undefined = readelf_undefined(strong)
    wanted = {"pthread_getname_np", "gettid", "tcgetwinsize", "reallocarray"}
    assert wanted <= {n for n, b in undefined.items() if b == "GLOBAL"}
    member = "pkg/strong" + MUSL_EXT
    r = audit_wheel(_wheel(tmp_path, member, strong, "musllinux_1_2_x86_64"))
    assert r.best_tag == "musllinux_1_2_x86_64" and r.ok
    old = _check(r, "musllinux_1_1_x86_64")
    lacking = {n for n in undefined if n in FACTS["only_1_2"]}
    assert set(old.unavailable_symbols[member]) == lacking >= wanted
    # musllinux_1_2 also admits musl 1.2.0: the note says which release is really needed
    need = max((FACTS["only_1_2"][n]["since"] for n in lacking), key=_key)
    assert need == "1.2.3"
    assert [p for p in r.problems if f"musl >= {need} is needed" in p]

    weak = compile_c(tmp_path, "libweak.so", WEAK_GETTID, "musl")
    assert readelf_undefined(weak)["gettid"] == "WEAK"
    r = audit_wheel(_wheel(tmp_path, "pkg/weak" + MUSL_EXT, weak, "musllinux_1_1_x86_64"))
    assert r.best_tag == "musllinux_1_1_x86_64" and r.ok

    lfs = compile_c(tmp_path, "liblfs.so", LFS64, "musl")
    assert {"fopen64", "fseeko64"} <= set(readelf_undefined(lfs))
    assert {"fopen64", "fseeko64"} <= set(FACTS["lfs64_remap_since_1_2_4"])
    r = audit_wheel(_wheel(tmp_path, "pkg/lfs" + MUSL_EXT, lfs, "musllinux_1_1_x86_64"))
    assert r.best_tag == "musllinux_1_1_x86_64" and r.ok
    assert all(c.satisfied for c in r.policies)


# ------------------------------------------------------------------ glibc + DT_RELR

def _glibc_version() -> tuple:
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return _key(libc.gnu_get_libc_version().decode())


def _dlopen(path: Path) -> subprocess.CompletedProcess:
    """dlopen ``path`` in a fresh interpreter: returncode 0 and "ok", or the loader's error."""
    code = f"import ctypes; ctypes.CDLL({str(path)!r}); print('ok')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def _drop_dt_relr_need(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose GLIBC_ABI_DT_RELR version need names GLIBC_2.2.5 instead.

    The vernaux entry gets the hash and name offset of the file's GLIBC_2.2.5 need
    (positions from readelf -V), so DT_RELR stays while the tie to glibc 2.36 goes:
    what a linker that does not add the need (lld's --pack-dyn-relocs=relr) makes.
    """
    text = subprocess.run(["readelf", "-V", "--wide", str(src)], capture_output=True,
                          text=True, check=True).stdout
    section = text.split("Version needs section", 1)[1]
    base = int(re.search(r"Offset: (0x[0-9a-f]+)", section).group(1), 16)
    entries = {m.group(2): base + int(m.group(1), 16)
               for m in re.finditer(r"(0x[0-9a-f]+):\s+Name: (\S+)", section)}
    data = bytearray(src.read_bytes())
    relr, other = entries["GLIBC_ABI_DT_RELR"], entries["GLIBC_2.2.5"]
    data[relr:relr + 4] = data[other:other + 4]              # vna_hash
    data[relr + 8:relr + 12] = data[other + 8:other + 12]    # vna_name
    dst.write_bytes(bytes(data))
    return dst


@needs_gcc
def test_glibc_dt_relr_with_version_need_is_manylinux_2_36(tmp_path):
    """binutils ties DT_RELR to the GLIBC_ABI_DT_RELR need when the library has GLIBC_2.*
    needs; glibc 2.36 loads it; fastelf (and auditwheel) say manylinux_2_36."""
    lib = compile_c(tmp_path, "librelrc.so", RELR_LIBC_LIB, "gcc", args=[PACK])
    assert _has_relr(lib)
    assert "GLIBC_ABI_DT_RELR" in readelf_version_needs(lib)["libc.so.6"]
    if _glibc_version() >= (2, 36):
        assert _dlopen(lib).stdout == "ok\n"
    member = "pkg/relrc" + GLIBC_EXT
    w = _wheel(tmp_path, member, lib, "linux_x86_64")
    r = audit_wheel(w)
    assert r.best_tag == "manylinux_2_36_x86_64"
    assert "GLIBC_ABI_DT_RELR" in _check(r, "manylinux_2_35_x86_64").symbol_versions
    assert not any("DT_RELR" in p for p in r.problems)
    if have_auditwheel():
        assert auditwheel_show(w)["overall_tag"] == r.best_tag


@needs_gcc
def test_glibc_dt_relr_without_libc_needs_manylinux_2_36(tmp_path):
    """No GLIBC_2.* need, so binutils adds no GLIBC_ABI_DT_RELR: glibc 2.36 applies DT_RELR
    and loads it, older glibc would ignore DT_RELR.  fastelf: manylinux_2_36, not older
    (auditwheel says manylinux_2_5: docs/auditwheel-differences.md)."""
    lib = compile_c(tmp_path, "librelr.so", RELR_LIB, "gcc", args=[PACK])
    assert _has_relr(lib) and readelf_version_needs(lib) == {}
    if _glibc_version() >= (2, 36):
        assert _dlopen(lib).stdout == "ok\n"
    member = "pkg/relr" + GLIBC_EXT
    w = _wheel(tmp_path, member, lib, "linux_x86_64")
    r = audit_wheel(w)
    assert r.best_tag == "manylinux_2_36_x86_64"
    old = _check(r, "manylinux_2_35_x86_64")
    assert list(old.dt_relr) == [member] and old.symbol_versions == {}
    if have_auditwheel():
        assert auditwheel_show(w)["overall_tag"] == "manylinux_2_5_x86_64"


@needs_gcc
def test_glibc_dt_relr_without_its_version_need_is_refused(tmp_path):
    """DT_RELR, NEEDED libc.so.6 and version needs, but no GLIBC_ABI_DT_RELR: glibc >= 2.36
    refuses to load it and older glibc ignores DT_RELR, so no manylinux policy holds."""
    src = compile_c(tmp_path, "librelrc.so", RELR_LIBC_LIB, "gcc", args=[PACK])
    lib = _drop_dt_relr_need(src, tmp_path / "librelrx.so")
    needs = readelf_version_needs(lib)
    assert _has_relr(lib) and needs["libc.so.6"] == {"GLIBC_2.2.5"}
    if _glibc_version() >= (2, 36):
        loaded = _dlopen(lib)
        assert loaded.returncode != 0
        assert "DT_RELR without GLIBC_ABI_DT_RELR dependency" in loaded.stderr
    member = "pkg/relrx" + GLIBC_EXT
    w = _wheel(tmp_path, member, lib, "manylinux_2_36_x86_64")
    r = audit_wheel(w)
    assert r.best_tag == "linux_x86_64" and r.tags == []
    assert all(list(c.dt_relr) == [member] for c in r.policies)
    assert "manylinux_2_36_x86_64" in r.unsatisfied_claims
    assert "GLIBC_ABI_DT_RELR" in r.unsatisfied_claims["manylinux_2_36_x86_64"]
    if have_auditwheel():       # auditwheel does not read DT_RELR (docs/auditwheel-differences.md)
        assert auditwheel_show(w)["overall_tag"] == "manylinux_2_5_x86_64"


# ------------------------------------------------------------------ other arches

CROSS = {"i686": "i686", "armv7l": "armhf", "aarch64": "aarch64", "s390x": "s390x"}


def _importer_source(strong: list, weak: list) -> str:
    """C that imports every name in ``strong`` (and ``weak`` weakly) through a pointer table."""
    decls = [f"extern void {n}(void);" for n in strong]
    decls += [f"extern void {n}(void) __attribute__((weak));" for n in weak]
    table = ", ".join(f"(void *){n}" for n in strong + weak)
    return "\n".join(decls) + f"\nvoid *imported[] = {{{table}}};\n"


@pytest.mark.parametrize("arch", sorted(CROSS))
def test_musl_1_2_symbols_on_other_arches(tmp_path, arch):
    """A musl ELF for ``arch`` (linked against a stub named like Alpine's libc) that imports
    every symbol musl 1.1.24 lacks there, an LFS64 name and a weak gettid: musllinux_1_1
    fails naming exactly the strong 1.2-only imports readelf shows, musllinux_1_2 passes."""
    cc = CROSS[arch]
    if not have_compiler(cc):
        pytest.skip(f"{cc} cross compiler not installed")
    soname = json.loads((ROOT / "src" / "fastelf" / "policies.json").read_text()
                        )["musl_libc_names"][arch]
    measured = arch in FACTS["measured_arches"]
    lacking = sorted(n for n, f in FACTS["only_1_2"].items()
                     if (arch in f["arches"] if measured
                         else set(f["arches"]) == set(FACTS["measured_arches"])))
    strong = [n for n in lacking if n != "gettid"] + ["fopen64", "stat64"]
    stub = compile_c(tmp_path, soname, "int musl_stub;\n", cc,
                     args=["-nostdlib", f"-Wl,-soname,{soname}"])
    lib = compile_c(tmp_path, "libimports.so", _importer_source(strong, ["gettid"]), cc,
                    args=["-nostdlib"], libs=[str(stub)])
    undefined = readelf_undefined(lib)
    assert undefined["gettid"] == "WEAK"
    strong_1_2 = {n for n, b in undefined.items() if b == "GLOBAL" and n in FACTS["only_1_2"]}
    assert strong_1_2 == set(lacking) - {"gettid"}
    member = f"pkg/imports.cpython-311-{arch}-linux-musl.so"
    r = audit_wheel(build_wheel(tmp_path / "wheels", {member: lib},
                                tags=f"musllinux_1_2_{arch}", name="imports"))
    assert (r.libc, r.arch, r.best_tag) == ("musl", arch, f"musllinux_1_2_{arch}")
    old = _check(r, f"musllinux_1_1_{arch}")
    assert set(old.unavailable_symbols[member]) == strong_1_2
    assert "pthread_getname_np" in strong_1_2 and "fopen64" not in old.unavailable_symbols[member]
    if arch in ("i686", "armv7l"):
        assert {"__clock_gettime64", "__adjtime64", "__ftime64"} <= strong_1_2
    assert [p for p in r.problems if "musl >= 1.2.5 is needed" in p and "statx" in p]
