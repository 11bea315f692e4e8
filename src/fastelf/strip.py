"""Strip an ELF file in process, as ``strip -s`` (``--strip-all``) does.

Removed: the symbol table (SHT_SYMTAB) and its string table, debug sections
(``.debug_*``, ``.zdebug_*``, ``.gnu.debuglto_*``, ``.line``, ``.stab*``) and
the non-allocated relocation sections that apply to removed sections.  Kept:
every byte a program header covers (unchanged, at the same offset), every
allocated section, the other non-allocated sections (``.comment``,
``.gnu_debuglink``, notes ...) and a valid section header table, so
``auditwheel show``, patchelf, strip, nm and readelf still accept the file.
Without the section headers (what ``sstrip`` does) tools that read symbol
versions through them see a file with no versioned imports at all: auditwheel
then reports manylinux_2_5 for any file.

Layout of the result: the input up to the end of its last segment or
allocated section, then the kept non-allocated sections that lay beyond it
(packed, each at its alignment), a rebuilt ``.shstrtab`` and the section
header table.  Section indexes in ``sh_link``/``sh_info`` and ``e_shstrndx``
are renumbered.  A file without section headers keeps only what its
segments cover.
"""

from __future__ import annotations

from typing import NamedTuple

from ._elf import (
    SHF_ALLOC,
    SHF_INFO_LINK,
    SHN_LORESERVE,
    SHN_XINDEX,
    SHT_NOBITS,
    SHT_REL,
    SHT_RELA,
    SHT_STRTAB,
    SHT_SYMTAB,
)
from .elflayout import Layout, Shdr, layout
from .errors import ElfStripError
from .patch import ElfPatchError, _Image

_DEBUG_PREFIXES = (b".debug", b".zdebug", b".gnu.debuglto_", b".line", b".stab",
                   b".gnu.linkonce.wi.")


class _Section(NamedTuple):
    """One section header (the ELF field order) and its name."""
    name: bytes
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    addralign: int
    entsize: int


def strip_elf(data: bytes | bytearray | memoryview) -> bytes:
    """Return ``data`` stripped like ``strip -s``; refuse what is not a linked ELF file."""
    data = bytes(data)
    try:
        img = _Image(data)
    except ElfPatchError as e:
        raise ElfStripError(f"cannot strip: {_reason(e)}") from None
    lay = layout(img.is64, img.le)
    end = max([lay.ehdr.size, img.phoff + img.phnum * lay.phdr.size]
              + [s.offset + s.filesz for s in img.segs])
    if not img.sections:
        return data[:end]
    sections = _named_sections(img, lay)
    keep = _kept(sections)
    for i in keep:
        s = sections[i]
        if s.flags & SHF_ALLOC and s.type != SHT_NOBITS:
            end = max(end, s.offset + s.size)
    return _rebuild(img, lay, sections, keep, end)


def _reason(e: ElfPatchError) -> str:
    text = str(e)
    if "ELF type" in text or "no program headers" in text or "no PT_LOAD" in text:
        return "not a linked program or library (an object file?): it has no program headers"
    return text


def _named_sections(img: _Image, lay: Layout) -> list[_Section]:
    """The section headers with their names read from the section name table."""
    raw = [Shdr._make(sh) for sh in img.sections]
    shstrndx = lay.read_ehdr(img.data).e_shstrndx
    if shstrndx == SHN_XINDEX:
        shstrndx = raw[0].sh_link
    names = b""
    if 0 < shstrndx < len(raw):
        st = raw[shstrndx]
        img._check(st.sh_offset, st.sh_size, "section name table")
        names = img.data[st.sh_offset:st.sh_offset + st.sh_size]
    out = []
    for sh in raw:
        start = sh.sh_name
        stop = names.find(b"\0", start) if start < len(names) else -1
        name = names[start:stop] if stop >= 0 else b""
        if sh.sh_type != SHT_NOBITS:
            img._check(sh.sh_offset, sh.sh_size, f"section {name.decode('latin-1')!r}")
        out.append(_Section(name, *sh[1:]))
    return out


def _kept(sections: list[_Section]) -> list[int]:
    """Indexes of the sections ``strip -s`` keeps, the null section first."""
    gone = set()
    for i, s in enumerate(sections):
        if i == 0:
            continue
        alloc = s.flags & SHF_ALLOC
        if s.type == SHT_SYMTAB or (not alloc and s.name.startswith(_DEBUG_PREFIXES)):
            gone.add(i)
    for i in list(gone):                 # the symbol table's own string table
        link = sections[i].link
        if sections[i].type == SHT_SYMTAB and 0 < link < len(sections) \
                and not sections[link].flags & SHF_ALLOC and sections[link].type == SHT_STRTAB:
            gone.add(link)
    changed = True
    while changed:                       # relocations for or through what is gone
        changed = False
        for i, s in enumerate(sections):
            if i and i not in gone and s.type in (SHT_REL, SHT_RELA) \
                    and not s.flags & SHF_ALLOC and (s.info in gone or s.link in gone):
                gone.add(i)
                changed = True
    return [i for i in range(len(sections)) if i not in gone]


def _rebuild(img: _Image, lay: Layout, sections: list[_Section], keep: list[int],
             end: int) -> bytes:
    """The file up to ``end``, the kept sections after it, a new name table and headers."""
    shstrndx_old = lay.read_ehdr(img.data).e_shstrndx
    if shstrndx_old == SHN_XINDEX:
        shstrndx_old = sections[0].link
    new_index = {old: new for new, old in enumerate(keep)}
    names = bytearray(b"\0")
    name_off = {}
    for i in keep:
        n = sections[i].name
        if i and n not in name_off:
            name_off[n] = len(names)
            names += n + b"\0"
    out = bytearray(img.data[:end])
    headers = []
    for i in keep:
        s = sections[i]
        offset = s.offset
        if i == shstrndx_old:
            offset = _place(out, bytes(names), 1)
            s = s._replace(size=len(names))
        elif i and s.type != SHT_NOBITS and not s.flags & SHF_ALLOC \
                and s.offset + s.size > end:
            offset = _place(out, img.data[s.offset:s.offset + s.size], s.addralign)
        elif s.type == SHT_NOBITS and s.offset > end:
            offset = end
        link = new_index.get(s.link, 0)
        info = s.info
        if s.type in (SHT_REL, SHT_RELA) or s.flags & SHF_INFO_LINK:
            info = new_index.get(s.info, 0)
        headers.append([name_off.get(s.name, 0) if i else 0, s.type, s.flags, s.addr,
                        offset, s.size, link, info, s.addralign, s.entsize])
    count = len(headers)
    shstrndx = new_index.get(shstrndx_old, 0)
    if count >= SHN_LORESERVE:
        headers[0][5] = count
    if shstrndx >= SHN_LORESERVE:
        headers[0][6] = shstrndx
    shoff = _place(out, b"".join(lay.shdr.pack(*h) for h in headers), lay.word.size)
    _set_header(lay, out, shoff, 0 if count >= SHN_LORESERVE else count,
                SHN_XINDEX if shstrndx >= SHN_LORESERVE else shstrndx)
    return bytes(out)


def _place(out: bytearray, blob: bytes, align: int) -> int:
    """Append ``blob`` at the next multiple of ``align``; its offset."""
    align = max(align, 1)
    pad = -len(out) % align
    out += b"\0" * pad
    offset = len(out)
    out += blob
    return offset


def _set_header(lay: Layout, out: bytearray, shoff: int, shnum: int, shstrndx: int) -> None:
    """Point the ELF header at the new section header table."""
    ehdr = lay.read_ehdr(out)._replace(e_shoff=shoff, e_shnum=shnum, e_shstrndx=shstrndx)
    lay.ehdr.pack_into(out, 0, *ehdr)
