"""``fastelf check``: every check fails on a crafted wheel and passes on real(istic) ones.

Oracles, none of them fastelf: readelf (PT_GNU_STACK, NEEDED, SONAME, RPATH,
which symbols are undefined), the host's glibc loader (does dlopen make the
stack executable, is a library found), this CPython's own libpython (which
symbols it exports), abi3audit and its abi3info table (the stable ABI),
Python's zipfile (data descriptors, methods, header mismatches) and packaging
(wheel file names and tags).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from elfbuild import compile_c, have_compiler
from realwheels import WHEELS, fetch
from wheelbuild import build_wheel

from fastelf import cli
from fastelf.audit import audit_wheel
from fastelf.check import Kind, abi3_floor, check_wheel, stable_abi
from fastelf.errors import WheelError
from fastelf.wheel import WheelReader

X86_EXT = ".cpython-311-x86_64-linux-gnu.so"
PY_INCLUDE = sysconfig.get_paths()["include"]
LIBPYTHON = Path(sysconfig.get_config_var("LIBDIR") or "/") / \
    (sysconfig.get_config_var("INSTSONAME") or "libpython-none")

needs_gcc = pytest.mark.skipif(not have_compiler("gcc"), reason="gcc not installed")


def kinds(report, kind):
    return [f for f in report.findings if f.kind is kind]


def readelf(*args) -> str:
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def wheels(tmp_path):
    """wheels(files, **build_wheel options) -> path of a new wheel in tmp_path."""
    counter = iter(range(1000))

    def make(files, tags="manylinux_2_17_x86_64", **kw):
        kw.setdefault("name", f"fx{next(counter)}")
        return build_wheel(tmp_path / "wheels", files, tags=tags, **kw)
    return make


def ext_source(module: str, body: str = "return 0;") -> str:
    return f"void *PyInit_{module}(void) {{ {body} }}\n"


# ------------------------------------------------------------------ executable stack

def drop_gnu_stack(src: Path, dst: Path) -> Path:
    """Copy an ELF64 little-endian file with its PT_GNU_STACK header turned into PT_NULL."""
    data = bytearray(src.read_bytes())
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", data, at)[0] == 0x6474E551:
            struct.pack_into("<I", data, at, 0)
    dst.write_bytes(bytes(data))
    return dst


_STACK_PROBE = r"""
import ctypes, json, sys
def executable():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[stack]"):
            return "x" in line.split()[1]
before = executable()
try:
    ctypes.CDLL(sys.argv[1])
    refused = False
except OSError:
    refused = True
print(json.dumps({"before": before, "after": executable(), "refused": refused}))
"""


def loader_wants_exec_stack(lib: Path) -> bool:
    """The host glibc's answer: dlopen refuses the file (glibc >= 2.41) or makes the
    stack executable (older glibc)."""
    out = subprocess.run([sys.executable, "-c", _STACK_PROBE, str(lib)], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out)
    assert r["before"] is False, "the test interpreter already has an executable stack"
    return r["refused"] or r["after"]


def gnu_stack_flags(lib: Path) -> str | None:
    """readelf's Flg column of GNU_STACK, or None when there is no such header."""
    m = re.search(r"GNU_STACK(?:\s+0x[0-9a-f]+){5}\s+(\S+)", readelf("-l", str(lib)))
    return m.group(1) if m else None


@needs_gcc
@pytest.mark.parametrize("variant", ["execstack", "noexecstack", "no-gnu-stack"])
def test_exec_stack_agrees_with_readelf_and_the_host_loader(tmp_path, wheels, variant):
    flag = "-Wl,-z,execstack" if variant == "execstack" else "-Wl,-z,noexecstack"
    lib = compile_c(tmp_path, f"{variant}/stacky{X86_EXT}", ext_source("stacky"),
                    args=[flag])
    if variant == "no-gnu-stack":
        lib = drop_gnu_stack(lib, tmp_path / f"nostack{X86_EXT}")
    expected_flags = {"execstack": "RWE", "noexecstack": "RW", "no-gnu-stack": None}[variant]
    assert gnu_stack_flags(lib) == expected_flags
    wants_exec = loader_wants_exec_stack(lib)
    assert wants_exec == (variant != "noexecstack")   # x86_64's default stack is executable

    report = check_wheel(wheels({f"pkg/stacky{X86_EXT}": lib}))
    found = kinds(report, Kind.EXEC_STACK)
    assert bool(found) == wants_exec
    if found:
        assert found[0].file == f"pkg/stacky{X86_EXT}" and "2.41" in found[0].reason


@pytest.mark.skipif(not have_compiler("aarch64"), reason="aarch64 compiler not installed")
def test_aarch64_without_gnu_stack_is_not_reported(tmp_path, wheels):
    """glibc's aarch64 default stack (sysdeps/aarch64/stackinfo.h) is not executable."""
    lib = compile_c(tmp_path, "a64.cpython-311-aarch64-linux-gnu.so", ext_source("a64"),
                    cc="aarch64")
    lib = drop_gnu_stack(lib, tmp_path / "a64n.cpython-311-aarch64-linux-gnu.so")
    assert gnu_stack_flags(lib) is None
    report = check_wheel(wheels({"a64.cpython-311-aarch64-linux-gnu.so": lib},
                                tags="manylinux_2_17_aarch64"))
    assert not kinds(report, Kind.EXEC_STACK)


# ------------------------------------------------------------------ abi3

ABI3_SOURCE = """
#define Py_LIMITED_API 0x03080000
#include <Python.h>
%(decl)s
static PyObject *f(PyObject *self, PyObject *arg) { %(body)s }
static PyMethodDef methods[] = {{"f", f, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "%(mod)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(mod)s(void) { return PyModule_Create(&mod); }
"""

# a 3.10 stable-ABI function, and one outside the stable ABI, both hidden by the
# 3.8 limited-API headers: declared under another name, as real code ends up doing
NEWER = ('extern PyObject *call0(PyObject *) __asm__("PyObject_CallNoArgs");',
         "return call0(arg);")
UNSTABLE = ('extern const char *utf8(PyObject *) __asm__("PyUnicode_AsUTF8");',
            "return utf8(arg) ? Py_None : NULL;")
PLAIN = ("", "Py_INCREF(arg); return arg;")


def abi3_ext(tmp_path, mod: str, variant: tuple, libs=()) -> Path:
    if not Path(PY_INCLUDE, "Python.h").exists():
        pytest.skip("no Python.h for this interpreter")
    decl, body = variant
    return compile_c(tmp_path, f"{mod}.abi3.so", ABI3_SOURCE % {"decl": decl, "body": body,
                                                                 "mod": mod},
                     args=[f"-I{PY_INCLUDE}"], libs=list(libs))


def abi3audit_report(wheel: Path) -> dict:
    """abi3audit's verdict per extension: {name: result}."""
    if shutil.which("abi3audit") is None:
        pytest.skip("abi3audit not installed")
    out = subprocess.run(["abi3audit", "-R", str(wheel)], check=False, capture_output=True,
                         text=True).stdout
    spec = json.loads(out)["specs"][str(wheel)]
    return {e["name"]: e["result"] for e in spec["wheel"]}


def py_undefined(lib: Path) -> set:
    """CPython symbols readelf lists as undefined (imported) in ``lib``."""
    out = readelf("--dyn-syms", str(lib))
    return {line.split()[-1] for line in out.splitlines()
            if " UND " in line and re.match(r"_?Py", line.split()[-1])}


@needs_gcc
@pytest.mark.parametrize("python_tag, newer_reported", [("cp38", True), ("cp310", False)])
def test_abi3_newer_symbol_agrees_with_abi3audit(tmp_path, wheels, python_tag, newer_reported):
    ext = abi3_ext(tmp_path, "abinew", NEWER)
    assert "PyObject_CallNoArgs" in py_undefined(ext)
    whl = wheels({"abinew.abi3.so": ext}, python_tag=python_tag, abi_tag="abi3")
    report = check_wheel(whl)
    ours = kinds(report, Kind.ABI3)
    theirs = abi3audit_report(whl)["abinew.abi3.so"]
    assert bool(ours) == newer_reported == bool(theirs["future_abi3_objects"])
    if ours:
        assert "PyObject_CallNoArgs (3.10)" in ours[0].reason
        assert theirs["future_abi3_objects"] == {"PyObject_CallNoArgs": "3.10"}
    assert report.ok == (not newer_reported)


@needs_gcc
def test_abi3_symbol_outside_the_stable_abi_agrees_with_abi3audit(tmp_path, wheels):
    ext = abi3_ext(tmp_path, "abiout", UNSTABLE)
    whl = wheels({"abiout.abi3.so": ext}, python_tag="cp38", abi_tag="abi3")
    ours = kinds(check_wheel(whl), Kind.ABI3)
    assert len(ours) == 1 and "outside the stable ABI: PyUnicode_AsUTF8" in ours[0].reason
    assert abi3audit_report(whl)["abiout.abi3.so"]["non_abi3_symbols"] == ["PyUnicode_AsUTF8"]


@needs_gcc
def test_abi3_linking_libpython_is_reported(tmp_path, wheels):
    if not LIBPYTHON.exists():
        pytest.skip("this Python has no shared libpython")
    ext = abi3_ext(tmp_path, "abilink", PLAIN,
                   libs=["-Wl,--no-as-needed", str(LIBPYTHON)])
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", readelf("-d", str(ext)))
    assert LIBPYTHON.name in needed
    whl = wheels({"abilink.abi3.so": ext}, python_tag="cp38", abi_tag="abi3")
    ours = kinds(check_wheel(whl), Kind.ABI3)
    assert [f.file for f in ours] == ["abilink.abi3.so"] and LIBPYTHON.name in ours[0].reason


@needs_gcc
def test_abi3_versioned_extension_name_and_non_abi3_wheels(tmp_path, wheels):
    ext = abi3_ext(tmp_path, "abiname", PLAIN)
    member = f"abiname{X86_EXT}"
    bad = check_wheel(wheels({member: ext}, python_tag="cp38", abi_tag="abi3"))
    assert [f.file for f in kinds(bad, Kind.ABI3)] == [member]
    # the same file in a version-specific (cp311-cp311) wheel promises no stable ABI
    assert check_wheel(wheels({member: ext})).ok
    assert abi3_floor("x-1.0-cp36.cp38-abi3-linux_x86_64.whl") == (3, 6)
    assert abi3_floor("x-1.0-cp311-cp311-linux_x86_64.whl") is None


def test_stable_abi_table_matches_abi3info():
    """abi3audit's own table, another transcription of CPython's manifest, agrees on
    every symbol up to 3.14 (it is newer: its 3.15+ additions are not compared)."""
    abi3info = pytest.importorskip("abi3info")
    theirs = {s.name: (f.added.major, f.added.minor)
              for tab in (abi3info.FUNCTIONS, abi3info.DATAS) for s, f in tab.items()
              if (f.added.major, f.added.minor) <= (3, 14)
              and getattr(f.ifdef, "name", None) not in ("MS_WINDOWS", "USE_STACKCHECK",
                                                         "Py_REF_DEBUG")}
    ours = {n: v for n, v in stable_abi().items() if v <= (3, 14)}
    assert ours == theirs


def test_stable_abi_table_matches_this_libpython():
    """Every symbol the table gives to 3.11 or older is exported by this CPython 3.11
    (readelf on its libpython).  Later additions may be exported too: many existed
    outside the stable ABI before they entered it."""
    if sys.version_info[:2] != (3, 11) or not LIBPYTHON.exists():
        pytest.skip("needs a shared CPython 3.11")
    out = readelf("--dyn-syms", str(LIBPYTHON))
    exported = {line.split()[-1].split("@")[0] for line in out.splitlines()
                if re.search(r"\s(FUNC|OBJECT)\s", line) and " UND " not in line}
    table = stable_abi()
    old = {n for n, v in table.items() if v <= (3, 11)}
    assert old - exported == set()


def test_real_abi3_wheels_pass_and_differ_from_abi3audit_only_where_it_is_wrong(tmp_path):
    """psutil (cp36-abi3) defines PyErr_SetFromOSErrnoWithSyscall itself: readelf shows
    it defined, not imported, so it is no use of libpython; abi3audit lists every
    Py-prefixed symbol, defined or not, and reports it.  cryptography (cp311-abi3,
    when cached in /tmp/abi3wheels) passes both."""
    w = next(w for w in WHEELS if w.project == "psutil")
    path, why = fetch(w)
    if path is None:
        pytest.skip(why)
    assert check_wheel(path).ok
    flagged = {s for r in abi3audit_report(Path(path)).values()
               for s in r["non_abi3_symbols"]}
    assert flagged == {"PyErr_SetFromOSErrnoWithSyscall"}
    with zipfile.ZipFile(path) as zf:
        for name in (n for n in zf.namelist() if n.endswith(".so")):
            lib = tmp_path / Path(name).name
            lib.write_bytes(zf.read(name))
            assert not py_undefined(lib) & flagged
    for cached in Path("/tmp/abi3wheels").glob("cryptography-*-abi3-*.whl"):
        assert check_wheel(cached).ok
        assert not any(r["non_abi3_symbols"] or r["future_abi3_objects"]
                       for r in abi3audit_report(cached).values())


# ------------------------------------------------------------------ zip layout (PyPI)

def _clean(wheels) -> Path:
    return wheels({"pkg/__init__.py": b"x = 1\n"}, tags="any", python_tag="py3",
                  abi_tag="none")


def test_data_descriptors_reported_as_zipfile_writes_them(tmp_path, wheels):
    src = _clean(wheels)
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):          # zipfile streams with data descriptors
        def writable(self):
            return True

        def write(self, b):
            return buf.write(b)

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(Unseekable(), "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
    dst = tmp_path / src.name
    dst.write_bytes(buf.getvalue())
    with zipfile.ZipFile(dst) as zf:
        assert all(i.flag_bits & 0x8 for i in zf.infolist())
    zips = kinds(check_wheel(dst), Kind.ZIP)
    assert any("data descriptors" in f.reason for f in zips)


def test_trailing_and_prepended_data(tmp_path, wheels):
    src = _clean(wheels)
    trailing = tmp_path / "t" / src.name
    trailing.parent.mkdir()
    trailing.write_bytes(src.read_bytes() + b"junk")
    prepended = tmp_path / "p" / src.name
    prepended.parent.mkdir()
    prepended.write_bytes(b"#!/bin/sh\n" + src.read_bytes())
    for path in (trailing, prepended):
        with zipfile.ZipFile(path) as zf:        # zipfile (pip) reads both without a word
            assert zf.testzip() is None
    assert [f.reason for f in kinds(check_wheel(trailing), Kind.ZIP)] == [
        "4 bytes of trailing data after the end of central directory record"]
    assert any("10 bytes of data before the first member" in f.reason
               for f in kinds(check_wheel(prepended), Kind.ZIP))
    assert check_wheel(src).ok


def test_end_record_found_where_zipfile_finds_it(tmp_path, wheels):
    """The longest comment zipfile allows, then one trailing byte: the end record lies
    as far from the end as zipfile searches (64 KiB + 22 bytes).  zipfile reads the
    archive; check reports the trailing byte, as the reader does (its own search was
    one byte short and reported no end record at all)."""
    src = _clean(wheels)
    commented = tmp_path / "c" / src.name
    commented.parent.mkdir()
    shutil.copy(src, commented)
    with zipfile.ZipFile(commented, "a") as zf:
        zf.comment = b"c" * 0xFFFF
    commented.write_bytes(commented.read_bytes() + b"!")
    with zipfile.ZipFile(commented) as zf:
        assert zf.testzip() is None and zf.comment == b"c" * 0xFFFF
        names = zf.namelist()
    trailing = "1 bytes of trailing data after the end of central directory record"
    report = check_wheel(commented)
    assert [f.reason for f in kinds(report, Kind.ZIP)] == [trailing]
    assert [f.reason for f in kinds(report, Kind.UNREADABLE)] == [
        trailing + " (an appended archive?)"]
    commented.write_bytes(commented.read_bytes()[:-1])     # without the byte: clean
    report = check_wheel(commented)
    assert report.ok, report.findings
    with WheelReader(commented) as reader:
        assert [m.name for m in reader.members] == names


def test_local_header_that_disagrees_with_the_central_directory(tmp_path, wheels):
    src = _clean(wheels)
    data = bytearray(src.read_bytes())
    at = data.index(b"PK\x03\x04")
    nlen, = struct.unpack_from("<H", data, at + 26)
    assert bytes(data[at + 30:at + 30 + nlen]) == b"pkg/__init__.py"
    data[at + 30] = ord("q")                    # local name "qkg/__init__.py"
    bad = tmp_path / src.name
    bad.write_bytes(bytes(data))
    with zipfile.ZipFile(bad) as zf, pytest.raises(zipfile.BadZipFile, match="differ"):
        zf.read("pkg/__init__.py")
    report = check_wheel(bad)
    assert any("local headers disagree" in f.reason and "pkg/__init__.py" in f.reason
               for f in kinds(report, Kind.ZIP))
    assert not report.ok


def test_compression_method_other_than_stored_or_deflate(tmp_path, wheels):
    src = _clean(wheels)
    dst = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_BZIP2
            zout.writestr(info, data)
    with zipfile.ZipFile(dst) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_BZIP2}
    report = check_wheel(dst)
    assert any("other than stored or deflate" in f.reason for f in kinds(report, Kind.ZIP))
    assert not report.ok


# ------------------------------------------------------------------ WHEEL, names, RECORD

def test_wheel_tags_must_equal_the_file_name_tags(wheels):
    whl = wheels({"pkg/__init__.py": b""}, tags="manylinux_2_17_x86_64",
                 filename="fxt-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", name="fxt")
    found = kinds(check_wheel(whl), Kind.WHEEL_TAGS)
    assert len(found) == 1 and "manylinux_2_17_x86_64" in found[0].reason \
        and "manylinux_2_28_x86_64" in found[0].reason


def test_dist_info_and_metadata_must_match_the_file_name(wheels):
    whl = wheels({"pkg/__init__.py": b""}, tags="any", python_tag="py3", abi_tag="none",
                 name="other", filename="fxd-1.0-py3-none-any.whl")
    report = check_wheel(whl)
    assert [f.file for f in kinds(report, Kind.DIST_INFO)] == ["other-1.0.dist-info"]
    assert [f.file for f in kinds(report, Kind.METADATA)] == ["other-1.0.dist-info/METADATA"]


def test_wheel_name_escaping_and_validity(wheels, tmp_path):
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    src = wheels({"pkg/__init__.py": b""}, tags="any", python_tag="py3", abi_tag="none",
                 name="fx_dot")
    dotted = tmp_path / "fx.dot-1.0-py3-none-any.whl"
    shutil.copy(src, dotted)
    parse_wheel_filename(dotted.name)           # valid for pip ...
    found = kinds(check_wheel(dotted), Kind.WHEEL_NAME)
    assert len(found) == 1 and "'fx_dot'" in found[0].reason   # ... but not escaped
    invalid = tmp_path / "fx_dot-1.0-py3-none.whl"
    shutil.copy(src, invalid)
    with pytest.raises(InvalidWheelFilename):
        parse_wheel_filename(invalid.name)
    assert kinds(check_wheel(invalid), Kind.WHEEL_NAME)


def test_record_mismatch_and_unlisted_member(tmp_path, wheels):
    src = _clean(wheels)
    dst = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, b"x = 2\n" if info.filename == "pkg/__init__.py" else data)
        zout.writestr("pkg/extra.py", b"")
    report = check_wheel(dst)
    files = sorted(f.reason.split(":")[0] for f in kinds(report, Kind.RECORD))
    assert files == ["pkg/__init__.py", "pkg/extra.py"]


# ------------------------------------------------------------------ soname, rpath, libc

@needs_gcc
def test_soname_that_does_not_match_its_file_is_not_found_by_the_loader(tmp_path, wheels):
    lib = compile_c(tmp_path, "libfoo.so", "int foo(void) { return 7; }\n",
                    args=["-Wl,-soname,libfoo.so.1"])
    ext = compile_c(tmp_path, f"ext{X86_EXT}", "extern int foo(void);\n"
                    "void *PyInit_ext(void) { return (void *)(long)foo(); }\n",
                    args=["-Wl,-rpath,$ORIGIN"], libs=[str(lib)])
    assert "libfoo.so.1" in readelf("-d", str(ext))
    site = tmp_path / "site"            # installed as in the wheel: the loader's answer
    site.mkdir()
    shutil.copy(lib, site / "libfoo.so")
    shutil.copy(ext, site / ext.name)
    probe = subprocess.run([sys.executable, "-c", "import ctypes,sys; ctypes.CDLL(sys.argv[1])",
                            str(site / ext.name)], check=False, capture_output=True,
                           text=True)
    assert probe.returncode != 0 and "libfoo.so.1" in probe.stderr
    report = check_wheel(wheels({"libfoo.so": lib, ext.name: ext}))
    assert [f.file for f in kinds(report, Kind.SONAME)] == ["libfoo.so"]


@needs_gcc
def test_rpath_that_leaves_the_wheel(tmp_path, wheels):
    inside = compile_c(tmp_path, f"in/ok{X86_EXT}", ext_source("ok"),
                       args=["-Wl,-rpath,$ORIGIN/../ok.libs"])
    outside = compile_c(tmp_path, f"out/bad{X86_EXT}", ext_source("bad"),
                        args=["-Wl,-rpath,/usr/local/lib:$ORIGIN/../../elsewhere"])
    assert "/usr/local/lib" in readelf("-d", str(outside))
    report = check_wheel(wheels({f"pkg/ok{X86_EXT}": inside, f"pkg/bad{X86_EXT}": outside}))
    found = kinds(report, Kind.RPATH)
    assert [f.file for f in found] == [f"pkg/bad{X86_EXT}"]
    assert "/usr/local/lib" in found[0].reason and "$ORIGIN/../../elsewhere" in found[0].reason


@pytest.mark.skipif(not have_compiler("musl"), reason="musl-gcc not installed")
def test_musl_extension_named_for_glibc(tmp_path, wheels):
    ext = compile_c(tmp_path, f"m{X86_EXT}", ext_source("m"), cc="musl")
    assert "ld-musl" in readelf("-l", str(ext)) or "libc.so]" in readelf("-d", str(ext))
    report = check_wheel(wheels({f"m{X86_EXT}": ext}, tags="musllinux_1_2_x86_64"))
    found = kinds(report, Kind.EXTENSION_LIBC)
    assert [f.file for f in found] == [f"m{X86_EXT}"] and "musl" in found[0].reason
    good = "m.cpython-311-x86_64-linux-musl.so"
    assert not kinds(check_wheel(wheels({good: ext}, tags="musllinux_1_2_x86_64")),
                     Kind.EXTENSION_LIBC)


# ------------------------------------------------------------------ real wheels, audit, CLI

@pytest.mark.parametrize("w", [w for w in WHEELS if w.project in
                               ("msgpack", "cffi", "pyzmq", "psutil", "MarkupSafe")],
                         ids=lambda w: w.id)
def test_real_wheels_pass(w):
    path, why = fetch(w)
    if path is None:
        pytest.skip(why)
    report = check_wheel(path)
    assert report.ok, report.findings


@needs_gcc
def test_audit_json_carries_the_findings(tmp_path, wheels):
    lib = compile_c(tmp_path, f"s{X86_EXT}", ext_source("s"), args=["-Wl,-z,execstack"])
    whl = wheels({f"s{X86_EXT}": lib})
    d = audit_wheel(whl).to_dict()
    assert [(c["kind"], c["file"]) for c in d["checks"]] == [("exec-stack", f"s{X86_EXT}")]
    assert d["status"] == "ok"          # checks do not change the audit verdict


@needs_gcc
def test_cli_one_line_per_problem_and_exit_codes(tmp_path, wheels, capsys):
    lib = compile_c(tmp_path, f"s{X86_EXT}", ext_source("s"), args=["-Wl,-z,execstack"])
    bad = wheels({f"s{X86_EXT}": lib, "libevil\x1b[2J.so": lib})   # a name with an escape
    good = _clean(wheels)
    assert cli.main(["check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    assert cli.main(["check", str(bad), str(good)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(f": exec-stack: s{X86_EXT}: " in line for line in lines)
    assert any(": exec-stack: libevil\\x1b[2J.so: " in line for line in lines)
    assert all("\x1b" not in line for line in lines) and len(lines) == 3
    assert cli.main(["check", "--json", str(bad)]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is False and {p["kind"] for p in d["problems"]} == {"exec-stack"}
    assert cli.main(["check", str(tmp_path / "missing.whl")]) == 2


def test_cli_unreadable_wheel(tmp_path, capsys):
    junk = tmp_path / "junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip at all, not even close" * 4)
    assert cli.main(["check", str(junk)]) == 3
    out = capsys.readouterr().out
    assert ": unreadable: " in out and ": zip: " in out


@needs_gcc
def test_excluded_library_absent_at_run_time_is_a_platform_tag_problem(tmp_path, wheels):
    """A library left out by ``repair --exclude`` is neither in the wheel nor in the
    policy's system libraries: the claimed tag fails, naming it, and the real loader
    cannot load the extension without it."""
    lib = compile_c(tmp_path, "libgone.so.1", "int gone(void) { return 3; }\n",
                    args=["-Wl,-soname,libgone.so.1"])
    ext = compile_c(tmp_path, f"ex/uses{X86_EXT}", "extern int gone(void);\n"
                    "void *PyInit_uses(void) { return (void *)(long)gone(); }\n",
                    libs=[str(lib)])
    probe = subprocess.run([sys.executable, "-c", "import ctypes,sys; ctypes.CDLL(sys.argv[1])",
                            str(ext)], check=False, capture_output=True, text=True)
    assert probe.returncode != 0 and "libgone.so.1" in probe.stderr
    found = kinds(check_wheel(wheels({f"uses{X86_EXT}": ext})), Kind.PLATFORM_TAG)
    assert len(found) == 1 and "libgone.so.1" in found[0].reason


@needs_gcc
def test_audit_of_a_file_object_skips_only_the_zip_layout(tmp_path, wheels):
    lib = compile_c(tmp_path, f"s{X86_EXT}", ext_source("s"), args=["-Wl,-z,execstack"])
    whl = wheels({f"s{X86_EXT}": lib})
    with open(whl, "rb") as fh:
        d = audit_wheel(fh, filename=whl.name).to_dict()
    assert [c["kind"] for c in d["checks"]] == ["exec-stack"]
    padded = whl.read_bytes() + b"x"
    with pytest.raises(WheelError, match="trailing data"):    # the reader refuses it outright
        audit_wheel(padded, filename=whl.name)
    report = check_wheel(padded, filename=whl.name)          # check says why, then unreadable
    assert [f.kind for f in report.findings][-2:] == [Kind.ZIP, Kind.UNREADABLE]


@needs_gcc
def test_program_with_an_executable_stack_agrees_with_the_kernel(tmp_path, wheels):
    """A program (PT_INTERP) is not dlopened: the kernel gives it the stack it asks for,
    which the program itself reads back from /proc/self/maps."""
    src = """
#include <stdio.h>
#include <string.h>
int main(void) {
    char line[512], perms[8];
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[stack]") && sscanf(line, "%*s %7s", perms) == 1)
            return perms[2] == 'x' ? 10 : 11;
    return 12;
}
"""
    flags = {"exec": "-Wl,-z,execstack", "noexec": "-Wl,-z,noexecstack"}
    for variant, flag in flags.items():
        exe = compile_c(tmp_path, f"{variant}/tool", src, shared=False, args=[flag])
        code = subprocess.run([str(exe)], check=False).returncode
        assert code in (10, 11)
        found = kinds(check_wheel(wheels({"pkg/tool": exe})), Kind.EXEC_STACK)
        assert bool(found) == (code == 10) == (variant == "exec")
        if found:
            assert "kernel" in found[0].reason


def test_a_fifo_is_refused_without_hanging(tmp_path):
    """The reader refuses a FIFO; the zip-layout check that follows must not block on it."""
    import subprocess
    import sys
    fifo = tmp_path / "demo-1.0-py3-none-any.whl"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "fastelf", "check", str(fifo)],
                          capture_output=True, text=True, timeout=120)   # a hang guard only
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    report = check_wheel(fifo)                   # the API: unreadable, with the reason
    assert report.findings[-1].kind is Kind.UNREADABLE
    assert "not a regular file" in report.findings[-1].reason
