"""A CycloneDX SBOM (PEP 770) for a repaired wheel: where each grafted library came from.

``.dist-info/sboms/fastelf.cdx.json`` lists the wheel and, for each grafted
library, the OS package that installed it as a package URL (purl), read from
the package database of the system searched (dpkg's ``info/*.list`` and
``status``, apk's ``installed`` file, rpm's SQLite or BerkeleyDB database;
``rpm -qf`` for rpm's ndb format, when an ``rpm`` program exists).  A
database that cannot be read gives a :class:`PackageDatabaseWarning`, and
the libraries it would have named are listed as files, without a purl.

The components for packages have the same name, version, purl and
``bom-ref`` as auditwheel 6.5+ writes in ``auditwheel.cdx.json``; beyond it,
each carries the SHA-256 of the library file as it was taken from the system
and the path it was taken from, and a grafted library no package owns still
appears (as a ``file`` component) instead of being left out.

The document is deterministic: no timestamp, no serial number, components in
a fixed order, so two repairs of the same input give the same bytes.

Paths are looked up as found, resolved through symlinks, and under their
merged-``/usr`` alias (``/lib/x`` and ``/usr/lib/x``): Debian 12's dpkg
database names ``/lib/x86_64-linux-gnu/libz.so.1.2.13`` while the file's real
path is under ``/usr/lib``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple
from urllib.parse import quote

from .errors import PackageDatabaseWarning as PackageDatabaseWarning
from .hostfile import read_regular
from .wheelname import parse_wheel_name

SBOM_NAME = "sboms/fastelf.cdx.json"      # under the .dist-info directory
_MERGED_DIRS = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")
_DB_LIMIT = 256 << 20                     # a package database file larger than this is refused
_OS_RELEASE_RE = re.compile(r'^([A-Z_]+)=(?:"([^"]*)"|(.*))$', re.MULTILINE)


class OsPackage(NamedTuple):
    """An installed OS package: its database type (deb, apk, rpm), name and version."""
    type: str
    name: str
    version: str
    distro: str | None

    @property
    def purl(self) -> str:
        """The package URL, quoted as auditwheel quotes it (every reserved character)."""
        ns = f"{quote(self.distro, safe='')}/" if self.distro else ""
        return f"pkg:{self.type}/{ns}{quote(self.name, safe='')}@{quote(self.version, safe='')}"


class GraftedFile(NamedTuple):
    """One library copied into the wheel: where it came from and where it went."""
    soname: str
    source_path: str      # the path on the system (under --root if one was given)
    member: str           # its path in the repaired wheel
    sha256: str           # hex digest of the file as read from the system


# ------------------------------------------------------------------ package databases

def os_release_id(root: str = "/") -> str | None:
    """``ID`` from os-release under ``root`` (the purl namespace, e.g. ``debian``)."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = _read_text(os.path.join(root, rel), "replace")
        except OSError:
            continue
        for key, quoted, plain in _OS_RELEASE_RE.findall(text):
            if key == "ID":
                return quoted or plain or None
    return None


def _read_text(path: str, errors: str) -> str:
    """A database file's text, decoded as ``open()`` in text mode decodes it (universal
    newlines), read only when it is a regular file no larger than ``_DB_LIMIT``: a
    FIFO or device in a sysroot must not block or flood the repair.  OSError otherwise."""
    data = read_regular(path, _DB_LIMIT)
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors).read()


def lookup_paths(host_path: str, root: str = "/") -> list:
    """The database paths under which ``host_path`` may be recorded, most direct first."""
    root = os.path.abspath(root or "/")
    out = []
    for p in (host_path, os.path.realpath(host_path)):
        rel = os.path.relpath(os.path.abspath(p), root)
        if rel.startswith(".."):
            continue
        db = "/" + rel.replace(os.sep, "/") if rel != "." else "/"
        out.append(db)
        if db.startswith("/usr/") and db[4:].startswith(_MERGED_DIRS):
            out.append(db[4:])
        elif db.startswith(_MERGED_DIRS):
            out.append("/usr" + db)
    return list(dict.fromkeys(out))


def dpkg_owners(paths: Iterable[str], root: str = "/") -> dict:
    """{path: OsPackage} from dpkg's database under ``root`` for the paths it lists."""
    wanted = set(paths)
    needles = _dir_needles(wanted)
    info = os.path.join(root, "var/lib/dpkg/info")
    owners: dict = {}
    for listing in _dpkg_lists(info):
        try:
            raw = read_regular(listing, _DB_LIMIT)     # a FIFO or device is not read
        except OSError:
            continue
        if needles is not None and not any(n in raw for n in needles):
            continue
        stem = os.path.basename(listing)[:-len(".list")]
        for p in wanted.intersection(_text_lines(raw)):
            owners.setdefault(p, stem)
    if not owners:
        return {}
    versions = _dpkg_versions(os.path.join(root, "var/lib/dpkg/status"),
                              {stem.partition(":")[0] for stem in owners.values()})
    distro = os_release_id(root)
    out = {}
    for p, stem in owners.items():
        name, _colon, arch = stem.partition(":")
        version = versions.get((name, arch)) or versions.get((name, ""))
        if version is None and not arch:
            version = next((v for (n, _a), v in sorted(versions.items()) if n == name), None)
        if version is not None:
            out[p] = OsPackage("deb", name, version, distro)
    return out


def _dpkg_lists(info: str) -> list:
    """The ``*.list`` files of dpkg's info directory, sorted (as ``glob`` finds them:
    hidden names left out; none when the directory cannot be read)."""
    try:
        with os.scandir(info) as it:
            names = [e.name for e in it if e.name.endswith(".list") and e.name[0] != "."]
    except OSError:
        return []
    return sorted(os.path.join(info, n) for n in names)


def _dir_needles(wanted: set) -> list | None:
    """The directories of the wanted paths, as bytes: a list naming one of the paths
    names its directory too, so the half of Debian's lists that install nothing there
    (docs, headers) are passed over without being decoded or split.  None (no
    filter) when a directory holds a line break, which the text reading translates."""
    dirs = {p[:p.rfind("/") + 1] for p in wanted}
    if any("\r" in d or "\n" in d for d in dirs):
        return None
    # a list naming /usr/lib/x/ names /lib/x/ too: the shorter needle finds both
    least = [d for d in dirs if not any(o != d and o in d for o in dirs)]
    return [d.encode("utf-8", "surrogateescape") for d in sorted(least)]


def _text_lines(raw: bytes) -> list:
    """The lines of a list file as reading it as UTF-8 text (surrogateescape,
    universal newlines) gives them, without their line ends."""
    text = raw.decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _dpkg_versions(status_path: str, names: set | None = None) -> dict:
    """{(package, architecture): version} of the installed packages in dpkg's status file
    (only those named ``names``, when given); a ``Multi-Arch: same`` package is keyed by
    its architecture, any other also by ''."""
    try:
        text = _read_text(status_path, "replace")
    except OSError:
        return {}
    out = {}
    for stanza in text.split("\n\n"):
        if names is not None and _other_package(stanza, names):
            continue
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, re.MULTILINE))
        if not fields.get("Status", "").endswith(" installed") or "Version" not in fields:
            continue
        name, arch = fields.get("Package", ""), fields.get("Architecture", "")
        out[(name, arch)] = fields["Version"]
        if fields.get("Multi-Arch") != "same":
            out.setdefault((name, ""), fields["Version"])
    return out


def _other_package(stanza: str, names: set) -> bool:
    """Whether a status stanza surely describes a package not in ``names``: its one
    ``Package:`` line is its first and names another (a cheap test that skips the
    field parsing of the thousand-odd other packages; any doubt parses the stanza)."""
    first = stanza.split("\n", 1)[0]
    return (first.startswith("Package: ") and first[len("Package: "):] not in names
            and "\nPackage:" not in stanza)


def apk_owners(paths: Iterable[str], root: str = "/") -> dict:
    """{path: OsPackage} from apk's ``lib/apk/db/installed`` under ``root``.

    When two packages list one file, the first listed owns it (apk-tools keeps
    the first).  A database apk-tools would refuse as malformed gives a
    :class:`PackageDatabaseWarning` and no owner."""
    wanted = set(paths)
    db = os.path.join(root, "lib/apk/db/installed")
    try:
        text = _read_text(db, "surrogateescape")
    except OSError:
        return {}
    distro = os_release_id(root)
    out: dict = {}
    try:
        for f in _apk_files(text):
            if f.path in wanted:
                out.setdefault(f.path, OsPackage("apk", f.package, f.version, distro))
    except _ApkFormatError as e:
        warnings.warn(f"{db}: {e}, apk cannot read it either; the SBOM names no apk package",
                      PackageDatabaseWarning, stacklevel=2)
        return {}
    return out


class _ApkFile(NamedTuple):
    """A file apk's installed database lists, and the package that installed it."""
    path: str
    package: str
    version: str


class _ApkFormatError(ValueError):
    """A line of apk's installed database that apk-tools refuses."""


def _apk_files(text: str) -> Iterator[_ApkFile]:
    """The files of apk's installed database, in the order listed, read as apk-tools
    reads it: a line shorter than two characters ends a package; any other line is
    a field letter, ``:`` and a value; a file (``R:``) is in the package's last
    directory (``F:``, relative to the root)."""
    name = version = directory = None
    for lineno, line in enumerate(text.split("\n"), 1):
        if len(line) < 2:
            name = version = directory = None
            continue
        if line[1] != ":":
            raise _ApkFormatError(f"line {lineno} is not a field")
        key, value = line[0], line[2:]
        if key == "P":
            name = _clean(value)
        elif key == "V":
            version = _clean(value)
        elif key == "F":
            if name is None:
                raise _ApkFormatError(f"line {lineno}: a directory before the package name")
            directory = value
        elif key == "R":
            if directory is None:
                raise _ApkFormatError(f"line {lineno}: a file before its directory")
            if name and version:
                yield _ApkFile("/" + "/".join(x for x in (directory, value) if x), name, version)


def _clean(value: str) -> str:
    """A package name or version as text: bytes that are not UTF-8 become U+FFFD (they
    cannot go into a purl or a JSON document as they are)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def rpm_owners(paths: Iterable[str], root: str = "/") -> dict:
    """{path: OsPackage} from the rpm database under ``root``.

    A SQLite database (rpm >= 4.16) or a BerkeleyDB one (RHEL/CentOS 7 and 8)
    is read directly (:mod:`fastelf.rpmdb`); an ndb one (openSUSE, SLES), or
    none at rpm's usual paths, is left to ``rpm -qf`` when an ``rpm`` program
    exists.  A damaged database gives a :class:`PackageDatabaseWarning` and no
    owner for what it could not read: the SBOM then lists those libraries as
    files, without a purl."""
    # only on an rpm system: the rpm database parsers stay out of every start-up
    from . import rpmdb

    paths = list(paths)
    db = rpmdb.find_database(root)
    readers = {"sqlite": rpmdb.sqlite_owners, "bdb": rpmdb.bdb_owners}
    if db is None or db.format not in readers:
        return _rpm_query(paths, root)
    try:
        found = readers[db.format](db.path, paths)
    except rpmdb.RpmDatabaseError as e:
        warnings.warn(f"{e}; the SBOM names no rpm package", PackageDatabaseWarning,
                      stacklevel=2)
        return {}
    if found.damaged:
        warnings.warn(f"{db.path}: skipped {len(found.damaged)} damaged package header(s), "
                      f"first {found.damaged[0]}", PackageDatabaseWarning, stacklevel=2)
    distro = os_release_id(root)
    # auditwheel's purl for rpm: pkg:rpm/<os-release ID>/<name>@<version>-<release>,
    # no epoch and no arch qualifier
    return {p: OsPackage("rpm", pkg.name, f"{pkg.version}-{pkg.release}", distro)
            for p, pkg in found.owners.items()}


def _rpm_query(paths: list, root: str) -> dict:
    """{path: OsPackage} from ``rpm -qf``, for the databases fastelf does not read."""
    rpm = shutil.which("rpm")
    if rpm is None:
        return {}
    distro = os_release_id(root)
    out: dict = {}
    for p in paths:
        cmd = [rpm, *(["--root", root] if os.path.abspath(root) != "/" else []), "-qf",
               "--queryformat", "%{NAME} %{VERSION} %{RELEASE}\\n", p]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return out
        fields = proc.stdout.split("\n", 1)[0].split()
        if proc.returncode == 0 and len(fields) == 3:
            out[p] = OsPackage("rpm", fields[0], f"{fields[1]}-{fields[2]}", distro)
    return out


def owning_packages(host_paths: Iterable[str], root: str = "/") -> dict:
    """{host path: OsPackage} for the paths some package database on the system owns."""
    candidates = {h: lookup_paths(h, root) for h in host_paths}
    every = sorted({c for cs in candidates.values() for c in cs})
    found: dict = {}
    for source in (dpkg_owners, apk_owners, rpm_owners):
        left = [c for c in every if c not in found]
        if not left or all(any(c in found for c in cs) for cs in candidates.values()):
            break
        found.update(source(left, root))
    out = {}
    for h, cs in candidates.items():
        hit = next((found[c] for c in cs if c in found), None)
        if hit is not None:
            out[h] = hit
    return out


class PackageLookup:
    """:func:`owning_packages` on a thread of its own, started at once: reading the
    package database (dpkg's ~900 list files here, 20-40 ms) overlaps the patching and
    deflating a repair does meanwhile; :meth:`result` waits for it.  As a context
    manager it is joined on the way out, so no lookup outlives the repair that
    started it, even one that fails."""

    def __init__(self, host_paths: Iterable[str], root: str = "/") -> None:
        self._paths = list(host_paths)
        self._root = root
        self._found: dict = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self._paths:
            self._thread = threading.Thread(target=self._run, name="fastelf package lookup",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._found = owning_packages(self._paths, self._root)
        except BaseException as e:      # handed to the thread that asks for the result
            self._error = e

    def result(self) -> dict:
        """{host path: OsPackage}, as :func:`owning_packages` gives it (its error, if any)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._found

    def __enter__(self) -> PackageLookup:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()


# ------------------------------------------------------------------ the document

def wheel_purl(filename: str) -> tuple[str, str, str]:
    """(name, version, purl) of the wheel, as auditwheel forms them from the file name
    (the name and version as written, not normalized)."""
    written = parse_wheel_name(os.path.basename(filename))
    name, version = written.distribution, written.version
    purl = (f"pkg:pypi/{quote(name, safe='')}@{quote(version, safe='')}"
            f"?file_name={quote(os.path.basename(filename), safe='')}")
    return name, version, purl


def build_sbom(wheel_filename: str, grafted: Iterable[GraftedFile],
               packages: Mapping[str, OsPackage], tool_version: str) -> bytes | None:
    """The CycloneDX 1.4 document (JSON bytes), or None when nothing was grafted."""
    grafted = list(grafted)
    if not grafted:
        return None
    name, version, purl = wheel_purl(wheel_filename)
    top = {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
    owned = sorted((g for g in grafted if g.source_path in packages),
                   key=lambda g: (packages[g.source_path].purl, g.source_path))
    loose = sorted((g for g in grafted if g.source_path not in packages),
                   key=lambda g: g.member)
    components = [top]
    for g in owned:
        pkg = packages[g.source_path]
        ref = f"{pkg.purl}#{hashlib.sha256(g.source_path.encode(errors='ignore')).hexdigest()}"
        components.append({"type": "library", "bom-ref": ref, "name": pkg.name,
                           "version": pkg.version, "purl": pkg.purl, **_file_facts(g)})
    for g in loose:
        components.append({"type": "file", "bom-ref": f"file:{g.member}",
                           "name": os.path.basename(g.source_path), **_file_facts(g)})
    refs = [c["bom-ref"] for c in components[1:]]
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.4",
        "version": 1,
        "metadata": {"component": top, "tools": [{"name": "fastelf", "version": tool_version}]},
        "components": components,
        "dependencies": [{"ref": purl, "dependsOn": refs}] + [{"ref": r} for r in refs],
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _file_facts(g: GraftedFile) -> dict:
    """What fastelf adds to auditwheel's components: the file's hash and whereabouts."""
    return {"hashes": [{"alg": "SHA-256", "content": g.sha256}],
            "properties": [{"name": "fastelf:soname", "value": g.soname},
                           {"name": "fastelf:source-path", "value": g.source_path},
                           {"name": "fastelf:wheel-path", "value": g.member}]}
