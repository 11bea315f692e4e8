"""The SBOM a repair writes (``.dist-info/sboms/fastelf.cdx.json``, PEP 770).

Oracles: the CycloneDX 1.4 JSON schema (cyclonedx-python-lib's strict
validator); dpkg's own answer (``dpkg -S`` and ``dpkg-query``) for the
package that owns each grafted Debian library; hashlib on the host file for
each hash; RECORD recomputed with zipfile; auditwheel 6.8.2's
``auditwheel.cdx.json`` for the same repair (every package it names, fastelf
names too, with the same purl).  The apk lookup runs on an ``installed``
database made here under a sysroot; rpm's SQLite and BerkeleyDB databases,
which fastelf reads itself, are tested against rpm in test_sbom_rpmdb.py;
for rpm's ndb format fastelf asks ``rpm -qf`` (a stub here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest
from elfbuild import compile_c, python_ext_source
from repair_support import (
    EXT,
    PY,
    PY_INCLUDE,
    auditwheel_repair,
    check_record,
    validate_cyclonedx,
)
from wheelbuild import build_wheel

from fastelf import cli
from fastelf import sbom as sbom_module
from fastelf.repair import repair_wheel
from fastelf.sbom import (
    OsPackage,
    PackageDatabaseWarning,
    PackageLookup,
    apk_owners,
    lookup_paths,
    owning_packages,
    rpm_owners,
)

SYSTEM_LIBS = {"libbz2.so.1.0": "BZ2_bzlibVersion", "libffi.so.8": "ffi_get_struct_offsets"}


def _sbom_of(wheel) -> tuple:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if "/sboms/" in n]
        return names, {n: zf.read(n) for n in names}


def _dpkg_owner(path: str):
    """(package, version) from dpkg itself, trying the path and its /usr alias."""
    for p in lookup_paths(path):
        out = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if out.returncode == 0:
            pkg = out.stdout.split(": ", 1)[0].split(", ")[0]
            ver = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                                 capture_output=True, text=True, check=True).stdout
            return pkg.split(":")[0], ver
    return None


@pytest.fixture(scope="module")
def system_wheel(tmp_path_factory):
    """An extension linked to two Debian libraries that no manylinux policy allows."""
    if shutil.which("dpkg") is None:
        pytest.skip("no dpkg database on this system")
    libdir = Path("/usr/lib") / sysconfig.get_config_var("MULTIARCH")
    libs = [libdir / so for so in SYSTEM_LIBS if (libdir / so).exists()]
    if len(libs) != len(SYSTEM_LIBS):
        pytest.skip("libbz2 / libffi not installed")
    decl = "".join(f"extern void {f}(void);\n" for f in SYSTEM_LIBS.values())
    body = "0 * (long)" + " * 0 + 0 * (long)".join(f"(void *){f}" for f in SYSTEM_LIBS.values())
    root = tmp_path_factory.mktemp("sys")
    ext = compile_c(root / "b", "_sys" + EXT, python_ext_source("_sys", body, decl),
                    args=["-I", PY_INCLUDE], libs=["-Wl,--no-as-needed", *map(str, libs)])
    return build_wheel(root / "in", {"sysp/__init__.py": "", f"sysp/_sys{EXT}": ext},
                       name="sysp", version="2.0", python_tag=PY, abi_tag=PY)


def test_sbom_names_the_debian_packages_with_hashes_and_paths(system_wheel, tmp_path):
    res = repair_wheel(system_wheel, tmp_path / "out")
    names, docs = _sbom_of(res.output)
    assert names == ["sysp-2.0.dist-info/sboms/fastelf.cdx.json"] == [res.sbom]
    check_record(res.output)                  # listed in RECORD with its real hash
    raw = docs[names[0]]
    validate_cyclonedx(raw)
    doc = json.loads(raw)
    wheel_purl = f"pkg:pypi/sysp@2.0?file_name={Path(res.output).name}"
    assert doc["metadata"]["component"]["purl"] == wheel_purl
    comps = doc["components"][1:]
    assert len(comps) == len(res.grafted) == len(SYSTEM_LIBS)
    distro = subprocess.run(["sh", "-c", ". /etc/os-release && echo $ID"], capture_output=True,
                            text=True).stdout.strip()
    members = set(zipfile.ZipFile(res.output).namelist())
    for c in comps:
        props = {p["name"]: p["value"] for p in c["properties"]}
        src = props["fastelf:source-path"]
        assert res.grafted[props["fastelf:soname"]] == (src, props["fastelf:wheel-path"])
        assert props["fastelf:wheel-path"] in members
        assert c["hashes"] == [{"alg": "SHA-256",
                                "content": hashlib.sha256(Path(src).read_bytes()).hexdigest()}]
        owner = _dpkg_owner(src)
        assert owner is not None, src
        assert (c["type"], c["name"], c["version"]) == ("library", *owner)
        assert c["purl"].startswith(f"pkg:deb/{distro}/{owner[0]}@")
    refs = [c["bom-ref"] for c in comps]
    assert doc["dependencies"] == [{"ref": wheel_purl, "dependsOn": refs}] + [
        {"ref": r} for r in refs]


def test_sbom_is_deterministic(system_wheel, tmp_path):
    one = repair_wheel(system_wheel, tmp_path / "a")
    two = repair_wheel(system_wheel, tmp_path / "b")
    assert _sbom_of(one.output)[1] == _sbom_of(two.output)[1]


def test_sbom_covers_what_auditwheel_names(system_wheel, tmp_path, auditwheel_path):
    ours = repair_wheel(system_wheel, tmp_path / "ours")
    theirs = auditwheel_repair(system_wheel, tmp_path / "aw", auditwheel_path)
    assert Path(theirs).name == Path(ours.output).name
    _n, aw_docs = _sbom_of(theirs)
    aw = json.loads(aw_docs["sysp-2.0.dist-info/sboms/auditwheel.cdx.json"])
    doc = json.loads(_sbom_of(ours.output)[1][ours.sbom])
    assert doc["metadata"]["component"] == aw["metadata"]["component"]
    pick = ("type", "name", "version", "purl")
    aw_pkgs = {tuple(c[k] for k in pick) for c in aw["components"][1:]}
    our_pkgs = {tuple(c[k] for k in pick) for c in doc["components"][1:]}
    assert aw_pkgs and aw_pkgs <= our_pkgs
    # auditwheel looks up only the fully resolved path, which Debian 12's dpkg lists
    # under /lib for libbz2 (merged /usr): fastelf tries the alias too and finds it
    assert len(our_pkgs) == len(SYSTEM_LIBS)


def test_no_sbom_when_nothing_is_grafted(fx, tmp_path):
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/_plain{EXT}": fx.plain},
                        name="pkg", python_tag=PY, abi_tag=PY)
    res = repair_wheel(wheel, tmp_path / "out")
    assert res.sbom is None and _sbom_of(res.output)[0] == []


def test_unpackaged_library_is_a_file_component_and_rerepair_replaces_the_sbom(fx, tmp_path):
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    raw = _sbom_of(res.output)[1][res.sbom]
    validate_cyclonedx(raw)
    comps = json.loads(raw)["components"][1:]
    assert sorted(c["name"] for c in comps) == ["libbar.so.1", "libbaz.so.2"]
    assert {c["type"] for c in comps} == {"file"}
    for c in comps:
        assert c["hashes"][0]["content"] == fx.sha[c["name"]]
    # repairing the repaired wheel again grafts nothing and keeps the SBOM as it was
    again = repair_wheel(res.output, tmp_path / "again", plat="manylinux_2_17_x86_64")
    _names, docs = _sbom_of(again.output)
    assert docs == {res.sbom: raw}
    check_record(again.output)


# ------------------------------------------------------------------ fixture databases

def _sysroot_with(tmp_path: Path, distro: str) -> Path:
    root = tmp_path / "sysroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(f'NAME="Test"\nID={distro}\n')
    (root / "usr" / "lib").mkdir(parents=True)
    return root


def test_apk_database_fixture(fx, tmp_path):
    root = _sysroot_with(tmp_path, "alpine")
    shutil.copy(fx.bar, root / "usr" / "lib" / "libbar.so.1")
    (root / "lib" / "apk" / "db").mkdir(parents=True)
    (root / "lib" / "apk" / "db" / "installed").write_text(
        "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\n\n"
        "C:Q1def=\nP:py3-bar-libs\nV:3.1-r2\nA:x86_64\nF:usr\nF:usr/lib\nR:libbar.so.1\n"
        "a:0:0:755\nZ:Q1xyz=\n\n")
    found = owning_packages([str(root / "usr/lib/libbar.so.1"), str(root / "usr/lib/nope.so")],
                            str(root))
    # a name with dashes stays whole (auditwheel's `apk info --who-owns` parsing would
    # split "py3-bar-libs-3.1-r2" after "py3")
    assert found == {str(root / "usr/lib/libbar.so.1"):
                     OsPackage("apk", "py3-bar-libs", "3.1-r2", "alpine")}
    assert found[str(root / "usr/lib/libbar.so.1")].purl == "pkg:apk/alpine/py3-bar-libs@3.1-r2"
    # and through a whole repair searching only the sysroot's directory
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/sub/_ext2{EXT}": fx.ext2},
                        name="pkg", python_tag=PY, abi_tag=PY)
    res = repair_wheel(wheel, tmp_path / "out", root=str(root),
                       ldpaths=str(root / "usr" / "lib"))
    raw = _sbom_of(res.output)[1][res.sbom]
    validate_cyclonedx(raw)
    (comp,) = json.loads(raw)["components"][1:]
    assert comp["purl"] == "pkg:apk/alpine/py3-bar-libs@3.1-r2"


def _apk_root(tmp_path: Path, installed: bytes) -> Path:
    root = _sysroot_with(tmp_path, "alpine")
    (root / "lib" / "apk" / "db").mkdir(parents=True)
    (root / "lib" / "apk" / "db" / "installed").write_bytes(installed)
    return root


def test_apk_database_read_as_apk_tools_reads_it(tmp_path):
    """apk-tools' reader (src/database.c, apk_db_fdb_read; apk itself is not packaged for
    Debian, so no apk oracle): a line shorter than two characters ends a package, a file
    two packages list belongs to the first, the root directory is ``F:`` with no value,
    a file listed before any package version names no package."""
    root = _apk_root(tmp_path, (
        b"P:first\nV:1-r0\nF:usr/lib\nR:libdup.so.1\nR:libone.so.1\n"
        b"x\n"                                      # a one-character line ends "first"
        b"P:second\nV:2-r0\nF:usr/lib\nR:libdup.so.1\nR:libtwo.so.1\nF:\nR:rootfile\n\n"
        b"P:bad\xffname\nV:3-r0\nF:usr/lib\nR:libthree.so.1\n\n"
        b"P:noversion\nF:usr/lib\nR:libfour.so.1\n"))
    paths = [f"/usr/lib/{n}" for n in ("libdup.so.1", "libone.so.1", "libtwo.so.1",
                                       "libthree.so.1", "libfour.so.1")] + ["/rootfile"]
    found = apk_owners(paths, str(root))
    assert {p: (o.name, o.version) for p, o in found.items()} == {
        "/usr/lib/libdup.so.1": ("first", "1-r0"), "/usr/lib/libone.so.1": ("first", "1-r0"),
        "/usr/lib/libtwo.so.1": ("second", "2-r0"), "/rootfile": ("second", "2-r0"),
        "/usr/lib/libthree.so.1": ("bad\ufffdname", "3-r0")}
    assert found["/usr/lib/libthree.so.1"].purl == "pkg:apk/alpine/bad%EF%BF%BDname@3-r0"


@pytest.mark.parametrize("bad", [b"P:x\nV:1\nF:usr/lib\nR:libx.so.1\nno field here\n",
                                 b"F:usr/lib\nR:libx.so.1\n",         # a directory, no package
                                 b"P:x\nV:1\nR:libx.so.1\n"])          # a file, no directory
def test_apk_database_apk_would_refuse_warns(tmp_path, bad):
    root = _apk_root(tmp_path, bad)
    with pytest.warns(PackageDatabaseWarning, match="installed: line"):
        assert apk_owners(["/usr/lib/libx.so.1"], str(root)) == {}


def test_package_database_that_is_a_fifo_is_not_read(tmp_path):
    """A FIFO where a database should be (a hostile sysroot) must not block the lookup."""
    root = _sysroot_with(tmp_path, "alpine")
    (root / "lib" / "apk" / "db").mkdir(parents=True)
    os.mkfifo(root / "lib" / "apk" / "db" / "installed")
    (root / "var" / "lib" / "dpkg" / "info").mkdir(parents=True)
    os.mkfifo(root / "var" / "lib" / "dpkg" / "info" / "x.list")
    assert owning_packages([str(root / "usr/lib/libx.so.1")], str(root)) == {}


def test_dpkg_database_fixture_multiarch(tmp_path):
    root = _sysroot_with(tmp_path, "ubuntu")
    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    (info / "libfoo1:amd64.list").write_text("/.\n/usr\n/usr/lib\n/usr/lib/libfoo.so.1\n")
    (info / "libfoo1:i386.list").write_text("/.\n/usr/lib32/libfoo.so.1\n")
    (info / "foo-bin.list").write_text("/usr/bin/foo\n")
    (root / "var" / "lib" / "dpkg" / "status").write_text(
        "Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\n"
        "Multi-Arch: same\nVersion: 1:2.0-3ubuntu1\n\n"
        "Package: libfoo1\nStatus: install ok installed\nArchitecture: i386\n"
        "Multi-Arch: same\nVersion: 1:2.0-3ubuntu2\n\n"
        "Package: libgone\nStatus: deinstall ok config-files\nArchitecture: amd64\n"
        "Version: 9\n\n")
    (root / "usr" / "lib" / "libfoo.so.1").write_bytes(b"x")
    found = owning_packages([str(root / "usr/lib/libfoo.so.1")], str(root))
    pkg = found[str(root / "usr/lib/libfoo.so.1")]
    assert pkg == OsPackage("deb", "libfoo1", "1:2.0-3ubuntu1", "ubuntu")
    assert pkg.purl == "pkg:deb/ubuntu/libfoo1@1%3A2.0-3ubuntu1"


def test_dpkg_database_fixture_odd_forms(tmp_path):
    """The shortcuts of the dpkg reader (lists skipped unless they name the directory,
    status stanzas of other packages skipped unparsed) keep dpkg's file format: a list
    with CRLF line ends and no final newline, a stanza whose Package line is not the
    first, a package named like the directory of another's file."""
    root = _sysroot_with(tmp_path, "debian")
    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    (info / "aaa-docs.list").write_text("/usr/share/doc/libbar2\n/usr/share/doc/libbar2/x\n")
    (info / "libbar2.list").write_bytes(
        b"/.\r\n/usr/lib\r\n/usr/lib/libbar.so.2\r\n/usr/lib/libbar.so.2.5")
    (root / "var" / "lib" / "dpkg" / "status").write_text(
        "Package: aaa-docs\nStatus: install ok installed\nVersion: 1\n\n"
        "Status: install ok installed\nPackage: libbar2\nArchitecture: amd64\n"
        "Version: 2.5-1\n\n")
    (root / "usr" / "lib" / "libbar.so.2").write_bytes(b"x")
    found = owning_packages([str(root / "usr/lib/libbar.so.2")], str(root))
    assert found == {str(root / "usr/lib/libbar.so.2"):
                     OsPackage("deb", "libbar2", "2.5-1", "debian")}


def test_rpm_ndb_database_is_asked_of_an_rpm_program(tmp_path, monkeypatch):
    """rpm's ndb format (openSUSE, ``Packages.db``) is not read by fastelf: it asks
    ``rpm -qf --root`` as auditwheel does, here a stub answering as rpm does."""
    root = _sysroot_with(tmp_path, "opensuse-tumbleweed")
    (root / "usr" / "lib" / "sysimage" / "rpm").mkdir(parents=True)
    (root / "usr" / "lib" / "sysimage" / "rpm" / "Packages.db").write_bytes(b"ndb")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "rpm"
    stub.write_text("#!/bin/sh\n"
                    f'[ "$1 $2" = "--root {root}" ] || exit 9\n'
                    'for a in "$@"; do last="$a"; done\n'
                    'if [ "$last" = /usr/lib64/libfoo.so.1 ]; then\n'
                    '  printf "libfoo 2.0 3.1\\n"; exit 0; fi\n'
                    'echo "file $last is not owned by any package"; exit 1\n')
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    found = rpm_owners(["/usr/lib64/libfoo.so.1", "/usr/lib64/other.so"], str(root))
    assert found == {"/usr/lib64/libfoo.so.1":
                     OsPackage("rpm", "libfoo", "2.0-3.1", "opensuse-tumbleweed")}
    assert found["/usr/lib64/libfoo.so.1"].purl == \
        "pkg:rpm/opensuse-tumbleweed/libfoo@2.0-3.1"


# ------------------------------------------------------------------ the lookup's thread

def test_lookup_on_its_thread_answers_as_dpkg(system_wheel):
    """PackageLookup (the repair's background lookup) gives what dpkg itself says."""
    libdir = Path("/usr/lib") / sysconfig.get_config_var("MULTIARCH")
    paths = [str(libdir / so) for so in SYSTEM_LIBS] + ["/nonexistent/libnope.so.1"]
    with PackageLookup(paths) as lookup:
        found = lookup.result()
    assert found == owning_packages(paths)
    assert {p: (o.name, o.version) for p, o in found.items()} == {
        p: _dpkg_owner(p) for p in paths[:-1]}


def test_lookup_error_reaches_the_caller(monkeypatch):
    def broken(paths, root):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(sbom_module, "owning_packages", broken)
    lookup = PackageLookup(["/usr/lib/libx.so.1"])
    with pytest.raises(OSError, match="Input/output"):
        lookup.result()
    assert PackageLookup([]).result() == {}        # nothing to look up: no thread at all


def test_repair_warns_of_a_damaged_database_once_in_one_line(fx, tmp_path, capsys):
    """The warning raised on the lookup's thread reaches the CLI's one-line warnings."""
    root = _apk_root(tmp_path, b"P:x\nV:1\nF:usr/lib\nR:libbar.so.1\nno field here\n")
    shutil.copy(fx.bar, root / "usr" / "lib" / "libbar.so.1")
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "", f"pkg/sub/_ext2{EXT}": fx.ext2},
                        name="pkg", python_tag=PY, abi_tag=PY)
    code = cli.main(["repair", str(wheel), "-w", str(tmp_path / "out"), "--root", str(root),
                     "--ldpaths", str(root / "usr" / "lib")])
    err = capsys.readouterr().err
    assert code == 0, err
    warned = [line for line in err.splitlines() if "installed: line" in line]
    assert len(warned) == 1 and warned[0].startswith("fastelf: warning: ")
