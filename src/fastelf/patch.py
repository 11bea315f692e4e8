"""In-process ELF patching: SONAME, NEEDED, RPATH/RUNPATH.

``patch_elf(data, ...)`` is a pure function from the bytes of an ELF file to
the bytes of the patched file.  It never modifies its input and never runs
an external tool.

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

Anything not understood raises ``ElfPatchError`` with the reason.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._elf import ElfError, parse
from .errors import ElfPatchError  # noqa: F401 (raised here; defined with the others)

__all__ = ["ElfPatchError", "patch_elf", "DEFAULT_PAGE_SIZE"]

DEFAULT_PAGE_SIZE = 0x10000   # valid for 4 KiB, 16 KiB and 64 KiB page kernels


# ------------------------------------------------------------------ constants

ET_EXEC, ET_DYN = 2, 3
PT_NULL, PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_PHDR = 0, 1, 2, 3, 6
PF_X, PF_W, PF_R = 1, 2, 4
SHT_NOBITS, SHT_DYNAMIC, SHT_DYNSYM, SHT_STRTAB = 8, 6, 11, 3
SHT_GNU_VERDEF, SHT_GNU_VERNEED, SHT_GNU_VERSYM = 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
SHT_HASH, SHT_GNU_HASH = 5, 0x6FFFFFF6
SHF_ALLOC = 2
SHN_XINDEX = 0xFFFF
PN_XNUM = 0xFFFF
EM_MIPS = 8

DT_NULL, DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 1, 4, 5, 6, 10, 11
DT_SONAME, DT_RPATH, DT_RUNPATH = 14, 15, 29
DT_GNU_HASH = 0x6FFFFEF5
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF

# Tags whose value is an offset into .dynstr.
_STRING_TAGS = frozenset({
    DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH,
    0x6FFFFEFA, 0x6FFFFEFB, 0x6FFFFEFC,          # DT_CONFIG, DT_DEPAUDIT, DT_AUDIT
    0x7FFFFFFD, 0x7FFFFFFE, 0x7FFFFFFF,          # DT_AUXILIARY, DT_USED, DT_FILTER
})
# Tags known not to refer to .dynstr (gABI and GNU).  Any other tag makes the
# string-liveness analysis give up (old .dynstr bytes are then left alone).
_PLAIN_TAGS = frozenset(range(0, 38)) - _STRING_TAGS | frozenset({
    0x6FFFFDF5, 0x6FFFFDF6, 0x6FFFFDF7, 0x6FFFFDF8, 0x6FFFFDF9, 0x6FFFFDFA,
    0x6FFFFDFB, 0x6FFFFDFC, 0x6FFFFDFD, 0x6FFFFDFE, 0x6FFFFDFF,
    0x6FFFFEF5, 0x6FFFFEF6, 0x6FFFFEF7, 0x6FFFFEF8, 0x6FFFFEFD, 0x6FFFFEFE, 0x6FFFFEFF,
    0x6FFFFFF0, 0x6FFFFFF9, 0x6FFFFFFA, 0x6FFFFFFB, 0x6FFFFFFC, 0x6FFFFFFD,
    0x6FFFFFFE, 0x6FFFFFFF,
})
# Processor-specific tags known to hold plain values or addresses, per e_machine.
_MACHINE_TAGS = {
    62: frozenset({0x70000000, 0x70000001, 0x70000003}),             # x86-64 PLT/PLTSZ/PLTENT
    183: frozenset({0x70000001, 0x70000003, 0x70000005}),            # AArch64 BTI/PAC/VARIANT_PCS
    21: frozenset({0x70000000, 0x70000001, 0x70000002, 0x70000003}),  # PPC64 GLINK/OPD/OPDSZ/OPT
    20: frozenset({0x70000000, 0x70000001}),                        # PPC GOT/OPT
    243: frozenset({0x70000001}),                                   # RISC-V VARIANT_CC
}

_ALIGN = 16           # alignment of the start of the added data in the file
_MAX_EXEC_PAD = 64 << 20


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _elf_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _encode(value, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return raw


# ---------------------------------------------------------------- the reader

class _Seg:
    __slots__ = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")

    def __init__(self, type, flags, offset, vaddr, paddr, filesz, memsz, align):
        self.type, self.flags, self.offset, self.vaddr = type, flags, offset, vaddr
        self.paddr, self.filesz, self.memsz, self.align = paddr, filesz, memsz, align


class _Image:
    """The parts of an ELF file the patcher needs, every offset bounds-checked."""

    def __init__(self, data: bytes):
        self.data = data
        n = len(data)
        if n < 16 or data[:4] != b"\x7fELF":
            raise ElfPatchError("not an ELF file")
        if data[4] not in (1, 2) or data[5] not in (1, 2) or data[6] != 1:
            raise ElfPatchError("bad ELF identification (class, data encoding or version)")
        self.is64 = data[4] == 2
        self.le = data[5] == 1
        e = "<" if self.le else ">"
        w = "Q" if self.is64 else "I"
        self.word = 8 if self.is64 else 4
        self.ehdr_st = struct.Struct(e + "16sHHI" + w * 3 + "IHHHHHH")
        self.phdr_st = struct.Struct(e + ("IIQQQQQQ" if self.is64 else "IIIIIIII"))
        self.shdr_st = struct.Struct(e + "II" + w * 4 + "II" + w * 2)
        self.dyn_st = struct.Struct(e + w * 2)
        self.u16 = struct.Struct(e + "H")
        self.u32 = struct.Struct(e + "I")
        self.word_st = struct.Struct(e + w)
        self.verneed_st = struct.Struct(e + "HHIII")
        self.vernaux_st = struct.Struct(e + "IHHII")
        self.verdef_st = struct.Struct(e + "HHHHIII")
        self.verdaux_st = struct.Struct(e + "II")
        if n < self.ehdr_st.size:
            raise ElfPatchError("truncated ELF header")
        (_, self.e_type, self.machine, _, _, self.phoff, self.shoff, _, _,
         phentsize, self.phnum, shentsize, shnum, shstrndx) = self.ehdr_st.unpack_from(data, 0)
        if self.e_type not in (ET_EXEC, ET_DYN):
            raise ElfPatchError(f"ELF type {self.e_type} is not an executable or shared object")
        if self.phnum == PN_XNUM:
            raise ElfPatchError("extended program header numbering (PN_XNUM) is not supported")
        if self.phnum == 0:
            raise ElfPatchError("no program headers")
        if phentsize != self.phdr_st.size:
            raise ElfPatchError(f"unexpected program header entry size {phentsize}")
        self._check(self.phoff, self.phnum * phentsize, "program header table")
        self.segs: List[_Seg] = [self._unpack_seg(self.phoff + i * phentsize)
                                 for i in range(self.phnum)]
        for s in self.segs:
            if s.type == PT_LOAD:
                self._check(s.offset, s.filesz, "PT_LOAD segment")
                if s.memsz < s.filesz:
                    raise ElfPatchError("PT_LOAD segment with p_memsz < p_filesz")
        self.loads = [s for s in self.segs if s.type == PT_LOAD]
        if not self.loads:
            raise ElfPatchError("no PT_LOAD segment")
        self.shentsize = shentsize
        self.sections = self._read_sections(shnum, shentsize, shstrndx)

    # -- low level

    def _check(self, off: int, size: int, what: str) -> None:
        if off < 0 or size < 0 or off + size > len(self.data):
            raise ElfPatchError(f"{what} at {off:#x}+{size:#x} lies outside the file")

    def _unpack_seg(self, off: int) -> _Seg:
        v = self.phdr_st.unpack_from(self.data, off)
        if self.is64:
            t, fl, o, va, pa, fs, ms, al = v
        else:
            t, o, va, pa, fs, ms, fl, al = v
        return _Seg(t, fl, o, va, pa, fs, ms, al)

    def pack_seg(self, s: _Seg) -> bytes:
        if self.is64:
            return self.phdr_st.pack(s.type, s.flags, s.offset, s.vaddr, s.paddr,
                                     s.filesz, s.memsz, s.align)
        return self.phdr_st.pack(s.type, s.offset, s.vaddr, s.paddr, s.filesz,
                                 s.memsz, s.flags, s.align)

    def _read_sections(self, shnum: int, shentsize: int, shstrndx: int) -> list:
        if self.shoff == 0:
            return []
        if shentsize != self.shdr_st.size:
            raise ElfPatchError(f"unexpected section header entry size {shentsize}")
        self._check(self.shoff, shentsize, "section header table")
        first = list(self.shdr_st.unpack_from(self.data, self.shoff))
        if shnum == 0:            # extended numbering: the count is in section 0
            shnum = first[5]
        if shnum > len(self.data) // shentsize:
            raise ElfPatchError("section header count larger than the file")
        self._check(self.shoff, shnum * shentsize, "section header table")
        return [list(self.shdr_st.unpack_from(self.data, self.shoff + i * shentsize))
                for i in range(shnum)]

    def vaddr_to_off(self, addr: int, size: int, what: str) -> int:
        for s in self.loads:
            if s.vaddr <= addr and addr + size <= s.vaddr + s.filesz:
                return s.offset + (addr - s.vaddr)
        raise ElfPatchError(f"{what} at address {addr:#x} (+{size:#x}) is not inside a "
                            "loaded part of the file")


# ----------------------------------------------------------- the planning

class _Plan:
    """The dynamic facts of the input and the changes to make."""

    def __init__(self, img: _Image):
        self.img = img
        data = img.data
        dyns = [s for s in img.segs if s.type == PT_DYNAMIC]
        if not dyns:
            raise ElfPatchError("no PT_DYNAMIC segment: the file is not dynamically linked")
        # The loaders use the last PT_DYNAMIC, read at its p_vaddr (see the core's
        # docstring); a patch must edit the table they read, so anything else is refused.
        if len(dyns) > 1:
            raise ElfPatchError(f"inconsistent ELF: {len(dyns)} PT_DYNAMIC segments "
                                "(the loaders use the last one); refusing to patch")
        self.dynseg = dyns[0]
        esz = img.dyn_st.size
        img._check(self.dynseg.offset, self.dynseg.filesz, "PT_DYNAMIC segment")
        if img.vaddr_to_off(self.dynseg.vaddr, self.dynseg.filesz,
                            "PT_DYNAMIC") != self.dynseg.offset:
            raise ElfPatchError("inconsistent ELF: PT_DYNAMIC's p_offset is not where its "
                                "p_vaddr is loaded from; refusing to patch")
        self.capacity = self.dynseg.filesz // esz
        self.entries: List[list] = []
        for i in range(self.capacity):
            tag, val = img.dyn_st.unpack_from(data, self.dynseg.offset + i * esz)
            if tag == DT_NULL:
                break
            self.entries.append([tag, val])
        else:
            raise ElfPatchError("dynamic section is not terminated by DT_NULL")
        self.tags: Dict[int, int] = {}
        for tag, val in self.entries:
            self.tags.setdefault(tag, val)
        if DT_STRTAB not in self.tags or DT_STRSZ not in self.tags:
            raise ElfPatchError("dynamic section lacks DT_STRTAB or DT_STRSZ")
        self.strtab_addr = self.tags[DT_STRTAB]
        self.strsz = self.tags[DT_STRSZ]
        self.stroff = img.vaddr_to_off(self.strtab_addr, self.strsz, ".dynstr")
        self.dynstr = bytes(data[self.stroff:self.stroff + self.strsz])
        self.sec_dynstr = self.sec_dynamic = None
        for i, sh in enumerate(img.sections):
            if (sh[1] == SHT_STRTAB and sh[2] & SHF_ALLOC and sh[3] == self.strtab_addr
                    and sh[4] == self.stroff and self.sec_dynstr is None):
                self.sec_dynstr = i
            elif sh[1] == SHT_DYNAMIC and sh[4] == self.dynseg.offset and self.sec_dynamic is None:
                self.sec_dynamic = i
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

    def _walk(self, tag_addr, tag_num, entsize, what):
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
            nxt = self.img.u32.unpack_from(self.img.data, off + entsize - 4)[0]
            if nxt == 0:
                break
            off += nxt
        return out

    def _read_verneed(self):
        """[(entry offset, vn_file, [vna_name...])]"""
        img = self.img
        out = []
        for off in self._walk(DT_VERNEED, DT_VERNEEDNUM, 16, ".gnu.version_r"):
            _, cnt, vn_file, vn_aux, _ = img.verneed_st.unpack_from(img.data, off)
            names, aux = [], off + vn_aux
            for _ in range(cnt):
                img._check(aux, 16, ".gnu.version_r auxiliary entry")
                _, _, _, vna_name, vna_next = img.vernaux_st.unpack_from(img.data, aux)
                names.append(vna_name)
                if vna_next == 0:
                    break
                aux += vna_next
            out.append((off, vn_file, names))
        return out

    def _read_verdef(self):
        """[(entry offset, vd_flags, [(verdaux offset, vda_name)...])]"""
        img = self.img
        out = []
        for off in self._walk(DT_VERDEF, DT_VERDEFNUM, 20, ".gnu.version_d"):
            _, flags, _, cnt, _, vd_aux, _ = img.verdef_st.unpack_from(img.data, off)
            auxs, aux = [], off + vd_aux
            for _ in range(cnt):
                img._check(aux, 8, ".gnu.version_d auxiliary entry")
                vda_name, vda_next = img.verdaux_st.unpack_from(img.data, aux)
                auxs.append((aux, vda_name))
                if vda_next == 0:
                    break
                aux += vda_next
            out.append((off, flags, auxs))
        return out

    # -- symbols

    def symbol_count(self) -> Optional[int]:
        """The number of .dynsym entries, or None when it cannot be known."""
        img, data = self.img, self.img.data
        if DT_SYMTAB not in self.tags:
            return 0
        for sh in img.sections:
            if sh[1] == SHT_DYNSYM and sh[3] == self.tags[DT_SYMTAB]:
                ent = sh[9] or self.tags.get(DT_SYMENT, 24 if img.is64 else 16)
                return sh[5] // ent if ent else None
        if DT_HASH in self.tags:
            off = img.vaddr_to_off(self.tags[DT_HASH], 8, "DT_HASH")
            return img.u32.unpack_from(data, off + 4)[0]
        if DT_GNU_HASH in self.tags:
            return self._gnu_hash_count()
        return None

    def _gnu_hash_count(self) -> Optional[int]:
        """Symbols counted through DT_GNU_HASH: one past the end of the last
        chain.  With every bucket empty the table does not tell the count (the
        unhashed symbols below symoffset need not number symoffset): None."""
        img, data = self.img, self.img.data
        off = img.vaddr_to_off(self.tags[DT_GNU_HASH], 16, "DT_GNU_HASH")
        nbuckets, symoffset, bloom, _ = struct.unpack_from(img.u32.format[0] + "4I", data, off)
        buckets = off + 16 + bloom * img.word
        img._check(buckets, nbuckets * 4, "DT_GNU_HASH buckets")
        top = max(struct.unpack_from(f"{img.u32.format[0]}{nbuckets}I", data, buckets),
                  default=0)
        if top < symoffset or top == 0:
            return None
        chains = buckets + nbuckets * 4
        idx = top
        while True:
            img._check(chains + (idx - symoffset) * 4, 4, "DT_GNU_HASH chain")
            if img.u32.unpack_from(data, chains + (idx - symoffset) * 4)[0] & 1:
                return idx + 1
            idx += 1


# -------------------------------------------------------------- allocation

class _Strings:
    """Places new strings into dead bytes of .dynstr, or past its end."""

    def __init__(self, plan: _Plan, fixed_refs: Optional[set]):
        self.plan = plan
        self.table = bytearray(plan.dynstr)
        self.extra = bytearray()          # appended after the old table
        self.placed: Dict[bytes, int] = {}     # string -> its offset in the new table
        self.known = fixed_refs is not None
        self.live: List[Tuple[int, int]] = []   # merged [start, end] (end = NUL index)
        self.free: List[List[int]] = []         # [start, length]
        if fixed_refs is None:            # not self.known
            return
        spans = sorted((r, plan.cstr_end(r)) for r in fixed_refs | {0})
        for a, b in spans:
            if self.live and a <= self.live[-1][1] + 1:
                if b > self.live[-1][1]:
                    self.live[-1] = (self.live[-1][0], b)
            else:
                self.live.append((a, b))
        pos = 0
        for a, b in self.live:
            if a > pos:
                self.free.append([pos, a - pos])
            pos = b + 1
        if pos < plan.strsz:
            self.free.append([pos, plan.strsz - pos])
        for start, length in self.free:          # dead bytes are cleared
            self.table[start:start + length] = bytes(length)

    def _find_live(self, s: bytes) -> Optional[int]:
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
                if run[1] >= need:
                    p = run[0]
                    self.table[p:p + len(s)] = s
                    self.table[p + len(s)] = 0
                    run[0] += need
                    run[1] -= need
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


# ---------------------------------------------------------------- the API

def patch_elf(
    data: Union[bytes, bytearray, memoryview],
    *,
    set_soname: Union[str, bytes, None] = None,
    replace_needed: Optional[Mapping[Union[str, bytes], Union[str, bytes]]] = None,
    remove_needed: Optional[Iterable[Union[str, bytes]]] = None,
    set_rpath: Union[str, bytes, None] = None,
    set_runpath: Union[str, bytes, None] = None,
    remove_rpath: bool = False,
    force_rpath: bool = False,
    page_size: Optional[int] = None,
) -> bytes:
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

    Raises ``ElfPatchError`` for files it cannot patch safely, ``ValueError`` or
    ``TypeError`` for contradictory or malformed arguments.  With nothing to do
    the input is returned unchanged (as bytes).
    """
    # ---- arguments
    soname = None if set_soname is None else _encode(set_soname, "set_soname")
    repl = {}
    for old, new in (replace_needed or {}).items():
        repl[_encode(old, "replace_needed key")] = _encode(new, "replace_needed value")
    remove = {_encode(x, "remove_needed entry") for x in (remove_needed or ())}
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
    path_tag = path_value = None
    if set_rpath is not None:
        path_tag, path_value = DT_RPATH, _encode(set_rpath, "set_rpath")
    elif set_runpath is not None:
        path_tag, path_value = DT_RUNPATH, _encode(set_runpath, "set_runpath")
    if path_value is not None and not path_value:
        raise ValueError("an empty search path means the current directory to the loader; "
                         "use remove_rpath=True to remove the path")
    align = DEFAULT_PAGE_SIZE if page_size is None else int(page_size)
    if align < 4096 or align & (align - 1):
        raise ValueError(f"page_size must be a power of two >= 4096, not {page_size}")

    data = bytes(data)
    if not (soname is not None or repl or remove or path_tag or remove_rpath or force_rpath):
        return data
    try:
        return _apply(data, soname, repl, remove, path_tag, path_value, remove_rpath,
                      force_rpath, align)
    except (struct.error, IndexError, KeyError, OverflowError) as exc:
        # every offset is checked first; this is a last line of defence
        raise ElfPatchError(f"malformed ELF file ({type(exc).__name__}: {exc})") from None


def _apply(data, soname, repl, remove, path_tag, path_value, remove_rpath, force_rpath,
           align) -> bytes:
    try:
        parse(data)
    except ElfError as exc:
        raise ElfPatchError(f"malformed ELF file: {exc}") from None
    img = _Image(data)
    plan = _Plan(img)

    # ---- new dynamic entries; a bytes value is a string still to be placed
    entries: List[list] = []
    found = set()
    old_soname = None
    for tag, val in plan.entries:
        if tag == DT_NEEDED:
            name = plan.string(val)
            if name in remove:
                found.add(name)
                continue
            if name in repl:
                found.add(name)
                entries.append([tag, repl[name]])
                continue
        elif tag == DT_SONAME:
            old_soname = plan.string(val)
            if soname is not None:
                if soname == old_soname:
                    entries.append([tag, val])
                elif any(e[0] == DT_SONAME for e in entries):
                    continue            # a duplicate DT_SONAME: keep one
                else:
                    entries.append([tag, soname])
                continue
        elif tag in (DT_RPATH, DT_RUNPATH):
            if remove_rpath:
                continue
            if path_tag is not None:
                if not any(e[0] == path_tag for e in entries):
                    entries.append([path_tag, path_value])
                continue
            if force_rpath:
                if tag == DT_RPATH and DT_RUNPATH in plan.tags:
                    continue            # the RUNPATH is the path in force; it becomes RPATH
                entries.append([DT_RPATH, val])
                continue
        entries.append([tag, val])
    missing = (set(repl) | remove) - found
    if missing:
        raise ElfPatchError("not in DT_NEEDED: " + ", ".join(
            sorted(m.decode("utf-8", "surrogateescape") for m in missing)))
    if soname is not None and not any(e[0] == DT_SONAME for e in entries):
        entries.append([DT_SONAME, soname])
    if path_tag is not None and not any(e[0] == path_tag for e in entries):
        entries.append([path_tag, path_value])

    # ---- version tables
    vn_updates = []                     # (file offset of vn_file, new name)
    vn_fixed = set()
    for off, vn_file, vna_names in plan.verneed:
        name = plan.string(vn_file)
        if name in remove:
            raise ElfPatchError(
                f"cannot remove DT_NEEDED {name.decode('utf-8', 'surrogateescape')}: symbol "
                "versions are required from it (.gnu.version_r)")
        if name in repl:
            vn_updates.append((off + 4, repl[name]))
        else:
            vn_fixed.add(vn_file)
        vn_fixed.update(vna_names)
    vd_updates = []                     # (verdef offset, verdaux offset, new name)
    vd_fixed = set()
    for off, flags, auxs in plan.verdef:
        for k, (aux_off, name_off) in enumerate(auxs):
            if (k == 0 and flags & 1 and soname is not None and old_soname is not None
                    and soname != old_soname and plan.string(name_off) == old_soname):
                vd_updates.append((off, aux_off, soname))
            else:
                vd_fixed.add(name_off)

    # ---- string liveness
    fixed = _fixed_refs(plan, entries, vn_fixed | vd_fixed)
    strings = _Strings(plan, fixed)
    strings.place([v for _, v in entries if isinstance(v, bytes)]
                  + [n for _, n in vn_updates] + [n for _, _, n in vd_updates])
    for e in entries:
        if isinstance(e[1], bytes):
            e[1] = strings.placed[e[1]]
    new_dynstr = strings.content()

    move_dynstr = strings.grows
    move_dynamic = len(entries) + 1 > plan.capacity
    if move_dynamic:
        if img.machine == EM_MIPS:
            raise ElfPatchError("the dynamic section has no spare slot and MIPS dynamic "
                                "sections cannot be relocated")
        for tag, _ in entries:
            if 0x70000000 <= tag <= 0x7FFFFFFC and tag not in _MACHINE_TAGS.get(img.machine, ()):
                raise ElfPatchError(
                    f"the dynamic section has no spare slot and holds processor-specific tag "
                    f"{tag:#x}, which may depend on its address: cannot relocate it")

    out = bytearray(data)
    for off, name in vn_updates:
        img.u32.pack_into(out, off, strings.placed[name])
    for vd_off, aux_off, name in vd_updates:
        img.u32.pack_into(out, vd_off + 8, _elf_hash(name))
        img.u32.pack_into(out, aux_off, strings.placed[name])
    if not move_dynstr:
        out[plan.stroff:plan.stroff + plan.strsz] = new_dynstr

    if move_dynstr or move_dynamic:
        _relocate(img, plan, out, entries, new_dynstr, move_dynstr, move_dynamic, align)
    else:
        _write_dynamic(img, out, plan.dynseg.offset, entries, plan.capacity)

    result = bytes(out)
    _verify(result, entries_expected=_expectation(plan, entries, strings, new_dynstr))
    return result


def _fixed_refs(plan: _Plan, entries, version_refs) -> Optional[set]:
    """Offsets into .dynstr that stay referenced, or None if they cannot be known."""
    img = plan.img
    machine_tags = _MACHINE_TAGS.get(img.machine, frozenset())
    refs = set(version_refs)
    for tag, val in plan.entries:
        if tag not in _STRING_TAGS and tag not in _PLAIN_TAGS and tag not in machine_tags:
            return None
    if img.machine == EM_MIPS:
        return None
    for tag, val in entries:
        if tag in _STRING_TAGS and not isinstance(val, bytes):
            refs.add(val)
    if plan.sec_dynstr is None and img.sections:
        return None            # sections exist but none matches .dynstr: be careful
    if plan.sec_dynstr is not None:
        users = {SHT_DYNSYM, SHT_DYNAMIC, SHT_GNU_VERNEED, SHT_GNU_VERDEF}
        for sh in img.sections:
            if sh[6] == plan.sec_dynstr and sh[1] not in users:
                return None    # an unknown section refers to .dynstr
    nsyms = plan.symbol_count()
    if nsyms is None:
        return None
    if nsyms:
        syment = plan.tags.get(DT_SYMENT, 24 if img.is64 else 16)
        if syment < (24 if img.is64 else 16) or nsyms > len(img.data) // syment:
            raise ElfPatchError("implausible dynamic symbol table size")
        off = img.vaddr_to_off(plan.tags[DT_SYMTAB], nsyms * syment, ".dynsym")
        u32 = img.u32
        refs.update(u32.unpack_from(img.data, off + i * syment)[0] for i in range(nsyms))
    return refs


def _write_dynamic(img: _Image, out: bytearray, off: int, entries, slots: int) -> None:
    esz = img.dyn_st.size
    for i in range(slots):
        tag, val = entries[i] if i < len(entries) else (DT_NULL, 0)
        img.dyn_st.pack_into(out, off + i * esz, tag, val)


# Sections that only the loader reaches, through a program header or a
# dynamic tag: they may move when room is needed after the program headers.
_MOVABLE_TYPES = {
    SHT_HASH: DT_HASH, SHT_GNU_HASH: DT_GNU_HASH, SHT_DYNSYM: DT_SYMTAB,
    SHT_STRTAB: DT_STRTAB, SHT_GNU_VERSYM: 0x6FFFFFF0, SHT_GNU_VERNEED: DT_VERNEED,
    SHT_GNU_VERDEF: DT_VERDEF,
}
SHT_PROGBITS, SHT_NOTE = 1, 7
PT_NOTE, PT_GNU_PROPERTY = 4, 0x6474E553


def _room_after_phdrs(img: _Image, plan: _Plan):
    """Find the bytes to vacate so the program header table can grow by one entry
    in place: (start, end, sections, segments) of a block to move, or None.

    Only sections reached solely through program headers or dynamic tags
    qualify (.interp, notes, hash tables, .dynsym, .dynstr, version tables);
    anything else, or a file without section headers, gives None."""
    if not img.sections:
        return None
    entsz = img.phdr_st.size
    start = img.phoff + img.phnum * entsz
    need_end = start + entsz
    holders = [s for s in img.loads if s.offset <= img.phoff and need_end <= s.offset + s.filesz]
    if not holders:
        return None
    holder = holders[0]
    shend = img.shoff + len(img.sections) * img.shentsize
    end = need_end
    while True:                          # grow the block to whole sections and notes
        grown = end
        for sh in img.sections:
            if sh[1] != SHT_NOBITS and sh[5] and sh[4] < grown and sh[4] + sh[5] > start:
                if sh[4] < start:
                    return None          # a section overlaps the program headers
                grown = max(grown, sh[4] + sh[5])
        for sg in img.segs:
            if sg.type in (PT_LOAD, PT_PHDR) or not sg.filesz:
                continue
            if sg.offset < grown and sg.offset + sg.filesz > start:
                if sg.offset < start or sg.type not in (PT_INTERP, PT_NOTE, PT_GNU_PROPERTY):
                    return None
                grown = max(grown, sg.offset + sg.filesz)
        if grown == end:
            break
        end = grown
    if end > holder.offset + holder.filesz or (img.shoff < end and shend > start):
        return None
    for sg in img.loads:
        if sg is not holder and sg.offset < end and sg.offset + sg.filesz > start:
            return None
    sections = []
    vstart = holder.vaddr + (start - holder.offset)
    vend = vstart + (end - start)
    for i, sh in enumerate(img.sections):
        if not (sh[5] and sh[4] < end and sh[4] + sh[5] > start and sh[1] != SHT_NOBITS):
            continue
        if not sh[2] & SHF_ALLOC or sh[3] != holder.vaddr + (sh[4] - holder.offset):
            return None
        if sh[1] == SHT_NOTE or (sh[1] == SHT_PROGBITS and any(
                sg.type == PT_INTERP and sg.offset == sh[4] for sg in img.segs)):
            pass
        elif sh[1] in _MOVABLE_TYPES:
            if sh[1] == SHT_STRTAB and i != plan.sec_dynstr:
                return None
            tag = _MOVABLE_TYPES[sh[1]]
            if plan.tags.get(tag) != sh[3]:
                return None
        else:
            return None
        sections.append(i)
    # no other dynamic address may point into the block
    moved_tags = set(_MOVABLE_TYPES.values())
    for tag, val in plan.entries:
        if tag not in moved_tags and tag not in _STRING_TAGS and vstart <= val < vend and tag in (
                3, 4, 5, 6, 7, 12, 13, 17, 23, 25, 26, 32, 36, 0x6FFFFEF5):
            return None
    for tag, val in plan.entries:
        if tag in moved_tags and vstart <= val < vend and not any(
                img.sections[i][3] == val and _MOVABLE_TYPES.get(img.sections[i][1]) == tag
                for i in sections):
            return None
    segments = [k for k, sg in enumerate(img.segs)
                if sg.type not in (PT_LOAD, PT_PHDR) and sg.filesz
                and start <= sg.offset and sg.offset + sg.filesz <= end]
    balign = 1
    for i in sections:
        balign = max(balign, img.sections[i][8] or 1)
    for k in segments:
        balign = max(balign, img.segs[k].align or 1)
    if balign & (balign - 1) or balign > 4096:
        return None
    return start, end, sections, segments, balign


def _relocate(img, plan, out, entries, new_dynstr, move_dynstr, move_dynamic, align):
    """Write the moved tables in a segment at the end of the file.

    Three layouts, tried in this order:
    extend  the last PT_LOAD already ends the file (a previous patch): grow it;
    grow    vacate the bytes after the program header table by moving the
            sections there (.interp, notes, .dynsym, ...) into the new segment,
            and add the PT_LOAD entry in place: the table stays at the front,
            where binutils and every kernel expect it;
    move    otherwise the program header table itself goes to the new segment.
    """
    data = img.data
    esz = img.dyn_st.size
    entsz = img.phdr_st.size
    loads = img.loads
    max_end = max(s.vaddr + s.memsz for s in loads)
    last = max(loads, key=lambda s: s.vaddr)
    is_exec = img.e_type == ET_EXEC or any(s.type == PT_INTERP for s in img.segs)
    need_w = move_dynamic

    block: Optional[tuple] = None         # _room_after_phdrs's block, in mode "grow"
    if (last is loads[-1] and last.offset + last.filesz == len(data)
            and last.memsz == last.filesz and not last.flags & PF_X
            and (last.flags & PF_W or not need_w) and last.vaddr + last.memsz == max_end):
        mode = "extend"
    else:
        if img.phnum + 1 >= PN_XNUM:
            raise ElfPatchError("too many program headers")
        block = _room_after_phdrs(img, plan)
        mode = "grow" if block is not None else "move"

    dyn_size = (len(entries) + 1) * esz if move_dynamic else 0
    phnum = img.phnum if mode == "extend" else img.phnum + 1

    # -- where the added bytes start, and their virtual addresses
    seg_align = align
    if mode == "extend":
        base = _align(len(data), _ALIGN)
        seg = last
        vbase = last.vaddr + (base - last.offset)
    elif mode == "move" and is_exec:
        # keep the first PT_LOAD's p_vaddr - p_offset: pre-5.18 kernels derive
        # AT_PHDR from it
        first = loads[0]
        delta = first.vaddr - first.offset
        while seg_align > 4096 and delta % seg_align:
            seg_align //= 2
        if delta % seg_align:
            raise ElfPatchError("the first PT_LOAD is not page-aligned "
                                "(p_vaddr - p_offset is not a multiple of 4096)")
        base = max(_align(len(data), _ALIGN), _align(max_end, seg_align) - delta)
        if base - len(data) > _MAX_EXEC_PAD:
            raise ElfPatchError("adding a segment to this executable needs more than "
                                f"{_MAX_EXEC_PAD >> 20} MiB of padding (large .bss)")
        vbase = base + delta
    else:
        base = _align(len(data), _ALIGN)
        vbase = _align(max_end, seg_align) + base % seg_align

    def vaddr_of(off):
        return vbase + (off - base)

    # -- layout: [phdrs | moved block][dynamic][dynstr]
    pos = base
    ph_off = block_off = None
    if mode == "move":
        ph_off = pos
        pos += phnum * entsz
    elif block is not None:                     # mode == "grow"
        bstart, bend, bsections, bsegments, balign = block
        pos += (bstart - pos) % balign          # same residue: alignments survive
        block_off = pos
        pos += bend - bstart
    dyn_off = _align(pos, img.word)
    str_off = dyn_off + dyn_size
    end = str_off + (len(new_dynstr) if move_dynstr else 0)
    if vaddr_of(end) >= 1 << (64 if img.is64 else 32) or end >= 1 << (64 if img.is64 else 32):
        raise ElfPatchError("no room for a new segment in the address space of this ELF32 file")
    out += bytes(end - len(out))

    segs = [_Seg(s.type, s.flags, s.offset, s.vaddr, s.paddr, s.filesz, s.memsz, s.align)
            for s in img.segs]
    sec_updates = {}                       # section index -> (offset, addr, size)

    if mode == "grow":
        holder = [s for s in loads if s.offset <= bstart < s.offset + s.filesz][0]
        d_off = block_off - bstart
        d_addr = vaddr_of(block_off) - (holder.vaddr + bstart - holder.offset)
        out[block_off:block_off + bend - bstart] = out[bstart:bend]
        out[bstart:bend] = bytes(bend - bstart)
        for i in bsections:
            sh = img.sections[i]
            if i == plan.sec_dynstr and move_dynstr:
                continue                   # replaced by the grown copy below
            sec_updates[i] = (sh[4] + d_off, sh[3] + d_addr, sh[5])
            tag = _MOVABLE_TYPES.get(sh[1])
            if tag is not None:
                for e in entries:
                    if e[0] == tag and e[1] == sh[3]:
                        e[1] = sh[3] + d_addr
        for k in bsegments:
            sg = segs[k]
            sg.offset += d_off
            sg.vaddr += d_addr
            sg.paddr += d_addr

    if move_dynstr:
        for e in entries:
            if e[0] == DT_STRTAB:
                e[1] = vaddr_of(str_off)
            elif e[0] == DT_STRSZ:
                e[1] = len(new_dynstr)
        out[str_off:end] = new_dynstr
        if plan.sec_dynstr is not None:
            sec_updates[plan.sec_dynstr] = (str_off, vaddr_of(str_off), len(new_dynstr))
    if move_dynamic:
        _write_dynamic(img, out, dyn_off, entries, len(entries) + 1)
        d = segs[img.segs.index(plan.dynseg)]
        d.offset, d.vaddr, d.paddr = dyn_off, vaddr_of(dyn_off), vaddr_of(dyn_off)
        d.filesz = d.memsz = dyn_size
        if plan.sec_dynamic is not None:
            sec_updates[plan.sec_dynamic] = (dyn_off, vaddr_of(dyn_off), dyn_size)
    else:
        _write_dynamic(img, out, plan.dynseg.offset, entries, plan.capacity)

    # -- program headers
    if mode == "extend":
        s = segs[img.segs.index(last)]
        s.filesz = s.memsz = end - s.offset
        ph_at = img.phoff
    else:
        seg = _Seg(PT_LOAD, PF_R | (PF_W if need_w else 0), base, vbase, vbase,
                   end - base, end - base, seg_align)
        ph_at = ph_off if mode == "move" else img.phoff
        for s in segs:
            if s.type == PT_PHDR:
                if mode == "move":
                    s.offset, s.vaddr, s.paddr = ph_off, vaddr_of(ph_off), vaddr_of(ph_off)
                s.filesz = s.memsz = phnum * entsz
        last_load = max(i for i, s in enumerate(img.segs) if s.type == PT_LOAD)
        segs.insert(last_load + 1, seg)
        img.word_st.pack_into(out, 32 if img.is64 else 28, ph_at)
        img.u16.pack_into(out, 56 if img.is64 else 44, phnum)
    for i, s in enumerate(segs):
        out[ph_at + i * entsz:ph_at + (i + 1) * entsz] = img.pack_seg(s)

    # -- section headers
    for index, (off, addr, size) in sec_updates.items():
        sh = list(img.sections[index])
        sh[3], sh[4], sh[5] = addr, off, size
        img.shdr_st.pack_into(out, img.shoff + index * img.shentsize, *sh)


def _expectation(plan, entries, strings, new_dynstr):
    """(needed, soname, rpath, runpath) as the patched file must report them
    (the last of duplicated entries wins, as in the loaders)."""
    def s(off):
        z = new_dynstr.find(b"\0", off)
        return new_dynstr[off:z].decode("utf-8", "surrogateescape")
    needed, soname, rpath, runpath = [], None, None, None
    for tag, val in entries:
        if tag == DT_NEEDED:
            needed.append(s(val))
        elif tag == DT_SONAME:
            soname = s(val)
        elif tag == DT_RPATH:
            rpath = s(val)
        elif tag == DT_RUNPATH:
            runpath = s(val)
    return needed, soname, rpath, runpath


def _verify(result: bytes, entries_expected) -> None:
    try:
        elf = parse(result)
    except ElfError as exc:        # pragma: no cover - a bug in this module
        raise ElfPatchError(f"internal error: the patched file does not parse: {exc}") from None
    got = (elf.needed, elf.soname, elf.rpath, elf.runpath)
    if got != tuple(entries_expected):  # pragma: no cover - a bug in this module
        raise ElfPatchError(f"internal error: patched file reads {got!r}, "
                            f"expected {tuple(entries_expected)!r}")
