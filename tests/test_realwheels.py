"""fastelf on real wheels from PyPI, checked against auditwheel and readelf.

The wheels are listed (pinned by version and sha256) in realwheels.py and
cached in $FASTELF_WHEEL_CACHE (default ~/.cache/fastelf-test-wheels); the
tests skip when a wheel is not cached and cannot be downloaded.

Where auditwheel's answer is wrong, the test asserts the documented
difference (docs/auditwheel-differences.md) and checks fastelf's answer
against the ELF files themselves.
"""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from realwheels import (
    WHEELS,
    auditwheel_show,
    fetch,
    glibc_tag_for,
    have_auditwheel,
    readelf_dynamic,
    readelf_undefined,
    readelf_version_needs,
)
from wheelbuild import build_wheel

from fastelf import cli
from fastelf.audit import audit_wheel

# functions musl added in 1.2.x (musl WHATSNEW: reallocarray 1.2.2, qsort_r 1.2.3,
# statx, preadv2, pwritev2 1.2.5).  On 64-bit arches 1.2's time64 change renamed nothing.
MUSL_1_2_ONLY = {"reallocarray", "qsort_r", "statx", "preadv2", "pwritev2"}

_AW_CACHE: dict = {}
_EXTRACT_CACHE: dict = {}


@pytest.fixture(params=WHEELS, ids=[w.id for w in WHEELS])
def real(request):
    path, why = fetch(request.param)
    if path is None:
        pytest.skip(why)
    return request.param, path


def aw_show(path):
    if not have_auditwheel():
        pytest.skip("auditwheel not installed")
    key = str(path)
    if key not in _AW_CACHE:
        _AW_CACHE[key] = auditwheel_show(path)
    return _AW_CACHE[key]


@pytest.fixture(scope="module")
def extract_root(tmp_path_factory):
    return tmp_path_factory.mktemp("realwheels")


def elf_members(path, root):
    """Extract the wheel once; return {member: extracted path} of its ELF members."""
    key = str(path)
    if key not in _EXTRACT_CACHE:
        dest = Path(root) / Path(path).name
        out = {}
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                zf.extract(info, dest)
                out[info.filename] = dest / info.filename
        _EXTRACT_CACHE[key] = out
    return _EXTRACT_CACHE[key]


def _loader(lib):
    return lib.startswith(("ld-linux", "ld64.so", "ld-musl-"))


# ------------------------------------------------------------------ against auditwheel

def test_matches_auditwheel(real, extract_root):
    w, path = real
    r = audit_wheel(path)
    aw = aw_show(path)
    assert r.error is None and not r.pure
    assert (r.arch, r.libc) == (w.arch, w.libc)
    assert {k: sorted(v) for k, v in r.versioned_symbols.items()} == \
        {k: sorted(v) for k, v in aw["versioned_symbols"].items()}
    assert set(r.external_libraries) == set(aw["external_libs"])
    assert aw["unsupported_isa"] is False and not any(p.isa for p in r.policies)
    if w.libc == "glibc":
        assert r.best_tag == aw["overall_tag"]
        return
    # musl: auditwheel takes the musl version from the host (the newest policy when it
    # finds no /lib/libc.musl-*.so.1); fastelf proves musllinux_1_1 from symbol names.
    assert r.best_tag == f"musllinux_1_1_{w.arch}"
    if not glob.glob("/lib/libc.musl-*.so.1"):
        assert aw["overall_tag"] == f"musllinux_1_2_{w.arch}"
    for member, elf in elf_members(path, extract_root).items():
        undefined = set(readelf_undefined(elf))
        assert not undefined & MUSL_1_2_ONLY, member
        needed = readelf_dynamic(elf)["NEEDED"]
        assert any(n.startswith("libc.musl-") for n in needed), needed   # Alpine-built


def test_claimed_tags_are_satisfied(real):
    """These wheels were built and checked upstream: their file names are right."""
    w, path = real
    r = audit_wheel(path)
    assert r.claimed_tags and r.ok, r.unsatisfied_claims
    assert set(r.claimed_tags) <= set(r.tags)
    assert r.best_tag in r.tags


def test_versioned_symbols_match_readelf(real, extract_root):
    w, path = real
    r = audit_wheel(path)
    elfs = elf_members(path, extract_root)
    assert sorted(e.path for e in r.elfs) == sorted(elfs)
    expected = {}
    for member, elf in elfs.items():
        for lib, vers in readelf_version_needs(elf).items():
            if not _loader(lib):
                expected.setdefault(lib, set()).update(vers)
        info = next(e for e in r.elfs if e.path == member)
        assert info.needed == readelf_dynamic(elf)["NEEDED"]
    assert {k: set(v) for k, v in r.versioned_symbols.items()} == expected
    if w.libc == "glibc":
        assert r.best_tag == glibc_tag_for(expected, w.arch)
    else:
        assert expected == {}          # musl has no symbol versions


# ------------------------------------------------------------------ a repaired wheel

def _pyzmq():
    w = next(x for x in WHEELS if x.project == "pyzmq")
    path, why = fetch(w)
    if path is None:
        pytest.skip(why)
    return w, path


def test_repaired_wheel_resolves_its_libs_dir(extract_root):
    w, path = _pyzmq()
    elfs = elf_members(path, extract_root)
    bundled = {m for m in elfs if m.startswith("pyzmq.libs/")}
    assert len(bundled) == 2
    r = audit_wheel(path)
    assert r.external_libraries == {} and r.best_tag == "manylinux_2_17_x86_64"
    # every NEEDED naming a bundled library is found through the wheel's own RPATHs:
    # the host's loader loads every extracted ELF with no LD_LIBRARY_PATH
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    code = "import ctypes, sys\nfor p in sys.argv[1:]: ctypes.CDLL(p)\n"
    proc = subprocess.run([sys.executable, "-c", code, *map(str, elfs.values())],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_repaired_wheel_missing_a_bundled_lib(extract_root, tmp_path):
    """Drop libsodium from pyzmq.libs: it becomes external, needed by exactly the ELFs
    whose NEEDED (per readelf) names it."""
    w, path = _pyzmq()
    elfs = elf_members(path, extract_root)
    sodium = next(m for m in elfs if "libsodium" in m)
    soname = readelf_dynamic(elfs[sodium])["SONAME"]
    users = sorted(m for m, p in elfs.items() if soname in readelf_dynamic(p)["NEEDED"])
    assert users
    with zipfile.ZipFile(path) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()
                 if i.filename != sodium and ".dist-info/" not in i.filename}
    broken = build_wheel(tmp_path, files, name="pyzmq", version="25.1.2",
                         tags=["manylinux_2_17_x86_64", "manylinux2014_x86_64"])
    r = audit_wheel(broken)
    assert r.external_libraries == {soname: users}
    assert r.best_tag == "linux_x86_64"
    assert set(r.unsatisfied_claims) == {"manylinux_2_17_x86_64", "manylinux2014_x86_64"}
    assert soname in r.unsatisfied_claims["manylinux_2_17_x86_64"]
    aw = aw_show(broken)
    assert set(aw["external_libs"]) == {soname} and aw["overall_tag"] == "linux_x86_64"


# ------------------------------------------------------------------ many at once

def test_batch_audit_of_the_cached_wheels(tmp_path):
    paths = []
    for w in WHEELS:
        p, _why = fetch(w)
        if p is not None:
            paths.append(p)
    if len(paths) < 2:
        pytest.skip("fewer than two real wheels available")
    d = tmp_path / "wheels"
    d.mkdir()
    for p in paths:
        os.symlink(p, d / p.name)
    out = io.StringIO()
    assert cli.main(["audit", "--json", "--jobs", "2", str(d)], out=out) == 0
    docs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [doc["wheel"] for doc in docs] == sorted(p.name for p in paths)
    for doc, p in zip(docs, sorted(paths, key=lambda p: p.name)):
        assert doc["ok"] is True
        assert doc["best_tag"] == audit_wheel(p).best_tag
