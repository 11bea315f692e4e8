# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Zero-copy ELF reader: the dynamic-linking facts of one ELF file.

``parse(buffer)`` reads the ELF header, program headers, PT_INTERP, the
dynamic section, the dynamic symbol table with its GNU versions
(versym/verneed/verdef) and GNU property notes.  Section headers are only
consulted when the dynamic section gives no way to count the symbols, so
stripped files work.  Every offset and count is checked against the buffer;
a malformed file raises ``ElfError``.

It reads what glibc's and musl's loaders read, never less: the last
PT_DYNAMIC, at its address through the PT_LOADs (as are notes), up to
DT_NULL; version chains by their next links (vn_cnt, DT_VERNEEDNUM and
DT_VERDEFNUM are not trusted); as many symbols as the largest of the hash
tables' counts and the highest symbol index a relocation names.  Where the
readers of a file would disagree (a table tag repeated with another value,
a later PT_LOAD zero-filling an address) it raises ``ElfError`` with a
message starting "inconsistent ELF:".

The buffer may be a prefix of the file: pass the real ``file_size`` and the
parser raises ``ElfNeedMore`` (with ``.needed``, the byte count required)
when a structure lies past the end of the prefix.  Callers that inflate a
compressed member use this to stop inflating early.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcmp, memset
from cpython.ref cimport PyObject, PyTypeObject, Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8

# ---------------------------------------------------------------- constants
#
# The ELF constants (PT_*, DT_*, EM_*, ...) are declared in _elf.pxd, their
# one home; these are the parser's own limits.

cdef enum:
    MAX_DYN = 1 << 20                # dynamic entries read before giving up

# The one default for the dynamic symbols of one file (``Limits.max_symbols``
# defaults to it): real files have fewer than 500k.
ELFMAG = ELFMAG_C[:4]      # b"\x7fELF", the file's first four bytes (from _elf.pxd)
DEFAULT_MAX_SYMBOLS = 2_000_000
DEFAULT_MAX_STRLEN = 1 << 18
DEFAULT_MAX_STRBYTES = 256 << 20     # all strings decoded from one file, together
DEFAULT_MAX_NEEDED = 4096            # DT_NEEDED entries of one file
DEFAULT_MAX_VERSIONS = 65536         # version need/aux + definition entries of one file
cdef enum:
    MAX_MISS = 16                    # missing ranges one ElfNeedMore reports (sparse mode)


class FastElfError(Exception):
    """Base class of fastelf's errors.  It lives here, in the core, only so that
    the core's own errors can derive from it; ``fastelf.errors`` holds the rest
    of the hierarchy and re-exports this class."""


class ElfError(FastElfError, ValueError):
    """The buffer is not a well-formed ELF file (or breaks a limit)."""


class ElfLimitError(ElfError):
    """The file breaks one of the parser's limits (symbols, string lengths, ...)."""


class ElfNeedMore(ElfError):
    """The buffer is a prefix of the file and more bytes are needed.

    ``needed``: the prefix length that would do.  ``ranges``: with
    ``present`` (sparse mode), the missing ``(offset, size)`` ranges found.
    """

    def __init__(self, needed, ranges=()):
        super().__init__(f"need the first {needed} bytes of the file")
        self.needed = needed
        self.ranges = list(ranges)


# ------------------------------------------------------------ raw readers

cdef inline uint16_t _u16(const uint8_t *q, bint le) noexcept nogil:
    if le:
        return <uint16_t>(q[0] | (<uint16_t>q[1] << 8))
    return <uint16_t>(q[1] | (<uint16_t>q[0] << 8))


cdef inline uint32_t _u32(const uint8_t *q, bint le) noexcept nogil:
    if le:
        return (<uint32_t>q[0] | (<uint32_t>q[1] << 8) |
                (<uint32_t>q[2] << 16) | (<uint32_t>q[3] << 24))
    return (<uint32_t>q[3] | (<uint32_t>q[2] << 8) |
            (<uint32_t>q[1] << 16) | (<uint32_t>q[0] << 24))


cdef inline uint64_t _u64(const uint8_t *q, bint le) noexcept nogil:
    if le:
        return <uint64_t>_u32(q, 1) | (<uint64_t>_u32(q + 4, 1) << 32)
    return <uint64_t>_u32(q + 4, 0) | (<uint64_t>_u32(q, 0) << 32)


cdef inline uint64_t _word(Ctx *c, const uint8_t *q) noexcept nogil:
    """An address-sized field: 8 bytes in ELF64, 4 in ELF32."""
    if c.is64:
        return _u64(q, c.le)
    return _u32(q, c.le)


cdef inline bint _fail(Ctx *c, int code, const char *msg, uint64_t off) noexcept nogil:
    if c.err == E_OK:
        c.err = code
        c.msg = msg
        c.err_off = off
    return 0


cdef bint _covered(Ctx *c, uint64_t off, uint64_t size) noexcept nogil:
    """True when one present interval holds [off, off+size) (binary search)."""
    cdef Py_ssize_t lo = 0, hi = c.niv, mid
    while lo < hi:                       # first interval starting after off
        mid = (lo + hi) // 2
        if c.iv[2 * mid] <= off:
            lo = mid + 1
        else:
            hi = mid
    return lo > 0 and off + size <= c.iv[2 * (lo - 1) + 1]


cdef inline bint _have(Ctx *c, uint64_t off, uint64_t size, const char *what) noexcept nogil:
    """True when [off, off+size) lies in the buffer; else records why not.

    In sparse mode the range must also lie in one present interval: the
    parser never reads a byte the caller did not materialize.
    """
    if size > c.fsize or off > c.fsize - size:
        return _fail(c, E_RANGE, what, off)
    if c.niv and size and not _covered(c, off, size):
        if c.nmiss < MAX_MISS:
            c.miss[2 * c.nmiss] = off
            c.miss[2 * c.nmiss + 1] = size
            c.nmiss += 1
        if off + size > c.need:
            c.need = off + size
        return _fail(c, E_MORE, what, off)
    if off + size > c.n:
        if off + size > c.need:
            c.need = off + size
        return _fail(c, E_MORE, what, off)
    return 1


# ------------------------------------------------------- parsed C results

cdef struct Ver:
    uint32_t ndx        # versym index this entry answers
    uint64_t name       # offset of the version name in .dynstr
    int64_t file        # offset of the library name in .dynstr, -1 for verdef
    bint hidden


cdef struct Parsed:
    uint16_t e_type
    uint16_t machine
    uint32_t flags
    uint8_t osabi
    Seg *segs
    uint32_t nsegs
    uint64_t *dyn        # pairs (tag, value)
    uint64_t ndyn
    int64_t interp_off
    uint64_t interp_len
    bint has_dynamic
    bint dyn_mapped      # the dynamic entries lie in the file, from dyn_off
    bint dyn_zero_tail   # ... and the PT_LOAD holding them zero-fills past dyn_end
    uint64_t dyn_off
    uint64_t dyn_end     # where that PT_LOAD's file bytes end
    bint has_strtab
    uint64_t strtab
    uint64_t strsz
    bint has_symtab
    uint64_t symtab_a    # DT_SYMTAB (an address)
    uint64_t symtab      # its file offset, once the symbol count is known
    uint64_t syment
    uint64_t nsyms
    bint has_versym
    uint64_t versym_a
    uint64_t versym
    Ver *vers
    uint64_t nvers
    uint64_t cap_vers
    bint has_isa
    uint32_t isa_needed
    int exec_stack
    uint64_t *undef
    uint64_t nundef
    uint64_t *exp
    uint64_t nexp
    uint64_t used      # highest byte offset read


cdef inline void _touch(Parsed *r, uint64_t end) noexcept nogil:
    if end > r.used:
        r.used = end


cdef inline bint _covers(Seg *t, uint64_t addr) noexcept nogil:
    """True when PT_LOAD ``t`` occupies ``addr`` in memory (p_vaddr up to
    p_vaddr + p_memsz, its file bytes then its zero-filled tail)."""
    cdef uint64_t span = t.p_memsz if t.p_memsz > t.p_filesz else t.p_filesz
    return t.p_vaddr <= addr and addr - t.p_vaddr < span


cdef bint _load_at(Ctx *c, Parsed *r, uint64_t addr, Seg **out) noexcept nogil:
    """The PT_LOAD whose file bytes the loader maps at ``addr`` (``out``; NULL
    when none covers it).

    glibc (_dl_map_segments) and musl (map_library) map the PT_LOADs in
    program header order, each over the ones before it, and zero-fill each
    one's p_memsz past its p_filesz.  So the last PT_LOAD whose file bytes
    hold ``addr`` provides them, unless a later one's zero-filled tail covers
    ``addr``: False then (an error).  Only the segments' own extents are
    compared, not the whole pages the loader maps them in: the page size is
    the kernel's (4 to 64 KiB), and files whose first PT_LOAD was stretched
    over a later segment's first page (as the hostile-input tests craft) stay
    readable.
    """
    cdef uint32_t i, k = 0
    cdef Seg *s = NULL
    cdef Seg *t
    out[0] = NULL
    for i in range(r.nsegs):
        t = &r.segs[i]
        if t.p_type == PT_LOAD and t.p_vaddr <= addr and addr - t.p_vaddr < t.p_filesz:
            s = t
            k = i
    if s == NULL:
        return 1
    for i in range(k + 1, r.nsegs):
        # a later PT_LOAD reaching addr does so with its zero-filled tail
        if r.segs[i].p_type == PT_LOAD and _covers(&r.segs[i], addr):
            return _fail(c, E_FORMAT, "inconsistent ELF: two PT_LOAD segments map different "
                         "bytes at one address (a later one zero-fills it)", addr)
    out[0] = s
    return 1


cdef Seg *_load_for(Ctx *c, Parsed *r, uint64_t addr) noexcept nogil:
    """The PT_LOAD mapping ``addr``, or NULL with the error recorded."""
    cdef Seg *s
    if not _load_at(c, r, addr, &s):
        return NULL
    if s == NULL:
        _fail(c, E_FORMAT, "address not covered by any PT_LOAD segment", addr)
    return s


cdef bint _vaddr_to_off(Ctx *c, Parsed *r, uint64_t addr, uint64_t *off) noexcept nogil:
    """Map a virtual address to a file offset through the PT_LOAD segments."""
    cdef Seg *s = _load_for(c, r, addr)
    if s == NULL:
        return 0
    off[0] = addr - s.p_vaddr + s.p_offset
    return 1


cdef bint _map(Ctx *c, Parsed *r, uint64_t addr, uint64_t size, const char *past,
               uint64_t *off, uint64_t *end) noexcept nogil:
    """File offset of the ``size`` bytes the loader reads at ``addr``.

    They must all be file bytes of one PT_LOAD (``past`` is the error when
    they are not: the loader would read other memory than the file's next
    bytes).  ``end`` receives where that segment's file bytes end, for chains
    of entries that must stay inside it.
    """
    cdef Seg *s = _load_for(c, r, addr)
    if s == NULL:
        return 0
    if size > s.p_filesz - (addr - s.p_vaddr):
        return _fail(c, E_FORMAT, past, addr)
    off[0] = addr - s.p_vaddr + s.p_offset
    end[0] = s.p_offset + s.p_filesz
    return 1


cdef bint _cstr(Ctx *c, Parsed *r, uint64_t idx, const char **out, Py_ssize_t *length) noexcept nogil:
    """A NUL-terminated string at ``idx`` in .dynstr, checked to end inside it."""
    cdef const void *z
    cdef uint64_t room
    if not r.has_strtab:
        return _fail(c, E_FORMAT, "string referenced but no DT_STRTAB", idx)
    if idx >= r.strsz:
        return _fail(c, E_FORMAT, "string index outside .dynstr", idx)
    room = r.strsz - idx
    if room > c.max_strlen + 1:
        room = c.max_strlen + 1
    z = memchr(c.p + r.strtab + idx, 0, room)
    if z == NULL:
        if room == c.max_strlen + 1:
            return _fail(c, E_LIMIT, "string longer than the limit", r.strtab + idx)
        return _fail(c, E_FORMAT, "unterminated string in .dynstr", r.strtab + idx)
    out[0] = <const char *>(c.p + r.strtab + idx)
    length[0] = <const char *>z - out[0]
    return 1


cdef bint _push_ver(Ctx *c, Parsed *r, uint32_t ndx, uint64_t name, int64_t file,
                    bint hidden) noexcept nogil:
    cdef Ver *grown
    if r.nvers >= c.max_versions:
        return _fail(c, E_LIMIT, "more version entries than the limit", name)
    if r.nvers == r.cap_vers:
        r.cap_vers = r.cap_vers * 2 + 16
        grown = <Ver *>realloc(r.vers, r.cap_vers * sizeof(Ver))
        if grown == NULL:
            return _fail(c, E_LIMIT, "out of memory for versions", 0)
        r.vers = grown
    r.vers[r.nvers].ndx = ndx
    r.vers[r.nvers].name = name
    r.vers[r.nvers].file = file
    r.vers[r.nvers].hidden = hidden
    r.nvers += 1
    return 1


# ------------------------------------------------------------ the stages

cdef bint _ident(Ctx *c) noexcept nogil:
    """e_ident: the magic, then the class and byte order (into ``c``) and version."""
    cdef const uint8_t *h
    # Check the magic on what is there first, so that a short non-ELF file
    # (or prefix) is reported as such rather than as a truncated header; a
    # prefix too short to decide asks for the rest of the magic, so that a
    # prefix and the whole file always give the same verdict.
    if memcmp(c.p, ELFMAG_C, c.n if c.n < 4 else 4) != 0:
        return _fail(c, E_FORMAT, "not an ELF file (bad magic)", 0)
    if not _have(c, 0, c.fsize if c.fsize < 4 else 4, "ELF magic"):
        return 0
    if not _have(c, 0, 16, "ELF identification"):
        return 0
    h = c.p
    if memcmp(h, ELFMAG_C, 4) != 0:
        return _fail(c, E_FORMAT, "not an ELF file (bad magic)", 0)
    if h[4] == ELFCLASS32:
        c.is64 = 0
    elif h[4] == ELFCLASS64:
        c.is64 = 1
    else:
        return _fail(c, E_FORMAT, "bad ELF class", 4)
    if h[5] == ELFDATA2LSB:
        c.le = 1
    elif h[5] == ELFDATA2MSB:
        c.le = 0
    else:
        return _fail(c, E_FORMAT, "bad ELF data encoding", 5)
    if h[6] != EV_CURRENT:
        return _fail(c, E_FORMAT, "bad ELF version", 6)
    return 1


# Where the ELF header puts the program and section header tables.
cdef struct Tables:
    uint64_t phoff
    uint32_t phnum
    uint64_t shoff
    uint32_t shnum
    uint32_t shentsize


cdef bint _header(Ctx *c, Parsed *r, Tables *tb) noexcept nogil:
    """The ELF header: the file's facts into ``r``, where its tables are into ``tb``."""
    cdef const uint8_t *h = c.p
    cdef uint32_t phentsize
    if not _ident(c):
        return 0
    r.osabi = h[7]
    if not _have(c, 0, 64 if c.is64 else 52, "ELF header"):
        return 0
    r.e_type = _u16(h + 16, c.le)
    r.machine = _u16(h + 18, c.le)
    if c.is64:
        tb.phoff = _u64(h + 32, c.le)
        tb.shoff = _u64(h + 40, c.le)
        r.flags = _u32(h + 48, c.le)
        phentsize = _u16(h + 54, c.le)
        tb.phnum = _u16(h + 56, c.le)
        tb.shentsize = _u16(h + 58, c.le)
        tb.shnum = _u16(h + 60, c.le)
    else:
        tb.phoff = _u32(h + 28, c.le)
        tb.shoff = _u32(h + 32, c.le)
        r.flags = _u32(h + 36, c.le)
        phentsize = _u16(h + 42, c.le)
        tb.phnum = _u16(h + 44, c.le)
        tb.shentsize = _u16(h + 46, c.le)
        tb.shnum = _u16(h + 48, c.le)
    _touch(r, 64 if c.is64 else 52)
    if tb.phnum and phentsize != (56 if c.is64 else 32):
        return _fail(c, E_FORMAT, "bad program header entry size", 0)
    if tb.phnum == PN_XNUM:
        return _fail(c, E_FORMAT, "extended program header count (PN_XNUM) is not supported", 0)
    return 1


cdef bint _segments(Ctx *c, Parsed *r, uint64_t phoff, uint32_t phnum) noexcept nogil:
    cdef uint64_t size = <uint64_t>phnum * (56 if c.is64 else 32)
    cdef const uint8_t *q
    cdef uint32_t i
    cdef Seg *s
    if phnum == 0:
        return 1
    if not _have(c, phoff, size, "program headers"):
        return 0
    _touch(r, phoff + size)
    r.segs = <Seg *>malloc(phnum * sizeof(Seg))
    if r.segs == NULL:
        return _fail(c, E_LIMIT, "out of memory for program headers", phoff)
    r.nsegs = phnum
    for i in range(phnum):
        s = &r.segs[i]
        if c.is64:
            q = c.p + phoff + <uint64_t>i * 56
            s.p_type = _u32(q, c.le)
            s.p_flags = _u32(q + 4, c.le)
            s.p_offset = _u64(q + 8, c.le)
            s.p_vaddr = _u64(q + 16, c.le)
            s.p_filesz = _u64(q + 32, c.le)
            s.p_memsz = _u64(q + 40, c.le)
            s.p_align = _u64(q + 48, c.le)
        else:
            q = c.p + phoff + <uint64_t>i * 32
            s.p_type = _u32(q, c.le)
            s.p_offset = _u32(q + 4, c.le)
            s.p_vaddr = _u32(q + 8, c.le)
            s.p_filesz = _u32(q + 16, c.le)
            s.p_memsz = _u32(q + 20, c.le)
            s.p_flags = _u32(q + 24, c.le)
            s.p_align = _u32(q + 28, c.le)
    return 1


cdef bint _note_place(Ctx *c, Parsed *r, Seg *s, uint64_t *off, uint64_t *size) noexcept nogil:
    """Where the loader reads note segment ``s``: glibc (_dl_process_pt_note,
    _dl_process_pt_gnu_property) reads p_memsz bytes at p_vaddr in the mapped
    image, so the bytes are those a PT_LOAD maps there, up to the end of its
    file bytes.  A note no PT_LOAD maps (the loader would read unmapped
    memory) is read at p_offset, for p_filesz bytes.
    """
    cdef Seg *t
    cdef uint64_t room
    if not _load_at(c, r, s.p_vaddr, &t):
        return 0
    if t == NULL:
        off[0] = s.p_offset
        size[0] = s.p_filesz
        return 1
    off[0] = s.p_vaddr - t.p_vaddr + t.p_offset
    room = t.p_filesz - (s.p_vaddr - t.p_vaddr)
    size[0] = s.p_memsz if s.p_memsz < room else room
    return 1


cdef bint _notes(Ctx *c, Parsed *r, Seg *s) noexcept nogil:
    """Scan one note segment for the x86 ISA_1_NEEDED GNU property.

    As in the gABI (and glibc's ELF_NOTE_DESC_OFFSET/ELF_NOTE_NEXT_OFFSET),
    the descriptor and the next note start at offsets aligned relative to the
    start of the note; every step is checked to stay inside the segment.
    Every property found is or-ed in: glibc reads one note (the last
    PT_GNU_PROPERTY or PT_NOTE holding one), so the union is never less.
    """
    cdef uint64_t off, size, end, namesz, descsz, ntype, desc, dend, p, step
    cdef uint64_t align = 8 if s.p_align == 8 else 4
    cdef uint64_t palign = 8 if c.is64 else 4
    cdef uint32_t prtype, prsz
    if not _note_place(c, r, s, &off, &size):
        return 0
    if not _have(c, off, size, "note segment"):
        return 0
    _touch(r, off + size)
    end = off + size
    while off < end and end - off >= 12:
        namesz = _u32(c.p + off, c.le)
        descsz = _u32(c.p + off + 4, c.le)
        ntype = _u32(c.p + off + 8, c.le)
        if namesz > end - off - 12:
            return 1      # malformed trailing note: ignore the rest, as loaders do
        desc = off + ((12 + namesz + align - 1) & ~(align - 1))
        if desc > end or descsz > end - desc:
            return 1
        dend = desc + descsz
        if (ntype == NT_GNU_PROPERTY_TYPE_0 and namesz == 4
                and memcmp(c.p + off + 12, b"GNU\0", 4) == 0):
            p = desc
            while dend - p >= 8:
                prtype = _u32(c.p + p, c.le)
                prsz = _u32(c.p + p + 4, c.le)
                p += 8
                if prsz > dend - p:
                    break
                if prtype == GNU_PROPERTY_X86_ISA_1_NEEDED and prsz == 4:
                    r.has_isa = 1
                    r.isa_needed |= _u32(c.p + p, c.le)
                step = (prsz + palign - 1) & ~(palign - 1)
                if step > dend - p:
                    break
                p += step
        off = desc + ((descsz + align - 1) & ~(align - 1))
    return 1


cdef bint _dynamic_place(Ctx *c, Parsed *r, Seg *d) noexcept nogil:
    """Find where the loader reads the entries of PT_DYNAMIC ``d``.

    glibc (_dl_map_object_from_fd) and musl (map_library) read them at
    p_vaddr in the mapped image, never at p_offset.  A PT_DYNAMIC with
    p_filesz 0 (as objcopy --only-keep-debug leaves) whose address no
    PT_LOAD maps has no entries.
    """
    cdef Seg *s
    if not _load_at(c, r, d.p_vaddr, &s):
        return 0
    if s == NULL:
        if d.p_filesz == 0:
            return 1
        return _fail(c, E_FORMAT, "PT_DYNAMIC address not covered by any PT_LOAD segment",
                     d.p_vaddr)
    r.dyn_mapped = 1
    r.dyn_off = d.p_vaddr - s.p_vaddr + s.p_offset
    r.dyn_end = s.p_offset + s.p_filesz
    r.dyn_zero_tail = s.p_memsz > s.p_filesz
    return 1


cdef bint _dynamic(Ctx *c, Parsed *r) noexcept nogil:
    """Read the dynamic entries up to DT_NULL, as both loaders do.

    p_filesz does not bound them: the loaders stop at DT_NULL only.  Past the
    end of the PT_LOAD's file bytes lies its zero-filled tail (which ends the
    table) or memory the file does not describe (refused).
    """
    cdef uint64_t entsz = 16 if c.is64 else 8
    cdef uint64_t off = r.dyn_off, count = 0, i, needed = 0
    cdef bint ended = 0
    cdef const uint8_t *q
    r.has_dynamic = 1
    if r.dyn_mapped:
        while r.dyn_end - off >= entsz:
            if not _have(c, off, entsz, "dynamic section"):
                return 0
            if _word(c, c.p + off) == DT_NULL:
                ended = 1
                break
            count += 1
            if count > MAX_DYN:
                return _fail(c, E_LIMIT, "dynamic section has too many entries", r.dyn_off)
            off += entsz
        if not ended and not (r.dyn_zero_tail and off == r.dyn_end):
            return _fail(c, E_FORMAT, "inconsistent ELF: the dynamic section has no DT_NULL "
                         "inside its PT_LOAD segment", r.dyn_off)
        _touch(r, off + entsz if ended else off)
    r.dyn = <uint64_t *>malloc((count + 1) * 2 * sizeof(uint64_t))
    if r.dyn == NULL:
        return _fail(c, E_LIMIT, "out of memory for dynamic section", r.dyn_off)
    for i in range(count):
        q = c.p + r.dyn_off + i * entsz
        r.dyn[2 * i] = _word(c, q)
        r.dyn[2 * i + 1] = _word(c, q + entsz // 2)
        if r.dyn[2 * i] == DT_NEEDED:
            needed += 1
            if needed > c.max_needed:
                return _fail(c, E_LIMIT, "more DT_NEEDED entries than the limit", r.dyn_off)
    r.ndyn = count
    return 1


cdef bint _count_gnu_hash(Ctx *c, Parsed *r, uint64_t off, bint *hashed) noexcept nogil:
    """Symbol count from DT_GNU_HASH: the end of the last hash chain.

    When no symbol is hashed at all (an executable that exports nothing, as
    ld makes on aarch64 and arm) the table only says "at least symoffset":
    ``hashed`` is then false and the caller must count another way.
    """
    cdef uint32_t nbuckets, symoffset, bloom, i
    cdef uint64_t buckets, chains, maxb = 0, b, idx
    if not _have(c, off, 16, "DT_GNU_HASH header"):
        return 0
    nbuckets = _u32(c.p + off, c.le)
    symoffset = _u32(c.p + off + 4, c.le)
    bloom = _u32(c.p + off + 8, c.le)
    buckets = off + 16 + <uint64_t>bloom * (8 if c.is64 else 4)
    if not _have(c, buckets, <uint64_t>nbuckets * 4, "DT_GNU_HASH buckets"):
        return 0
    _touch(r, buckets + <uint64_t>nbuckets * 4)
    for i in range(nbuckets):
        b = _u32(c.p + buckets + <uint64_t>i * 4, c.le)
        if b > maxb:
            maxb = b
    if maxb < symoffset:
        r.nsyms = symoffset
        hashed[0] = 0
        return 1
    hashed[0] = 1
    chains = buckets + <uint64_t>nbuckets * 4
    idx = maxb
    while True:
        if idx - symoffset > c.max_symbols:
            return _fail(c, E_LIMIT, "more dynamic symbols than the limit", off)
        if not _have(c, chains + (idx - symoffset) * 4, 4, "DT_GNU_HASH chain"):
            return 0
        if _u32(c.p + chains + (idx - symoffset) * 4, c.le) & 1:
            break
        idx += 1
    _touch(r, chains + (idx - symoffset) * 4 + 4)
    r.nsyms = idx + 1
    return 1


cdef bint _count_from_sections(Ctx *c, Parsed *r, Tables *tb, bint *found) noexcept nogil:
    """Fallback symbol count: the SHT_DYNSYM section header, if there is one."""
    cdef uint32_t i
    cdef const uint8_t *q
    cdef uint64_t shoff = tb.shoff
    cdef uint32_t shnum = tb.shnum, shentsize = tb.shentsize
    if shoff == 0 or shnum == 0:
        return 1
    if shentsize != (64 if c.is64 else 40):
        return _fail(c, E_FORMAT, "bad section header entry size", shoff)
    if not _have(c, shoff, <uint64_t>shnum * shentsize, "section headers"):
        return 0
    _touch(r, shoff + <uint64_t>shnum * shentsize)
    for i in range(shnum):
        q = c.p + shoff + <uint64_t>i * shentsize
        if _u32(q + 4, c.le) == SHT_DYNSYM:
            if c.is64:
                r.nsyms = _u64(q + 32, c.le) // r.syment
            else:
                r.nsyms = _u32(q + 20, c.le) // r.syment
            found[0] = 1
            return 1
    return 1


cdef uint64_t _count_from_layout(Parsed *r, uint64_t symtab_a, const uint64_t *starts,
                                 int nstarts) noexcept nogil:
    """Last-resort symbol count: .dynsym ends where the next dynamic table starts.

    Linkers lay the tables out back to back (.dynsym then .dynstr for GNU ld
    and gold, then .gnu.version for lld), so the nearest table address above
    DT_SYMTAB bounds the symbol table.  0 when there is none.
    """
    cdef uint64_t bound = 0
    cdef int k
    for k in range(nstarts):
        if starts[k] > symtab_a and (bound == 0 or starts[k] < bound):
            bound = starts[k]
    if bound == 0 or r.syment == 0:
        return 0
    return (bound - symtab_a) // r.syment


cdef bint _too_long(Ctx *c, const char *msg, uint64_t off, uint64_t want) noexcept nogil:
    """A version chain took more steps than its budget (one step per entry's
    worth of buffer bytes): it loops, or the buffer is a prefix too short to tell.

    Real chains never come near the budget.  For a prefix, ask for more
    (``want`` bytes would allow the steps taken so far; at least double), so
    that a prefix and the whole file always give the same verdict.
    """
    if c.n < c.fsize:
        if want < 2 * c.n:
            want = 2 * c.n
        if want > c.fsize:
            want = c.fsize
        if want > c.need:
            c.need = want
        return _fail(c, E_MORE, msg, off)
    return _fail(c, E_FORMAT, msg, off)


cdef inline bint _inside(Ctx *c, uint64_t off, uint64_t size, uint64_t end,
                         const char *past, const char *what) noexcept nogil:
    """[off, off+size) ends by ``end`` (the file bytes of the PT_LOAD a chain
    started in: beyond them the loader reads other memory), and is in the buffer."""
    if off > end or end - off < size:
        return _fail(c, E_FORMAT, past, off)
    return _have(c, off, size, what)


cdef bint _verneed(Ctx *c, Parsed *r, uint64_t off, uint64_t end) noexcept nogil:
    """Every version need, found as glibc's _dl_check_map_versions finds them.

    glibc follows vn_next and vna_next until they are 0 and reads at least
    the first vernaux of each entry; it ignores DT_VERNEEDNUM and vn_cnt, so
    they are ignored here too (a smaller count must not hide a need).
    """
    cdef uint64_t steps = 0, budget = c.n // 16 + 1, aux
    cdef uint32_t next_, anext
    cdef uint64_t vn_file
    cdef const char *past = "inconsistent ELF: the version needs run past their PT_LOAD segment"
    while True:
        if not _inside(c, off, 16, end, past, "verneed entry"):
            return 0
        _touch(r, off + 16)
        vn_file = _u32(c.p + off + 4, c.le)
        aux = off + _u32(c.p + off + 8, c.le)
        next_ = _u32(c.p + off + 12, c.le)
        while True:
            steps += 1
            if steps > budget:
                return _too_long(c, "verneed chain loops", off, 16 * steps)
            if not _inside(c, aux, 16, end, past, "vernaux entry"):
                return 0
            _touch(r, aux + 16)
            if not _push_ver(c, r, _u16(c.p + aux + 6, c.le) & ~VERSYM_HIDDEN,
                             _u32(c.p + aux + 8, c.le), <int64_t>vn_file, 0):
                return 0
            anext = _u32(c.p + aux + 12, c.le)
            if anext == 0:
                break
            aux += anext
        steps += 1
        if next_ == 0:
            break
        if steps > budget:
            return _too_long(c, "verneed chain loops", off, 16 * steps)
        off += next_
    # a prefix must hold this many bytes for the budget to allow these steps
    if steps > 1:
        _touch(r, 16 * (steps - 1))
    return 1


cdef bint _verdef(Ctx *c, Parsed *r, uint64_t off, uint64_t end) noexcept nogil:
    """Every version definition, following vd_next until 0 as glibc does
    (DT_VERDEFNUM is ignored, like the loader); the name is the first verdaux."""
    cdef uint64_t steps = 0, budget = c.n // 20 + 1, aux
    cdef uint32_t next_
    cdef uint16_t flags, ndx, cnt
    cdef const char *past = "inconsistent ELF: the version definitions run past their PT_LOAD segment"
    while True:
        if not _inside(c, off, 20, end, past, "verdef entry"):
            return 0
        _touch(r, off + 20)
        flags = _u16(c.p + off + 2, c.le)
        ndx = _u16(c.p + off + 4, c.le)
        cnt = _u16(c.p + off + 6, c.le)
        if cnt or not (flags & VER_FLG_BASE):   # glibc names every non-base version by its verdaux
            aux = off + _u32(c.p + off + 12, c.le)
            if not _inside(c, aux, 8, end, past, "verdaux entry"):
                return 0
            _touch(r, aux + 8)
            if not _push_ver(c, r, ndx & ~VERSYM_HIDDEN, _u32(c.p + aux, c.le), -1,
                             flags & VER_FLG_BASE):   # it marks the file's own name
                return 0
        next_ = _u32(c.p + off + 16, c.le)
        steps += 1
        if next_ == 0:
            break
        if steps > budget:
            return _too_long(c, "verdef chain loops", off, 20 * steps)
        off += next_
    if steps > 1:
        _touch(r, 20 * (steps - 1))
    return 1


# The defined symbols to report: all of them, or those whose names start
# with one of ``n`` prefixes (``p[j]``, ``lens[j]`` bytes, no NUL).
cdef struct Prefixes:
    const char **p
    Py_ssize_t *lens
    Py_ssize_t n
    bint all


cdef bint _symbol_tables(Ctx *c, Parsed *r) noexcept nogil:
    """Place .dynsym (``nsyms`` entries) and, with DT_VERSYM, .gnu.version in
    the file, each inside the PT_LOAD its address lies in."""
    cdef uint64_t end
    if not _vaddr_to_off(c, r, r.symtab_a, &r.symtab):
        return 0
    if r.nsyms > c.max_symbols:
        return _fail(c, E_LIMIT, "more dynamic symbols than the limit", r.symtab)
    if r.syment < (24 if c.is64 else 16):
        return _fail(c, E_FORMAT, "bad DT_SYMENT", r.symtab)
    if r.nsyms > (c.fsize // r.syment) + 1:
        return _fail(c, E_FORMAT, "symbol table larger than the file", r.symtab)
    if not _map(c, r, r.symtab_a, r.nsyms * r.syment,
                "inconsistent ELF: the dynamic symbol table (as long as the hash tables "
                "and relocations need) runs past its PT_LOAD segment", &r.symtab, &end):
        return 0
    if not _have(c, r.symtab, r.nsyms * r.syment, "dynamic symbol table"):
        return 0
    _touch(r, r.symtab + r.nsyms * r.syment)
    if r.has_versym:
        if not _map(c, r, r.versym_a, r.nsyms * 2,
                    "inconsistent ELF: the version symbol table (an entry per dynamic "
                    "symbol) runs past its PT_LOAD segment", &r.versym, &end):
            return 0
        if not _have(c, r.versym, r.nsyms * 2, "version symbol table"):
            return 0
        _touch(r, r.versym + r.nsyms * 2)
    return 1


cdef int _wanted(Ctx *c, Parsed *r, Prefixes *px, uint64_t name) noexcept nogil:
    """1 when the defined symbol named at ``name`` is to be reported, 0 when
    not, -1 (error recorded) when its name is not in .dynstr.

    Only the prefixes' bytes are compared: scanning each name for its end
    would let many symbols naming one long string cost symbols x max_strlen.
    Matches are decoded (and checked) later.
    """
    cdef Py_ssize_t j, slen
    cdef const char *s
    if px.all:
        return 1
    if not px.n:
        return 0
    if not r.has_strtab or name >= r.strsz:
        _cstr(c, r, name, &s, &slen)     # records why the name is not in .dynstr
        return -1
    for j in range(px.n):
        if (<uint64_t>px.lens[j] <= r.strsz - name
                and memcmp(c.p + r.strtab + name, px.p[j], px.lens[j]) == 0):
            return 1
    return 0


cdef bint _symbols(Ctx *c, Parsed *r, Prefixes *px) noexcept nogil:
    """Sort the non-local dynamic symbols into imports (undefined) and the
    exports asked for, by index (their names are decoded later, with the GIL)."""
    cdef uint64_t i
    cdef const uint8_t *q
    cdef uint16_t shndx
    cdef uint8_t info
    cdef int want
    if r.nsyms == 0:
        return 1
    if not _symbol_tables(c, r):
        return 0
    r.undef = <uint64_t *>malloc(r.nsyms * sizeof(uint64_t))
    r.exp = <uint64_t *>malloc(r.nsyms * sizeof(uint64_t))
    if r.undef == NULL or r.exp == NULL:
        return _fail(c, E_LIMIT, "out of memory for symbols", r.symtab)
    for i in range(1, r.nsyms):
        q = c.p + r.symtab + i * r.syment
        if c.is64:
            info = q[4]
            shndx = _u16(q + 6, c.le)
        else:
            info = q[12]
            shndx = _u16(q + 14, c.le)
        if (info >> 4) == STB_LOCAL:
            continue
        if shndx == SHN_UNDEF:
            r.undef[r.nundef] = i
            r.nundef += 1
            continue
        want = _wanted(c, r, px, _u32(q, c.le))
        if want < 0:
            return 0
        if want:
            r.exp[r.nexp] = i
            r.nexp += 1
    return 1


cdef enum:
    T_STRTAB, T_STRSZ, T_SYMTAB, T_SYMENT, T_HASH, T_GNU_HASH, T_VERSYM, T_VERNEED,
    T_VERDEF, T_RELA, T_RELASZ, T_REL, T_RELSZ, T_JMPREL, T_PLTRELSZ, T_PLTREL, T_NTAGS


# The dynamic entries the reader uses, by T_* slot.
cdef struct Tags:
    uint64_t val[T_NTAGS]
    bint seen[T_NTAGS]


cdef int _slot(uint64_t tag) noexcept nogil:
    if tag == DT_STRTAB: return T_STRTAB
    if tag == DT_STRSZ: return T_STRSZ
    if tag == DT_SYMTAB: return T_SYMTAB
    if tag == DT_SYMENT: return T_SYMENT
    if tag == DT_HASH: return T_HASH
    if tag == DT_GNU_HASH: return T_GNU_HASH
    if tag == DT_VERSYM: return T_VERSYM
    if tag == DT_VERNEED: return T_VERNEED
    if tag == DT_VERDEF: return T_VERDEF
    if tag == DT_RELA: return T_RELA
    if tag == DT_RELASZ: return T_RELASZ
    if tag == DT_REL: return T_REL
    if tag == DT_RELSZ: return T_RELSZ
    if tag == DT_JMPREL: return T_JMPREL
    if tag == DT_PLTRELSZ: return T_PLTRELSZ
    if tag == DT_PLTREL: return T_PLTREL
    return -1


cdef const char *_twice(int slot) noexcept nogil:
    if slot == T_STRTAB: return "inconsistent ELF: two DT_STRTAB entries differ"
    if slot == T_STRSZ: return "inconsistent ELF: two DT_STRSZ entries differ"
    if slot == T_SYMTAB: return "inconsistent ELF: two DT_SYMTAB entries differ"
    if slot == T_SYMENT: return "inconsistent ELF: two DT_SYMENT entries differ"
    if slot == T_HASH: return "inconsistent ELF: two DT_HASH entries differ"
    if slot == T_GNU_HASH: return "inconsistent ELF: two DT_GNU_HASH entries differ"
    if slot == T_VERSYM: return "inconsistent ELF: two DT_VERSYM entries differ"
    if slot == T_VERNEED: return "inconsistent ELF: two DT_VERNEED entries differ"
    if slot == T_VERDEF: return "inconsistent ELF: two DT_VERDEF entries differ"
    if slot == T_RELA: return "inconsistent ELF: two DT_RELA entries differ"
    if slot == T_RELASZ: return "inconsistent ELF: two DT_RELASZ entries differ"
    if slot == T_REL: return "inconsistent ELF: two DT_REL entries differ"
    if slot == T_RELSZ: return "inconsistent ELF: two DT_RELSZ entries differ"
    if slot == T_JMPREL: return "inconsistent ELF: two DT_JMPREL entries differ"
    if slot == T_PLTRELSZ: return "inconsistent ELF: two DT_PLTRELSZ entries differ"
    return "inconsistent ELF: two DT_PLTREL entries differ"


cdef bint _read_tags(Ctx *c, Parsed *r, Tags *t) noexcept nogil:
    """Collect the entries in ``Tags``, each tag at most once.

    A tag repeated with another value is read differently by each reader:
    glibc keeps the last, musl the last or (DT_GNU_HASH, DT_VERSYM) the
    first, readelf and patchelf the first.  Such a file is refused.
    """
    cdef uint64_t k, tag, val
    cdef int j
    memset(t, 0, sizeof(Tags))
    for k in range(r.ndyn):
        tag = r.dyn[2 * k]
        val = r.dyn[2 * k + 1]
        j = _slot(tag)
        if j < 0:
            continue
        if t.seen[j] and t.val[j] != val:
            return _fail(c, E_FORMAT, _twice(j), r.dyn_off + k * (16 if c.is64 else 8))
        t.seen[j] = 1
        t.val[j] = val
    return 1


cdef bint _reloc_table(Ctx *c, Parsed *r, uint64_t addr, uint64_t size, bint rela,
                       const char *past, uint64_t *maxsym) noexcept nogil:
    """Raise ``maxsym`` to the highest symbol index named in one relocation table."""
    cdef uint64_t w = 8 if c.is64 else 4
    cdef uint64_t entsz = w * (3 if rela else 2)
    cdef uint64_t n = size // entsz, off, end, i, sym
    if n == 0:
        return 1
    if not _map(c, r, addr, n * entsz, past, &off, &end):
        return 0
    if not _have(c, off, n * entsz, "relocation table"):
        return 0
    _touch(r, off + n * entsz)
    for i in range(n):
        sym = _word(c, c.p + off + i * entsz + w)
        sym = (sym >> 32) if c.is64 else (sym >> 8)
        if sym > maxsym[0]:
            maxsym[0] = sym
    return 1


cdef bint _reloc_symbols(Ctx *c, Parsed *r, Tags *t, uint64_t *maxsym) noexcept nogil:
    """The highest symbol index any relocation names (0 when none does).

    glibc and musl apply DT_RELA/DT_RELASZ, DT_REL/DT_RELSZ and
    DT_JMPREL/DT_PLTRELSZ (in the format DT_PLTREL names) and look up each
    symbol a relocation names by its index, however many symbols the hash
    tables count.  The entry sizes are the ELF ones, as the loaders assume;
    DT_RELAENT/DT_RELENT are not consulted.
    """
    cdef bint rela
    if t.seen[T_RELA] and t.val[T_RELASZ]:
        if not _reloc_table(c, r, t.val[T_RELA], t.val[T_RELASZ], 1,
                            "inconsistent ELF: DT_RELASZ runs past the PT_LOAD segment of "
                            "DT_RELA", maxsym):
            return 0
    if t.seen[T_REL] and t.val[T_RELSZ]:
        if not _reloc_table(c, r, t.val[T_REL], t.val[T_RELSZ], 0,
                            "inconsistent ELF: DT_RELSZ runs past the PT_LOAD segment of "
                            "DT_REL", maxsym):
            return 0
    if t.seen[T_JMPREL] and t.val[T_PLTRELSZ]:
        if not t.seen[T_PLTREL]:
            return _fail(c, E_FORMAT, "inconsistent ELF: DT_JMPREL without DT_PLTREL "
                         "(glibc skips the table, musl reads it)", t.val[T_JMPREL])
        if t.val[T_PLTREL] != DT_RELA and t.val[T_PLTREL] != DT_REL:
            return _fail(c, E_FORMAT, "inconsistent ELF: DT_PLTREL is neither DT_REL nor "
                         "DT_RELA", t.val[T_PLTREL])
        rela = t.val[T_PLTREL] == DT_RELA
        if not _reloc_table(c, r, t.val[T_JMPREL], t.val[T_PLTRELSZ], rela,
                            "inconsistent ELF: DT_PLTRELSZ runs past the PT_LOAD segment of "
                            "DT_JMPREL", maxsym):
            return 0
    return 1


cdef bint _count_symbols(Ctx *c, Parsed *r, Tags *t, Tables *tb) noexcept nogil:
    """How many dynamic symbols to read: the most that any source implies.

    The loaders never count the symbols: they find definitions through a hash
    table and imports through the indexes that relocations name.  So the count
    is the largest of what DT_GNU_HASH's chains, DT_HASH's nchain and the
    highest relocation symbol index imply; the section headers or the table
    layout stand in for the hash tables only when neither counts.
    """
    cdef bint hashed = 0, found = 0
    cdef uint64_t off, k, nchain, maxsym = 0
    cdef uint64_t starts[6]
    if t.seen[T_GNU_HASH]:
        if not _vaddr_to_off(c, r, t.val[T_GNU_HASH], &off) or not _count_gnu_hash(c, r, off, &hashed):
            return 0
    if t.seen[T_HASH]:
        if not _vaddr_to_off(c, r, t.val[T_HASH], &off) or not _have(c, off, 8, "DT_HASH"):
            return 0
        _touch(r, off + 8)
        nchain = _u32(c.p + off + 4, c.le)
        if nchain > r.nsyms:
            r.nsyms = nchain
        hashed = 1
    if not hashed:
        # no hash table that counts the symbols: the section header, else the layout
        if not _count_from_sections(c, r, tb, &found):
            return 0
        if not found:
            for k in range(6):
                starts[k] = 0
            if t.seen[T_STRTAB]: starts[0] = t.val[T_STRTAB]
            if t.seen[T_VERSYM]: starts[1] = t.val[T_VERSYM]
            if t.seen[T_VERNEED]: starts[2] = t.val[T_VERNEED]
            if t.seen[T_VERDEF]: starts[3] = t.val[T_VERDEF]
            if t.seen[T_GNU_HASH]: starts[4] = t.val[T_GNU_HASH]
            if t.seen[T_HASH]: starts[5] = t.val[T_HASH]
            k = _count_from_layout(r, r.symtab_a, starts, 6)
            if k > r.nsyms:
                r.nsyms = k
    if not _reloc_symbols(c, r, t, &maxsym):
        return 0
    if maxsym and maxsym >= r.nsyms:
        r.nsyms = maxsym + 1
    return 1


cdef bint _request(Ctx *c, Parsed *r, Seg *dyn) noexcept nogil:
    """Ask at once for every segment's bytes that will be read, so a caller
    feeding a prefix learns the full extent in one round trip.

    What is requested counts as used: a prefix of bytes_used bytes must
    parse.  Notes and the dynamic entries are asked for where the loader
    reads them (see _note_place and _dynamic_place).
    """
    cdef uint32_t i
    cdef uint64_t off, size
    cdef bint ok = 1
    for i in range(r.nsegs):
        off = r.segs[i].p_offset
        size = r.segs[i].p_filesz
        if r.segs[i].p_type == PT_NOTE or r.segs[i].p_type == PT_GNU_PROPERTY:
            if not _note_place(c, r, &r.segs[i], &off, &size):
                return 0
        elif r.segs[i].p_type != PT_INTERP:
            continue
        if _have(c, off, size, "segment"):
            _touch(r, off + size)
        else:
            ok = 0
    if r.dyn_mapped:
        size = dyn.p_filesz
        if size > r.dyn_end - r.dyn_off:
            size = r.dyn_end - r.dyn_off
        if _have(c, r.dyn_off, size, "segment"):
            _touch(r, r.dyn_off + size)
        else:
            ok = 0
    return ok


cdef Seg *_last_dynamic(Parsed *r) noexcept nogil:
    """The PT_DYNAMIC the loaders use: the last one (glibc's
    _dl_map_object_from_fd and musl's map_library each keep overwriting)."""
    cdef Seg *dyn = NULL
    cdef uint32_t i
    for i in range(r.nsegs):
        if r.segs[i].p_type == PT_DYNAMIC:
            dyn = &r.segs[i]
    return dyn


cdef bint _program(Ctx *c, Parsed *r) noexcept nogil:
    """PT_INTERP, PT_GNU_STACK and the ISA property of the note segments."""
    cdef uint32_t i
    r.exec_stack = -1
    for i in range(r.nsegs):
        if r.segs[i].p_type == PT_INTERP:
            r.interp_off = r.segs[i].p_offset
            r.interp_len = r.segs[i].p_filesz
            _touch(r, r.interp_off + r.interp_len)
        elif r.segs[i].p_type == PT_GNU_STACK:
            r.exec_stack = 1 if (r.segs[i].p_flags & PF_X) else 0
        elif r.segs[i].p_type == PT_NOTE or r.segs[i].p_type == PT_GNU_PROPERTY:
            if not _notes(c, r, &r.segs[i]):
                return 0
    return 1


cdef bint _tables(Ctx *c, Parsed *r, Tags *t) noexcept nogil:
    """Locate .dynstr and the version tables; DT_VERNEEDNUM/DT_VERDEFNUM are not read."""
    cdef uint64_t off, end
    if t.seen[T_STRTAB]:
        r.has_strtab = 1
        r.strsz = t.val[T_STRSZ]
        if not _map(c, r, t.val[T_STRTAB], r.strsz,
                    "inconsistent ELF: .dynstr (DT_STRSZ) runs past its PT_LOAD segment",
                    &r.strtab, &end):
            return 0
        if not _have(c, r.strtab, r.strsz, ".dynstr"):
            return 0
        _touch(r, r.strtab + r.strsz)
    if t.seen[T_VERNEED]:
        if not _map(c, r, t.val[T_VERNEED], 0, "", &off, &end) or not _verneed(c, r, off, end):
            return 0
    if t.seen[T_VERDEF]:
        if not _map(c, r, t.val[T_VERDEF], 0, "", &off, &end) or not _verdef(c, r, off, end):
            return 0
    return 1


cdef void _symbol_tags(Ctx *c, Parsed *r, Tags *t) noexcept nogil:
    """DT_SYMTAB, DT_SYMENT (the ELF size when absent) and DT_VERSYM into ``r``."""
    r.syment = t.val[T_SYMENT] if t.seen[T_SYMENT] else (24 if c.is64 else 16)
    r.has_versym = t.seen[T_VERSYM]
    r.versym_a = t.val[T_VERSYM]
    r.has_symtab = t.seen[T_SYMTAB]
    r.symtab_a = t.val[T_SYMTAB]


cdef bint _parse(Ctx *c, Parsed *r, Prefixes *px) noexcept nogil:
    """Every stage in turn: header, program headers, PT_DYNAMIC's place,
    interpreter and notes, dynamic entries, string and version tables, the
    symbol count, the symbols.  False with the error in ``c``."""
    cdef Tables tb
    cdef Seg *dyn
    cdef Tags t

    memset(&tb, 0, sizeof(Tables))
    if not _header(c, r, &tb):
        return 0
    if not _segments(c, r, tb.phoff, tb.phnum):
        return 0
    dyn = _last_dynamic(r)
    if dyn != NULL and not _dynamic_place(c, r, dyn):
        return 0
    if not _request(c, r, dyn) or not _program(c, r):
        return 0
    if dyn == NULL:
        return 1
    if not _dynamic(c, r) or not _read_tags(c, r, &t):
        return 0
    _symbol_tags(c, r, &t)
    if not _tables(c, r, &t):
        return 0
    if not r.has_symtab:
        return 1
    if r.syment < (24 if c.is64 else 16):
        return _fail(c, E_FORMAT, "bad DT_SYMENT", r.symtab_a)
    if not _count_symbols(c, r, &t, &tb):
        return 0
    return _symbols(c, r, px)


# --------------------------------------------------------- named records
#
# Import, Export and Segment are C-level struct sequences (the kind of
# os.stat_result): tuples with named fields, so indexing, unpacking, equality
# with plain tuples, JSON and pickling all keep working.  A file can hold
# hundreds of thousands of symbols, so records must cost what a tuple costs:
# PyStructSequence_New looks the field counts up in the type's dict and
# mallocs every record (2.5x a tuple), so records are made here from a
# freelist, like CPython's own tuples (1.1x).  A ``cdef class`` with a
# freelist measured 1.6x a tuple and is not a tuple.

cdef extern from "Python.h":
    ctypedef struct PyStructSequence_Field:
        const char *name
        const char *doc
    ctypedef struct PyStructSequence_Desc:
        const char *name
        const char *doc
        PyStructSequence_Field *fields
        int n_in_sequence
    PyTypeObject *PyStructSequence_NewType(PyStructSequence_Desc *desc) except NULL
    void PyStructSequence_SET_ITEM(object rec, Py_ssize_t pos, PyObject *value)   # steals


cdef extern from *:
    """
    static PyStructSequence_Field fe_import_fields[] = {
        {"name", "the symbol's name"},
        {"version", "the GNU version it asks for (vna_name), or None"},
        {"library", "the file that defines that version (vn_file), or None"},
        {"binding", "STB_* (st_info >> 4)"},
        {"type", "STT_* (st_info & 0xf)"},
        {NULL, NULL}};
    static PyStructSequence_Desc fe_import_desc = {
        "fastelf._elf.Import",
        "Import(name, version, library, binding, type): an undefined dynamic symbol.",
        fe_import_fields, 5};
    static PyStructSequence_Field fe_export_fields[] = {
        {"name", "the symbol's name"},
        {"version", "the GNU version that defines it, or None"},
        {"binding", "STB_* (st_info >> 4)"},
        {"type", "STT_* (st_info & 0xf)"},
        {NULL, NULL}};
    static PyStructSequence_Desc fe_export_desc = {
        "fastelf._elf.Export",
        "Export(name, version, binding, type): a defined dynamic symbol that was asked for.",
        fe_export_fields, 4};
    static PyStructSequence_Field fe_segment_fields[] = {
        {"p_type", "PT_*"}, {"p_flags", "PF_*"}, {"p_offset", "file offset"},
        {"p_vaddr", "virtual address"}, {"p_filesz", "bytes in the file"},
        {"p_memsz", "bytes in memory"}, {"p_align", "alignment"},
        {NULL, NULL}};
    static PyStructSequence_Desc fe_segment_desc = {
        "fastelf._elf.Segment",
        "Segment(p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz, p_align): "
        "one program header.",
        fe_segment_fields, 7};

    /* Record kinds 0..2 (Import, Export, Segment): their types, their field
       counts and a freelist each, as CPython keeps for tuples (records are
       all visible fields: a tuple's layout).  A freed record keeps its memory
       and its GC header; it is untracked and holds no reference. */
    #define FE_KINDS 3
    #ifdef Py_GIL_DISABLED
    #define FE_FREE_MAX 0
    #else
    #define FE_FREE_MAX 4096
    #endif
    static PyTypeObject *fe_types[FE_KINDS];
    static Py_ssize_t fe_sizes[FE_KINDS];
    static PyObject *fe_free[FE_KINDS][FE_FREE_MAX + 1];
    static int fe_nfree[FE_KINDS];

    static void fe_record_dealloc(PyObject *o) {
        PyTypeObject *t = Py_TYPE(o);
        Py_ssize_t i, n = Py_SIZE(o);
        int k;
        PyObject_GC_UnTrack(o);
        for (i = 0; i < n; i++)
            Py_CLEAR(((PyTupleObject *)o)->ob_item[i]);
        for (k = 0; k < FE_KINDS && fe_types[k] != t; k++)
            ;
        if (k < FE_KINDS && n == fe_sizes[k] && fe_nfree[k] < FE_FREE_MAX)
            fe_free[k][fe_nfree[k]++] = o;
        else
            PyObject_GC_Del(o);
        if (PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE))
            Py_DECREF(t);   /* an instance of a heap type holds a reference to it */
    }

    static int fe_record_kind(int k, PyTypeObject *t, Py_ssize_t n) {
        if (t->tp_itemsize != sizeof(PyObject *) || t->tp_basicsize != PyTuple_Type.tp_basicsize
                || !PyType_HasFeature(t, Py_TPFLAGS_HAVE_GC)) {
            PyErr_SetString(PyExc_RuntimeError, "struct sequences are not laid out as tuples");
            return -1;
        }
        fe_types[k] = t;
        fe_sizes[k] = n;
        t->tp_dealloc = fe_record_dealloc;
        return 0;
    }

    /* A new record of kind k, its fields NULL (to be set by the caller). */
    static PyObject *fe_record_new(int k) {
        PyObject *o;
        if (fe_nfree[k]) {
            o = fe_free[k][--fe_nfree[k]];
            (void)PyObject_INIT_VAR(o, fe_types[k], fe_sizes[k]);
        } else {
            o = (PyObject *)PyObject_GC_NewVar(PyTupleObject, fe_types[k], fe_sizes[k]);
            if (o == NULL)
                return NULL;
        }
        memset(((PyTupleObject *)o)->ob_item, 0, fe_sizes[k] * sizeof(PyObject *));
        return o;
    }
    """
    PyStructSequence_Desc fe_import_desc
    PyStructSequence_Desc fe_export_desc
    PyStructSequence_Desc fe_segment_desc
    int fe_record_kind(int kind, PyTypeObject *t, Py_ssize_t n) except -1
    object fe_record_new(int kind)


cdef enum:
    K_IMPORT, K_EXPORT, K_SEGMENT


cdef object _record_type(int kind, PyStructSequence_Desc *desc):
    """A new struct sequence type whose records come from ``fe_record_new``."""
    cdef PyTypeObject *t = PyStructSequence_NewType(desc)   # its reference is never given back:
    cls = <object>t                                          # fe_types[kind] keeps the type alive
    if not cls.n_fields == cls.n_sequence_fields == desc.n_in_sequence:
        raise RuntimeError(f"{cls.__name__} has hidden fields")
    fe_record_kind(kind, t, desc.n_in_sequence)
    return cls


Import = _record_type(K_IMPORT, &fe_import_desc)
Export = _record_type(K_EXPORT, &fe_export_desc)
Segment = _record_type(K_SEGMENT, &fe_segment_desc)


cdef inline void _put(object rec, Py_ssize_t pos, object value) noexcept:
    """Fill one field of a new record (SET_ITEM steals the reference it is given)."""
    Py_INCREF(value)
    PyStructSequence_SET_ITEM(rec, pos, <PyObject *>value)


cdef object _import(str name, object version, object library, uint8_t info):
    cdef object rec = fe_record_new(K_IMPORT)
    _put(rec, 0, name)
    _put(rec, 1, version)
    _put(rec, 2, library)
    _put(rec, 3, info >> 4)
    _put(rec, 4, info & 0xf)
    return rec


cdef object _export(str name, object version, uint8_t info):
    cdef object rec = fe_record_new(K_EXPORT)
    _put(rec, 0, name)
    _put(rec, 1, version)
    _put(rec, 2, info >> 4)
    _put(rec, 3, info & 0xf)
    return rec


cdef object _segment(Seg *s):
    cdef object rec = fe_record_new(K_SEGMENT)
    _put(rec, 0, s.p_type)
    _put(rec, 1, s.p_flags)
    _put(rec, 2, s.p_offset)
    _put(rec, 3, s.p_vaddr)
    _put(rec, 4, s.p_filesz)
    _put(rec, 5, s.p_memsz)
    _put(rec, 6, s.p_align)
    return rec


# --------------------------------------------------------- Python results

cdef str _decode(const char *s, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(s, n, "surrogateescape")


cdef object _dynstr(Ctx *c, Parsed *r, dict cache, uint64_t idx):
    """The string at ``idx`` in .dynstr, decoded once per offset.

    Many symbols may point into one long string: the total length decoded
    is capped (``max_strbytes``) so a small file cannot make gigabytes of text.
    """
    cdef const char *s
    cdef Py_ssize_t n
    got = cache.get(idx)
    if got is not None:
        return got
    if not _cstr(c, r, idx, &s, &n):
        _raise(c)
    c.strbytes += <uint64_t>n
    if c.strbytes > c.max_strbytes:
        _fail(c, E_LIMIT, "dynamic strings longer in total than the limit", r.strtab + idx)
        _raise(c)
    got = _decode(s, n)
    cache[idx] = got
    return got


cdef object _dynstr_entry(Ctx *c, Parsed *r, dict cache, uint64_t idx):
    """A dynamic entry's string (NEEDED, SONAME, RPATH, RUNPATH): a repeat
    costs no decoding but its bytes in every output, so it counts again."""
    cdef bint seen = idx in cache
    got = _dynstr(c, r, cache, idx)
    if seen:
        c.strbytes += <uint64_t>len(<str>got)
        if c.strbytes > c.max_strbytes:
            _fail(c, E_LIMIT, "dynamic strings longer in total than the limit", r.strtab + idx)
            _raise(c)
    return got


cdef _raise(Ctx *c):
    cdef int k
    if c.err == E_MORE:
        raise ElfNeedMore(c.need, [(c.miss[2 * k], c.miss[2 * k + 1]) for k in range(c.nmiss)])
    if c.err == E_RANGE:
        raise ElfError(f"{c.msg.decode()} at offset {c.err_off:#x} extends past the end of "
                       f"the file ({c.fsize} bytes)")
    if c.err == E_LIMIT:
        raise ElfLimitError(f"{c.msg.decode()} (at offset {c.err_off:#x})")
    raise ElfError(f"{c.msg.decode()} (at offset {c.err_off:#x})")


def _merged(present, uint64_t fsize):
    """Sorted, disjoint, non-empty ``[start, end)`` pairs clipped to the file."""
    spans = sorted((max(0, int(a)), min(int(b), fsize)) for a, b in present)
    out = []
    last = None
    for a, b in spans:
        if a >= b:
            continue
        if last is not None and a <= last[1]:
            if b > last[1]:
                last[1] = b
        else:
            last = [a, b]
            out.append(last)
    return out


_ARCH = {       # (e_machine, ELF class, little-endian) -> the wheel tag's architecture
    (EM_386, 32, True): "i686",
    (EM_X86_64, 64, True): "x86_64",
    (EM_PPC64, 64, True): "ppc64le",
    (EM_PPC64, 64, False): "ppc64",
    (EM_RISCV, 64, True): "riscv64",
    (EM_AARCH64, 64, True): "aarch64",
    (EM_S390, 64, False): "s390x",
    (EM_ARM, 32, True): "armv7l",
    (EM_LOONGARCH, 64, True): "loongarch64",
}


cdef class ElfFile:
    """What the dynamic loader sees of one ELF file.

    ``imports`` holds an ``Import(name, version, library, binding, type)``
    per undefined dynamic symbol, where version/library come from the GNU
    version tables (``None`` when unversioned).  ``exports`` holds an
    ``Export(name, version, binding, type)`` per defined symbol that was asked
    for.  ``segments`` (``Segment`` records) and ``dynamic`` are the raw
    program headers and dynamic entries, for tools that rewrite the file.
    ``relr`` is true when the dynamic section has DT_RELR (packed relative
    relocations), which only glibc >= 2.36 and musl >= 1.2.4 apply.
    """

    def __repr__(self):
        return (f"<ElfFile {self.arch or self.machine} needed={self.needed!r} "
                f"soname={self.soname!r}>")

    @property
    def is_dynamic(self):
        return self.dynamic is not None and len(self.dynamic) > 0

    @property
    def x86_isa_level(self):
        """2, 3 or 4 for x86-64-v2/v3/v4 from the ISA_1_NEEDED property; 1 if baseline."""
        if self.isa_needed is None:
            return None
        bits = self.isa_needed & ~1
        if bits & 8:
            return 4
        if bits & 4:
            return 3
        if bits & 2:
            return 2
        return 1


# The result is built in stages, each from the C results of ``_parse``, in the
# order that decodes .dynstr strings (the string budget counts in that order):
# header facts, interpreter, segments, dynamic names, versions, imports, exports.

cdef tuple _arch(uint16_t machine, int elf_class, bint le, uint32_t flags):
    """(arch, arch_error): the wheel tag architecture or why there is none."""
    arch = _ARCH.get((machine, elf_class, bool(le)))
    if arch is None:
        return None, f"unknown architecture (e_machine {machine}, ELF{elf_class})"
    if arch == "armv7l":
        if (flags & EF_ARM_EABIMASK) != EF_ARM_EABI_VER5:
            return None, "ARM EABI version is not 5"
        if not (flags & EF_ARM_ABI_FLOAT_HARD):
            return None, "ARM binary is not hard-float"
    return arch, None


cdef object _interpreter(Ctx *c, Parsed *r):
    """PT_INTERP's path up to its first NUL, or None without one."""
    cdef const char *s
    cdef Py_ssize_t n = 0
    if not r.interp_len:
        return None
    s = <const char *>(c.p + r.interp_off)
    while n < <Py_ssize_t>r.interp_len and s[n] != 0:
        n += 1
    return _decode(s, n)


cdef list _segment_list(Parsed *r):
    cdef uint32_t i
    return [_segment(&r.segs[i]) for i in range(r.nsegs)]


cdef object _dynamic_list(Parsed *r):
    """The (tag, value) dynamic entries, or None without a PT_DYNAMIC."""
    cdef uint64_t k
    if not r.has_dynamic:
        return None
    return [(r.dyn[2 * k], r.dyn[2 * k + 1]) for k in range(r.ndyn)]


cdef void _dynamic_names(ElfFile out, Ctx *c, Parsed *r, dict strings) except *:
    """``needed``, ``soname``, ``rpath``, ``runpath``, in dynamic-entry order
    (the last SONAME/RPATH/RUNPATH wins, as in the loaders)."""
    cdef uint64_t k, tag, val
    out.needed = []
    out.soname = out.rpath = out.runpath = None
    for k in range(r.ndyn if r.has_dynamic else 0):
        tag = r.dyn[2 * k]
        val = r.dyn[2 * k + 1]
        if tag == DT_NEEDED:
            out.needed.append(_dynstr_entry(c, r, strings, val))
        elif tag == DT_SONAME:
            out.soname = _dynstr_entry(c, r, strings, val)
        elif tag == DT_RPATH:
            out.rpath = _dynstr_entry(c, r, strings, val)
        elif tag == DT_RUNPATH:
            out.runpath = _dynstr_entry(c, r, strings, val)


cdef dict _versions(ElfFile out, Ctx *c, Parsed *r, dict strings):
    """Fill ``version_needs``/``version_defs``; return versym index ->
    (version, library), library None for the file's own definitions."""
    cdef uint64_t k
    cdef dict versions = {}
    out.version_needs = {}
    out.version_defs = []
    for k in range(r.nvers):
        name = _dynstr(c, r, strings, r.vers[k].name)
        if r.vers[k].file >= 0:
            lib = _dynstr(c, r, strings, <uint64_t>r.vers[k].file)
            out.version_needs.setdefault(lib, []).append(name)
            versions[r.vers[k].ndx] = (name, lib)
        else:
            out.version_defs.append(name)
            if not r.vers[k].hidden:   # the base definition names the file itself
                versions[r.vers[k].ndx] = (name, None)
    return versions


cdef inline uint8_t _st_info(Ctx *c, Parsed *r, uint64_t i) noexcept:
    return c.p[r.symtab + i * r.syment + (4 if c.is64 else 12)]


cdef inline object _st_name(Ctx *c, Parsed *r, dict strings, uint64_t i):
    return _dynstr(c, r, strings, _u32(c.p + r.symtab + i * r.syment, c.le))


cdef inline uint16_t _versym(Ctx *c, Parsed *r, uint64_t i) noexcept:
    """Symbol ``i``'s version index (0 without DT_VERSYM; 0 and 1 mean unversioned)."""
    if not r.has_versym:
        return 0
    return _u16(c.p + r.versym + 2 * i, c.le) & ~VERSYM_HIDDEN


cdef list _import_list(Ctx *c, Parsed *r, dict strings, dict versions):
    cdef uint64_t k, i
    cdef uint16_t vs
    cdef list out = []
    for k in range(r.nundef):
        i = r.undef[k]
        name = _st_name(c, r, strings, i)
        ver = lib = None
        vs = _versym(c, r, i)
        if vs > 1:
            ver, lib = versions.get(vs, (None, None))
        out.append(_import(name, ver, lib, _st_info(c, r, i)))
    return out


cdef list _export_list(Ctx *c, Parsed *r, dict strings, dict versions):
    cdef uint64_t k, i
    cdef uint16_t vs
    cdef list out = []
    for k in range(r.nexp):
        i = r.exp[k]
        name = _st_name(c, r, strings, i)
        ver = None
        vs = _versym(c, r, i)
        if vs > 1:
            ver = versions.get(vs, (None, None))[0]
        out.append(_export(name, ver, _st_info(c, r, i)))
    return out


cdef ElfFile _result(Ctx *c, Parsed *r):
    """The ElfFile of a successful ``_parse``."""
    cdef ElfFile out = ElfFile.__new__(ElfFile)
    cdef dict strings = {}       # .dynstr offset -> decoded string
    out.elf_class = 64 if c.is64 else 32
    out.little_endian = c.le
    out.osabi = r.osabi
    out.e_type = r.e_type
    out.machine = r.machine
    out.flags = r.flags
    out.arch, out.arch_error = _arch(r.machine, out.elf_class, c.le, r.flags)
    out.interpreter = _interpreter(c, r)
    out.isa_needed = r.isa_needed if r.has_isa else None
    out.exec_stack = None if r.exec_stack < 0 else bool(r.exec_stack)
    out.segments = _segment_list(r)
    out.dynamic = _dynamic_list(r)
    # packed relative relocations: a loader that ignores DT_RELR leaves
    # pointers unrelocated (glibc < 2.36 and musl < 1.2.4 do)
    out.relr = out.dynamic is not None and any(tag == DT_RELR for tag, _val in out.dynamic)
    _dynamic_names(out, c, r, strings)
    versions = _versions(out, c, r, strings)
    out.symbol_count = r.nsyms
    out.imports = _import_list(c, r, strings, versions)
    out.exports = _export_list(c, r, strings, versions)
    out.bytes_used = r.used
    out.strbytes = c.strbytes
    return out


# --------------------------------------------------------------- parse()

cdef void _ctx_start(Ctx *c, uint64_t n, object file_size) except *:
    """Check the buffer and file sizes and clear the error state."""
    memset(c, 0, sizeof(Ctx))
    c.n = n
    c.fsize = n if file_size is None else file_size
    if c.fsize < c.n:
        raise ValueError("file_size is smaller than the buffer")
    if c.n == 0:
        if c.fsize:
            raise ElfNeedMore(min(c.fsize, 64))
        raise ElfError("empty file")
    c.le = 1


cdef void _sparse(Ctx *c, object present) except *:
    """Sparse mode: the present ranges as C pairs in ``c.iv`` (the caller frees them)."""
    cdef list spans = _merged(present, c.fsize)
    cdef uint64_t *iv = <uint64_t *>malloc((2 * len(spans) + 2) * sizeof(uint64_t))
    cdef Py_ssize_t j
    if iv == NULL:
        raise MemoryError()
    for j in range(len(spans)):
        iv[2 * j] = spans[j][0]
        iv[2 * j + 1] = spans[j][1]
    c.iv = iv
    c.niv = len(spans)
    if c.niv == 0 or iv[0] != 0 or iv[1] < 4:
        raise ElfNeedMore(min(c.fsize, 64), [(0, min(c.fsize, 64))])


cdef void _prefixes(Prefixes *px, list prefix_bytes) except *:
    """Point ``px`` at the export name prefixes (``prefix_bytes`` keeps them alive)."""
    cdef Py_ssize_t j
    px.n = len(prefix_bytes)
    if not px.n:
        return
    px.p = <const char **>malloc(px.n * sizeof(char *))
    px.lens = <Py_ssize_t *>malloc(px.n * sizeof(Py_ssize_t))
    if px.p == NULL or px.lens == NULL:
        raise MemoryError()
    for j in range(px.n):
        px.p[j] = <bytes>prefix_bytes[j]
        px.lens[j] = len(<bytes>prefix_bytes[j])


cdef void _release(Ctx *c, Parsed *r, Prefixes *px) noexcept:
    free(<void *>c.iv)
    free(px.p)
    free(px.lens)
    free(r.segs)
    free(r.dyn)
    free(r.vers)
    free(r.undef)
    free(r.exp)


def parse(buf, file_size=None, *, exports=(), max_symbols=DEFAULT_MAX_SYMBOLS,
          max_strlen=DEFAULT_MAX_STRLEN, max_strbytes=DEFAULT_MAX_STRBYTES,
          max_needed=DEFAULT_MAX_NEEDED, max_versions=DEFAULT_MAX_VERSIONS, present=None):
    """Parse an ELF image held in ``buf`` (any read-only buffer, not copied).

    ``file_size``: the size of the whole file when ``buf`` holds only its
    start; ``ElfNeedMore`` is raised if more is needed.  ``exports``: name
    prefixes of the defined symbols to report, or ``None`` for all of them.
    Limits (``ElfLimitError`` when broken): ``max_symbols`` dynamic symbols,
    ``max_strlen`` bytes in one string, ``max_strbytes`` bytes of strings in all
    (repeats count: they cost as much in any output), ``max_needed`` DT_NEEDED
    entries, ``max_versions`` version need/aux/definition entries.
    ``present``: sparse mode, for a ``buf`` spanning the whole file of which
    only these ``(start, end)`` ranges hold real bytes; every read is checked
    against them and ``ElfNeedMore.ranges`` lists what is missing.
    """
    cdef const uint8_t[::1] view = buf
    cdef Ctx c
    cdef Parsed r
    cdef Prefixes px
    cdef bint ok
    cdef list prefix_bytes = [] if exports is None else [p.encode() for p in exports]

    _ctx_start(&c, view.shape[0], file_size)
    c.p = &view[0]
    c.max_symbols = max_symbols
    c.max_strlen = max_strlen
    c.max_strbytes = max_strbytes
    c.max_needed = max_needed
    c.max_versions = max_versions
    memset(&r, 0, sizeof(Parsed))
    r.exec_stack = -1
    memset(&px, 0, sizeof(Prefixes))
    px.all = exports is None
    try:
        if present is not None:
            _sparse(&c, present)
        _prefixes(&px, prefix_bytes)
        with nogil:
            ok = _parse(&c, &r, &px)
        if not ok:
            _raise(&c)
        return _result(&c, &r)
    finally:
        _release(&c, &r, &px)
