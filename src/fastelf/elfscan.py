"""Find the ELF members of a wheel and parse each one once, inflating only
as much of it as the parser asks for.

Memory stays bounded whatever the wheel holds (see :class:`~.wheel.Limits`):
a member up to ``max_elf_contiguous`` bytes is inflated contiguously up to the
last byte its parse needs (fastest); a bigger one is inflated as a stream
into a sparse image (:class:`_SparseImage`) of which only the regions the
parser asks for are kept.  The parser reads nothing else: in sparse mode the
core checks every read against the regions present and asks for what is
missing (``ElfNeedMore.ranges``).
"""

from __future__ import annotations

import mmap
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ._elf import ELFMAG, ElfError, ElfFile, ElfLimitError, ElfNeedMore, parse
from .errors import MemberElfError as MemberElfError
from .wheel import Limits, Member, MemberStream, WheelReader

ELF_MAGIC = ELFMAG     # the core's, under the name its importers use
_SKIP_SUFFIXES = (".py", ".pyc", ".pyi")
_FIRST_CHUNK = 1 << 18      # inflate this much first; most small ELFs end here

# Sparse mode: the head kept at first (ELF and program headers, and in most
# files the dynamic symbol, string and version tables), the chunk a member is
# inflated by, the granule asked regions are rounded out to (so a chain of
# small reads costs few rounds), and the bounds on rounds and passes (a pass
# inflates from the start again, when the parser asks for bytes already
# streamed past).
_HEAD = 2 << 20
_STREAM_CHUNK = 1 << 20
_GRANULE = 1 << 18
_MAX_ROUNDS = 64
_MAX_PASSES = 4
_POISON: int | None = None  # tests: fill the image with this byte, to prove it is never read

# Core messages -> the Limits field that set them (named in the error).
_LIMIT_FIELDS = (
    ("more dynamic symbols than the limit", "max_symbols", "max_wheel_symbols"),
    ("dynamic strings longer in total than the limit", "max_strbytes", "max_wheel_strbytes"),
    ("string longer than the limit", "max_strlen", None),
    ("more DT_NEEDED entries than the limit", "max_needed", None),
    ("more version entries than the limit", "max_version_entries", None),
)


def extension_init_names(member_name: str) -> tuple[str, str, str]:
    """Symbols that make a shared object a Python extension module."""
    modname = posixpath.basename(member_name).split(".", 1)[0]
    return ("PyInit_" + modname, "init" + modname, "_cffi_pypyinit_" + modname)


@dataclass
class WheelBudget:
    """What is left of the per-wheel budgets (``max_wheel_symbols``,
    ``max_wheel_strbytes``) for the wheel's remaining ELF members: per-file
    limits alone would let a wheel multiply them by its number of ELFs."""

    symbols: int
    strbytes: int

    @classmethod
    def of(cls, limits: Limits) -> WheelBudget:
        return cls(limits.max_wheel_symbols, limits.max_wheel_strbytes)

    def spend(self, elf: ElfFile) -> None:
        self.symbols -= elf.symbol_count
        self.strbytes -= elf.strbytes


def iter_elf_members(reader: WheelReader) -> Iterator[tuple[Member, ElfFile]]:
    """Yield (member, ElfFile) for every member that starts with the ELF magic.

    A member that has the magic but does not parse raises MemberElfError; a
    wheel file that changed while being read raises WheelError at the end.
    """
    budget = WheelBudget.of(reader.limits)
    for m in reader.members:
        if m.is_dir or m.size < 16 or m.name.endswith(_SKIP_SUFFIXES):
            continue
        stream = reader.stream(m)
        if stream.peek(4) != ELF_MAGIC:
            continue
        yield m, parse_member(stream, extension_init_names(m.name), budget)
    reader.check_unchanged()


def parse_member(stream: MemberStream, exports: Iterable[str] | None = (),
                 budget: WheelBudget | None = None) -> ElfFile:
    """Parse an ELF member from a MemberStream, within the reader's Limits.

    The member is then completed and its CRC-32 checked (a WheelError if it
    differs), unless it is large and the parser used less than half of it
    (see ``MemberStream.verify_after_parse``).
    """
    lim = stream.reader.limits
    if budget is None:
        budget = WheelBudget.of(lim)
    kw = {"exports": exports, "max_strlen": lim.max_strlen, "max_needed": lim.max_needed,
          "max_versions": lim.max_version_entries,
          "max_symbols": max(0, min(lim.max_symbols, budget.symbols)),
          "max_strbytes": max(0, min(lim.max_strbytes, budget.strbytes))}
    try:
        if stream.member.size <= lim.max_elf_contiguous or stream.in_memory:
            elf = _parse_prefix(stream, kw)
        else:
            elf = _parse_sparse(stream, kw)
    except ElfError as e:
        if isinstance(e, MemberElfError):
            raise
        raise MemberElfError(stream.member.name, _explain(str(e), lim, budget),
                             isinstance(e, ElfLimitError)) from None
    budget.spend(elf)
    return elf


def _explain(reason: str, lim: Limits, budget: WheelBudget) -> str:
    """Name the Limits field behind a core limit message (the per-wheel one
    when what was left of it was the tighter bound)."""
    left = {"max_wheel_symbols": budget.symbols, "max_wheel_strbytes": budget.strbytes}
    for words, field, wheel_field in _LIMIT_FIELDS:
        if reason.startswith(words):
            if wheel_field and left[wheel_field] < getattr(lim, field):
                return (f"{reason}; the wheel's ELF files together exceed "
                        f"Limits.{wheel_field} = {getattr(lim, wheel_field)}")
            return f"{reason} (Limits.{field} = {getattr(lim, field)})"
    return reason


def _parse_prefix(stream: MemberStream, kw: dict) -> ElfFile:
    """Inflate a contiguous prefix, growing it until the parse succeeds."""
    size = stream.member.size
    if not stream.in_memory:
        stream.ensure(min(size, _FIRST_CHUNK))
    while True:
        with stream.data() as buf:
            try:
                elf = parse(buf, size, **kw)
            except ElfNeedMore as more:
                want = more.needed
            else:
                break
        # grow geometrically so a file needing many small steps stays linear
        stream.ensure(max(want, min(size, 2 * stream.available)))
    # the judged bytes must be the bytes pip installs: finish the member and
    # check its CRC-32, unless that costs much more than the parse (see MemberStream)
    stream.verify_after_parse(elf.bytes_used)
    return elf


class _SparseImage:
    """A member-sized anonymous private mapping: pages never written cost no
    memory.  ``present`` lists the sorted, disjoint ``[start, end)`` regions
    that hold the member's real bytes; ``resident`` counts their bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE)
        self.present: list[tuple[int, int]] = []
        self.resident = 0
        if _POISON is not None:
            for off in range(0, size, 1 << 20):
                n = min(1 << 20, size - off)
                self.map[off:off + n] = bytes([_POISON]) * n

    def missing(self, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """The parts of ``ranges`` (offset, size) not present, rounded out to
        the granule and clipped to the member, as merged ``(start, end)``."""
        want = []
        for off, n in ranges:
            a = off - off % _GRANULE
            b = min(self.size, -(-(off + n) // _GRANULE) * _GRANULE)
            want.append((a, b))
        out = []
        for a, b in _merge(want):
            for pa, pb in self.present:
                if pb <= a or pa >= b:
                    continue
                if pa > a:
                    out.append((a, pa))
                a = max(a, pb)
            if a < b:
                out.append((a, b))
        return out

    def add(self, regions: list[tuple[int, int]]) -> None:
        self.present = _merge(self.present + regions)
        self.resident = sum(b - a for a, b in self.present)

    def close(self) -> None:
        self.map.close()


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        elif a < b:
            out.append((a, b))
    return out


class _Feed:
    """The member inflated from its start in chunks, copying into an image
    only the wanted regions; a new pass starts over from the start."""

    def __init__(self, stream: MemberStream) -> None:
        self.stream = stream
        self.chunks: Iterator[bytes | memoryview] = iter(())
        self.pos = 0
        self.passes = 0

    def fill(self, img: _SparseImage, wanted: list[tuple[int, int]]) -> None:
        if self.passes == 0 or wanted[0][0] < self.pos:
            self.passes += 1
            if self.passes > _MAX_PASSES:
                raise ElfLimitError(f"its parse needs more than {_MAX_PASSES} inflate passes")
            # no CRC: like the contiguous path, the parse stops before the end
            self.chunks = self.stream.reader.iter_chunks(self.stream.member, _STREAM_CHUNK,
                                                         verify=False)
            self.pos = 0
        end = wanted[-1][1]
        while self.pos < end:
            chunk = next(self.chunks)
            lo_chunk, hi_chunk = self.pos, self.pos + len(chunk)
            for a, b in wanted:
                lo, hi = max(a, lo_chunk), min(b, hi_chunk)
                if lo < hi:
                    img.map[lo:hi] = chunk[lo - lo_chunk:hi - lo_chunk]
            self.pos = hi_chunk
        img.add(wanted)


def _parse_sparse(stream: MemberStream, kw: dict) -> ElfFile:
    """Parse a big member keeping only the regions the parser asks for."""
    lim = stream.reader.limits
    img = _SparseImage(stream.member.size)
    feed = _Feed(stream)
    try:
        wanted = img.missing([(0, _HEAD)])
        for _ in range(_MAX_ROUNDS):
            if img.resident + sum(b - a for a, b in wanted) > lim.max_elf_resident:
                raise ElfLimitError(f"its parse needs more than {lim.max_elf_resident} bytes "
                                    "kept in memory (Limits.max_elf_resident)")
            feed.fill(img, wanted)
            try:
                return parse(img.map, img.size, present=img.present, **kw)
            except ElfNeedMore as more:
                wanted = img.missing(more.ranges)
            if not wanted:      # cannot happen: the core asks only for what is absent
                raise ElfError("parser asked for bytes it already has")
        raise ElfLimitError(f"its parse needs more than {_MAX_ROUNDS} rounds of reading")
    finally:
        img.close()
