"""PyPI's structural rules for a wheel's zip, checked from the bytes with struct (not
fastelf's reader and not zipfile): the checker the writer tests and the compression
tests share.

No data descriptors, no bytes before the first local header, between members or
after the end record, local and central headers agreeing (name, flags, method,
CRC, sizes), only stored/deflate.
"""

from __future__ import annotations

import struct
from pathlib import Path


def _zip64_values(extra: bytes, wanted: int) -> list:
    """The first ``wanted`` 8-byte values of the zip64 extra field (id 1), or []."""
    i = 0
    while i + 4 <= len(extra):
        hid, size = struct.unpack_from("<HH", extra, i)
        if hid == 1:
            return list(struct.unpack_from(f"<{wanted}Q", extra, i + 4)) if wanted else []
        i += 4 + size
    return []


def _resolve(values: list, extra: bytes) -> list:
    """Replace 0xFFFFFFFF fields by their zip64 values, in order."""
    big = [i for i, v in enumerate(values) if v == 0xFFFFFFFF]
    z = _zip64_values(extra, len(big))
    out = list(values)
    for i, v in zip(big, z):
        out[i] = v
    return out


def pypi_zip_problems(path: Path) -> list:
    """PyPI's structural rules, checked from the bytes; [] when the file passes."""
    data = Path(path).read_bytes()
    problems = []
    eocd = data.rfind(b"PK\x05\x06")
    assert eocd >= 0, "no end of central directory record"
    (_sig, _d, _dcd, _n1, count, cd_size, cd_off, clen) = struct.unpack_from(
        "<4sHHHHIIH", data, eocd)
    if eocd + 22 + clen != len(data):
        problems.append("trailing data after the end record")
    cd_end_expected = eocd
    loc = data.rfind(b"PK\x06\x07", 0, eocd)
    if loc >= 0 and loc == eocd - 20:
        z64_off = struct.unpack_from("<Q", data, loc + 8)[0]
        (_s, _sz, _vm, _vn, _dn, _dcd, _c1, count, cd_size, cd_off) = struct.unpack_from(
            "<4sQHHIIQQQQ", data, z64_off)
        cd_end_expected = z64_off
    if cd_off + cd_size != cd_end_expected:
        problems.append("bytes between the central directory and the end record")
    pos, expected_local = cd_off, 0
    for _ in range(count):
        (sig, _vm, _vn, flags, method, _t, _dt, crc, csize, usize, nlen, xlen, clen2,
         _disk, _ia, _ea, off) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", data, pos)
        assert sig == b"PK\x01\x02"
        name = data[pos + 46:pos + 46 + nlen]
        extra = data[pos + 46 + nlen:pos + 46 + nlen + xlen]
        usize, csize, off = _resolve([usize, csize, off], extra)
        pos += 46 + nlen + xlen + clen2
        if flags & 0x8:
            problems.append(f"{name!r}: data descriptor flag")
        if method not in (0, 8):
            problems.append(f"{name!r}: compression method {method}")
        if off != expected_local:
            problems.append(f"{name!r}: local header at {off}, expected {expected_local}")
        (lsig, _lv, lflags, lmethod, _lt, _ld, lcrc, lcs, lus, lnlen, lxlen) = \
            struct.unpack_from("<4sHHHHHIIIHH", data, off)
        lname = data[off + 30:off + 30 + lnlen]
        lextra = data[off + 30 + lnlen:off + 30 + lnlen + lxlen]
        lus, lcs = _resolve([lus, lcs], lextra)
        if (lsig, lname, lflags, lmethod, lcrc, lcs, lus) != \
                (b"PK\x03\x04", name, flags, method, crc, csize, usize):
            problems.append(f"{name!r}: local header differs from the central one")
        expected_local = off + 30 + lnlen + lxlen + csize
    if expected_local != cd_off:
        problems.append("bytes between the last member and the central directory")
    return problems
