"""The records of a Berkeley DB hash file, read without Berkeley DB.

rpm before 4.16 (RHEL/CentOS 7 = manylinux2014, RHEL/AlmaLinux 8 =
manylinux_2_28, Amazon Linux 2) keeps its ``Packages`` database in a
Berkeley DB hash file: key the header number, value the header blob.  The
layout is the one rpm's own read-only reader (``lib/backend/bdb_ro.cc``)
relies on:

- page 0, the meta page: magic ``0x061561`` at byte 12 (its byte order is
  the file's), version at 16, page size at 20, last page at 32, the highest
  bucket at 72, and at 96 the 32 ``spares``: bucket ``b`` lives on page
  ``b + spares[b.bit_length()]``;
- every page starts with a 26-byte header: its own number at 8, the next
  page of the chain at 16, the number of items at 20, the bytes used at 22
  (overflow pages), the page type at 25 (2 or 13 a hash page, 7 overflow);
- a hash page's items alternate key and value; their offsets (2 bytes each)
  follow the page header and each item ends where the one before it starts
  (the first at the page end).  An item is ``1`` + the bytes, or ``3``
  (off-page) with the first overflow page at +4 and the total length at +8.

Nothing is trusted: page numbers must lie in the file, every chain is
walked at most once per page (a loop is an error, not a hang), lengths are
checked against the page and against ``limit``.  Damage in one bucket chain
or one overflow record is reported and the rest is still read, the way rpm
still finds the packages it can read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Literal, NamedTuple

from .errors import BdbError
from .hostfile import open_regular

__all__ = ["BdbError", "BdbRecord", "hash_records"]

_HASH_MAGIC = 0x00061561
_BTREE_MAGIC = 0x00053162
_PAGE_HEADER = 26
_HASH_PAGES = (2, 13)         # P_HASH_UNSORTED, P_HASH
_OVERFLOW_PAGE = 7
_KEYDATA, _OFFPAGE = 1, 3
_BYTEORDER: dict = {"<": "little", ">": "big"}


class BdbRecord(NamedTuple):
    """One key/value pair, or the reason it (or a whole bucket) could not be read;
    ``byteorder`` ('little' or 'big') is the file's, in which binary keys are written."""
    key: bytes
    value: bytes | None
    damage: str | None
    byteorder: Literal["little", "big"]


class _Meta(NamedTuple):
    """What the meta page says: byte order ('<' or '>'), page size, last page,
    highest bucket and the spares table."""
    order: str
    page_size: int
    last_page: int
    max_bucket: int
    spares: tuple


class _File(NamedTuple):
    """An open hash file: its descriptor, meta data, page count on disk, and the pages
    read so far (a page belongs to one chain: a second visit is damage, so the work
    stays proportional to the file's size whatever its links say)."""
    fd: int
    meta: _Meta
    pages: int
    seen: set


def hash_records(path: str, limit: int) -> Iterator[BdbRecord]:
    """Every record of the hash file ``path``, bucket by bucket; values longer than
    ``limit`` bytes are reported as damage.  Raises BdbError when the file is not
    a hash file at all, OSError when it cannot be opened."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        meta = _meta(os.pread(fd, 512, 0))
        f = _File(fd, meta, min(meta.last_page + 1, size // meta.page_size), set())
        if meta.max_bucket >= f.pages:
            raise BdbError(f"{meta.max_bucket + 1} buckets in a file of {f.pages} pages")
        for bucket in range(meta.max_bucket + 1):
            yield from _bucket_records(f, bucket, limit)
    finally:
        os.close(fd)


def _meta(head: bytes) -> _Meta:
    """The meta page's facts, in whichever byte order the file was written."""
    if len(head) < 512:
        raise BdbError("shorter than a Berkeley DB meta page")
    for order in "<>":
        magic = struct.unpack_from(order + "I", head, 12)[0]
        if magic == _BTREE_MAGIC:
            raise BdbError("a Berkeley DB btree, not a hash file")
        if magic != _HASH_MAGIC:
            continue
        version, page_size = struct.unpack_from(order + "2I", head, 16)
        last_page = struct.unpack_from(order + "I", head, 32)[0]
        max_bucket = struct.unpack_from(order + "I", head, 72)[0]
        spares = struct.unpack_from(order + "32I", head, 96)
        if not 8 <= version <= 10:
            raise BdbError(f"Berkeley DB hash version {version}, not 8 to 10")
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            raise BdbError(f"page size {page_size}")
        return _Meta(order, page_size, last_page, max_bucket, spares)
    raise BdbError("not a Berkeley DB file (no hash magic)")


def _page(f: _File, number: int, kinds: tuple) -> bytes:
    """Page ``number``, checked to be in the file, to carry its own number and to be
    of one of the ``kinds`` of page."""
    if not 0 < number < f.pages:
        raise BdbError(f"page {number} is outside the file's {f.pages} pages")
    if number in f.seen:
        raise BdbError(f"page {number} is linked twice")
    f.seen.add(number)
    page = os.pread(f.fd, f.meta.page_size, number * f.meta.page_size)
    if len(page) != f.meta.page_size:
        raise BdbError(f"page {number} is cut short")
    own = struct.unpack_from(f.meta.order + "I", page, 8)[0]
    if own != number or page[25] not in kinds:
        raise BdbError(f"page {number} says it is page {own} of type {page[25]}")
    return page


def _bucket_records(f: _File, bucket: int, limit: int) -> Iterator[BdbRecord]:
    """The records of one bucket's page chain; damage ends the chain with a report."""
    b = bucket.bit_length()
    number = bucket + f.meta.spares[b] if b < 32 else 0
    try:
        while number:
            page = _page(f, number, _HASH_PAGES)
            for key, value in _items(f, page):
                yield _record(f, key, value, limit)
            number = struct.unpack_from(f.meta.order + "I", page, 16)[0]
    except BdbError as e:
        yield BdbRecord(b"", None, f"bucket {bucket}: {e}", _BYTEORDER[f.meta.order])


def _items(f: _File, page: bytes) -> Iterator[tuple]:
    """(key item, value item) byte strings of a hash page, each still with its type byte."""
    order, size = f.meta.order, f.meta.page_size
    n = struct.unpack_from(order + "H", page, 20)[0]
    if n % 2 or _PAGE_HEADER + 2 * n > size:
        raise BdbError(f"hash page with {n} items")
    offsets = struct.unpack_from(f"{order}{n}H", page, _PAGE_HEADER)
    end = size
    items = []
    for off in offsets:
        if not _PAGE_HEADER + 2 * n <= off < end:
            raise BdbError(f"item at offset {off} outside its page")
        items.append(page[off:end])
        end = off
    return iter(zip(items[::2], items[1::2]))


def _record(f: _File, key: bytes, value: bytes, limit: int) -> BdbRecord:
    """The key and value of one pair of items; an off-page value is fetched."""
    order = _BYTEORDER[f.meta.order]
    if key[:1] != bytes([_KEYDATA]):
        return BdbRecord(b"", None, f"key item of type {key[0]}", order)
    try:
        return BdbRecord(key[1:], _value(f, value, limit), None, order)
    except BdbError as e:
        return BdbRecord(key[1:], None, str(e), order)


def _value(f: _File, item: bytes, limit: int) -> bytes:
    if item[:1] == bytes([_KEYDATA]):
        return item[1:]
    if item[:1] != bytes([_OFFPAGE]) or len(item) != 12:
        raise BdbError(f"value item of type {item[0]} and {len(item)} bytes")
    first, length = struct.unpack_from(f.meta.order + "2I", item, 4)
    if not 0 < length <= limit:
        raise BdbError(f"value of {length} bytes")
    return _overflow(f, first, length)


def _overflow(f: _File, number: int, length: int) -> bytes:
    """``length`` bytes from the overflow chain that starts at page ``number``."""
    parts = []
    left = length
    while left:
        page = _page(f, number, (_OVERFLOW_PAGE,))
        used = struct.unpack_from(f.meta.order + "H", page, 22)[0]
        if used == 0 or used > left or _PAGE_HEADER + used > f.meta.page_size:
            raise BdbError(f"overflow page {number} holds {used} bytes, {left} wanted")
        parts.append(page[_PAGE_HEADER:_PAGE_HEADER + used])
        left -= used
        number = struct.unpack_from(f.meta.order + "I", page, 16)[0]
    return b"".join(parts)
