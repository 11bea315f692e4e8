"""fastelf repair against ``auditwheel repair`` (6.8.2) on the same inputs.

Oracle: auditwheel itself, run here with a patchelf it accepts: the same
grafted libraries (matched by the hash of the originals), the same file name
and WHEEL tags, the same dynamic sections member by member (readelf), the same
script shim and other files.  Where fastelf differs on purpose
(docs/auditwheel-differences.md), the test shows both behaviours.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elfbuild import compile_c, python_ext_source
from realwheels import readelf_dynamic
from repair_support import (
    EXT,
    NEEDS_GCC_AND_READELF,
    PY,
    PY_INCLUDE,
    auditwheel_repair,
    check_record,
    clean_env,
    elf_view,
    expected_tags,
    extract,
    grafted_by_original_soname,
    hidden,
    listing,
    members,
    plat_of,
    run_cli,
    wheel_tag_lines,
)
from wheelbuild import build_wheel

from fastelf.repair import RepairError, repair_wheel

pytestmark = NEEDS_GCC_AND_READELF


# ------------------------------------------------------------------ same result

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


# ------------------------------------------------------------------ differences

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
