"""A census of many audits: the JSON lines of ``fastelf audit --json`` in, counts out.

One streaming pass: each line is parsed, reduced to a :class:`Row` (the few
fields every count is taken from) and added to the counters, then dropped.
Memory grows with the number of distinct values (tags, libraries,
projects), never with the number of lines, so a crawl of millions of wheels
aggregates in bounded memory.  The page shows counts; the rows behind them
go to JSON lines files beside it (``RowSink``), one compact row per wheel.

A line that is not a schema-2 audit result (not JSON, not an object, an
unknown ``version``) is not guessed at: it is counted as rejected, with its
file and line number, and left out of every other count.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import IO, Any, Callable, NamedTuple

from packaging.utils import canonicalize_name

from . import policy as pol
from .errors import FastElfError

try:                                    # 5-10x faster on audit lines; json is the fallback
    import orjson
    _loads: Callable[[bytes], Any] = orjson.loads
    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:                     # pragma: no cover - depends on the environment
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode()

SCHEMA_VERSION = 2
STATUSES = ("ok", "mislabeled", "skipped", "error")
MAX_REJECTS_KEPT = 20           # rejected lines named in the report; all are counted
_GLIBC_RE = re.compile(r"^GLIBC_(\d+(?:\.\d+){1,2})$")
_GRAFT_RE = re.compile(r"^[^/]+\.libs/([^/]+)$")       # <dist>.libs/<file>, as repair writes
_GRAFT_HASH_RE = re.compile(r"-[0-9a-f]{8}(?=\.so)")    # libz-1a2b3c4d.so.1 -> libz.so.1

# Why a claimed tag fails, by kind: the wording is audit.py's (PolicyCheck.reasons and
# _claim_failure); each pattern names one kind, a reason may hold several.
CLAIM_FAILURE_KINDS = (
    ("symbol version too recent", re.compile(r"symbol version \S+ is too recent")),
    ("external library", re.compile(r"needs external library ")),
    ("blacklisted symbols", re.compile(r"uses blacklisted symbols of ")),
    ("symbols the libc lacks", re.compile(r"uses symbols this libc version lacks")),
    ("x86-64 ISA level", re.compile(r"requires x86-64-v\d")),
    ("DT_RELR", re.compile(r"has DT_RELR relocations")),
    ("no ELF file for the tag", re.compile(r"contains no ELF file for this platform")),
    ("wrong architecture", re.compile(r"^the ELF files are \S+, not ")),
    ("wrong libc", re.compile(r"^the ELF files link against ")),
    ("tag older than every policy", re.compile(r"^older than every policy")),
    ("unknown policy version", re.compile(r"^no \w+ policy that fastelf knows")),
    ("Linux ELF under a non-Linux tag", re.compile(r"tag, but the wheel contains Linux ELF")),
    ("ELF files in purelib", re.compile(r"ELF files in purelib")),
    ("fpectl (PyFPE_jbuf)", re.compile(r"uses PyFPE_jbuf")),
    ("narrow-unicode Python", re.compile(r"narrow-unicode \(UCS2\)")),
)

# audit's wheel-wide ``problems`` lines, by kind; a problem record with a "kind" (or
# "check") field, as the check command may write, is counted under that field instead.
PROBLEM_KINDS = (
    ("invalid wheel file name", re.compile(r"^the file name is not a valid wheel name")),
    ("no ELF file names a libc", re.compile(r"^no ELF file names a libc")),
    ("ELF files in purelib", re.compile(r"^ELF files in purelib")),
    ("fpectl (PyFPE_jbuf)", re.compile(r"^uses PyFPE_jbuf")),
    ("narrow-unicode Python", re.compile(r"narrow-unicode \(UCS2\)")),
    ("DT_RELR needs a newer libc", re.compile(r"DT_RELR relocations: ")),
    ("symbols older systems lack", re.compile(r"imports symbols that older \S+ systems lack")),
    ("libc version no tag expresses", re.compile(r"which no platform tag can express")),
)


class InputLine(NamedTuple):
    """One line of input and where it came from (for rejects)."""

    source: str
    lineno: int
    data: bytes


class Reject(NamedTuple):
    """A line that is not a schema-2 audit result, and why."""

    source: str
    lineno: int
    reason: str


class Row(NamedTuple):
    """What the census keeps of one audit result: every count is taken from these fields.

    Written as one JSON object per wheel to the rows files, so the wheels
    behind any count can be selected again (``jq 'select(.best_tag == ...)'``).
    """

    wheel: str
    path: str
    project: str
    version: str
    status: str
    reason: str | None
    arch: str | None
    libc: str | None
    best_tag: str | None
    claimed: tuple[str, ...]
    unsatisfied: tuple[str, ...]
    claim_failures: tuple[str, ...]
    claim_state: str | None
    glibc_needed: str | None
    musl_needed: str | None
    external: tuple[str, ...]
    grafted: tuple[str, ...]
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        return dict(zip(self._fields, self))       # tuples serialize as JSON arrays


class ProjectSummary(NamedTuple):
    """One project's line in the per-project table."""

    project: str
    wheels: int
    ok: int
    mislabeled: int
    skipped: int
    error: int
    arches: tuple[str, ...]
    newest_glibc: str | None


@dataclass(frozen=True)
class CensusResult:
    """Every count of a census; ``to_dict()`` is its JSON form (and what tests check).

    Counters count wheels (each wheel once per key it has), except
    ``claims_by_tag`` which counts (wheel, claimed tag) pairs.
    """

    lines: int
    wheels: int
    rejected: int
    rejects: tuple[Reject, ...]
    status: dict[str, int]
    best_tags: dict[tuple[str, str], dict[str, int]]       # (arch, libc) -> best_tag -> n
    claims: dict[str, int]          # satisfied / claims more than it satisfies / ...
    claims_by_tag: dict[str, tuple[int, int]]             # tag -> (satisfied, unsatisfied)
    claim_failures: dict[str, int]
    glibc_needed: dict[str, int]
    musl_needed: dict[str, int]
    external: dict[str, int]
    grafted: dict[str, int]
    problems: dict[str, int]
    projects: tuple[ProjectSummary, ...]
    samples: dict[str, tuple[Row, ...]]       # status -> its first rows, for the tables

    def to_dict(self) -> dict:
        return {
            "lines": self.lines, "wheels": self.wheels, "rejected": self.rejected,
            "rejects": [r._asdict() for r in self.rejects], "status": self.status,
            "best_tags": {f"{a}/{lc}": tags for (a, lc), tags in self.best_tags.items()},
            "claims": self.claims,
            "claims_by_tag": {t: list(v) for t, v in self.claims_by_tag.items()},
            "claim_failures": self.claim_failures, "glibc_needed": self.glibc_needed,
            "musl_needed": self.musl_needed, "external": self.external,
            "grafted": self.grafted, "problems": self.problems,
            "projects": [p._asdict() for p in self.projects],
        }


# ------------------------------------------------------------------ input

def read_lines(paths: Iterable[str], stdin: IO[bytes] | None = None) -> Iterator[InputLine]:
    """Every non-blank line of every file (``-`` is standard input), in order.

    A file that cannot be opened is a FastElfError naming it: a census that
    silently lost one of its inputs would publish wrong numbers.
    """
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            yield from _lines_of("<stdin>", stream)
            continue
        try:
            f = open(path, "rb")        # noqa: SIM115 - closed below; the error is ours
        except OSError as e:
            raise FastElfError(f"{path}: cannot read: {e.strerror or e}") from None
        with f:
            yield from _lines_of(path, f)


def _lines_of(name: str, stream: IO[bytes]) -> Iterator[InputLine]:
    for lineno, data in enumerate(stream, 1):
        if data.strip():
            yield InputLine(name, lineno, data)


# ------------------------------------------------------------------ one record

def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _strs(v: object) -> tuple[str, ...]:
    if isinstance(v, dict):
        v = list(v)
    if not isinstance(v, list):
        return ()
    return tuple(x for x in v if isinstance(x, str))


def project_of(wheel: str) -> tuple[str, str]:
    """(canonical project name, version) from a wheel file name's first two fields."""
    parts = wheel.rsplit("/", 1)[-1].split("-")
    return _canonical(parts[0]), (parts[1] if len(parts) > 1 else "")


@functools.lru_cache(maxsize=65536)
def _canonical(name: str) -> str:
    return canonicalize_name(name)


@functools.lru_cache(maxsize=4096)
def kinds_of(text: str, table: tuple) -> tuple[str, ...]:
    """The kinds whose pattern ``text`` matches, or ``("other",)``."""
    found = tuple(kind for kind, rx in table if rx.search(text))
    return found or ("other",)


@functools.lru_cache(maxsize=4096)
def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def glibc_needed(versioned: object) -> str | None:
    """The newest ``GLIBC_x.y[.z]`` version the wheel's ELF files ask for, e.g. ``2.17``."""
    best: str | None = None
    if isinstance(versioned, dict):
        for names in versioned.values():
            for name in names if isinstance(names, list) else ():
                v = _glibc_version(name) if isinstance(name, str) else None
                if v and (best is None or _version_key(v) > _version_key(best)):
                    best = v
    return best


@functools.lru_cache(maxsize=4096)
def _glibc_version(name: str) -> str | None:
    m = _GLIBC_RE.match(name)
    return m.group(1) if m else None


@functools.lru_cache(maxsize=4096)
def tag_version(tag: str) -> tuple[str, tuple[int, int]] | None:
    """(family, (major, minor)) of a manylinux/musllinux tag (legacy aliases included)."""
    parsed = pol.parse_platform_tag(tag)
    if parsed is None or parsed[0] is None:
        return None
    family, major, minor = parsed[1].split("_")[:3]
    return family, (int(major), int(minor))


CLAIMS_MORE = "claims more than it satisfies"
CLAIMS_LESS = "satisfies an older tag than it claims"
CLAIMS_MET = "satisfies what it claims"


def claim_state(claimed: tuple[str, ...], unsatisfied: tuple[str, ...],
                best_tag: str | None) -> str | None:
    """How the claimed tags compare with the satisfied ones; None when nothing is claimed."""
    if not claimed:
        return None
    if unsatisfied:
        return CLAIMS_MORE
    return CLAIMS_LESS if claims_less(best_tag, claimed) else CLAIMS_MET


@functools.lru_cache(maxsize=4096)
def claims_less(best_tag: str | None, claimed: tuple[str, ...]) -> bool:
    """The best satisfied tag is older than every claimed one of its family: the wheel
    could have been tagged for more systems."""
    best = tag_version(best_tag) if best_tag else None
    if best is None:
        return False
    same = [v for v in map(tag_version, claimed) if v is not None and v[0] == best[0]]
    return bool(same) and all(best[1] < v[1] for v in same)


def _problem_kinds(problems: object) -> tuple[str, ...]:
    kinds: list[str] = []
    for p in problems if isinstance(problems, list) else ():
        if isinstance(p, dict):
            k = _str(p.get("kind")) or _str(p.get("check"))
            kinds.extend([k] if k else ["other"])
        elif isinstance(p, str):
            kinds.extend(kinds_of(p, PROBLEM_KINDS))
    return tuple(dict.fromkeys(kinds))


def _grafted(elfs: object) -> tuple[str, ...]:
    names = []
    for e in elfs if isinstance(elfs, list) else ():
        m = _GRAFT_RE.match(_str(e.get("path")) or "") if isinstance(e, dict) else None
        if m:
            names.append(_GRAFT_HASH_RE.sub("", m.group(1)))
    return tuple(dict.fromkeys(names))


def row_of(rec: dict) -> Row:
    """The census row of one audit result (already checked to be a schema-2 object)."""
    wheel = _str(rec.get("wheel")) or ""
    project, version = project_of(wheel)
    status = rec["status"]
    live = status in ("ok", "mislabeled")      # audited: the counts below apply
    unsat = rec.get("unsatisfied_claims")
    unsat = unsat if isinstance(unsat, dict) and live else {}
    failures = dict.fromkeys(k for why in unsat.values() if isinstance(why, str)
                             for k in kinds_of(why, CLAIM_FAILURE_KINDS))
    if status == "mislabeled" and not unsat:
        failures = {"RECORD mismatch": None}
    libc = _str(rec.get("libc")) if live else None
    best = _str(rec.get("best_tag")) if live else None
    claimed = _strs(rec.get("claimed_tags")) if live else ()
    elf = live and not rec.get("pure")
    musl = tag_version(best) if best and libc == "musl" and elf else None
    return Row(
        wheel=wheel, path=_str(rec.get("path")) or wheel, project=project, version=version,
        status=status, reason=_str(rec.get("reason")),
        arch=_str(rec.get("arch")) if live else None, libc=libc, best_tag=best,
        claimed=claimed, unsatisfied=_strs(unsat), claim_failures=tuple(failures),
        claim_state=claim_state(claimed, _strs(unsat), best),
        glibc_needed=glibc_needed(rec.get("versioned_symbols"))
        if elf and libc == "glibc" else None,
        musl_needed=f"{musl[1][0]}.{musl[1][1]}" if musl else None,
        external=_strs(rec.get("external_libraries")) if elf else (),
        grafted=_grafted(rec.get("elfs")),
        problems=_problem_kinds(_list(rec.get("problems")) + _list(rec.get("checks"))))


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def parse_line(line: InputLine) -> Row | Reject:
    """A Row, or a Reject saying why the line is not a schema-2 audit result."""
    try:
        rec = _loads(line.data)
    except ValueError as e:
        return Reject(line.source, line.lineno, f"not JSON ({str(e).splitlines()[0][:80]})")
    if not isinstance(rec, dict):
        return Reject(line.source, line.lineno, "not a JSON object")
    if rec.get("version") != SCHEMA_VERSION:
        return Reject(line.source, line.lineno,
                      f"not an audit result of schema version {SCHEMA_VERSION}")
    if rec.get("status") not in STATUSES or not isinstance(rec.get("wheel"), str):
        return Reject(line.source, line.lineno, "no valid status or wheel field")
    return row_of(rec)


# ------------------------------------------------------------------ aggregation

class RowSink:
    """Where the rows behind the counts go: one JSON lines stream per status and one for all.

    ``streams`` maps "wheels" and each status to a binary file (or is empty
    to write nothing).  Rows are written as they come, never held.
    """

    def __init__(self, streams: Mapping[str, IO[bytes]]):
        self.streams = streams

    def write(self, row: Row) -> None:
        if not self.streams:
            return
        data = _dumps(row.to_dict()) + b"\n"
        self.streams["wheels"].write(data)
        per_status = self.streams.get(row.status)
        if per_status is not None:
            per_status.write(data)


@dataclass
class _Project:
    statuses: Counter = field(default_factory=Counter)
    arches: set = field(default_factory=set)
    newest_glibc: str | None = None


@dataclass
class Census:
    """The running counters; ``add`` each Row, then ``result()``."""

    lines: int = 0
    rejected: int = 0
    rejects: list = field(default_factory=list)
    status: Counter = field(default_factory=Counter)
    best_tags: dict = field(default_factory=dict)
    claims: Counter = field(default_factory=Counter)
    claims_by_tag: dict = field(default_factory=dict)
    claim_failures: Counter = field(default_factory=Counter)
    glibc_needed: Counter = field(default_factory=Counter)
    musl_needed: Counter = field(default_factory=Counter)
    external: Counter = field(default_factory=Counter)
    grafted: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    projects: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)    # status -> the first keep_rows rows
    keep_rows: int = 1000

    def reject(self, r: Reject) -> None:
        self.lines += 1
        self.rejected += 1
        if len(self.rejects) < MAX_REJECTS_KEPT:
            self.rejects.append(r)

    def add(self, row: Row) -> None:
        self.lines += 1
        self.status[row.status] += 1
        self._add_project(row)
        if row.problems:                # Counter.update is slow on empty input
            self.problems.update(row.problems)
        if row.grafted:
            self.grafted.update(row.grafted)
        if len(self.samples.setdefault(row.status, [])) < self.keep_rows:
            self.samples[row.status].append(row)
        if row.arch and row.best_tag:
            group = self.best_tags.setdefault((row.arch, row.libc or "none"), Counter())
            group[row.best_tag] += 1
        self._add_claims(row)
        if row.glibc_needed:
            self.glibc_needed[row.glibc_needed] += 1
        if row.musl_needed:
            self.musl_needed[row.musl_needed] += 1
        if row.external:
            self.external.update(row.external)

    def _add_claims(self, row: Row) -> None:
        if row.claim_state is None:
            return
        self.claims[row.claim_state] += 1
        if row.claim_failures:
            self.claim_failures.update(row.claim_failures)
        bad = set(row.unsatisfied)
        for tag in row.claimed:
            counts = self.claims_by_tag.setdefault(tag, [0, 0])
            counts[tag in bad] += 1

    def _add_project(self, row: Row) -> None:
        p = self.projects.get(row.project)
        if p is None:
            p = self.projects[row.project] = _Project()
        p.statuses[row.status] += 1
        if row.arch:
            p.arches.add(row.arch)
        g = row.glibc_needed
        if g and (p.newest_glibc is None or _version_key(g) > _version_key(p.newest_glibc)):
            p.newest_glibc = g

    def result(self) -> CensusResult:
        return CensusResult(
            lines=self.lines, wheels=self.lines - self.rejected, rejected=self.rejected,
            rejects=tuple(self.rejects), status={s: self.status[s] for s in STATUSES},
            best_tags={k: _by_tag_order(v) for k, v in sorted(self.best_tags.items())},
            claims=dict(self.claims.most_common()),
            claims_by_tag={t: (v[0], v[1]) for t, v in sorted(
                self.claims_by_tag.items(), key=lambda kv: (-sum(kv[1]), kv[0]))},
            claim_failures=dict(self.claim_failures.most_common()),
            glibc_needed=_by_version(self.glibc_needed),
            musl_needed=_by_version(self.musl_needed),
            external=dict(self.external.most_common()), grafted=dict(self.grafted.most_common()),
            problems=dict(self.problems.most_common()),
            projects=tuple(sorted((_summary(n, p) for n, p in self.projects.items()),
                                  key=lambda s: (-s.wheels, s.project))),
            samples={s: tuple(self.samples.get(s, ())) for s in STATUSES})


def _summary(name: str, p: _Project) -> ProjectSummary:
    s = p.statuses
    return ProjectSummary(name, sum(s.values()), s["ok"], s["mislabeled"], s["skipped"],
                          s["error"], tuple(sorted(p.arches)), p.newest_glibc)


def _by_version(c: Counter) -> dict[str, int]:
    return {v: c[v] for v in sorted(c, key=_version_key)}


def _by_tag_order(c: Counter) -> dict[str, int]:
    def key(tag: str) -> tuple:
        v = tag_version(tag)
        return (0, v[0], v[1]) if v else (1, tag, (0, 0))
    return {t: c[t] for t in sorted(c, key=key)}


def _count(census: Census, lines: Iterable[InputLine], sink: RowSink | None) -> Census:
    for line in lines:
        item = parse_line(line)
        if isinstance(item, Reject):
            census.reject(item)
            continue
        census.add(item)
        if sink is not None:
            sink.write(item)
    return census


def aggregate(lines: Iterable[InputLine], sink: RowSink | None = None,
              keep_rows: int = 1000) -> CensusResult:
    """The census of ``lines`` in one pass; each row also goes to ``sink``.

    ``keep_rows``: how many rows of each status are kept for the page's tables.
    """
    return _count(Census(keep_rows=keep_rows), lines, sink).result()


# ------------------------------------------------------------------ in parallel

class Chunk(NamedTuple):
    """A byte range of one input file that starts at a line start and ends after a newline
    (or at the end of the file); ``first_line`` is filled in from the earlier chunks."""

    path: str
    start: int
    end: int


def chunks_of(path: str, parts: int) -> list[Chunk]:
    """``path`` cut into up to ``parts`` ranges at line boundaries."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(cuts[-1], size * k // parts))
            f.readline()                        # to the start of the next line
            if f.tell() < size and f.tell() > cuts[-1]:
                cuts.append(f.tell())
    cuts.append(size)
    return [Chunk(path, a, b) for a, b in zip(cuts, cuts[1:])]


def _chunk_lines(chunk: Chunk, counted: list[int]) -> Iterator[InputLine]:
    """The lines of a chunk, numbered from 1 within it; ``counted[0]`` ends as their count."""
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        pos = chunk.start
        for lineno, data in enumerate(f, 1):
            if pos >= chunk.end:
                break
            pos += len(data)
            counted[0] = lineno
            if data.strip():
                yield InputLine(chunk.path, lineno, data)


def count_chunk(chunk: Chunk, row_paths: dict[str, str], keep_rows: int) -> tuple[Census, int]:
    """One worker's census of one chunk, its rows written to ``row_paths`` (key -> file),
    and the number of lines the chunk holds (to renumber rejects)."""
    counted = [0]
    with ExitStack() as stack:
        streams = {k: stack.enter_context(open(p, "wb", buffering=1 << 20))
                   for k, p in row_paths.items()}
        census = _count(Census(keep_rows=keep_rows), _chunk_lines(chunk, counted),
                        RowSink(streams))
    return census, counted[0]


def merge(into: Census, other: Census, line_offset: int) -> None:
    """Add ``other`` (the census of later lines) to ``into``; its rejects are renumbered."""
    into.lines += other.lines
    into.rejected += other.rejected
    room = MAX_REJECTS_KEPT - len(into.rejects)
    into.rejects += [r._replace(lineno=r.lineno + line_offset) for r in other.rejects[:room]]
    for name in ("status", "claims", "claim_failures", "glibc_needed", "musl_needed",
                 "external", "grafted", "problems"):
        getattr(into, name).update(getattr(other, name))
    for key, tags in other.best_tags.items():
        into.best_tags.setdefault(key, Counter()).update(tags)
    for tag, (sat, unsat) in other.claims_by_tag.items():
        counts = into.claims_by_tag.setdefault(tag, [0, 0])
        counts[0] += sat
        counts[1] += unsat
    for status, rows in other.samples.items():
        mine = into.samples.setdefault(status, [])
        mine += rows[:max(0, into.keep_rows - len(mine))]
    for name, p in other.projects.items():
        _merge_project(into.projects.setdefault(name, _Project()), p)


def _merge_project(into: _Project, p: _Project) -> None:
    into.statuses.update(p.statuses)
    into.arches |= p.arches
    g = p.newest_glibc
    if g and (into.newest_glibc is None or _version_key(g) > _version_key(into.newest_glibc)):
        into.newest_glibc = g


def aggregate_files(paths: list[str], jobs: int, row_paths: dict[str, str],
                    keep_rows: int = 1000) -> CensusResult:
    """The census of files in ``jobs`` processes, each counting a chunk of lines.

    The result is the one :func:`aggregate` gives on the same lines: counts
    add up, rows files and table rows keep the input order (each chunk writes
    part files, joined in order), rejects keep their file line numbers.
    """
    chunks = [c for p in paths for c in chunks_of(p, jobs)]
    parts = [{k: f"{v}.part{i}" for k, v in row_paths.items()} for i in range(len(chunks))]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(count_chunk, chunks, parts, [keep_rows] * len(chunks)))
    total = Census(keep_rows=keep_rows)
    offset, previous = 0, None
    for chunk, (census, nlines) in zip(chunks, done):
        offset = offset if chunk.path == previous else 0
        merge(total, census, offset)
        offset, previous = offset + nlines, chunk.path
    for k, final in row_paths.items():
        _join([part[k] for part in parts], final)
    return total.result()


def _join(parts: list[str], final: str) -> None:
    with open(final, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            os.unlink(p)
