"""fastelf's own reading of rpm's SQLite database, against rpm itself.

Oracles: ``rpm -qf --root`` (Debian's rpm 4.18, the ``rpm`` package) on a
database that rpm made here: tiny packages built by ``rpmbuild`` from specs
written in the test and installed with ``rpm -i --justdb`` into a temporary
root.  The purl is checked against auditwheel 6.8.2's own lookup (its
vendored ``whichprovides``, asking the same rpm).  Damaged databases are
made from rpm's database by cutting a header or the file, and rpm's answer
on them is the oracle again (it skips a damaged header; fastelf skips it too
and warns).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest
from repair_support import EXT, PY, check_record, validate_cyclonedx
from wheelbuild import build_wheel

from fastelf.repair import repair_wheel
from fastelf.rpmdb import (
    RpmDatabaseError,
    bdb_owners,
    files_of,
    find_database,
    package_of,
    parse_header,
)
from fastelf.sbom import PackageDatabaseWarning, os_release_id, owning_packages, rpm_owners

pytestmark = pytest.mark.skipif(
    shutil.which("rpm") is None or shutil.which("rpmbuild") is None,
    reason="rpm and rpmbuild are not installed (.ci/run installs Debian's rpm)")

DB = "var/lib/rpm"
QF = "%{NAME} %{EPOCHNUM} %{VERSION} %{RELEASE} %{ARCH}\\n"


class Pkg(NamedTuple):
    """A package to build: its identity and {path in the root: file content}."""
    name: str
    epoch: int | None
    version: str
    release: str
    files: dict


def _spec(p: Pkg) -> str:
    """An rpm spec that installs ``p.files`` from the SOURCES directory, no dependencies."""
    lines = [f"Name: {p.name}", f"Version: {p.version}", f"Release: {p.release}",
             *([f"Epoch: {p.epoch}"] if p.epoch is not None else []),
             "Summary: fastelf test", "License: MIT", "AutoReqProv: no",
             "%description", "fastelf test package", "%install"]
    for i, path in enumerate(p.files):
        lines.append(f"install -D -m644 %{{_sourcedir}}/{p.name}.{i} %{{buildroot}}{path}")
    lines.append("%files")
    lines.extend(p.files)
    return "\n".join(lines) + "\n"


def _rpmbuild(top: Path, p: Pkg) -> Path:
    """The binary rpm of ``p``, built by rpmbuild (no strip, no debuginfo)."""
    (top / "SOURCES").mkdir(parents=True, exist_ok=True)
    for i, content in enumerate(p.files.values()):
        (top / "SOURCES" / f"{p.name}.{i}").write_bytes(content)
    spec = top / f"{p.name}.spec"
    spec.write_text(_spec(p))
    subprocess.run(["rpmbuild", "-bb", "--target", "x86_64", "--define", f"_topdir {top}",
                    "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}",
                    "--define", "_build_id_links none", str(spec)],
                   check=True, capture_output=True)
    (rpm,) = (top / "RPMS" / "x86_64").glob(f"{p.name}-{p.version}-*.rpm")
    return rpm


def _install(root: Path, rpm: Path, *extra: str) -> None:
    subprocess.run(["rpm", "--root", str(root), "--dbpath", f"/{DB}", "-i", "--nodeps",
                    "--justdb", *extra, str(rpm)], check=True, capture_output=True)


def _rpm_qf(root: Path, path: str) -> tuple | None:
    """rpm's answer: (name, version-release) of the first package it prints, None if none."""
    out = subprocess.run(["rpm", "--root", str(root), "--dbpath", f"/{DB}", "-qf",
                          "--queryformat", QF, path], capture_output=True, text=True)
    lines = out.stdout.splitlines()
    if out.returncode != 0 or not lines:
        return None
    name, _epoch, version, release, _arch = lines[0].split()
    return name, f"{version}-{release}"


PACKAGES = [
    Pkg("libfoo", 2, "1.2.3", "4.fc40", {"/usr/lib64/libfoo.so.1": b"foo",
                                         "/lib/libold.so.1": b"old"}),
    Pkg("pa", None, "1.0", "1", {"/usr/lib64/libdup.so.3": b"a",
                                 "/usr/lib64/libshared.so.4": b"same"}),
    Pkg("pb", None, "1.0", "1", {"/usr/lib64/libdup.so.3": b"b",
                                 "/usr/lib64/libshared.so.4": b"same"}),
    Pkg("py3-bar+libs", None, "3.1~rc1", "2.el9", {"/usr/lib64/libbar.so.1": None}),
]   # None: the content is test_repair's libbar.so.1, a real library a repair grafts

# every path asked, as rpm's database names it or as a merged-/usr alias of it
QUERIES = ["/usr/lib64/libfoo.so.1",        # owned
           "/lib/libold.so.1",              # owned, as listed
           "/usr/lib/libold.so.1",          # the same file through /lib -> usr/lib
           "/usr/lib64/libdup.so.3",        # in pa and pb: pb replaced pa's (FILESTATES)
           "/usr/lib64/libshared.so.4",     # identical in both: rpm prints pa first
           "/usr/lib64/libbar.so.1",        # a name with '-' and '+'
           "/usr/lib64/libnone.so.1",       # on disk, in no package
           "/usr/lib64/libfoo.so.2"]        # same directory, another base name


@pytest.fixture(scope="module")
def rpmroot(tmp_path_factory, fx):  # noqa: F811
    """A root whose /var/lib/rpm/rpmdb.sqlite rpm wrote, with the packaged files on disk
    (libbar.so.1 is a real library, the test_repair one) and /lib -> usr/lib."""
    base = tmp_path_factory.mktemp("rpm")
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    os_release = Path("/etc/os-release")
    (root / "etc" / "os-release").write_text(
        os_release.read_text() if os_release.exists() else "ID=fedora\n")
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    for p in PACKAGES:
        p = p._replace(files={k: fx.bar.read_bytes() if v is None else v
                              for k, v in p.files.items()})
        extra = ("--replacefiles",) if p.name == "pb" else ()
        _install(root, _rpmbuild(base / "top", p), *extra)
        for path, content in p.files.items():
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_bytes(content)
    (root / "usr" / "lib64" / "libnone.so.1").write_bytes(b"none")
    return root


def _ours(root: Path, path: str) -> tuple | None:
    found = owning_packages([str(root) + path], str(root))
    pkg = found.get(str(root) + path)
    return None if pkg is None else (pkg.name, pkg.version)


def test_database_is_found_where_rpm_put_it(rpmroot):
    db = find_database(str(rpmroot))
    assert db is not None and db.format == "sqlite"
    assert Path(db.path) == rpmroot / DB / "rpmdb.sqlite"


@pytest.mark.parametrize("path", QUERIES)
def test_owner_is_rpms_answer(rpmroot, path):
    theirs = _rpm_qf(rpmroot, path)
    assert _ours(rpmroot, path) == theirs
    if path in ("/usr/lib64/libfoo.so.1", "/usr/lib/libold.so.1", "/usr/lib64/libdup.so.3"):
        assert theirs is not None            # the cases worth having stay owned


def test_rpm_is_not_asked(rpmroot, tmp_path, monkeypatch):
    """The database is read, not queried: an rpm program that fails changes nothing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "rpm").write_text("#!/bin/sh\nexit 3\n")
    (bindir / "rpm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert _ours(rpmroot, "/usr/lib64/libfoo.so.1") == ("libfoo", "1.2.3-4.fc40")


def test_purl_is_auditwheels(rpmroot, tmp_path):
    """auditwheel's own lookup (whichprovides, asking rpm) gives the same purl."""
    pytest.importorskip("auditwheel")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    rpm = shutil.which("rpm")
    (bindir / "rpm").write_text(f'#!/bin/sh\nexec {rpm} --root "{rpmroot}" --dbpath /{DB} "$@"\n')
    (bindir / "rpm").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    code = ("import json, sys\n"
            "from auditwheel._vendor.whichprovides import whichprovides\n"
            "print(json.dumps({p: v.purl for p, v in whichprovides(sys.argv[1:]).items()}))\n")
    paths = ["/usr/lib64/libfoo.so.1", "/usr/lib64/libbar.so.1"]
    out = subprocess.run([sys.executable, "-c", code, *paths], env=env, check=True,
                         capture_output=True, text=True).stdout
    theirs = json.loads(out)
    ours = rpm_owners(paths, str(rpmroot))
    assert os_release_id(str(rpmroot)) == os_release_id("/")   # both read the same ID
    assert {p: ours[p].purl for p in paths} == theirs
    assert theirs["/usr/lib64/libbar.so.1"].startswith("pkg:rpm/")


def test_repair_names_the_rpm_package(rpmroot, fx, tmp_path):  # noqa: F811
    """A whole repair against the root: the grafted libbar names its rpm in the SBOM."""
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/sub/_ext2{EXT}": fx.ext2},
                        name="pkg", python_tag=PY, abi_tag=PY)
    res = repair_wheel(wheel, tmp_path / "out", root=str(rpmroot),
                       ldpaths=str(rpmroot / "usr" / "lib64"))
    raw = zipfile.ZipFile(res.output).read(res.sbom)
    validate_cyclonedx(raw)                           # CycloneDX 1.4 schema
    check_record(res.output)                 # the SBOM is in RECORD with its hash
    (comp,) = json.loads(raw)["components"][1:]
    name, version = _rpm_qf(rpmroot, "/usr/lib64/libbar.so.1")
    assert (comp["type"], comp["name"], comp["version"]) == ("library", name, version)
    again = repair_wheel(wheel, tmp_path / "again", root=str(rpmroot),
                         ldpaths=str(rpmroot / "usr" / "lib64"))
    assert zipfile.ZipFile(again.output).read(again.sbom) == raw      # deterministic


# ------------------------------------------------------------------ damaged databases

def _copy_root(rpmroot: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(rpmroot, root, symlinks=True)
    return root


def _hnum_of(db: Path, name: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT hnum FROM Name WHERE key = ?", (name,)).fetchone()[0]


@pytest.mark.parametrize("cut", ["truncate", "lengths", "index"])
def test_damaged_header_is_skipped_as_rpm_skips_it(rpmroot, tmp_path, cut):
    root = _copy_root(rpmroot, tmp_path)
    db = root / DB / "rpmdb.sqlite"
    hnum = _hnum_of(db, "libfoo")
    with sqlite3.connect(db) as con:
        (blob,) = con.execute("SELECT blob FROM Packages WHERE hnum = ?", (hnum,)).fetchone()
        if cut == "truncate":                # the blob shorter than its intro says
            bad = blob[:-7]
        elif cut == "lengths":               # a data length past rpm's 256 MiB limit
            bad = blob[:4] + b"\x7f\xff\xff\xff" + blob[8:]
        else:                                # an index entry whose offset is past the data
            bad = blob[:8 + 16 + 8] + b"\x7f\xff\xff\xf0" + blob[8 + 16 + 12:]
        con.execute("UPDATE Packages SET blob = ? WHERE hnum = ?", (bad, hnum))
    assert _rpm_qf(root, "/usr/lib64/libfoo.so.1") is None       # rpm skips it too
    with pytest.warns(PackageDatabaseWarning, match=f"damaged.*header {hnum}"):
        assert _ours(root, "/usr/lib64/libfoo.so.1") is None
    # the other packages are still found, as rpm finds them
    assert _ours(root, "/usr/lib64/libdup.so.3") == _rpm_qf(root, "/usr/lib64/libdup.so.3")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "view"])
def test_unreadable_database_warns_and_names_nothing(rpmroot, tmp_path, fx, damage):  # noqa: F811
    root = _copy_root(rpmroot, tmp_path)
    db = root / DB / "rpmdb.sqlite"
    for extra in db.parent.glob("rpmdb.sqlite-*"):
        extra.unlink()
    if damage == "garbage":
        db.write_bytes(random.Random(7).randbytes(64 * 1024))
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[:5000])
    elif damage == "empty":
        db.write_bytes(b"")
    else:                                    # Packages an endless recursive view
        db.unlink()
        with sqlite3.connect(db) as con:
            con.execute("CREATE VIEW Packages(hnum, blob) AS WITH RECURSIVE n(i) AS "
                        "(SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i, x'00' FROM n")
    if damage != "view":
        assert _rpm_qf(root, "/usr/lib64/libfoo.so.1") is None   # rpm cannot read it either
    with pytest.warns(PackageDatabaseWarning, match="rpmdb.sqlite"):
        assert _ours(root, "/usr/lib64/libfoo.so.1") is None
    # a repair still succeeds; the library is listed as a file, without a purl
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/sub/_ext2{EXT}": fx.ext2},
                        name="pkg", python_tag=PY, abi_tag=PY)
    with pytest.warns(PackageDatabaseWarning):
        res = repair_wheel(wheel, tmp_path / "out", root=str(root),
                           ldpaths=str(root / "usr" / "lib64"))
    (comp,) = json.loads(zipfile.ZipFile(res.output).read(res.sbom))["components"][1:]
    assert comp["type"] == "file" and "purl" not in comp


def test_header_parser_raises_only_its_error_on_any_damage(rpmroot):
    """Every truncation and 3000 seeded byte changes of rpm's real headers: the parser
    returns or raises RpmDatabaseError, nothing else (no IndexError, struct.error, ...)."""
    with sqlite3.connect(rpmroot / DB / "rpmdb.sqlite") as con:
        blobs = [b for (b,) in con.execute("SELECT blob FROM Packages ORDER BY hnum")]
    for blob in blobs:                       # the real ones parse
        h = parse_header(blob)
        assert package_of(h).name in {p.name for p in PACKAGES}
        assert files_of(h).basenames
    rng = random.Random(770)
    cases = [b[:n] for b in blobs[:1] for n in range(len(b))]
    for _ in range(3000):
        b = bytearray(rng.choice(blobs))
        for _flip in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    outcomes = {"ok": 0, "error": 0}
    for case in cases:
        try:
            h = parse_header(case)
            package_of(h)
            files_of(h)
            outcomes["ok"] += 1
        except RpmDatabaseError:
            outcomes["error"] += 1
    assert outcomes["error"] >= len(blobs[0]) - 1      # every truncation is caught


# ------------------------------------------------------------------ BerkeleyDB (rpm < 4.16)

DB_LOAD = shutil.which("db5.3_load") or shutil.which("db_load")
needs_db_load = pytest.mark.skipif(DB_LOAD is None, reason="db_load not installed "
                                   "(.ci/run installs db5.3-util)")


def _db_load(path: Path, records: list, order: str) -> None:
    """A Berkeley DB hash file made by Berkeley DB's own db_load: 512-byte pages and a
    fill factor of 1, so headers go to overflow chains and buckets are many."""
    dump = "".join(f" {k.hex()}\n {v.hex()}\n" for k, v in records)
    text = f"VERSION=3\nformat=bytevalue\ntype=hash\nHEADER=END\n{dump}DATA=END\n"
    subprocess.run([DB_LOAD, "-c", f"db_lorder={ {'<': 1234, '>': 4321}[order]}",
                    "-c", "db_pagesize=512", "-c", "h_ffactor=1", str(path)],
                   input=text.encode(), check=True, capture_output=True)


def _bdb_root(rpmroot: Path, base: Path, order: str) -> Path:
    """A copy of ``rpmroot`` whose rpm database is BerkeleyDB (as on RHEL 7/8): the
    ``Packages`` and ``Basenames`` hash files hold the headers and index rpm wrote."""
    root = base / "root"
    shutil.copytree(rpmroot, root, symlinks=True)
    sq = root / DB / "rpmdb.sqlite"
    with sqlite3.connect(sq) as con:
        packages = con.execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
        index = con.execute("SELECT key, hnum, idx FROM Basenames ORDER BY hnum, idx").fetchall()
    for f in sq.parent.glob("rpmdb.sqlite*"):
        f.unlink()
    counter = [(struct.pack(order + "I", 0), struct.pack(order + "I", packages[-1][0] + 1))]
    _db_load(root / DB / "Packages",
             counter + [(struct.pack(order + "I", h), b) for h, b in packages], order)
    names: dict = {}
    for key, hnum, idx in index:
        names[key] = names.get(key, b"") + struct.pack(order + "II", hnum, idx)
    _db_load(root / DB / "Basenames", [(k.encode(), v) for k, v in names.items()], order)
    return root


@pytest.fixture(scope="module", params=["<", ">"], ids=["little-endian", "big-endian"])
def bdbroot(rpmroot, tmp_path_factory, request):
    if DB_LOAD is None:
        pytest.skip("db_load not installed (.ci/run installs db5.3-util)")
    return _bdb_root(rpmroot, tmp_path_factory.mktemp("bdb"), request.param)


def test_bdb_database_is_found(bdbroot):
    db = find_database(str(bdbroot))
    assert db is not None and db.format == "bdb"
    assert _overflow_pages(bdbroot / DB / "Packages")[1] > 3     # headers in overflow chains


@pytest.mark.parametrize("path", QUERIES)
def test_bdb_owner_is_rpms_answer(bdbroot, path, monkeypatch):
    theirs = _rpm_qf(bdbroot, path)      # rpm 4.18 reads BerkeleyDB with its bdb_ro backend
    monkeypatch.setenv("PATH", "/nonexistent")       # fastelf reads the file, asks no rpm
    assert _ours(bdbroot, path) == theirs
    if path in ("/usr/lib64/libfoo.so.1", "/usr/lib/libold.so.1", "/usr/lib64/libdup.so.3"):
        assert theirs is not None


def _overflow_pages(path: Path) -> tuple:
    """(page size, number of overflow pages) of a hash file, from its pages' type bytes."""
    data = path.read_bytes()
    order = "<" if struct.unpack_from("<I", data, 12)[0] == 0x061561 else ">"
    size = struct.unpack_from(order + "I", data, 20)[0]
    return size, sum(1 for p in range(size, len(data), size) if data[p + 25] == 7)


@needs_db_load
def test_bdb_damaged_overflow_page_skips_one_header_as_rpm_does(rpmroot, tmp_path):
    root = _bdb_root(rpmroot, tmp_path, "<")
    pk = root / DB / "Packages"
    data = bytearray(pk.read_bytes())
    size, _n = _overflow_pages(pk)
    first_overflow = next(p for p in range(size, len(data), size) if data[p + 25] == 7)
    data[first_overflow + 22:first_overflow + 24] = b"\xff\xff"     # more bytes than a page
    pk.write_bytes(bytes(data))
    theirs = {q: _rpm_qf(root, q) for q in QUERIES}
    assert sum(v is None for v in theirs.values()) > sum(
        _rpm_qf(rpmroot, q) is None for q in QUERIES)               # rpm lost a package too
    with pytest.warns(PackageDatabaseWarning, match="damaged"):
        ours = {q: _ours(root, q) for q in QUERIES}
    assert ours == theirs


@needs_db_load
@pytest.mark.parametrize("damage", ["garbage", "btree", "loop"])
def test_bdb_unreadable_database_warns(rpmroot, tmp_path, damage):
    root = _bdb_root(rpmroot, tmp_path, "<")
    pk = root / DB / "Packages"
    data = bytearray(pk.read_bytes())
    if damage == "garbage":
        data = bytearray(random.Random(8).randbytes(len(data)))
    elif damage == "btree":                  # another Berkeley DB kind: not rpm's Packages
        data[12:16] = struct.pack("<I", 0x053162)
    else:                                    # every page's "next" points at page 1
        size, _n = _overflow_pages(pk)
        for p in range(size, len(data), size):
            data[p + 16:p + 20] = struct.pack("<I", 1)
    pk.write_bytes(bytes(data))
    with pytest.warns(PackageDatabaseWarning, match="Packages"):
        assert _ours(root, "/usr/lib64/libfoo.so.1") is None or damage == "loop"


@needs_db_load
def test_bdb_reader_raises_only_its_error_on_any_damage(rpmroot, tmp_path):
    """3000 seeded byte changes of a real hash file: bdb_owners returns or raises
    RpmDatabaseError, nothing else, and never loops."""
    root = _bdb_root(rpmroot, tmp_path, "<")
    pk = root / DB / "Packages"
    good = pk.read_bytes()
    rng = random.Random(1593)
    kinds = {"read": 0, "error": 0}
    for _ in range(3000):
        data = bytearray(good)
        for _flip in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        pk.write_bytes(bytes(data))
        try:
            bdb_owners(str(pk), QUERIES)
            kinds["read"] += 1
        except RpmDatabaseError:
            kinds["error"] += 1
    assert kinds["read"] and kinds["error"]


def test_cli_prints_the_warning_as_one_line(rpmroot, fx, tmp_path):  # noqa: F811
    """``fastelf repair`` on a sysroot with a damaged database: the repair is written,
    and the warning is one ``fastelf: warning:`` line, as errors are."""
    root = _copy_root(rpmroot, tmp_path)
    db = root / DB / "rpmdb.sqlite"
    db.write_bytes(b"not sqlite " * 100)
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/sub/_ext2{EXT}": fx.ext2},
                        name="pkg", python_tag=PY, abi_tag=PY)
    out = subprocess.run([sys.executable, "-m", "fastelf", "repair", "--root", str(root),
                          "-w", str(tmp_path / "out"), str(wheel)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"fastelf: warning: {db}: not an rpm database: file is not a database; "
        "the SBOM names no rpm package"]
    assert list((tmp_path / "out").glob("*.whl"))
