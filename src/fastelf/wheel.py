"""Read a wheel (a zip file) in place: no extraction, no temporary files.

The central directory is parsed here rather than by :mod:`zipfile` so that
every hostile shape is refused with a clear reason before any byte is
inflated: unsafe member names, duplicates, overlapping members, symlinks and
other special files, encryption, unknown compression, sizes past the
configured limits, sizes that deflate cannot produce.  Local headers are
checked when a member is first read (same name, no encryption, data that
stays inside the member's own span).

A file is read with ``pread`` of the ranges needed, never through a shared
mapping: another process truncating or rewriting the wheel gives a short read
(``WheelError`` "changed while being read"), not SIGBUS.  Bytes-like inputs
are read in place (zero-copy views).  Deflated members can be inflated only
as far as a caller needs (:meth:`WheelReader.stream`), or streamed in chunks
without keeping them (:meth:`WheelReader.iter_chunks`).  The input file is
opened read-only and never modified.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field

from .errors import LimitError, WheelError

# Optional faster inflaters (pip install fastelf[speed]); zlib is the fallback.
try:  # libdeflate: whole-buffer only, about 3x zlib
    from deflate import DeflateError as _DeflateError
    from deflate import deflate_decompress as _inflate_whole
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_whole = None
try:  # ISA-L: streaming, about 1.6x zlib
    from isal import isal_zlib as _zstream
except ImportError:  # pragma: no cover
    _zstream = zlib

# isal raises its own IsalError (not a zlib.error) for corrupt data
_INFLATE_ERRORS = (zlib.error,) + ((_zstream.error,) if _zstream is not zlib else ())

INFLATE_BACKEND = "+".join(
    ["libdeflate"] * (_inflate_whole is not None) + ["isal" if _zstream is not zlib else "zlib"])

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOC = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"

STORED = 0
DEFLATED = 8

# Names of the compression methods a wheel might carry but fastelf refuses.
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "lzma",
                 93: "zstd", 95: "xz", 98: "ppmd", 99: "AES encryption"}

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
    max_symbols: int = 2_000_000            # dynamic symbols of one ELF file (real: < 500k)
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
    date_time: tuple = field(compare=False)

    @property
    def is_dir(self):
        return self.name.endswith("/")


def check_member_name(name):
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


def _special_file(mode):
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

    ``source``: a path, a bytes-like object, or a binary file object.
    """

    def __init__(self, source, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits
        self._fh = None
        self._buf: _Source = _MemorySource(b"")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.path = "<bytes>"
            self._buf = _MemorySource(source)
        elif hasattr(source, "read"):
            self.path = getattr(source, "name", "<stream>")
            self._buf = self._source_of_stream(source)
        else:
            self.path = os.fspath(source)
            self._fh = self._open(self.path)
            try:
                self._buf = _FileSource(self._fh.fileno(), self.path)
            except BaseException:
                self.close()
                raise
        self.inflated = 0
        self._ends = {}
        try:
            self.members = self._read_central_directory()
        except BaseException:
            self.close()
            raise
        self._by_name = {m.name: m for m in self.members}
        self._checked = set()

    # ------------------------------------------------------------ opening
    def _open(self, path):
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

    def _source_of_stream(self, stream) -> _Source:
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

    def _read_capped(self, stream) -> bytes:
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

    def close(self):
        buf, self._buf = self._buf, _MemorySource(b"")
        buf.release()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _error(self, reason):
        return WheelError(self.path, reason)

    def _limit(self, reason):
        return LimitError(self.path, reason)

    # --------------------------------------------------- central directory
    def _find_eocd(self):
        buf = self._buf
        n = len(buf)
        if n == 0:
            raise self._error("empty file, not a zip file")
        if n < 22:
            raise self._error(f"not a zip file (only {n} bytes)")
        tail_start = max(0, n - 22 - 0xFFFF)
        # the record is 22 bytes, so a signature in the last 21 bytes is not one
        pos = bytes(buf[tail_start:]).rfind(_EOCD, 0, n - tail_start - 18)
        if pos < 0:
            if bytes(buf[:4]) == _LOCAL:
                raise self._error("zip file is truncated (no end of central directory record)")
            raise self._error("not a zip file (no end of central directory record)")
        return tail_start + pos

    def _read_central_directory(self):
        buf = self._buf
        n = len(buf)
        lim = self.limits
        eocd = self._find_eocd()
        (_, disk, cd_disk, count_disk, count, cd_size, cd_off, _clen) = buf.unpack_from(
            "<4sHHHHIIH", eocd)
        if disk != 0 or cd_disk != 0 or count_disk != count:
            raise self._error("multi-disk zip archives are not supported")
        if count == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_off):
            count, cd_size, cd_off = self._zip64_end(eocd)
        if count > lim.max_members:
            raise self._limit(f"{count} members exceed the limit of {lim.max_members}")
        if cd_off > n or cd_size > n - cd_off:
            raise self._error("central directory lies outside the file (truncated file?)")
        if count * 46 > cd_size:
            raise self._error(f"central directory of {cd_size} bytes cannot hold "
                              f"{count} entries")
        members = []
        seen = set()
        pos = cd_off
        end = cd_off + cd_size
        total = 0
        for _ in range(count):
            if pos + 46 > end:
                raise self._error("central directory is truncated")
            (sig, made_by, _need, flags, method, mtime, mdate, crc, csize, usize, nlen, xlen,
             clen, _disk, _iattr, eattr, hoff) = buf.unpack_from(
                "<4sHHHHHHIIIHHHHHII", pos)
            if sig != _CENTRAL:
                raise self._error(f"bad central directory entry signature at offset {pos}")
            if pos + 46 + nlen + xlen + clen > end:
                raise self._error("central directory entry runs past its end")
            if nlen > lim.max_name_length:
                raise self._limit(f"member name of {nlen} bytes is longer than the limit "
                                  f"of {lim.max_name_length}")
            raw_name = bytes(buf[pos + 46:pos + 46 + nlen])
            extra = buf[pos + 46 + nlen:pos + 46 + nlen + xlen]
            pos += 46 + nlen + xlen + clen
            name = _decode_name(raw_name, flags)
            if 0xFFFFFFFF in (csize, usize, hoff):
                usize, csize, hoff = self._zip64_extra(extra, usize, csize, hoff, name)
            why = check_member_name(name)
            if why:
                raise self._error(f"{why}: {name!r}")
            if name in seen:
                raise self._error(f"duplicate member name: {name!r}")
            seen.add(name)
            mode = (eattr >> 16) & 0xFFFF if (made_by >> 8) == 3 else 0
            special = _special_file(mode)
            if special:
                raise self._error(f"{special} member: {name!r}")
            if flags & 0x1 or flags & 0x40 or method == 99:
                raise self._error(f"encrypted member: {name!r}")
            if method not in (STORED, DEFLATED):
                mname = _METHOD_NAMES.get(method)
                raise self._error(f"unsupported compression method {method}"
                                  f"{f' ({mname})' if mname else ''} for {name!r}")
            if method == STORED and csize != usize:
                raise self._error(f"stored member with mismatched sizes: {name!r} "
                                  f"({csize} stored, {usize} declared)")
            if usize > lim.max_member_size:
                raise self._limit(f"member {name!r} is {usize} bytes, over the "
                                  f"limit of {lim.max_member_size}")
            if usize > 1 << 20 and usize > csize * lim.max_ratio:
                raise self._limit(f"member {name!r} claims a compression ratio over "
                                  f"{lim.max_ratio}:1 ({csize} -> {usize} bytes; zip bomb?)")
            if method == DEFLATED and usize > csize * DEFLATE_MAX_RATIO + _DEFLATE_SLACK:
                raise self._error(f"member {name!r} declares {usize} bytes, more than its "
                                  f"{csize} deflated bytes can hold (corrupt or hostile)")
            total += usize
            if total > lim.max_total_size:
                raise self._limit("members' total size exceeds the limit of "
                                  f"{lim.max_total_size} bytes")
            date_time = ((mdate >> 9) + 1980, (mdate >> 5) & 0xF, mdate & 0x1F,
                         mtime >> 11, (mtime >> 5) & 0x3F, (mtime & 0x1F) * 2)
            members.append(Member(name, method, flags, crc, csize, usize, hoff, mode, date_time))
        self._check_overlaps(members, cd_off)
        return members

    def _zip64_end(self, eocd):
        buf = self._buf
        loc = eocd - 20
        if loc < 0 or bytes(buf[loc:loc + 4]) != _EOCD64_LOC:
            raise self._error("zip64 end of central directory locator is missing")
        (_, _disk, off, _ndisks) = buf.unpack_from("<4sIQI", loc)
        if off > len(buf) - 56 or bytes(buf[off:off + 4]) != _EOCD64:
            raise self._error("zip64 end of central directory record is missing")
        (_, _sz, _vm, _vn, _d, _cd, count_disk, count, cd_size, cd_off) = buf.unpack_from(
            "<4sQHHIIQQQQ", off)
        if count_disk != count:
            raise self._error("multi-disk zip archives are not supported")
        return count, cd_size, cd_off

    def _zip64_extra(self, extra, usize, csize, hoff, name):
        pos = 0
        while pos + 4 <= len(extra):
            tag, size = struct.unpack_from("<HH", extra, pos)
            body = extra[pos + 4:pos + 4 + size]
            if tag == 1:
                vals = [struct.unpack_from("<Q", body, 8 * i)[0] for i in range(len(body) // 8)]
                it = iter(vals)
                try:
                    if usize == 0xFFFFFFFF:
                        usize = next(it)
                    if csize == 0xFFFFFFFF:
                        csize = next(it)
                    if hoff == 0xFFFFFFFF:
                        hoff = next(it)
                except StopIteration:
                    raise self._error(f"short zip64 extra field for {name!r}") from None
                return usize, csize, hoff
            pos += 4 + size
        raise self._error(f"missing zip64 extra field for {name!r}")

    def _check_overlaps(self, members, cd_off):
        """Refuse members whose bytes overlap (the 'overlapping files' zip bomb).

        Also records where each member's span ends (the next member's local
        header, or the central directory), which :meth:`raw` enforces once
        the local header's own name and extra lengths are known.
        """
        spans = sorted((m.header_offset, m.compressed_size, m.name) for m in members)
        prev_end, prev_name = 0, None
        for off, csize, name in spans:
            if off < prev_end:
                raise self._error(f"members {prev_name!r} and {name!r} overlap")
            if prev_name is not None:
                self._ends[prev_name] = off
            prev_end, prev_name = off + 30 + csize, name
        if prev_name is not None:
            if prev_end > cd_off:
                raise self._error(f"member {prev_name!r} overlaps the central directory")
            self._ends[prev_name] = cd_off

    # ----------------------------------------------------------- contents
    def __iter__(self):
        return iter(self.members)

    def __contains__(self, name):
        return name in self._by_name

    def member(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise self._error(f"no member named {name!r}") from None

    def raw(self, member: Member, lazy: bool = False) -> "memoryview | bytes | _Span":
        """The member's compressed bytes, as stored (a view, not a copy, of
        a bytes-like input; read from a file).  ``lazy``: a big member of a
        file comes as a :class:`_Span` that reads its slices on demand.

        The local header must agree with the central directory (same name,
        not encrypted) and the data must end before the next member starts.
        """
        buf = self._buf
        off = member.header_offset
        if off + 30 > len(buf) or bytes(buf[off:off + 4]) != _LOCAL:
            raise self._error(f"bad local header for {member.name!r}")
        flags, = buf.unpack_from("<H", off + 6)
        nlen, xlen = buf.unpack_from("<HH", off + 26)
        start = off + 30 + nlen + xlen
        if member.name not in self._checked:
            local_name = _decode_name(bytes(buf[off + 30:off + 30 + nlen]), member.flags)
            if local_name != member.name:
                raise self._error(f"local header of {member.name!r} names a different file "
                                  f"({local_name!r})")
            if flags & 0x41:
                raise self._error(f"encrypted member: {member.name!r}")
            self._checked.add(member.name)
        bound = self._ends.get(member.name, len(buf))
        if start + member.compressed_size > min(bound, len(buf)):
            if start + member.compressed_size > len(buf):
                raise self._error(f"member {member.name!r} runs past the end of the file "
                                  "(truncated file?)")
            raise self._error(f"member {member.name!r} overlaps the next member "
                              "(local header lengths disagree with the central directory)")
        if lazy and member.compressed_size > _EAGER_RAW and isinstance(buf, _FileSource):
            return _Span(buf, start, member.compressed_size)
        return buf[start:start + member.compressed_size]

    def stream(self, member: Member) -> MemberStream:
        return MemberStream(self, member)

    def read(self, member: Member | str, verify=True) -> bytes | memoryview:
        """The whole member: a zero-copy view if stored, else inflated bytes.

        With ``verify`` the CRC-32 is checked.
        """
        if isinstance(member, str):
            member = self.member(member)
        s = self.stream(member)
        s.ensure(member.size)
        data = s.data()
        if verify and zlib.crc32(data) != member.crc:
            raise self._error(f"CRC-32 mismatch in member {member.name!r}")
        self.check_unchanged()
        return data

    def iter_chunks(self, member: Member | str, chunk_size: int = 1 << 20, verify: bool = True):
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
                    crc = zlib.crc32(chunk, crc)
                yield chunk
            got = len(raw)
        else:
            z = _zstream.decompressobj(-15)
            got = 0
            pos = 0
            while not z.eof:
                data = z.unconsumed_tail
                if not data and pos < len(raw):
                    data = raw[pos:pos + chunk_size]
                    pos += len(data)
                try:
                    chunk = z.decompress(data, chunk_size)
                except _INFLATE_ERRORS as e:
                    raise self._error(f"corrupt deflate data in {member.name!r}: {e}") from None
                if not chunk and not data:
                    raise self._error(f"deflate stream of {member.name!r} is truncated")
                got += len(chunk)
                self._count_inflated(len(chunk))
                if got > member.size:
                    raise self._limit(f"member {member.name!r} inflates past its declared "
                                      f"size of {member.size} (zip bomb?)")
                if chunk:
                    if verify:
                        crc = zlib.crc32(chunk, crc)
                    yield chunk
        if got != member.size:
            raise self._error(f"member {member.name!r} is shorter than its declared size "
                              f"({got} < {member.size})")
        if verify and crc != member.crc:
            raise self._error(f"CRC-32 mismatch in member {member.name!r}")
        self.check_unchanged()

    def _count_inflated(self, n):
        self.inflated += n
        if self.inflated > self.limits.max_inflated:
            raise self._limit(f"inflated bytes exceed the limit of {self.limits.max_inflated}")


def _decode_name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")


class MemberStream:
    """Inflates a member lazily: ``ensure(n)`` makes its first n bytes available.

    When most of a member is wanted (or it is small) and libdeflate is
    installed, the whole member is inflated in one call, which is faster than
    streaming; otherwise it is inflated in chunks, only as far as asked.
    """

    _CHUNK = 1 << 18
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
            self._pos = 0
            self._z = _zstream.decompressobj(-15)
            self._whole_failed = False

    def peek(self, n):
        """The first ``n`` bytes (fewer if the member is shorter), cheaply."""
        if self._out is None or self._have >= n:
            return bytes(self._raw[:n]) if self._out is None else bytes(self._out[:n])
        # Feed the compressed bytes a piece at a time: a stream may start with
        # any number of empty blocks, and the input is not copied wholesale.
        z = zlib.decompressobj(-15)
        head = b""
        pos = 0
        try:
            while len(head) < n and not z.eof:
                data = z.unconsumed_tail
                if not data:
                    if pos >= len(self._raw):
                        break
                    data = self._raw[pos:pos + 65536]
                    pos += len(data)
                head += z.decompress(data, n - len(head))
        except _INFLATE_ERRORS as e:
            raise self.reader._error(f"corrupt deflate data in {self.member.name!r}: {e}") \
                from None
        return head

    @property
    def available(self):
        return self._have

    @property
    def in_memory(self) -> bool:
        """A stored member already in memory (a view of a bytes-like input,
        or a small one read whole): reading it costs nothing more."""
        return self._out is None and not isinstance(self._raw, _Span)

    def ensure(self, n):
        """Inflate until at least ``n`` bytes (or the whole member) are available."""
        size = self.member.size
        n = min(n, size)
        if self._out is None or self._have >= n:
            return
        if (_inflate_whole is not None and not self._whole_failed
                and (n > size // 2 or size <= self._WHOLE)):
            if self._inflate_all():
                return
        out, z = self._out, self._z
        while len(out) < n and not z.eof:
            data = z.unconsumed_tail
            if not data and self._pos < len(self._raw):
                data = self._raw[self._pos:self._pos + self._CHUNK]
                self._pos += len(data)
            try:
                # with no input left, this drains what zlib still holds
                chunk = z.decompress(data, max(n - len(out), self._CHUNK))
            except _INFLATE_ERRORS as e:
                raise self.reader._error(f"corrupt deflate data in {self.member.name!r}: {e}") \
                    from None
            if not chunk and not data:
                raise self.reader._error(
                    f"deflate stream of {self.member.name!r} is truncated")
            self.reader._count_inflated(len(chunk))
            out += chunk
            if len(out) > size:
                raise self.reader._limit(f"member {self.member.name!r} inflates past "
                                         f"its declared size of {size} (zip bomb?)")
        self._have = len(out)
        if self._have < n:
            raise self.reader._error(f"member {self.member.name!r} is shorter than its "
                                     f"declared size ({self._have} < {size})")

    def _inflate_all(self):
        """Inflate the whole member in one call; False if libdeflate refuses it.

        libdeflate does not say whether the data is corrupt or longer than
        declared: the caller then streams with zlib, which tells (a WheelError
        for corrupt data, a LimitError for a member inflating past its size).
        """
        size = self.member.size
        self.reader._count_inflated(size)
        raw = self._raw.load() if isinstance(self._raw, _Span) else self._raw
        try:
            out = _inflate_whole(raw, size) if size else bytearray()
        except _DeflateError:
            self.reader.inflated -= size
            self._whole_failed = True
            return False
        if len(out) != size:
            raise self.reader._error(f"member {self.member.name!r} is shorter than its "
                                     f"declared size ({len(out)} < {size})")
        self._out = out
        self._have = size
        return True

    def data(self):
        """The bytes inflated so far (a view for stored members)."""
        if self._out is None:
            if isinstance(self._raw, _Span):
                self._raw = memoryview(self._raw.load())
            return self._raw
        return memoryview(self._out)[: self._have]


# ------------------------------------------------------------- byte sources
#
# The zip code reads the wheel through one small interface: len(), slices
# (bytes-like, clipped to the end like a memoryview's) and unpack_from().

_WINDOW = 1 << 20           # a file is read by windows of this size at least
_EAGER_RAW = 8 << 20        # bigger members' compressed bytes are read on demand


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

    def __init__(self, data) -> None:
        self._mv = memoryview(data).cast("B")

    def __len__(self) -> int:
        return len(self._mv)

    def __getitem__(self, key: slice) -> memoryview:
        return self._mv[key]

    def unpack_from(self, fmt: str, offset: int) -> tuple:
        return struct.unpack_from(fmt, self._mv, offset)

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

    def __init__(self, handle, path: str) -> None:
        self._path = path
        self._fd: int = handle if isinstance(handle, int) else -1
        self._stream = None if isinstance(handle, int) else handle
        self._stamp = self._stat()
        self._size = self._stamp[0]
        self._win_off = 0
        self._win = memoryview(b"")

    def _stat(self) -> tuple:
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

    def __getitem__(self, key: slice):
        start, stop, _ = key.indices(self._size)
        if stop <= start:
            return b""
        w = self._win_off
        if start >= w and stop <= w + len(self._win):
            return self._win[start - w:stop - w]
        if stop - start > _WINDOW:
            return self.read(start, stop - start)
        self._win_off = start
        self._win = memoryview(self.read(start, min(_WINDOW, self._size - start)))
        return self._win[:stop - start]

    def unpack_from(self, fmt: str, offset: int) -> tuple:
        return struct.unpack_from(fmt, self[offset:offset + struct.calcsize(fmt)])

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

    def __getitem__(self, key: slice):
        a, b, _ = key.indices(self._size)
        return self._source[self._start + a:self._start + max(a, b)]

    def load(self) -> bytes:
        """All of it, for a caller that wants the whole member anyway."""
        return self._source.read(self._start, self._size)


_Source = _MemorySource | _FileSource
