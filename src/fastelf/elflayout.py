"""The ELF structures' byte layouts for the Python side, one table keyed by
(ELF class, byte order).

The Cython core reads the structures it needs itself (``cext/fastelf``); the
modules that rewrite files (``strip.py``, ``patch.py``) pack and unpack
them with these ``struct.Struct``s instead of restating format strings, and
name the fields with the records below instead of indexing tuples.  Field
names and order are those of the ELF spec (glibc's ``<elf.h>``).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ._elf import ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, SHT_NOBITS


class Ehdr(NamedTuple):
    """The ELF header (Elf32_Ehdr / Elf64_Ehdr), fields in file order."""

    e_ident: bytes
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int


class Shdr(NamedTuple):
    """A section header (Elf32_Shdr / Elf64_Shdr), fields in file order."""

    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int

    def in_file(self, start: int, end: int) -> bool:
        """Whether the section has bytes in the file that overlap [start, end)."""
        return (self.sh_type != SHT_NOBITS and bool(self.sh_size) and self.sh_offset < end
                and self.sh_offset + self.sh_size > start)


# Elf32_Phdr puts p_flags after p_memsz, Elf64_Phdr right after p_type (for alignment).
PHDR32_FIELDS = ("p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz",
                 "p_flags", "p_align")
PHDR64_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz",
                 "p_memsz", "p_align")


class Layout(NamedTuple):
    """The structs of one (class, byte order); ``word`` is an address-sized field."""

    elf_class: int
    little_endian: bool
    ehdr: struct.Struct
    phdr: struct.Struct
    phdr_fields: tuple[str, ...]    # the names of ``phdr``'s fields, in its order
    shdr: struct.Struct
    dyn: struct.Struct              # (d_tag, d_val), both unsigned words
    word: struct.Struct
    u16: struct.Struct
    u32: struct.Struct
    verneed: struct.Struct          # vn_version, vn_cnt, vn_file, vn_aux, vn_next
    vernaux: struct.Struct          # vna_hash, vna_flags, vna_other, vna_name, vna_next
    verdef: struct.Struct           # vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next
    verdaux: struct.Struct          # vda_name, vda_next
    sym: struct.Struct              # Elf_Sym (its size is DT_SYMENT's default and minimum)
    phoff_at: int                   # offset of e_phoff in the ELF header
    phnum_at: int                   # offset of e_phnum in the ELF header

    def read_ehdr(self, data: bytes | bytearray | memoryview) -> Ehdr:
        """The ELF header at the start of ``data`` (which must hold it)."""
        return Ehdr._make(self.ehdr.unpack_from(data, 0))


def _layout(elf_class: int, data: int) -> Layout:
    e = "<" if data == ELFDATA2LSB else ">"
    w = "Q" if elf_class == ELFCLASS64 else "I"
    return Layout(
        elf_class=elf_class,
        little_endian=data == ELFDATA2LSB,
        ehdr=struct.Struct(e + "16sHHI" + w * 3 + "IHHHHHH"),
        phdr=struct.Struct(e + ("IIQQQQQQ" if elf_class == ELFCLASS64 else "IIIIIIII")),
        phdr_fields=PHDR64_FIELDS if elf_class == ELFCLASS64 else PHDR32_FIELDS,
        shdr=struct.Struct(e + "II" + w * 4 + "II" + w * 2),
        dyn=struct.Struct(e + w * 2),
        word=struct.Struct(e + w),
        u16=struct.Struct(e + "H"),
        u32=struct.Struct(e + "I"),
        verneed=struct.Struct(e + "HHIII"),
        vernaux=struct.Struct(e + "IHHII"),
        verdef=struct.Struct(e + "HHHHIII"),
        verdaux=struct.Struct(e + "II"),
        # Elf32_Sym: name, value, size, info, other, shndx; Elf64_Sym: name, info,
        # other, shndx, value, size
        sym=struct.Struct(e + ("IBBHQQ" if elf_class == ELFCLASS64 else "IIIBBH")),
        phoff_at=struct.calcsize(e + "16sHHI" + w),
        phnum_at=struct.calcsize(e + "16sHHI" + w * 3 + "IHH"),
    )


LAYOUTS: dict[tuple[int, int], Layout] = {
    (c, d): _layout(c, d) for c in (ELFCLASS32, ELFCLASS64) for d in (ELFDATA2LSB, ELFDATA2MSB)}


def layout(is64: bool, little_endian: bool) -> Layout:
    """The layout of an ELF64 (else ELF32) file in that byte order."""
    return LAYOUTS[(ELFCLASS64 if is64 else ELFCLASS32,
                    ELFDATA2LSB if little_endian else ELFDATA2MSB)]
