"""The tags and file name a repair (and a retag) gives, checked against outside oracles.

Oracles: the expected platform tag comes from readelf's GLIBC version needs and
auditwheel's own policy list; the WHEEL ``Tag:`` lines and RECORD are read back
with zipfile (RECORD recomputed with hashlib).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repair_support import (
    BEST,
    EXT,
    NEEDS_GCC_AND_READELF,
    PY,
    check_record,
    expected_tags,
    listing,
    members,
    plat_of,
    run_cli,
    wheel_tag_lines,
)
from wheelbuild import build_wheel

from fastelf.repair import RepairError, repair_wheel

pytestmark = NEEDS_GCC_AND_READELF


# ------------------------------------------------------------------ tags

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


def test_no_update_tags(fx, tmp_path):
    proc = run_cli("repair", fx.wheel, "-w", tmp_path, "--ldpaths", fx.private,
                   "--no-update-tags", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["output"]).name == fx.wheel.name
    assert wheel_tag_lines(out["output"]) == wheel_tag_lines(fx.wheel)
    assert set(out["grafted"]) == {"libbaz.so.2", "libbar.so.1"}
    check_record(out["output"])


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


# ------------------------------------------------------------------ retag

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
