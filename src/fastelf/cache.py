"""A result cache for batches (``fastelf audit --cache``): SQLite, standard library.

Four tables, from the cheapest question to the most expensive:

* files: a file's identity and version as ``stat`` gives them (device,
  inode, size, mtime, ctime; git's index trusts the same) -> the SHA-256 of
  its bytes.  A file whose stat is unchanged is not read to be hashed.
  ctime cannot be set by users: rewriting a file in place (even with its
  mtime put back by ``os.utime``), or replacing it, changes it.  Two
  changes inside one tick of the file system's clock can share a ctime
  ("racy git"), so a file changed less than :data:`RACY_NS` before it was
  hashed is not remembered: it is hashed again next time.
* results: the SHA-256, the path as given, the engine, the limits and the
  options -> the finished result (its status and its JSON lines, full and
  compact, exactly as the uncached audit encodes them).  A hit neither reads
  the wheel nor judges it (:class:`CachedResult`).
* wheels: the SHA-256 and the file name -> the facts of all its ELF members
  and the check findings.  A copy of a wheel under another path, or the same
  wheel audited with other options, is judged afresh from these facts.
* elfs: a hash of an ELF member's *compressed bytes* plus its method, sizes
  and CRC -> its facts.  Identical libraries across wheels (45% of PyPI's
  ``.so`` files) are parsed once; the verdict is always recomputed.  RECORD
  is never used as a key: a crafted RECORD cannot borrow another file's
  clean facts.

Every key also holds the engine (fastelf's version, the cache format, a hash
of the compiled core and of the policy data) and the Limits, so facts or
results made by another parser, other policies or under looser limits are
never reused.  ``--verify-record`` bypasses the files, results and wheels
tables (RECORD must be checked against the bytes each time).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import stat
import struct
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, NamedTuple

from . import __version__, _elf
from .audit import (
    AuditResult,
    ElfInfo,
    Status,
    audit_path,
    elf_info,
    judge_wheel,
    platform_tags_of,
)
from .elfscan import _SKIP_SUFFIXES, ELF_MAGIC, extension_init_names, parse_member
from .errors import FastElfError
from .wheel import DEFAULT_LIMITS, Limits, Member, WheelReader

CACHE_FORMAT = 3        # 3: files (stat -> SHA-256) and results (finished JSON lines) tables
_CHUNK = 1 << 20
RACY_NS = 2_000_000_000
"""A file whose mtime or ctime is less than this (2 s) before the moment it was
hashed is not remembered in the files table: a change within the same tick of a
coarse file-system clock could keep every stat field.  2 s covers the coarsest
local clocks (FAT's 2 s mtime); a network file system whose server clock runs
more than this behind ours is not covered (use ``--cache-verify`` there)."""
_DATA_FILES = ("policies.json", "abi3.json")     # what the verdicts and findings are judged by


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/fastelf/cache.sqlite3`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastelf" / "cache.sqlite3"


def _engine_files() -> tuple[str, ...]:
    """The files whose bytes the facts and verdicts depend on: the compiled core
    and the policy data."""
    here = os.path.dirname(__file__)
    return (str(_elf.__file__), *(os.path.join(here, d) for d in _DATA_FILES))


@functools.lru_cache(maxsize=1)
def engine_id() -> str:
    """What the cached facts and results depend on besides the input: fastelf's
    version, the cache format and the bytes of :func:`_engine_files`."""
    h = hashlib.sha256(f"fastelf {__version__} cache {CACHE_FORMAT}\0".encode())
    for f in _engine_files():
        with open(f, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:32]


def _limits_id(limits: Limits) -> str:
    return hashlib.sha256(repr(asdict(limits)).encode()).hexdigest()[:16]


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass
class CacheStats:
    """What one audit took from the cache; summed over a batch by the CLI.

    ``wheel_hits``: wheels whose result or facts came from the cache.
    ``wheels_hashed``: files read to be hashed (0 when their stat was trusted).
    """

    wheel_hits: int = 0
    elf_hits: int = 0
    elfs_parsed: int = 0
    wheels_hashed: int = 0

    def add(self, other: CacheStats) -> None:
        self.wheel_hits += other.wheel_hits
        self.elf_hits += other.elf_hits
        self.elfs_parsed += other.elfs_parsed
        self.wheels_hashed += other.wheels_hashed


# ------------------------------------------------------------------ facts as JSON

_FACT_FIELDS = tuple(f.name for f in fields(ElfInfo) if f.name != "path")


def facts_to_json(info: ElfInfo) -> str:
    """An ElfInfo without its member path (the same bytes may sit anywhere)."""
    return json.dumps({k: getattr(info, k) for k in _FACT_FIELDS}, separators=(",", ":"))


def facts_from_json(text: str, path: str) -> ElfInfo:
    d = json.loads(text)
    d["imports"] = [_elf.Import(i) for i in d["imports"]]     # the records parse() makes
    return ElfInfo(path=path, **d)


# ------------------------------------------------------------------ file identity

class FileStamp(NamedTuple):
    """What ``stat`` says of one version of one file (git's index keeps the same)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @property
    def file_key(self) -> str:
        """The files table's key: which file (text: an inode may not fit SQLite's int64)."""
        return f"{self.dev}:{self.ino}"

    @property
    def version(self) -> str:
        """The files table's check: which version of that file."""
        return f"{self.size}:{self.mtime_ns}:{self.ctime_ns}"

    def settled(self, now_ns: int) -> bool:
        """Changed long enough ago that a later change must show in the stamp."""
        return now_ns - max(self.mtime_ns, self.ctime_ns) >= RACY_NS


class FileDigest(NamedTuple):
    """A file's SHA-256 and the stamp of the version it is the hash of."""

    sha256: str
    stamp: FileStamp
    stable: bool = True     # False: the file changed while it was read


class StoredResult(NamedTuple):
    """A row of the results table: what a finished audit printed."""

    status: str
    line: str           # json.dumps(result.to_dict())
    compact: str        # json.dumps(result.to_dict(detail=False))


class _Rebuild(NamedTuple):
    """How a :class:`CachedResult` builds its full AuditResult when one is asked
    for (picklable: a batch worker hands results to its parent)."""

    cache_path: str
    facts_key: str
    path: str
    limits: Limits
    options: dict


# ------------------------------------------------------------------ finished results

_EAGER_FIELDS = ("wheel", "path", "pure", "arch", "libc", "best_tag", "tags", "claimed_tags",
                 "unsatisfied_claims", "skip_reason", "error", "record", "cache_stats",
                 "bytes_fetched")


class CachedResult(AuditResult):
    """A result from the results table.  Its JSON lines are the stored ones
    (``to_json`` returns them as they are, so a warm run prints what the cold
    one did, byte for byte); its status, reason, tags and best tag come from
    the compact line.  Any other field (ELF facts, policies, findings, ...)
    builds the full result from the wheels table's facts on first use: a
    batch printing JSON or one line per wheel never needs it."""

    def __new__(cls, *args: Any, **changed: Any) -> Any:
        """``CachedResult(**fields)``, which ``dataclasses.replace`` calls (e.g.
        ``report.escaped``), makes a plain AuditResult: a changed copy is no longer
        the stored result."""
        if changed:
            return AuditResult(**changed)
        return super().__new__(cls)

    def __init__(self, stored: StoredResult, rebuild: _Rebuild, stats: CacheStats):
        # no AuditResult.__init__: the fields not set here are _LazyField descriptors
        compact = json.loads(stored.compact)
        status = Status(stored.status)
        self._stored, self._rebuild = stored, rebuild
        self._status, self._reason = status, compact["reason"]
        self.wheel, self.path = compact["wheel"], compact["path"]
        self.pure, self.arch, self.libc = compact["pure"], compact["arch"], compact["libc"]
        self.best_tag, self.tags = compact["best_tag"], compact["tags"]
        self.claimed_tags = compact["claimed_tags"]
        self.unsatisfied_claims = compact["unsatisfied_claims"]
        self.skip_reason = compact["reason"] if status is Status.SKIPPED else None
        self.error = self.record = self.bytes_fetched = None    # such results are not stored
        self.cache_stats = stats

    @property
    def status(self) -> Status:
        return self._status

    @property
    def reason(self) -> str | None:
        return self._reason

    def to_dict(self, detail: bool = True) -> dict:
        return json.loads(self.to_json(detail))

    def to_json(self, detail: bool = True) -> str:
        return self._stored.line if detail else self._stored.compact

    def full(self) -> None:
        """Build every field (judged from the stored facts) into this object."""
        full = _rebuild_result(self._rebuild)
        for f in fields(AuditResult):
            if f.name not in _EAGER_FIELDS:
                self.__dict__[f.name] = getattr(full, f.name)


class _LazyField:
    """A CachedResult field that exists once :meth:`CachedResult.full` has run
    (a non-data descriptor: the instance's own value wins from then on)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj: CachedResult | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        obj.full()
        return obj.__dict__[self.name]


for _f in fields(AuditResult):
    if _f.name not in _EAGER_FIELDS:
        setattr(CachedResult, _f.name, _LazyField(_f.name))


def _rebuild_result(how: _Rebuild) -> AuditResult:
    """The full result of a cached one: judged from its wheel's stored facts,
    or (facts gone) audited again."""
    entry = open_cache(how.cache_path)._get("wheels", how.facts_key)
    if entry is None:
        return audit_path(how.path, limits=how.limits, **how.options)
    return _judge_cached(how.path, os.path.basename(how.path), json.loads(entry), how.options)


# ------------------------------------------------------------------ the store

class ResultCache:
    """One SQLite file; safe to share between processes (WAL, busy timeout)."""

    def __init__(self, path: os.PathLike[str] | str | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS wheels (key TEXT PRIMARY KEY, facts TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS elfs (key TEXT PRIMARY KEY, facts TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, "
                        "version TEXT, sha256 TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, "
                        "status TEXT, line TEXT, compact TEXT)")

    def close(self) -> None:
        self.db.close()

    def _get(self, table: str, key: str) -> str | None:
        row = self.db.execute(f"SELECT facts FROM {table} WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _put(self, table: str, key: str, facts: str) -> None:
        self.db.execute(f"INSERT OR REPLACE INTO {table} (key, facts) VALUES (?, ?)",
                        (key, facts))

    # -------------------------------------------------------------- local files

    def audit(self, path: str, limits: Limits = DEFAULT_LIMITS, *, cache_verify: bool = False,
              **options: Any) -> AuditResult:
        """Like :func:`fastelf.audit.audit_path`, through the cache; the result's
        ``cache_stats`` says what was reused.  A wheel seen before under the same
        path and options is neither read nor judged (a :class:`CachedResult`);
        its SHA-256 is not even computed when its stat is unchanged, unless
        ``cache_verify`` (the CLI's ``--cache-verify``) asks to hash every file."""
        path = os.fspath(path)
        if options.get("verify_record"):
            return self._audit(path, os.path.basename(path), None, limits, options)
        stats = CacheStats()
        digest = self._digest(path, stats, trust_stat=not cache_verify)
        if digest is None or not digest.stable:     # unreadable (the audit says why), or
            return self._audit(path, os.path.basename(path), None, limits, options, stats)
        result_key = self._result_key(digest.sha256, path, limits, options)   # changing
        stored = self._stored_result(result_key)
        facts_key = self._facts_key(digest.sha256, path, limits)
        if stored is not None:
            stats.wheel_hits += 1
            rebuild = _Rebuild(os.path.abspath(self.path), facts_key, path, limits, options)
            return CachedResult(stored, rebuild, stats)
        still = functools.partial(_unchanged, path, digest.stamp)
        result = self._audit(path, os.path.basename(path), facts_key, limits, options, stats,
                             still)
        if result.error is None and still():
            self._store_result(result_key, result)
        return result

    def _digest(self, path: str, stats: CacheStats, trust_stat: bool) -> FileDigest | None:
        """The file's SHA-256: remembered for its stamp, or read (and remembered
        when the file is settled and did not change while it was read)."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):     # a FIFO would block the read: the audit says no
            return None
        stamp = FileStamp.of(st)
        if trust_stat:
            row = self.db.execute("SELECT version, sha256 FROM files WHERE key = ?",
                                  (stamp.file_key,)).fetchone()
            if row is not None and row[0] == stamp.version:
                return FileDigest(row[1], stamp)
        digest = _hash_file(path)
        if digest is None:
            return None
        stats.wheels_hashed += 1
        if digest.stable and digest.stamp.settled(time.time_ns()):
            self.db.execute("INSERT OR REPLACE INTO files (key, version, sha256) "
                            "VALUES (?, ?, ?)",
                            (digest.stamp.file_key, digest.stamp.version, digest.sha256))
        return digest

    def _result_key(self, sha256: str, path: str, limits: Limits, options: dict) -> str:
        """The bytes, the path as given (it is in the output), the engine, the
        limits and every option the verdict or the output depends on."""
        opts = repr(sorted(options.items()))
        return (f"{sha256}:{_text_id(path)}:{engine_id()}:{_limits_id(limits)}:"
                f"{_text_id(opts)}")

    def _facts_key(self, sha256: str, path: str, limits: Limits) -> str:
        # the name too: the file name's tags and the check findings about the name and
        # metadata belong to it (a renamed copy still reuses every ELF member's facts)
        name = hashlib.sha256(os.path.basename(path).encode("utf-8", "surrogateescape"))
        return f"{sha256}:{name.hexdigest()[:16]}:{engine_id()}:{_limits_id(limits)}"

    def _stored_result(self, key: str) -> StoredResult | None:
        row = self.db.execute("SELECT status, line, compact FROM results WHERE key = ?",
                              (key,)).fetchone()
        return None if row is None else StoredResult(*row)

    def _store_result(self, key: str, result: AuditResult) -> None:
        self.db.execute("INSERT OR REPLACE INTO results (key, status, line, compact) "
                        "VALUES (?, ?, ?, ?)",
                        (key, result.status.value, result.to_json(), result.to_json(False)))

    # -------------------------------------------------------------- remote files

    def audit_file(self, f: Any, name: str, key: str | None, limits: Limits = DEFAULT_LIMITS,
                   **options: Any) -> AuditResult:
        """The same for an open (remote) file named ``name`` whose identity the
        caller vouches for with ``key`` (URL, size, ETag), or None.  Only the
        wheels and elfs tables serve remote files (the verdict is judged)."""
        wheel_key = None
        if key is not None and not options.get("verify_record"):
            digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
            wheel_key = f"url:{digest}:{engine_id()}:{_limits_id(limits)}"
        return self._audit(f, name, wheel_key, limits, {**options, "filename": name})

    # -------------------------------------------------------------- facts

    def _audit(self, source: Any, name: str, wheel_key: str | None, limits: Limits,
               options: dict, stats: CacheStats | None = None,
               still: Callable[[], bool] = lambda: True) -> AuditResult:
        """The audit judged from the wheels table's facts, or from the ELF members'
        (from the elfs table or the parser); what was parsed is stored in one
        transaction at the end, the wheel's entry only if ``still()`` says the
        file is still the one whose hash is in ``wheel_key``."""
        stats = CacheStats() if stats is None else stats
        cached = None if wheel_key is None else self._get("wheels", wheel_key)
        if cached is not None:
            stats.wheel_hits += 1
            where = source if isinstance(source, str) else str(getattr(source, "name", name))
            result = _judge_cached(where, name, json.loads(cached), options)
        else:
            session = WheelSession(self, stats)
            result = audit_path(source, limits=limits, elf_cache=session, **options)
            entry = None
            if wheel_key is not None and result.error is None and still():
                entry = json.dumps({"elfs": session.wheel_facts,
                                    "checks": [c.to_dict() for c in result.checks]})
            self._store_facts(session.new_facts, wheel_key, entry)
        result.cache_stats = stats
        return result

    def _store_facts(self, elfs: list[tuple[str, str]], wheel_key: str | None,
                     entry: str | None) -> None:
        if not elfs and entry is None:
            return
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO elfs (key, facts) VALUES (?, ?)", elfs)
            if wheel_key is not None and entry is not None:
                self._put("wheels", wheel_key, entry)

    def _transaction(self) -> Any:
        """``with``: one write transaction (the connection is in autocommit mode)."""
        return _Transaction(self.db)

    def member_key(self, reader: WheelReader, member: Member) -> str:
        """The member-level key: its compressed bytes and how to read them.  The
        exports asked of the parser depend on the member's module name, so the
        extension-module init names are part of the key too."""
        h = hashlib.sha256(reader.raw(member))
        h.update(struct.pack("<IQQI", member.method, member.compressed_size, member.size,
                             member.crc))
        h.update("\0".join(extension_init_names(member.name)).encode())
        return f"{h.hexdigest()}:{engine_id()}:{_limits_id(reader.limits)}"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, _value: Any, _tb: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _hash_file(path: str) -> FileDigest | None:
    """The SHA-256 of a regular file and the stamp of the version read (taken
    from the open file, before and after: a file that changed while it was read
    gets a stamp no later stat can match)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            if not stat.S_ISREG(before.st_mode):
                return None
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
            after = FileStamp.of(os.fstat(fh.fileno()))
    except (OSError, TypeError, ValueError):
        return None
    stamp = FileStamp.of(before)
    return FileDigest(h.hexdigest(), stamp, stable=after == stamp)


def _unchanged(path: str, stamp: FileStamp) -> bool:
    """Whether ``path`` is still the version ``stamp`` describes (the audit read
    the path again, after hashing it)."""
    try:
        return FileStamp.of(os.stat(path)) == stamp
    except (OSError, ValueError):
        return False


class WheelSession:
    """The cache as one audit sees it (``audit_wheel(elf_cache=...)``)."""

    def __init__(self, cache: ResultCache, stats: CacheStats):
        self.cache, self.stats = cache, stats
        self.wheel_facts: list[dict[str, str]] = []
        self.new_facts: list[tuple[str, str]] = []     # (member key, facts) to store

    def elf_infos(self, reader: WheelReader) -> list[ElfInfo]:
        """The ElfInfo of every ELF member, from the cache or the parser."""
        out = []
        for m in reader.members:
            info = self._member_info(reader, m) if _may_be_elf(m) else None
            if info is not None:
                out.append(info)
        return out

    def _member_info(self, reader: WheelReader, m: Member) -> ElfInfo | None:
        stream = reader.stream(m)
        if stream.peek(4) != ELF_MAGIC:
            return None
        key = self.cache.member_key(reader, m)
        facts = self.cache._get("elfs", key)
        info = None
        if facts is not None:
            self.stats.elf_hits += 1
        else:
            self.stats.elfs_parsed += 1
            info = elf_info(m.name, parse_member(stream, extension_init_names(m.name)))
            facts = facts_to_json(info)
            self.new_facts.append((key, facts))
        self.wheel_facts.append({"path": m.name, "facts": facts})
        return facts_from_json(facts, m.name) if info is None else info


def _judge_cached(path: str, name: str, entry: dict, options: dict) -> AuditResult:
    """The verdict on stored facts, as audit_path gives it (errors as results)."""
    from .check import Finding, Kind
    infos = [facts_from_json(f["facts"], f["path"]) for f in entry["elfs"]]
    try:
        result = judge_wheel(infos, name, path,
                             exclude=options.get("exclude", ()),
                             disable_isa_ext_check=options.get("disable_isa_ext_check", False))
        result.checks = [Finding(Kind(c["kind"]), c["file"], c["reason"])
                         for c in entry["checks"]]
        return result
    except FastElfError as e:
        return AuditResult(wheel=name, path=path, error=str(e),
                           claimed_tags=platform_tags_of(name))


def _may_be_elf(m: Member) -> bool:
    """The members the scan looks at (``elfscan.iter_elf_members`` skips the same)."""
    return not (m.is_dir or m.size < 16 or m.name.endswith(_SKIP_SUFFIXES))


# ------------------------------------------------------------------ per process

_OPEN: dict[tuple, ResultCache] = {}


def check_cache(cache_path: str) -> str | None:
    """Why the cache at ``cache_path`` cannot be used (not a database, not
    writable), or None: asked once before a batch, not once per wheel."""
    try:
        ResultCache(cache_path).close()
    except (sqlite3.Error, OSError) as e:
        return f"cannot use the cache {cache_path}: {e}"
    return None


def open_cache(cache_path: str) -> ResultCache:
    """The cache at ``cache_path``: one connection per process and thread (SQLite
    connections must not cross a fork or, by default, a thread; a batch worker
    or Dask worker thread keeps its own)."""
    key = (os.getpid(), threading.get_ident(), cache_path)
    cache = _OPEN.get(key)
    if cache is None:
        cache = _OPEN[key] = ResultCache(cache_path)
    return cache


def cached_audit(path: str, cache_path: str, *, cache_verify: bool = False,
                 **options: Any) -> AuditResult:
    """Audit ``path`` through the cache at ``cache_path``."""
    return open_cache(cache_path).audit(path, cache_verify=cache_verify, **options)
