"""Read a wheel (a zip file) in place: no extraction, no temporary files.

The central directory is parsed here rather than by :mod:`zipfile` so that
every hostile shape is refused with a clear reason before any byte is
inflated: unsafe member names, duplicates, overlapping members, symlinks and
other special files, encryption, unknown compression, sizes past the
configured limits, sizes that deflate cannot produce.

The contract: fastelf sees exactly the members, in the same order, and the
same bytes that :mod:`zipfile` (what pip and ``installer`` extract with)
sees, or it refuses the wheel.  The end record is found as zipfile finds
it; everything a second reader could resolve differently is refused --
bytes before the first member (zipfile silently shifts every offset past
them), between members, or after the end record; a second end record; a
zip64 locator or record that disagrees with the plain end record; an entry
count that disagrees with the directory's size; a local header that
disagrees with its central entry (name, flags, method, CRC-32, sizes, data
descriptor); names zipfile decodes differently from other tools.  Each of
these is something no legitimate wheel writer produces (PyPI rejects
trailing data and local/central mismatches).  All local headers are
checked when the wheel is opened, so every byte before the central
directory is accounted for once.  ``tests/test_zip_differential.py`` holds
fastelf to zipfile over crafted, corpus and mutated archives.

A file is read with ``pread`` of the ranges needed, never through a shared
mapping: another process truncating or rewriting the wheel gives a short read
(``WheelError`` "changed while being read"), not SIGBUS.  Bytes-like inputs
are read in place (zero-copy views).  Deflated members can be inflated only
as far as a caller needs (:meth:`WheelReader.stream`), or streamed in chunks
without keeping them (:meth:`WheelReader.iter_chunks`).  The input file is
opened read-only and never modified.
"""

from __future__ import annotations

import importlib
import io
import operator
import os
import stat
import types
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, NamedTuple, Union, cast, overload

from . import zipformat as zf
from ._elf import DEFAULT_MAX_SYMBOLS
from .errors import LimitError, WheelError
from .zipformat import DEFLATED, STORED


def optional_module(name: str) -> types.ModuleType | None:
    """An optional backend (the [speed] extra), or None when it is not installed.

    Imported by name, so the type checker sees a module or None whether or not
    the backend (typed or not) is installed where it runs."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the environment
        return None


# Optional faster inflaters (pip install fastelf[speed]); zlib is the fallback.
_libdeflate = optional_module("deflate")        # whole-buffer only, about 3x zlib
_isal_zlib = optional_module("isal.isal_zlib")  # ISA-L: streaming, about 1.6x zlib
_inflate_whole: Callable[[bytes | memoryview, int], bytearray] | None = (
    _libdeflate.deflate_decompress if _libdeflate is not None else None)
# libdeflate's refusal (corrupt or longer than declared); nothing without it
_DEFLATE_ERRORS: tuple[type[Exception], ...] = (
    (_libdeflate.DeflateError,) if _libdeflate is not None else ())
# isal.isal_zlib, or zlib: the same interface
_zstream: types.ModuleType = _isal_zlib if _isal_zlib is not None else zlib

# CRC-32 of every audited member: ISA-L and libdeflate compute it at ~10 GB/s,
# zlib at ~2.4 GB/s (a sixth of an audit's time on big wheels).
if _zstream is not zlib:
    _crc32 = _zstream.crc32
elif _libdeflate is not None:  # pragma: no cover - depends on the environment
    _crc32 = _libdeflate.crc32
else:  # pragma: no cover
    _crc32 = zlib.crc32

# isal raises its own IsalError (not a zlib.error) for corrupt data
_INFLATE_ERRORS: tuple[type[Exception], ...] = (
    (zlib.error,) + ((_zstream.error,) if _zstream is not zlib else ()))

INFLATE_BACKEND = "+".join(
    ["libdeflate"] * (_inflate_whole is not None) + ["isal" if _zstream is not zlib else "zlib"])

_FILE_ORDER = operator.attrgetter("header_offset", "name")
# flag bits 0 and 6: traditional or strong encryption
_ENCRYPTION_FLAGS = zf.FLAG_ENCRYPTED | zf.FLAG_STRONG_ENCRYPTION


# Deflate cannot expand more than 1032:1 (a 258-byte match costs at least two
# bits), so a deflated member that declares more than this is lying.
DEFLATE_MAX_RATIO = 1032
_DEFLATE_SLACK = 1024


@dataclass(frozen=True)
class Limits:
    """Safety limits for untrusted wheels.  Each breach raises LimitError.

    Peak memory of one worker auditing one wheel is bounded by the limits,
    whatever the wheel holds (the file is read by ranges; members are never
    mapped):

    - an ELF member of at most ``max_elf_contiguous`` inflated bytes is
      inflated contiguously up to the last byte its parser needs (fastest):
      compressed input plus output, at most about 2 x ``max_elf_contiguous``;
    - a bigger ELF member is inflated as a stream of 1 MiB chunks into a
      sparse image of which only the regions the parser asks for are kept
      (ELF and program headers, the dynamic tables): at most
      ``max_elf_resident`` bytes;
    - the parsed results of all ELF members of the wheel: at most
      ``max_wheel_strbytes`` bytes of strings and ``max_wheel_symbols``
      symbols (about 200 bytes of Python objects each);
    - the member list (about 400 bytes per member), a 1 MiB read window,
      the RECORD file (``max_record_size``; other members are verified in
      chunks), and a non-seekable input stream, read into memory up to
      ``max_stream_size``.

    ``UNTRUSTED_LIMITS`` sets these so that the total stays under
    ``UNTRUSTED_MEMORY_BOUND`` (256 MiB of peak RSS, interpreter included);
    the defaults are far above any real wheel and bound memory at about
    ``DEFAULT_MEMORY_BOUND`` (4 GiB).
    """

    max_members: int = 250_000
    max_member_size: int = 4 << 30          # inflated bytes of one member
    max_total_size: int = 64 << 30          # declared inflated bytes of all members
    max_inflated: int = 32 << 30            # bytes actually inflated in one wheel
    max_ratio: int = 2000                   # declared inflated / compressed, per member
    max_name_length: int = 4096
    max_symbols: int = DEFAULT_MAX_SYMBOLS  # dynamic symbols of one ELF file (real: < 500k)
    max_strlen: int = 1 << 18               # one string in an ELF file's .dynstr
    max_strbytes: int = 256 << 20           # all strings decoded from one ELF file
    max_record_size: int = 64 << 20         # bytes of the RECORD file
    max_needed: int = 4096                  # DT_NEEDED entries of one ELF file (real: < 100)
    max_version_entries: int = 65536        # version need/aux/def entries of one ELF (real: < 2k)
    max_wheel_symbols: int = 8_000_000      # dynamic symbols of all ELF files of the wheel
    max_wheel_strbytes: int = 512 << 20     # strings decoded from all ELF files of the wheel
    max_elf_contiguous: int = 64 << 20      # bigger ELF members are parsed from a sparse image
    max_elf_resident: int = 256 << 20       # bytes of one big ELF member kept for its parse
    max_stream_size: int = 256 << 20        # a non-seekable input is read into memory

    @classmethod
    def untrusted(cls) -> Limits:
        """Limits for wheels from strangers (uploads): peak RSS of one worker
        stays under ``UNTRUSTED_MEMORY_BOUND``, still far above real wheels."""
        return UNTRUSTED_LIMITS


DEFAULT_LIMITS = Limits()

# Peak RSS guaranteed by UNTRUSTED_LIMITS (tests/test_memory_bounds.py
# measures it on hostile wheels): ~40 MiB interpreter and modules
# + 2 x 16 MiB contiguous inflate, or 64 MiB of sparse regions + chunks
# + 24 MiB of strings (x2 for str objects) + 300k symbols (~60 MiB)
# + 50k members (~20 MiB) + 8 MiB RECORD.
UNTRUSTED_MEMORY_BOUND = 256 << 20
UNTRUSTED_LIMITS = Limits(
    max_members=50_000, max_member_size=4 << 30, max_total_size=16 << 30,
    max_inflated=16 << 30, max_symbols=300_000, max_strbytes=24 << 20,
    max_record_size=8 << 20, max_needed=1024, max_version_entries=16384,
    max_wheel_symbols=300_000, max_wheel_strbytes=24 << 20,
    max_elf_contiguous=16 << 20, max_elf_resident=64 << 20, max_stream_size=32 << 20)
DEFAULT_MEMORY_BOUND = 4 << 30


class _LocalSpan(NamedTuple):
    """Where a member's data starts and where the member (with any data descriptor) ends."""

    data_start: int
    end: int


class _EndRecord(NamedTuple):
    """The central directory as the end records (plain, or zip64) describe it."""

    entries: int
    cd_size: int
    cd_offset: int
    cd_end: int         # where the directory must end: the first end record


def _zip64_bodies(extra: zf.Buffer) -> list[zf.Buffer] | None:
    """The bodies of the zip64 fields of an extra field, or None if a field overruns it."""
    fields = zf.extra_fields(extra)
    if fields is None:
        return None
    return [f.body(extra) for f in fields if f.tag == zf.ZIP64_EXTRA_TAG]


@dataclass(frozen=True)
class Member:
    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    mode: int
    date_time: tuple[int, int, int, int, int, int] = field(compare=False)

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def check_member_name(name: str) -> str | None:
    """Return why a member name is unsafe to write anywhere, or None."""
    if not name:
        return "empty member name"
    if "\x00" in name:
        return "NUL byte in member name"
    if "\\" in name:
        return "backslash in member name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute member path"
    parts = name.rstrip("/").split("/")
    if any(p in ("..", ".") for p in parts):
        return "'..' or '.' component in member path"
    if any(p == "" for p in parts):
        return "empty component in member path"
    return None


def _special_file(mode: int) -> str | None:
    """'symbolic link', 'device' ... for a mode that is not a file or directory."""
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


class WheelReader:
    """A wheel opened for reading.  Use as a context manager.

    ``source``: a path, a bytes-like object, or a binary file object;
    ``name``: what errors call it (default: the path, the file's name or ``<bytes>``).
    """

    def __init__(self, source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes],
                 limits: Limits = DEFAULT_LIMITS, name: str | None = None) -> None:
        self.limits = limits
        self._fh: io.BufferedReader | None = None
        self._buf: _Source = _MemorySource(b"")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.path = "<bytes>"
            self._buf = _MemorySource(source)
        elif hasattr(source, "read"):
            self.path = getattr(source, "name", "<stream>")
            # anything with read() is a stream (mypy cannot narrow the union by hasattr)
            self._buf = self._source_of_stream(cast("IO[bytes]", source))
        else:
            self.path = os.fspath(source)
            self._fh = self._open(self.path)
            try:
                self._buf = _FileSource(self._fh.fileno(), self.path)
            except BaseException:
                self.close()
                raise
        if name:
            self.path = name
        self.inflated = 0
        self._data_at: dict[str, int] = {}     # member name -> offset of its data
        try:
            self.members = self._read_central_directory()
        except BaseException:
            self.close()
            raise
        self._by_name = {m.name: m for m in self.members}

    # ------------------------------------------------------------ opening
    def _open(self, path: str) -> io.BufferedReader:
        """Open read-only; refuse anything but a regular file (a FIFO would block)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise WheelError(path, e.strerror or str(e)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise WheelError(path, "not a regular file")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _source_of_stream(self, stream: IO[bytes]) -> _Source:
        """A regular file's descriptor is read by ranges (the caller keeps it
        open); an in-memory stream is read in place; any other seekable
        stream by seek+read; a pipe, a device or an unseekable stream is
        read into memory up to ``max_stream_size`` (``/dev/zero`` never ends)."""
        try:
            fileno = stream.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            fileno = None
        if fileno is not None:
            try:
                st = os.fstat(fileno)
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                return _FileSource(fileno, self.path)
            return _MemorySource(self._read_capped(stream))
        if isinstance(stream, io.BytesIO):
            return _MemorySource(stream.getbuffer())
        try:
            seekable = stream.seekable()
        except (OSError, AttributeError, ValueError):
            seekable = False
        if seekable:
            return _FileSource(stream, self.path)
        return _MemorySource(self._read_capped(stream))

    def _read_capped(self, stream: IO[bytes]) -> bytes:
        cap = self.limits.max_stream_size
        parts: list[bytes] = []
        got = 0
        while True:
            try:
                part = stream.read(min(1 << 20, cap + 1 - got))
            except OSError as e:
                raise self._error(f"cannot read the input: {e.strerror or e}") from None
            if not part:
                return b"".join(parts)
            parts.append(part)
            got += len(part)
            if got > cap:
                raise self._limit(f"input stream is longer than the limit of {cap} bytes "
                                  "(a stream that cannot seek is read into memory)")

    def check_unchanged(self) -> None:
        """Raise WheelError if the file's size or mtime changed since it was opened."""
        self._buf.check_unchanged()

    def close(self) -> None:
        buf, self._buf = self._buf, _MemorySource(b"")
        buf.release()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> WheelReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, reason: str) -> WheelError:
        return WheelError(self.path, reason)

    def _limit(self, reason: str) -> LimitError:
        return LimitError(self.path, reason)

    # --------------------------------------------------- central directory
    def _find_eocd(self) -> int:
        """Where :mod:`zipfile` finds the end record (``_EndRecData``), or refuse.

        zipfile takes the last 22 bytes if they are an end record with an
        empty comment, else the *last* signature in the final 64 KiB + 22
        bytes, and gives up if fewer than 22 bytes follow that signature.
        Choosing the same record is the first half of reading the same
        archive; :meth:`_read_end_record` then refuses every layout in which
        another record or trailing bytes could be chosen by another reader.
        """
        buf = self._buf
        n = len(buf)
        if n == 0:
            raise self._error("empty file, not a zip file")
        size = zf.END_RECORD_SIZE
        if n < size:
            raise self._error(f"not a zip file (only {n} bytes)")
        pos = zf.find_end_record(n, lambda start, stop: buf[start:stop])
        if pos < 0:
            if bytes(buf[:4]) == zf.LOCAL_SIG:
                raise self._error("zip file is truncated (no end of central directory record)")
            raise self._error("not a zip file (no end of central directory record)")
        if pos + size > n:
            raise self._error("zip file is truncated (no end of central directory record: "
                              "its signature is cut short by the end of the file)")
        return pos

    def _read_end_record(self) -> _EndRecord:
        """The end record (zip64 or not) as zipfile reads it; refuse ambiguity.

        Refused: bytes after the comment (trailing data, an appended
        archive), a zip64 locator that zipfile would follow or ignore
        differently from other readers, zip64 values that disagree with the
        plain record, and a central directory that does not end exactly
        where the end records begin (zipfile would shift every offset by the
        difference, the "concat" amount of prepended data).
        """
        buf = self._buf
        eocd = self._find_eocd()
        rec = zf.EndRecord.unpack(buf[eocd:eocd + zf.END_RECORD_SIZE])
        count, cd_size, cd_off, clen = rec.entries, rec.cd_size, rec.cd_offset, rec.comment_length
        after = len(buf) - eocd - zf.END_RECORD_SIZE
        if clen != after:
            if clen < after:
                raise self._error(f"{after - clen} bytes of trailing data after the end of "
                                  "central directory record (an appended archive?)")
            raise self._error(f"zip file is truncated (archive comment of {clen} bytes, "
                              f"only {after} left)")
        if rec.disk != 0 or rec.cd_disk != 0 or rec.disk_entries != count:
            raise self._error("multi-disk zip archives are not supported")
        end = _EndRecord(count, cd_size, cd_off, eocd)
        loc = eocd - zf.ZIP64_LOCATOR_SIZE
        if loc >= 0 and bytes(buf[loc:loc + 4]) == zf.ZIP64_LOCATOR_SIG:
            end = self._zip64_end(eocd, end)
        elif count == zf.SATURATED_16 or zf.SATURATED_32 in (cd_size, cd_off):
            raise self._error("zip64 end of central directory locator is missing")
        concat = end.cd_end - end.cd_size - end.cd_offset
        if concat > 0:
            raise self._error(f"{concat} bytes of data before the zip archive: the central "
                              f"directory lies {concat} bytes after the offset its end record "
                              "gives (zipfile would shift every member by that amount)")
        if concat < 0:
            raise self._error("central directory lies outside the file or overlaps its end "
                              "record (truncated file?)")
        return end

    def _zip64_end(self, eocd: int, plain: _EndRecord) -> _EndRecord:
        """The zip64 end record zipfile uses when a locator precedes the end record.

        zipfile looks for the locator only right before the end record and
        for the zip64 record only right before the locator (ignoring the
        locator's offset), and then ignores the plain record's values.  Other
        readers follow the locator's offset or trust the plain record, so
        all three must agree: each plain value equals the zip64 one or is
        saturated (0xFFFF / 0xFFFFFFFF, "see zip64").
        """
        buf = self._buf
        loc = eocd - zf.ZIP64_LOCATOR_SIZE
        locator = zf.Zip64Locator.unpack(buf[loc:eocd])
        off = locator.end_offset
        if locator.end_disk != 0 or locator.disks > 1:
            raise self._error("multi-disk zip archives are not supported")
        rec = loc - zf.ZIP64_END_RECORD_SIZE
        if rec < 0 or bytes(buf[rec:rec + 4]) != zf.ZIP64_END_SIG:
            raise self._error("zip64 end of central directory locator without a zip64 end "
                              "record right before it (readers disagree on which to use)")
        if off != rec:
            raise self._error(f"zip64 end of central directory locator points to offset {off}, "
                              f"the zip64 end record is at {rec}")
        z64 = zf.Zip64EndRecord.unpack(buf[rec:loc])
        count, cd_size, cd_off = z64.entries, z64.cd_size, z64.cd_offset
        if z64.record_size != zf.ZIP64_END_RECORD_BODY:
            raise self._error("zip64 end of central directory record with extensible data "
                              "(zipfile would misread it)")
        if z64.disk != 0 or z64.cd_disk != 0 or z64.disk_entries != count:
            raise self._error("multi-disk zip archives are not supported")
        for what, small, big, saturated in (
                ("entry count", plain.entries, count, zf.SATURATED_16),
                ("central directory size", plain.cd_size, cd_size, zf.SATURATED_32),
                ("central directory offset", plain.cd_offset, cd_off, zf.SATURATED_32)):
            if small != big and small != saturated:
                raise self._error(f"zip64 end of central directory record disagrees with the "
                                  f"end record ({what} {big} vs {small})")
        return _EndRecord(count, cd_size, cd_off, rec)

    def _read_central_directory(self) -> list[Member]:
        buf = self._buf
        lim = self.limits
        end = self._read_end_record()
        count, cd_size, cd_off = end.entries, end.cd_size, end.cd_offset
        if count > lim.max_members:
            raise self._limit(f"{count} members exceed the limit of {lim.max_members}")
        if count * zf.CENTRAL_HEADER_SIZE > cd_size:
            raise self._error(f"central directory of {cd_size} bytes cannot hold "
                              f"{count} entries")
        if bytes(buf[cd_off:end.cd_end]).find(zf.END_SIG) >= 0:
            raise self._error("end of central directory signature inside the central "
                              "directory (an embedded archive?)")
        members: list[Member] = []
        seen: set[str] = set()
        pos = cd_off
        total = 0
        # zipfile reads entries until the directory's size is used up, whatever
        # the count says: both must agree, or a reader trusting the count
        # would see fewer members than zipfile.
        while pos < end.cd_end:
            if len(members) == count:
                raise self._error(f"central directory holds more entries than the {count} "
                                  "its end record declares")
            member, pos = self._central_entry(pos, end.cd_end)
            if member.name in seen:
                raise self._error(f"duplicate member name: {member.name!r}")
            seen.add(member.name)
            total += member.size
            if total > lim.max_total_size:
                raise self._limit("members' total size exceeds the limit of "
                                  f"{lim.max_total_size} bytes")
            members.append(member)
        if len(members) != count:
            raise self._error(f"central directory holds {len(members)} entries, its end "
                              f"record declares {count}")
        self._check_layout(members, cd_off)
        return members

    def _central_entry(self, pos: int, end: int) -> tuple[Member, int]:
        """(Member, position of the next entry) for the central entry at ``pos``."""
        buf = self._buf
        lim = self.limits
        head = zf.CENTRAL_HEADER_SIZE
        if pos + head > end:
            raise self._error("central directory is truncated")
        h = zf.CentralHeader.unpack(buf[pos:pos + head])
        if h.signature != zf.CENTRAL_SIG:
            raise self._error(f"bad central directory entry signature at offset {pos}")
        if pos + h.total_length > end:
            raise self._error("central directory entry runs past its end")
        nlen = h.name_length
        if nlen > lim.max_name_length:
            raise self._limit(f"member name of {nlen} bytes is longer than the limit "
                              f"of {lim.max_name_length}")
        name = self._decode_name(bytes(buf[pos + head:pos + head + nlen]), h.flags)
        zip64: list[zf.Buffer] = []
        if h.extra_length:
            bodies = _zip64_bodies(buf[pos + head + nlen:pos + head + nlen + h.extra_length])
            if bodies is None:
                raise self._error(f"malformed extra field in the central entry of {name!r}")
            zip64 = bodies
            if len(zip64) > 1:
                raise self._error(f"more than one zip64 extra field for {name!r}")
        if h.version_needed > zf.MAX_EXTRACT_VERSION:
            raise self._error(f"member {name!r} needs zip version {h.version_needed / 10:.1f} "
                              "(zipfile refuses it)")
        usize, csize, hoff = h.size, h.compressed_size, h.header_offset
        if zf.SATURATED_32 in (csize, usize, hoff):
            if not zip64:
                raise self._error(f"missing zip64 extra field for {name!r}")
            usize, csize, hoff = self._zip64_values(zip64[0], (usize, csize, hoff), name)
        mode = zf.unix_mode(h.version_made_by, h.external_attr)
        date_time = zf.date_time_of_dos(h.mtime, h.mdate)
        member = Member(name, h.method, h.flags, h.crc, csize, usize, hoff, mode, date_time)
        self._check_member(member)
        return member, pos + h.total_length

    def _decode_name(self, raw: bytes, flags: int) -> str:
        """The name as zipfile decodes it; names readers decode differently are refused.

        zipfile decodes UTF-8 strictly when flag bit 11 says so, else as
        cp437; other tools guess UTF-8 or the locale for unflagged bytes, so
        an unflagged non-ASCII name has no single meaning.
        """
        if flags & zf.FLAG_UTF8:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self._error(f"member name is not valid UTF-8: {raw!r}") from None
        if not raw.isascii():
            raise self._error(f"non-ASCII member name without the UTF-8 flag: {raw!r} "
                              "(readers disagree on its encoding)")
        return raw.decode("ascii")

    def _check_member(self, m: Member) -> None:
        """Refuse a central entry that is unsafe or that deflate cannot produce."""
        lim = self.limits
        name = m.name
        why = check_member_name(name)
        if why:
            raise self._error(f"{why}: {name!r}")
        special = _special_file(m.mode)
        if special:
            raise self._error(f"{special} member: {name!r}")
        if m.flags & _ENCRYPTION_FLAGS or m.method == zf.AES_METHOD:
            raise self._error(f"encrypted member: {name!r}")
        if m.flags & zf.FLAG_PATCHED:
            raise self._error(f"compressed patched data (flag bit 5) in {name!r}")
        if m.method not in (STORED, DEFLATED):
            mname = zf.METHOD_NAMES.get(m.method)
            raise self._error(f"unsupported compression method {m.method}"
                              f"{f' ({mname})' if mname else ''} for {name!r}")
        csize, usize = m.compressed_size, m.size
        if m.method == STORED and csize != usize:
            raise self._error(f"stored member with mismatched sizes: {name!r} "
                              f"({csize} stored, {usize} declared)")
        if usize > lim.max_member_size:
            raise self._limit(f"member {name!r} is {usize} bytes, over the "
                              f"limit of {lim.max_member_size}")
        if usize > 1 << 20 and usize > csize * lim.max_ratio:
            raise self._limit(f"member {name!r} claims a compression ratio over "
                              f"{lim.max_ratio}:1 ({csize} -> {usize} bytes; zip bomb?)")
        if m.method == DEFLATED and usize > csize * DEFLATE_MAX_RATIO + _DEFLATE_SLACK:
            raise self._error(f"member {name!r} declares {usize} bytes, more than its "
                              f"{csize} deflated bytes can hold (corrupt or hostile)")

    def _zip64_values(self, body: zf.Buffer, values: tuple[int, ...],
                      name: str) -> tuple[int, ...]:
        """Replace the saturated values, in order, from a zip64 extra body.

        The order is zipfile's: uncompressed size, compressed size, header offset.
        """
        whole = zf.ExtraField(zf.ZIP64_EXTRA_TAG, 0, len(body), False)
        found = zf.zip64_extra_values(body, whole)
        if zf.saturated_count(values) > len(found):
            raise self._error(f"short zip64 extra field for {name!r}")
        return zf.resolve_zip64(values, found)

    def _check_layout(self, members: list[Member], cd_off: int) -> None:
        """Every byte before the central directory belongs to exactly one member.

        Walking the members in file order, each local header must start
        where the previous member (and its data descriptor) ended, the first
        one at offset 0, and the last must end where the central directory
        starts.  So there is no prefix zipfile would skip, no gap where a
        decoy local header could hide for a streaming reader, and no overlap
        (the 'overlapping files' and extra-field-quoting zip bombs).  Each
        local header is checked against its central entry here, once, and
        where each member's data starts is remembered for :meth:`raw`.
        """
        expected = 0
        prev: Member | None = None
        for m in sorted(members, key=_FILE_ORDER):
            off = m.header_offset
            if off < expected and prev is not None:     # (expected is 0 before the first)
                raise self._error(f"member {prev.name!r} overlaps the next member {m.name!r} "
                                  "(local header lengths disagree with the central directory)")
            if off > expected:
                where = (f"between {prev.name!r} and {m.name!r}" if prev is not None
                         else "before the first local header")
                raise self._error(f"{off - expected} bytes of unaccounted data {where}")
            if off >= cd_off:
                raise self._error(f"member {m.name!r} overlaps the central directory")
            span = self._local_header(m, cd_off)
            self._data_at[m.name] = span.data_start
            expected = span.end
            prev = m
        if expected != cd_off:
            where = f"after {prev.name!r}" if prev is not None else "before the first local header"
            raise self._error(f"{cd_off - expected} bytes of unaccounted data {where} "
                              "(before the central directory)")

    def _local_header(self, m: Member, cd_off: int) -> _LocalSpan:
        """Where ``m``'s data lies, its local record checked against its central entry.

        zipfile reads the data with the central entry's method and sizes and
        ignores the local ones; a streaming reader uses the local ones.  So
        they must agree: same name, flags, method, CRC-32 and sizes (all
        zero or equal when flag bit 3 puts them in a data descriptor, which
        must then match too).
        """
        buf = self._buf
        off = m.header_offset
        head = zf.LOCAL_HEADER_SIZE
        if off + head > cd_off:
            raise self._error(f"bad local header for {m.name!r}")
        h = zf.LocalHeader.unpack(buf[off:off + head])
        flags, method, crc = h.flags, h.method, h.crc
        csize, usize, nlen = h.compressed_size, h.size, h.name_length
        if h.signature != zf.LOCAL_SIG:
            raise self._error(f"bad local header for {m.name!r}")
        start = off + head + nlen + h.extra_length
        if start > cd_off:
            raise self._error(f"local header of {m.name!r} overlaps the central directory")
        if flags & _ENCRYPTION_FLAGS:
            raise self._error(f"encrypted member: {m.name!r}")
        if buf[off + head:off + head + nlen] != m.name.encode("utf-8"):
            local_name = bytes(buf[off + head:off + head + nlen])
            shown = local_name.decode("utf-8" if flags & zf.FLAG_UTF8 else "cp437", "replace")
            raise self._error(f"local header of {m.name!r} names a different file "
                              f"({shown!r})")
        if flags != m.flags:
            raise self._error(f"local header of {m.name!r} has flags {flags:#x}, the central "
                              f"directory {m.flags:#x}")
        if method != m.method:
            raise self._error(f"local header of {m.name!r} has compression method {method}, "
                              f"the central directory {m.method}")
        zip64 = None
        if zf.SATURATED_32 in (usize, csize) or flags & zf.FLAG_DESCRIPTOR:
            zip64 = next(iter(_zip64_bodies(buf[off + head + nlen:start]) or ()), None)
        if zf.SATURATED_32 in (usize, csize):
            if zip64 is None:
                raise self._error(f"missing zip64 extra field in the local header of {m.name!r}")
            usize, csize = self._zip64_values(zip64, (usize, csize), m.name)
        local = (crc, csize, usize)
        central = (m.crc, m.compressed_size, m.size)
        descriptor = bool(flags & zf.FLAG_DESCRIPTOR)
        if local != central and not (
                descriptor and all(a in (0, b) for a, b in zip(local, central))):
            raise self._error(f"local header of {m.name!r} disagrees with the central directory "
                              f"(CRC-32, sizes {local} vs {central})")
        data_end = start + m.compressed_size
        if data_end > len(buf):
            raise self._error(f"member {m.name!r} runs past the end of the file "
                              "(truncated file?)")
        if descriptor:
            data_end += self._data_descriptor(m, data_end, zip64 is not None)
        if data_end > cd_off:
            raise self._error(f"member {m.name!r} overlaps the central directory")
        return _LocalSpan(start, data_end)

    def _data_descriptor(self, m: Member, at: int, zip64: bool) -> int:
        """Length of the data descriptor at ``at``; it must repeat the central values."""
        buf = self._buf
        pos = at + 4 if bytes(buf[at:at + 4]) == zf.DESCRIPTOR_SIG else at
        size = zf.DataDescriptor.length(zip64)
        if pos + size > len(buf):
            raise self._error(f"data descriptor of {m.name!r} is truncated")
        found = zf.DataDescriptor.unpack(buf[pos:pos + size], zip64)
        if found != (m.crc, m.compressed_size, m.size):
            raise self._error(f"data descriptor of {m.name!r} disagrees with the central "
                              "directory")
        return pos + size - at

    # ----------------------------------------------------------- contents
    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def member(self, name: str) -> Member:
        try:
            return self._by_name[name]
        except KeyError:
            raise self._error(f"no member named {name!r}") from None

    @overload
    def raw(self, member: Member, lazy: Literal[False] = False) -> memoryview | bytes: ...

    @overload
    def raw(self, member: Member, lazy: bool) -> memoryview | bytes | _Span: ...

    def raw(self, member: Member, lazy: bool = False) -> memoryview | bytes | _Span:
        """The member's compressed bytes, as stored (a view, not a copy, of
        a bytes-like input; read from a file).  ``lazy``: a big member of a
        file comes as a :class:`_Span` that reads its slices on demand.

        Its local header was checked against the central directory when the
        wheel was opened (see :meth:`_check_layout`).
        """
        start = self._data_at[member.name]
        if lazy and member.compressed_size > _EAGER_RAW and isinstance(self._buf, _FileSource):
            return _Span(self._buf, start, member.compressed_size)
        return self._buf[start:start + member.compressed_size]

    def stream(self, member: Member) -> MemberStream:
        return MemberStream(self, member)

    def read(self, member: Member | str, verify: bool = True) -> bytes | memoryview:
        """The whole member: a zero-copy view if stored, else inflated bytes.

        The CRC-32 is checked (a deflated member's always, once inflated in
        full; a stored member's unless ``verify`` is false).
        """
        if isinstance(member, str):
            member = self.member(member)
        s = self.stream(member)
        if verify:
            s.verify()
        else:
            s.ensure(member.size)
        data = s.data()
        self.check_unchanged()
        return data

    def read_owned(self, member: Member | str) -> bytearray:
        """The whole member, CRC-checked, in a bytearray the caller owns and may change
        or resize (repair patches it in place): a deflated member's inflated buffer
        is handed over, not copied; a stored member is copied out of the file."""
        if isinstance(member, str):
            member = self.member(member)
        out = self.stream(member).take()
        self.check_unchanged()
        return out

    def iter_chunks(self, member: Member | str, chunk_size: int = 1 << 20,
                    verify: bool = True) -> Iterator[bytes | memoryview]:
        """Yield the member's bytes in chunks, keeping none of them.

        The CRC-32 (unless ``verify`` is false: a caller that stops early
        never gets to compare it) and the declared size are checked at the
        end; inflating past the declared size stops at once (LimitError).
        """
        if isinstance(member, str):
            member = self.member(member)
        raw = self.raw(member, lazy=True)
        crc = 0
        if member.method == STORED:
            for i in range(0, len(raw), chunk_size):
                chunk = raw[i:i + chunk_size]
                if verify:
                    crc = _crc32(chunk, crc)
                yield chunk
            got = len(raw)
        else:
            got = 0
            for chunk in self.inflate(member, raw, chunk_size, lambda: chunk_size):
                got += len(chunk)
                if verify:
                    crc = _crc32(chunk, crc)
                yield chunk
        if got != member.size:
            raise self._error(f"member {member.name!r} is shorter than its declared size "
                              f"({got} < {member.size})")
        if verify and crc != member.crc:
            raise self._error(f"CRC-32 mismatch in member {member.name!r}")
        self.check_unchanged()

    def inflate(self, member: Member, raw: _Raw, piece: int, room: Callable[[], int], *,
                bounded: bool = True, z: Any = None) -> Iterator[bytes]:
        """The one inflate loop: yield the non-empty chunks of a deflated member.

        ``raw``: its compressed bytes, fed ``piece`` bytes at a time; ``room()``:
        the most bytes the next chunk may hold (asked before each step, so a
        caller that keeps the generator may change it between steps); ``z``: the
        decompressor (a new raw-deflate one by default).  Every reader uses it:
        the whole member (:meth:`MemberStream.ensure` to the end), a window that
        grows (``ensure``), chunks not kept (:meth:`iter_chunks`), and a bounded
        prefix (:meth:`MemberStream.peek`).

        ``bounded`` (all but ``peek``): inflated bytes count towards
        ``max_inflated``, inflating past the declared size stops at once
        (LimitError), and input that ends before the deflate stream does is a
        WheelError.  Unbounded, the loop just stops where the input ends: a
        prefix reader asks for at most a few bytes and judges what it got.
        Corrupt deflate data is always a WheelError.
        """
        if z is None:
            z = _zstream.decompressobj(-15)
        got = 0
        pos = 0
        while not z.eof:
            data: bytes | memoryview = z.unconsumed_tail
            if not data and pos < len(raw):
                data = raw[pos:pos + piece]
                pos += len(data)
            try:
                # with no input left, this drains what zlib still holds
                chunk = z.decompress(data, room())
            except _INFLATE_ERRORS as e:
                raise self._error(f"corrupt deflate data in {member.name!r}: {e}") from None
            if not chunk and not data:
                if not bounded:
                    return
                raise self._error(f"deflate stream of {member.name!r} is truncated")
            if bounded:
                got += len(chunk)
                self._count_inflated(len(chunk))
                if got > member.size:
                    raise self._limit(f"member {member.name!r} inflates past its declared "
                                      f"size of {member.size} (zip bomb?)")
            if chunk:
                yield chunk

    def _count_inflated(self, n: int) -> None:
        self.inflated += n
        if self.inflated > self.limits.max_inflated:
            raise self._limit(f"inflated bytes exceed the limit of {self.limits.max_inflated}")


class _Room:
    """How much the next inflate step of :meth:`MemberStream.ensure` may produce:
    what is still wanted, at least a chunk.

    A separate object, so that the inflate loop a stream keeps holds no
    reference back to the stream: the stream and its inflated bytes are freed
    as soon as the caller drops it, not at the next garbage collection."""

    __slots__ = ("out", "chunk", "want")

    def __init__(self, out: bytearray, chunk: int) -> None:
        self.out = out
        self.chunk = chunk
        self.want = 0

    def __call__(self) -> int:
        return max(self.want - len(self.out), self.chunk)


class MemberStream:
    """Inflates a member lazily: ``ensure(n)`` makes its first n bytes available.

    When most of a member is wanted (or it is small) and libdeflate is
    installed, the whole member is inflated in one call, which is faster than
    streaming; otherwise it is inflated in chunks, only as far as asked.

    CRC-32: whenever a deflated member has been inflated in full its CRC is
    checked, at once; :meth:`verify` completes a member and checks it.  A
    prefix cannot be checked: zlib reports corrupt deflate data it meets,
    but a flipped literal byte inflates "fine" (the red-team's 3 corrupted
    members in 1,000 that passed an audit), and a stored member has no
    deflate layer at all.  :meth:`verify_after_parse` is the audit's rule
    for ELF members, which it deliberately stops inflating early: it
    completes and checks every member except a large one whose parser used
    less than half of it (an unstripped library: the debug sections at the
    end are most of it, and inflating them would multiply the audit's cost
    several times).  Everything else costs little: a stored member needs
    one CRC pass and no inflate, a member under ``_WHOLE`` bytes or more
    than half needed is inflated whole by libdeflate anyway, and with zlib
    streaming the unneeded tail of a stripped ELF is 6-16% of it.  Measured
    on the benchmark corpus (26 wheels, 498 ELF members, 579 MB): with
    libdeflate the bytes inflated did not change (589 MB), the cost is one
    CRC pass (ISA-L/libdeflate ~10 GB/s, a few % of the audit); with zlib
    streaming 6.6% more was inflated (534 -> 569 MB); 6 members kept the
    early stop.  A member skipped that way is judged on bytes pip would install only if its CRC
    matches; pip checks the CRC, so a corrupt member can be installed
    nowhere, and ``--verify-record`` (which reads every member whole)
    reports it.
    """

    _CHUNK = 1 << 18
    _PEEK_PIECE = 1 << 16     # compressed bytes fed at a time to find a member's first bytes
    _WHOLE = 1 << 20      # members up to this size are inflated in one go

    def __init__(self, reader: WheelReader, member: Member):
        self.reader = reader
        self.member = member
        self._raw = reader.raw(member, lazy=True)
        if member.method == STORED:
            self._out = None
            self._have = member.size
        else:
            self._out = bytearray()
            self._have = 0
            self._room = _Room(self._out, self._CHUNK)
            # the inflate loop, kept between calls: ensure() resumes where it stopped
            self._chunks = reader.inflate(member, self._raw, self._CHUNK, self._room)
            self._whole_failed = False
        self._verified = False

    def peek(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if the member is shorter), cheaply."""
        if self._out is None or self._have >= n:
            return bytes(self._raw[:n]) if self._out is None else bytes(self._out[:n])
        # Feed the compressed bytes a piece at a time: a stream may start with
        # any number of empty blocks, and the input is not copied wholesale.
        head = b""
        if n <= 0:
            return head
        for chunk in self.reader.inflate(self.member, self._raw, self._PEEK_PIECE,
                                         lambda: n - len(head), bounded=False,
                                         z=zlib.decompressobj(-15)):
            head += chunk
            if len(head) >= n:
                break
        return head

    @property
    def available(self) -> int:
        return self._have

    @property
    def in_memory(self) -> bool:
        """A stored member already in memory (a view of a bytes-like input,
        or a small one read whole): reading it costs nothing more."""
        return self._out is None and not isinstance(self._raw, _Span)

    def ensure(self, n: int) -> None:
        """Inflate until at least ``n`` bytes (or the whole member) are available."""
        size = self.member.size
        n = min(n, size)
        if self._out is None or self._have >= n:
            return
        if (_inflate_whole is not None and not self._whole_failed
                and (n > size // 2 or size <= self._WHOLE)):
            if self._inflate_all():
                return
        out = self._out
        self._room.want = n
        if len(out) < n:
            for chunk in self._chunks:
                out += chunk
                if len(out) >= n:
                    break
        self._have = len(out)
        if self._have < n:
            raise self.reader._error(f"member {self.member.name!r} is shorter than its "
                                     f"declared size ({self._have} < {size})")
        if self._have == size:
            self._check_crc()

    def _inflate_all(self) -> bool:
        """Inflate the whole member in one call; False if libdeflate refuses it.

        libdeflate does not say whether the data is corrupt or longer than
        declared: the caller then streams with zlib, which tells (a WheelError
        for corrupt data, a LimitError for a member inflating past its size).
        """
        inflate = _inflate_whole
        if inflate is None:         # only called with libdeflate present
            return False
        size = self.member.size
        self.reader._count_inflated(size)
        raw = self._raw.load() if isinstance(self._raw, _Span) else self._raw
        try:
            out = inflate(raw, size) if size else bytearray()
        except _DEFLATE_ERRORS:
            self.reader.inflated -= size
            self._whole_failed = True
            return False
        if len(out) != size:
            raise self.reader._error(f"member {self.member.name!r} is shorter than its "
                                     f"declared size ({len(out)} < {size})")
        self._out = out
        self._have = size
        self._check_crc()
        return True

    def verify(self) -> None:
        """Make the whole member available and check its CRC-32 (once)."""
        self.ensure(self.member.size)
        self._check_crc()

    def verify_after_parse(self, used: int) -> bool:
        """:meth:`verify`, unless the parser used under half of a large member.

        ``used``: how many leading bytes the parser needed.  The rule
        depends only on the member and the parser, never on the inflate
        backend, so every backend reports the same corrupt members.
        Returns whether the CRC-32 was checked.
        """
        size = self.member.size
        if self._out is not None and size > self._WHOLE and used <= size // 2:
            return False
        self.verify()
        return True

    def _check_crc(self) -> None:
        if self._verified:
            return
        if self._out is None:
            crc = _crc32(self._stored())
        else:
            data = memoryview(self._out)[:self._have]
            try:
                crc = _crc32(data)
            finally:
                data.release()
        if crc != self.member.crc:
            raise self.reader._error(f"CRC-32 mismatch in member {self.member.name!r}")
        self._verified = True

    def take(self) -> bytearray:
        """The whole member (CRC-checked) as a bytearray given to the caller: the
        inflated buffer itself, which this stream then no longer holds (it is spent:
        read nothing more from it), or a copy of a stored member's bytes."""
        self.verify()
        if self._out is None:
            with memoryview(self._stored()) as view:
                return bytearray(view)
        out, self._out = self._out, bytearray()
        self._have = 0
        self._room.out = self._out      # the inflate loop keeps no reference to it either
        return out

    def data(self) -> memoryview:
        """The bytes inflated so far (a view for stored members).

        Always a new view, so a caller may release it (``with``) and still
        read the member again.
        """
        if self._out is None:
            return memoryview(self._stored())
        return memoryview(self._out)[: self._have]

    def _stored(self) -> memoryview | bytes:
        """A stored member's bytes, read in full once if they were left in the
        file (a :class:`_Span`): the CRC-32 and :meth:`data` need them all."""
        if isinstance(self._raw, _Span):
            self._raw = memoryview(self._raw.load())
        return self._raw


# ------------------------------------------------------------- byte sources
#
# The zip code reads the wheel through one small interface: len(), slices
# (bytes-like, clipped to the end like a memoryview's).

_WINDOW = 1 << 20           # a file is read by windows of this size at least
_STREAM_WINDOW = 1 << 13    # ... and a seekable stream (perhaps remote) by these
_EAGER_RAW = 1 << 16        # bigger members' compressed bytes are read on demand (a peek at
                            # a big non-ELF member of a remote wheel must not fetch it)


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts = []
    while size > 0:
        part = os.pread(fd, size, offset)
        if not part:
            break
        parts.append(part)
        size -= len(part)
        offset += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _MemorySource:
    """A bytes-like input: slices are zero-copy views of it."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._mv = memoryview(data).cast("B")

    def __len__(self) -> int:
        return len(self._mv)

    def __getitem__(self, key: slice) -> memoryview:
        return self._mv[key]

    def check_unchanged(self) -> None:
        """Bytes in memory cannot change under the reader."""

    def release(self) -> None:
        try:
            self._mv.release()
        except (BufferError, ValueError):   # views into it are still alive
            pass


class _FileSource:
    """A regular file (descriptor) or seekable stream, read by ranges.

    Never mapped: a mapping turns another process's truncation into SIGBUS.
    A read that comes back short, or a size or mtime that differs from the
    one seen at open, means the file changed under the reader: WheelError.
    The last window read is kept, so the central directory's many small
    reads cost one system call per megabyte.
    """

    def __init__(self, handle: int | IO[bytes], path: str) -> None:
        self._path = path
        self._fd: int = handle if isinstance(handle, int) else -1
        self._stream: IO[bytes] | None = None if isinstance(handle, int) else handle
        self._stamp = self._stat()
        self._size = self._stamp[0]
        self._win_off = 0
        self._win = memoryview(b"")
        # a stream may be remote (HTTP ranges): smaller windows fetch fewer bytes
        self._window = _WINDOW if self._stream is None else _STREAM_WINDOW

    def _stat(self) -> tuple[int, int | None]:
        try:
            if self._stream is None:
                st = os.fstat(self._fd)
                return (st.st_size, st.st_mtime_ns)
            return (self._stream.seek(0, os.SEEK_END), None)
        except (OSError, ValueError) as e:
            raise WheelError(self._path, f"cannot read the file: {e}") from None

    def __len__(self) -> int:
        return self._size

    def _changed(self, detail: str) -> WheelError:
        return WheelError(self._path, f"the file changed while being read ({detail})")

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset`` (inside the size seen at open)."""
        try:
            if self._stream is None:
                data = _pread(self._fd, size, offset)
            else:
                self._stream.seek(offset)
                data = self._stream.read(size)
        except OSError as e:
            raise WheelError(self._path, f"cannot read the file: {e.strerror or e}") from None
        if len(data) != size:
            raise self._changed(f"{len(data)} of {size} bytes at offset {offset}")
        return data

    def __getitem__(self, key: slice) -> memoryview | bytes:
        start, stop, _ = key.indices(self._size)
        if stop <= start:
            return b""
        w = self._win_off
        if start >= w and stop <= w + len(self._win):
            return self._win[start - w:stop - w]
        if stop - start > self._window:
            data = memoryview(self.read(start, stop - start))
            if stop - start <= _WINDOW:     # e.g. the tail searched for the end record,
                self._win_off, self._win = start, data   # which holds the central directory
            return data
        self._win_off = start
        self._win = memoryview(self.read(start, min(self._window, self._size - start)))
        return self._win[:stop - start]

    def check_unchanged(self) -> None:
        now = self._stat()
        if now != self._stamp:
            raise self._changed(f"size or mtime differs from when it was opened: "
                                f"{self._stamp[0]} -> {now[0]} bytes")

    def release(self) -> None:
        self._win = memoryview(b"")


class _Span:
    """A member's compressed bytes in a file, read slice by slice on demand
    (so inflating a big member costs a window, not the member)."""

    def __init__(self, source: _FileSource, start: int, size: int) -> None:
        self._source = source
        self._start = start
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> memoryview | bytes:
        a, b, _ = key.indices(self._size)
        return self._source[self._start + a:self._start + max(a, b)]

    def load(self) -> bytes:
        """All of it, for a caller that wants the whole member anyway."""
        return self._source.read(self._start, self._size)


_Source = Union[_MemorySource, _FileSource]
# a member's compressed bytes: a view, bytes read from a file, or a lazy span of it
_Raw = Union[memoryview, bytes, _Span]
