# Declarations for the ELF core (fastelf._elf).
#
# The core knows ELF and nothing else: no wheels, no policies.  It reads a
# read-only buffer (bytes, mmap, memoryview) in place and never copies it.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t


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
