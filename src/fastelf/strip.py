"""Strip an ELF file in process: drop everything the loader never maps.

The result keeps every byte that a program header covers, and loses the
section header table and all non-allocated sections after the last segment
(.symtab, .strtab, .debug_*, .comment, ...).  This is what ``sstrip`` does;
it is at least as small as ``strip -s`` and needs no external tool.
"""

from __future__ import annotations

import struct

from ._elf import ElfError, parse
from .errors import FastElfError


class ElfStripError(FastElfError):
    pass


def strip_elf(data) -> bytes:
    """Return ``data`` without section headers and unmapped trailing sections."""
    try:
        elf = parse(data)
    except ElfError as e:
        raise ElfStripError(f"cannot strip: {e}") from None
    if not elf.segments:
        raise ElfStripError("cannot strip a file without program headers (an object file?)")
    end = max(off + filesz for _t, _f, off, _v, filesz, _m, _a in elf.segments)
    is64 = elf.elf_class == 64
    le = "<" if elf.little_endian else ">"
    phoff = struct.unpack_from(le + ("Q" if is64 else "I"), data, 32 if is64 else 28)[0]
    phentsize = 56 if is64 else 32
    end = max(end, phoff + phentsize * len(elf.segments), 64 if is64 else 52)
    if end > len(data):
        raise ElfStripError("a segment runs past the end of the file")
    out = bytearray(data[:end])
    if is64:
        struct.pack_into(le + "Q", out, 40, 0)          # e_shoff
        struct.pack_into(le + "HHH", out, 58, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    else:
        struct.pack_into(le + "I", out, 32, 0)
        struct.pack_into(le + "HHH", out, 46, 0, 0, 0)
    return bytes(out)
