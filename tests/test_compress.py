"""How new members are compressed: libdeflate whole or in pieces, zlib pieces without it.

Oracles: zlib's inflater (``zlib.decompress`` with raw wbits) and ``zipfile``
read back every byte; the pieces of a split member are checked to be real
separate pieces (sync-flush boundaries) that still form one stream; the
zip structure passes the PyPI checker of pypi_rules.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pypi_rules import pypi_zip_problems

from fastelf import deflating, wheelwriter
from fastelf.deflating import deflate_chunked, deflate_whole
from fastelf.wheelwriter import Deflated, Deflater, WheelWriter


def _sample() -> bytes:
    """Real machine code (compressible, not uniform): a few copies of an executable."""
    data = open(shutil.which("ls") or sys.executable, "rb").read()
    return (data * (1 + (600_000 // len(data))))[:600_000]


@pytest.mark.parametrize("level", [1, 6, 9, -1])
def test_pieces_form_one_stream_that_zlib_inflates(level):
    data = _sample()
    with ThreadPoolExecutor(2) as pool:
        out = deflate_chunked(data, level, pool, chunk=64 * 1024)
    assert zlib.decompress(out, -15) == data
    # it really is in pieces: a sync flush (empty stored block) ends each of the first 9
    assert out.count(b"\x00\x00\xff\xff") >= 9
    # and the pieces use the bytes before them (preset dictionary): no bigger than 2%
    # over one zlib stream at the same level
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    assert len(out) <= 1.02 * len(z.compress(data) + z.flush())


def test_chunked_edge_sizes():
    with ThreadPoolExecutor(2) as pool:
        for n in (0, 1, 4095, 4096, 4097, 3 * 4096):
            data = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
            assert zlib.decompress(deflate_chunked(data, 6, pool, chunk=4096), -15) == data


def _write(tmp_path, members, **kw) -> Path:
    w = WheelWriter(**kw)
    for name, data in members.items():
        w.add(name, data)
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "t.whl"
    w.write(out)
    return out


@pytest.mark.parametrize("libdeflate", [True, False])
def test_large_member_split_across_threads_reads_back(tmp_path, monkeypatch, libdeflate):
    if libdeflate and deflating._libdeflate is None:
        pytest.skip("deflate (libdeflate) not installed")
    if not libdeflate:
        monkeypatch.setattr(deflating, "_libdeflate", None)
    monkeypatch.setattr(deflating, "CHUNK_SIZE", 64 * 1024)
    monkeypatch.setattr(deflating, "PIECE_SIZE", 64 * 1024)
    data = _sample()
    out = _write(tmp_path, {"pkg.libs/big.so": data, "pkg/a.py": b"x = 1\n"}, jobs=4)
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        assert zf.read("pkg.libs/big.so") == data
        info = zf.getinfo("pkg.libs/big.so")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < len(data)
        raw = _raw_member(out, info)
    assert raw.count(b"\x00\x00\xff\xff") >= 8         # it was split
    assert pypi_zip_problems(out) == []


def test_whole_members_use_libdeflate_when_installed(tmp_path):
    if deflating._libdeflate is None:
        pytest.skip("deflate (libdeflate) not installed")
    data = _sample()
    out = _write(tmp_path, {"pkg.libs/lib.so": data}, jobs=2)
    with zipfile.ZipFile(out) as zf:
        info = zf.getinfo("pkg.libs/lib.so")
        assert zf.read(info) == data
        raw = _raw_member(out, info)
    # libdeflate's stream, not zlib's: the bytes differ from zlib's at the same level
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert raw != z.compress(data) + z.flush()
    assert zlib.decompress(raw, -15) == data
    assert deflate_whole(data, 6) == raw


def test_level_zero_stores(tmp_path):
    data = _sample()
    out = _write(tmp_path, {"a.so": data}, compresslevel=0, jobs=4)
    with zipfile.ZipFile(out) as zf:
        assert zf.getinfo("a.so").compress_type == zipfile.ZIP_STORED and zf.read("a.so") == data


def _raw_member(path: Path, info: zipfile.ZipInfo) -> bytes:
    """The compressed bytes of a member, located through its local header."""
    buf = io.BytesIO(path.read_bytes())
    buf.seek(info.header_offset + 26)
    nlen, xlen = int.from_bytes(buf.read(2), "little"), int.from_bytes(buf.read(2), "little")
    buf.seek(info.header_offset + 30 + nlen + xlen)
    return buf.read(info.compress_size)


@pytest.mark.parametrize("libdeflate", [True, False])
@pytest.mark.parametrize("level", [0, 1, 6, -1])
@pytest.mark.parametrize("jobs", [1, 4])
def test_deflated_ahead_writes_the_same_bytes_as_the_writer(tmp_path, monkeypatch, libdeflate,
                                                            level, jobs):
    """A member compressed ahead (``Deflater``, as repair does for patched members) is
    written byte for byte as the writer would have compressed it (reproducible output
    whichever path a member takes); zipfile reads every member back (oracle: zipfile),
    and the record of each says its size and CRC as zipfile computes them."""
    if libdeflate and deflating._libdeflate is None:
        pytest.skip("deflate (libdeflate) not installed")
    if not libdeflate:
        monkeypatch.setattr(deflating, "_libdeflate", None)
    monkeypatch.setattr(deflating, "CHUNK_SIZE", 64 * 1024)
    monkeypatch.setattr(deflating, "PIECE_SIZE", 64 * 1024)        # the split path too
    members = {"pkg.libs/big.so": _sample(), "pkg/random.bin": os.urandom(200_000),
               "pkg/empty.so": b""}
    when = (2020, 1, 1, 0, 0, 0)
    (tmp_path / "a").mkdir()
    direct = _write(tmp_path / "a", members, compresslevel=level, jobs=jobs, date_time=when)
    w = WheelWriter(compresslevel=level, date_time=when, jobs=jobs)
    with Deflater(level, jobs=jobs, max_pending=256 * 1024) as deflater:
        futures = {name: deflater.submit(bytearray(data)) for name, data in members.items()}
        for name, future in futures.items():
            done = future.result()
            assert isinstance(done, Deflated) and done.size == len(members[name])
            assert done.crc == zlib.crc32(members[name])
            w.add_deflated(name, done)
    (tmp_path / "b").mkdir()
    ahead = tmp_path / "b" / "t.whl"
    w.write(ahead)
    assert ahead.read_bytes() == direct.read_bytes()
    with zipfile.ZipFile(ahead) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in members} == members


@pytest.mark.parametrize("level", [0, 6, 9])
def test_small_writes_deflated_inline_give_the_pool_s_bytes(tmp_path, monkeypatch, level):
    """Below THREADED_MIN_BYTES the members are deflated in the writing thread (no pool
    to start); the file is byte for byte the one the thread pool writes, and zipfile
    reads every member back."""
    members = {"pkg/a.so": _sample()[:300_000], "pkg/b.py": b"x = 1\n" * 50,
               "pkg/empty": b"", "pkg.dist-info/RECORD": b"pkg/a.so,,\n"}
    dt = (2020, 1, 2, 3, 4, 6)
    inline = _write(tmp_path / "inline", members, compresslevel=level, date_time=dt, jobs=2)
    monkeypatch.setattr(wheelwriter, "THREADED_MIN_BYTES", 0)
    pooled = _write(tmp_path / "pooled", members, compresslevel=level, date_time=dt, jobs=2)
    assert inline.read_bytes() == pooled.read_bytes()
    with zipfile.ZipFile(inline) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == members
