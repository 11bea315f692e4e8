# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Where a raw deflate stream (RFC 1951) ends, found by walking its blocks.

``final_block(data)`` decodes every block's Huffman codes (stored, fixed and
dynamic blocks) without producing any output and returns where the final
block's 3-bit header starts, the bit just past its end (after the
end-of-block code, or after a stored block's bytes), and the number of bytes
the stream inflates to.  fastelf needs the two bit offsets to join pieces
compressed independently by libdeflate into one stream (libdeflate always
ends with a final block and cannot sync-flush); the length lets the caller
check that the walk agrees with what was compressed.

The walk is as strict as zlib's inflater, never more permissive: a block type
of 3, a stored length whose complement is wrong, an over-subscribed code, an
incomplete one (zlib allows only a code whose longest length is 1, or no
distance code at all), more than 286 literal/length or 30 distance codes, a
missing end-of-block code, a length repeat with nothing to repeat or past the
end, literal/length symbols 286-287, distance symbols 30-31 and a distance
farther back than the bytes decoded so far all raise ``ValueError``, as does a
stream cut short.  Every read is bounds-checked; the decoding runs without the
GIL.  This module is not part of the ELF core and imports nothing of fastelf.
"""

from collections import namedtuple

from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.string cimport memset

FinalBlock = namedtuple("FinalBlock", ["header_bit", "end_bit", "size"])
FinalBlock.__doc__ = """Where a raw deflate stream's final block starts and where the
stream ends (bit offsets from the start, least significant bit of each byte first),
and how many bytes it inflates to."""

cdef enum:
    MAXBITS = 15          # the longest Huffman code deflate allows
    LIT_BITS = 10         # literal/length codes up to this long are found in one lookup
    DIST_BITS = 8         # distance codes likewise
    CL_BITS = 7           # code-length codes are at most 7 bits: always one lookup
    TABLE_MAX = 1 << LIT_BITS
    MAX_LIT = 288         # literal/length symbols a fixed block's code defines
    MAX_DIST = 30
    MAX_HLIT = 286        # zlib rejects more codes in a dynamic header
    MAX_HDIST = 30

# error codes of the walk; the messages are in _MESSAGES
cdef enum:
    OK = 0
    E_TRUNCATED = 1
    E_BTYPE = 2
    E_STORED = 3
    E_TOO_MANY = 4
    E_CL_CODE = 5
    E_REPEAT = 6
    E_NO_EOB = 7
    E_LIT_CODE = 8
    E_DIST_CODE = 9
    E_BAD_CODE = 10
    E_LIT_SYMBOL = 11
    E_DIST_SYMBOL = 12
    E_TOO_FAR = 13

_MESSAGES = {
    E_TRUNCATED: "stream cut short",
    E_BTYPE: "invalid block type 3",
    E_STORED: "stored block length does not match its complement",
    E_TOO_MANY: "too many length or distance symbols",
    E_CL_CODE: "invalid code-length code set",
    E_REPEAT: "invalid code-length repeat",
    E_NO_EOB: "no end-of-block code",
    E_LIT_CODE: "invalid literal/length code set",
    E_DIST_CODE: "invalid distance code set",
    E_BAD_CODE: "invalid Huffman code",
    E_LIT_SYMBOL: "invalid literal/length symbol",
    E_DIST_SYMBOL: "invalid distance symbol",
    E_TOO_FAR: "distance too far back",
}

cdef uint16_t[29] LEN_BASE
cdef uint8_t[29] LEN_EXTRA
cdef uint16_t[30] DIST_BASE
cdef uint8_t[30] DIST_EXTRA
cdef uint8_t[19] CL_ORDER

LEN_BASE[:] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
               67, 83, 99, 115, 131, 163, 195, 227, 258]
LEN_EXTRA[:] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4,
                5, 5, 5, 5, 0]
DIST_BASE[:] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513,
                769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
DIST_EXTRA[:] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10,
                 11, 11, 12, 12, 13, 13]
CL_ORDER[:] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]


cdef struct Bits:
    # a bounds-checked reader of the stream, least significant bit first
    const uint8_t *p
    size_t n              # bytes in the stream
    size_t pos            # the next byte to load into buf
    uint64_t buf          # loaded bits not consumed yet, the next one lowest
    int cnt               # how many bits buf holds


cdef struct Huff:
    # a canonical Huffman code: counts and sorted symbols for the bit-by-bit
    # decode of long codes, and a lookup table for codes up to `bits` long,
    # indexed by the next `bits` input bits; an entry is symbol << 4 | length,
    # 0 where no code that short matches
    uint16_t count[MAXBITS + 1]
    uint16_t symbol[MAX_LIT]
    uint16_t table[TABLE_MAX]
    int bits


cdef inline uint64_t load64(const uint8_t *p) noexcept nogil:
    """Eight bytes, little-endian whatever the host (compilers make it one load)."""
    return (<uint64_t>p[0] | <uint64_t>p[1] << 8 | <uint64_t>p[2] << 16 | <uint64_t>p[3] << 24
            | <uint64_t>p[4] << 32 | <uint64_t>p[5] << 40 | <uint64_t>p[6] << 48
            | <uint64_t>p[7] << 56)


cdef inline void refill(Bits *b) noexcept nogil:
    """Load whole bytes into buf while it has room and the stream has bytes.

    Where 8 bytes remain, one load fills buf to 56-63 bits; the bits above cnt then
    hold the bytes from pos on, which a later load ORs in again unchanged."""
    if b.cnt > 56:
        return
    if b.n - b.pos >= 8:
        b.buf |= load64(b.p + b.pos) << b.cnt
        b.pos += <size_t>((63 - b.cnt) >> 3)
        b.cnt |= 56
        return
    while b.cnt <= 56 and b.pos < b.n:
        b.buf |= (<uint64_t>b.p[b.pos]) << b.cnt
        b.pos += 1
        b.cnt += 8


cdef inline bint need(Bits *b, int k) noexcept nogil:
    """Whether k (at most 57) more bits can be read."""
    if b.cnt < k:
        refill(b)
    return b.cnt >= k


cdef inline unsigned take(Bits *b, int k) noexcept nogil:
    """The next k bits (k < 32; the caller checked with need())."""
    cdef unsigned v = <unsigned>(b.buf & ((<uint64_t>1 << k) - 1))
    b.buf >>= k
    b.cnt -= k
    return v


cdef inline size_t bit_offset(const Bits *b) noexcept nogil:
    """Bits consumed since the start of the stream."""
    return b.pos * 8 - <size_t>b.cnt


cdef int build(Huff *h, const uint8_t *lengths, int n, int bits) noexcept nogil:
    """Build h from n code lengths; returns the code space left unused (0 for a
    complete code, > 0 incomplete), -1 when over-subscribed, and in h.count[0]
    how many symbols have no code."""
    cdef int s, length, left, i, step, size = 1 << bits
    cdef unsigned code, rev, c
    cdef uint16_t offs[MAXBITS + 2]
    cdef unsigned next_code[MAXBITS + 1]
    memset(h.count, 0, sizeof(h.count))
    memset(h.table, 0, size * sizeof(uint16_t))
    h.bits = bits
    for s in range(n):
        h.count[lengths[s]] += 1
    if h.count[0] == n:
        return 0                    # no codes: every decode fails
    left = 1
    for length in range(1, MAXBITS + 1):
        left <<= 1
        left -= h.count[length]
        if left < 0:
            return -1
    offs[1] = 0
    for length in range(1, MAXBITS):
        offs[length + 1] = offs[length] + h.count[length]
    code = 0
    next_code[0] = 0
    for length in range(1, MAXBITS + 1):
        code = (code + (h.count[length - 1] if length > 1 else 0)) << 1
        next_code[length] = code
    for s in range(n):
        length = lengths[s]
        if length == 0:
            continue
        h.symbol[offs[length]] = <uint16_t>s
        offs[length] += 1
        c = next_code[length]
        next_code[length] += 1
        if length > bits:
            continue
        rev = 0                     # codes are sent most significant bit first
        for i in range(length):
            rev = (rev << 1) | ((c >> i) & 1)
        step = 1 << length
        i = <int>rev
        while i < size:
            h.table[i] = <uint16_t>((s << 4) | length)
            i += step
    return left


cdef inline int longest(const Huff *h) noexcept nogil:
    cdef int length = MAXBITS
    while length > 0 and h.count[length] == 0:
        length -= 1
    return length


cdef int decode_slow(Bits *b, const Huff *h) noexcept nogil:
    """A code longer than the table's bits (or none): canonical decoding bit by bit."""
    cdef int length, count, code = 0, first = 0, index = 0
    for length in range(1, MAXBITS + 1):
        if length > b.cnt:
            return -E_TRUNCATED
        code |= <int>((b.buf >> (length - 1)) & 1)
        count = h.count[length]
        if code - count < first:
            take(b, length)
            return h.symbol[index + (code - first)]
        index += count
        first += count
        first <<= 1
        code <<= 1
    return -E_BAD_CODE


cdef inline int decode(Bits *b, const Huff *h) noexcept nogil:
    """The next symbol of code h, or a negative error code."""
    cdef unsigned e
    cdef int length
    if b.cnt < MAXBITS:
        refill(b)
    e = h.table[b.buf & ((<uint64_t>1 << h.bits) - 1)]
    length = e & 15
    if length == 0:
        return decode_slow(b, h)
    if length > b.cnt:              # the code needs bits past the end of the stream
        return -E_TRUNCATED
    b.buf >>= length
    b.cnt -= length
    return <int>(e >> 4)


cdef int stored(Bits *b, size_t *total) noexcept nogil:
    """Skip a stored block (its header bits read): to the byte boundary, LEN, NLEN, LEN bytes."""
    cdef unsigned length, nlength
    cdef size_t held, rest
    take(b, b.cnt & 7)
    if not need(b, 32):
        return E_TRUNCATED
    length = take(b, 16)
    nlength = take(b, 16)
    if length != (~nlength & 0xFFFF):
        return E_STORED
    held = <size_t>b.cnt >> 3
    if length < held:
        take(b, <int>length * 8)
    else:
        rest = length - held
        b.buf = 0
        b.cnt = 0
        if rest > b.n - b.pos:
            return E_TRUNCATED
        b.pos += rest
    total[0] += length
    return OK


cdef enum:
    MORE = -1             # a symbol walked, the block goes on


cdef inline int symbol_checked(Bits *b, const Huff *lit, const Huff *dist,
                               size_t *total) noexcept nogil:
    """Walk one literal, match or end-of-block, checking every read: MORE, OK at the
    end of the block, or an error code."""
    cdef int sym
    cdef unsigned length, distance
    sym = decode(b, lit)
    if sym < 0:
        return -sym
    if sym < 256:
        total[0] += 1
        return MORE
    if sym == 256:
        return OK
    sym -= 257
    if sym >= 29:
        return E_LIT_SYMBOL
    if not need(b, LEN_EXTRA[sym]):
        return E_TRUNCATED
    length = LEN_BASE[sym] + take(b, LEN_EXTRA[sym])
    sym = decode(b, dist)
    if sym < 0:
        return -sym
    if sym >= MAX_DIST:
        return E_DIST_SYMBOL
    if not need(b, DIST_EXTRA[sym]):
        return E_TRUNCATED
    distance = DIST_BASE[sym] + take(b, DIST_EXTRA[sym])
    if distance > total[0]:
        return E_TOO_FAR
    total[0] += length
    return MORE


cdef int codes(Bits *b, const Huff *lit, const Huff *dist, size_t *total) noexcept nogil:
    """Walk one block's symbols up to its end-of-block code, counting decoded bytes.

    While 8 bytes of input remain after pos, the reader's state is held in locals
    (so the compiler keeps it in registers) and one refill per symbol gives at least
    56 bits: more than a literal/length code, its extra bits, a distance code and
    its extra bits take together (15 + 5 + 15 + 13), so only the long-code path
    counts bits.  The last bytes go through symbol_checked()."""
    cdef uint64_t buf = b.buf
    cdef int cnt = b.cnt, n, sym, rc = MORE
    cdef size_t pos = b.pos, t = total[0]
    cdef const uint8_t *p = b.p
    cdef unsigned e, length, distance
    while b.n - pos >= 8:
        if cnt <= 56:
            buf |= load64(p + pos) << cnt
            pos += <size_t>((63 - cnt) >> 3)
            cnt |= 56
        e = lit.table[buf & ((<uint64_t>1 << LIT_BITS) - 1)]
        n = e & 15
        if n == 0:
            b.buf, b.cnt, b.pos = buf, cnt, pos
            sym = decode_slow(b, lit)
            buf, cnt = b.buf, b.cnt
            if sym < 0:
                rc = -sym
                break
        else:
            buf >>= n
            cnt -= n
            sym = <int>(e >> 4)
        if sym < 256:
            t += 1
            continue
        if sym == 256:
            rc = OK
            break
        sym -= 257
        if sym >= 29:
            rc = E_LIT_SYMBOL
            break
        n = LEN_EXTRA[sym]
        length = LEN_BASE[sym] + <unsigned>(buf & ((<uint64_t>1 << n) - 1))
        buf >>= n
        cnt -= n
        e = dist.table[buf & ((<uint64_t>1 << DIST_BITS) - 1)]
        n = e & 15
        if n == 0:
            b.buf, b.cnt, b.pos = buf, cnt, pos
            sym = decode_slow(b, dist)
            buf, cnt = b.buf, b.cnt
            if sym < 0:
                rc = -sym
                break
        else:
            buf >>= n
            cnt -= n
            sym = <int>(e >> 4)
        if sym >= MAX_DIST:
            rc = E_DIST_SYMBOL
            break
        n = DIST_EXTRA[sym]
        distance = DIST_BASE[sym] + <unsigned>(buf & ((<uint64_t>1 << n) - 1))
        buf >>= n
        cnt -= n
        if distance > t:
            rc = E_TOO_FAR
            break
        t += length
    b.buf, b.cnt, b.pos = buf, cnt, pos
    total[0] = t
    while rc == MORE:
        rc = symbol_checked(b, lit, dist, total)
    return rc


cdef void fixed_codes(Huff *lit, Huff *dist) noexcept nogil:
    """The codes of a fixed Huffman block (RFC 1951 3.2.6)."""
    cdef uint8_t lengths[MAX_LIT]
    cdef int s
    for s in range(MAX_LIT):
        lengths[s] = 8 if s < 144 else 9 if s < 256 else 7 if s < 280 else 8
    build(lit, lengths, MAX_LIT, LIT_BITS)
    for s in range(32):
        lengths[s] = 5
    build(dist, lengths, 32, DIST_BITS)   # codes 30 and 31 exist but are invalid symbols


cdef inline bint usable(int left, const Huff *h) noexcept nogil:
    """zlib's rule for literal/length and distance codes: not over-subscribed, and
    incomplete only when the longest code is 1 bit (or there is no code at all)."""
    return left == 0 or (left > 0 and longest(h) <= 1)


cdef int dynamic_codes(Bits *b, Huff *lit, Huff *dist) noexcept nogil:
    """Read a dynamic block's header and build its two codes."""
    cdef uint8_t lengths[MAX_HLIT + MAX_HDIST]
    cdef uint8_t cl_lengths[19]
    cdef Huff cl
    cdef int hlit, hdist, hclen, i, index, sym, rep, left
    cdef uint8_t value
    if not need(b, 14):
        return E_TRUNCATED
    hlit = <int>take(b, 5) + 257
    hdist = <int>take(b, 5) + 1
    hclen = <int>take(b, 4) + 4
    if hlit > MAX_HLIT or hdist > MAX_HDIST:
        return E_TOO_MANY
    memset(cl_lengths, 0, sizeof(cl_lengths))
    for i in range(hclen):
        if not need(b, 3):
            return E_TRUNCATED
        cl_lengths[CL_ORDER[i]] = <uint8_t>take(b, 3)
    if build(&cl, cl_lengths, 19, CL_BITS) != 0:     # zlib wants this code complete
        return E_CL_CODE
    index = 0
    while index < hlit + hdist:
        sym = decode(b, &cl)
        if sym < 0:
            return -sym
        if sym < 16:
            lengths[index] = <uint8_t>sym
            index += 1
            continue
        if sym == 16:
            if index == 0:
                return E_REPEAT
            value = lengths[index - 1]
            if not need(b, 2):
                return E_TRUNCATED
            rep = 3 + <int>take(b, 2)
        elif sym == 17:
            value = 0
            if not need(b, 3):
                return E_TRUNCATED
            rep = 3 + <int>take(b, 3)
        else:
            value = 0
            if not need(b, 7):
                return E_TRUNCATED
            rep = 11 + <int>take(b, 7)
        if index + rep > hlit + hdist:
            return E_REPEAT
        for i in range(rep):
            lengths[index + i] = value
        index += rep
    if lengths[256] == 0:
        return E_NO_EOB
    left = build(lit, lengths, hlit, LIT_BITS)
    if not usable(left, lit):
        return E_LIT_CODE
    left = build(dist, lengths + hlit, hdist, DIST_BITS)
    if not usable(left, dist):
        return E_DIST_CODE
    return OK


cdef struct Walk:
    size_t header_bit     # where the final block's header starts
    size_t end_bit        # just past the final block
    size_t total          # bytes the stream inflates to
    size_t error_bit      # where the walk stopped on an error


cdef int walk(Bits *b, Walk *w) noexcept nogil:
    """Walk block after block until the final one has been walked."""
    cdef Huff lit, dist
    cdef Huff fixed_lit, fixed_dist
    cdef bint have_fixed = False
    cdef bint last
    cdef unsigned kind
    cdef size_t header
    cdef int rc
    while True:
        if not need(b, 3):
            w.error_bit = bit_offset(b)
            return E_TRUNCATED
        header = bit_offset(b)
        last = take(b, 1)
        kind = take(b, 2)
        if kind == 0:
            rc = stored(b, &w.total)
        elif kind == 1:
            if not have_fixed:
                fixed_codes(&fixed_lit, &fixed_dist)
                have_fixed = True
            rc = codes(b, &fixed_lit, &fixed_dist, &w.total)
        elif kind == 2:
            rc = dynamic_codes(b, &lit, &dist)
            if rc == OK:
                rc = codes(b, &lit, &dist, &w.total)
        else:
            rc = E_BTYPE
        if rc != OK:
            w.error_bit = bit_offset(b)
            return rc
        if last:
            w.header_bit = header
            w.end_bit = bit_offset(b)
            return OK


def final_block(data):
    """Walk the raw deflate stream ``data`` (any buffer) to its final block.

    Returns ``FinalBlock(header_bit, end_bit, size)``: the bit offset of the final
    block's header (its first bit is BFINAL), the bit offset just past the stream's
    last block, and the number of bytes the stream inflates to.  Bytes after the end
    are not read.  Raises ValueError for a malformed or truncated stream."""
    cdef const uint8_t[::1] view = memoryview(data).cast("B")
    cdef Bits b
    cdef Walk w
    cdef int rc
    memset(&b, 0, sizeof(b))
    memset(&w, 0, sizeof(w))
    b.n = view.shape[0]
    b.p = &view[0] if b.n else NULL
    with nogil:
        rc = walk(&b, &w)
    if rc != OK:
        raise ValueError(f"invalid deflate stream: {_MESSAGES[rc]} (at bit {w.error_bit})")
    return FinalBlock(w.header_bit, w.end_bit, w.total)
