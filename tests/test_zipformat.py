"""``fastelf.zipformat``: the record layouts read and write what Python's zipfile does.

Oracle: Python's ``zipfile`` (what pip and ``installer`` extract with).  Archives
zipfile writes are walked record by record with zipformat alone and every
field is compared with zipfile's ``ZipInfo``; an archive assembled from
zipformat records alone (every zip64 path: saturated central sizes and
offset, saturated local sizes, zip64 end record and locator) is read by
zipfile, and by fastelf's reader, to the same members and bytes.
"""

from __future__ import annotations

import io
import zipfile
import zlib

import pytest

from fastelf import zipformat as zf
from fastelf.wheel import WheelReader

DATE = (2023, 11, 14, 22, 13, 21)       # odd seconds: DOS time keeps them halved


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors (flag bit 3)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


def _info(name: str, mode: int = 0o100644) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, DATE)
    zi.external_attr = mode << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    return zi


def _plain() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(_info("pkg/a.py"), b"print('a')\n" * 50)
        stored = _info("pkg/stored.bin", 0o100755)
        stored.compress_type = zipfile.ZIP_STORED
        z.writestr(stored, bytes(range(256)) * 4)
        z.writestr(_info("pkg/caf\u00e9.txt"), "\u00e9t\u00e9".encode() * 100)
        z.comment = b"a comment"
    return buf.getvalue()


def _forced_zip64() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        with z.open(_info("big.txt"), "w", force_zip64=True) as f:
            f.write(b"x" * 5000)
        z.writestr(_info("small.txt"), b"small")
    return buf.getvalue()


def _descriptors() -> bytes:
    out = _Unseekable()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(_info("dd.txt"), b"descriptor" * 50)
        with z.open(_info("dd2.bin"), "w") as f:
            f.write(bytes(range(200)) * 7)
    return bytes(out.data)


def _walk(data: bytes) -> list[dict]:
    """Every central entry, its local header and data, read with zipformat alone."""
    eocd = zf.find_end_record(len(data), lambda start, stop: data[start:stop])
    end = zf.EndRecord.unpack(data[eocd:])
    count, cd_off = end.entries, end.cd_offset
    loc = eocd - zf.ZIP64_LOCATOR_SIZE
    if data[loc:loc + 4] == zf.ZIP64_LOCATOR_SIG:
        z64 = zf.Zip64EndRecord.unpack(data[zf.Zip64Locator.unpack(data[loc:]).end_offset:])
        assert z64.signature == zf.ZIP64_END_SIG
        assert z64.record_size == zf.ZIP64_END_RECORD_BODY
        count, cd_off = z64.entries, z64.cd_offset
    entries = []
    pos = cd_off
    for _ in range(count):
        h = zf.CentralHeader.unpack(data[pos:])
        assert h.signature == zf.CENTRAL_SIG
        name = data[pos + zf.CENTRAL_HEADER_SIZE:pos + zf.CENTRAL_HEADER_SIZE + h.name_length]
        extra = data[pos + zf.CENTRAL_HEADER_SIZE + h.name_length:
                     pos + zf.CENTRAL_HEADER_SIZE + h.name_length + h.extra_length]
        fields = zf.extra_fields(extra)
        assert fields is not None
        z64f = next((f for f in fields if f.tag == zf.ZIP64_EXTRA_TAG), None)
        values: tuple[int, ...] = (h.size, h.compressed_size, h.header_offset)
        if z64f is not None:
            values = zf.resolve_zip64(values, zf.zip64_extra_values(extra, z64f))
        size, csize, offset = values
        local = zf.LocalHeader.unpack(data[offset:])
        start = offset + zf.LOCAL_HEADER_SIZE + local.name_length + local.extra_length
        raw = data[start:start + csize]
        body = zlib.decompress(raw, -15) if h.method == zf.DEFLATED else raw
        descriptor = None
        if h.flags & zf.FLAG_DESCRIPTOR:
            at = start + csize
            at += 4 if data[at:at + 4] == zf.DESCRIPTOR_SIG else 0
            descriptor = zf.DataDescriptor.unpack(data[at:], z64f is not None)
        entries.append(dict(
            name=name.decode("utf-8" if h.flags & zf.FLAG_UTF8 else "cp437"),
            flags=h.flags, method=h.method, crc=h.crc, size=size, csize=csize, offset=offset,
            date_time=zf.date_time_of_dos(h.mtime, h.mdate),
            mode=zf.unix_mode(h.version_made_by, h.external_attr),
            local_sig=local.signature, local_name=data[offset + zf.LOCAL_HEADER_SIZE:
                                                       offset + zf.LOCAL_HEADER_SIZE
                                                       + local.name_length],
            body=body, descriptor=descriptor))
        pos += h.total_length
    return entries


@pytest.mark.parametrize("make", [_plain, _forced_zip64, _descriptors])
def test_records_read_as_zipfile_reads_them(make):
    data = make()
    ours = _walk(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        assert [e["name"] for e in ours] == [i.filename for i in infos]
        for e, i in zip(ours, infos):
            assert (e["flags"], e["method"], e["crc"]) == (i.flag_bits, i.compress_type, i.CRC)
            assert (e["size"], e["csize"], e["offset"]) == (
                i.file_size, i.compress_size, i.header_offset)
            assert e["date_time"] == i.date_time
            assert e["mode"] == i.external_attr >> 16
            assert e["local_sig"] == zf.LOCAL_SIG
            assert e["local_name"] == i.filename.encode("utf-8")
            assert e["body"] == z.read(i)
            if i.flag_bits & zf.FLAG_DESCRIPTOR:
                assert e["descriptor"] == (i.CRC, i.compress_size, i.file_size)
    assert any(e["descriptor"] for e in ours) == (make is _descriptors)


@pytest.mark.parametrize("date_time", [DATE, (1980, 1, 1, 0, 0, 0), (2107, 12, 31, 23, 59, 58),
                                       (2000, 2, 29, 12, 0, 59)])
def test_dos_date_time_is_zipfiles(date_time):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("f", date_time), b"")
    data = buf.getvalue()
    local = zf.LocalHeader.unpack(data)
    assert (local.mtime, local.mdate) == zf.dos_date_time(date_time)
    with zipfile.ZipFile(buf) as z:
        assert zf.date_time_of_dos(local.mtime, local.mdate) == z.infolist()[0].date_time


def _all_zip64_archive(members: list[tuple[str, bytes]]) -> bytes:
    """Stored members with every size and offset in zip64 fields, and zip64 end records."""
    out = bytearray()
    central = bytearray()
    t, d = zf.dos_date_time(DATE)
    for name, body in members:
        offset = len(out)
        crc = zlib.crc32(body)
        enc = name.encode()
        extra = zf.pack_zip64_extra((len(body), len(body)))
        out += zf.LocalHeader(zf.LOCAL_SIG, zf.VERSION_ZIP64, zf.FLAG_UTF8, zf.STORED, t, d, crc,
                              zf.SATURATED_32, zf.SATURATED_32, len(enc), len(extra)).pack()
        out += enc + extra + body
        extra = zf.pack_zip64_extra((len(body), len(body), offset))
        central += zf.CentralHeader(
            zf.CENTRAL_SIG, (zf.HOST_UNIX << 8) | zf.VERSION_ZIP64, zf.VERSION_ZIP64,
            zf.FLAG_UTF8, zf.STORED, t, d, crc, zf.SATURATED_32, zf.SATURATED_32, len(enc),
            len(extra), 0, 0, 0, 0o100644 << 16, zf.SATURATED_32).pack() + enc + extra
    cd_start = len(out)
    out += central
    n = len(members)
    out += zf.Zip64EndRecord(zf.ZIP64_END_SIG, zf.ZIP64_END_RECORD_BODY, zf.VERSION_ZIP64,
                             zf.VERSION_ZIP64, 0, 0, n, n, len(central), cd_start).pack()
    out += zf.Zip64Locator(zf.ZIP64_LOCATOR_SIG, 0, cd_start + len(central), 1).pack()
    out += zf.EndRecord(zf.END_SIG, 0, 0, zf.SATURATED_16, zf.SATURATED_16, zf.SATURATED_32,
                        zf.SATURATED_32, 0).pack()
    return bytes(out)


def test_records_packed_here_are_read_by_zipfile_and_the_reader():
    members = [("a/one.txt", b"first\n" * 10), ("a/\u00fcber.bin", bytes(range(256))),
               ("a/empty", b"")]
    data = _all_zip64_archive(members)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        infos = z.infolist()
        assert [(i.filename, z.read(i)) for i in infos] == members
        assert {i.date_time for i in infos} == {DATE[:5] + (DATE[5] - DATE[5] % 2,)}
    with WheelReader(data) as r:
        assert [(m.name, bytes(r.read(m)), m.header_offset, m.mode, m.date_time)
                for m in r.members] == [
            (i.filename, z_body, i.header_offset, i.external_attr >> 16, i.date_time)
            for i, (_n, z_body) in zip(infos, members)]


def _one_member_archive(central_extra: bytes) -> bytes:
    """One stored member whose central entry carries ``central_extra``."""
    t, d = zf.dos_date_time(DATE)
    body = b"data"
    local = zf.LocalHeader(zf.LOCAL_SIG, zf.VERSION_DEFAULT, 0, zf.STORED, t, d,
                           zlib.crc32(body), len(body), len(body), 1, 0).pack() + b"x" + body
    central = zf.CentralHeader(zf.CENTRAL_SIG, zf.VERSION_DEFAULT, zf.VERSION_DEFAULT, 0,
                               zf.STORED, t, d, zlib.crc32(body), len(body), len(body), 1,
                               len(central_extra), 0, 0, 0, 0, 0).pack() + b"x" + central_extra
    return local + central + zf.EndRecord(zf.END_SIG, 0, 0, 1, 1, len(central), len(local),
                                          0).pack()


@pytest.mark.parametrize("extra, overruns", [
    (b"", False),
    (b"\x99\x99\x00\x00", False),                       # one empty field
    (b"\x99\x99\x02\x00ab\x01\x00", False),               # fewer than 4 leftover bytes
    (b"\x99\x99\x08\x00abc", True),                       # declares 8 bytes, holds 3
    (b"\x99\x99\x00\x00\x98\x98\x05\x00abcd", True),      # the second field overruns
])
def test_extra_fields_refuse_an_overrun_as_zipfile_does(extra, overruns):
    assert (zf.extra_fields(extra) is None) == overruns
    data = _one_member_archive(extra)
    if overruns:
        with pytest.raises(zipfile.BadZipFile, match="Corrupt extra field"):
            zipfile.ZipFile(io.BytesIO(data))
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert z.read("x") == b"data"
