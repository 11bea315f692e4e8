"""A result cache for batches (``fastelf audit --cache``): SQLite, standard library.

Two levels, both holding ELF *facts* (what the parser read), never verdicts:
the verdict is always recomputed by :func:`fastelf.audit.judge` from the facts,
so a new file name, new options or a policy change judge afresh.

* wheel level: the SHA-256 of the whole file -> the facts of all its ELF
  members.  A wheel seen before is hashed but not parsed again.
* member level: a hash of an ELF member's *compressed bytes* plus its
  method, sizes and CRC -> its facts.  Identical libraries across wheels
  (45% of PyPI's ``.so`` files) are parsed once.  RECORD is never used as a
  key: a crafted RECORD cannot borrow another file's clean facts.

Every key also holds the engine (fastelf's version, a hash of the compiled
core and of the policy data) and the Limits, so facts read by another parser
or under looser limits are never reused.  ``--verify-record`` bypasses the
wheel level (RECORD must be checked against the bytes each time).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import struct
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import __version__, _elf
from .audit import (
    AuditResult,
    ElfInfo,
    audit_path,
    elf_info,
    judge_wheel,
    platform_tags_of,
)
from .elfscan import _SKIP_SUFFIXES, ELF_MAGIC, extension_init_names, parse_member
from .errors import FastElfError
from .wheel import DEFAULT_LIMITS, Limits, Member, WheelReader

CACHE_FORMAT = 2        # 2: the wheel entry holds the check findings, keyed by name too
_CHUNK = 1 << 20


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/fastelf/cache.sqlite3`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastelf" / "cache.sqlite3"


@functools.lru_cache(maxsize=1)
def engine_id() -> str:
    """What the cached facts depend on besides the input: fastelf's version,
    the compiled core's bytes and the policy data."""
    h = hashlib.sha256(f"fastelf {__version__} cache {CACHE_FORMAT}\0".encode())
    for f in (_elf.__file__, os.path.join(os.path.dirname(__file__), "policies.json")):
        with open(f, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:32]


def _limits_id(limits: Limits) -> str:
    return hashlib.sha256(repr(asdict(limits)).encode()).hexdigest()[:16]


@dataclass
class CacheStats:
    """What one audit took from the cache; summed over a batch by the CLI."""

    wheel_hits: int = 0
    elf_hits: int = 0
    elfs_parsed: int = 0

    def add(self, other: CacheStats) -> None:
        self.wheel_hits += other.wheel_hits
        self.elf_hits += other.elf_hits
        self.elfs_parsed += other.elfs_parsed


# ------------------------------------------------------------------ facts as JSON

_FACT_FIELDS = tuple(f.name for f in fields(ElfInfo) if f.name != "path")


def facts_to_json(info: ElfInfo) -> str:
    """An ElfInfo without its member path (the same bytes may sit anywhere)."""
    return json.dumps({k: getattr(info, k) for k in _FACT_FIELDS}, separators=(",", ":"))


def facts_from_json(text: str, path: str) -> ElfInfo:
    d = json.loads(text)
    d["imports"] = [_elf.Import(i) for i in d["imports"]]     # the records parse() makes
    return ElfInfo(path=path, **d)


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

    def close(self) -> None:
        self.db.close()

    def _get(self, table: str, key: str) -> str | None:
        row = self.db.execute(f"SELECT facts FROM {table} WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _put(self, table: str, key: str, facts: str) -> None:
        self.db.execute(f"INSERT OR REPLACE INTO {table} (key, facts) VALUES (?, ?)",
                        (key, facts))

    def audit(self, path: str, limits: Limits = DEFAULT_LIMITS, **options: Any) -> AuditResult:
        """Like :func:`fastelf.audit.audit_path`, through the cache; the result's
        ``cache_stats`` says what was reused.  A wheel seen before is hashed,
        not opened: its verdict is judged from the stored facts."""
        wheel_key = None if options.get("verify_record") else self._wheel_key(path, limits)
        return self._audit(path, os.path.basename(path), wheel_key, limits, options)

    def audit_file(self, f: Any, name: str, key: str | None, limits: Limits = DEFAULT_LIMITS,
                   **options: Any) -> AuditResult:
        """The same for an open (remote) file named ``name`` whose identity the
        caller vouches for with ``key`` (URL, size, ETag), or None."""
        wheel_key = None
        if key is not None and not options.get("verify_record"):
            digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
            wheel_key = f"url:{digest}:{engine_id()}:{_limits_id(limits)}"
        return self._audit(f, name, wheel_key, limits, {**options, "filename": name})

    def _audit(self, source: Any, name: str, wheel_key: str | None, limits: Limits,
               options: dict) -> AuditResult:
        stats = CacheStats()
        cached = None if wheel_key is None else self._get("wheels", wheel_key)
        if cached is not None:
            stats.wheel_hits += 1
            where = source if isinstance(source, str) else str(getattr(source, "name", name))
            result = _judge_cached(where, name, json.loads(cached), options)
        else:
            session = WheelSession(self, stats)
            result = audit_path(source, limits=limits, elf_cache=session, **options)
            if wheel_key is not None and result.error is None:
                self._put("wheels", wheel_key, json.dumps(
                    {"elfs": session.wheel_facts,
                     "checks": [c.to_dict() for c in result.checks]}))
        result.cache_stats = stats
        return result

    def _wheel_key(self, path: str, limits: Limits) -> str | None:
        """The wheel-level key, or None when the file cannot be hashed (the
        audit then reports why, uncached)."""
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    h.update(chunk)
        except (OSError, TypeError):
            return None
        # the name too: the file name's tags and the check findings about the name and
        # metadata belong to it (a renamed copy still reuses every ELF member's facts)
        name = hashlib.sha256(os.path.basename(path).encode("utf-8", "surrogateescape"))
        return f"{h.hexdigest()}:{name.hexdigest()[:16]}:{engine_id()}:{_limits_id(limits)}"

    def member_key(self, reader: WheelReader, member: Member) -> str:
        """The member-level key: its compressed bytes and how to read them.  The
        exports asked of the parser depend on the member's module name, so the
        extension-module init names are part of the key too."""
        h = hashlib.sha256(reader.raw(member))
        h.update(struct.pack("<IQQI", member.method, member.compressed_size, member.size,
                             member.crc))
        h.update("\0".join(extension_init_names(member.name)).encode())
        return f"{h.hexdigest()}:{engine_id()}:{_limits_id(reader.limits)}"


class WheelSession:
    """The cache as one audit sees it (``audit_wheel(elf_cache=...)``)."""

    def __init__(self, cache: ResultCache, stats: CacheStats):
        self.cache, self.stats = cache, stats
        self.wheel_facts: list[dict[str, str]] = []

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
            self.cache._put("elfs", key, facts)
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


def cached_audit(path: str, cache_path: str, **options: Any) -> AuditResult:
    """Audit ``path`` through the cache at ``cache_path``."""
    return open_cache(cache_path).audit(path, **options)
