"""Raw deflate streams made of libdeflate pieces, and the block walker that joins them.

Oracles: zlib's inflater (``zlib.decompressobj(-15)``: where a stream ends, what it
inflates to, whether it is finished, whether it is valid at all) and ``zipfile`` /
``installer`` for wheels written with a split member.  The walker
(``fastelf._deflateblocks.final_block``) must agree with zlib on every stream zlib
accepts and reject every stream zlib rejects; its results are never compared with
numbers copied from it.
"""

from __future__ import annotations

import glob
import os
import random
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypi_rules import pypi_zip_problems
from repair_support import check_record

from fastelf import deflating
from fastelf._deflateblocks import final_block
from fastelf.deflating import (
    deflate_libdeflate_pieces,
    deflate_whole,
    piece_bounds,
    seal,
    walk_piece,
)
from fastelf.wheelwriter import Deflater, WheelWriter

libdeflate = pytest.importorskip("deflate")


def unfinal(stream: bytes, size: int) -> bytearray:
    """A copy of the whole stream ``stream`` (of ``size`` bytes) made a piece more may
    follow, as the pool's pieces are: walked, then sealed."""
    end = walk_piece(stream, size)
    out = bytearray(stream)
    seal(out, 0, end)
    return out


def libdeflate_piece(data: bytes, start: int, stop: int, level: int) -> bytes:
    """``data[start:stop]`` compressed alone by libdeflate, made joinable unless last."""
    out = libdeflate.deflate_compress(data[start:stop], level)
    return out if stop >= len(data) else bytes(unfinal(out, stop - start))

EXAMPLES = int(os.environ.get("FASTELF_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("FASTELF_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), print_blob=True)


# ------------------------------------------------------------------ inputs

def _text(n: int) -> bytes:
    """Text-like bytes: words from a small vocabulary (dynamic blocks, many matches)."""
    rng = random.Random(n)
    words = [b"deflate", b"block", b"stream", b"wheel", b"piece", b"the", b"of", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def _system_libraries() -> list[Path]:
    """A few real shared libraries of this machine (machine code, string tables)."""
    found = sorted(Path(p) for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")
                   if os.path.isfile(p) and not os.path.islink(p))
    sized = [p for p in found if 100_000 <= p.stat().st_size <= 3_000_000]
    return sized[:: max(1, len(sized) // 4)][:4]


DATA = {
    "random": os.urandom(300_000),          # incompressible: stored blocks
    "text": _text(400_000),
    "zeros": bytes(500_000),
    "short": b"abc",
    "empty": b"",
}
for _lib in _system_libraries():
    DATA[f"lib:{_lib.name}"] = _lib.read_bytes()


def _zlib(data: bytes, level: int = 6, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return z.compress(data) + z.flush()


def _inflate_all(stream: bytes) -> tuple[bytes, bool, bytes]:
    """zlib's view of ``stream``: (bytes inflated, finished, bytes after the end)."""
    d = zlib.decompressobj(-15)
    out = d.decompress(stream)
    return out, d.eof, d.unused_data


def _streams() -> list[tuple[str, bytes, bytes]]:
    """(name, data, stream) for libdeflate at every level and zlib at several settings."""
    out = []
    for name, data in DATA.items():
        for level in (0, 1, 6, 9, 12):
            stream = libdeflate.deflate_compress(data, level)
            out.append((f"{name}/libdeflate-{level}", data, stream))
        for level in (0, 1, 6, 9):
            out.append((f"{name}/zlib-{level}", data, _zlib(data, level)))
        for strategy in (zlib.Z_FIXED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE):
            out.append((f"{name}/zlib-strategy{strategy}", data, _zlib(data, 6, strategy)))
    return out


STREAMS = _streams()


# ------------------------------------------------------------ the walker vs zlib

@pytest.mark.parametrize("name,data,stream", STREAMS, ids=[s[0] for s in STREAMS])
def test_end_and_length_agree_with_zlib(name, data, stream):
    """zlib, given the stream and junk after it, stops exactly where the walker says the
    stream ends (byte granularity: it leaves exactly the junk), and inflates to the
    length the walker counted, which is the length of the data."""
    junk = b"JUNK\x00\xff" + bytes(range(40))
    out, eof, unused = _inflate_all(stream + junk)
    end = final_block(stream + junk)
    assert eof and out == data
    assert unused == junk
    assert (end.end_bit + 7) // 8 == len(stream)
    assert end.size == len(out) == len(data)
    assert end.header_bit < end.end_bit


def _inflates(stream: bytes | bytearray) -> tuple[bytes | None, bool]:
    """(what zlib inflates ``stream`` to, or None on an error; whether it is finished)."""
    d = zlib.decompressobj(-15)
    try:
        return d.decompress(bytes(stream)), d.eof
    except zlib.error:
        return None, False


def _joined_with_flip(stream: bytes, bit: int, end_bit: int, follower: bytes) -> bytes:
    """``stream`` with ``bit`` flipped instead of its BFINAL bit, the rest joined as
    unfinal() joins (padding zeroed, an empty stored block), then ``follower``."""
    out = bytearray(stream)
    out[bit >> 3] ^= 1 << (bit & 7)
    if end_bit & 7:
        out[-1] &= (1 << (end_bit & 7)) - 1
    if end_bit & 7 == 0 or end_bit & 7 > 5:
        out.append(0)
    return bytes(out) + b"\x00\x00\xff\xff" + follower


@pytest.mark.parametrize("kind", ["text", "random", "zeros", "short"])
@pytest.mark.parametrize("maker", ["libdeflate", "zlib"])
def test_the_reported_bit_is_the_only_bfinal(kind, maker):
    """Flipping the reported bit gives a stream zlib inflates to the same bytes and
    calls unfinished; joined to a following stream the way unfinal() joins, it
    inflates to both pieces' bytes.  Flipping any other candidate (the bits near it,
    the stream's first bits where the first block's header is) instead never yields
    that joined output: those bits are code bits or another block's header."""
    data = DATA[kind][:60_000]
    stream = libdeflate.deflate_compress(data, 6) if maker == "libdeflate" else _zlib(data)
    end = final_block(stream)
    flipped = bytearray(stream)
    flipped[end.header_bit >> 3] ^= 1 << (end.header_bit & 7)
    assert _inflates(flipped) == (data, False)
    follower_data = b"the next piece " * 50
    follower = libdeflate.deflate_compress(follower_data, 6)
    both = data + follower_data
    joined = _joined_with_flip(stream, end.header_bit, end.end_bit, follower)
    assert _inflates(joined) == (both, True)
    last = min(8 * len(stream), end.end_bit)
    candidates = set(range(max(0, end.header_bit - 96), min(last, end.header_bit + 96)))
    candidates |= set(range(min(24, last)))
    candidates.discard(end.header_bit)
    assert candidates
    for bit in sorted(candidates):
        assert _inflates(_joined_with_flip(stream, bit, end.end_bit, follower)) != (both, True), bit


# ------------------------------------------------------------- joined pieces

def _join(data: bytes, bounds: list[tuple[int, int]], level: int) -> bytes:
    """The pieces compressed and made joinable one by one (ValueError would fail the test)."""
    return b"".join(libdeflate_piece(data, a, b, level) for a, b in bounds)


@pytest.mark.parametrize("level", range(1, 13))
@pytest.mark.parametrize("kind", ["random", "text", "zeros"])
def test_joined_pieces_inflate_to_the_data_at_every_level(level, kind):
    data = DATA[kind]
    bounds = piece_bounds(len(data), 64 * 1024)
    joined = _join(data, bounds, level)
    out, eof, unused = _inflate_all(joined)
    assert out == data and eof and unused == b""
    # each cut is a sync-flush point: an empty stored block, not final
    assert joined.count(b"\x00\x00\xff\xff") >= len(bounds) - 1
    # the pool path gives the same bytes: no piece fell back to one whole stream
    with ThreadPoolExecutor(2) as pool:
        assert deflate_libdeflate_pieces(data, level, pool, 64 * 1024) == joined


@pytest.mark.parametrize("name", [n for n in DATA if n.startswith("lib:")])
def test_system_libraries_joined(name):
    data = DATA[name]
    with ThreadPoolExecutor(2) as pool:
        joined = deflate_libdeflate_pieces(data, 6, pool, 100_000)
    assert joined == _join(data, piece_bounds(len(data), 100_000), 6)
    assert zlib.decompress(joined, -15) == data
    # independent pieces cost little: even pieces of 100 KB (40x smaller than
    # PIECE_SIZE) are within 3% of one libdeflate stream
    assert len(joined) <= 1.03 * len(deflate_whole(data, 6)) + 64


@pytest.mark.parametrize("bounds", [
    [(0, 1), (1, 5000)],                   # a first piece of one byte
    [(0, 4999), (4999, 5000)],             # a last piece of one byte
    [(0, 1), (1, 2), (2, 3), (3, 5000)],   # several one-byte pieces
    [(i, i + 1) for i in range(64)],       # all one byte
])
def test_tiny_pieces(bounds):
    data = DATA["text"][:bounds[-1][1]]
    for level in (1, 6, 12):
        assert zlib.decompress(_join(data, bounds, level), -15) == data


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("strategy", [zlib.Z_DEFAULT_STRATEGY, zlib.Z_FIXED,
                                      zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE])
def test_zlib_made_pieces_joined(level, strategy):
    """The walker handles any valid deflate, not only libdeflate's: whole zlib streams
    of independent pieces, made joinable, inflate to the data."""
    data = DATA["text"][:200_000] + DATA["random"][:50_000] + bytes(30_000)
    bounds = piece_bounds(len(data), 40_000)
    parts = [_zlib(data[a:b], level, strategy) for a, b in bounds]
    joined = b"".join([unfinal(p, b - a) for p, (a, b) in zip(parts[:-1], bounds)] + parts[-1:])
    assert zlib.decompress(joined, -15) == data


def test_unfinal_rejects_a_length_mismatch_and_trailing_bytes():
    data = DATA["text"][:10_000]
    stream = libdeflate.deflate_compress(data, 6)
    with pytest.raises(ValueError, match="inflates to"):
        unfinal(stream, len(data) - 1)
    with pytest.raises(ValueError, match="after the end"):
        unfinal(stream + b"\x00", len(data))


@FUZZ
@given(size=st.integers(0, 300_000), piece=st.integers(1, 120_000),
       level=st.integers(1, 12), kind=st.sampled_from(["random", "text", "zeros"]))
def test_random_sizes_and_piece_sizes(size, piece, level, kind):
    source = DATA[kind] * 2
    data = source[:size]
    bounds = piece_bounds(size, piece)
    if len(bounds) > 400:                    # keep each example quick
        bounds = piece_bounds(size, max(piece, size // 400 + 1))
    assert zlib.decompress(_join(data, bounds, level), -15) == data


# --------------------------------------------------------------- malformed streams

class _Bits:
    """Writes a deflate bit stream, least significant bit first."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def put(self, value: int, n: int) -> _Bits:
        self.bits += [(value >> i) & 1 for i in range(n)]
        return self

    def code(self, code: int, n: int) -> _Bits:
        """A Huffman code: sent most significant bit first."""
        self.bits += [(code >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(sum(b << i for i, b in enumerate(bits[k:k + 8]))
                     for k in range(0, len(bits), 8))


def _fixed_lit(sym: int) -> tuple[int, int]:
    """The fixed literal/length code of ``sym`` (RFC 1951 3.2.6)."""
    if sym < 144:
        return 0x30 + sym, 8
    if sym < 256:
        return 0x190 + sym - 144, 9
    if sym < 280:
        return sym - 256, 7
    return 0xC0 + sym - 280, 8


def _fixed(*symbols: tuple[str, int]) -> bytes:
    """A final fixed block of ("lit", sym) and ("dist", sym) codes (extra bits zero)."""
    b = _Bits().put(1, 1).put(1, 2)
    for kind, sym in symbols:
        if kind == "lit":
            b.code(*_fixed_lit(sym))
        else:
            b.code(sym, 5)
    return b.bytes()


def _dynamic(hlit: int, hdist: int, cl: dict[int, int], codes: list[tuple[int, int]]) -> bytes:
    """A final dynamic block: its counts, the code-length code's lengths ``cl``
    ({symbol: length}), then raw (value, bits) pairs for the rest."""
    order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
    hclen = max(order.index(s) for s in cl) + 1
    b = _Bits().put(1, 1).put(2, 2).put(hlit - 257, 5).put(hdist - 1, 5).put(hclen - 4, 4)
    for s in order[:max(hclen, 4)]:
        b.put(cl.get(s, 0), 3)
    for value, n in codes:
        if n < 0:
            b.code(value, -n)               # a Huffman code
        else:
            b.put(value, n)                 # extra bits
    return b.bytes()


# a complete code-length code: 0, 8, 16, 18 with 2-bit codes 00, 01, 10, 11
_CL = {0: 2, 8: 2, 16: 2, 18: 2}
_C0, _C8, _C16, _C18 = (0, -2), (1, -2), (2, -2), (3, -2)

MALFORMED = {   # name: (stream, the walker's reason)
    "block type 3": (b"\x07", "block type 3"),
    "stored: NLEN not LEN's complement": (b"\x01\x05\x00\x00\x00hello", "complement"),
    "stored: cut short": (b"\x01\x05\x00\xfa\xffhel", "cut short"),
    "fixed: distance before the start":
        (_fixed(("lit", 257), ("dist", 0), ("lit", 256)), "too far back"),
    "fixed: literal/length symbol 286":
        (_fixed(("lit", 65), ("lit", 286), ("lit", 256)), "literal/length symbol"),
    "fixed: distance symbol 30":
        (_fixed(("lit", 65), ("lit", 257), ("dist", 30), ("lit", 256)), "distance symbol"),
    "fixed: no end-of-block": (_fixed(("lit", 65), ("lit", 66)), "cut short"),
    "dynamic: 287 literal/length codes": (_dynamic(288, 1, _CL, []), "too many"),
    "dynamic: 31 distance codes": (_dynamic(257, 31, _CL, []), "too many"),
    "dynamic: code-length code over-subscribed":
        (_dynamic(257, 1, {s: 1 for s in range(19)}, []), "code-length code set"),
    "dynamic: code-length code incomplete":
        (_dynamic(257, 1, {8: 1}, [(0, -1)] * 258), "code-length code set"),
    "dynamic: repeat with nothing before": (_dynamic(257, 1, _CL, [_C16, (0, 2)]), "repeat"),
    "dynamic: repeat past the end":
        (_dynamic(257, 1, _CL, [_C18, (127, 7), _C18, (127, 7)]), "repeat"),
    "dynamic: no end-of-block code":
        (_dynamic(257, 1, _CL, [_C18, (127, 7), _C18, (109, 7)]), "no end-of-block"),
    "dynamic: literal/length code over-subscribed":
        (_dynamic(257, 1, _CL, [_C8] + [_C16, (3, 2)] * 42 + [_C16, (2, 2)]),
         "literal/length code set"),
    "empty": (b"", "cut short"),
    "one non-final empty stored block": (b"\x00\x00\x00\xff\xff", "cut short"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_streams_raise_valueerror_as_zlib_rejects_them(name):
    stream, reason = MALFORMED[name]
    d = zlib.decompressobj(-15)
    try:
        d.decompress(stream)
        zlib_ok = d.eof
    except zlib.error:
        zlib_ok = False
    assert not zlib_ok                          # the oracle: zlib rejects it too
    with pytest.raises(ValueError, match=f"invalid deflate stream: .*{reason}"):
        final_block(stream)


@pytest.mark.parametrize("name,data,stream", STREAMS[::5], ids=[s[0] for s in STREAMS[::5]])
def test_every_truncation_raises(name, data, stream):
    step = max(1, len(stream) // 200)
    for n in range(0, len(stream), step):
        with pytest.raises(ValueError):
            final_block(stream[:n])


def _agrees_with_zlib(stream: bytes) -> None:
    """The differential check: the walker accepts exactly the streams zlib finishes,
    with zlib's end and length; it raises ValueError for the rest (never crashes)."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(stream)
        ok = d.eof
    except zlib.error:
        ok = False
    try:
        end = final_block(stream)
    except ValueError:
        assert not ok
        return
    assert ok
    assert end.size == len(out)
    assert (end.end_bit + 7) // 8 == len(stream) - len(d.unused_data)


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(stream):
    _agrees_with_zlib(stream)


_SEEDS = [s for s in STREAMS if 0 < len(s[2]) < 200_000]


@FUZZ
@given(seed=st.integers(0, len(_SEEDS) - 1), flips=st.lists(st.integers(0, 1 << 30), max_size=4),
       cut=st.integers(0, 1 << 30))
def test_fuzz_bit_flips_and_cuts_of_valid_streams(seed, flips, cut):
    stream = bytearray(_SEEDS[seed][2])
    for f in flips:
        stream[(f >> 3) % len(stream)] ^= 1 << (f & 7)
    if cut % 3 == 0:
        stream = stream[:cut % (len(stream) + 1)]
    _agrees_with_zlib(bytes(stream))


# --------------------------------------------------- members and wheels in pieces

def test_a_large_member_is_split_and_reproducible(tmp_path, monkeypatch):
    """A member of several pieces is written in libdeflate pieces (not as one stream),
    and the bytes are the same at jobs=2 and jobs=8 (the cuts do not depend on the
    cores); zipfile reads it back with its CRC checked."""
    monkeypatch.setattr(deflating, "PIECE_SIZE", 64 * 1024)
    data = DATA["text"] + DATA["random"][:100_000]
    outs = []
    for jobs in (2, 8):
        w = WheelWriter(jobs=jobs, date_time=(2020, 1, 1, 0, 0, 0))
        w.add("pkg/big.so", data)
        w.add("pkg/small.py", b"x = 1\n")
        path = tmp_path / f"jobs{jobs}.whl"
        w.write(path)
        outs.append(path.read_bytes())
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None and zf.read("pkg/big.so") == data
    assert outs[0] == outs[1]
    with Deflater(6, jobs=2) as deflater:
        member = deflater.submit(data).result()
    assert bytes(member.payload) != deflate_whole(data, 6)          # pieces, not one stream
    assert bytes(member.payload) == _join(data, piece_bounds(len(data), 64 * 1024), 6)
    with Deflater(6, jobs=8) as deflater:
        assert deflater.submit(data).result().payload == member.payload


def test_repaired_wheel_with_split_members_is_valid(fx, tmp_path, monkeypatch):
    """repair with pieces so small that every grafted library is split: the wheel passes
    PyPI's zip rules, zipfile reads every member with its CRC and RECORD hash, and
    ``installer`` validates RECORD and installs it."""
    installer = pytest.importorskip("installer")
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    from fastelf.repair import repair_wheel

    monkeypatch.setattr(deflating, "PIECE_SIZE", 2048)
    calls: list[int] = []
    real = deflating.seal

    def counting(out: bytearray, start: int, end: deflating.FinalBlock) -> None:
        calls.append(start)
        real(out, start, end)

    monkeypatch.setattr(deflating, "seal", counting)
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    wheel = Path(res.output)
    assert calls, "no member was split"
    assert pypi_zip_problems(wheel) == []
    check_record(wheel)
    dest = tmp_path / "installed"
    scheme = {k: str(dest / k) for k in ("purelib", "platlib", "headers", "scripts", "data")}
    with WheelFile.open(wheel) as source:
        source.validate_record()
        installer.install(source, SchemeDictionaryDestination(
            scheme, interpreter="/usr/bin/python3", script_kind="posix"), {})


def test_a_walk_that_disagrees_falls_back_to_one_stream(monkeypatch):
    """Should the walk ever disagree with libdeflate (it never does above), the member
    is compressed whole rather than joined wrongly: zlib inflates it to the data."""
    data = DATA["text"]
    real = deflating.final_block

    def off_by_one(stream: bytes | bytearray) -> deflating.FinalBlock:
        end = real(stream)
        return end._replace(size=end.size + 1)

    monkeypatch.setattr(deflating, "final_block", off_by_one)
    with ThreadPoolExecutor(2) as pool:
        out = deflate_libdeflate_pieces(data, 6, pool, 64 * 1024)
    assert out == deflate_whole(data, 6)
    assert zlib.decompress(out, -15) == data
