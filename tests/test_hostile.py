"""Hostile wheels: limits, zip tricks, RECORD verification, batch audits.

Every bad input must give a clear error naming the file and the reason
(WheelError / LimitError, ElfError from the core), never another exception,
a crash, a hang, or a change to the input file.  Fuzzing is in test_fuzz.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import hostile_support as hs
import pytest
from hostile_support import Entry, build_zip, dist_info

from fastelf import cli, wheel
from fastelf._elf import ElfError, ElfLimitError, parse
from fastelf.audit import audit_path, audit_wheel
from fastelf.errors import LimitError, WheelError
from fastelf.record import verify_record
from fastelf.report import show_text
from fastelf.wheel import DEFAULT_LIMITS, Limits, WheelReader

SO = (hs.SEEDS / "x86_64-sysv-hash.so").read_bytes()      # no ISA note: manylinux-clean
EXT = "demo/seed.cpython-311-x86_64-linux-gnu.so"
NAME = hs.WHEEL_NAME                                       # ...-manylinux_2_17_x86_64.whl


def good_files():
    return {EXT: SO, "demo/__init__.py": b"from .seed import *\n", "demo/data.txt": b"x" * 5000}


def good_wheel(**kw):
    return hs.make_wheel(good_files(), **kw)


@pytest.fixture
def good_path(tmp_path):
    p = tmp_path / NAME
    p.write_bytes(good_wheel())
    return p


def snapshot(path):
    st = os.stat(path)
    return Path(path).read_bytes(), st.st_mtime_ns, st.st_size, stat.S_IMODE(st.st_mode)


def write(tmp_path, data, name=NAME):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def audit_error(tmp_path, data, *, cls=WheelError, verify=False, limits=DEFAULT_LIMITS,
                name=NAME):
    """Audit ``data`` as a file: it must raise ``cls`` naming the file; return the reason."""
    p = write(tmp_path, data, name)
    before = snapshot(p)
    with pytest.raises(cls) as exc:
        audit_wheel(p, verify_record=verify, limits=limits)
    assert type(exc.value) is cls, repr(exc.value)
    assert exc.value.path == str(p) and str(exc.value).startswith(f"{p}: ")
    r = audit_path(p, verify_record=verify, limits=limits)       # the batch form
    assert r.error == str(exc.value) and not r.ok
    assert snapshot(p) == before, "the input was modified"
    return exc.value.reason


# ------------------------------------------------------------------ a normal wheel

def test_normal_wheel_is_unaffected(good_path):
    before = snapshot(good_path)
    r = audit_wheel(good_path)
    assert r.error is None and r.ok and r.record is None
    assert [e.path for e in r.elfs] == [EXT] and r.best_tag.startswith("manylinux_")
    assert NAME.split("-")[-1][:-4] in r.tags
    rv = audit_wheel(good_path, verify_record=True)
    assert rv.ok and rv.record.ok and rv.record.checked == 5
    assert rv.to_dict()["record"]["ok"] is True and "record" not in r.to_dict()
    assert "RECORD matches the wheel (5 members hashed)" in show_text(rv)
    assert snapshot(good_path) == before


def _exact_limits(path):
    """Each limit set to exactly what the wheel needs."""
    with WheelReader(path) as rd:
        members = rd.members
        record = next(m for m in members if m.name.endswith("/RECORD"))
    e = parse(SO, exports=("PyInit_seed", "initseed", "_cffi_pypyinit_seed"))
    strings = [*e.needed, e.soname or "", e.rpath or "", e.runpath or "",
               *(n for n, *_ in e.imports), *(n for n, *_ in e.exports),
               *(v for vs in e.version_needs.values() for v in vs), *e.version_needs,
               *e.version_defs]
    return {
        "max_members": (len(members), "members exceed the limit"),
        "max_member_size": (max(m.size for m in members), "bytes, over the limit"),
        "max_total_size": (sum(m.size for m in members), "total size exceeds the limit"),
        "max_name_length": (max(len(m.name.encode()) for m in members), "longer than the limit"),
        "max_symbols": (e.symbol_count, "more dynamic symbols than the limit"),
        "max_strlen": (max(len(s.encode()) for s in strings), "string longer than the limit"),
        "max_record_size": (record.size, "RECORD is"),
    }


@pytest.mark.parametrize("limit", ["max_members", "max_member_size", "max_total_size",
                                   "max_name_length", "max_symbols", "max_strlen",
                                   "max_record_size"])
def test_each_limit_is_exact_and_clear(good_path, tmp_path, limit):
    """At exactly the wheel's value a limit passes; one less fails, saying which limit."""
    value, words = _exact_limits(good_path)[limit]
    ok = Limits(**{limit: value})
    assert audit_wheel(good_path, limits=ok, verify_record=True).ok
    tight = Limits(**{limit: value - 1})
    reason = audit_error(tmp_path, good_path.read_bytes(), cls=LimitError, limits=tight,
                         verify=True)
    assert words in reason and str(value - 1) in reason or (
        limit in ("max_symbols", "max_strlen") and words in reason), reason
    if limit in ("max_symbols", "max_strlen"):
        assert EXT in reason and "breaks a limit" in reason


def test_inflated_bytes_limit(tmp_path):
    data = good_wheel()
    reason = audit_error(tmp_path, data, cls=LimitError, limits=Limits(max_inflated=1000))
    assert "inflated bytes exceed the limit of 1000" in reason
    # RECORD verification inflates every member: it counts too
    reason = audit_error(tmp_path, data, cls=LimitError, verify=True,
                         limits=Limits(max_inflated=len(SO) + 100))
    assert "inflated bytes exceed the limit" in reason


def test_total_strings_limit(tmp_path):
    reason = audit_error(tmp_path, good_wheel(), cls=LimitError, limits=Limits(max_strbytes=20))
    assert "strings longer in total than the limit" in reason and EXT in reason


def test_string_bomb_elf_is_refused_quickly_and_small():
    bomb = hs.string_bomb(nsyms=20_000)
    with pytest.raises(ElfLimitError, match="strings longer in total than the limit"):
        parse(bomb)
    assert issubclass(ElfLimitError, ElfError)
    # every string is decoded once per offset: a real file decodes about its .dynstr size
    for name, data in hs.seed_elfs().items():
        e = parse(data, exports=None)
        dynstr = dict(e.dynamic).get(10)                 # DT_STRSZ
        parse(data, exports=None, max_strbytes=dynstr)
    # and in a wheel: a LimitError naming the member
    w = hs.make_wheel({EXT: bomb})
    with pytest.raises(LimitError, match="breaks a limit: dynamic strings"):
        audit_wheel(w)


def test_export_scan_does_not_read_whole_names():
    """Defined symbols naming a long string: only the wanted prefixes are compared."""
    data = hs.string_bomb(nsyms=20_000, defined=True)
    e = parse(data, exports=("PyInit_seed",))
    assert e.exports == [] and e.symbol_count == 20_001
    with pytest.raises(ElfLimitError):                   # all of them: the budget applies
        parse(data, exports=None)


# ------------------------------------------------------------------ zip bombs

def _bomb_member(declared=200_000):
    """An ELF member of 10 MB (mostly zeros) that declares ``declared`` bytes."""
    big = SO + bytes(10_000_000)
    return Entry(EXT, big, method=8, usize=declared)


@pytest.mark.parametrize("backend", ["default", "zlib-streaming"])
def test_member_inflating_past_its_declared_size(tmp_path, monkeypatch, backend):
    if backend == "zlib-streaming":
        monkeypatch.setattr(wheel, "_inflate_whole", None)
    files = dist_info({EXT: b""})
    entries = [_bomb_member() if n == EXT else Entry(n, d) for n, d in files.items()]
    reason = audit_error(tmp_path, build_zip(entries), cls=LimitError)
    assert f"member {EXT!r} inflates past its declared size of 200000 (zip bomb?)" in reason
    # the same member under RECORD verification (streamed in chunks, never kept)
    entries = [Entry(n, d) for n, d in dist_info({"demo/x.txt": b""}).items()]
    entries[0] = Entry("demo/x.txt", bytes(10_000_000), method=8, usize=100_000)
    reason = audit_error(tmp_path, build_zip(entries), cls=LimitError, verify=True)
    assert "'demo/x.txt' inflates past its declared size of 100000" in reason


def test_huge_declared_ratio(tmp_path):
    files = dist_info({"demo/x.txt": bytes(3000)})
    entries = [Entry(n, d, method=8) for n, d in files.items()]
    entries[0].usize = 3 << 30                          # 3 GiB from a few bytes
    reason = audit_error(tmp_path, build_zip(entries), cls=LimitError)
    assert "'demo/x.txt' claims a compression ratio over 2000:1" in reason and "zip bomb" in reason
    tighter = Limits(max_ratio=10)
    entries[0].usize = 2 << 20                          # 2 MiB from a few bytes
    reason = audit_error(tmp_path, build_zip(entries), cls=LimitError, limits=tighter)
    assert "ratio over 10:1" in reason


def test_declared_size_deflate_cannot_produce(tmp_path):
    """1500:1 is under max_ratio but more than deflate's 1032:1: refused before inflating."""
    data = bytes(3_000_000)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(data) + c.flush()
    files = dist_info({"demo/x.bin": b""})
    entries = [Entry(n, d) for n, d in files.items()]
    entries[0] = Entry("demo/x.bin", data, method=8, payload=payload,
                       usize=len(payload) * 1500)
    reason = audit_error(tmp_path, build_zip(entries))
    assert "'demo/x.bin' declares" in reason and "more than its" in reason


def test_zip64_member_over_the_size_limit(tmp_path):
    files = dist_info({"demo/x.bin": b"tiny"})
    entries = [Entry(n, d) for n, d in files.items()]
    entries[0] = Entry("demo/x.bin", b"tiny", zip64=True)
    assert audit_wheel(build_zip(entries), verify_record=True).record.ok   # zip64 is read
    entries[0] = Entry("demo/x.bin", b"tiny", method=8, zip64=True)
    entries[0].usize = 5 << 30                          # 5 GiB
    reason = audit_error(tmp_path, build_zip(entries), cls=LimitError)
    assert f"'demo/x.bin' is {5 << 30} bytes, over the limit of {4 << 30}" in reason


def test_overlapping_members(tmp_path):
    """Two central entries for one local record: the classic overlapping-files bomb."""
    files = dist_info({"demo/a.txt": b"a" * 100})
    entries = [Entry(n, d) for n, d in files.items()]
    listing = [(i, None) for i in range(len(entries))] + [(0, "demo/b.txt")]
    reason = audit_error(tmp_path, build_zip(entries, cd_entries=listing))
    assert "overlap" in reason and "demo/b.txt" in reason


def test_member_overlapping_the_central_directory(tmp_path):
    files = dist_info({"demo/a.txt": b"a" * 100})
    entries = [Entry(n, d) for n, d in files.items()]
    entries[-1].csize += 50
    entries[-1].usize += 50
    reason = audit_error(tmp_path, build_zip(entries))
    assert "overlaps the central directory" in reason


def test_local_extra_field_overlap(tmp_path):
    data = (hs.CORPUS / "zip-local-extra-overlap.zip").read_bytes()
    assert len(zipfile.ZipFile(io.BytesIO(data)).namelist()) == 5   # zipfile reads it
    reason = audit_error(tmp_path, data, verify=True)
    assert "overlaps the next member" in reason


def test_central_directory_claiming_too_many_entries(tmp_path):
    data = bytearray(good_wheel())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 60000, 60000)
    reason = audit_error(tmp_path, bytes(data))
    assert "cannot hold 60000 entries" in reason


# ------------------------------------------------------------------ zip problems

def _entries(name=EXT, data=SO, **kw):
    files = dist_info({"demo/__init__.py": b""})
    return [Entry(name, data, **kw)] + [Entry(n, d) for n, d in files.items()]


BAD_MEMBERS = [
    # (id, entries, expected words)
    ("dotdot", _entries("../evil.so"), "'..' or '.' component in member path: '../evil.so'"),
    ("dotdot-inside", _entries("demo/../../evil.so"), "'..' or '.' component"),
    ("dot", _entries("demo/./x.so"), "'..' or '.' component"),
    ("absolute", _entries("/usr/lib/evil.so"), "absolute member path: '/usr/lib/evil.so'"),
    ("drive", _entries("C:/evil.so"), "absolute member path: 'C:/evil.so'"),
    ("backslash", _entries("demo\\..\\evil.so"), "backslash in member name"),
    ("empty-component", _entries("demo//x.so"), "empty component in member path"),
    ("nul", _entries("demo/x.so\0.txt"), "NUL byte in member name"),
    ("empty-name", _entries(""), "empty member name"),
    ("symlink", _entries("demo/link.so", b"/etc/passwd", mode=0o120777),
     "symbolic link member: 'demo/link.so'"),
    ("fifo", _entries("demo/fifo", b"", mode=0o010644), "named pipe member: 'demo/fifo'"),
    ("device", _entries("demo/dev", b"", mode=0o020644), "device file member: 'demo/dev'"),
    ("encrypted", _entries(flags=1), f"encrypted member: {EXT!r}"),
    ("strong-encryption", _entries(flags=0x41), "encrypted member"),
    ("aes", _entries(method=99), "encrypted member"),
    ("bzip2", _entries(method=12), f"unsupported compression method 12 (bzip2) for {EXT!r}"),
    ("lzma", _entries(method=14), "unsupported compression method 14 (lzma)"),
    ("zstd", _entries(method=93), "unsupported compression method 93 (zstd)"),
    ("deflate64", _entries(method=9), "unsupported compression method 9 (deflate64)"),
    ("stored-sizes", _entries(usize=len(SO) + 1), "stored member with mismatched sizes"),
]


@pytest.mark.parametrize("entries,words", [c[1:] for c in BAD_MEMBERS],
                         ids=[c[0] for c in BAD_MEMBERS])
def test_bad_member_is_refused_by_name(tmp_path, entries, words):
    reason = audit_error(tmp_path, build_zip(entries))
    assert words in reason


def test_duplicate_names(tmp_path):
    entries = _entries() + [Entry(EXT, b"\x7fELF" + bytes(100))]
    reason = audit_error(tmp_path, build_zip(entries))
    assert f"duplicate member name: {EXT!r}" in reason


def test_real_zipfile_bzip2_and_lzma_members(tmp_path):
    for method, label in ((zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("demo/__init__.py", b"")
            z.writestr(zipfile.ZipInfo(EXT), SO, compress_type=method)
        reason = audit_error(tmp_path, out.getvalue())
        assert f"({label}) for {EXT!r}" in reason


READ_TIME = [
    # problems found when a member is read (the ELF member is read by every audit)
    ("bad-local-signature", "sig", "bad local header for"),
    ("local-name-mismatch", "name", "names a different file ('demo/other.so')"),
    ("local-encrypted-flag", "lflags", f"encrypted member: {EXT!r}"),
    ("crc", "crc", f"CRC-32 mismatch in member {EXT!r}"),
    ("corrupt-deflate", "corrupt", f"corrupt deflate data in {EXT!r}"),
    ("truncated-deflate", "short", f"{EXT!r}"),
    ("shorter-than-declared", "declared", "is shorter than its declared size"),
]


@pytest.mark.parametrize("how,words", [c[1:] for c in READ_TIME], ids=[c[0] for c in READ_TIME])
def test_member_problems_found_when_reading(tmp_path, how, words):
    kw = {}
    if how == "name":
        kw["local_name"] = "demo/other.so"
    elif how == "lflags":
        kw["local_flags"] = 1
    elif how == "crc":
        kw["crc"] = zlib.crc32(SO) ^ 1
    elif how in ("corrupt", "short", "declared"):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = c.compress(SO) + c.flush()
        kw["method"] = 8
        if how == "corrupt":
            payload = payload[:20] + b"\xff" * 40 + payload[60:]
        elif how == "short":
            payload = payload[:len(payload) // 3]
        else:
            kw["usize"] = len(SO) + 4000
        kw["payload"] = payload
    entries = _entries(**kw)
    data = bytearray(build_zip(entries))
    if how == "sig":
        data[0:4] = b"PK\x03\x05"
    verify = how in ("crc",)                 # the audit reads prefixes; RECORD reads all
    reason = audit_error(tmp_path, bytes(data), verify=verify)
    assert words in reason


def test_whole_file_problems(tmp_path):
    cases = {
        b"": "empty file, not a zip file",
        b"PK\x03\x04abc": "not a zip file (only 7 bytes)",
        bytes(random.Random(1).randrange(256) for _ in range(5000)): "not a zip file",
        b"\x7fELF" + bytes(2000): "not a zip file (no end of central directory record)",
    }
    for data, words in cases.items():
        assert words in audit_error(tmp_path, data)
    good = good_wheel()
    # junk in front (offsets no longer match), a second disk, a zip64 marker without record
    assert "central directory" in audit_error(tmp_path, b"junk" * 100 + good)
    multi = bytearray(good)
    struct.pack_into("<H", multi, multi.rfind(b"PK\x05\x06") + 4, 1)
    assert "multi-disk zip archives are not supported" in audit_error(tmp_path, bytes(multi))
    z64 = bytearray(good)
    struct.pack_into("<HH", z64, z64.rfind(b"PK\x05\x06") + 8, 0xFFFF, 0xFFFF)
    assert "zip64 end of central directory locator is missing" in audit_error(tmp_path, bytes(z64))


def test_every_truncation_is_a_clear_error(tmp_path):
    good = good_wheel()
    p = tmp_path / NAME
    for cut in list(range(0, 200, 7)) + list(range(200, len(good), 97)) + [len(good) - 1]:
        p.write_bytes(good[:cut])
        with pytest.raises(WheelError) as exc:
            audit_wheel(p)
        assert exc.value.path == str(p)
        assert any(w in exc.value.reason for w in ("not a zip file", "truncated", "empty file")), \
            (cut, exc.value.reason)


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo.whl"
    os.mkfifo(fifo)                          # opening it for reading would block forever
    assert audit_path(fifo).error == f"{fifo}: not a regular file"
    assert audit_path(tmp_path).error == f"{tmp_path}: not a regular file"
    missing = tmp_path / "missing.whl"
    assert audit_path(missing).error == f"{missing}: No such file or directory"


def test_reader_close_with_live_views(good_path):
    """close() must not raise while member views are still referenced (BufferError)."""
    rd = WheelReader(good_path)
    keep = [rd.raw(m) for m in rd.members]
    rd.close()
    rd.close()
    del keep


def test_chunked_inflate_is_exact():
    """iter_chunks and the streaming MemberStream give the exact bytes at any chunk size."""
    rng = random.Random(7)
    data = bytes(3_000_000) + bytes(rng.randrange(256) for _ in range(200_000)) + b"z" * 500_000
    w = hs.make_wheel({"demo/x.bin": data})
    with WheelReader(w) as rd:
        m = rd.member("demo/x.bin")
        for size in (1, 1000, 65536, 1 << 20):
            if size == 1:
                chunks = []
                for i, c in enumerate(rd.iter_chunks(m, 1)):
                    chunks.append(bytes(c))
                    if i > 3000:
                        break
                assert b"".join(chunks) == data[:len(b"".join(chunks))]
                continue
            assert b"".join(bytes(c) for c in rd.iter_chunks(m, size)) == data
        s = rd.stream(m)
        for n in (10, 300_000, 3_000_001, len(data)):
            s.ensure(n)
            assert s.available >= n and bytes(s.data()[:n]) == data[:n]


def test_stored_and_deflated_prefixes_agree(monkeypatch):
    """An ELF member read by prefixes (deflated, streaming) or whole (stored): same verdict."""
    monkeypatch.setattr(wheel, "_inflate_whole", None)
    chain = gzip.decompress((hs.CORPUS / "elf-verneed-long-chain.elf.gz").read_bytes())
    files = {EXT: chain}
    a = audit_wheel(hs.make_wheel(files, compression=zipfile.ZIP_STORED), filename=NAME)
    b = audit_wheel(hs.make_wheel(files, compression=zipfile.ZIP_DEFLATED), filename=NAME)
    assert a.to_dict() == b.to_dict() and a.elfs


# ------------------------------------------------------------------ RECORD

def _record_of(files, rows):
    """A wheel of ``files`` whose RECORD has exactly ``rows`` (plus its own row)."""
    text = "".join(",".join(map(str, r)) + "\n" for r in rows) + "demo-1.0.dist-info/RECORD,,\n"
    return hs.make_wheel(files, record_override=text)


def _rows(files):
    info = "demo-1.0.dist-info"
    full = dict(files)
    full.setdefault(f"{info}/METADATA",
                    b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    full.setdefault(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                                     b"false\nTag: cp311-cp311-manylinux_2_17_x86_64\n")
    return [[n, hs.record_hash(d), len(d)] for n, d in full.items()]


def _check(data):
    with WheelReader(data) as rd:
        return verify_record(rd)


def test_record_ok_and_exemptions():
    files = good_files()
    rows = _rows(files)
    rows[0][1] = rows[0][1] + "="                         # padding is tolerated
    rows[1][1] = "sha512=" + hs.base64.urlsafe_b64encode(
        hs.hashlib.sha512(files["demo/__init__.py"]).digest()).rstrip(b"=").decode()
    w = _record_of(files, rows)
    rep = _check(w)
    assert rep.ok and rep.checked == 5, rep
    # signatures and directories need no row
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(w)) as zin, zipfile.ZipFile(out, "w") as zout:
        for i in zin.infolist():
            zout.writestr(i, zin.read(i))
        zout.writestr("demo-1.0.dist-info/RECORD.jws", b"{}")
        zout.writestr("demo/sub/", b"")
    assert _check(out.getvalue()).ok


def test_record_problems_are_reported_not_trusted():
    files = good_files()
    rows = _rows(files)
    by = {r[0]: r for r in rows}
    by["demo/data.txt"][1] = hs.record_hash(b"something else")     # wrong digest
    by["demo/__init__.py"][2] = 999                                 # right digest, wrong size
    by["demo-1.0.dist-info/METADATA"][1] = "md5=abc"                # forbidden algorithm
    by["demo-1.0.dist-info/WHEEL"][1] = ""                          # no hash
    del by[EXT]                                                     # member not listed
    rows = list(by.values()) + [["demo/ghost.py", hs.record_hash(b""), 0]]   # absent member
    r = audit_wheel(_record_of(files, rows), filename=NAME, verify_record=True)
    rep = r.record
    assert not rep.ok and not r.ok and r.error is None and not r.unsatisfied_claims
    assert "sha256 digest differs from RECORD" in rep.mismatched["demo/data.txt"]
    assert rep.mismatched["demo/__init__.py"] == "size differs from RECORD (RECORD 999, actual 20)"
    assert "too weak" in rep.mismatched["demo-1.0.dist-info/METADATA"]
    assert rep.mismatched["demo-1.0.dist-info/WHEEL"] == "listed in RECORD without a hash"
    assert rep.unlisted == [EXT] and rep.missing == ["demo/ghost.py"]
    assert rep.checked == 0
    text = show_text(r)
    assert "RECORD does NOT match the wheel" in text and f"{EXT}: not listed in RECORD" in text
    d = r.to_dict()
    assert d["ok"] is False and d["record"]["missing"] == ["demo/ghost.py"]


@pytest.mark.parametrize("record,words", [
    (b"\xff\xfe not utf-8\n", "RECORD is not valid UTF-8"),
    (b"demo/x\0,sha256=abc,1\n", "NUL byte in member name"),
    (b"demo/__init__.py,sha256=x\n", "RECORD line 1 has 2 fields, not 3"),
    (b"demo/__init__.py,,\ndemo/__init__.py,,\n", "RECORD lists 'demo/__init__.py' more than once"),
    (b"../../etc/passwd,,\n", "'..' or '.' component"),
    (b'"demo/' + b"x" * 200_000 + b'",,\n', "RECORD is not valid CSV"),     # field too large
])
def test_malformed_record(record, words):
    rep = _check(hs.make_wheel({"demo/__init__.py": b""}, record_override=record))
    assert not rep.ok and any(words in e for e in rep.errors), rep.errors


def test_record_digest_problems():
    for digest, words in (("sha1=abc", "too weak"), ("foo=bar", "unknown hash algorithm 'foo'"),
                          ("sha256", "malformed hash"), ("shake_128=abc", "unknown hash")):
        rep = _check(_record_of({"demo/a.py": b"a"}, [["demo/a.py", digest, 1]]))
        assert words in rep.mismatched["demo/a.py"], rep
    rep = _check(_record_of({"demo/a.py": b"a"}, [["demo/a.py", hs.record_hash(b"a"), "-1"]]))
    assert "malformed size" in rep.mismatched["demo/a.py"]


def test_record_missing_or_ambiguous():
    rep = _check(hs.make_wheel({"demo/a.py": b""}, record=False))
    assert rep.errors == ["the wheel has no .dist-info/RECORD file"] and not rep.ok
    w = hs.make_wheel({"other-1.0.dist-info/RECORD": b""})
    assert "several RECORD files" in _check(w).errors[0]


def test_corrupt_member_under_record_verification_is_unreadable(tmp_path):
    entries = [Entry(n, d) for n, d in dist_info({"demo/a.txt": b"a" * 100}).items()]
    entries[0].crc ^= 1
    reason = audit_error(tmp_path, build_zip(entries), verify=True)
    assert "CRC-32 mismatch in member 'demo/a.txt'" in reason
    assert audit_wheel(build_zip(entries)).error is None   # without it, not read at all


def test_cli_verify_record(tmp_path, good_path):
    files = good_files()
    rows = _rows(files)
    rows[0][1] = hs.record_hash(b"tampered")
    bad = write(tmp_path, _record_of(files, rows), "bad-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    out = io.StringIO()
    assert cli.main(["show", str(good_path), "--verify-record"], out=out) == 0
    assert "RECORD matches the wheel" in out.getvalue()
    out = io.StringIO()
    assert cli.main(["show", str(bad), "--verify-record"], out=out) == 1
    assert "RECORD does NOT match" in out.getvalue() and "digest differs" in out.getvalue()
    assert cli.main(["show", str(bad)], out=io.StringIO()) == 0       # not asked: not checked
    out = io.StringIO()
    assert cli.main(["audit", str(tmp_path), "--verify-record", "--json"], out=out) == 1
    res = {Path(d["path"]).name: d for d in map(json.loads, out.getvalue().splitlines())}
    assert res[bad.name]["ok"] is False and res[bad.name]["record"]["mismatched"]
    assert res[good_path.name]["ok"] is True and res[good_path.name]["record"]["ok"]
    out = io.StringIO()
    assert cli.main(["audit", str(tmp_path), "--verify-record"], out=out) == 1
    assert f"BAD    {bad}: RECORD: {EXT}: sha256 digest differs" in out.getvalue()


# ------------------------------------------------------------------ batch audits

def _broken_wheels(d):
    """name -> (bytes, words expected in the error) for a directory of broken wheels."""
    good = good_wheel()
    entries = [_bomb_member() if n == EXT else Entry(n, dd)
               for n, dd in dist_info({EXT: b""}).items()]
    bad_elf = bytearray(SO)
    bad_elf[4] = 9
    return {
        "garbage-1.0-py3-none-any.whl": (b"this is not a zip file" * 20, "not a zip file"),
        "empty-1.0-py3-none-any.whl": (b"", "empty file"),
        "truncated-1.0-py3-none-any.whl": (good[:len(good) // 2], "zip file is truncated"),
        "bomb-1.0-py3-none-any.whl": (build_zip(entries), "inflates past its declared size"),
        "evil-1.0-py3-none-any.whl": (build_zip(_entries("../../evil.so")), "'..' or '.'"),
        "badelf-1.0-py3-none-any.whl": (hs.make_wheel({EXT: bytes(bad_elf)}),
                                        "is not a valid ELF file: bad ELF class"),
        "symlink-1.0-py3-none-any.whl": (build_zip(_entries("demo/l", b"/", mode=0o120777)),
                                         "symbolic link member"),
        "bzip2-1.0-py3-none-any.whl": (build_zip(_entries(method=12)), "compression method 12"),
    }


def test_batch_cli_reports_each_broken_wheel_and_audits_the_rest(tmp_path):
    d = tmp_path / "wheels"
    (d / "sub").mkdir(parents=True)
    broken = _broken_wheels(d)
    for name, (data, _words) in broken.items():
        (d / name).write_bytes(data)
    (d / NAME).write_bytes(good_wheel())
    (d / "sub" / "pure-1.0-py3-none-any.whl").write_bytes(hs.make_wheel({"p/__init__.py": b""}))
    os.mkfifo(d / "fifo-1.0-py3-none-any.whl")            # must not block the batch
    before = {p: snapshot(p) for p in d.rglob("*.whl") if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", str(d), "--jobs", "2",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr              # 3: some wheel is unreadable
    results = {Path(r["path"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(results) == len(broken) + 3
    for name, (_data, words) in broken.items():
        r = results[name]
        assert r["ok"] is False and words in r["error"], (name, r)
        assert r["error"].startswith(str(d / name) + ": ")
    assert results["fifo-1.0-py3-none-any.whl"]["error"].endswith("not a regular file")
    assert results[NAME]["ok"] is True and results[NAME]["elfs"]
    assert results["pure-1.0-py3-none-any.whl"]["ok"] is True
    assert f"{len(broken) + 3} wheels audited" in proc.stderr and f"{len(broken) + 1} unreadable" \
        in proc.stderr
    assert {p: snapshot(p) for p in before} == before, "an input was modified"
    # text mode names each broken file with its reason
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", str(d), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    for name, (_data, words) in broken.items():
        assert any(line.startswith(f"ERROR  {d / name}: ") and words in line
                   for line in proc.stdout.splitlines()), name
    # without the broken ones: 0
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / NAME).write_bytes(good_wheel())
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", str(clean), "--jobs", "2",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
