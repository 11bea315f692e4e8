"""What repair writes, and that a failed repair writes nothing and says why.

Oracles: the file system (listings, bytes and mtimes before and after, the
rename that publishes the output); zipfile for the members, their dates and
compression; RECORD recomputed with zipfile and hashlib; the error's search
path against /etc/ld.so.conf.d as read here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from realwheels import readelf_version_needs
from repair_support import (
    BEST,
    EXT,
    NEEDS_GCC_AND_READELF,
    PY,
    check_record,
    listing,
    members,
    run_cli,
)
from wheelbuild import build_wheel

from fastelf.repair import RepairError, repair_wheel

pytestmark = NEEDS_GCC_AND_READELF


# ------------------------------------------------------------------ safety

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


# ------------------------------------------------------------------ reproducible output

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
