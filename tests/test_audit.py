"""Audit of whole wheels: fixture ELFs compiled here, packed into wheels, audited.

Expectations come from outside fastelf: readelf (binutils) for the symbol
versions, NEEDED entries and ISA notes the fixtures really have; the PEP 600
rule (manylinux_x_y = glibc >= x.y) over auditwheel's policy list for the
tag those versions allow; auditwheel's policy JSON for the zlib blacklist;
and the real dynamic loader (dlopen of the extracted wheel) for whether a
library is found inside the wheel.  auditwheel itself is run on the fixtures
where its answer is right (see docs/auditwheel-differences.md for where it
is not).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from elfbuild import BuildError, compile_c, have_compiler
from realwheels import (
    auditwheel_policies,
    auditwheel_show,
    glibc_tag_for,
    have_auditwheel,
    readelf_dynamic,
    readelf_undefined,
    readelf_version_needs,
)
from wheelbuild import build_wheel, read_record, record_hash

from fastelf import cli
from fastelf.audit import audit_path, audit_wheel

needs_auditwheel = pytest.mark.skipif(not have_auditwheel(), reason="auditwheel not installed")

X86_EXT = ".cpython-311-x86_64-linux-gnu.so"
MUSL_EXT = ".cpython-311-x86_64-linux-musl.so"
A64_EXT = ".cpython-311-aarch64-linux-gnu.so"


# ------------------------------------------------------------------ fixtures

class Fixtures:
    """Compiles each fixture on first use (session-wide); None when its compiler is missing."""

    def __init__(self, root: Path):
        self.root = root
        self._cache = {}

    def get(self, key):
        if key not in self._cache:
            self._cache[key] = getattr(self, "_" + key)()
        return self._cache[key]

    def need(self, key):
        value = self.get(key)
        if value is None:
            pytest.skip(f"fixture {key}: compiler not installed")
        return value

    def _cc(self, out, src, cc="gcc", **kw):
        (self.root / out).parent.mkdir(parents=True, exist_ok=True)
        return compile_c(self.root, out, src, cc=cc, **kw)

    # glibc x86_64 -------------------------------------------------------
    def _clean_basic(self):      # nothing newer than the x86_64 baseline GLIBC_2.2.5
        return self._cc("clean_basic" + X86_EXT, """
#include <stdlib.h>
#include <string.h>
void *PyInit_clean_basic(void) { char *p = malloc(8); return p ? strcpy(p, "x") : 0; }
""")

    def _clean_memcpy(self):     # memcpy@GLIBC_2.14 on x86_64
        return self._cc("clean_memcpy" + X86_EXT, """
#include <string.h>
void copy_n(char *d, const char *s, size_t n) { memcpy(d, s, n); }
void *PyInit_clean_memcpy(void) { return (void *)copy_n; }
""")

    def _clean_getrandom(self):  # getrandom@GLIBC_2.25: no manylinux_2_25, so 2_26
        return self._cc("clean_getrandom" + X86_EXT, """
#include <sys/random.h>
void *PyInit_clean_getrandom(void) { char b[4]; return (void *)(long)getrandom(b, 4, 0); }
""")

    def _arc4random(self):       # arc4random@GLIBC_2.36 (Debian 12's glibc)
        return self._cc("newsym" + X86_EXT, """
#include <stdlib.h>
void *PyInit_newsym(void) { return (void *)(long)arc4random(); }
""")

    def _zerr(self):             # undefined z_errmsg, NEEDED libz.so.1
        return self._cc("zerr" + X86_EXT, """
extern const char * const z_errmsg[];
void *PyInit_zerr(void) { return (void *)z_errmsg[1]; }
""", libs=["-Wl,--no-as-needed", "-lz"])

    def _zerr_weak(self):        # the same symbol, weak: auditwheel and fastelf ignore it
        return self._cc("zerrweak" + X86_EXT, """
extern const char * const z_errmsg[] __attribute__((weak));
void *PyInit_zerrweak(void) { return z_errmsg ? (void *)z_errmsg[1] : 0; }
""", libs=["-Wl,--no-as-needed", "-lz"])

    def _isa_v3(self):
        try:
            return self._cc("isav3" + X86_EXT, """
#include <string.h>
double dot(const double *a, const double *b, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s; }
void copy_n(char *d, const char *s, size_t n) { memcpy(d, s, n); }
void *PyInit_isav3(void) { return (void *)dot; }
""", args=["-O3", "-march=x86-64-v3", "-mneeded"])
        except BuildError:
            return None     # this gcc does not know -mneeded / x86-64-v3

    def _libbaz(self):
        return self._cc("libbaz.so.1", "int baz(void) { return 1; }\n",
                        args=["-Wl,-soname,libbaz.so.1"])

    def _libbar(self):           # libbar.so.1 NEEDED libbaz.so.1 (no RPATH of its own)
        baz = self.get("libbaz")
        return baz and self._cc("libbar.so.1", """
extern int baz(void);
int bar_value(void) { return baz() + 41; }
""", args=["-Wl,-soname,libbar.so.1"], libs=["-Wl,--no-as-needed", str(baz)])

    def _libbar_origin(self):    # libbar.so.1 with RUNPATH $ORIGIN, as a repair leaves it
        baz = self.get("libbaz")
        return baz and self._cc("origin/libbar.so.1", """
extern int baz(void);
int bar_value(void) { return baz() + 41; }
""", args=["-Wl,-soname,libbar.so.1", "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN"],
            libs=["-Wl,--no-as-needed", str(baz)])

    def _nolibc(self):           # -nostdlib: no NEEDED entry names a libc
        return self._cc("nolibc" + X86_EXT, "void *PyInit_nolibc(void) { return 0; }\n",
                        args=["-nostdlib"])

    def _ext_with(self, name, linkargs):
        bar = self.get("libbar")
        return bar and self._cc(f"{name}/ext" + X86_EXT, """
extern int bar_value(void);
void *PyInit_ext(void) { return (void *)(long)bar_value(); }
""", libs=["-Wl,--no-as-needed", str(bar)] + linkargs)

    def _ext_rpath(self):        # DT_RPATH $ORIGIN/../pkg.libs (inherited by libbar)
        return self._ext_with("rpath", ["-Wl,--disable-new-dtags",
                                        "-Wl,-rpath,$ORIGIN/../pkg.libs"])

    def _ext_runpath(self):      # DT_RUNPATH $ORIGIN/../pkg.libs (direct NEEDED only)
        return self._ext_with("runpath", ["-Wl,--enable-new-dtags",
                                          "-Wl,-rpath,$ORIGIN/../pkg.libs"])

    def _ext_plain(self):        # no RPATH/RUNPATH at all
        return self._ext_with("plain", [])

    # musl, aarch64 --------------------------------------------------------
    def _musl(self):
        return self._cc("muslext" + MUSL_EXT, """
#include <stdio.h>
#include <string.h>
void *PyInit_muslext(void) { char b[32]; snprintf(b, sizeof b, "%d", 7); return (void *)strlen(b); }
""", cc="musl")

    def _musl_exe(self):         # PT_INTERP /lib/ld-musl-x86_64.so.1
        return self._cc("musl-tool", '#include <stdio.h>\nint main(void) { puts("hi"); }\n',
                        cc="musl", shared=False)

    def _musl_new(self):         # reallocarray: exported by musl only since 1.2.2
        return self._cc("muslnew" + MUSL_EXT, """
#define _GNU_SOURCE
#include <stdlib.h>
void *PyInit_muslnew(void) { return reallocarray(0, 4, 4); }
""", cc="musl")

    def _aarch64(self):
        return self._cc("a64ext" + A64_EXT, """
#include <stdio.h>
#include <string.h>
void *PyInit_a64ext(void) { char b[32]; snprintf(b, sizeof b, "%d", 7); return (void *)strlen(b); }
""", cc="aarch64")


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    if not have_compiler("gcc"):
        pytest.skip("gcc not installed")
    return Fixtures(tmp_path_factory.mktemp("audit-elfs"))


@pytest.fixture
def mk(tmp_path):
    """Build a wheel: mk({member: path_or_bytes}, tags=..., **build_wheel options)."""
    counter = iter(range(1000))

    def make(files, tags="linux_x86_64", **kw):
        kw.setdefault("name", f"fx{next(counter)}")
        return build_wheel(tmp_path / "wheels", files, tags=tags, **kw)
    return make


def policy(result, tag):
    return next(p for p in result.policies if p.tag == tag)


def merged_needs(*paths):
    out = {}
    for p in paths:
        for lib, vers in readelf_version_needs(p).items():
            out.setdefault(lib, set()).update(vers)
    return out


def is_loader(lib):
    return re.match(r"ld-linux|ld64\.so|ld-musl-", lib) is not None


def dlopen_ok(path) -> tuple:
    """Load an ELF with the host's dynamic loader, in a clean subprocess: (ok, message)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])",
                           str(path)], capture_output=True, text=True, env=env)
    return proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]


# ------------------------------------------------------------------ the wheel helper

def test_wheelbuild_writes_a_valid_wheel(tmp_path):
    files = {"pkg/": b"", "pkg/__init__.py": b"x = 1\n", "pkg/data.bin": bytes(range(256)) * 10}
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        w = build_wheel(tmp_path / str(method), files, name="my-pkg", version="2.0",
                        tags=["manylinux_2_17_x86_64", "manylinux2014_x86_64"],
                        compression=method)
        assert w.name == "my_pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        with zipfile.ZipFile(w) as zf:
            assert zf.testzip() is None
            assert {i.compress_type for i in zf.infolist()} == {method}
            wheel_txt = zf.read("my_pkg-2.0.dist-info/WHEEL").decode()
            assert "Tag: cp311-cp311-manylinux2014_x86_64" in wheel_txt
            assert zf.getinfo("pkg/").is_dir()
            record = read_record(w)
            assert set(record) == {n for n in zf.namelist() if not n.endswith("/")}
            for name, (h, size) in record.items():
                if name.endswith("RECORD"):
                    assert (h, size) == ("", None)
                else:
                    data = zf.read(name)
                    assert (h, size) == (record_hash(data), len(data))
    # the packaging library (a dependency of fastelf) agrees with the file name
    from packaging.utils import parse_wheel_filename
    name, version, _b, tags = parse_wheel_filename(w.name)
    assert (str(name), str(version)) == ("my-pkg", "2.0")
    assert {t.platform for t in tags} == {"manylinux_2_17_x86_64", "manylinux2014_x86_64"}


# ------------------------------------------------------------------ glibc: symbol versions

@pytest.mark.parametrize("key", ["clean_basic", "clean_memcpy", "clean_getrandom"])
@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_clean_extension_tag_from_its_glibc_versions(fx, mk, key, method):
    so = fx.need(key)
    needs = readelf_version_needs(so)
    expected = glibc_tag_for(needs, "x86_64")
    member = f"pkg/{so.name}"
    r = audit_wheel(mk({member: so, "pkg/__init__.py": b""}, compression=method))
    assert r.error is None and not r.pure
    assert (r.arch, r.libc) == ("x86_64", "glibc")
    assert r.best_tag == expected
    assert r.tags[0] == expected
    assert r.external_libraries == {}
    assert r.problems == []      # NEEDED libc.so.6 names the libc
    assert {k: set(v) for k, v in r.versioned_symbols.items()} == {
        lib: v for lib, v in needs.items() if not is_loader(lib)}
    # every policy older than the expected one fails, and names the member
    tags = [p.tag for p in r.policies]
    for p in r.policies[:tags.index(expected)]:
        assert not p.satisfied
        assert p.symbol_versions and all(member in who for who in p.symbol_versions.values())
    assert all(p.satisfied for p in r.policies[tags.index(expected):])
    assert [m.path for m in r.elfs] == [member] and r.elfs[0].extension


def test_the_three_clean_fixtures_really_differ(fx):
    """Guard the fixtures: they must span three different tags, or the test above proves little."""
    tags = {glibc_tag_for(readelf_version_needs(fx.need(k)), "x86_64")
            for k in ("clean_basic", "clean_memcpy", "clean_getrandom")}
    assert tags == {"manylinux_2_5_x86_64", "manylinux_2_17_x86_64", "manylinux_2_26_x86_64"}


def test_libc_assumption_is_reported_only_when_no_elf_names_one(fx, mk):
    """Regression: "no ELF file names a libc" was reported for every glibc wheel."""
    named, bare = fx.need("clean_memcpy"), fx.need("nolibc")
    assert "libc.so.6" in readelf_dynamic(named)["NEEDED"]
    assert readelf_dynamic(bare)["NEEDED"] == []
    msg = "no ELF file names a libc"
    r = audit_wheel(mk({"pkg/" + named.name: named}))
    assert r.libc == "glibc" and not any(msg in p for p in r.problems)
    r = audit_wheel(mk({"pkg/" + bare.name: bare}))
    assert r.libc == "glibc" and any(msg in p for p in r.problems)
    assert r.best_tag == "manylinux_2_5_x86_64"    # nothing versioned, nothing external
    r = audit_wheel(mk({"pkg/" + bare.name: bare, "pkg/" + named.name: named}))
    assert not any(msg in p for p in r.problems)
    # a libc named by the file name's tag is not an assumption either
    r = audit_wheel(mk({"pkg/" + bare.name: bare}, tags="musllinux_1_1_x86_64"))
    assert r.libc == "musl" and not r.problems and r.ok


def test_too_new_symbol_names_the_symbol_and_the_member(fx, mk):
    so = fx.need("arc4random")
    needs = readelf_version_needs(so)
    assert "GLIBC_2.36" in needs["libc.so.6"], "fixture: arc4random should be GLIBC_2.36"
    assert readelf_undefined(so).get("arc4random") == "GLOBAL"
    member = "pkg/" + so.name
    r = audit_wheel(mk({member: so}))
    assert r.best_tag == glibc_tag_for(needs, "x86_64") == "manylinux_2_36_x86_64"
    failing = [p for p in r.policies if not p.satisfied]
    assert failing and all(p.symbol_versions == {"GLIBC_2.36": {member: ["arc4random"]}}
                           for p in failing)
    reasons = policy(r, "manylinux_2_35_x86_64").reasons()
    assert any("GLIBC_2.36" in x and "arc4random" in x and member in x for x in reasons)


# ------------------------------------------------------------------ external libraries

def _chain_members(fx, ext_key):
    return {"pkg/ext" + X86_EXT: fx.need(ext_key),
            "pkg.libs/libbar.so.1": fx.need("libbar"),
            "pkg.libs/libbaz.so.1": fx.need("libbaz")}


def _extract(wheel, dest):
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
    return Path(dest)


@pytest.mark.parametrize("key,tag", [("ext_rpath", "RPATH"), ("ext_runpath", "RUNPATH")])
def test_bundled_private_library_is_not_external(fx, mk, tmp_path, key, tag):
    ext = fx.need(key)
    assert readelf_dynamic(ext)[tag] == "$ORIGIN/../pkg.libs"
    members = _chain_members(fx, key)
    if key == "ext_runpath":
        # DT_RUNPATH applies to the extension's own NEEDED only: libbar's NEEDED
        # libbaz would not be found in pkg.libs, so give libbar its own RUNPATH
        # exactly as a repair would ($ORIGIN).
        members["pkg.libs/libbar.so.1"] = fx.need("libbar_origin")
    w = mk(members)
    r = audit_wheel(w)
    assert r.external_libraries == {}
    assert r.best_tag == glibc_tag_for(merged_needs(*members.values()), "x86_64")
    assert all(not p.external_libraries for p in r.policies)
    # the real loader agrees: the extracted wheel loads with nothing outside it
    ok, msg = dlopen_ok(_extract(w, tmp_path / "x") / "pkg" / ("ext" + X86_EXT))
    assert ok, msg


def test_runpath_is_not_inherited_by_dependencies(fx, mk, tmp_path):
    """ld.so uses DT_RUNPATH for the object's own NEEDED only (unlike DT_RPATH)."""
    members = _chain_members(fx, "ext_runpath")
    assert readelf_dynamic(members["pkg.libs/libbar.so.1"])["RUNPATH"] is None
    w = mk(members)
    r = audit_wheel(w)
    assert r.external_libraries == {"libbaz.so.1": ["pkg.libs/libbar.so.1"]}
    assert r.best_tag == "linux_x86_64"
    ok, msg = dlopen_ok(_extract(w, tmp_path / "x") / "pkg" / ("ext" + X86_EXT))
    assert not ok and "libbaz.so.1" in " ".join(msg)


@pytest.mark.parametrize("case", ["no-rpath-bundled", "rpath-not-bundled", "rpath-elsewhere"])
def test_unbundled_library_is_external(fx, mk, tmp_path, case):
    member = "pkg/ext" + X86_EXT
    if case == "no-rpath-bundled":
        files = {member: fx.need("ext_plain"), "pkg.libs/libbar.so.1": fx.need("libbar"),
                 "pkg.libs/libbaz.so.1": fx.need("libbaz")}
        assert readelf_dynamic(files[member])["RPATH"] is None
        assert readelf_dynamic(files[member])["RUNPATH"] is None
    elif case == "rpath-not-bundled":
        files = {member: fx.need("ext_rpath")}
    else:   # the library is in the wheel, but not where RPATH points
        files = {member: fx.need("ext_rpath"), "other.libs/libbar.so.1": fx.need("libbar"),
                 "other.libs/libbaz.so.1": fx.need("libbaz")}
    assert "libbar.so.1" in readelf_dynamic(files[member])["NEEDED"]
    w = mk(files)
    r = audit_wheel(w)
    assert r.external_libraries == {"libbar.so.1": [member]}
    assert r.best_tag == "linux_x86_64" and r.tags == []
    for p in r.policies:
        assert not p.satisfied
        assert p.external_libraries == {"libbar.so.1": [member]}
        assert any("libbar.so.1" in x and member in x for x in p.reasons())
    ok, msg = dlopen_ok(_extract(w, tmp_path / "x") / member)
    assert not ok and "libbar.so.1" in " ".join(msg)


# ------------------------------------------------------------------ blacklist, ISA

@needs_auditwheel
def test_blacklisted_zlib_symbol(fx, mk):
    so = fx.need("zerr")
    assert "libz.so.1" in readelf_dynamic(so)["NEEDED"]
    assert readelf_undefined(so).get("z_errmsg") == "GLOBAL"
    member = "pkg/" + so.name
    r = audit_wheel(mk({member: so}))
    listing = {f"{p['name']}_x86_64" for p in auditwheel_policies("glibc")
               if "x86_64" in p["symbol_versions"]
               and "z_errmsg" in p["blacklist"].get("libz.so.1", ())}
    assert listing, "auditwheel's policies should blacklist z_errmsg"
    checked = {p.tag: p for p in r.policies}
    assert listing <= set(checked)
    for tag, p in checked.items():
        if tag in listing:
            assert not p.satisfied
            assert p.blacklisted_symbols == {"libz.so.1": {member: ["z_errmsg"]}}
            assert any("z_errmsg" in x and "libz.so.1" in x for x in p.reasons())
        else:
            assert not p.blacklisted_symbols
    assert r.external_libraries == {}     # libz.so.1 itself is allowed
    if listing == set(checked):
        assert r.best_tag == "linux_x86_64"


def test_weak_blacklisted_symbol_is_ignored(fx, mk):
    so = fx.need("zerr_weak")
    assert readelf_undefined(so).get("z_errmsg") == "WEAK"
    r = audit_wheel(mk({"pkg/" + so.name: so}))
    assert all(not p.blacklisted_symbols for p in r.policies)
    assert r.best_tag == glibc_tag_for(readelf_version_needs(so), "x86_64")


def _readelf_isa_needed(path):
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True,
                         env=dict(os.environ, LC_ALL="C"), check=True).stdout
    m = re.search(r"x86 ISA needed: (.*)", out)
    return m.group(1) if m else ""


def test_isa_level_v3(fx, mk):
    so = fx.need("isa_v3")
    assert "x86-64-v3" in _readelf_isa_needed(so)
    member = "pkg/" + so.name
    w = mk({member: so})
    r = audit_wheel(w)
    assert r.best_tag == "linux_x86_64" and r.tags == []
    assert all(p.isa == {member: 3} and not p.satisfied for p in r.policies)
    assert any("x86-64-v3" in x for x in r.policies[0].reasons())
    r2 = audit_wheel(w, disable_isa_ext_check=True)
    assert r2.best_tag == glibc_tag_for(readelf_version_needs(so), "x86_64")
    assert all(not p.isa for p in r2.policies)
    # the CLI flag does the same
    out = io.StringIO()
    assert cli.main(["show", "--json", "--disable-isa-ext-check", str(w)], out=out) == 0
    assert json.loads(out.getvalue())["best_tag"] == r2.best_tag


# ------------------------------------------------------------------ musl, aarch64, mixed

def test_musl_wheel(fx, mk):
    so, exe = fx.need("musl"), fx.need("musl_exe")
    assert readelf_dynamic(so)["NEEDED"] == ["libc.so"]      # Debian's musl-gcc
    files = {"pkg/" + so.name: so, "pkg/bin/musl-tool": exe}
    w = mk(files, tags="musllinux_1_1_x86_64")
    r = audit_wheel(w)
    assert r.error is None
    assert (r.libc, r.arch) == ("musl", "x86_64")
    assert r.best_tag == "musllinux_1_1_x86_64"
    assert {"musllinux_1_1_x86_64", "musllinux_1_2_x86_64"} <= set(r.tags)
    assert r.external_libraries == {} and r.versioned_symbols == {}
    assert r.ok and r.unsatisfied_claims == {}
    assert all(e.libc == "musl" for e in r.elfs)
    assert {e.path: e.interpreter for e in r.elfs}["pkg/bin/musl-tool"] == \
        "/lib/ld-musl-x86_64.so.1"
    # never a manylinux tag, and a manylinux claim on it is refused
    assert not any(t.startswith("manylinux") for t in r.tags)
    r2 = audit_wheel(mk(files, tags="manylinux_2_17_x86_64"))
    assert "manylinux_2_17_x86_64" in r2.unsatisfied_claims and not r2.ok


def test_musl_1_2_only_symbol(fx, mk):
    so = fx.need("musl_new")
    assert "reallocarray" in readelf_undefined(so)
    member = "pkg/" + so.name
    r = audit_wheel(mk({member: so}, tags="musllinux_1_1_x86_64"))
    assert r.libc == "musl"
    assert r.best_tag == "musllinux_1_2_x86_64"
    old = policy(r, "musllinux_1_1_x86_64")
    assert not old.satisfied and old.unavailable_symbols == {member: ["reallocarray"]}
    assert "reallocarray" in r.unsatisfied_claims["musllinux_1_1_x86_64"]


def test_aarch64_wheel(fx, mk):
    so = fx.need("aarch64")
    member = "pkg/" + so.name
    r = audit_wheel(mk({member: so}, tags="manylinux2014_aarch64"))
    assert (r.arch, r.libc) == ("aarch64", "glibc")
    assert r.best_tag == glibc_tag_for(readelf_version_needs(so), "aarch64")
    assert r.best_tag == "manylinux_2_17_aarch64"        # aarch64 starts at 2_17
    aw = {f"{p['name']}_aarch64" for p in auditwheel_policies("glibc")
          if "aarch64" in p["symbol_versions"]}
    assert {p.tag for p in r.policies} == aw
    assert r.ok and "manylinux2014_aarch64" in r.tags


def test_wrong_arch_claim(fx, mk):
    so = fx.need("aarch64")
    r = audit_wheel(mk({"pkg/" + so.name: so}, tags="manylinux_2_17_x86_64"))
    assert r.arch == "aarch64"
    assert "aarch64" in r.unsatisfied_claims["manylinux_2_17_x86_64"]
    assert not r.ok


def test_foreign_arch_elf_is_ignored_not_audited(fx, mk):
    x86, a64 = fx.need("arc4random"), fx.need("aarch64")
    r = audit_wheel(mk({"pkg/" + x86.name: x86, "pkg/" + a64.name: a64},
                       tags="linux_x86_64"))
    assert r.arch == "x86_64"
    assert set(r.ignored) == {"pkg/" + a64.name}
    assert [e.path for e in r.elfs] == ["pkg/" + x86.name]


def test_mixed_glibc_and_musl_is_an_error(fx, mk):
    g, m = fx.need("clean_memcpy"), fx.need("musl")
    for tags in ("linux_x86_64", "manylinux_2_17_x86_64", "musllinux_1_1_x86_64"):
        r = audit_wheel(mk({"pkg/" + g.name: g, "pkg/" + m.name: m}, tags=tags))
        assert r.error and "glibc" in r.error and "musl" in r.error
        assert "pkg/" + g.name in r.error and "pkg/" + m.name in r.error
        assert not r.ok and r.best_tag is None
        assert r.to_dict()["error"] == r.error
        json.dumps(r.to_dict())


# ------------------------------------------------------------------ pure wheels, claims

def test_pure_wheel(mk):
    files = {"pkg/__init__.py": b"print('hi')\n", "pkg/data.bin": b"\x00ELF" + bytes(100)}
    r = audit_wheel(mk(files, tags="any", python_tag="py3", abi_tag="none"))
    assert r.pure and r.elfs == [] and r.error is None
    assert r.claimed_tags == ["any"] and r.ok
    r2 = audit_wheel(mk(files, tags="linux_x86_64"))
    assert r2.pure and "linux_x86_64" in r2.unsatisfied_claims and not r2.ok


def test_member_with_elf_magic_that_is_not_elf(mk, tmp_path):
    """Regression: WheelReader.close() raised BufferError (a member view was still alive in
    the traceback), which replaced the WheelError and crashed audit_path and the CLI."""
    w = mk({"pkg/data.bin": b"\x7fELF is not an ELF file" + bytes(64)})
    r = audit_path(w)
    assert r.error and "pkg/data.bin" in r.error and not r.ok
    assert cli.main(["audit", str(w)], out=io.StringIO()) == 3


def test_mislabeled_wheel(fx, mk):
    so = fx.need("arc4random")
    member = "pkg/" + so.name
    w = mk({member: so}, tags="manylinux_2_17_x86_64")
    r = audit_wheel(w)
    assert r.claimed_tags == ["manylinux_2_17_x86_64"]
    why = r.unsatisfied_claims["manylinux_2_17_x86_64"]
    assert "arc4random" in why and "GLIBC_2.36" in why and member in why
    assert not r.ok
    # the CLI says so with exit code 1, in-process and as a program
    assert cli.main(["show", str(w)], out=io.StringIO()) == 1
    proc = subprocess.run([sys.executable, "-m", "fastelf", "show", str(w)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "manylinux_2_36_x86_64" in proc.stdout and "arc4random" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", str(w)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr


@pytest.mark.parametrize("claims,unsatisfied", [
    (["manylinux2014_x86_64"], []),                                       # 2_17 alias
    (["manylinux_2_17_x86_64", "manylinux2014_x86_64"], []),
    (["manylinux2010_x86_64"], ["manylinux2010_x86_64"]),                 # 2_12 < 2.14
    (["manylinux1_x86_64", "manylinux_2_17_x86_64"], ["manylinux1_x86_64"]),
    (["manylinux_2_99_x86_64"], []),             # newer than any policy: still satisfied
    (["manylinux_2_3_x86_64"], ["manylinux_2_3_x86_64"]),  # older than any policy
    (["linux_x86_64"], []),
    (["musllinux_1_2_x86_64"], ["musllinux_1_2_x86_64"]),
    (["macosx_11_0_arm64"], ["macosx_11_0_arm64"]),
])
def test_claims_and_legacy_aliases(fx, mk, claims, unsatisfied):
    so = fx.need("clean_memcpy")
    assert glibc_tag_for(readelf_version_needs(so), "x86_64") == "manylinux_2_17_x86_64"
    r = audit_wheel(mk({"pkg/" + so.name: so}, tags=claims))
    assert r.claimed_tags == claims
    assert sorted(r.unsatisfied_claims) == sorted(unsatisfied)
    assert r.ok == (not unsatisfied)
    assert "manylinux2014_x86_64" in r.tags and "manylinux2010_x86_64" not in r.tags
    if "manylinux2010_x86_64" in unsatisfied:
        assert "memcpy" in r.unsatisfied_claims["manylinux2010_x86_64"]


# ------------------------------------------------------------------ API input forms

def test_bytes_and_file_object_give_the_same_verdict(fx, mk):
    so = fx.need("arc4random")
    w = mk({"pkg/" + so.name: so}, tags="manylinux_2_17_x86_64")
    def verdict(source, **kw):
        d = audit_wheel(source, **kw).to_dict()
        del d["path"]
        return d
    by_path = verdict(w)
    assert by_path["wheel"] == w.name and by_path["unsatisfied_claims"]
    assert verdict(w.read_bytes(), filename=w.name) == by_path
    with open(w, "rb") as f:
        assert verdict(f) == by_path
    with open(w, "rb") as f:
        assert verdict(io.BytesIO(f.read()), filename=w.name) == by_path


def test_audit_path_reports_errors_instead_of_raising(tmp_path):
    missing = tmp_path / "nope-1.0-cp311-cp311-linux_x86_64.whl"
    r = audit_path(missing)
    assert r.error and not r.ok
    assert r.claimed_tags == ["linux_x86_64"]


# ------------------------------------------------------------------ CLI

def test_show_text_mentions_tag_and_reasons(fx, mk):
    so = fx.need("arc4random")
    member = "pkg/" + so.name
    w = mk({member: so}, tags="manylinux_2_36_x86_64")
    out = io.StringIO()
    assert cli.main(["show", str(w)], out=out) == 0
    text = out.getvalue()
    assert '"manylinux_2_36_x86_64"' in text
    assert "arc4random" in text and member in text and "GLIBC_2.36" in text
    assert "manylinux_2_35_x86_64" in text          # the tag it misses, and why


def test_show_json_matches_the_api(fx, mk):
    so = fx.need("ext_plain")
    w = mk({"pkg/ext" + X86_EXT: so})
    proc = subprocess.run([sys.executable, "-m", "fastelf", "show", "--json", str(w)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    # beside the audit: where repair would land (libbar.so.1 is on no search path here)
    repair = d.pop("repair")
    assert repair["tag"] is None and "cannot find external library libbar.so.1" in repair["problem"]
    assert d == json.loads(json.dumps(audit_wheel(w).to_dict()))
    assert d["best_tag"] == "linux_x86_64"
    assert d["external_libraries"] == {"libbar.so.1": ["pkg/ext" + X86_EXT]}


def test_audit_directory_parallel_json(fx, mk, tmp_path):
    so_ok, so_new = fx.need("clean_memcpy"), fx.need("arc4random")
    root = tmp_path / "tree"
    made = {
        "b/ok-1.0-cp311-cp311-manylinux2014_x86_64.whl": ({"m/" + so_ok.name: so_ok}, True),
        "a/bad-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": ({"m/" + so_new.name: so_new},
                                                             False),
        "a/z/pure-1.0-py3-none-any.whl": ({"m/__init__.py": b""}, True),
        "c-1.0-cp311-cp311-manylinux_2_36_x86_64.whl": ({"m/" + so_new.name: so_new}, True),
    }
    for rel, (files, _ok) in made.items():
        p = root / rel
        build_wheel(p.parent, files, filename=p.name)
    (root / "notes.txt").write_text("not a wheel")
    expected = sorted(str(p) for p in root.rglob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", "--json", "--jobs", "2",
                           str(root)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr     # one mislabeled wheel
    lines = proc.stdout.splitlines()
    assert len(lines) == len(made)
    docs = [json.loads(x) for x in lines]
    assert [d["path"] for d in docs] == expected
    for d in docs:
        assert d["ok"] == made[os.path.relpath(d["path"], root)][1]
    summary = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"\b4 wheels\b", summary) and re.search(r"\b3 ok\b", summary)
    assert re.search(r"\b1 mislabeled\b", summary) and re.search(r"\b0 unreadable\b", summary)
    # the same in-process, with text output and -q: only the bad wheel is listed
    out = io.StringIO()
    assert cli.main(["audit", "-q", "--jobs", "2", str(root)], out=out) == 1
    assert out.getvalue().count("\n") == 1 and "bad-1.0" in out.getvalue()


def test_audit_unreadable_wheel_exit_code(fx, mk, tmp_path):
    so = fx.need("clean_memcpy")
    good = mk({"pkg/" + so.name: so}, tags="manylinux_2_17_x86_64")
    junk = tmp_path / "junk-1.0-cp311-cp311-linux_x86_64.whl"
    junk.write_bytes(b"this is not a zip file")
    out = io.StringIO()
    assert cli.main(["audit", "--json", str(good), str(junk)], out=out) == 3
    docs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [d["ok"] for d in docs] == [True, False] and "error" in docs[1]


def test_cli_usage_errors(tmp_path):
    assert cli.main(["show", str(tmp_path / "missing.whl")], out=io.StringIO()) == 2
    assert cli.main(["audit", str(tmp_path / "missing")], out=io.StringIO()) == 2
    proc = subprocess.run([sys.executable, "-m", "fastelf"], capture_output=True, text=True)
    assert proc.returncode == 2


# ------------------------------------------------------------------ auditwheel as an oracle

@needs_auditwheel
@pytest.mark.parametrize("key", ["clean_basic", "clean_memcpy", "clean_getrandom",
                                 "arc4random", "zerr", "zerr_weak", "isa_v3", "ext_plain",
                                 "ext_rpath", "aarch64"])
def test_agrees_with_auditwheel_on_fixtures(fx, mk, key):
    """Where auditwheel is right, both tools give the same verdict on the same wheel."""
    so = fx.need(key)
    if key.startswith("ext_"):
        files = {"pkg/ext" + X86_EXT: so, "pkg.libs/libbar.so.1": fx.need("libbar"),
                 "pkg.libs/libbaz.so.1": fx.need("libbaz")}
    else:
        files = {"pkg/" + so.name: so}
    arch = "aarch64" if key == "aarch64" else "x86_64"
    w = mk(files, tags=f"linux_{arch}")
    aw = auditwheel_show(w)
    r = audit_wheel(w)
    assert r.best_tag == aw["overall_tag"]
    assert {k: sorted(v) for k, v in r.versioned_symbols.items()} == \
        {k: sorted(v) for k, v in aw["versioned_symbols"].items()}
    assert set(r.external_libraries) == set(aw["external_libs"])
    assert bool(r.policies and r.policies[0].isa) == aw["unsupported_isa"]


# ------------------------------------------------------------------ where auditwheel is wrong
# Each case is a section of docs/auditwheel-differences.md; the test shows both answers
# and checks fastelf's against the real loader or the fixture's own symbols.

@needs_auditwheel
def test_auditwheel_difference_runpath_propagated(fx, mk, tmp_path):
    """auditwheel applies the extension's DT_RUNPATH to its dependencies' NEEDED too."""
    w = mk(_chain_members(fx, "ext_runpath"))
    aw = auditwheel_show(w)
    assert aw["external_libs"] == {} and aw["overall_tag"] == "manylinux_2_5_x86_64"
    r = audit_wheel(w)
    assert r.external_libraries == {"libbaz.so.1": ["pkg.libs/libbar.so.1"]}
    ok, msg = dlopen_ok(_extract(w, tmp_path / "x") / "pkg" / ("ext" + X86_EXT))
    assert not ok and "libbaz.so.1" in " ".join(msg)     # ld.so agrees with fastelf


@needs_auditwheel
def test_auditwheel_difference_debian_musl(fx, mk):
    """Debian's musl-gcc NEEDED libc.so: auditwheel calls it external and takes the
    musl version from the host (the newest policy when the host has no Alpine musl)."""
    so = fx.need("musl")
    assert readelf_dynamic(so)["NEEDED"] == ["libc.so"]
    w = mk({"pkg/" + so.name: so})
    aw = auditwheel_show(w)
    assert "libc.so" in aw["external_libs"]
    assert aw["overall_tag"] == "linux_x86_64"
    assert aw["sym_tag"] == "musllinux_1_2_x86_64"
    r = audit_wheel(w)
    assert r.external_libraries == {} and r.best_tag == "musllinux_1_1_x86_64"
    # musllinux_1_1 is right: nothing it imports is missing from musl 1.1
    assert not set(readelf_undefined(so)) & MUSL_1_2_ONLY


# functions that musl added in 1.2.x (WHATSNEW: reallocarray 1.2.2, qsort_r 1.2.3,
# statx/preadv2/pwritev2 1.2.5); on 64-bit arches time64 changed no symbol names
MUSL_1_2_ONLY = {"reallocarray", "qsort_r", "statx", "preadv2", "pwritev2"}


@needs_auditwheel
def test_auditwheel_difference_mixed_libc(fx, mk):
    """auditwheel drops the ELF files of the 'other' libc and passes the wheel."""
    g, m = fx.need("clean_memcpy"), fx.need("musl")
    w = mk({"pkg/" + g.name: g, "pkg/" + m.name: m})
    aw = auditwheel_show(w)
    assert aw["overall_tag"].startswith(("manylinux_", "musllinux_")), aw
    r = audit_wheel(w)
    assert r.error and "mixes glibc and musl" in r.error


@needs_auditwheel
def test_auditwheel_difference_mislabeled_exit_code(fx, mk):
    """auditwheel show exits 0 for a wheel whose file name claims a tag it does not meet."""
    so = fx.need("arc4random")
    w = mk({"pkg/" + so.name: so}, tags="manylinux_2_17_x86_64")
    proc = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(w)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "manylinux_2_36_x86_64" in proc.stdout
    assert cli.main(["show", str(w)], out=io.StringIO()) == 1


@needs_auditwheel
def test_auditwheel_difference_musl_path_file(tmp_path):
    """musl separates /etc/ld-musl-ARCH.path entries by newlines or colons (Debian's
    musl-tools writes one per line); auditwheel splits on colons only."""
    from auditwheel.lddtree import load_ld_paths
    from auditwheel.libc import Libc

    from fastelf.ldpaths import musl_path
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ld-musl-x86_64.path").write_text(
        "/lib/x86_64-linux-musl\n/usr/lib/x86_64-linux-musl\n")
    aw = load_ld_paths(Libc.MUSL, root=str(tmp_path))["conf"]
    assert len(aw) == 1 and "\n" in aw[0]          # one bogus directory name
    assert musl_path("x86_64", root=str(tmp_path)) == [
        "/lib/x86_64-linux-musl", "/usr/lib/x86_64-linux-musl"]


def test_batch_survives_a_dying_worker(tmp_path, monkeypatch):
    """A wheel that kills its worker process is reported; the others are audited."""
    import os as _os

    from fastelf import batch

    good = []
    for n in range(3):
        good.append(build_wheel(tmp_path, {f"p{n}/__init__.py": b""}, name=f"p{n}",
                                tags="any", python_tag="py3", abi_tag="none"))
    killer = build_wheel(tmp_path, {"k/__init__.py": b""}, name="killer", tags="any",
                         python_tag="py3", abi_tag="none")
    real = batch._audit_one

    def audit_or_die(path, options):
        if "killer" in _os.path.basename(path):
            _os._exit(9)
        return real(path, options)

    # workers are forked and find the function by name: point that name at the stand-in
    audit_or_die.__module__, audit_or_die.__qualname__ = batch.__name__, "_audit_one"
    monkeypatch.setattr(batch, "_audit_one", audit_or_die)
    results = list(batch.audit_many([tmp_path], jobs=2))
    by_name = {_os.path.basename(r.path): r for r in results}
    assert sorted(by_name) == sorted(_os.path.basename(p) for p in good + [killer])
    assert "worker process" in by_name[killer.name].error
    for p in good:
        assert by_name[p.name].error is None and by_name[p.name].pure
