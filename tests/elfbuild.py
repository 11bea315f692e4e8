"""Build small ELF fixtures from C sources, for the tests.

Every builder takes the directory to build in and returns the path(s) of
what it built, or ``None`` when the compiler it needs is not installed (use
``need()`` in a test to turn that into ``pytest.skip``).  A compiler that is
present but fails raises ``BuildError`` with its output: that is a real
problem, not a reason to skip.  Builders are idempotent: a fixture already
in the directory is returned as it is, so several test modules can share one
directory.

Compilers (Debian packages): gcc, musl-tools (musl-gcc), gcc-aarch64-linux-gnu,
gcc-arm-linux-gnueabihf, gcc-arm-linux-gnueabi, gcc-s390x-linux-gnu,
gcc-i686-linux-gnu; binutils for strip.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BuildError", "COMPILERS", "CROSS_TARGETS", "TOOLCHAINS", "compiler", "have_compiler",
    "need", "toolchain_problem", "usable_cc",
    "compile_c", "strip_section_headers",
    "build_ext_with_external_lib", "build_too_new_glibc", "build_blacklisted_zlib",
    "build_isa_level", "build_musl", "build_executable", "build_rpath_runpath",
    "build_stripped", "build_versioned_pair", "build_cross", "build_arm_softfloat",
    "build_hash_styles", "build_exec_stack",
]

# name -> (executable, arch that fastelf should report, ELF class, little endian)
COMPILERS = {
    "gcc": ("gcc", "x86_64", 64, True),
    "musl": ("musl-gcc", "x86_64", 64, True),
    "aarch64": ("aarch64-linux-gnu-gcc", "aarch64", 64, True),
    "armhf": ("arm-linux-gnueabihf-gcc", "armv7l", 32, True),
    "armel": ("arm-linux-gnueabi-gcc", None, 32, True),   # soft-float: not a wheel arch
    "s390x": ("s390x-linux-gnu-gcc", "s390x", 64, False),
    "i686": ("i686-linux-gnu-gcc", "i686", 32, True),
}

# Cross targets built by build_cross (a shared library and an executable each).
CROSS_TARGETS = ("aarch64", "armhf", "s390x", "i686")


class BuildError(RuntimeError):
    """A compiler that is installed failed to build a fixture."""


class Ext(NamedTuple):
    ext: Path          # foo.cpython-311-x86_64-linux-gnu.so, NEEDED libbar.so.1
    lib: Path          # libbar.so.1 (SONAME libbar.so.1), built next to it
    importable: bool   # True when built against Python.h (a real extension module)


class Musl(NamedTuple):
    lib: Path          # shared object, NEEDED libc.so (Debian's musl-gcc)
    exe: Path          # executable, PT_INTERP /lib/ld-musl-x86_64.so.1


class Paths(NamedTuple):
    rpath: Path        # DT_RPATH  (-Wl,--disable-new-dtags)
    runpath: Path      # DT_RUNPATH (-Wl,--enable-new-dtags)


class Stripped(NamedTuple):
    original: Path
    stripped: Path     # strip --strip-all
    no_sections: Path  # stripped, then e_shoff/e_shnum/e_shstrndx zeroed and the table cut off


class Versioned(NamedTuple):
    provider: Path     # libver.so.1 with version nodes VER_1 and VER_2 (and an old VER_1 foo)
    consumer: Path     # links to libver.so.1: versioned imports from a non-glibc library


class Cross(NamedTuple):
    lib: Path
    exe: Path


# Every C compiler a test builds fixtures with (executable -> Debian packages that make it
# work: the compiler and, for cross compilers, the C library it links against).  .ci/run
# installs all of them; tests/test_toolchains.py fails in CI when one does not work.
TOOLCHAINS = {
    "gcc": "gcc libc6-dev",
    "musl-gcc": "musl-tools",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
    "arm-linux-gnueabi-gcc": "gcc-arm-linux-gnueabi libc6-dev-armel-cross",
    "s390x-linux-gnu-gcc": "gcc-s390x-linux-gnu libc6-dev-s390x-cross",
    "i686-linux-gnu-gcc": "gcc-i686-linux-gnu libc6-dev-i386-cross",
    "powerpc-linux-gnu-gcc": "gcc-powerpc-linux-gnu libc6-dev-powerpc-cross",
}

_PROBE_C = "int probe(void) { return 1; }\nint main(void) { return probe() - 1; }\n"


@functools.lru_cache(maxsize=None)
def toolchain_problem(exe: str) -> str | None:
    """Why C compiler ``exe`` cannot build fixtures, or None when it can.

    Installed is not enough: a cross gcc without its C library (libc6-dev-*-cross)
    compiles but cannot link ("cannot find crti.o").  So link a trivial shared
    library and a trivial program once per session; a toolchain that fails is
    skipped by the tests of its architecture only, with this reason.
    """
    path = shutil.which(exe)
    if path is None:
        return f"{exe} not installed (Debian: {TOOLCHAINS.get(exe, '?')})"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_PROBE_C)
        for out, extra in (("libprobe.so", ["-shared", "-fPIC"]), ("probe", [])):
            proc = subprocess.run([path, *extra, "-o", os.path.join(tmp, out), src],
                                  capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines() or ["(no output)"]
                last = next((ln for ln in lines if "cannot find" in ln), lines[-1])
                what = "shared library" if extra else "program"
                return (f"{exe} is installed but cannot link a {what}"
                        f" ({last}); Debian: {TOOLCHAINS.get(exe, '?')}")
    return None


def usable_cc(exe: str) -> bool:
    """``exe`` (a compiler executable name) is installed and links."""
    return toolchain_problem(exe) is None


def compiler(name: str) -> str | None:
    """The path of compiler ``name`` (a COMPILERS key), or None if missing or broken."""
    exe = COMPILERS[name][0]
    return shutil.which(exe) if usable_cc(exe) else None


def have_compiler(name: str) -> bool:
    return compiler(name) is not None


def need(value, what="fixture", cc: str | None = None):
    """Return ``value``; skip the calling test when it is None (toolchain missing or broken).

    ``cc``: the COMPILERS key the fixture is built with, to name the reason.
    """
    if value is None:
        import pytest
        why = toolchain_problem(COMPILERS[cc][0]) if cc else None
        pytest.skip(f"{what}: {why or 'compiler not installed'}")
    return value


def _run(cmd, cwd):
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def compile_c(tmpdir, out: str, source: str, cc: str = "gcc", *, shared: bool = True,
              args=(), libs=()) -> Path | None:
    """Compile ``source`` (C text) to ``tmpdir/out`` with compiler ``cc`` (a COMPILERS key).

    ``args`` go before the source, ``libs`` after it (linker inputs).  Returns
    None when the compiler is not installed.
    """
    exe = compiler(cc)
    if exe is None:
        return None
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    target = d / out
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    srcdir = d / "_src"          # sources apart, so the directory holds only ELF files
    srcdir.mkdir(exist_ok=True)
    src = srcdir / (out.replace("/", "_") + ".c")
    src.write_text(source)
    tmp = d / (out + ".tmp")     # renamed when complete: no half-written fixtures
    cmd = [exe, "-O1", "-o", str(tmp)]
    if shared:
        cmd += ["-shared", "-fPIC"]
    cmd += list(args) + [str(src)] + list(libs)
    _run(cmd, d)
    tmp.rename(target)
    return target


def strip_section_headers(src, dst) -> Path:
    """Copy ``src`` to ``dst`` with no section header table.

    Zeroes e_shoff, e_shnum and e_shstrndx (and e_shentsize) and, when the
    table is the last thing in the file (as ld and strip leave it), cuts it
    off, so only program headers and the dynamic segment remain.
    """
    data = bytearray(Path(src).read_bytes())
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{src}: not an ELF file")
    is64 = data[4] == 2
    e = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 40)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 58)
        struct.pack_into(e + "Q", data, 40, 0)
        struct.pack_into(e + "HHH", data, 58, 0, 0, 0)
    else:
        shoff, = struct.unpack_from(e + "I", data, 32)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 46)
        struct.pack_into(e + "I", data, 32, 0)
        struct.pack_into(e + "HHH", data, 46, 0, 0, 0)
    if shoff and shoff + shentsize * shnum == len(data):
        del data[shoff:]
    out = Path(dst)
    out.write_bytes(bytes(data))
    return out


# ------------------------------------------------------------------ recipes

_BAR_C = """
int bar_value(void) { return 42; }
int bar_unused_export(int x) { return x + 1; }
"""

def python_ext_source(module, call, extra=""):
    """C source of a real CPython extension ``module`` whose value() returns ``call``."""
    return f"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
{extra}
static PyObject *value(PyObject *self, PyObject *args) {{ return PyLong_FromLong({call}); }}
static PyMethodDef methods[] = {{{{"value", value, METH_NOARGS, ""}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef mod = {{PyModuleDef_HEAD_INIT, "{module}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&mod); }}
"""


_EXT_PY_C = python_ext_source("foo", "bar_value()", "extern int bar_value(void);") + \
    "int my_PyInit_lookalike(void) { return 1; }\n"

_EXT_FAKE_C = """
extern int bar_value(void);
void *PyInit_foo(void) { return (void *)(long)bar_value(); }
int my_PyInit_lookalike(void) { return 1; }
"""


def build_ext_with_external_lib(tmpdir) -> Ext | None:
    """(a) ``foo.cpython-311-x86_64-linux-gnu.so`` defining PyInit_foo, NEEDED libbar.so.1.

    libbar.so.1 (SONAME libbar.so.1) is built next to it; the extension has no
    RPATH/RUNPATH, so libbar is an external library that a repair must graft.
    When Python.h is available the extension is a real module: ``import foo``
    works once libbar can be found, and ``foo.value()`` returns 42.
    """
    if not have_compiler("gcc"):
        return None
    d = Path(tmpdir)
    lib = compile_c(d, "libbar.so.1", _BAR_C, args=["-Wl,-soname,libbar.so.1"])
    inc = sysconfig.get_paths().get("include")
    importable = bool(inc) and (Path(inc) / "Python.h").exists()
    source, args = (_EXT_PY_C, ["-I", inc]) if importable else (_EXT_FAKE_C, [])
    ext = compile_c(d, "foo.cpython-311-x86_64-linux-gnu.so", source, args=args,
                    libs=["-Wl,--no-as-needed", str(lib)])
    return Ext(ext, lib, importable)


def build_too_new_glibc(tmpdir) -> Path | None:
    """(b) A shared object importing arc4random (GLIBC_2.36 on Debian 12)."""
    return compile_c(tmpdir, "libnewglibc.so", """
#include <stdlib.h>
unsigned int random_word(void) { return arc4random(); }
""")


def build_blacklisted_zlib(tmpdir) -> Path | None:
    """(c) A shared object NEEDED libz.so.1 with ``z_errmsg`` undefined (not linked in)."""
    return compile_c(tmpdir, "libzerr.so", """
extern const char * const z_errmsg[];
const char *zlib_message(int i) { return z_errmsg[i]; }
""", libs=["-Wl,--no-as-needed", "-lz"])


def build_isa_level(tmpdir) -> Path | None:
    """(d) A shared object with GNU_PROPERTY_X86_ISA_1_NEEDED for x86-64-v3.

    Built with ``-march=x86-64-v3 -mneeded``; returns None when this gcc
    does not know those options.
    """
    if not have_compiler("gcc"):
        return None
    try:
        return compile_c(tmpdir, "libisav3.so", """
double dot(const double *a, const double *b, int n) {
    double s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s;
}
""", args=["-O3", "-march=x86-64-v3", "-mneeded"])
    except BuildError:
        return None


def build_musl(tmpdir) -> Musl | None:
    """(e) musl-gcc shared object (NEEDED libc.so on Debian) and executable."""
    if not have_compiler("musl"):
        return None
    lib = compile_c(tmpdir, "libmuslthing.so", """
#include <string.h>
#include <stdio.h>
int musl_len(const char *s) { char b[32]; snprintf(b, sizeof b, "%s", s); return (int)strlen(b); }
""", cc="musl")
    exe = compile_c(tmpdir, "musl-hello", """
#include <stdio.h>
int main(void) { puts("hello from musl"); return 0; }
""", cc="musl", shared=False)
    return Musl(lib, exe)


def build_executable(tmpdir) -> Path | None:
    """(f) A host executable (PIE, PT_INTERP /lib64/ld-linux-x86-64.so.2) using libm."""
    return compile_c(tmpdir, "hello-exe", """
#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) { printf("%f\\n", cos((double)argc)); return 0; }
""", shared=False, libs=["-Wl,--no-as-needed", "-lm"])


def build_rpath_runpath(tmpdir) -> Paths | None:
    """(g) Two shared objects: one with DT_RPATH, one with DT_RUNPATH ($ORIGIN-relative)."""
    if not have_compiler("gcc"):
        return None
    src = "int with_path(void) { return 7; }\n"
    rpath = compile_c(tmpdir, "librpath.so", src, args=[
        "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../rlib:/opt/rpath-dir",
        "-Wl,-soname,librpath.so"])
    runpath = compile_c(tmpdir, "librunpath.so", src, args=[
        "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/runlib",
        "-Wl,-soname,librunpath.so"])
    return Paths(rpath, runpath)


def build_stripped(tmpdir) -> Stripped | None:
    """(h) A shared object, its ``strip --strip-all`` copy, and a copy with no section headers."""
    if not have_compiler("gcc") or shutil.which("strip") is None:
        return None
    d = Path(tmpdir)
    original = compile_c(d, "libtostrip.so", """
#include <stdio.h>
#include <string.h>
extern __thread int tls_counter;
__attribute__((weak)) extern int maybe_there(void);
int strip_me(const char *s) {
    if (maybe_there) maybe_there();
    tls_counter++;
    return printf("%zu\\n", strlen(s));
}
__thread int tls_counter;
""", args=["-Wl,-soname,libtostrip.so"])
    stripped = d / "libtostrip-stripped.so"
    if not stripped.exists():
        tmp = d / "libtostrip-stripped.so.tmp"
        _run(["strip", "--strip-all", "-o", str(tmp), str(original)], d)
        tmp.rename(stripped)
    no_sections = d / "libtostrip-nosections.so"
    if not no_sections.exists():
        strip_section_headers(stripped, no_sections)
    return Stripped(original, stripped, no_sections)


def build_versioned_pair(tmpdir) -> Versioned | None:
    """A library with its own symbol versions (verdef) and a consumer of them (verneed).

    libver.so.1 defines ``foo@VER_1`` (old, hidden), ``foo@@VER_2``,
    ``bar@@VER_1``; libverconsumer.so imports ``foo@VER_2`` and ``bar@VER_1``.
    """
    if not have_compiler("gcc"):
        return None
    d = Path(tmpdir)
    mapfile = d / "_src" / "libver.map"
    if not mapfile.exists():
        mapfile.parent.mkdir(parents=True, exist_ok=True)
        mapfile.write_text("VER_1 { global: foo; bar; local: *; };\n"
                           "VER_2 { global: foo; } VER_1;\n")
    provider = compile_c(d, "libver.so.1", """
int foo_old(void) { return 1; }
int foo_new(void) { return 2; }
int bar(void) { return 3; }
__asm__(".symver foo_old, foo@VER_1");
__asm__(".symver foo_new, foo@@VER_2");
""", args=["-Wl,-soname,libver.so.1", f"-Wl,--version-script={mapfile}"])
    consumer = compile_c(d, "libverconsumer.so", """
extern int foo(void);
extern int bar(void);
int use_both(void) { return foo() + bar(); }
""", libs=["-Wl,--no-as-needed", str(provider)])
    return Versioned(provider, consumer)


_CROSS_LIB_C = """
#include <math.h>
#include <stdio.h>
#include <string.h>
double cross_cos(double x) { return cos(x) + (double)strlen("x"); }
int cross_print(const char *s) { return printf("%s\\n", s); }
"""

_CROSS_EXE_C = """
#include <stdio.h>
int main(void) { puts("hello"); return 0; }
"""


def build_cross(tmpdir, target: str) -> Cross | None:
    """A shared object (NEEDED libm, libc) and an executable for ``target`` (CROSS_TARGETS)."""
    if not have_compiler(target):
        return None
    lib = compile_c(tmpdir, f"libcross-{target}.so", _CROSS_LIB_C, cc=target,
                    libs=["-Wl,--no-as-needed", "-lm"])
    exe = compile_c(tmpdir, f"cross-{target}-exe", _CROSS_EXE_C, cc=target, shared=False)
    return Cross(lib, exe)


def build_arm_softfloat(tmpdir) -> Path | None:
    """A soft-float ARM EABI5 shared object (arm-linux-gnueabi-gcc)."""
    return compile_c(tmpdir, "libsoftfloat.so", "float half(float x) { return x / 2; }\n",
                     cc="armel")


def build_hash_styles(tmpdir) -> dict | None:
    """The same library linked with --hash-style=sysv, gnu and both: {style: path}."""
    if not have_compiler("gcc"):
        return None
    src = """
#include <stdlib.h>
#include <string.h>
char *dup_a(const char *s) { return strdup(s); }
void *alloc_b(size_t n) { return calloc(n, 1); }
int cmp_c(const char *a, const char *b) { return strcmp(a, b); }
"""
    return {style: compile_c(tmpdir, f"libhash-{style}.so", src,
                             args=[f"-Wl,--hash-style={style}"])
            for style in ("sysv", "gnu", "both")}


def build_exec_stack(tmpdir) -> Path | None:
    """A shared object whose PT_GNU_STACK asks for an executable stack (-z execstack)."""
    return compile_c(tmpdir, "libexecstack.so", "int stacky(void) { return 1; }\n",
                     args=["-Wl,-z,execstack"])
