# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Zero-copy ELF reader: the dynamic-linking facts of one ELF file.

``parse(buffer)`` reads the ELF header, program headers, PT_INTERP, the
dynamic section, the dynamic symbol table with its GNU versions
(versym/verneed/verdef) and GNU property notes.  Section headers are only
consulted when the dynamic section gives no way to count the symbols, so
stripped files work.  Every offset and count is checked against the buffer;
a malformed file raises ``ElfError``.

The buffer may be a prefix of the file: pass the real ``file_size`` and the
parser raises ``ElfNeedMore`` (with ``.needed``, the byte count required)
when a structure lies past the end of the prefix.  Callers that inflate a
compressed member use this to stop inflating early.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcmp, memset
from cpython.unicode cimport PyUnicode_DecodeUTF8

# ---------------------------------------------------------------- constants

cdef extern from *:
    """
    #define FE_PT_LOAD (1)
    #define FE_PT_DYNAMIC (2)
    #define FE_PT_INTERP (3)
    #define FE_PT_NOTE (4)
    #define FE_PT_GNU_STACK (0x6474e551ULL)
    #define FE_PT_GNU_PROPERTY (0x6474e553ULL)
    #define FE_DT_NULL (0)
    #define FE_DT_NEEDED (1)
    #define FE_DT_HASH (4)
    #define FE_DT_STRTAB (5)
    #define FE_DT_SYMTAB (6)
    #define FE_DT_STRSZ (10)
    #define FE_DT_SYMENT (11)
    #define FE_DT_SONAME (14)
    #define FE_DT_RPATH (15)
    #define FE_DT_RUNPATH (29)
    #define FE_DT_GNU_HASH (0x6ffffef5ULL)
    #define FE_DT_VERSYM (0x6ffffff0ULL)
    #define FE_DT_VERDEF (0x6ffffffcULL)
    #define FE_DT_VERDEFNUM (0x6ffffffdULL)
    #define FE_DT_VERNEED (0x6ffffffeULL)
    #define FE_DT_VERNEEDNUM (0x6fffffffULL)
    #define FE_SHT_DYNSYM (11)
    #define FE_NT_GNU_PROPERTY_TYPE_0 (5)
    #define FE_GNU_PROPERTY_X86_ISA_1_NEEDED (0xc0008002ULL)
    #define FE_MAX_PHNUM (65535)
    #define FE_MAX_DYN (1  <<  20)
    """
    const uint64_t PT_LOAD "FE_PT_LOAD"
    const uint64_t PT_DYNAMIC "FE_PT_DYNAMIC"
    const uint64_t PT_INTERP "FE_PT_INTERP"
    const uint64_t PT_NOTE "FE_PT_NOTE"
    const uint64_t PT_GNU_STACK "FE_PT_GNU_STACK"
    const uint64_t PT_GNU_PROPERTY "FE_PT_GNU_PROPERTY"
    const uint64_t DT_NULL "FE_DT_NULL"
    const uint64_t DT_NEEDED "FE_DT_NEEDED"
    const uint64_t DT_HASH "FE_DT_HASH"
    const uint64_t DT_STRTAB "FE_DT_STRTAB"
    const uint64_t DT_SYMTAB "FE_DT_SYMTAB"
    const uint64_t DT_STRSZ "FE_DT_STRSZ"
    const uint64_t DT_SYMENT "FE_DT_SYMENT"
    const uint64_t DT_SONAME "FE_DT_SONAME"
    const uint64_t DT_RPATH "FE_DT_RPATH"
    const uint64_t DT_RUNPATH "FE_DT_RUNPATH"
    const uint64_t DT_GNU_HASH "FE_DT_GNU_HASH"
    const uint64_t DT_VERSYM "FE_DT_VERSYM"
    const uint64_t DT_VERDEF "FE_DT_VERDEF"
    const uint64_t DT_VERDEFNUM "FE_DT_VERDEFNUM"
    const uint64_t DT_VERNEED "FE_DT_VERNEED"
    const uint64_t DT_VERNEEDNUM "FE_DT_VERNEEDNUM"
    const uint64_t SHT_DYNSYM "FE_SHT_DYNSYM"
    const uint64_t NT_GNU_PROPERTY_TYPE_0 "FE_NT_GNU_PROPERTY_TYPE_0"
    const uint64_t GNU_PROPERTY_X86_ISA_1_NEEDED "FE_GNU_PROPERTY_X86_ISA_1_NEEDED"
    const uint64_t MAX_PHNUM "FE_MAX_PHNUM"
    const uint64_t MAX_DYN "FE_MAX_DYN"





# e_machine values
EM_386 = 3
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258

# symbol binding / type
STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2
STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2

DEFAULT_MAX_SYMBOLS = 10_000_000
DEFAULT_MAX_STRLEN = 1 << 18
DEFAULT_MAX_STRBYTES = 256 << 20     # all strings decoded from one file, together
DEFAULT_MAX_NEEDED = 4096            # DT_NEEDED entries of one file
DEFAULT_MAX_VERSIONS = 65536         # version need/aux + definition entries of one file
cdef enum:
    MAX_MISS = 16                    # missing ranges one ElfNeedMore reports (sparse mode)


class ElfError(ValueError):
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
    bint has_strtab
    uint64_t strtab
    uint64_t strsz
    bint has_symtab
    uint64_t symtab
    uint64_t syment
    uint64_t nsyms
    bint has_versym
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


cdef bint _vaddr_to_off(Ctx *c, Parsed *r, uint64_t addr, uint64_t *off) noexcept nogil:
    """Map a virtual address to a file offset through the PT_LOAD segments."""
    cdef uint32_t i
    cdef Seg *s
    for i in range(r.nsegs):
        s = &r.segs[i]
        if s.p_type == PT_LOAD and s.p_vaddr <= addr and addr - s.p_vaddr < s.p_filesz:
            off[0] = addr - s.p_vaddr + s.p_offset
            return 1
    return _fail(c, E_FORMAT, "address not covered by any PT_LOAD segment", addr)


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

cdef bint _header(Ctx *c, Parsed *r, uint64_t *phoff, uint32_t *phnum,
                  uint64_t *shoff, uint32_t *shnum, uint32_t *shentsize) noexcept nogil:
    cdef const uint8_t *h
    cdef uint32_t phentsize
    # Check the magic on what is there first, so that a short non-ELF file
    # (or prefix) is reported as such rather than as a truncated header; a
    # prefix too short to decide asks for the rest of the magic, so that a
    # prefix and the whole file always give the same verdict.
    if memcmp(c.p, b"\x7fELF", c.n if c.n < 4 else 4) != 0:
        return _fail(c, E_FORMAT, "not an ELF file (bad magic)", 0)
    if not _have(c, 0, c.fsize if c.fsize < 4 else 4, "ELF magic"):
        return 0
    if not _have(c, 0, 16, "ELF identification"):
        return 0
    h = c.p
    if memcmp(h, b"\x7fELF", 4) != 0:
        return _fail(c, E_FORMAT, "not an ELF file (bad magic)", 0)
    if h[4] == 1:
        c.is64 = 0
    elif h[4] == 2:
        c.is64 = 1
    else:
        return _fail(c, E_FORMAT, "bad ELF class", 4)
    if h[5] == 1:
        c.le = 1
    elif h[5] == 2:
        c.le = 0
    else:
        return _fail(c, E_FORMAT, "bad ELF data encoding", 5)
    if h[6] != 1:
        return _fail(c, E_FORMAT, "bad ELF version", 6)
    r.osabi = h[7]
    if not _have(c, 0, 64 if c.is64 else 52, "ELF header"):
        return 0
    r.e_type = _u16(h + 16, c.le)
    r.machine = _u16(h + 18, c.le)
    if c.is64:
        phoff[0] = _u64(h + 32, c.le)
        shoff[0] = _u64(h + 40, c.le)
        r.flags = _u32(h + 48, c.le)
        phentsize = _u16(h + 54, c.le)
        phnum[0] = _u16(h + 56, c.le)
        shentsize[0] = _u16(h + 58, c.le)
        shnum[0] = _u16(h + 60, c.le)
    else:
        phoff[0] = _u32(h + 28, c.le)
        shoff[0] = _u32(h + 32, c.le)
        r.flags = _u32(h + 36, c.le)
        phentsize = _u16(h + 42, c.le)
        phnum[0] = _u16(h + 44, c.le)
        shentsize[0] = _u16(h + 46, c.le)
        shnum[0] = _u16(h + 48, c.le)
    _touch(r, 64 if c.is64 else 52)
    if phnum[0] and phentsize != (56 if c.is64 else 32):
        return _fail(c, E_FORMAT, "bad program header entry size", 0)
    if phnum[0] == 0xffff:
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


cdef bint _notes(Ctx *c, Parsed *r, Seg *s) noexcept nogil:
    """Scan one note segment for the x86 ISA_1_NEEDED GNU property.

    As in the gABI (and glibc's ELF_NOTE_DESC_OFFSET/ELF_NOTE_NEXT_OFFSET),
    the descriptor and the next note start at offsets aligned relative to the
    start of the note; every step is checked to stay inside the segment.
    """
    cdef uint64_t off = s.p_offset, end, namesz, descsz, ntype, desc, dend, p, step
    cdef uint64_t align = 8 if s.p_align == 8 else 4
    cdef uint64_t palign = 8 if c.is64 else 4
    cdef uint32_t prtype, prsz
    if not _have(c, s.p_offset, s.p_filesz, "note segment"):
        return 0
    _touch(r, s.p_offset + s.p_filesz)
    end = s.p_offset + s.p_filesz
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
                    r.isa_needed = _u32(c.p + p, c.le)
                step = (prsz + palign - 1) & ~(palign - 1)
                if step > dend - p:
                    break
                p += step
        off = desc + ((descsz + align - 1) & ~(align - 1))
    return 1


cdef bint _dynamic(Ctx *c, Parsed *r, Seg *s) noexcept nogil:
    cdef uint64_t entsz = 16 if c.is64 else 8
    cdef uint64_t count = s.p_filesz // entsz
    cdef uint64_t i, tag, needed = 0
    cdef const uint8_t *q
    if count > MAX_DYN:
        return _fail(c, E_LIMIT, "dynamic section has too many entries", s.p_offset)
    if not _have(c, s.p_offset, count * entsz, "dynamic section"):
        return 0
    _touch(r, s.p_offset + count * entsz)
    r.dyn = <uint64_t *>malloc((count + 1) * 2 * sizeof(uint64_t))
    if r.dyn == NULL:
        return _fail(c, E_LIMIT, "out of memory for dynamic section", s.p_offset)
    r.has_dynamic = 1
    for i in range(count):
        q = c.p + s.p_offset + i * entsz
        tag = _word(c, q)
        if tag == DT_NULL:
            break
        r.dyn[2 * r.ndyn] = tag
        r.dyn[2 * r.ndyn + 1] = _word(c, q + entsz // 2)
        r.ndyn += 1
        if tag == DT_NEEDED:
            needed += 1
            if needed > c.max_needed:
                return _fail(c, E_LIMIT, "more DT_NEEDED entries than the limit", s.p_offset)
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


cdef bint _count_from_sections(Ctx *c, Parsed *r, uint64_t shoff, uint32_t shnum,
                               uint32_t shentsize, bint *found) noexcept nogil:
    """Fallback symbol count: the SHT_DYNSYM section header, if there is one."""
    cdef uint32_t i
    cdef const uint8_t *q
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


cdef bint _verneed(Ctx *c, Parsed *r, uint64_t off, uint64_t num) noexcept nogil:
    cdef uint64_t steps = 0, budget = c.n // 16 + 1, aux, k
    cdef uint32_t cnt, next_, anext
    cdef uint64_t vn_file
    for k in range(num):
        if not _have(c, off, 16, "verneed entry"):
            return 0
        _touch(r, off + 16)
        cnt = _u16(c.p + off + 2, c.le)
        vn_file = _u32(c.p + off + 4, c.le)
        aux = off + _u32(c.p + off + 8, c.le)
        next_ = _u32(c.p + off + 12, c.le)
        for _ in range(cnt):
            steps += 1
            if steps > budget:
                return _too_long(c, "verneed chain loops", off, 16 * steps)
            if not _have(c, aux, 16, "vernaux entry"):
                return 0
            _touch(r, aux + 16)
            if not _push_ver(c, r, _u16(c.p + aux + 6, c.le) & 0x7fff,
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


cdef bint _verdef(Ctx *c, Parsed *r, uint64_t off, uint64_t num) noexcept nogil:
    cdef uint64_t steps = 0, budget = c.n // 20 + 1, k
    cdef uint32_t next_
    cdef uint16_t flags, ndx, cnt
    for k in range(num):
        if not _have(c, off, 20, "verdef entry"):
            return 0
        _touch(r, off + 20)
        flags = _u16(c.p + off + 2, c.le)
        ndx = _u16(c.p + off + 4, c.le)
        cnt = _u16(c.p + off + 6, c.le)
        if cnt:
            if not _have(c, off + _u32(c.p + off + 12, c.le), 8, "verdaux entry"):
                return 0
            _touch(r, off + _u32(c.p + off + 12, c.le) + 8)
            if not _push_ver(c, r, ndx & 0x7fff,
                             _u32(c.p + off + _u32(c.p + off + 12, c.le), c.le), -1,
                             flags & 1):   # VER_FLG_BASE marks the file's own name
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


cdef bint _symbols(Ctx *c, Parsed *r, const char **prefixes, Py_ssize_t *plens,
                   Py_ssize_t nprefix, bint all_exports) noexcept nogil:
    cdef uint64_t i, base, name
    cdef const uint8_t *q
    cdef uint16_t shndx
    cdef uint8_t info
    cdef Py_ssize_t j, slen
    cdef const char *s
    if r.nsyms > c.max_symbols:
        return _fail(c, E_LIMIT, "more dynamic symbols than the limit", r.symtab)
    if r.nsyms == 0:
        return 1
    if r.syment < (24 if c.is64 else 16):
        return _fail(c, E_FORMAT, "bad DT_SYMENT", r.symtab)
    if r.nsyms > (c.fsize // r.syment) + 1:
        return _fail(c, E_FORMAT, "symbol table larger than the file", r.symtab)
    if not _have(c, r.symtab, r.nsyms * r.syment, "dynamic symbol table"):
        return 0
    _touch(r, r.symtab + r.nsyms * r.syment)
    if r.has_versym:
        if not _have(c, r.versym, r.nsyms * 2, "version symbol table"):
            return 0
        _touch(r, r.versym + r.nsyms * 2)
    r.undef = <uint64_t *>malloc(r.nsyms * sizeof(uint64_t))
    r.exp = <uint64_t *>malloc(r.nsyms * sizeof(uint64_t))
    if r.undef == NULL or r.exp == NULL:
        return _fail(c, E_LIMIT, "out of memory for symbols", r.symtab)
    for i in range(1, r.nsyms):
        q = c.p + r.symtab + i * r.syment
        name = _u32(q, c.le)
        if c.is64:
            info = q[4]
            shndx = _u16(q + 6, c.le)
        else:
            info = q[12]
            shndx = _u16(q + 14, c.le)
        if (info >> 4) == 0:   # STB_LOCAL
            continue
        if shndx == 0:
            r.undef[r.nundef] = i
            r.nundef += 1
        elif all_exports:
            r.exp[r.nexp] = i
            r.nexp += 1
        elif nprefix:
            # Compare only the prefixes' bytes (they hold no NUL): scanning each
            # name for its end would let many symbols naming one long string
            # cost symbols x max_strlen.  Matches are decoded (and checked) later.
            if not r.has_strtab or name >= r.strsz:
                return _cstr(c, r, name, &s, &slen)
            for j in range(nprefix):
                if (<uint64_t>plens[j] <= r.strsz - name
                        and memcmp(c.p + r.strtab + name, prefixes[j], plens[j]) == 0):
                    r.exp[r.nexp] = i
                    r.nexp += 1
                    break
    return 1


cdef bint _parse(Ctx *c, Parsed *r, const char **prefixes, Py_ssize_t *plens,
                 Py_ssize_t nprefix, bint all_exports) noexcept nogil:
    cdef uint64_t phoff = 0, shoff = 0
    cdef uint32_t phnum = 0, shnum = 0, shentsize = 0, i
    cdef Seg *dyn = NULL
    cdef uint64_t k, tag, val
    cdef bint has_hash = 0, has_gnu_hash = 0, has_verneed = 0, has_verdef = 0
    cdef uint64_t hash_a = 0, gnu_a = 0, verneed_a = 0, verdef_a = 0
    cdef uint64_t verneednum = 0, verdefnum = 0, strtab_a = 0, symtab_a = 0, versym_a = 0
    cdef uint64_t off
    cdef bint ok = 1, hashed = 0, found = 0
    cdef uint64_t starts[6]

    if not _header(c, r, &phoff, &phnum, &shoff, &shnum, &shentsize):
        return 0
    if not _segments(c, r, phoff, phnum):
        return 0
    # First pass over the segments: request every range we will read at once,
    # so a caller feeding a prefix learns the full extent in one round trip.
    # What is requested counts as used, even a note segment left unread once
    # the ISA property is found: a prefix of bytes_used bytes must parse.
    for i in range(r.nsegs):
        if r.segs[i].p_type in (PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_GNU_PROPERTY):
            if _have(c, r.segs[i].p_offset, r.segs[i].p_filesz, "segment"):
                _touch(r, r.segs[i].p_offset + r.segs[i].p_filesz)
            else:
                ok = 0
    if not ok:
        return 0
    r.exec_stack = -1
    for i in range(r.nsegs):
        if r.segs[i].p_type == PT_INTERP:
            r.interp_off = r.segs[i].p_offset
            r.interp_len = r.segs[i].p_filesz
            _touch(r, r.interp_off + r.interp_len)
        elif r.segs[i].p_type == PT_DYNAMIC and dyn == NULL:
            dyn = &r.segs[i]
        elif r.segs[i].p_type == PT_GNU_STACK:
            r.exec_stack = 1 if (r.segs[i].p_flags & 1) else 0
        elif r.segs[i].p_type == PT_NOTE or r.segs[i].p_type == PT_GNU_PROPERTY:
            if not r.has_isa and not _notes(c, r, &r.segs[i]):
                return 0
    if dyn == NULL:
        return 1
    if not _dynamic(c, r, dyn):
        return 0
    r.syment = 24 if c.is64 else 16
    for k in range(r.ndyn):
        tag = r.dyn[2 * k]
        val = r.dyn[2 * k + 1]
        if tag == DT_STRTAB:
            strtab_a = val
            r.has_strtab = 1
        elif tag == DT_STRSZ:
            r.strsz = val
        elif tag == DT_SYMTAB:
            symtab_a = val
            r.has_symtab = 1
        elif tag == DT_SYMENT:
            r.syment = val
        elif tag == DT_HASH:
            hash_a = val
            has_hash = 1
        elif tag == DT_GNU_HASH:
            gnu_a = val
            has_gnu_hash = 1
        elif tag == DT_VERSYM:
            versym_a = val
            r.has_versym = 1
        elif tag == DT_VERNEED:
            verneed_a = val
            has_verneed = 1
        elif tag == DT_VERNEEDNUM:
            verneednum = val
        elif tag == DT_VERDEF:
            verdef_a = val
            has_verdef = 1
        elif tag == DT_VERDEFNUM:
            verdefnum = val
    if r.has_strtab:
        if not _vaddr_to_off(c, r, strtab_a, &r.strtab):
            return 0
        if not _have(c, r.strtab, r.strsz, ".dynstr"):
            return 0
        _touch(r, r.strtab + r.strsz)
    if r.has_symtab:
        if r.syment < (24 if c.is64 else 16):
            return _fail(c, E_FORMAT, "bad DT_SYMENT", symtab_a)
        if not _vaddr_to_off(c, r, symtab_a, &r.symtab):
            return 0
        if has_gnu_hash:
            if not _vaddr_to_off(c, r, gnu_a, &off) or not _count_gnu_hash(c, r, off, &hashed):
                return 0
        if hashed:
            pass
        elif has_hash:
            if not _vaddr_to_off(c, r, hash_a, &off) or not _have(c, off, 8, "DT_HASH"):
                return 0
            _touch(r, off + 8)
            r.nsyms = _u32(c.p + off + 4, c.le)
        else:
            # no hash table that counts the symbols: the section header, else the layout
            if not _count_from_sections(c, r, shoff, shnum, shentsize, &found):
                return 0
            if not found:
                starts[0] = strtab_a if r.has_strtab else 0
                starts[1] = versym_a if r.has_versym else 0
                starts[2] = verneed_a if has_verneed else 0
                starts[3] = verdef_a if has_verdef else 0
                starts[4] = gnu_a if has_gnu_hash else 0
                starts[5] = hash_a if has_hash else 0
                k = _count_from_layout(r, symtab_a, starts, 6)
                if k > r.nsyms:
                    r.nsyms = k
    if r.has_versym and not _vaddr_to_off(c, r, versym_a, &r.versym):
        return 0
    if has_verneed:
        if not _vaddr_to_off(c, r, verneed_a, &off) or not _verneed(c, r, off, verneednum):
            return 0
    if has_verdef:
        if not _vaddr_to_off(c, r, verdef_a, &off) or not _verdef(c, r, off, verdefnum):
            return 0
    if r.has_symtab:
        return _symbols(c, r, prefixes, plens, nprefix, all_exports)
    return 1


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


_ARCH = {
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

    ``imports`` holds one tuple per undefined dynamic symbol:
    ``(name, version, library, binding, type)`` where version/library come
    from the GNU version tables (``None`` when unversioned).  ``exports``
    holds ``(name, version, binding, type)`` for the defined symbols that
    were asked for.  ``segments`` and ``dynamic`` are the raw program
    headers and dynamic entries, for tools that rewrite the file.
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
    cdef Py_ssize_t nprefix = 0, j
    cdef const char **prefixes = NULL
    cdef Py_ssize_t *plens = NULL
    cdef bint all_exports = exports is None
    cdef bint ok
    cdef uint64_t k, i, q
    cdef const char *s
    cdef Py_ssize_t slen
    cdef uint16_t vs
    cdef ElfFile out
    cdef list prefix_bytes = [] if all_exports else [p.encode() for p in exports]
    cdef dict strings = {}       # .dynstr offset -> decoded string
    cdef uint64_t *iv = NULL
    cdef list spans

    c.n = view.shape[0]
    c.fsize = c.n if file_size is None else file_size
    if c.fsize < c.n:
        raise ValueError("file_size is smaller than the buffer")
    if c.n == 0:
        if c.fsize:
            raise ElfNeedMore(min(c.fsize, 64))
        raise ElfError("empty file")
    c.p = &view[0]
    c.is64 = 0
    c.le = 1
    c.err = E_OK
    c.msg = NULL
    c.err_off = 0
    c.need = 0
    c.max_symbols = max_symbols
    c.max_strlen = max_strlen
    c.max_strbytes = max_strbytes
    c.strbytes = 0
    c.max_needed = max_needed
    c.max_versions = max_versions
    c.iv = NULL
    c.niv = 0
    c.nmiss = 0
    memset(&r, 0, sizeof(Parsed))
    r.exec_stack = -1

    nprefix = len(prefix_bytes)
    try:
        if present is not None:
            spans = _merged(present, c.fsize)
            iv = <uint64_t *>malloc((2 * len(spans) + 2) * sizeof(uint64_t))
            if iv == NULL:
                raise MemoryError()
            for j in range(len(spans)):
                iv[2 * j] = spans[j][0]
                iv[2 * j + 1] = spans[j][1]
            c.iv = iv
            c.niv = len(spans)
            if c.niv == 0 or iv[0] != 0 or iv[1] < 4:
                raise ElfNeedMore(min(c.fsize, 64), [(0, min(c.fsize, 64))])
        if nprefix:
            prefixes = <const char **>malloc(nprefix * sizeof(char *))
            plens = <Py_ssize_t *>malloc(nprefix * sizeof(Py_ssize_t))
            if prefixes == NULL or plens == NULL:
                raise MemoryError()
            for j in range(nprefix):
                prefixes[j] = <bytes>prefix_bytes[j]
                plens[j] = len(<bytes>prefix_bytes[j])
        with nogil:
            ok = _parse(&c, &r, prefixes, plens, nprefix, all_exports)
        if not ok:
            _raise(&c)

        out = ElfFile.__new__(ElfFile)
        out.elf_class = 64 if c.is64 else 32
        out.little_endian = c.le
        out.osabi = r.osabi
        out.e_type = r.e_type
        out.machine = r.machine
        out.flags = r.flags
        out.arch = _ARCH.get((r.machine, out.elf_class, bool(c.le)))
        out.arch_error = None
        if out.arch is None:
            out.arch_error = f"unknown architecture (e_machine {r.machine}, ELF{out.elf_class})"
        elif out.arch == "armv7l":
            if (r.flags & 0xFF000000) != 0x05000000:
                out.arch, out.arch_error = None, "ARM EABI version is not 5"
            elif not (r.flags & 0x400):
                out.arch, out.arch_error = None, "ARM binary is not hard-float"
        out.interpreter = None
        if r.interp_len:
            s = <const char *>(c.p + r.interp_off)
            slen = 0
            while slen < <Py_ssize_t>r.interp_len and s[slen] != 0:
                slen += 1
            out.interpreter = _decode(s, slen)
        out.isa_needed = r.isa_needed if r.has_isa else None
        out.exec_stack = None if r.exec_stack < 0 else bool(r.exec_stack)
        out.segments = [
            (r.segs[i].p_type, r.segs[i].p_flags, r.segs[i].p_offset, r.segs[i].p_vaddr,
             r.segs[i].p_filesz, r.segs[i].p_memsz, r.segs[i].p_align)
            for i in range(r.nsegs)]
        out.needed = []
        out.soname = out.rpath = out.runpath = None
        out.dynamic = None
        if r.has_dynamic:
            out.dynamic = [(r.dyn[2 * k], r.dyn[2 * k + 1]) for k in range(r.ndyn)]
            for k in range(r.ndyn):
                if r.dyn[2 * k] == DT_NEEDED:
                    out.needed.append(_dynstr_entry(&c, &r, strings, r.dyn[2 * k + 1]))
                elif r.dyn[2 * k] == DT_SONAME:
                    out.soname = _dynstr_entry(&c, &r, strings, r.dyn[2 * k + 1])
                elif r.dyn[2 * k] == DT_RPATH:
                    out.rpath = _dynstr_entry(&c, &r, strings, r.dyn[2 * k + 1])
                elif r.dyn[2 * k] == DT_RUNPATH:
                    out.runpath = _dynstr_entry(&c, &r, strings, r.dyn[2 * k + 1])

        # version index -> (name, library)
        versions = {}
        out.version_needs = {}
        out.version_defs = []
        for k in range(r.nvers):
            name = _dynstr(&c, &r, strings, r.vers[k].name)
            if r.vers[k].file >= 0:
                lib = _dynstr(&c, &r, strings, <uint64_t>r.vers[k].file)
                out.version_needs.setdefault(lib, []).append(name)
                versions[r.vers[k].ndx] = (name, lib)
            else:
                out.version_defs.append(name)
                if not r.vers[k].hidden:   # the base definition names the file itself
                    versions[r.vers[k].ndx] = (name, None)

        out.symbol_count = r.nsyms
        out.imports = []
        out.exports = []
        for k in range(r.nundef):
            i = r.undef[k]
            q = r.symtab + i * r.syment
            info = c.p[q + 4] if c.is64 else c.p[q + 12]
            name = _dynstr(&c, &r, strings, _u32(c.p + q, c.le))
            ver = lib = None
            if r.has_versym:
                vs = _u16(c.p + r.versym + 2 * i, c.le) & 0x7fff
                if vs > 1:
                    ver, lib = versions.get(vs, (None, None))
            out.imports.append((name, ver, lib, info >> 4, info & 0xf))
        for k in range(r.nexp):
            i = r.exp[k]
            q = r.symtab + i * r.syment
            info = c.p[q + 4] if c.is64 else c.p[q + 12]
            name = _dynstr(&c, &r, strings, _u32(c.p + q, c.le))
            ver = None
            if r.has_versym:
                vs = _u16(c.p + r.versym + 2 * i, c.le) & 0x7fff
                if vs > 1:
                    ver = versions.get(vs, (None, None))[0]
            out.exports.append((name, ver, info >> 4, info & 0xf))
        out.bytes_used = r.used
        out.strbytes = c.strbytes
        return out
    finally:
        free(iv)
        free(prefixes)
        free(plens)
        free(r.segs)
        free(r.dyn)
        free(r.vers)
        free(r.undef)
        free(r.exp)
