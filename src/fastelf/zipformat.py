"""The ZIP format, in one place: signatures, record layouts, flags, and how to
pack and unpack each record.

Section numbers are those of PKWARE's APPNOTE.TXT (version 6.3.x), the ZIP
specification.  Only what a wheel can hold is described: one disk, stored or
deflated members, zip64 where sizes, offsets or the entry count need it.

This module knows bytes, not policy: it never decides whether a record is
acceptable.  :mod:`fastelf.wheel` (the strict reader), :mod:`fastelf.check`
(the lenient upload check) and :mod:`fastelf.wheelwriter` (the writer) build
on it, so that every number of the format is written once.  Each record is a
:class:`~typing.NamedTuple` whose fields are in file order (signature first),
with ``pack()`` to write it and ``unpack(data)`` to read it from the start of
``data`` (at least ``SIZE`` bytes, else :class:`struct.error`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Union

Buffer = Union[bytes, bytearray, memoryview]

# ------------------------------------------------------------------ signatures
LOCAL_SIG = b"PK\x03\x04"           # 4.3.7 local file header (0x04034b50)
DESCRIPTOR_SIG = b"PK\x07\x08"      # 4.3.9.3 optional data descriptor signature (0x08074b50)
CENTRAL_SIG = b"PK\x01\x02"         # 4.3.12 central directory file header (0x02014b50)
ZIP64_END_SIG = b"PK\x06\x06"       # 4.3.14 zip64 end of central directory record
ZIP64_LOCATOR_SIG = b"PK\x06\x07"   # 4.3.15 zip64 end of central directory locator
END_SIG = b"PK\x05\x06"             # 4.3.16 end of central directory record (0x06054b50)

# ------------------------------------------------------------------ field values
STORED = 0                  # 4.4.5 compression method: none
DEFLATED = 8                # 4.4.5 compression method: deflate (RFC 1951)
AES_METHOD = 99             # 4.4.5 / APPNOTE appendix E: AE-x encryption marker
# Names of the compression methods (4.4.5) a wheel might carry but fastelf refuses.
METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "lzma",
                93: "zstd", 95: "xz", 98: "ppmd", AES_METHOD: "AES encryption"}

FLAG_ENCRYPTED = 0x1        # 4.4.4 general purpose bit 0
FLAG_DESCRIPTOR = 0x8       # bit 3: CRC-32 and sizes are in a data descriptor after the data
FLAG_PATCHED = 0x20         # bit 5: compressed patched data
FLAG_STRONG_ENCRYPTION = 0x40   # bit 6
FLAG_UTF8 = 0x800           # bit 11: name and comment are UTF-8

VERSION_DEFAULT = 20        # 4.4.3.2 version needed: deflate, directories
VERSION_ZIP64 = 45          # 4.4.3.2 version needed: zip64 format extensions
MAX_EXTRACT_VERSION = 63    # the highest "version needed" Python's zipfile accepts
HOST_UNIX = 3               # 4.4.2.2 "made by" upper byte: external attributes hold st_mode

SATURATED_16 = 0xFFFF       # 4.4.1.4: a 2-byte field that says "see the zip64 record"
SATURATED_32 = 0xFFFFFFFF   # ... a 4-byte one (sizes, offsets)

ZIP64_EXTRA_TAG = 0x0001    # 4.5.3 zip64 extended information extra field
MAX_COMMENT = 0xFFFF        # 4.3.16 the archive comment's length is a 2-byte field

# ------------------------------------------------------------------ layouts
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_EXTRA_HEADER = struct.Struct("<HH")
_ZIP64_VALUE = struct.Struct("<Q")
_DESCRIPTOR = struct.Struct("<III")
_DESCRIPTOR64 = struct.Struct("<IQQ")

LOCAL_HEADER_SIZE = _LOCAL.size             # 30, then the name and the extra field
CENTRAL_HEADER_SIZE = _CENTRAL.size         # 46, then the name, extra field and comment
END_RECORD_SIZE = _END.size                 # 22, then the archive comment
ZIP64_END_RECORD_SIZE = _ZIP64_END.size     # 56 (without extensible data)
ZIP64_LOCATOR_SIZE = _ZIP64_LOCATOR.size    # 20
# 4.3.14.1: the zip64 end record's size field counts the bytes after that field
ZIP64_END_RECORD_BODY = ZIP64_END_RECORD_SIZE - 12
# zipfile looks for the end record in the last 64 KiB + 22 bytes (_EndRecData)
END_SEARCH_SPAN = END_RECORD_SIZE + MAX_COMMENT + 1


class LocalHeader(NamedTuple):
    """4.3.7 local file header (the name and extra field follow it)."""

    signature: bytes
    version_needed: int
    flags: int
    method: int
    mtime: int
    mdate: int
    crc: int
    compressed_size: int
    size: int
    name_length: int
    extra_length: int

    def pack(self) -> bytes:
        return _LOCAL.pack(*self)

    @classmethod
    def unpack(cls, data: Buffer) -> LocalHeader:
        return cls._make(_LOCAL.unpack_from(data))


class CentralHeader(NamedTuple):
    """4.3.12 central directory file header (name, extra field and comment follow)."""

    signature: bytes
    version_made_by: int
    version_needed: int
    flags: int
    method: int
    mtime: int
    mdate: int
    crc: int
    compressed_size: int
    size: int
    name_length: int
    extra_length: int
    comment_length: int
    disk: int
    internal_attr: int
    external_attr: int
    header_offset: int

    def pack(self) -> bytes:
        return _CENTRAL.pack(*self)

    @classmethod
    def unpack(cls, data: Buffer) -> CentralHeader:
        return cls._make(_CENTRAL.unpack_from(data))

    @property
    def total_length(self) -> int:
        """Bytes of the entry: header, name, extra field and comment."""
        return CENTRAL_HEADER_SIZE + self.name_length + self.extra_length + self.comment_length


class EndRecord(NamedTuple):
    """4.3.16 end of central directory record (the archive comment follows)."""

    signature: bytes
    disk: int
    cd_disk: int
    disk_entries: int
    entries: int
    cd_size: int
    cd_offset: int
    comment_length: int

    def pack(self) -> bytes:
        return _END.pack(*self)

    @classmethod
    def unpack(cls, data: Buffer) -> EndRecord:
        return cls._make(_END.unpack_from(data))


class Zip64EndRecord(NamedTuple):
    """4.3.14 zip64 end of central directory record (version 1, no extensible data)."""

    signature: bytes
    record_size: int        # bytes after this field: ZIP64_END_RECORD_BODY without extensions
    version_made_by: int
    version_needed: int
    disk: int
    cd_disk: int
    disk_entries: int
    entries: int
    cd_size: int
    cd_offset: int

    def pack(self) -> bytes:
        return _ZIP64_END.pack(*self)

    @classmethod
    def unpack(cls, data: Buffer) -> Zip64EndRecord:
        return cls._make(_ZIP64_END.unpack_from(data))


class Zip64Locator(NamedTuple):
    """4.3.15 zip64 end of central directory locator (right before the end record)."""

    signature: bytes
    end_disk: int
    end_offset: int         # where the zip64 end record starts
    disks: int

    def pack(self) -> bytes:
        return _ZIP64_LOCATOR.pack(*self)

    @classmethod
    def unpack(cls, data: Buffer) -> Zip64Locator:
        return cls._make(_ZIP64_LOCATOR.unpack_from(data))


class DataDescriptor(NamedTuple):
    """4.3.9 data descriptor, after the signature when there is one (4.3.9.3).

    zip64 entries (4.3.9.2) carry 8-byte sizes."""

    crc: int
    compressed_size: int
    size: int

    @staticmethod
    def length(zip64: bool) -> int:
        """Bytes of the descriptor without its optional signature."""
        return (_DESCRIPTOR64 if zip64 else _DESCRIPTOR).size

    @classmethod
    def unpack(cls, data: Buffer, zip64: bool) -> DataDescriptor:
        return cls._make((_DESCRIPTOR64 if zip64 else _DESCRIPTOR).unpack_from(data))


class ExtraField(NamedTuple):
    """4.5.1 one field of an extra field: its tag and where its body lies.

    ``offset`` is where the body starts inside the extra field; a body whose
    declared ``size`` runs past the extra field's end is ``overruns``."""

    tag: int
    offset: int
    size: int
    overruns: bool

    def body(self, extra: Buffer) -> Buffer:
        return extra[self.offset:self.offset + self.size]


def walk_extra(extra: Buffer) -> Iterator[ExtraField]:
    """Every field of an extra field whose 4-byte header fits (4.5.1), in order.

    The walk stops after a field whose body overruns the end, and ignores
    fewer than 4 leftover bytes, as zipfile does."""
    pos = 0
    while pos + _EXTRA_HEADER.size <= len(extra):
        tag, size = _EXTRA_HEADER.unpack_from(extra, pos)
        body = pos + _EXTRA_HEADER.size
        yield ExtraField(tag, body, size, body + size > len(extra))
        pos = body + size


def extra_fields(extra: Buffer) -> list[ExtraField] | None:
    """The fields of an extra field, or None if one runs past its end.

    zipfile refuses a central extra field whose declared length runs past
    its end ("Corrupt extra field"); fewer than 4 leftover bytes it ignores.
    """
    fields = list(walk_extra(extra))
    if fields and fields[-1].overruns:
        return None
    return fields


def zip64_extra_values(extra: Buffer, field: ExtraField) -> tuple[int, ...]:
    """The 8-byte values of a zip64 extra field (4.5.3), as many as its size holds.

    :class:`struct.error` if the body runs past the extra field."""
    return struct.unpack_from(f"<{field.size // _ZIP64_VALUE.size}Q", extra, field.offset)


def resolve_zip64(values: Sequence[int], zip64: Sequence[int]) -> tuple[int, ...]:
    """``values`` with each saturated one replaced, in order, by the next zip64 value.

    4.5.3: the zip64 field holds only the values whose header field is
    saturated, in the order uncompressed size, compressed size, header
    offset (zipfile's order, also for a local header's two sizes).  A value
    left without a zip64 value stays saturated: callers compare
    :func:`saturated_count` with ``len(zip64)`` to tell.
    """
    rest = iter(zip64)
    return tuple(next(rest, v) if v == SATURATED_32 else v for v in values)


def saturated_count(values: Sequence[int]) -> int:
    """How many of ``values`` are saturated 4-byte fields (need a zip64 value)."""
    return sum(v == SATURATED_32 for v in values)


def pack_zip64_extra(values: Sequence[int]) -> bytes:
    """A zip64 extended information extra field (4.5.3) holding ``values``."""
    return _EXTRA_HEADER.pack(ZIP64_EXTRA_TAG, _ZIP64_VALUE.size * len(values)) + b"".join(
        _ZIP64_VALUE.pack(v) for v in values)


def is_bare_end_record(last: Buffer) -> bool:
    """Whether the file's last END_RECORD_SIZE bytes are an end record with no comment:
    zipfile takes that one without searching (``_EndRecData``)."""
    return bytes(last[:4]) == END_SIG and bytes(last[-2:]) == b"\0\0"


def find_end_record(size: int, read: Callable[[int, int], Buffer]) -> int:
    """Where Python's zipfile finds the end record (4.3.16) of a file of ``size`` bytes,
    or -1 if there is no signature where it looks.

    ``read(start, stop)`` gives the file's bytes in that range.  zipfile
    (``_EndRecData``) takes the last END_RECORD_SIZE bytes if they are an
    end record with an empty comment, else the *last* signature in the final
    END_SEARCH_SPAN bytes.  The offset returned may leave fewer than
    END_RECORD_SIZE bytes before the end of the file (a record cut short):
    the caller decides what that means.
    """
    if size >= END_RECORD_SIZE and is_bare_end_record(read(size - END_RECORD_SIZE, size)):
        return size - END_RECORD_SIZE
    start = max(0, size - END_SEARCH_SPAN)
    pos = bytes(read(start, size)).rfind(END_SIG)
    return pos if pos < 0 else start + pos


def dos_date_time(date_time: Sequence[int]) -> tuple[int, int]:
    """(mtime, mdate) MS-DOS fields (4.4.6) of a (year, month, day, h, min, s) tuple.

    Years before 1980 (the DOS epoch) are clipped to it; seconds are halved."""
    y, mo, d, h, mi, s = date_time
    y = max(y, 1980)
    return ((h << 11) | (mi << 5) | (s // 2)) & 0xFFFF, (((y - 1980) << 9) | (mo << 5) | d) & 0xFFFF


def date_time_of_dos(mtime: int, mdate: int) -> tuple[int, int, int, int, int, int]:
    """The (year, month, day, h, min, s) tuple of MS-DOS fields (4.4.6), as zipfile decodes it."""
    return ((mdate >> 9) + 1980, (mdate >> 5) & 0xF, mdate & 0x1F,
            mtime >> 11, (mtime >> 5) & 0x3F, (mtime & 0x1F) * 2)


def unix_external_attr(mode: int) -> int:
    """The external attributes (4.4.15) of a Unix st_mode, for an entry made on Unix."""
    return (mode & 0xFFFF) << 16


def unix_mode(version_made_by: int, external_attr: int) -> int:
    """The st_mode of a central entry made on Unix (4.4.2, 4.4.15), else 0."""
    return (external_attr >> 16) & 0xFFFF if (version_made_by >> 8) == HOST_UNIX else 0
