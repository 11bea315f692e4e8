"""Read a wheel (a zip file) in place: no extraction, no temporary files.

The central directory is parsed here rather than by :mod:`zipfile` so that
every hostile shape is refused with a clear reason before any byte is
inflated: unsafe member names, duplicates, overlapping members, symlinks and
other special files, encryption, unknown compression, sizes past the
configured limits, sizes that deflate cannot produce.  Local headers are
checked when a member is first read (same name, no encryption, data that
stays inside the member's own span).

Stored members are returned as zero-copy views over the memory-mapped file;
deflated members can be inflated only as far as a caller needs
(:meth:`WheelReader.stream`), or streamed in chunks without keeping them
(:meth:`WheelReader.iter_chunks`).  The input file is opened read-only and
never modified.
"""

from __future__ import annotations

import io
import mmap
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

    Peak memory per wheel is bounded by about ``max_member_size`` (an ELF
    member is inflated up to the last byte its parser needs) plus the
    strings of one ELF file; RECORD verification streams members in chunks.
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


DEFAULT_LIMITS = Limits()


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

    ``source``: a path, a bytes-like object, or a binary file object;
    ``name``: what errors call it (default: the path, the file's name or ``<bytes>``).
    """

    def __init__(self, source, limits: Limits = DEFAULT_LIMITS, name: str | None = None):
        self.limits = limits
        self._mmap = None
        self._fh = None
        self._buf = memoryview(b"")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.path = "<bytes>"
            self._buf = memoryview(source).cast("B")
        elif hasattr(source, "read"):
            self.path = getattr(source, "name", "<stream>")
            self._buf = self._map_stream(source)
        else:
            self.path = os.fspath(source)
            self._fh = self._open(self.path)
            try:
                self._buf = self._map_fd(self._fh)
            except BaseException:
                self.close()
                raise
        if name:
            self.path = name
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

    def _map_fd(self, fh):
        try:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return memoryview(b"")
            self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise WheelError(self.path, f"cannot map the file: {e.strerror or e}") from None
        return memoryview(self._mmap)

    def _map_stream(self, stream):
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
                return self._map_fd(stream)
        return memoryview(stream.read()).cast("B")

    def close(self):
        buf, self._buf = self._buf, memoryview(b"")
        try:
            buf.release()
        except (BufferError, ValueError):   # views into it are still alive
            pass
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:              # closed when the last view goes
                pass
            self._mmap = None
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
        (_, disk, cd_disk, count_disk, count, cd_size, cd_off, _clen) = struct.unpack_from(
            "<4sHHHHIIH", buf, eocd)
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
             clen, _disk, _iattr, eattr, hoff) = struct.unpack_from(
                "<4sHHHHHHIIIHHHHHII", buf, pos)
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
        (_, _disk, off, _ndisks) = struct.unpack_from("<4sIQI", buf, loc)
        if off > len(buf) - 56 or bytes(buf[off:off + 4]) != _EOCD64:
            raise self._error("zip64 end of central directory record is missing")
        (_, _sz, _vm, _vn, _d, _cd, count_disk, count, cd_size, cd_off) = struct.unpack_from(
            "<4sQHHIIQQQQ", buf, off)
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

    def raw(self, member: Member) -> memoryview:
        """The member's compressed bytes, as stored (a view, not a copy).

        The local header must agree with the central directory (same name,
        not encrypted) and the data must end before the next member starts.
        """
        buf = self._buf
        off = member.header_offset
        if off + 30 > len(buf) or bytes(buf[off:off + 4]) != _LOCAL:
            raise self._error(f"bad local header for {member.name!r}")
        flags, = struct.unpack_from("<H", buf, off + 6)
        nlen, xlen = struct.unpack_from("<HH", buf, off + 26)
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
        return buf[start:start + member.compressed_size]

    def stream(self, member: Member) -> "MemberStream":
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
        return data

    def iter_chunks(self, member: Member | str, chunk_size: int = 1 << 20):
        """Yield the member's bytes in chunks, keeping none of them.

        The CRC-32 and the declared size are checked at the end; inflating
        past the declared size stops at once (LimitError).
        """
        if isinstance(member, str):
            member = self.member(member)
        raw = self.raw(member)
        crc = 0
        if member.method == STORED:
            for i in range(0, len(raw), chunk_size):
                chunk = raw[i:i + chunk_size]
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
                    crc = zlib.crc32(chunk, crc)
                    yield chunk
        if got != member.size:
            raise self._error(f"member {member.name!r} is shorter than its declared size "
                              f"({got} < {member.size})")
        if crc != member.crc:
            raise self._error(f"CRC-32 mismatch in member {member.name!r}")

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
        self._raw = reader.raw(member)
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
        try:
            out = _inflate_whole(self._raw, size) if size else bytearray()
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
            return self._raw
        return memoryview(self._out)[: self._have]
