"""rpm's database of installed packages, read without rpm: which package owns a file.

Two formats are read:

- SQLite, rpm 4.16 and later (Fedora 33+, RHEL/AlmaLinux 9 = manylinux_2_34,
  Amazon Linux 2023): ``rpmdb.sqlite`` under ``/usr/lib/sysimage/rpm``
  (Fedora 36+) or ``/var/lib/rpm``.  Its ``Packages`` table maps a header
  number ``hnum`` to the package's header blob; the ``Basenames`` table is
  rpm's index from a file's base name to ``(hnum, idx)``, ``idx`` being the
  file's place in that header's file arrays.
- BerkeleyDB, rpm before 4.16 (RHEL/CentOS 7 = manylinux2014, RHEL/AlmaLinux
  8 = manylinux_2_28, Amazon Linux 2): ``/var/lib/rpm/Packages``, a hash file
  (:mod:`fastelf.bdbhash`) from header number to header blob.  Every header
  is read; rpm's other files (its indexes) are not needed.

The ndb format (openSUSE, SLES 15: ``Packages.db``) is not read:
:func:`find_database` names it so the caller can ask an ``rpm`` program.

A header blob (rpm's ``docs/manual/format_header.md``) is big-endian: the
index count ``il`` and data length ``dl`` (4 bytes each), ``il`` index entries
of 16 bytes (tag, type, offset, count) and ``dl`` bytes of data, offsets
counted from the start of the data.  Entries after the immutable region
("dribbles", added at install time) replace earlier entries of the same tag,
so the last entry of a tag is the one that counts.

A file is owned the way ``rpm -qf`` decides it: a header owns the path when
it lists the base name, the directory its ``DIRINDEXES`` entry points to is
the path's directory, and the file's ``FILESTATES`` entry says it was
installed (normal or netshared, not replaced by another package).  When
several headers own it, the lowest header number wins (rpm prints it
first).  rpm compares directories by their identity on disk (fingerprints);
the caller passes each path under its aliases (resolved, merged ``/usr``)
instead.

Every count, offset and length in the file is checked before it is used and
SQLite's work is capped (a hostile database can define ``Packages`` as an
endless recursive view): a damaged database raises :class:`RpmDatabaseError`
with one line saying what is wrong, a damaged header is skipped and listed
(rpm skips it too), never another exception, never a hang.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote

from .bdbhash import hash_records
from .errors import BdbError, RpmDatabaseError
from .hostfile import open_regular

if TYPE_CHECKING:       # imported when a SQLite database is read: 3 ms off every start-up
    import sqlite3

__all__ = ["RpmDatabaseError", "RpmDatabase", "RpmLookup", "RpmPackage", "RpmTag", "RpmType",
           "find_database", "parse_header", "package_of", "files_of", "owns", "sqlite_owners",
           "bdb_owners"]

_DB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm")       # rpm's %_dbpath, newest first
_DB_FILES = (("rpmdb.sqlite", "sqlite"), ("Packages.db", "ndb"), ("Packages", "bdb"))
_MAX_TAGS = 0xFFFF              # rpm's HEADER_TAGS_MAX
_MAX_DATA = 0x0FFFFFFF          # rpm's HEADER_DATA_MAX (256 MiB)
_MAX_ARRAY = 0x000FFFFF         # rpm's HEADER_ARRAY_MAX: a million files per package
_MAX_BLOB = 256 * 1024 * 1024   # rpm's headerMaxbytes
_SQL_STEPS = 20_000             # progress calls (each 1000 SQLite VM steps) before giving up
_INDEX = struct.Struct(">4I")


class RpmTag(IntEnum):
    """The header tags fastelf reads (rpm's ``include/rpm/rpmtag.h``)."""
    NAME = 1000
    VERSION = 1001
    RELEASE = 1002
    EPOCH = 1003
    ARCH = 1022
    OLDFILENAMES = 1027
    FILESTATES = 1029
    DIRINDEXES = 1116
    BASENAMES = 1117
    DIRNAMES = 1118


class RpmType(IntEnum):
    """Header data types and, through :data:`_WIDTH`, the size of one value."""
    CHAR = 1
    INT8 = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    STRING = 6
    BIN = 7
    STRING_ARRAY = 8
    I18NSTRING = 9


_READ_TAGS = frozenset(RpmTag)
_WIDTH = {RpmType.CHAR: 1, RpmType.INT8: 1, RpmType.INT16: 2, RpmType.INT32: 4,
          RpmType.INT64: 8, RpmType.BIN: 1}
_STRINGS = (RpmType.STRING, RpmType.STRING_ARRAY, RpmType.I18NSTRING)
_INSTALLED_STATES = (0, 3)      # RPMFILE_STATE_NORMAL, RPMFILE_STATE_NETSHARED


class RpmDatabase(NamedTuple):
    """An rpm database found under a root: its file and format (sqlite, ndb or bdb)."""
    path: str
    format: str


class RpmPackage(NamedTuple):
    """The identity of an installed rpm package, as its header states it."""
    name: str
    version: str
    release: str
    epoch: int | None
    arch: str | None


class _Entry(NamedTuple):
    """One index entry of a header: where the values of ``tag`` are in the data."""
    tag: int
    type: RpmType
    offset: int
    nvalues: int


class _Header(NamedTuple):
    """A header blob whose index has been checked: the blob, where its data starts and
    ends, and the last index entry of each tag."""
    blob: bytes
    start: int
    end: int
    entries: dict


class _FileList(NamedTuple):
    """The files a header lists: base names, directory of each, directories, states."""
    basenames: list
    dirindexes: list
    dirnames: list
    states: list | None


# ------------------------------------------------------------------ finding the database

def find_database(root: str = "/") -> RpmDatabase | None:
    """The rpm database under ``root``, or None when there is none.

    The first directory of rpm's usual database paths that holds a database
    decides; a path that a symbolic link leads out of ``root`` is not used
    (it would be the host's database, not the sysroot's)."""
    real_root = os.path.realpath(root)
    for directory in _DB_DIRS:
        for name, fmt in _DB_FILES:
            path = os.path.join(root, directory, name)
            if not os.path.isfile(path):
                continue
            real = os.path.realpath(path)
            if os.path.commonpath([real_root, real]) != real_root:
                continue
            return RpmDatabase(path, fmt)
    return None


# ------------------------------------------------------------------ header blobs

def parse_header(blob: bytes) -> _Header:
    """The checked index of a header blob as rpm stores it in its database.

    Checks what rpm's ``hdrblobInit`` checks before it trusts a blob: the
    counts in range, the blob exactly ``8 + 16*il + dl`` bytes, every entry of
    a known type with an offset inside the data (values are range-checked
    when read)."""
    if len(blob) < 8:
        raise RpmDatabaseError(f"header of {len(blob)} bytes, shorter than its 8-byte intro")
    il, dl = struct.unpack_from(">II", blob)
    if il > _MAX_TAGS or dl > _MAX_DATA:
        raise RpmDatabaseError(f"header claims {il} tags and {dl} data bytes, out of range")
    if 8 + 16 * il + dl != len(blob):
        raise RpmDatabaseError(f"header of {len(blob)} bytes, but 8 + 16 * {il} tags + "
                               f"{dl} data bytes = {8 + 16 * il + dl}")
    entries: dict = {}
    index = memoryview(blob)[8:8 + 16 * il]
    for i, (tag, typ, offset, count) in enumerate(_INDEX.iter_unpack(index)):
        if not 1 <= typ <= 9 or offset > dl or count < 1:      # RpmType's range
            raise RpmDatabaseError(f"header entry {i} (tag {tag}): type {typ}, offset "
                                   f"{offset}, count {count} out of range")
        if tag in _READ_TAGS:       # only the tags read become records (headers have ~100)
            entries[tag] = _Entry(tag, RpmType(typ), offset, count)
    return _Header(blob, 8 + 16 * il, len(blob), entries)


def _strings(h: _Header, tag: RpmTag, errors: str) -> list | None:
    """The string values of ``tag`` (None when the header has no such entry)."""
    e = h.entries.get(tag)
    if e is None:
        return None
    if e.type not in _STRINGS or (e.type == RpmType.STRING and e.nvalues != 1) \
            or e.nvalues > _MAX_ARRAY:
        raise RpmDatabaseError(f"header tag {tag.name}: type {e.type.name}, count {e.nvalues}")
    parts = h.blob[h.start + e.offset:h.end].split(b"\0", e.nvalues)
    if len(parts) <= e.nvalues:         # fewer NULs than strings: the last runs past the data
        raise RpmDatabaseError(f"header tag {tag.name}: string runs past the data")
    return [v.decode("utf-8", errors) for v in parts[:e.nvalues]]


def _ints(h: _Header, tag: RpmTag) -> list | None:
    """The integer values of ``tag`` (CHAR and INT8 read as signed, as rpm's states are)."""
    e = h.entries.get(tag)
    if e is None:
        return None
    width = _WIDTH.get(e.type)
    if width is None or e.type == RpmType.BIN or e.nvalues > _MAX_ARRAY:
        raise RpmDatabaseError(f"header tag {tag.name}: type {e.type.name}, count {e.nvalues}")
    if e.offset % width or h.start + e.offset + width * e.nvalues > h.end:
        raise RpmDatabaseError(f"header tag {tag.name}: {e.nvalues} values at offset "
                               f"{e.offset} do not fit the data")
    code = {1: "b", 2: "H", 4: "I", 8: "Q"}[width]
    return list(struct.unpack_from(f">{e.nvalues}{code}", h.blob, h.start + e.offset))


def _one_string(h: _Header, tag: RpmTag) -> str | None:
    values = _strings(h, tag, "replace")
    return values[0] if values else None


def package_of(h: _Header) -> RpmPackage:
    """Name, version, release, epoch and arch of a header; name and version are required."""
    name, version = _one_string(h, RpmTag.NAME), _one_string(h, RpmTag.VERSION)
    if not name or version is None:
        raise RpmDatabaseError("header without a package name or version")
    epoch = _ints(h, RpmTag.EPOCH)
    return RpmPackage(name, version, _one_string(h, RpmTag.RELEASE) or "",
                      epoch[0] if epoch else None, _one_string(h, RpmTag.ARCH))


def files_of(h: _Header) -> _FileList:
    """The file list of a header, its arrays checked to agree in length and to point
    inside each other.  A header of rpm < 4 lists whole paths (OLDFILENAMES)."""
    basenames = _strings(h, RpmTag.BASENAMES, "surrogateescape")
    if basenames is None:
        old = _strings(h, RpmTag.OLDFILENAMES, "surrogateescape") or []
        split = [p.rpartition("/") for p in old]
        dirnames = sorted({d + "/" for d, _s, _b in split})
        where = {d: i for i, d in enumerate(dirnames)}
        basenames = [b for _d, _s, b in split]
        dirindexes = [where[d + "/"] for d, _s, _b in split]
    else:
        dirnames = _strings(h, RpmTag.DIRNAMES, "surrogateescape") or []
        dirindexes = _ints(h, RpmTag.DIRINDEXES) or []
    states = _ints(h, RpmTag.FILESTATES)
    if len(dirindexes) != len(basenames) or (states is not None and
                                             len(states) != len(basenames)):
        raise RpmDatabaseError(f"header arrays disagree: {len(basenames)} base names, "
                               f"{len(dirindexes)} directory indexes")
    if any(i >= len(dirnames) for i in dirindexes):
        raise RpmDatabaseError("header directory index past its directory names")
    return _FileList(basenames, dirindexes, dirnames, states)


def owns(files: _FileList, idx: int | None, path: str) -> bool:
    """Whether file number ``idx`` of a header (any of its files when ``idx`` is None)
    is ``path`` and was installed."""
    directory, _slash, base = path.rpartition("/")
    numbers = range(len(files.basenames)) if idx is None else (idx,)
    return any(0 <= i < len(files.basenames) and files.basenames[i] == base
               and files.dirnames[files.dirindexes[i]] == directory + "/"
               and (files.states is None or files.states[i] in _INSTALLED_STATES)
               for i in numbers)


# ------------------------------------------------------------------ the SQLite database

class RpmLookup(NamedTuple):
    """What a database said: the owner of each owned path, and the headers it had
    to skip as damaged (each a one-line reason)."""
    owners: dict
    damaged: list


def sqlite_owners(db_path: str, paths: Iterable[str]) -> RpmLookup:
    """The owners of ``paths`` by the SQLite rpm database ``db_path``.

    When several packages own a path (identical multilib files), the one with
    the lowest header number is named, the first that ``rpm -qf`` prints.  A
    damaged header is skipped, as rpm skips it, and listed in ``damaged``.
    Raises RpmDatabaseError for a database that cannot be read at all."""
    import sqlite3

    con = _connect(db_path)
    try:
        _check_schema(con, db_path)
        headers: dict = {}
        damaged: list = []
        owners: dict = {}
        for path in dict.fromkeys(paths):
            for hnum, idx in _index_hits(con, path.rpartition("/")[2]):
                h = _header_at(con, hnum, headers, damaged)
                if h is not None and owns(h[1], idx, path):
                    owners[path] = h[0]
                    break
        return RpmLookup(owners, damaged)
    except sqlite3.Error as e:
        raise RpmDatabaseError(f"{db_path}: cannot read the rpm database: {e}") from None
    finally:
        con.close()


def _connect(db_path: str) -> sqlite3.Connection:
    """A read-only connection to a regular file (a FIFO would block SQLite's open),
    with SQLite's work capped.  A database left in WAL mode whose ``-shm`` file
    cannot be written is opened as immutable (the last checkpoint is read)."""
    import sqlite3

    try:
        os.close(open_regular(db_path))
    except OSError as e:
        raise RpmDatabaseError(f"{db_path}: cannot open the rpm database: "
                               f"{e.strerror or e}") from None
    uri = "file:" + quote(os.path.abspath(db_path))
    error: Exception | None = None
    for mode in ("?mode=ro", "?mode=ro&immutable=1"):
        try:
            con = sqlite3.connect(uri + mode, uri=True)
        except sqlite3.Error as e:
            error = e
            continue
        con.set_progress_handler(_budget(), 1000)
        try:
            con.execute("PRAGMA trusted_schema = OFF")
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.Error as e:
            con.close()
            error = e
    raise RpmDatabaseError(f"{db_path}: not an rpm database: {error}")


def _budget() -> Callable[[], int]:
    """A progress handler that stops SQLite after :data:`_SQL_STEPS` calls."""
    calls = 0

    def handler() -> int:
        nonlocal calls
        calls += 1
        return calls > _SQL_STEPS
    return handler


def _check_schema(con: sqlite3.Connection, db_path: str) -> None:
    """``Packages`` (and ``Basenames``, when present) must be plain tables, not views."""
    kinds = dict(con.execute("SELECT name, type FROM sqlite_master "
                             "WHERE name IN ('Packages', 'Basenames')").fetchall())
    if kinds.get("Packages") != "table" or kinds.get("Basenames", "table") != "table":
        raise RpmDatabaseError(f"{db_path}: not an rpm database (no Packages table)")
    con.execute("SELECT hnum, blob FROM Packages LIMIT 0").fetchall()


def _index_hits(con: sqlite3.Connection, base: str) -> list:
    """(hnum, idx) of every header the Basenames index lists ``base`` in, lowest hnum
    first; every header, with idx None, when the database has no such index."""
    has_index = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'Basenames'").fetchone()[0]
    if not has_index:
        return [(hnum, None) for (hnum,) in
                con.execute("SELECT hnum FROM Packages ORDER BY hnum").fetchall()]
    rows = con.execute("SELECT hnum, idx FROM Basenames WHERE key = ? ORDER BY hnum, idx",
                       (base,)).fetchall()
    return [(h, i) for h, i in rows if isinstance(h, int) and isinstance(i, int)]


def _header_at(con: sqlite3.Connection, hnum: int, cache: dict, damaged: list) -> tuple | None:
    """(RpmPackage, _FileList) of header ``hnum``, read once; None when it is missing
    or damaged (then the reason joins ``damaged``)."""
    if hnum in cache:
        return cache[hnum]
    cache[hnum] = None
    row = con.execute("SELECT length(blob) FROM Packages WHERE hnum = ?", (hnum,)).fetchone()
    if row is None:
        return None
    if not isinstance(row[0], int) or row[0] >= _MAX_BLOB:
        damaged.append(f"header {hnum}: blob of {row[0]} bytes")
        return None
    (blob,) = con.execute("SELECT blob FROM Packages WHERE hnum = ?", (hnum,)).fetchone()
    try:
        if not isinstance(blob, bytes):
            raise RpmDatabaseError(f"a {type(blob).__name__}, not a blob")
        h = parse_header(blob)
        cache[hnum] = (package_of(h), files_of(h))
    except RpmDatabaseError as e:
        damaged.append(f"header {hnum}: {e}")
    return cache[hnum]


# ------------------------------------------------------------------ the BerkeleyDB database

def bdb_owners(db_path: str, paths: Iterable[str]) -> RpmLookup:
    """The owners of ``paths`` by the BerkeleyDB ``Packages`` hash file ``db_path``.

    Every header is read (rpm's Basenames index is a btree, not read here);
    the owner of a path is, as by :func:`sqlite_owners`, the installed file
    in the header with the lowest number.  Damaged buckets and headers are
    skipped and listed; a file that is no hash database raises RpmDatabaseError."""
    wanted: dict = {}
    for p in dict.fromkeys(paths):
        wanted.setdefault(p.rpartition("/")[2], []).append(p)
    # a header that lists a base name holds its bytes and NUL: most are skipped unparsed
    needles = [b.encode("utf-8", "surrogateescape") + b"\0" for b in wanted]
    owners: dict = {}
    damaged: list = []
    try:
        for hnum, blob, damage in _bdb_headers(db_path):
            if damage is not None or blob is None:
                damaged.append(damage)
                continue
            if any(n in blob for n in needles):
                _claim(hnum, blob, wanted, owners, damaged)
    except (BdbError, OSError) as e:
        raise RpmDatabaseError(f"{db_path}: cannot read the rpm database: {e}") from None
    return RpmLookup({p: pkg for p, (_h, pkg) in owners.items()}, damaged)


def _bdb_headers(db_path: str) -> Iterator[tuple]:
    """(hnum, blob, None) for each header of a Packages hash file, (0, None, reason) for
    what could not be read.  Key 0 holds rpm's next-header counter, not a header."""
    for rec in hash_records(db_path, _MAX_BLOB - 1):
        if rec.damage is not None or rec.value is None:
            yield 0, None, rec.damage or "unreadable record"
            continue
        if len(rec.key) != 4:
            yield 0, None, f"key of {len(rec.key)} bytes, not a header number"
            continue
        hnum = int.from_bytes(rec.key, rec.byteorder)
        if hnum:
            yield hnum, rec.value, None


def _claim(hnum: int, blob: bytes, wanted: dict, owners: dict, damaged: list) -> None:
    """Record header ``hnum`` as the owner of the wanted paths it installed, unless a
    header with a lower number already owns them."""
    try:
        h = parse_header(blob)
        names = _strings(h, RpmTag.BASENAMES, "surrogateescape")
        if names is not None and wanted.keys().isdisjoint(names):
            return
        files = files_of(h)
        pkg: RpmPackage | None = None
        for base in wanted.keys() & set(files.basenames):
            for path in wanted[base]:
                if (path not in owners or owners[path][0] > hnum) and owns(files, None, path):
                    pkg = pkg or package_of(h)
                    owners[path] = (hnum, pkg)
    except RpmDatabaseError as e:
        damaged.append(f"header {hnum}: {e}")
