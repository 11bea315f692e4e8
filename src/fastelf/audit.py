"""Audit one wheel: which platform tags do its ELF files allow, and why not others.

Everything is decided from the wheel's own bytes: the architecture and the
libc (glibc or musl) come from its ELF files, never from the host, and no
host library is opened.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    NamedTuple,
    Optional,
    Union,
    cast,
)

from . import policy as pol
from ._elf import STB_WEAK, STT_FUNC, STT_NOTYPE
from .errors import FastElfError, WheelError

# ElfInfo, elf_info, install_path, read_elf_infos, wheel_dir_of (inwheel) and
# platform_tags_of (wheelname) are re-exported ("X as X"): cache, check, repair
# and callers import them from here
from .inwheel import ElfInfo as ElfInfo
from .inwheel import Resolver
from .inwheel import elf_info as elf_info
from .inwheel import install_path as install_path
from .inwheel import read_elf_infos as read_elf_infos
from .inwheel import wheel_dir_of as wheel_dir_of
from .record import RecordReport
from .record import verify_record as verify_record_of
from .wheel import DEFAULT_LIMITS, Limits, WheelReader
from .wheelname import BAD_WHEEL_NAME
from .wheelname import platform_tags_of as platform_tags_of

if TYPE_CHECKING:
    from .cache import CacheStats, WheelSession

# what a wheel is read from: a path, its bytes, or a binary file object
WheelSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
SCHEMA_VERSION = 2      # 2: "status", "reason", "unchecked_claims"; "ok" is false when skipped
_PYFPE = frozenset(("PyFPE_jbuf", "PyFPE_dummy", "PyFPE_counter"))


class Status(str, Enum):
    """The outcome of auditing one wheel; the JSON ``status`` field is its value.

    OK: every platform tag the file name claims is satisfied.
    MISLABELED: some claimed tag is not (or RECORD does not match its members).
    SKIPPED: not a Linux wheel (no Linux tag, no Linux ELF file): nothing to audit,
    which is neither a pass nor a failure, so it is never counted as ok.
    ERROR: the wheel could not be read or judged.
    """

    OK = "ok"
    MISLABELED = "mislabeled"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass
class PolicyCheck:
    """One policy's verdict and, when it fails, every reason."""

    tag: str
    aliases: tuple[str, ...]
    satisfied: bool
    external_libraries: dict[str, list[str]] = field(default_factory=dict)   # soname -> members
    # version -> {member: [symbols]}
    symbol_versions: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # soname -> {member: [symbols]}
    blacklisted_symbols: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unavailable_symbols: dict[str, list[str]] = field(default_factory=dict)  # member -> symbols
    isa: dict[str, int] = field(default_factory=dict)                 # member -> level
    dt_relr: dict[str, str] = field(default_factory=dict)   # member -> why its DT_RELR fails

    def fails_beyond_libraries(self) -> bool:
        """Fails for a reason that grafting libraries cannot remove."""
        return bool(self.symbol_versions or self.blacklisted_symbols
                    or self.unavailable_symbols or self.isa or self.dt_relr)

    def reasons(self, limit: int | None = None) -> list[str]:
        """One line per reason; ``limit`` caps the members and symbols named in each."""
        def names(items: Iterable[str]) -> str:
            items = list(items)
            if limit is None or len(items) <= limit:
                return ", ".join(items)
            return ", ".join(items[:limit]) + f" and {len(items) - limit} more"

        def by_member(who: dict[str, list[str]]) -> str:
            parts = [f"{m}: {names(s) if s else '(no symbol named)'}" for m, s in who.items()]
            if limit is not None and len(parts) > limit:
                parts = parts[:limit] + [f"{len(parts) - limit} more files"]
            return "; ".join(parts)

        out: list[str] = []
        for lib, members in sorted(self.external_libraries.items()):
            out.append(f"needs external library {lib} (by {names(members)})")
        for ver, who in sorted(self.symbol_versions.items()):
            out.append(f"symbol version {ver} is too recent ({by_member(who)})")
        for lib, who in sorted(self.blacklisted_symbols.items()):
            out.append(f"uses blacklisted symbols of {lib} ({by_member(who)})")
        for m, syms in sorted(self.unavailable_symbols.items()):
            out.append(f"{m} uses symbols this libc version lacks: {names(syms)}")
        for m, level in sorted(self.isa.items()):
            out.append(f"{m} requires x86-64-v{level}")
        for m, why in sorted(self.dt_relr.items()):
            out.append(f"{m} has DT_RELR relocations: {why}")
        return out

    def to_dict(self) -> dict:
        return {"tag": self.tag, "aliases": list(self.aliases), "satisfied": self.satisfied,
                "external_libraries": self.external_libraries,
                "symbol_versions": self.symbol_versions,
                "blacklisted_symbols": self.blacklisted_symbols,
                "unavailable_symbols": self.unavailable_symbols, "isa": self.isa,
                "dt_relr": self.dt_relr}


@dataclass
class AuditResult:
    """The verdict on one wheel.  ``to_dict()`` gives the JSON form.

    ``tags`` lists the satisfied policies' tags (best first) as a report;
    it is not the set of tags the wheel satisfies (``manylinux_2_30_x86_64``
    is not a policy, yet a wheel meeting manylinux_2_28 satisfies it): ask
    :meth:`satisfies` and :meth:`installable_on` for that.
    """

    wheel: str
    path: str
    pure: bool = False          # no ELF file for a Linux architecture fastelf knows
    arch: str | None = None
    libc: str | None = None
    best_tag: str | None = None
    tags: list[str] = field(default_factory=list)     # satisfied policies' tags, best first
    claimed_tags: list[str] = field(default_factory=list)
    unsatisfied_claims: dict[str, str] = field(default_factory=dict)   # tag -> reason
    unchecked_claims: dict[str, str] = field(default_factory=dict)  # non-Linux tag -> why
    skip_reason: str | None = None     # set when the wheel is not a Linux wheel at all
    elfs: list[ElfInfo] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)     # member -> reason
    policies: list[PolicyCheck] = field(default_factory=list)
    versioned_symbols: dict[str, list[str]] = field(default_factory=dict)  # library -> versions
    external_libraries: dict[str, list[str]] = field(default_factory=dict)  # soname -> members
    problems: list[str] = field(default_factory=list)   # wheel-wide remarks and violations
    blocking: list[str] = field(default_factory=list)   # the violations that no tag allows
    error: str | None = None
    record: RecordReport | None = None      # when RECORD was verified
    checks: list = field(default_factory=list)       # check.Finding: what `fastelf check`
    #   adds (exec stack, abi3, zip layout, WHEEL/dist-info, soname, rpath); not in status
    cache_stats: CacheStats | None = field(default=None, compare=False)   # with --cache
    bytes_fetched: int | None = None    # a remote wheel: bytes that came over the network

    @property
    def status(self) -> Status:
        """ERROR before MISLABELED before SKIPPED: a broken RECORD fails even a skipped wheel."""
        if self.error is not None:
            return Status.ERROR
        if self.unsatisfied_claims or (self.record is not None and not self.record.ok):
            return Status.MISLABELED
        if self.skip_reason is not None:
            return Status.SKIPPED
        return Status.OK

    @property
    def ok(self) -> bool:
        """Audited and good: every claimed Linux tag satisfied, RECORD (if checked) holds.

        False for a skipped (non-Linux) wheel: nothing was checked.
        """
        return self.status is Status.OK

    @property
    def reason(self) -> str | None:
        """One line saying why the status is not OK; None when it is."""
        status = self.status
        if status is Status.ERROR:
            return self.error
        if status is Status.SKIPPED:
            return self.skip_reason
        if status is Status.MISLABELED:
            if self.unsatisfied_claims:
                return "; ".join(f"{t}: {why}" for t, why in self.unsatisfied_claims.items())
            if self.record is not None:     # (see status: the RECORD failed)
                return "RECORD: " + "; ".join(self.record.problems(limit=3))
        return None

    def satisfies(self, tag: str) -> bool:
        """Whether the wheel's contents meet platform tag ``tag`` (which need not be claimed).

        ``any``: the wheel has no Linux ELF file.  ``linux_<arch>``: its ELF files
        are for that arch.  ``manylinux_X_Y_<arch>`` (and the manylinux1/2010/2014
        aliases): glibc ELF files of that arch, and a satisfied manylinux policy
        no newer than X.Y (PEP 600: the tag promises glibc >= X.Y, and a newer
        glibc keeps every older symbol version).  ``musllinux_X_Y_<arch>``: the
        same with musl, within one major version (PEP 656 promises nothing
        across musl majors).  A tag older than every policy fastelf knows, any
        other arch or libc, and every non-Linux tag give False.  A claimed tag
        ends up in ``unsatisfied_claims`` exactly when this is False (non-Linux
        tags aside, see ``unchecked_claims``).
        """
        if self.error is not None:
            return False
        if tag == "any":
            return self.pure
        parsed = pol.parse_platform_tag(tag)
        if parsed is None or self.pure or parsed[2] != self.arch:
            return False
        libc, name, arch = parsed
        if libc is None:
            return True                          # linux_<arch> promises nothing more
        if libc != self.libc:
            return False
        family, want = _policy_version(f"{name}_{arch}")
        return any(_version_covers(libc, want, have)
                   for fam, have in self._satisfied_versions() if fam == family)

    def installable_on(self, libc: str, version: tuple[int, int], arch: str) -> bool:
        """Would an installer on a Linux system with ``libc`` ("glibc" or "musl") at
        ``version`` (e.g. (2, 28)) on ``arch`` accept this wheel for a tag it satisfies?

        That is the question behind every manylinux/musllinux tag: the system
        accepts manylinux_X_Y (glibc) or musllinux_X_Y (musl) tags up to its
        own version (PEP 600/656, as packaging.tags enumerates them), so the
        answer is whether one of those is among the tags :meth:`satisfies`
        accepts.  ``linux_<arch>`` is left out: every installer of the arch
        accepts it, so it would make the answer always yes for a wheel that
        cannot load there.  A pure wheel (tag ``any``) is accepted everywhere;
        a skipped or unreadable wheel nowhere.
        """
        if self.error is not None or self.skip_reason is not None:
            return False
        if self.pure:
            return True
        if libc != self.libc or arch != self.arch:
            return False
        system = (int(version[0]), int(version[1]))
        return any(_version_covers(libc, system, have) for _f, have in self._satisfied_versions())

    def _satisfied_versions(self) -> list:
        """(family, (major, minor)) of every satisfied policy."""
        return [_policy_version(c.tag) for c in self.policies if c.satisfied]

    def to_dict(self, detail: bool = True) -> dict:
        """The JSON form (``fastelf/result.schema.json``).  ``detail=False`` gives the
        compact form a crawler stores per wheel: the verdict and why, without the
        per-ELF facts, the per-policy reasons and the RECORD report (the same keys
        with the same meaning; the others are left out, never emptied)."""
        d = {"version": SCHEMA_VERSION, "wheel": self.wheel, "path": self.path,
             "status": self.status.value, "reason": self.reason,
             "ok": self.ok, "pure": self.pure}
        if self.bytes_fetched is not None:
            d["bytes_fetched"] = self.bytes_fetched
        if self.error is not None:
            d["error"] = self.error
            return d
        d.update({
            "arch": self.arch, "libc": self.libc, "best_tag": self.best_tag,
            "tags": self.tags, "claimed_tags": self.claimed_tags,
            "unsatisfied_claims": self.unsatisfied_claims,
            "unchecked_claims": self.unchecked_claims,
            "external_libraries": self.external_libraries,
            "problems": self.problems,
            "checks": [c.to_dict() for c in self.checks],    # `fastelf check` findings
        })
        if not detail:
            return d
        d.update({
            "versioned_symbols": self.versioned_symbols, "ignored": self.ignored,
            "elfs": [e.to_dict() for e in self.elfs],
            "policies": [p.to_dict() for p in self.policies],
        })
        if self.record is not None:
            d["record"] = self.record.to_dict()
        return d

    def to_json(self, detail: bool = True) -> str:
        """``to_dict(detail)`` as one JSON line (what ``fastelf audit --json`` prints;
        a result from the cache returns the line it stored)."""
        return json.dumps(self.to_dict(detail=detail))


# ------------------------------------------------------------------ audit

def judge(infos: list[ElfInfo], wheel: str, path: str = "", *, exclude: Iterable[str] = (),
          disable_isa_ext_check: bool = False) -> AuditResult:
    """The verdict on a set of ELF members (``wheel`` is the file name, for its tags).

    ``exclude``: glob patterns of sonames to leave out of the analysis, as
    if every policy allowed them (auditwheel's ``--exclude``).
    """
    result = AuditResult(wheel=wheel, path=path, claimed_tags=platform_tags_of(wheel))
    if wheel.endswith(".whl") and not result.claimed_tags:
        result.problems.append("the file name is not a valid wheel name (PEP 427), "
                               "so no platform tag was checked")
    _judge(result, infos, disable_isa_ext_check, tuple(exclude))
    return result


def _display_path(source: WheelSource, filename: str | None = None) -> str:
    """A short name for ``source`` in results and errors: its path, the file object's
    name, ``filename``, or ``<bytes>`` -- never the repr of the data itself."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(os.fspath(source))
    name = getattr(source, "name", None)
    if isinstance(name, (str, bytes)) and not isinstance(source, (bytes, bytearray)):
        return os.fsdecode(name)
    return filename or "<bytes>"


def audit_wheel(source: WheelSource, *, limits: Limits = DEFAULT_LIMITS,
                filename: str | None = None, exclude: Iterable[str] = (),
                disable_isa_ext_check: bool = False, verify_record: bool = False,
                elf_cache: WheelSession | None = None) -> AuditResult:
    """Audit a wheel given as a path, bytes, or binary file object.

    Raises WheelError for an unreadable wheel (including a file object whose
    reads fail, e.g. an ``http.client.IncompleteRead``: only fastelf's own
    exceptions leave this function); returns an AuditResult otherwise.
    ``filename``: the wheel's file name, whose tags are checked, when ``source``
    is not a path.  A name that is not a valid wheel file name (PEP 427, as
    pip parses it) is refused: its tags cannot be checked.
    ``verify_record``: also hash every member against RECORD (see
    :mod:`fastelf.record`); what does not match is in ``result.record``.
    ``elf_cache``: see :func:`read_elf_infos` (used by :mod:`fastelf.cache`).
    """
    path = _display_path(source, filename)
    name = filename or os.path.basename(path)
    try:
        with WheelReader(source, limits, name=path) as reader:
            infos = read_elf_infos(reader, elf_cache)
            record = verify_record_of(reader) if verify_record else None
            checks = _check_findings(source, reader, infos, name)
    except (FastElfError, MemoryError):
        raise
    except Exception as e:      # I/O of a caller's file object: OSError, IncompleteRead, ...
        raise WheelError(path, f"cannot read: {type(e).__name__}: {e}") from None
    result = judge_wheel(infos, name, path, exclude=exclude,       # after reading: a broken
                         disable_isa_ext_check=disable_isa_ext_check)  # zip says so first
    result.record = record
    result.checks = checks
    return result


def _check_findings(source: WheelSource, reader: WheelReader, infos: list[ElfInfo],
                    name: str) -> list:
    """What ``fastelf check`` adds to the result; check builds on audit, so import late."""
    from .check import audit_findings
    return audit_findings(source, reader, infos, name)


def judge_wheel(infos: list[ElfInfo], name: str, path: str, *, exclude: Iterable[str] = (),
                disable_isa_ext_check: bool = False) -> AuditResult:
    """:func:`judge`, for a wheel whose file ``name`` must be a valid wheel name
    (PEP 427, as pip parses it; WheelError otherwise): its tags are checked."""
    if name != "<bytes>" and not platform_tags_of(name):
        raise WheelError(path, BAD_WHEEL_NAME)
    return judge(infos, name, path, exclude=exclude, disable_isa_ext_check=disable_isa_ext_check)


def audit_path(path: WheelSource, **kw: Any) -> AuditResult:
    """Like audit_wheel, but a broken wheel gives a result with ``error`` set."""
    try:
        return audit_wheel(path, **kw)
    except (FastElfError, MemoryError) as e:  # one wheel too big must not stop a batch
        where = _display_path(path, kw.get("filename"))
        error = str(e) if isinstance(e, FastElfError) else (
            f"{where}: out of memory while reading the wheel (Limits.untrusted() bounds it)")
        return AuditResult(wheel=os.path.basename(where), path=where, error=error,
                           claimed_tags=platform_tags_of(kw.get("filename") or where))


def _glibc_refuses_relr(info: ElfInfo) -> bool:
    """glibc >= 2.36 refuses this DT_RELR object (elf/dl-version.c, "DT_RELR without
    GLIBC_ABI_DT_RELR dependency"): it has version needs, a NEEDED libc.so.*, and
    none of its needs is GLIBC_ABI_DT_RELR.  Older glibc ignores DT_RELR instead.
    """
    return (info.relr and bool(info.version_needs)
            and any(lib.startswith("libc.so.") for lib in info.needed)
            and not any(pol.GLIBC_DT_RELR_VERSION in v for v in info.version_needs.values()))


def _relr_failure(info: ElfInfo, p: pol.Policy) -> str | None:
    """Why the loaders of ``p`` cannot run ``info``'s DT_RELR relocations, or None.

    A loader that predates DT_RELR skips it and leaves pointers unrelocated (musl
    1.1.24-1.2.3 crash at once).  An ELF that has the GLIBC_ABI_DT_RELR version
    need is not judged here: the symbol-version check already ties it to the
    policies that allow that version.
    """
    if not info.relr:
        return None
    if p.libc == pol.GLIBC and _glibc_refuses_relr(info):
        return ("glibc >= 2.36 refuses it without the GLIBC_ABI_DT_RELR version need "
                "and older glibc does not apply it")
    if p.dt_relr_since is not None:
        return None
    if p.libc == pol.GLIBC and any(pol.GLIBC_DT_RELR_VERSION in v
                                   for v in info.version_needs.values()):
        return None
    return f"the {p.name} loaders do not apply them"


def _names(items: list, limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit
                                       else "")


def _release_notes(best: pol.Policy, elfs: list, symbol_since: dict) -> list:
    """Remarks for what needs a newer libc release than ``best``'s tag names.

    A tag names major.minor only (musllinux_1_2 admits musl 1.2.0 and later), so an
    object that needs musl 1.2.4 for DT_RELR, or a symbol first exported by 1.2.3,
    has no exact tag: it gets the closest one and this note.
    """
    floor = _release_key(best.libc_version)
    notes = []
    relr = [i.path for i in elfs if i.relr]
    if relr and best.dt_relr_since and _release_key(best.dt_relr_since) > floor:
        notes.append(f"{_names(relr)} {'has' if len(relr) == 1 else 'have'} DT_RELR "
                     f"relocations: {best.libc} >= {best.dt_relr_since} is needed (older "
                     "loaders do not apply them and crash)")
    newer = {n: r for n, r in symbol_since.items() if _release_key(r) > floor}
    if newer:
        need = max(newer.values(), key=_release_key)
        newest_first = sorted(sorted(newer.items()), key=lambda nr: _release_key(nr[1]),
                              reverse=True)
        named = _names([f"{n} ({best.libc} {r})" for n, r in newest_first], 6)
        notes.append(f"the wheel imports symbols that older {best.name} systems lack: "
                     f"{named}; {best.libc} >= {need} is needed")
    return [f"{n}, which no platform tag can express; {best.name} is the closest"
            for n in notes]


# ------------------------------------------------------------------ judging, in stages
#
# _judge runs the stages in order and is the only one that writes the result:
# claims -> the ELF files of the wheel's arch (_classify) -> their libc
# (_choose_libc) -> wheel-wide facts (_wheel_facts: unresolved libraries,
# blocking problems, symbol versions) -> one PolicyCheck per policy
# (_evaluate) -> the best tag, the satisfied tags and the release notes (_pick).

Claim = Optional[tuple[Optional[str], str, str]]     # pol.parse_platform_tag of a claimed tag


class _Classified(NamedTuple):
    """The wheel's architecture, its ELF files of that arch, and the others with why."""

    arch: str | None
    elfs: list[ElfInfo]
    ignored: dict[str, str]


class _LibcChoice(NamedTuple):
    """The libc the ELF files link against, or why there is none to choose."""

    libc: str
    error: str | None           # the ELF files mix glibc and musl: no verdict
    note: str | None            # a remark for result.problems


class _SymbolUse(NamedTuple):
    """Symbol versions the ELF files need from system libraries (loaders aside)."""

    versioned: dict[str, list[str]]                   # library -> versions, sorted
    users: list[tuple[str, dict[str, list[str]]]]     # (version, {member: [symbols]}), sorted


class _ElfSymbols(NamedTuple):
    """One ELF file's needs as sets, built once and intersected with every policy's lists."""

    info: ElfInfo
    needed: frozenset[str]          # its DT_NEEDED names
    strong: frozenset[str]          # the symbols it imports, weak ones aside


class _WheelFacts(NamedTuple):
    """What every policy is judged against: the same for all of them."""

    elfs: list[_ElfSymbols]
    unresolved: dict[str, set[str]]     # soname no member provides -> members needing it
    blocking: list[str]                 # violations that no policy allows
    symbols: _SymbolUse
    isa: dict[str, int]                 # member -> x86-64 ISA level >= 2 (empty if not checked)


class _Evaluation(NamedTuple):
    """Every policy's check, and the first release of each symbol some policy lacks."""

    checks: list[PolicyCheck]
    symbol_since: dict[str, str]


def _claimed_arch(claims: list[Claim]) -> str | None:
    """The arch of the first Linux tag the file name claims."""
    return next((c[2] for c in claims if c), None)


def _claimed_libc(claims: list[Claim]) -> str | None:
    """The libc of the first manylinux/musllinux tag the file name claims."""
    return next((c[0] for c in claims if c and c[0]), None)


def _classify(infos: list[ElfInfo], claimed_arch: str | None) -> _Classified:
    """The wheel's arch: the claimed one if some ELF has it, else the first ELF's.

    ELF files of another (or an unknown) arch are ignored, with the reason:
    a wheel is installed for one arch, so they are never loaded.
    """
    arches = [i.arch for i in infos if i.arch]
    arch = claimed_arch if claimed_arch in arches else (arches[0] if arches else None)
    ignored: dict[str, str] = {}
    for i in infos:
        if i.arch is None:
            ignored[i.path] = "unknown or unsupported architecture"
        elif i.arch != arch:
            ignored[i.path] = f"{i.arch} ELF in a {arch} wheel"
    elfs = [i for i in infos if i.arch == arch and arch is not None]
    return _Classified(arch, elfs, ignored)


def _choose_libc(elfs: list[ElfInfo], claimed_libc: str | None) -> _LibcChoice:
    """The libc the ELF files name; else the claimed one; else glibc, with a note.

    Mixing glibc and musl is an error: no system loads both.
    """
    libcs = {i.libc for i in elfs if i.libc}
    if len(libcs) > 1:
        return _LibcChoice(pol.GLIBC, "wheel mixes glibc and musl ELF files: " + ", ".join(
            f"{i.path} ({i.libc})" for i in elfs if i.libc), None)
    libc = next(iter(libcs)) if libcs else (claimed_libc or pol.GLIBC)
    note = None
    if not libcs and claimed_libc is None and elfs:
        note = "no ELF file names a libc; assuming glibc"
    return _LibcChoice(libc, None, note)


def _unresolved_libraries(elfs: list[ElfInfo], wheel: str,
                          exclude: tuple[str, ...]) -> dict[str, set[str]]:
    """The DT_NEEDED names no member of the wheel provides, as ld.so would search:
    soname -> the members needing it.  Loaders and ``exclude`` globs are left out.

    The walk starts at the roots (extensions, and ELFs no other ELF needs), so a
    library reached only through an RPATH is resolved as its loader sees it.
    """
    resolver = Resolver({install_path(i.path): i for i in elfs}, wheel)
    needed_names = {lib for i in elfs for lib in i.needed}
    roots = [i for i in elfs if i.extension or posixpath.basename(i.path) not in needed_names]
    unresolved: dict[str, set[str]] = {}
    seen_edges: set[tuple[str, str]] = set()

    def visit(info: ElfInfo, lib: str, found: ElfInfo | None) -> None:
        if found is None and not pol.is_loader(lib) and (info.path, lib) not in seen_edges \
                and not any(fnmatch.fnmatchcase(lib, pat) for pat in exclude):
            seen_edges.add((info.path, lib))
            unresolved.setdefault(lib, set()).add(info.path)

    for r in roots or elfs:
        resolver.walk(r, visit)
    return unresolved


def _uses_fpectl(info: ElfInfo) -> bool:
    """Does ``info`` import the fpectl symbols (PyFPE_jbuf, ...) that stock Pythons lack?"""
    return any(n in _PYFPE and t in (STT_FUNC, STT_NOTYPE) for n, _v, _l, _b, t in info.imports)


def _uses_ucs2(info: ElfInfo) -> bool:
    """Does ``info`` call the narrow-unicode API (PyUnicodeUCS2_*) of old 2-byte Pythons?"""
    return any("PyUnicodeUCS2_" in n and t == STT_FUNC for n, _v, _l, _b, t in info.imports)


def _blocking_problems(elfs: list[ElfInfo]) -> list[str]:
    """Wheel-wide problems that rule out every policy (auditwheel's checks too)."""
    blocking = []
    purelib = [i.path for i in elfs if re.search(r"\.data/purelib/", i.path)]
    if purelib:
        blocking.append("ELF files in purelib: " + ", ".join(purelib))
    fpe = [i.path for i in elfs if i.extension and _uses_fpectl(i)]
    if fpe:
        blocking.append("uses PyFPE_jbuf (fpectl builds): " + ", ".join(fpe))
    ucs2 = [i.path for i in elfs if i.extension and _uses_ucs2(i)]
    if ucs2:
        blocking.append("compiled against a narrow-unicode (UCS2) Python: " + ", ".join(ucs2))
    return blocking


def _symbol_use(elfs: list[ElfInfo]) -> _SymbolUse:
    """Versioned symbols from system libraries, and who uses each version."""
    versioned: dict[str, set[str]] = {}             # library -> versions needed
    users: dict[str, dict[str, list[str]]] = {}     # version -> {member: [symbols]}
    for i in elfs:
        for lib, vers in i.version_needs.items():
            if pol.is_loader(lib):
                continue
            versioned.setdefault(lib, set()).update(vers)
            for v in vers:
                users.setdefault(v, {}).setdefault(i.path, [])
        for n, version, source, _b, _t in i.imports:
            if version is not None and source is not None and not pol.is_loader(source):
                users[version].setdefault(i.path, []).append(n)
    return _SymbolUse(
        {k: sorted(v) for k, v in sorted(versioned.items())},
        [(v, {m: sorted(set(s)) for m, s in sorted(who.items())})
         for v, who in sorted(users.items())])


def _wheel_facts(elfs: list[ElfInfo], wheel: str, exclude: tuple[str, ...],
                 disable_isa: bool) -> _WheelFacts:
    """Everything about the ELF files that does not depend on the policy."""
    unresolved = _unresolved_libraries(elfs, wheel, exclude)
    isa: dict[str, int] = {} if disable_isa else {
        i.path: i.isa_level for i in elfs if i.isa_level is not None and i.isa_level >= 2}
    symbols = [_ElfSymbols(i, frozenset(i.needed),
                           frozenset(n for n, _v, _l, b, _t in i.imports if b != STB_WEAK))
               for i in elfs]
    return _WheelFacts(symbols, unresolved, _blocking_problems(elfs), _symbol_use(elfs), isa)


def _blacklisted(p: pol.Policy, elf: _ElfSymbols) -> dict[str, list[str]]:
    """library -> the strong symbols ``elf`` imports that ``p`` blacklists in it."""
    out = {}
    for lib in p.blacklist.keys() & elf.needed:
        bad = sorted(elf.strong & p.blacklist[lib])
        if bad:
            out[lib] = bad
    return out


def _lacking(p: pol.Policy, elf: _ElfSymbols) -> list[str]:
    """The strong symbols ``elf`` imports that ``p``'s oldest libc does not export."""
    unavailable = p.unavailable_symbols
    if not unavailable:
        return []
    return sorted(n for n in elf.strong if n in unavailable)


def _check_policy(p: pol.Policy, facts: _WheelFacts) -> PolicyCheck:
    """One policy's verdict on the wheel, with every reason it fails."""
    check = PolicyCheck(tag=p.tag, aliases=p.alias_tags, satisfied=False)
    check.external_libraries = {lib: sorted(who) for lib, who in sorted(facts.unresolved.items())
                                if lib not in p.libraries}
    for v, who in facts.symbols.users:
        if p.version_allowed(v) is False:
            check.symbol_versions[v] = who     # shared between policies, not copied
    for elf in facts.elfs:
        path = elf.info.path
        for lib, bad in _blacklisted(p, elf).items():
            check.blacklisted_symbols.setdefault(lib, {})[path] = bad
        lacking = _lacking(p, elf)
        if lacking:
            check.unavailable_symbols[path] = lacking
        why = _relr_failure(elf.info, p)
        if why:
            check.dt_relr[path] = why
    check.isa = dict(facts.isa)
    check.satisfied = not (facts.blocking or check.external_libraries
                           or check.fails_beyond_libraries())
    return check


def _evaluate(policies: Sequence[pol.Policy], facts: _WheelFacts) -> _Evaluation:
    """Every policy's check, most compatible first, and the release that first
    exported each imported symbol some policy lacks (for the release notes)."""
    checks = []
    symbol_since: dict[str, str] = {}
    for p in policies:
        check = _check_policy(p, facts)
        for syms in check.unavailable_symbols.values():
            symbol_since.update((n, p.unavailable_symbols[n]) for n in syms)
        checks.append(check)
    return _Evaluation(checks, symbol_since)


class _Pick(NamedTuple):
    """The verdict drawn from the checks: the best tag, every satisfied tag, the notes."""

    best_tag: str
    tags: list[str]             # satisfied policies' tags with their aliases, best first
    notes: list[str]            # what needs a newer libc release than the best tag names


def _pick(policies: Sequence[pol.Policy], evaluation: _Evaluation, elfs: list[ElfInfo],
          arch: str) -> _Pick:
    """The most compatible satisfied policy (``linux_<arch>`` if none), and the
    release notes judged against it (against the newest policy if none)."""
    checks = evaluation.checks
    notes: list[str] = []
    if policies:
        best = next((p for p, c in zip(policies, checks) if c.satisfied), policies[-1])
        notes = _release_notes(best, elfs, evaluation.symbol_since)
    satisfied = [c for c in checks if c.satisfied]
    return _Pick(satisfied[0].tag if satisfied else f"linux_{arch}",
                 [t for c in satisfied for t in (c.tag, *c.aliases)], notes)


def _judge(result: AuditResult, infos: list[ElfInfo], disable_isa: bool,
           exclude: tuple[str, ...] = ()) -> None:
    """Fill ``result`` (whose claimed tags are set) from the ELF members ``infos``."""
    claims: list[Claim] = [pol.parse_platform_tag(t) for t in result.claimed_tags]
    classified = _classify(infos, _claimed_arch(claims))
    arch, elfs = classified.arch, classified.elfs
    result.ignored.update(classified.ignored)
    choice = _choose_libc(elfs, _claimed_libc(claims))
    if choice.error is not None:
        result.error = choice.error
        return
    if choice.note is not None:
        result.problems.append(choice.note)
    if not elfs or arch is None:        # (elfs are of arch: one implies the other)
        result.pure = True
        result.arch, result.libc = arch, None
        _check_claims(result, claims, infos)
        return
    result.arch, result.libc, result.elfs = arch, choice.libc, elfs
    facts = _wheel_facts(elfs, result.path or result.wheel, exclude, disable_isa)
    result.problems.extend(facts.blocking)
    result.blocking = facts.blocking
    result.versioned_symbols = facts.symbols.versioned
    policies = pol.policies_for(choice.libc, arch)
    evaluation = _evaluate(policies, facts)
    result.policies.extend(evaluation.checks)
    pick = _pick(policies, evaluation, elfs, arch)
    result.problems.extend(pick.notes)
    result.tags.extend(pick.tags)
    result.best_tag = pick.best_tag
    if evaluation.checks:
        result.external_libraries = evaluation.checks[0].external_libraries
    _check_claims(result, claims, infos)


def _check_claims(result: AuditResult, claims: list, infos: list) -> None:
    """Sort every claimed tag into satisfied, ``unsatisfied_claims`` or ``unchecked_claims``.

    Non-Linux tags (``win_amd64``, ``macosx_*``) are not fastelf's to judge,
    so beside a Linux tag they are only noted as unchecked.  But Linux ELF
    files need a Linux tag: in a wheel whose tags are all non-Linux or
    ``any``, they make every such tag unsatisfied (an installer on Windows,
    macOS or, for ``any``, anywhere would install files that cannot load
    there).  With no Linux tag and no Linux ELF file, a wheel with a
    non-Linux tag is skipped: not a Linux wheel.
    """
    linux_claimed = any(c is not None for c in claims)
    linux_elfs = [i.path for i in infos if i.arch]     # ELF files for an arch fastelf knows
    for tag, claim in zip(result.claimed_tags, claims):
        if result.satisfies(tag):
            continue
        if claim is None and tag != "any" and (linux_claimed or not linux_elfs):
            result.unchecked_claims[tag] = "not a Linux platform tag (not checked)"
        else:
            result.unsatisfied_claims[tag] = _claim_failure(result, tag, claim, linux_elfs)
    if not linux_claimed and result.unchecked_claims:
        result.skip_reason = ("not a Linux wheel (platform tags: " + ", ".join(result.claimed_tags)
                              + "; no Linux ELF file)")


def _claim_failure(result: AuditResult, tag: str, claim: Claim, linux_elfs: list[str]) -> str:
    """Why the wheel does not satisfy claimed ``tag`` (``claim`` is its parse, or None)."""
    if claim is None:
        kind = "a pure (any-platform) tag" if tag == "any" else "not a Linux platform tag"
        return f"{kind}, but the wheel contains Linux ELF files: {_some(linux_elfs)}"
    if result.pure:
        return "the wheel contains no ELF file for this platform"
    libc, name, arch = claim
    if arch != result.arch:
        return f"the ELF files are {result.arch}, not {arch}"
    if libc is None or libc != result.libc:     # (a judged wheel always has a libc)
        return f"the ELF files link against {result.libc}"
    family, want = _policy_version(f"{name}_{arch}")
    allowed = [c for c in result.policies
               if _version_covers(libc, want, _policy_version(c.tag)[1])]
    if allowed:      # all unsatisfied; the newest one the tag allows says what is wrong
        return "; ".join(allowed[-1].reasons() or result.blocking)
    if result.policies and want < _policy_version(result.policies[0].tag)[1]:
        return f"older than every policy fastelf knows (the oldest is {result.policies[0].tag})"
    return f"no {family} policy that fastelf knows is covered by version {want[0]}.{want[1]}"


def _some(names: list, limit: int = 5) -> str:
    """``names`` joined, the first ``limit`` of them and a count of the rest."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _version_covers(libc: str, system: tuple, policy: tuple) -> bool:
    """Does a system (or tag) at libc version ``system`` accept a policy at ``policy``?

    glibc keeps every old symbol version across releases, majors included
    (packaging assumes the same); musl promises nothing across a major.
    """
    if libc == pol.MUSL:
        return system[0] == policy[0] and policy[1] <= system[1]
    return policy <= system


def _release_key(release: str) -> tuple:
    return tuple(int(x) for x in release.split("."))


def _policy_version(tag: str) -> tuple[str, tuple[int, ...]]:
    """(family, (major, minor)) of a manylinux_X_Y / musllinux_X_Y tag or a legacy alias."""
    # callers pass only the tags of known policies, which always parse
    parsed = cast("tuple[str | None, str, str]", pol.parse_platform_tag(tag))
    nums = tuple(int(x) for x in parsed[1].split("_")[1:3])
    return parsed[1].split("_")[0], nums
