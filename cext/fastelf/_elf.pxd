# Declarations for the ELF core (fastelf._elf).
#
# The core knows ELF and nothing else: no wheels, no policies.  It reads a
# read-only buffer (bytes, mmap, memoryview) in place and never copies it.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t


# ---------------------------------------------------------------- ELF constants
#
# The one home of fastelf's ELF numbers, under their names in the ELF spec
# (glibc's <elf.h>; DT_USED and VERSYM_HIDDEN are binutils' names).  Anonymous
# ``cpdef enum``s are C constants to the core and plain ints in the Python
# module (``from fastelf._elf import PT_LOAD``).  A C enum is an int, so the
# values above 0x7fffffff live in the block after them, C-side only.

cpdef enum:                 # e_ident: its size, the indexes and their values
    EI_NIDENT = 16
    EI_CLASS = 4
    EI_DATA = 5
    EI_VERSION = 6
    ELFCLASS32 = 1
    ELFCLASS64 = 2
    ELFDATA2LSB = 1
    ELFDATA2MSB = 2
    EV_CURRENT = 1

cpdef enum:                 # e_type
    ET_NONE = 0
    ET_REL = 1
    ET_EXEC = 2
    ET_DYN = 3
    ET_CORE = 4

cpdef enum:                 # e_machine
    EM_386 = 3
    EM_MIPS = 8
    EM_PPC = 20
    EM_PPC64 = 21
    EM_S390 = 22
    EM_ARM = 40
    EM_X86_64 = 62
    EM_AARCH64 = 183
    EM_RISCV = 243
    EM_LOONGARCH = 258

cpdef enum:                 # e_flags of EM_ARM
    EF_ARM_ABI_FLOAT_HARD = 0x400
    EF_ARM_EABI_VER5 = 0x05000000

cpdef enum:                 # p_type, p_flags; e_phnum
    PT_NULL = 0
    PT_LOAD = 1
    PT_DYNAMIC = 2
    PT_INTERP = 3
    PT_NOTE = 4
    PT_PHDR = 6
    PT_GNU_STACK = 0x6474e551
    PT_GNU_PROPERTY = 0x6474e553
    PF_X = 1
    PF_W = 2
    PF_R = 4
    PN_XNUM = 0xffff

cpdef enum:                 # sh_type, sh_flags, special section indexes
    SHT_NULL = 0
    SHT_PROGBITS = 1
    SHT_SYMTAB = 2
    SHT_STRTAB = 3
    SHT_RELA = 4
    SHT_HASH = 5
    SHT_DYNAMIC = 6
    SHT_NOTE = 7
    SHT_NOBITS = 8
    SHT_REL = 9
    SHT_DYNSYM = 11
    SHT_GNU_HASH = 0x6ffffff6
    SHT_GNU_verdef = 0x6ffffffd
    SHT_GNU_verneed = 0x6ffffffe
    SHT_GNU_versym = 0x6fffffff
    SHF_ALLOC = 0x2
    SHF_INFO_LINK = 0x40
    SHN_UNDEF = 0
    SHN_LORESERVE = 0xff00
    SHN_XINDEX = 0xffff

cpdef enum:                 # d_tag
    DT_NULL = 0
    DT_NEEDED = 1
    DT_PLTRELSZ = 2
    DT_PLTGOT = 3
    DT_HASH = 4
    DT_STRTAB = 5
    DT_SYMTAB = 6
    DT_RELA = 7
    DT_RELASZ = 8
    DT_STRSZ = 10
    DT_SYMENT = 11
    DT_INIT = 12
    DT_FINI = 13
    DT_SONAME = 14
    DT_RPATH = 15
    DT_REL = 17
    DT_RELSZ = 18
    DT_PLTREL = 20
    DT_JMPREL = 23
    DT_INIT_ARRAY = 25
    DT_FINI_ARRAY = 26
    DT_RUNPATH = 29
    DT_PREINIT_ARRAY = 32
    DT_RELRSZ = 35
    DT_RELR = 36
    DT_RELRENT = 37
    DT_NUM = 38             # the gABI tags are 0 .. DT_NUM - 1
    DT_GNU_HASH = 0x6ffffef5
    DT_CONFIG = 0x6ffffefa
    DT_DEPAUDIT = 0x6ffffefb
    DT_AUDIT = 0x6ffffefc
    DT_VERSYM = 0x6ffffff0
    DT_FLAGS_1 = 0x6ffffffb
    DT_LOPROC = 0x70000000
    DT_VERDEF = 0x6ffffffc
    DT_VERDEFNUM = 0x6ffffffd
    DT_VERNEED = 0x6ffffffe
    DT_VERNEEDNUM = 0x6fffffff
    DT_AUXILIARY = 0x7ffffffd
    DT_USED = 0x7ffffffe
    DT_FILTER = 0x7fffffff
    DF_1_NODEFLIB = 0x800

cpdef enum:                 # st_info, versions, notes
    STB_LOCAL = 0
    STB_GLOBAL = 1
    STB_WEAK = 2
    STT_NOTYPE = 0
    STT_OBJECT = 1
    STT_FUNC = 2
    VER_FLG_BASE = 0x1
    VERSYM_HIDDEN = 0x8000
    NT_GNU_PROPERTY_TYPE_0 = 5

cdef extern from *:
    """
    #define FE_ELFMAG "\\x7f" "ELF"
    #define FE_GNU_PROPERTY_X86_ISA_1_NEEDED 0xc0008002U
    #define FE_EF_ARM_EABIMASK 0xff000000U
    """
    const uint32_t GNU_PROPERTY_X86_ISA_1_NEEDED "FE_GNU_PROPERTY_X86_ISA_1_NEEDED"
    const uint32_t EF_ARM_EABIMASK "FE_EF_ARM_EABIMASK"
    const char *ELFMAG_C "FE_ELFMAG"        # e_ident[0:4]; Python sees _elf.ELFMAG (bytes)


# ------------------------------------------------------------------ the parser

cdef enum ErrCode:
    E_OK = 0
    E_MORE = 1        # buffer is a prefix of the file; more bytes are needed
    E_RANGE = 2       # a structure points outside the file
    E_FORMAT = 3      # malformed value
    E_LIMIT = 4       # a count or length beyond the configured limit


cdef struct Seg:
    uint32_t p_type
    uint32_t p_flags
    uint64_t p_offset
    uint64_t p_vaddr
    uint64_t p_filesz
    uint64_t p_memsz
    uint64_t p_align


cdef struct Ctx:
    const uint8_t *p
    uint64_t n          # bytes available in the buffer
    uint64_t fsize      # size of the whole file (>= n)
    bint is64
    bint le
    # error state
    int err
    const char *msg
    uint64_t err_off
    uint64_t need       # with E_MORE: bytes needed from the file start
    # limits
    uint64_t max_symbols
    uint64_t max_strlen
    uint64_t max_strbytes   # all strings decoded from the file, together
    uint64_t strbytes
    # sparse mode (reader-owned): the buffer spans the whole file but only
    # these sorted, disjoint [start, end) pairs hold real bytes; _have refuses
    # the rest and records up to MAX_MISS missing ranges for ElfNeedMore
    const uint64_t *iv
    Py_ssize_t niv
    uint64_t miss[32]       # MAX_MISS (offset, size) pairs
    int nmiss
    uint64_t max_needed     # DT_NEEDED entries
    uint64_t max_versions   # version need/aux and definition entries


cdef class ElfFile:
    cdef readonly int elf_class
    cdef readonly bint little_endian
    cdef readonly int osabi
    cdef readonly int e_type
    cdef readonly int machine
    cdef readonly uint32_t flags
    cdef readonly object arch
    cdef readonly object arch_error
    cdef readonly object interpreter
    cdef readonly list needed
    cdef readonly object soname
    cdef readonly object rpath
    cdef readonly object runpath
    cdef readonly list imports
    cdef readonly list exports
    cdef readonly dict version_needs
    cdef readonly list version_defs
    cdef readonly object isa_needed
    cdef readonly object exec_stack
    cdef readonly list segments
    cdef readonly list dynamic
    cdef readonly bint relr         # a DT_RELR entry (packed relative relocations)
    cdef readonly uint64_t symbol_count
    cdef readonly uint64_t bytes_used
    cdef readonly uint64_t strbytes     # string bytes the result holds (repeats count)
