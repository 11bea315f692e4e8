"""Type stub of the compiled deflate-stream walker (``cext/fastelf/_deflateblocks.pyx``)."""

from typing import NamedTuple

from typing_extensions import Buffer

class FinalBlock(NamedTuple):
    """Where a raw deflate stream's final block starts, where the stream ends (bit
    offsets, least significant bit of each byte first), and its inflated size."""

    header_bit: int
    end_bit: int
    size: int

def final_block(data: Buffer) -> FinalBlock: ...
