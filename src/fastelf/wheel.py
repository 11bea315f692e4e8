"""Read a wheel (a zip file) in place: no extraction, no temporary files.

The central directory is parsed here rather than by :mod:`zipfile` so that
every hostile shape is refused with a clear reason before any byte is
inflated: unsafe member names, duplicates, overlapping members, symlinks,
encryption, unknown compression, sizes past the configured limits.

Stored members are returned as zero-copy views over the memory-mapped file;
deflated members can be inflated only as far as a caller needs
(:meth:`WheelReader.stream`).
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

INFLATE_BACKEND = "+".join(
    ["libdeflate"] * (_inflate_whole is not None) + ["isal" if _zstream is not zlib else "zlib"])

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOC = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"

STORED = 0
DEFLATED = 8


@dataclass(frozen=True)
class Limits:
    """Safety limits for untrusted wheels.  Each breach raises LimitError."""

    max_members: int = 250_000
    max_member_size: int = 8 << 30          # inflated bytes of one member
    max_total_size: int = 64 << 30          # declared inflated bytes of all members
    max_inflated: int = 32 << 30            # bytes actually inflated in one wheel
    max_ratio: int = 2000                   # declared inflated / compressed, per member
    max_name_length: int = 4096


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


class WheelReader:
    """A wheel opened for reading.  Use as a context manager.

    ``source``: a path, a bytes-like object, or a binary file object.
    """

    def __init__(self, source, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits
        self._mmap = None
        self._fh = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.path = "<bytes>"
            self._buf = memoryview(source).cast("B")
        elif hasattr(source, "read"):
            self.path = getattr(source, "name", "<stream>")
            self._buf = self._map_stream(source)
        else:
            self.path = os.fspath(source)
            try:
                self._fh = open(self.path, "rb")
            except OSError as e:
                raise WheelError(self.path, e.strerror or str(e)) from None
            self._buf = self._map_fd(self._fh)
        self.inflated = 0
        try:
            self.members = self._read_central_directory()
        except BaseException:
            self.close()
            raise
        self._by_name = {m.name: m for m in self.members}

    # ------------------------------------------------------------ opening
    def _map_fd(self, fh):
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(self._mmap)

    def _map_stream(self, stream):
        try:
            fileno = stream.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            fileno = None
        if fileno is not None:
            return self._map_fd(stream)
        return memoryview(stream.read()).cast("B")

    def close(self):
        buf, self._buf = getattr(self, "_buf", None), memoryview(b"")
        if buf is not None:
            buf.release()
        if self._mmap is not None:
            self._mmap.close()
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

    # --------------------------------------------------- central directory
    def _read_central_directory(self):
        buf = self._buf
        n = len(buf)
        if n < 22:
            raise self._error("not a zip file (too short)")
        tail_start = max(0, n - 22 - 0xFFFF)
        pos = bytes(buf[tail_start:]).rfind(_EOCD)
        if pos < 0:
            raise self._error("not a zip file (no end of central directory record)")
        eocd = tail_start + pos
        (_, disk, cd_disk, count_disk, count, cd_size, cd_off, _clen) = struct.unpack_from(
            "<4sHHHHIIH", buf, eocd)
        if disk != 0 or cd_disk != 0 or count_disk != count:
            raise self._error("multi-disk zip archives are not supported")
        if 0xFFFF in (count,) or 0xFFFFFFFF in (cd_size, cd_off):
            count, cd_size, cd_off = self._zip64_end(eocd)
        if count > self.limits.max_members:
            raise LimitError(self.path, f"{count} members exceed the limit of "
                                        f"{self.limits.max_members}")
        if cd_off > n or cd_size > n - cd_off:
            raise self._error("central directory lies outside the file")
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
                raise self._error("bad central directory entry signature")
            if pos + 46 + nlen + xlen + clen > end:
                raise self._error("central directory entry runs past its end")
            if nlen > self.limits.max_name_length:
                raise LimitError(self.path, "member name longer than the limit")
            raw_name = bytes(buf[pos + 46:pos + 46 + nlen])
            extra = buf[pos + 46 + nlen:pos + 46 + nlen + xlen]
            pos += 46 + nlen + xlen + clen
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
            if 0xFFFFFFFF in (csize, usize, hoff):
                usize, csize, hoff = self._zip64_extra(extra, usize, csize, hoff, name)
            why = check_member_name(name)
            if why:
                raise self._error(f"{why}: {name!r}")
            if name in seen:
                raise self._error(f"duplicate member name: {name!r}")
            seen.add(name)
            mode = (eattr >> 16) & 0xFFFF if (made_by >> 8) == 3 else 0
            if stat.S_ISLNK(mode):
                raise self._error(f"symbolic link member: {name!r}")
            if flags & 0x1:
                raise self._error(f"encrypted member: {name!r}")
            if method not in (STORED, DEFLATED):
                raise self._error(f"unsupported compression method {method} for {name!r}")
            if method == STORED and csize != usize:
                raise self._error(f"stored member with mismatched sizes: {name!r}")
            if usize > self.limits.max_member_size:
                raise LimitError(self.path, f"member {name!r} is {usize} bytes, over the "
                                            f"limit of {self.limits.max_member_size}")
            if usize > 1 << 20 and usize > csize * self.limits.max_ratio:
                raise LimitError(self.path, f"member {name!r} claims a compression ratio over "
                                            f"{self.limits.max_ratio}:1 (zip bomb?)")
            total += usize
            if total > self.limits.max_total_size:
                raise LimitError(self.path, "members' total size exceeds the limit of "
                                            f"{self.limits.max_total_size} bytes")
            date_time = ((mdate >> 9) + 1980, (mdate >> 5) & 0xF, mdate & 0x1F,
                         mtime >> 11, (mtime >> 5) & 0x3F, (mtime & 0x1F) * 2)
            members.append(Member(name, method, flags, crc, csize, usize, hoff, mode, date_time))
        self._check_overlaps(members, cd_off)
        return members

    def _zip64_end(self, eocd):
        loc = eocd - 20
        if loc < 0 or bytes(self._buf[loc:loc + 4]) != _EOCD64_LOC:
            raise self._error("zip64 end of central directory locator is missing")
        (_, _disk, off, _ndisks) = struct.unpack_from("<4sIQI", self._buf, loc)
        if off + 56 > len(self._buf) or bytes(self._buf[off:off + 4]) != _EOCD64:
            raise self._error("zip64 end of central directory record is missing")
        (_, _sz, _vm, _vn, _d, _cd, count_disk, count, cd_size, cd_off) = struct.unpack_from(
            "<4sQHHIIQQQQ", self._buf, off)
        if count_disk != count:
            raise self._error("multi-disk zip archives are not supported")
        return count, cd_size, cd_off

    def _zip64_extra(self, extra, usize, csize, hoff, name):
        pos = 0
        while pos + 4 <= len(extra):
            tag, size = struct.unpack_from("<HH", extra, pos)
            body = extra[pos + 4:pos + 4 + size]
            if tag == 1:
                vals = []
                for i in range(len(body) // 8):
                    vals.append(struct.unpack_from("<Q", body, 8 * i)[0])
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
        """Refuse members whose bytes overlap (the 'overlapping files' zip bomb)."""
        spans = sorted((m.header_offset, m.compressed_size, m.name) for m in members)
        prev_end, prev_name = 0, None
        for off, csize, name in spans:
            if off < prev_end:
                raise self._error(f"members {prev_name!r} and {name!r} overlap")
            prev_end, prev_name = off + 30 + csize, name
        if prev_end > cd_off:
            raise self._error(f"member {prev_name!r} overlaps the central directory")

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
        """The member's compressed bytes, as stored (a view, not a copy)."""
        buf = self._buf
        off = member.header_offset
        if off + 30 > len(buf) or bytes(buf[off:off + 4]) != _LOCAL:
            raise self._error(f"bad local header for {member.name!r}")
        nlen, xlen = struct.unpack_from("<HH", buf, off + 26)
        start = off + 30 + nlen + xlen
        if start + member.compressed_size > len(buf):
            raise self._error(f"member {member.name!r} runs past the end of the file")
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

    def _count_inflated(self, n):
        self.inflated += n
        if self.inflated > self.limits.max_inflated:
            raise LimitError(self.path, "inflated bytes exceed the limit of "
                                        f"{self.limits.max_inflated}")


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

    def peek(self, n):
        """The first ``n`` bytes (fewer if the member is shorter), cheaply."""
        if self._out is None or self._have >= n:
            return bytes(self._raw[:n]) if self._out is None else bytes(self._out[:n])
        z = zlib.decompressobj(-15)
        try:
            head = z.decompress(self._raw[:4096], n)
        except zlib.error as e:
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
        if _inflate_whole is not None and (n > size // 2 or size <= self._WHOLE):
            self._inflate_all()
            return
        out, z = self._out, self._z
        while len(out) < n:
            data = z.unconsumed_tail
            if not data:
                if self._pos >= len(self._raw):
                    if z.eof:
                        break
                    raise self.reader._error(
                        f"deflate stream of {self.member.name!r} is truncated")
                data = self._raw[self._pos:self._pos + self._CHUNK]
                self._pos += len(data)
            try:
                chunk = z.decompress(data, max(n - len(out), self._CHUNK))
            except zlib.error as e:
                raise self.reader._error(f"corrupt deflate data in {self.member.name!r}: {e}") \
                    from None
            self.reader._count_inflated(len(chunk))
            out += chunk
            if len(out) > size:
                raise LimitError(self.reader.path, f"member {self.member.name!r} inflates past "
                                                   f"its declared size of {size} (zip bomb?)")
            if z.eof and len(out) < n:
                break
        self._have = len(out)
        if self._have < n:
            raise self.reader._error(f"member {self.member.name!r} is shorter than its "
                                     f"declared size ({self._have} < {size})")

    def _inflate_all(self):
        size = self.member.size
        self.reader._count_inflated(size)
        try:
            out = _inflate_whole(self._raw, size) if size else bytearray()
        except _DeflateError:
            raise self.reader._error(f"corrupt deflate data in {self.member.name!r}, or it "
                                     f"inflates past its declared size of {size}") from None
        if len(out) != size:
            raise self.reader._error(f"member {self.member.name!r} is shorter than its "
                                     f"declared size ({len(out)} < {size})")
        self._out = out
        self._have = size

    def data(self):
        """The bytes inflated so far (a view for stored members)."""
        if self._out is None:
            return self._raw
        return memoryview(self._out)[: self._have]
