"""What repair grafts and how it patches the wheel, read back with outside tools.

Oracles: the grafted names are computed here with hashlib from the ORIGINAL
library files (auditwheel's ``<base>-<sha256[:8]>.<rest>``); the dynamic
sections (SONAME, NEEDED, RPATH/RUNPATH) and dynamic symbols are read back with
binutils' readelf; the CLI's JSON is compared with the Python API's result.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from realwheels import readelf_dynamic
from repair_support import (
    BEST,
    EXT,
    NEEDS_GCC_AND_READELF,
    RPATH_OUT,
    check_record,
    expected_name,
    extract,
    members,
    plat_of,
    run_cli,
)

from fastelf.repair import repair_wheel

pytestmark = NEEDS_GCC_AND_READELF


# ------------------------------------------------------------------ grafting

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


def test_cli_with_ldpaths_gives_the_same_members(fx, repaired, tmp_path):
    res, _x = repaired
    proc = run_cli("repair", fx.wheel, "-w", tmp_path, "--ldpaths", fx.private, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["output"]).name == Path(res.output).name
    assert out["grafted"] == {so: {"from": p, "to": m} for so, (p, m) in res.grafted.items()}
    assert members(out["output"]) == members(res.output)


def test_rpath_entries_outside_the_wheel_are_dropped(fx, rpath_wheel, tmp_path):
    res = repair_wheel(rpath_wheel, tmp_path / "out", ld_library_path=str(fx.private))
    x = extract(res.output, tmp_path / "x")
    d = readelf_dynamic(x / "pkg" / f"_ext{EXT}")
    assert (d["RPATH"], d["RUNPATH"]) == (RPATH_OUT, None)


# ------------------------------------------------------------------ --exclude

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


def test_exclude_by_path_glob(fx, tmp_path):
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private),
                       exclude=[f"{fx.private}/libbar*"])
    assert set(res.grafted) == {"libbaz.so.2"}
    x = extract(res.output, tmp_path / "x")
    baz = readelf_dynamic(x / res.grafted["libbaz.so.2"][1])
    assert "libbar.so.1" in baz["NEEDED"]
    assert "libbar.so.1" in readelf_dynamic(x / "pkg/sub" / f"_ext2{EXT}")["NEEDED"]
    assert res.tags == BEST
