"""Turn bytes into one raw deflate stream, whole or in pieces compressed on several threads.

Three ways, chosen by :func:`splits` so that the bytes depend only on the data, the
level, whether libdeflate (the ``deflate`` package, the ``[speed]`` extra) is
installed, and whether more than one thread may be used -- never on the number of
cores, so a repair is reproducible from one machine to another:

* whole: one libdeflate call (faster and smaller than zlib at the same level), or
  zlib without libdeflate;
* libdeflate pieces (pigz's idea with libdeflate's speed): the member is cut into
  ``ceil(size / PIECE_SIZE)`` equal pieces, each compressed alone; libdeflate always
  ends a stream with a final block and cannot sync-flush, so the end of each piece
  but the last is found by walking its blocks (:mod:`fastelf._deflateblocks`), its
  final bit is cleared and the empty stored block zlib's Z_SYNC_FLUSH writes is
  appended (byte-aligned, not final).  Concatenated in order they are one stream;
* zlib pieces of ``CHUNK_SIZE`` when libdeflate is missing, each primed with the
  32 KiB before it as a preset dictionary and sync-flushed.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, NamedTuple, Union

from ._deflateblocks import FinalBlock, final_block
from .wheel import optional_module

if TYPE_CHECKING:       # concurrent.futures is imported only where threads are started
    from concurrent.futures import ThreadPoolExecutor

Data = Union[bytes, bytearray, memoryview]     # a member's bytes, however they are held

_libdeflate = optional_module("deflate")        # the [speed] extra: libdeflate

CHUNK_SIZE = 1 << 20          # input bytes per zlib piece of a member (no libdeflate)
_WINDOW = 32768               # deflate's window: each zlib piece is primed with the bytes before it
# Input bytes per libdeflate piece, at most: a member of at least two pieces is cut into
# ceil(size / PIECE_SIZE) equal ones.  Measured at level 6 on 2 threads (2 cores):
#   libicudata 31.3 MB: 2 MiB +0.099% bytes, 1.59x; 4 MiB +0.022%, 1.71x; 8 MiB +0.001%, 1.70x
#   lxml's etree 13.5 MB: 2 MiB +0.055%, 1.58x; 4 MiB +0.064%, 1.38x; 8 MiB: not split
#   libcrypto 4.7 MB: 2 MiB +0.037%, 1.56x; 4 and 8 MiB: not split
# 4 MiB splits the members that are compressed alone or last (over the Deflater's
# 16 MiB bound, or etree-sized) at a few hundredths of a percent; mid-sized ones stay
# whole and share the cores with the members beside them in the Deflater, and each
# cut costs a walk (~100 MB/s of compressed bytes) and a 5-byte stored block.
PIECE_SIZE = 4 << 20
# the empty stored block that ends every libdeflate piece but the last, after its
# 3 header bits (not final, type 0) and the zero bits up to the byte boundary
_SYNC_MARK = b"\x00\x00\xff\xff"


def libdeflate_level(level: int) -> int:
    """libdeflate's level for zlib's: -1 means zlib's default, which is 6."""
    return 6 if level < 0 else level


def deflate_whole(data: Data, level: int) -> bytes | bytearray:
    """One raw deflate stream: libdeflate when installed (faster and smaller than zlib
    at the same level), else zlib."""
    if _libdeflate is not None and level != 0:
        # a buffer is read in place (no copy of a large member)
        return _libdeflate.deflate_compress(data, libdeflate_level(level))
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def deflate_piece(data: Data, start: int, stop: int, level: int) -> bytes:
    """Bytes ``data[start:stop]`` as a piece of one raw deflate stream (pigz's method).

    The piece is primed with the 32 KiB before it as a preset dictionary, so
    matches may reach back across the cut (they are resolved by the inflater,
    which has those bytes already); a piece that is not the last ends with a
    sync flush (an empty stored block: byte-aligned, not final), the last with
    the final block.  Concatenated in order, the pieces are one valid stream."""
    last = stop >= len(data)
    if start:
        z = zlib.compressobj(level, zlib.DEFLATED, -15,
                             zdict=bytes(data[max(0, start - _WINDOW):start]))
    else:
        z = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = z.compress(data[start:stop])
    return out + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def deflate_chunked(data: Data, level: int, pool: ThreadPoolExecutor,
                    chunk: int | None = None) -> bytes:
    """``data`` as one raw deflate stream compressed in zlib pieces on ``pool``'s threads
    (zlib releases the GIL while it compresses)."""
    chunk = chunk or CHUNK_SIZE
    bounds = [(i, min(i + chunk, len(data))) for i in range(0, max(len(data), 1), chunk)]
    return b"".join(pool.map(lambda b: deflate_piece(data, b[0], b[1], level), bounds))


def piece_bounds(size: int, piece_size: int) -> list[tuple[int, int]]:
    """``ceil(size / piece_size)`` (at least one) equal ``(start, stop)`` ranges that
    cover ``size`` bytes: the cuts depend on the size alone, not on the cores."""
    n = max(1, -(-size // piece_size))
    return [(i * size // n, (i + 1) * size // n) for i in range(n)]


class Piece(NamedTuple):
    """One libdeflate piece of a member as its thread leaves it: the compressed bytes,
    and for a piece that others follow, where its final block starts and ends."""
    stream: bytes
    end: FinalBlock | None          # None for the member's last piece: it stays final


def walk_piece(stream: bytes | bytearray, size: int) -> FinalBlock:
    """Where the complete raw deflate stream ``stream`` of ``size`` bytes ends.

    ValueError when the walk fails, when it decodes another length than ``size``
    (the walk and the compressor disagree), or when bytes follow the stream's end."""
    end = final_block(stream)
    if end.size != size:
        raise ValueError(f"the stream inflates to {end.size} bytes, not {size}")
    used = (end.end_bit + 7) // 8
    if used != len(stream):
        raise ValueError(f"{len(stream) - used} bytes after the end of the stream")
    return end


def seal(out: bytearray, start: int, end: FinalBlock) -> None:
    """Make the stream at ``out[start:]`` (walked: ``end``) a piece that more may follow,
    in place: its final block's BFINAL bit cleared, the bits after its last block
    set to zero, and an empty stored block appended (3 header bits, zeros to the byte
    boundary, ``00 00 FF FF``: what zlib's Z_SYNC_FLUSH writes)."""
    header = 8 * start + end.header_bit
    out[header >> 3] &= 0xFF ^ (1 << (header & 7))
    tail = end.end_bit & 7                  # start is whole bytes: same bit in the byte
    if tail:
        out[-1] &= (1 << tail) - 1
    if tail == 0 or tail > 5:               # the 3 header bits do not fit in the last byte
        out.append(0)
    out += _SYNC_MARK


def _libdeflate_compress(data: Data, start: int, stop: int, level: int) -> bytes:
    if _libdeflate is None:
        raise RuntimeError("libdeflate pieces need the deflate package")
    # a memoryview slice: libdeflate reads the member in place
    return _libdeflate.deflate_compress(memoryview(data)[start:stop], libdeflate_level(level))


def _compress_piece(data: Data, bounds: tuple[int, int], level: int) -> Piece | None:
    """A piece compressed and, unless it is the last, walked (in a pool thread: both
    release the GIL); None where the walk disagrees (the caller falls back)."""
    start, stop = bounds
    stream = _libdeflate_compress(data, start, stop, level)
    if stop >= len(data):
        return Piece(stream, None)
    try:
        return Piece(stream, walk_piece(stream, stop - start))
    except ValueError:
        return None


def deflate_libdeflate_pieces(data: Data, level: int, pool: ThreadPoolExecutor,
                              piece_size: int | None = None) -> bytes | bytearray:
    """``data`` as one raw deflate stream made of libdeflate pieces compressed (and
    walked) on ``pool``'s threads; the whole member in one call if any piece's walk
    disagrees (never seen: a safety net).  The pieces are appended to one buffer as
    they come, in order, so a piece's bytes are dropped once copied (the member's
    compressed size is held about once, not twice)."""
    bounds = piece_bounds(len(data), piece_size or PIECE_SIZE)
    out = bytearray()
    for piece in pool.map(lambda b: _compress_piece(data, b, level), bounds):
        if piece is None:
            return deflate_whole(data, level)   # map cancels the pieces not started
        start = len(out)
        out += piece.stream
        if piece.end is not None:
            seal(out, start, piece.end)
    return out


def splits(size: int, level: int, jobs: int) -> bool:
    """Whether a member of ``size`` bytes is compressed in pieces across threads: not
    stored, more than one thread, and at least two pieces big (libdeflate's pieces,
    or zlib's when libdeflate is missing).  Not the number of threads: the bytes
    written must not depend on the machine's cores."""
    piece = PIECE_SIZE if _libdeflate is not None else CHUNK_SIZE
    return level != 0 and jobs > 1 and size >= 2 * piece


def deflate_split(data: Data, level: int, pool: ThreadPoolExecutor) -> bytes | bytearray:
    """``data`` compressed in pieces on ``pool`` (for a member :func:`splits` says to split):
    libdeflate's when installed, else zlib's."""
    if _libdeflate is not None:
        return deflate_libdeflate_pieces(data, level, pool)
    return deflate_chunked(data, level, pool)
