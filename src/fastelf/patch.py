"""In-process ELF patching: SONAME, NEEDED, RPATH/RUNPATH.

``patch_elf(data, ...)`` is a pure function from the bytes of an ELF file to
the bytes of the patched file.  It never modifies its input (unless the caller
hands the input over with ``reuse_input=True``) and never runs an external tool.

How a patch is applied
----------------------
* Strings are never moved: symbols, version tables and dynamic entries refer
  to ``.dynstr`` by offset, so every old offset must keep reading the same
  string.  New strings go into bytes of ``.dynstr`` that no remaining
  reference covers (for instance the old RPATH being replaced), or reuse an
  identical live string.  The references are known exactly when the symbol
  count can be found (DT_HASH, DT_GNU_HASH or the SHT_DYNSYM header) and no
  unknown structure may point into ``.dynstr``; otherwise no byte of the old
  table is touched.
* When the new strings do not fit, a copy of ``.dynstr`` grown with the new
  strings is written at the end of the file (old offsets stay valid).  When
  the dynamic table has no spare DT_NULL slot for an added entry it is
  relocated in the same way.
* Relocated tables live in one added PT_LOAD segment at the end of the file,
  aligned for 4 KiB and 64 KiB pages (``p_offset == p_vaddr`` modulo the
  alignment) and placed above every existing segment.  Adding a program
  header needs a bigger table, so the program header table moves into the
  new segment too (``e_phoff`` and PT_PHDR follow it).  For executables the
  new segment keeps the first PT_LOAD's ``p_vaddr - p_offset`` so kernels
  older than 5.18, which compute AT_PHDR from the first PT_LOAD, still find
  the table.  A file already patched this way (its last PT_LOAD ends the
  file) has that segment extended instead of gaining another one.
* Section headers, when present, are updated for ``.dynstr`` and ``.dynamic``.
  ``vn_file`` in ``.gnu.version_r`` follows a renamed DT_NEEDED, and the base
  entry of ``.gnu.version_d`` follows a new DT_SONAME.
* The result is re-parsed with ``fastelf._elf.parse`` and checked against the
  request before it is returned.

How the work is staged
----------------------
Reading (``_Image``, ``_Plan``) and deciding (``_edit_entries``,
``_version_edits``, ``_Strings``, ``_relocation``) only read the input.  Their
outcome is an ``_Edits`` log: the output size and the writes to make, in order.
The output is then built once, either as ``bytes`` from the unchanged spans of
the input and the written pieces (peak memory: the input plus one output), or
in the caller's own ``bytearray`` (``reuse_input=True``: the input grown in
place).  Nothing is written before every check has passed.

Anything not understood raises ``ElfPatchError`` with the reason.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
    overload,
)

from ._elf import (  # the ELF numbers' one home is the core (_elf.pxd)
    DT_AUDIT,
    DT_AUXILIARY,
    DT_CONFIG,
    DT_DEPAUDIT,
    DT_FILTER,
    DT_FINI,
    DT_FINI_ARRAY,
    DT_GNU_HASH,
    DT_HASH,
    DT_INIT,
    DT_INIT_ARRAY,
    DT_JMPREL,
    DT_LOPROC,
    DT_NEEDED,
    DT_NULL,
    DT_NUM,
    DT_PLTGOT,
    DT_PREINIT_ARRAY,
    DT_REL,
    DT_RELA,
    DT_RELR,
    DT_RPATH,
    DT_RUNPATH,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    DT_SYMENT,
    DT_SYMTAB,
    DT_USED,
    DT_VERDEF,
    DT_VERDEFNUM,
    DT_VERNEED,
    DT_VERNEEDNUM,
    DT_VERSYM,
    EI_CLASS,
    EI_DATA,
    EI_NIDENT,
    EI_VERSION,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    EM_AARCH64,
    EM_MIPS,
    EM_PPC,
    EM_PPC64,
    EM_RISCV,
    EM_X86_64,
    ET_DYN,
    ET_EXEC,
    EV_CURRENT,
    PF_R,
    PF_W,
    PF_X,
    PN_XNUM,
    PT_DYNAMIC,
    PT_GNU_PROPERTY,
    PT_INTERP,
    PT_LOAD,
    PT_NOTE,
    PT_PHDR,
    SHF_ALLOC,
    SHT_DYNAMIC,
    SHT_DYNSYM,
    SHT_GNU_HASH,
    SHT_HASH,
    SHT_NOTE,
    SHT_PROGBITS,
    SHT_STRTAB,
    VER_FLG_BASE,
    ElfError,
    SHT_GNU_verdef,
    SHT_GNU_verneed,
    SHT_GNU_versym,
    parse,
)
from .elflayout import Shdr as Section
from .elflayout import layout
from .errors import ElfPatchError  # noqa: F401 (raised here; defined with the others)

__all__ = ["ElfPatchError", "patch_elf", "DEFAULT_PAGE_SIZE"]


# =============================================================================
# ELF constants: the numbers come from the core (imported above); what is
# named here is layout knowledge only this patcher needs.
# =============================================================================


# Hash table headers (the patcher counts symbols through them).
HASH_HEADER, HASH_NCHAIN_AT = 8, 4      # DT_HASH: nbucket, nchain (32-bit words)
GNU_HASH_HEADER = 16                    # DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift
GNU_HASH_WORD = 4                       # buckets and chain values are 32-bit
GNU_HASH_CHAIN_END = 1                  # low bit of a chain value: the last of its chain

# Field offsets inside records the patcher edits in place.
VN_FILE_AT = 4          # Elf_Verneed.vn_file
VD_HASH_AT = 8          # Elf_Verdef.vd_hash
VN_NEXT_FROM_END = 4    # vn_next / vd_next: the last 32-bit field of Elf_Verneed / Elf_Verdef


# Tags whose value is an offset into .dynstr.
_STRING_TAGS = frozenset({DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH,
                          DT_CONFIG, DT_DEPAUDIT, DT_AUDIT, DT_AUXILIARY, DT_USED, DT_FILTER})
# Tags known not to refer to .dynstr (gABI and GNU).  Any other tag makes the
# string-liveness analysis give up (old .dynstr bytes are then left alone).
_PLAIN_TAGS = frozenset(range(0, DT_NUM)) - _STRING_TAGS | frozenset({
    0x6FFFFDF5, 0x6FFFFDF6, 0x6FFFFDF7, 0x6FFFFDF8, 0x6FFFFDF9, 0x6FFFFDFA,   # DT_VALRNG
    0x6FFFFDFB, 0x6FFFFDFC, 0x6FFFFDFD, 0x6FFFFDFE, 0x6FFFFDFF,
    0x6FFFFEF5, 0x6FFFFEF6, 0x6FFFFEF7, 0x6FFFFEF8, 0x6FFFFEFD, 0x6FFFFEFE, 0x6FFFFEFF,  # ADDRRNG
    0x6FFFFFF0, 0x6FFFFFF9, 0x6FFFFFFA, 0x6FFFFFFB, 0x6FFFFFFC, 0x6FFFFFFD,   # versions, flags
    0x6FFFFFFE, 0x6FFFFFFF,
})
# Processor-specific tags known to hold plain values or addresses, per e_machine.
_MACHINE_TAGS = {
    EM_X86_64: frozenset({0x70000000, 0x70000001, 0x70000003}),       # PLT/PLTSZ/PLTENT
    EM_AARCH64: frozenset({0x70000001, 0x70000003, 0x70000005}),      # BTI/PAC/VARIANT_PCS
    EM_PPC64: frozenset({0x70000000, 0x70000001, 0x70000002, 0x70000003}),  # GLINK/OPD/OPDSZ/OPT
    EM_PPC: frozenset({0x70000000, 0x70000001}),                      # GOT/OPT
    EM_RISCV: frozenset({0x70000001}),                                # VARIANT_CC
}
# Sections that only the loader reaches, through a program header or a
# dynamic tag (the tag that holds their address): they may move when room is
# needed after the program headers.
_MOVABLE_TYPES = {
    SHT_HASH: DT_HASH, SHT_GNU_HASH: DT_GNU_HASH, SHT_DYNSYM: DT_SYMTAB,
    SHT_STRTAB: DT_STRTAB, SHT_GNU_versym: DT_VERSYM, SHT_GNU_verneed: DT_VERNEED,
    SHT_GNU_verdef: DT_VERDEF,
}
# Tags that hold an address the loader follows: none may point into a block that moves.
_ADDRESS_TAGS = frozenset({DT_PLTGOT, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_INIT, DT_FINI,
                           DT_REL, DT_JMPREL, DT_INIT_ARRAY, DT_FINI_ARRAY, DT_PREINIT_ARRAY,
                           DT_RELR, DT_GNU_HASH})
# Segments that may move with the block after the program header table.
_MOVABLE_SEGMENTS = (PT_INTERP, PT_NOTE, PT_GNU_PROPERTY)

DEFAULT_PAGE_SIZE = 0x10000   # valid for 4 KiB, 16 KiB and 64 KiB page kernels
_MIN_PAGE = 4096              # the smallest page size of any Linux target
_ALIGN = 16                   # alignment of the start of the added data in the file
_MAX_EXEC_PAD = 64 << 20      # padding an executable may gain to keep its first p_vaddr-p_offset

# ============================================================ end of constants

Buffer = Union[bytes, bytearray, memoryview]
_B = TypeVar("_B", bytes, memoryview)      # what _Image reads: strip.py's bytes, or a view


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _elf_hash(name: bytes) -> int:
    """The SysV ELF hash, which Elf_Verdef.vd_hash holds for its name."""
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _encode(value: object, what: str) -> bytes:
    """A name or path argument as the bytes stored in .dynstr (str as UTF-8)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return raw


# ------------------------------------------------------------------ records

class Segment(NamedTuple):
    """One program header (Elf_Phdr) by meaning; ``_Image.pack_seg`` orders it per class."""

    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class Dyn(NamedTuple):
    """A dynamic entry (Elf_Dyn)."""

    tag: int
    value: int


class NewDyn(NamedTuple):
    """A dynamic entry of the output while it is planned: a bytes ``value`` is a
    string still to be placed in .dynstr (``_resolve`` turns it into an offset)."""

    tag: int
    value: int | bytes


class Verneed(NamedTuple):
    """An Elf_Verneed entry: where it is, its file name and its auxiliary names."""

    offset: int
    vn_file: int
    aux_names: tuple[int, ...]


class Verdaux(NamedTuple):
    offset: int
    vda_name: int


class Verdef(NamedTuple):
    """An Elf_Verdef entry: where it is, its flags and its Elf_Verdaux entries."""

    offset: int
    flags: int
    auxs: tuple[Verdaux, ...]


class Write(NamedTuple):
    """Bytes to put at a file offset of the output."""

    offset: int
    data: bytes


class Expected(NamedTuple):
    """What the patched file must report, in the order ``_verify`` compares."""

    needed: list[str]
    soname: str | None
    rpath: str | None
    runpath: str | None


@dataclass(frozen=True)
class _Request:
    """The checked arguments of ``patch_elf``."""

    soname: bytes | None
    replace: dict[bytes, bytes]
    remove: frozenset[bytes]
    path_tag: int | None
    path_value: bytes | None
    remove_rpath: bool
    force_rpath: bool
    align: int

    @property
    def is_noop(self) -> bool:
        return not (self.soname is not None or self.replace or self.remove or self.path_tag
                    or self.remove_rpath or self.force_rpath)


# ---------------------------------------------------------------- the reader

class _Image(Generic[_B]):
    """The parts of an ELF file the patcher needs, every offset bounds-checked.

    ``data`` may be a memoryview of the caller's buffer: the image keeps no
    slice of it (a live slice would keep a ``bytearray`` from being resized)."""

    def __init__(self, data: _B):
        self.data: _B = data
        n = len(data)
        if n < EI_NIDENT or data[:len(ELFMAG)] != ELFMAG:
            raise ElfPatchError("not an ELF file")
        if (data[EI_CLASS] not in (ELFCLASS32, ELFCLASS64)
                or data[EI_DATA] not in (ELFDATA2LSB, ELFDATA2MSB)
                or data[EI_VERSION] != EV_CURRENT):
            raise ElfPatchError("bad ELF identification (class, data encoding or version)")
        self.is64 = data[EI_CLASS] == ELFCLASS64
        self.le = data[EI_DATA] == ELFDATA2LSB
        lay = self.layout = layout(self.is64, self.le)     # the structs: elflayout.py
        self.endian = "<" if self.le else ">"
        self.word = lay.word.size
        self.ehdr_st, self.phdr_st, self.shdr_st = lay.ehdr, lay.phdr, lay.shdr
        self.dyn_st, self.word_st, self.u16, self.u32 = lay.dyn, lay.word, lay.u16, lay.u32
        self.verneed_st, self.vernaux_st = lay.verneed, lay.vernaux
        self.verdef_st, self.verdaux_st = lay.verdef, lay.verdaux
        if n < self.ehdr_st.size:
            raise ElfPatchError("truncated ELF header")
        (_, self.e_type, self.machine, _, _, self.phoff, self.shoff, _, _,
         phentsize, self.phnum, shentsize, shnum, shstrndx) = self.ehdr_st.unpack_from(data, 0)
        self.segs = self._read_segments(phentsize)
        self.loads = [s for s in self.segs if s.type == PT_LOAD]
        if not self.loads:
            raise ElfPatchError("no PT_LOAD segment")
        self.shentsize = shentsize
        self.sections = self._read_sections(shnum, shentsize, shstrndx)

    # -- low level

    def _check(self, off: int, size: int, what: str) -> None:
        if off < 0 or size < 0 or off + size > len(self.data):
            raise ElfPatchError(f"{what} at {off:#x}+{size:#x} lies outside the file")

    def _read_segments(self, phentsize: int) -> list[Segment]:
        """The program headers, refused when the patcher could not rewrite them."""
        if self.e_type not in (ET_EXEC, ET_DYN):
            raise ElfPatchError(f"ELF type {self.e_type} is not an executable or shared object")
        if self.phnum == PN_XNUM:
            raise ElfPatchError("extended program header numbering (PN_XNUM) is not supported")
        if self.phnum == 0:
            raise ElfPatchError("no program headers")
        if phentsize != self.phdr_st.size:
            raise ElfPatchError(f"unexpected program header entry size {phentsize}")
        self._check(self.phoff, self.phnum * phentsize, "program header table")
        segs = [self._unpack_seg(self.phoff + i * phentsize) for i in range(self.phnum)]
        for s in segs:
            if s.type == PT_LOAD:
                self._check(s.offset, s.filesz, "PT_LOAD segment")
                if s.memsz < s.filesz:
                    raise ElfPatchError("PT_LOAD segment with p_memsz < p_filesz")
        return segs

    def _unpack_seg(self, off: int) -> Segment:
        v = self.phdr_st.unpack_from(self.data, off)
        if self.is64:
            t, fl, o, va, pa, fs, ms, al = v
        else:
            t, o, va, pa, fs, ms, fl, al = v
        return Segment(t, fl, o, va, pa, fs, ms, al)

    def pack_seg(self, s: Segment) -> bytes:
        if self.is64:
            return self.phdr_st.pack(s.type, s.flags, s.offset, s.vaddr, s.paddr,
                                     s.filesz, s.memsz, s.align)
        return self.phdr_st.pack(s.type, s.offset, s.vaddr, s.paddr, s.filesz,
                                 s.memsz, s.flags, s.align)

    def _read_sections(self, shnum: int, shentsize: int, shstrndx: int) -> list[Section]:
        if self.shoff == 0:
            return []
        if shentsize != self.shdr_st.size:
            raise ElfPatchError(f"unexpected section header entry size {shentsize}")
        self._check(self.shoff, shentsize, "section header table")
        if shnum == 0:            # extended numbering: the count is in section 0
            shnum = self._section(0).sh_size
        if shnum > len(self.data) // shentsize:
            raise ElfPatchError("section header count larger than the file")
        self._check(self.shoff, shnum * shentsize, "section header table")
        return [self._section(i) for i in range(shnum)]

    def _section(self, index: int) -> Section:
        return Section(*self.shdr_st.unpack_from(self.data, self.shoff + index * self.shentsize))

    def vaddr_to_off(self, addr: int, size: int, what: str) -> int:
        for s in self.loads:
            if s.vaddr <= addr and addr + size <= s.vaddr + s.filesz:
                return s.offset + (addr - s.vaddr)
        raise ElfPatchError(f"{what} at address {addr:#x} (+{size:#x}) is not inside a "
                            "loaded part of the file")


# ----------------------------------------------------------- the planning

class _Plan:
    """The dynamic facts of the input: its dynamic table, .dynstr and version tables."""

    def __init__(self, img: _Image[Any]):
        self.img = img
        self.dyn_index = _dynamic_segment(img)
        self.dynseg = img.segs[self.dyn_index]
        self.capacity = self.dynseg.filesz // img.dyn_st.size
        self.entries = _read_dynamic(img, self.dynseg, self.capacity)
        self.tags: dict[int, int] = {}
        for tag, val in self.entries:
            self.tags.setdefault(tag, val)
        if DT_STRTAB not in self.tags or DT_STRSZ not in self.tags:
            raise ElfPatchError("dynamic section lacks DT_STRTAB or DT_STRSZ")
        self.strtab_addr = self.tags[DT_STRTAB]
        self.strsz = self.tags[DT_STRSZ]
        self.stroff = img.vaddr_to_off(self.strtab_addr, self.strsz, ".dynstr")
        self.dynstr = bytes(img.data[self.stroff:self.stroff + self.strsz])
        self.sec_dynstr = _section_index(img, lambda sh: (
            sh.sh_type == SHT_STRTAB and bool(sh.sh_flags & SHF_ALLOC)
            and sh.sh_addr == self.strtab_addr and sh.sh_offset == self.stroff))
        self.sec_dynamic = _section_index(img, lambda sh: (
            sh.sh_type == SHT_DYNAMIC and sh.sh_offset == self.dynseg.offset))
        self.verneed = self._read_verneed()
        self.verdef = self._read_verdef()

    # -- strings

    def cstr_end(self, idx: int) -> int:
        """Index of the NUL that ends the string at ``idx`` in .dynstr."""
        if idx >= self.strsz:
            raise ElfPatchError(f"string offset {idx:#x} outside .dynstr (size {self.strsz:#x})")
        z = self.dynstr.find(b"\0", idx)
        if z < 0:
            raise ElfPatchError(f"unterminated string at offset {idx:#x} of .dynstr")
        return z

    def string(self, idx: int) -> bytes:
        return self.dynstr[idx:self.cstr_end(idx)]

    # -- version tables

    def _walk(self, tag_addr: int, tag_num: int, entsize: int, what: str) -> list[int]:
        """File offsets of the entries of a version table, following vn_next/vd_next."""
        if tag_addr not in self.tags:
            return []
        num = self.tags.get(tag_num, 0)
        if num > len(self.img.data) // entsize:
            raise ElfPatchError(f"{what}: entry count {num} larger than the file")
        off = self.img.vaddr_to_off(self.tags[tag_addr], entsize, what)
        out = []
        for _ in range(num):
            self.img._check(off, entsize, what)
            out.append(off)
            nxt = self.img.u32.unpack_from(self.img.data, off + entsize - VN_NEXT_FROM_END)[0]
            if nxt == 0:
                break
            off += nxt
        return out

    def _read_verneed(self) -> list[Verneed]:
        img = self.img
        out = []
        for off in self._walk(DT_VERNEED, DT_VERNEEDNUM, img.verneed_st.size, ".gnu.version_r"):
            _, cnt, vn_file, vn_aux, _ = img.verneed_st.unpack_from(img.data, off)
            names, aux = [], off + vn_aux
            for _ in range(cnt):
                img._check(aux, img.vernaux_st.size, ".gnu.version_r auxiliary entry")
                _, _, _, vna_name, vna_next = img.vernaux_st.unpack_from(img.data, aux)
                names.append(vna_name)
                if vna_next == 0:
                    break
                aux += vna_next
            out.append(Verneed(off, vn_file, tuple(names)))
        return out

    def _read_verdef(self) -> list[Verdef]:
        img = self.img
        out = []
        for off in self._walk(DT_VERDEF, DT_VERDEFNUM, img.verdef_st.size, ".gnu.version_d"):
            _, flags, _, cnt, _, vd_aux, _ = img.verdef_st.unpack_from(img.data, off)
            auxs, aux = [], off + vd_aux
            for _ in range(cnt):
                img._check(aux, img.verdaux_st.size, ".gnu.version_d auxiliary entry")
                vda_name, vda_next = img.verdaux_st.unpack_from(img.data, aux)
                auxs.append(Verdaux(aux, vda_name))
                if vda_next == 0:
                    break
                aux += vda_next
            out.append(Verdef(off, flags, tuple(auxs)))
        return out

    # -- symbols

    def symbol_count(self) -> int | None:
        """The number of .dynsym entries, or None when it cannot be known."""
        img, data = self.img, self.img.data
        if DT_SYMTAB not in self.tags:
            return 0
        for sh in img.sections:
            if sh.sh_type == SHT_DYNSYM and sh.sh_addr == self.tags[DT_SYMTAB]:
                ent = sh.sh_entsize or self.tags.get(DT_SYMENT, img.layout.sym.size)
                return sh.sh_size // ent if ent else None
        if DT_HASH in self.tags:
            off = img.vaddr_to_off(self.tags[DT_HASH], HASH_HEADER, "DT_HASH")
            return int(img.u32.unpack_from(data, off + HASH_NCHAIN_AT)[0])
        if DT_GNU_HASH in self.tags:
            return self._gnu_hash_count()
        return None

    def _gnu_hash_count(self) -> int | None:
        """Symbols counted through DT_GNU_HASH: one past the end of the last
        chain.  With every bucket empty the table does not tell the count (the
        unhashed symbols below symoffset need not number symoffset): None."""
        img, data = self.img, self.img.data
        w = GNU_HASH_WORD
        off = img.vaddr_to_off(self.tags[DT_GNU_HASH], GNU_HASH_HEADER, "DT_GNU_HASH")
        nbuckets, symoffset, bloom, _ = struct.unpack_from(img.endian + "4I", data, off)
        buckets = off + GNU_HASH_HEADER + bloom * img.word
        img._check(buckets, nbuckets * w, "DT_GNU_HASH buckets")
        top = max(struct.unpack_from(f"{img.endian}{nbuckets}I", data, buckets), default=0)
        if top < symoffset or top == 0:
            return None
        chains = buckets + nbuckets * w
        idx = top
        while True:
            img._check(chains + (idx - symoffset) * w, w, "DT_GNU_HASH chain")
            if img.u32.unpack_from(data, chains + (idx - symoffset) * w)[0] & GNU_HASH_CHAIN_END:
                return int(idx + 1)
            idx += 1


def _dynamic_segment(img: _Image) -> int:
    """Index of the one PT_DYNAMIC, refused unless it is where the loaders read it."""
    dyns = [i for i, s in enumerate(img.segs) if s.type == PT_DYNAMIC]
    if not dyns:
        raise ElfPatchError("no PT_DYNAMIC segment: the file is not dynamically linked")
    # The loaders use the last PT_DYNAMIC, read at its p_vaddr (see the core's
    # docstring); a patch must edit the table they read, so anything else is refused.
    if len(dyns) > 1:
        raise ElfPatchError(f"inconsistent ELF: {len(dyns)} PT_DYNAMIC segments "
                            "(the loaders use the last one); refusing to patch")
    seg = img.segs[dyns[0]]
    img._check(seg.offset, seg.filesz, "PT_DYNAMIC segment")
    if img.vaddr_to_off(seg.vaddr, seg.filesz, "PT_DYNAMIC") != seg.offset:
        raise ElfPatchError("inconsistent ELF: PT_DYNAMIC's p_offset is not where its "
                            "p_vaddr is loaded from; refusing to patch")
    return dyns[0]


def _read_dynamic(img: _Image, seg: Segment, capacity: int) -> list[Dyn]:
    """The entries before DT_NULL (which must come within the segment)."""
    esz = img.dyn_st.size
    entries: list[Dyn] = []
    for i in range(capacity):
        tag, val = img.dyn_st.unpack_from(img.data, seg.offset + i * esz)
        if tag == DT_NULL:
            return entries
        entries.append(Dyn(tag, val))
    raise ElfPatchError("dynamic section is not terminated by DT_NULL")


def _section_index(img: _Image, match: Callable[[Section], bool]) -> int | None:
    """Index of the first section header that ``match`` accepts."""
    return next((i for i, sh in enumerate(img.sections) if match(sh)), None)


# -------------------------------------------------------------- allocation

class _Span(NamedTuple):
    """A range of offsets; for a live string, ``end`` is the index of its NUL."""

    start: int
    end: int


@dataclass
class _Run:
    """Free bytes of .dynstr, consumed from the front as strings are placed."""

    start: int
    length: int


def _live_spans(plan: _Plan, refs: set[int]) -> list[_Span]:
    """The strings that stay referenced (and the empty string at 0), merged
    where they touch or overlap (a suffix shared by two references).

    A library names thousands of symbols, so the NUL ending a string is looked
    up only for a reference past the span being built (one inside it ends at a
    NUL the span already covers)."""
    every = refs | {0}
    _check_string_refs(plan, every)
    table = plan.dynstr
    live: list[_Span] = []
    start = end = -2
    for a in sorted(every):
        if a <= end:                   # inside the current span: ends inside it too
            continue
        b = table.find(b"\0", a)
        if a == end + 1:               # touches it: the span grows
            end = b
            continue
        if start >= 0:
            live.append(_Span(start, end))
        start, end = a, b
    live.append(_Span(start, end))
    return live


def _check_string_refs(plan: _Plan, refs: set[int]) -> None:
    """:meth:`_Plan.cstr_end`'s errors for the first bad reference, in the set's order."""
    last_nul = plan.dynstr.rfind(b"\0", 0, plan.strsz)
    if max(refs) <= last_nul:
        return
    for r in refs:
        plan.cstr_end(r)


def _free_runs(live: Sequence[_Span], size: int) -> list[_Run]:
    """The bytes of a table of ``size`` bytes that no live string covers."""
    free, pos = [], 0
    for a, b in live:
        if a > pos:
            free.append(_Run(pos, a - pos))
        pos = b + 1
    if pos < size:
        free.append(_Run(pos, size - pos))
    return free


class _Strings:
    """Places new strings into dead bytes of .dynstr, or past its end."""

    def __init__(self, plan: _Plan, fixed_refs: set[int] | None):
        self.plan = plan
        self.table = bytearray(plan.dynstr)
        self.extra = bytearray()          # appended after the old table
        self.placed: dict[bytes, int] = {}     # string -> its offset in the new table
        self.known = fixed_refs is not None
        self.live: list[_Span] = []
        self.free: list[_Run] = []
        if fixed_refs is None:            # not self.known
            return
        self.live = _live_spans(plan, fixed_refs)
        self.free = _free_runs(self.live, plan.strsz)
        for run in self.free:          # dead bytes are cleared
            self.table[run.start:run.start + run.length] = bytes(run.length)

    def _find_live(self, s: bytes) -> int | None:
        needle = s + b"\0"
        start = 0
        src = self.plan.dynstr
        while True:
            p = src.find(needle, start)
            if p < 0:
                return None
            if not self.known:
                return p
            end = p + len(s)
            for a, b in self.live:
                if a <= p and end <= b:
                    return p
            start = p + 1

    def place(self, strings: Iterable[bytes]) -> None:
        todo = []
        for s in sorted(set(strings), key=lambda x: (-len(x), x)):
            p = self._find_live(s)
            if p is not None:
                self.placed[s] = p
            else:
                todo.append(s)
        for s in todo:
            if s in self.placed:
                continue
            need = len(s) + 1
            for run in self.free:
                if run.length >= need:
                    p = run.start
                    self.table[p:p + len(s)] = s
                    self.table[p + len(s)] = 0
                    run.start += need
                    run.length -= need
                    self.placed[s] = p
                    break
            else:
                p = len(self.table) + len(self.extra)
                self.extra += s + b"\0"
                self.placed[s] = p

    @property
    def grows(self) -> bool:
        return bool(self.extra)

    def content(self) -> bytes:
        return bytes(self.table) + bytes(self.extra)


# ---------------------------------------------------------------- the output

class _Edits:
    """The output as the input plus ordered writes: a later write wins where
    two overlap, exactly as if they were made one by one on a copy.  Keeping
    the log instead of a working copy is what lets the output be built once."""

    def __init__(self, base: Buffer):
        self.base = base
        self.size = len(base)
        self.writes: list[Write] = []

    def grow(self, size: int) -> None:
        """Zero bytes are added up to ``size``."""
        self.size = max(self.size, size)

    def put(self, offset: int, data: bytes) -> None:
        self.writes.append(Write(offset, bytes(data)))
        self.size = max(self.size, offset + len(data))

    def read(self, offset: int, size: int) -> bytes:
        """The bytes at ``offset`` as the writes so far leave them."""
        end = offset + size
        buf = bytearray(size)
        known = max(0, min(end, len(self.base)) - offset)
        buf[:known] = self.base[offset:offset + known]
        for w in self.writes:
            lo, hi = max(w.offset, offset), min(w.offset + len(w.data), end)
            if lo < hi:
                buf[lo - offset:hi - offset] = w.data[lo - w.offset:hi - w.offset]
        return bytes(buf)

    def _spans(self) -> list[_Span]:
        """The written ranges, sorted, overlapping writes merged into one range."""
        spans: list[_Span] = []
        for a, b in sorted((w.offset, w.offset + len(w.data)) for w in self.writes if w.data):
            if spans and a < spans[-1].end:
                spans[-1] = _Span(spans[-1].start, max(b, spans[-1].end))
            else:
                spans.append(_Span(a, b))
        return spans

    def _kept(self, start: int, end: int) -> Iterator[Buffer]:
        """The input's bytes in [start, end), zeros past its end (no copy of the input)."""
        n = len(self.base)
        if start < min(end, n):
            yield self.base[start:min(end, n)]
        if end > max(start, n):
            yield bytes(end - max(start, n))

    def build(self) -> bytes:
        """The output as one new bytes object: the only full-size allocation."""
        pieces: list[Buffer] = []
        pos = 0
        for start, end in self._spans():
            pieces.extend(self._kept(pos, start))
            pieces.append(self.read(start, end - start))
            pos = end
        pieces.extend(self._kept(pos, self.size))
        return b"".join(pieces)

    def apply_to(self, buf: bytearray) -> None:
        """Make the writes in ``buf`` itself, the caller's input (``reuse_input``)."""
        if self.size > len(buf):
            buf += bytes(self.size - len(buf))
        for w in self.writes:
            buf[w.offset:w.offset + len(w.data)] = w.data


# ---------------------------------------------------------------- the API

@overload
def patch_elf(
    data: Buffer, *,
    set_soname: str | bytes | None = None,
    replace_needed: Mapping[str | bytes, str | bytes] | None = None,
    remove_needed: Iterable[str | bytes] | None = None,
    set_rpath: str | bytes | None = None,
    set_runpath: str | bytes | None = None,
    remove_rpath: bool = False,
    force_rpath: bool = False,
    page_size: int | None = None,
    reuse_input: Literal[False] = False,
) -> bytes: ...


@overload
def patch_elf(
    data: bytearray, *,
    set_soname: str | bytes | None = None,
    replace_needed: Mapping[str | bytes, str | bytes] | None = None,
    remove_needed: Iterable[str | bytes] | None = None,
    set_rpath: str | bytes | None = None,
    set_runpath: str | bytes | None = None,
    remove_rpath: bool = False,
    force_rpath: bool = False,
    page_size: int | None = None,
    reuse_input: Literal[True],
) -> bytearray: ...


def patch_elf(
    data: Buffer,
    *,
    set_soname: str | bytes | None = None,
    replace_needed: Mapping[str | bytes, str | bytes] | None = None,
    remove_needed: Iterable[str | bytes] | None = None,
    set_rpath: str | bytes | None = None,
    set_runpath: str | bytes | None = None,
    remove_rpath: bool = False,
    force_rpath: bool = False,
    page_size: int | None = None,
    reuse_input: bool = False,
) -> bytes | bytearray:
    """Return a patched copy of the ELF image ``data``.

    set_soname      DT_SONAME value; the entry is added when missing.
    replace_needed  {old: new} renames of DT_NEEDED entries (each old name must be
                    present); the matching ``vn_file`` entries of .gnu.version_r follow.
    remove_needed   DT_NEEDED names to drop (each must be present, and no symbol
                    version may be required from it).
    set_rpath       search path stored as DT_RPATH; any DT_RUNPATH is dropped, since
                    the loader ignores DT_RPATH when DT_RUNPATH exists (this is
                    ``patchelf --force-rpath --set-rpath``).
    set_runpath     search path stored as DT_RUNPATH; any DT_RPATH is dropped.
    remove_rpath    drop DT_RPATH and DT_RUNPATH.
    force_rpath     without a new path: turn an existing DT_RUNPATH into DT_RPATH
                    (keeping its value; a DT_RPATH beside it is dropped).
    page_size       alignment of an added segment (default 64 KiB, valid for every
                    Linux page size).
    reuse_input     the caller gives ``data`` (a ``bytearray``) away: it is patched
                    in place, grown as needed, and returned, so the patch costs no
                    second copy of the file.  When an error is raised the buffer is
                    unchanged (every check runs before the first write).

    ``data`` is read in place (a ``bytearray`` or ``memoryview`` is not copied);
    the bytes result is built once, so the peak memory is the input plus the
    output.  Raises ``ElfPatchError`` for files it cannot patch safely,
    ``ValueError`` or ``TypeError`` for contradictory or malformed arguments.
    With nothing to do the input is returned unchanged (as bytes, or the same
    bytearray with ``reuse_input``).
    """
    req = _request(set_soname, replace_needed, remove_needed, set_rpath, set_runpath,
                   remove_rpath, force_rpath, page_size)
    if reuse_input and not isinstance(data, bytearray):
        raise TypeError(f"reuse_input needs a bytearray, not {type(data).__name__}")
    if req.is_noop:
        return data if isinstance(data, bytearray) and reuse_input else bytes(data)
    view = _byte_view(data)         # our own view: released below, never the caller's
    try:
        edits, expected = _plan_patch(view, req)
        if isinstance(data, bytearray) and reuse_input:
            edits.base = b""
            view.release()                 # a bytearray with a live view cannot grow
            edits.apply_to(data)
            result: bytes | bytearray = data
        else:
            result = edits.build()
        del edits
        _verify(result, expected)
        return result
    except (struct.error, IndexError, KeyError, OverflowError) as exc:
        # every offset is checked first; this is a last line of defence
        raise ElfPatchError(f"malformed ELF file ({type(exc).__name__}: {exc})") from None
    finally:
        # after an error the caller's bytearray must stay resizable, although the
        # traceback's frames still refer to the view
        with contextlib.suppress(BufferError):
            view.release()


def _byte_view(data: Buffer) -> memoryview:
    """A new flat view of ``data`` as unsigned bytes, without a copy when it is one
    already (a new view object even for a memoryview, so releasing it is ours to do)."""
    view = memoryview(data)
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    if view.c_contiguous:
        return view.cast("B")
    return memoryview(view.tobytes())


def _request(set_soname: str | bytes | None,
             replace_needed: Mapping[str | bytes, str | bytes] | None,
             remove_needed: Iterable[str | bytes] | None,
             set_rpath: str | bytes | None, set_runpath: str | bytes | None,
             remove_rpath: bool, force_rpath: bool, page_size: int | None) -> _Request:
    """The arguments checked and encoded, refused when they contradict each other."""
    soname = None if set_soname is None else _encode(set_soname, "set_soname")
    repl = {}
    for old, new in (replace_needed or {}).items():
        repl[_encode(old, "replace_needed key")] = _encode(new, "replace_needed value")
    remove = frozenset(_encode(x, "remove_needed entry") for x in (remove_needed or ()))
    for name in list(repl.values()) + ([soname] if soname is not None else []):
        if not name:
            raise ValueError("library names must not be empty")
    if set(repl) & remove:
        raise ValueError(f"libraries both replaced and removed: {sorted(set(repl) & remove)}")
    if set_rpath is not None and set_runpath is not None:
        raise ValueError("set_rpath and set_runpath are exclusive (the loader ignores "
                         "DT_RPATH when DT_RUNPATH is present)")
    if remove_rpath and (set_rpath is not None or set_runpath is not None or force_rpath):
        raise ValueError("remove_rpath cannot be combined with set_rpath, set_runpath "
                         "or force_rpath")
    if force_rpath and set_runpath is not None:
        raise ValueError("force_rpath contradicts set_runpath")
    path = _search_path(set_rpath, set_runpath)
    align = DEFAULT_PAGE_SIZE if page_size is None else int(page_size)
    if align < _MIN_PAGE or align & (align - 1):
        raise ValueError(f"page_size must be a power of two >= 4096, not {page_size}")
    return _Request(soname, repl, remove, path.tag, path.value, remove_rpath, force_rpath, align)


class _SearchPath(NamedTuple):
    tag: int | None             # DT_RPATH, DT_RUNPATH, or None: no path is set
    value: bytes | None


def _search_path(set_rpath: str | bytes | None, set_runpath: str | bytes | None
                 ) -> _SearchPath:
    """The requested search path and its tag."""
    if set_rpath is not None:
        path = _SearchPath(DT_RPATH, _encode(set_rpath, "set_rpath"))
    elif set_runpath is not None:
        path = _SearchPath(DT_RUNPATH, _encode(set_runpath, "set_runpath"))
    else:
        return _SearchPath(None, None)
    if not path.value:
        raise ValueError("an empty search path means the current directory to the loader; "
                         "use remove_rpath=True to remove the path")
    return path


class _Patch(NamedTuple):
    edits: _Edits
    expected: Expected


def _plan_patch(view: memoryview, req: _Request) -> _Patch:
    """Every decision of the patch, as the writes to make and what the result must
    read; only the input is read, so a refusal leaves every buffer as it was."""
    try:
        parse(view)
    except ElfError as exc:
        raise ElfPatchError(f"malformed ELF file: {exc}") from None
    img = _Image(view)
    plan = _Plan(img)
    edited, old_soname = _edit_entries(plan, req)
    versions = _version_edits(plan, req, old_soname)
    strings = _Strings(plan, _fixed_refs(plan, edited, versions.fixed))
    strings.place([v for _, v in edited if isinstance(v, bytes)]
                  + [u.name for u in versions.needs] + [u.name for u in versions.defs])
    entries = _resolve(edited, strings.placed)
    new_dynstr = strings.content()
    move_dynstr = strings.grows
    move_dynamic = len(entries) + 1 > plan.capacity
    if move_dynamic:
        _check_dynamic_movable(img, entries)

    edits = _Edits(img.data)
    _write_versions(img, edits, versions, strings.placed)
    if not move_dynstr:
        edits.put(plan.stroff, new_dynstr)
    if move_dynstr or move_dynamic:
        _relocate(img, plan, edits, entries, new_dynstr, move_dynamic,
                  _relocation(img, plan, len(entries), new_dynstr, move_dynstr, move_dynamic,
                              req.align))
    else:
        edits.put(plan.dynseg.offset, _dynamic_table(img, entries, plan.capacity))
    return _Patch(edits, _expectation(entries, new_dynstr))


# ------------------------------------------------------- the dynamic entries

class _EntryEdit(NamedTuple):
    """The output's dynamic entries, and the input's DT_SONAME (the last one)."""

    entries: list[NewDyn]
    old_soname: bytes | None


def _edit_entries(plan: _Plan, req: _Request) -> _EntryEdit:
    """The dynamic entries of the output, in the input's order, new ones last."""
    entries: list[NewDyn] = []
    found: set[bytes] = set()
    old_soname = None
    for tag, val in plan.entries:
        kept: NewDyn | None = NewDyn(tag, val)
        if tag == DT_NEEDED:
            name = plan.string(val)
            if name in req.remove or name in req.replace:
                found.add(name)
            kept = None if name in req.remove else NewDyn(tag, req.replace.get(name, val))
        elif tag == DT_SONAME:
            old_soname = plan.string(val)
            kept = _soname_entry(val, old_soname, req, entries)
        elif tag in (DT_RPATH, DT_RUNPATH):
            kept = _path_entry(tag, val, req, plan.tags, entries)
        if kept is not None:
            entries.append(kept)
    missing = (set(req.replace) | req.remove) - found
    if missing:
        raise ElfPatchError("not in DT_NEEDED: " + ", ".join(
            sorted(m.decode("utf-8", "surrogateescape") for m in missing)))
    if req.soname is not None and not _has(entries, DT_SONAME):
        entries.append(NewDyn(DT_SONAME, req.soname))
    if req.path_tag is not None and not _has(entries, req.path_tag):
        entries.append(NewDyn(req.path_tag, req.path_value or b""))
    return _EntryEdit(entries, old_soname)


def _has(entries: Sequence[NewDyn], tag: int) -> bool:
    return any(e.tag == tag for e in entries)


def _soname_entry(val: int, old: bytes, req: _Request, so_far: Sequence[NewDyn]
                  ) -> NewDyn | None:
    """What a DT_SONAME becomes: kept, renamed, or dropped (a duplicate: one is kept)."""
    if req.soname is None or req.soname == old:
        return NewDyn(DT_SONAME, val)
    if _has(so_far, DT_SONAME):
        return None
    return NewDyn(DT_SONAME, req.soname)


def _path_entry(tag: int, val: int, req: _Request, tags: Mapping[int, int],
                so_far: Sequence[NewDyn]) -> NewDyn | None:
    """What a DT_RPATH or DT_RUNPATH becomes (at most one search path entry is written
    where the first one was)."""
    if req.remove_rpath:
        return None
    if req.path_tag is not None:
        if _has(so_far, req.path_tag):
            return None
        return NewDyn(req.path_tag, req.path_value or b"")
    if req.force_rpath:
        if tag == DT_RPATH and DT_RUNPATH in tags:
            return None            # the RUNPATH is the path in force; it becomes RPATH
        return NewDyn(DT_RPATH, val)
    return NewDyn(tag, val)


def _resolve(entries: Sequence[NewDyn], placed: Mapping[bytes, int]) -> list[Dyn]:
    """The entries with every new string replaced by its offset in the new .dynstr."""
    return [Dyn(tag, placed[val] if isinstance(val, bytes) else val) for tag, val in entries]


def _check_dynamic_movable(img: _Image, entries: Sequence[Dyn]) -> None:
    """Refuse to move a dynamic table whose address the code may depend on."""
    if img.machine == EM_MIPS:
        raise ElfPatchError("the dynamic section has no spare slot and MIPS dynamic "
                            "sections cannot be relocated")
    for tag, _ in entries:
        if DT_LOPROC <= tag < DT_AUXILIARY and tag not in _MACHINE_TAGS.get(img.machine, ()):
            raise ElfPatchError(
                f"the dynamic section has no spare slot and holds processor-specific tag "
                f"{tag:#x}, which may depend on its address: cannot relocate it")


def _dynamic_table(img: _Image, entries: Sequence[Dyn], slots: int) -> bytes:
    """``slots`` Elf_Dyn entries: ``entries`` then DT_NULL."""
    pad = [Dyn(DT_NULL, 0)] * max(0, slots - len(entries))
    return b"".join(img.dyn_st.pack(tag, val) for tag, val in (list(entries[:slots]) + pad))


# ------------------------------------------------------------ version tables

class _NeedRename(NamedTuple):
    """A vn_file to point at the new name of its DT_NEEDED."""

    vn_file_at: int
    name: bytes


class _DefRename(NamedTuple):
    """The base version definition to rename after a new DT_SONAME."""

    verdef_at: int
    verdaux_at: int
    name: bytes


class _VersionEdits(NamedTuple):
    needs: list[_NeedRename]
    defs: list[_DefRename]
    fixed: set[int]          # .dynstr offsets the version tables keep referring to


def _version_edits(plan: _Plan, req: _Request, old_soname: bytes | None) -> _VersionEdits:
    """The version-table names that follow the renames; a removed library must not
    be one that symbol versions are required from."""
    needs, fixed = [], set()
    for off, vn_file, vna_names in plan.verneed:
        name = plan.string(vn_file)
        if name in req.remove:
            raise ElfPatchError(
                f"cannot remove DT_NEEDED {name.decode('utf-8', 'surrogateescape')}: symbol "
                "versions are required from it (.gnu.version_r)")
        if name in req.replace:
            needs.append(_NeedRename(off + VN_FILE_AT, req.replace[name]))
        else:
            fixed.add(vn_file)
        fixed.update(vna_names)
    defs = []
    for off, flags, auxs in plan.verdef:
        for k, (aux_off, name_off) in enumerate(auxs):
            if (k == 0 and flags & VER_FLG_BASE and req.soname is not None
                    and old_soname is not None and req.soname != old_soname
                    and plan.string(name_off) == old_soname):
                defs.append(_DefRename(off, aux_off, req.soname))
            else:
                fixed.add(name_off)
    return _VersionEdits(needs, defs, fixed)


def _write_versions(img: _Image, edits: _Edits, versions: _VersionEdits,
                    placed: Mapping[bytes, int]) -> None:
    for at, name in versions.needs:
        edits.put(at, img.u32.pack(placed[name]))
    for vd_off, aux_off, name in versions.defs:
        edits.put(vd_off + VD_HASH_AT, img.u32.pack(_elf_hash(name)))
        edits.put(aux_off, img.u32.pack(placed[name]))


# ------------------------------------------------------------ string liveness

def _fixed_refs(plan: _Plan, entries: Sequence[NewDyn], version_refs: set[int]
                ) -> set[int] | None:
    """Offsets into .dynstr that stay referenced, or None if they cannot be known."""
    img = plan.img
    machine_tags = _MACHINE_TAGS.get(img.machine, frozenset())
    refs = set(version_refs)
    for tag, _ in plan.entries:
        if tag not in _STRING_TAGS and tag not in _PLAIN_TAGS and tag not in machine_tags:
            return None
    if img.machine == EM_MIPS:
        return None
    for tag, val in entries:
        if tag in _STRING_TAGS and not isinstance(val, bytes):
            refs.add(val)
    if not _dynstr_users_known(plan):
        return None
    nsyms = plan.symbol_count()
    if nsyms is None:
        return None
    if nsyms:
        refs.update(_symbol_names(plan, nsyms))
    return refs


def _dynstr_users_known(plan: _Plan) -> bool:
    """Whether every section that links to .dynstr is one whose references are read
    (with sections present, .dynstr itself must be among them)."""
    img = plan.img
    if plan.sec_dynstr is None:
        return not img.sections
    users = {SHT_DYNSYM, SHT_DYNAMIC, SHT_GNU_verneed, SHT_GNU_verdef}
    return all(sh.sh_link != plan.sec_dynstr or sh.sh_type in users for sh in img.sections)


def _symbol_names(plan: _Plan, nsyms: int) -> Iterator[int]:
    """st_name of every dynamic symbol."""
    img = plan.img
    syment = plan.tags.get(DT_SYMENT, img.layout.sym.size)
    if syment < img.layout.sym.size or nsyms > len(img.data) // syment:
        raise ElfPatchError("implausible dynamic symbol table size")
    off = img.vaddr_to_off(plan.tags[DT_SYMTAB], nsyms * syment, ".dynsym")
    # st_name is each entry's first word (Elf32_Sym and Elf64_Sym alike)
    entry = struct.Struct(f"{img.u32.format[0]}I{syment - 4}x")
    return (t[0] for t in entry.iter_unpack(img.data[off:off + nsyms * syment]))


# --------------------------------------------------------------- relocation

class _Block(NamedTuple):
    """Bytes after the program header table that move so it can grow in place."""

    start: int
    end: int
    holder: int                    # index in img.segs of the PT_LOAD that holds them
    sections: tuple[int, ...]      # indexes of the sections inside
    segments: tuple[int, ...]      # indexes of the (non-LOAD) segments inside
    align: int                     # the largest alignment among them


class _Relocation(NamedTuple):
    """Where the added segment goes and what it holds: [phdrs | block][dynamic][dynstr].

    mode is one of
    extend  the last PT_LOAD already ends the file (a previous patch): grow it;
    grow    vacate the bytes after the program header table by moving the
            sections there (.interp, notes, .dynsym, ...) into the new segment,
            and add the PT_LOAD entry in place: the table stays at the front,
            where binutils and every kernel expect it;
    move    otherwise the program header table itself goes to the new segment."""

    mode: str
    block: _Block | None
    last: int                      # index of the last PT_LOAD (extended in mode "extend")
    base: int                      # file offset of the added bytes
    vbase: int                     # and their address
    seg_align: int
    phnum: int
    ph_off: int | None          # the moved program header table (mode "move")
    block_off: int | None       # the moved block (mode "grow")
    dyn_off: int
    dyn_size: int                  # 0 when the dynamic table stays
    str_off: int
    end: int                       # end of the output
    move_dynstr: bool
    need_w: bool                   # the added segment must be writable (it holds .dynamic)

    def vaddr_of(self, off: int) -> int:
        return self.vbase + (off - self.base)


class _Origin(NamedTuple):
    base: int
    vbase: int
    seg_align: int


def _relocation(img: _Image, plan: _Plan, nentries: int, new_dynstr: bytes, move_dynstr: bool,
                move_dynamic: bool, align: int) -> _Relocation:
    """Choose the layout of the added bytes; refuse files with no room for it."""
    mode, block, last = _choose_mode(img, plan, need_w=move_dynamic)
    origin = _origin(img, mode, last, align)
    entsz = img.phdr_st.size
    phnum = img.phnum if mode == "extend" else img.phnum + 1
    dyn_size = (nentries + 1) * img.dyn_st.size if move_dynamic else 0
    pos = origin.base
    ph_off = block_off = None
    if mode == "move":
        ph_off = pos
        pos += phnum * entsz
    elif block is not None:                     # mode == "grow"
        pos += (block.start - pos) % block.align    # same residue: alignments survive
        block_off = pos
        pos += block.end - block.start
    dyn_off = _align(pos, img.word)
    str_off = dyn_off + dyn_size
    end = str_off + (len(new_dynstr) if move_dynstr else 0)
    reloc = _Relocation(mode, block, last, origin.base, origin.vbase, origin.seg_align, phnum,
                        ph_off, block_off, dyn_off, dyn_size, str_off, end, move_dynstr,
                        move_dynamic)
    limit = 1 << (64 if img.is64 else 32)
    if reloc.vaddr_of(end) >= limit or end >= limit:
        raise ElfPatchError("no room for a new segment in the address space of this ELF32 file")
    return reloc


class _Mode(NamedTuple):
    name: str                      # "extend", "grow" or "move": see ``_Relocation``
    block: _Block | None        # the block that moves, in mode "grow"
    last: int                      # index of the last PT_LOAD


def _choose_mode(img: _Image, plan: _Plan, need_w: bool) -> _Mode:
    """How the added bytes are made loadable; see ``_Relocation``."""
    loads = [i for i, s in enumerate(img.segs) if s.type == PT_LOAD]
    max_end = max(img.segs[i].vaddr + img.segs[i].memsz for i in loads)
    last_i = max(loads, key=lambda i: img.segs[i].vaddr)
    last = img.segs[last_i]
    if (last_i == loads[-1] and last.offset + last.filesz == len(img.data)
            and last.memsz == last.filesz and not last.flags & PF_X
            and (last.flags & PF_W or not need_w) and last.vaddr + last.memsz == max_end):
        return _Mode("extend", None, last_i)
    if img.phnum + 1 >= PN_XNUM:
        raise ElfPatchError("too many program headers")
    block = _room_after_phdrs(img, plan)
    return _Mode("grow" if block is not None else "move", block, last_i)


def _origin(img: _Image, mode: str, last: int, align: int) -> _Origin:
    """File offset and address of the added bytes, and the new segment's alignment."""
    n = len(img.data)
    max_end = max(s.vaddr + s.memsz for s in img.loads)
    is_exec = img.e_type == ET_EXEC or any(s.type == PT_INTERP for s in img.segs)
    if mode == "extend":
        seg = img.segs[last]
        base = _align(n, _ALIGN)
        return _Origin(base, seg.vaddr + (base - seg.offset), align)
    if mode == "move" and is_exec:
        return _exec_origin(img, max_end, align)
    base = _align(n, _ALIGN)
    return _Origin(base, _align(max_end, align) + base % align, align)


def _exec_origin(img: _Image, max_end: int, align: int) -> _Origin:
    """Keep the first PT_LOAD's p_vaddr - p_offset: pre-5.18 kernels derive AT_PHDR
    from it, so the moved program header table must be found through it."""
    first = img.loads[0]
    delta = first.vaddr - first.offset
    seg_align = align
    while seg_align > _MIN_PAGE and delta % seg_align:
        seg_align //= 2
    if delta % seg_align:
        raise ElfPatchError("the first PT_LOAD is not page-aligned "
                            "(p_vaddr - p_offset is not a multiple of 4096)")
    n = len(img.data)
    base = max(_align(n, _ALIGN), _align(max_end, seg_align) - delta)
    if base - n > _MAX_EXEC_PAD:
        raise ElfPatchError("adding a segment to this executable needs more than "
                            f"{_MAX_EXEC_PAD >> 20} MiB of padding (large .bss)")
    return _Origin(base, base + delta, seg_align)


# ------------------------------------------- room after the program headers

def _room_after_phdrs(img: _Image, plan: _Plan) -> _Block | None:
    """Find the bytes to vacate so the program header table can grow by one entry
    in place, or None.

    Only sections reached solely through program headers or dynamic tags
    qualify (.interp, notes, hash tables, .dynsym, .dynstr, version tables);
    anything else, or a file without section headers, gives None."""
    if not img.sections:
        return None
    start = img.phoff + img.phnum * img.phdr_st.size
    holder = _phdr_holder(img, start + img.phdr_st.size)
    if holder is None:
        return None
    end = _block_end(img, start, start + img.phdr_st.size)
    if end is None or not _block_fits(img, holder, start, end):
        return None
    sections = _block_sections(img, plan, holder, start, end)
    if sections is None:
        return None
    seg = img.segs[holder]
    vstart = seg.vaddr + (start - seg.offset)
    if not _block_addresses_ok(img, plan, sections, vstart, vstart + (end - start)):
        return None
    segments = tuple(k for k, sg in enumerate(img.segs)
                     if sg.type not in (PT_LOAD, PT_PHDR) and sg.filesz
                     and start <= sg.offset and sg.offset + sg.filesz <= end)
    balign = max([1] + [img.sections[i].sh_addralign or 1 for i in sections]
                 + [img.segs[k].align or 1 for k in segments])
    if balign & (balign - 1) or balign > _MIN_PAGE:
        return None
    return _Block(start, end, holder, sections, segments, balign)


def _phdr_holder(img: _Image, need_end: int) -> int | None:
    """Index of the first PT_LOAD holding the program header table and one more entry."""
    return next((i for i, s in enumerate(img.segs) if s.type == PT_LOAD
                 and s.offset <= img.phoff and need_end <= s.offset + s.filesz), None)


def _block_end(img: _Image, start: int, need_end: int) -> int | None:
    """The end of the block from ``start`` grown to whole sections and segments,
    or None when something overlaps the program header table or cannot move."""
    end = need_end
    while True:
        grown = end
        for sh in img.sections:
            if sh.in_file(start, grown):
                if sh.sh_offset < start:
                    return None          # a section overlaps the program headers
                grown = max(grown, sh.sh_offset + sh.sh_size)
        for sg in img.segs:
            if sg.type in (PT_LOAD, PT_PHDR) or not sg.filesz:
                continue
            if sg.offset < grown and sg.offset + sg.filesz > start:
                if sg.offset < start or sg.type not in _MOVABLE_SEGMENTS:
                    return None
                grown = max(grown, sg.offset + sg.filesz)
        if grown == end:
            return end
        end = grown


def _block_fits(img: _Image, holder: int, start: int, end: int) -> bool:
    """The block lies in its PT_LOAD, in no other, and not over the section headers."""
    seg = img.segs[holder]
    shend = img.shoff + len(img.sections) * img.shentsize
    if end > seg.offset + seg.filesz or (img.shoff < end and shend > start):
        return False
    return not any(i != holder and sg.type == PT_LOAD and sg.offset < end
                   and sg.offset + sg.filesz > start for i, sg in enumerate(img.segs))


def _block_sections(img: _Image, plan: _Plan, holder: int, start: int, end: int
                    ) -> tuple[int, ...] | None:
    """Indexes of the sections in the block, or None if one of them may not move."""
    seg = img.segs[holder]
    out = []
    for i, sh in enumerate(img.sections):
        if not sh.in_file(start, end):
            continue
        if not sh.sh_flags & SHF_ALLOC or sh.sh_addr != seg.vaddr + (sh.sh_offset - seg.offset):
            return None
        if not _section_movable(img, plan, i, sh):
            return None
        out.append(i)
    return tuple(out)


def _section_movable(img: _Image, plan: _Plan, index: int, sh: Section) -> bool:
    """A note, .interp, or a table the loader finds only through its dynamic tag."""
    if sh.sh_type == SHT_NOTE or (sh.sh_type == SHT_PROGBITS and any(
            sg.type == PT_INTERP and sg.offset == sh.sh_offset for sg in img.segs)):
        return True
    if sh.sh_type not in _MOVABLE_TYPES:
        return False
    if sh.sh_type == SHT_STRTAB and index != plan.sec_dynstr:
        return False
    return plan.tags.get(_MOVABLE_TYPES[sh.sh_type]) == sh.sh_addr


def _block_addresses_ok(img: _Image, plan: _Plan, sections: tuple[int, ...], vstart: int,
                        vend: int) -> bool:
    """No dynamic address points into the block except the tags of the moved tables."""
    moved_tags = set(_MOVABLE_TYPES.values())
    for tag, val in plan.entries:
        if (tag not in moved_tags and tag not in _STRING_TAGS and vstart <= val < vend
                and tag in _ADDRESS_TAGS):
            return False
    for tag, val in plan.entries:
        if tag in moved_tags and vstart <= val < vend and not any(
                img.sections[i].sh_addr == val
                and _MOVABLE_TYPES.get(img.sections[i].sh_type) == tag for i in sections):
            return False
    return True


# ------------------------------------------------------- writing the segment

class _SectionMove(NamedTuple):
    offset: int
    addr: int
    size: int


def _relocate(img: _Image, plan: _Plan, edits: _Edits, entries: list[Dyn], new_dynstr: bytes,
              move_dynamic: bool, reloc: _Relocation) -> None:
    """Log the writes of the added segment: moved block, tables, headers."""
    edits.grow(reloc.end)
    segs = list(img.segs)
    moves: dict[int, _SectionMove] = {}       # section index -> where it now is
    if reloc.block is not None and reloc.block_off is not None:
        entries = _move_block(img, plan, edits, entries, reloc, reloc.block, reloc.block_off,
                              segs, moves)
    if reloc.move_dynstr:
        entries = _retarget_dynstr(entries, reloc.vaddr_of(reloc.str_off), len(new_dynstr))
        edits.put(reloc.str_off, new_dynstr)
        if plan.sec_dynstr is not None:
            moves[plan.sec_dynstr] = _SectionMove(reloc.str_off, reloc.vaddr_of(reloc.str_off),
                                                  len(new_dynstr))
    if move_dynamic:
        dyn_off = reloc.dyn_off
        edits.put(dyn_off, _dynamic_table(img, entries, len(entries) + 1))
        segs[plan.dyn_index] = segs[plan.dyn_index]._replace(
            offset=dyn_off, vaddr=reloc.vaddr_of(dyn_off), paddr=reloc.vaddr_of(dyn_off),
            filesz=reloc.dyn_size, memsz=reloc.dyn_size)
        if plan.sec_dynamic is not None:
            moves[plan.sec_dynamic] = _SectionMove(dyn_off, reloc.vaddr_of(dyn_off),
                                                   reloc.dyn_size)
    else:
        edits.put(plan.dynseg.offset, _dynamic_table(img, entries, plan.capacity))
    _write_program_headers(img, edits, segs, reloc)
    for index, (off, addr, size) in moves.items():
        sh = img.sections[index]._replace(sh_addr=addr, sh_offset=off, sh_size=size)
        edits.put(img.shoff + index * img.shentsize, img.shdr_st.pack(*sh))


def _move_block(img: _Image, plan: _Plan, edits: _Edits, entries: list[Dyn],
                reloc: _Relocation, block: _Block, block_off: int, segs: list[Segment],
                moves: dict[int, _SectionMove]) -> list[Dyn]:
    """Copy the block (as patched so far) into the new segment and clear its old
    place; its sections, segments and the dynamic tags of its tables follow it.
    Returns the entries with those tags updated."""
    size = block.end - block.start
    holder = img.segs[block.holder]
    d_off = block_off - block.start
    d_addr = reloc.vaddr_of(block_off) - (holder.vaddr + block.start - holder.offset)
    edits.put(block_off, edits.read(block.start, size))
    edits.put(block.start, bytes(size))
    for i in block.sections:
        sh = img.sections[i]
        if i == plan.sec_dynstr and reloc.move_dynstr:
            continue                   # replaced by the grown copy
        moves[i] = _SectionMove(sh.sh_offset + d_off, sh.sh_addr + d_addr, sh.sh_size)
        tag = _MOVABLE_TYPES.get(sh.sh_type)
        if tag is not None:
            entries = [Dyn(t, v + d_addr) if t == tag and v == sh.sh_addr else Dyn(t, v)
                       for t, v in entries]
    for k in block.segments:
        sg = segs[k]
        segs[k] = sg._replace(offset=sg.offset + d_off, vaddr=sg.vaddr + d_addr,
                              paddr=sg.paddr + d_addr)
    return entries


def _retarget_dynstr(entries: Sequence[Dyn], addr: int, size: int) -> list[Dyn]:
    """DT_STRTAB and DT_STRSZ of the grown .dynstr copy."""
    out = []
    for tag, val in entries:
        if tag == DT_STRTAB:
            val = addr
        elif tag == DT_STRSZ:
            val = size
        out.append(Dyn(tag, val))
    return out


def _write_program_headers(img: _Image, edits: _Edits, segs: list[Segment],
                           reloc: _Relocation) -> None:
    """The program header table of the output: the extended last PT_LOAD, or the
    added PT_LOAD after the last one (and PT_PHDR, e_phoff, e_phnum to match)."""
    entsz = img.phdr_st.size
    if reloc.mode == "extend":
        s = segs[reloc.last]
        segs[reloc.last] = s._replace(filesz=reloc.end - s.offset, memsz=reloc.end - s.offset)
        ph_at = img.phoff
    else:
        size = reloc.end - reloc.base
        seg = Segment(PT_LOAD, PF_R | (PF_W if reloc.need_w else 0), reloc.base, reloc.vbase,
                      reloc.vbase, size, size, reloc.seg_align)
        ph_at = reloc.ph_off if reloc.ph_off is not None else img.phoff
        for k, s in enumerate(segs):
            if s.type == PT_PHDR:
                if reloc.ph_off is not None:
                    where = reloc.vaddr_of(reloc.ph_off)
                    s = s._replace(offset=reloc.ph_off, vaddr=where, paddr=where)
                segs[k] = s._replace(filesz=reloc.phnum * entsz, memsz=reloc.phnum * entsz)
        last_load = max(i for i, s in enumerate(img.segs) if s.type == PT_LOAD)
        segs.insert(last_load + 1, seg)
        edits.put(img.layout.phoff_at, img.word_st.pack(ph_at))
        edits.put(img.layout.phnum_at, img.u16.pack(reloc.phnum))
    edits.put(ph_at, b"".join(img.pack_seg(s) for s in segs))


# ------------------------------------------------------------- verification

def _expectation(entries: Sequence[Dyn], new_dynstr: bytes) -> Expected:
    """(needed, soname, rpath, runpath) as the patched file must report them
    (the last of duplicated entries wins, as in the loaders)."""
    def s(off: int) -> str:
        z = new_dynstr.find(b"\0", off)
        return new_dynstr[off:z].decode("utf-8", "surrogateescape")
    needed: list[str] = []
    soname = rpath = runpath = None
    for tag, val in entries:
        if tag == DT_NEEDED:
            needed.append(s(val))
        elif tag == DT_SONAME:
            soname = s(val)
        elif tag == DT_RPATH:
            rpath = s(val)
        elif tag == DT_RUNPATH:
            runpath = s(val)
    return Expected(needed, soname, rpath, runpath)


def _verify(result: Buffer, expected: Expected) -> None:
    """Re-parse the output in place (no copy) and compare it with the request."""
    try:
        elf = parse(result)
    except ElfError as exc:        # pragma: no cover - a bug in this module
        raise ElfPatchError(f"internal error: the patched file does not parse: {exc}") from None
    got = (elf.needed, elf.soname, elf.rpath, elf.runpath)
    if got != tuple(expected):  # pragma: no cover - a bug in this module
        raise ElfPatchError(f"internal error: patched file reads {got!r}, "
                            f"expected {tuple(expected)!r}")
