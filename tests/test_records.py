"""The core's vocabulary: named records, ELF constants and struct layouts.

Oracles: glibc's ``<elf.h>`` for every constant the core exports; ``readelf``
for the fields of the Segment, Import and Export records and of the ELF header
as ``fastelf.elflayout`` unpacks it (native, 32-bit and big-endian files built
with the cross compilers); plain tuples, ``json`` and ``pickle`` for the
records' tuple compatibility.
"""

from __future__ import annotations

import inspect
import json
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elfbuild import compile_c, need

from fastelf import _elf
from fastelf._elf import Export, Import, Segment, parse
from fastelf.audit import elf_info
from fastelf.cache import facts_from_json, facts_to_json
from fastelf.elflayout import PHDR32_FIELDS, PHDR64_FIELDS, layout
from fastelf.wheel import Limits

ELF_H = Path("/usr/include/elf.h")
needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils not installed")

# Named in binutils' include/elf/common.h, not in glibc's <elf.h>.
NOT_IN_ELF_H = {"DT_USED", "VERSYM_HIDDEN"}

LIB_C = """
#include <string.h>
__attribute__((weak)) extern int maybe_there(void);
int counter = 3;
int visible(const char *s) { return (int)strlen(s) + counter + (maybe_there ? maybe_there() : 0); }
void *copy(void *d, const void *s, unsigned long n) { return memcpy(d, s, n); }
"""

BIND = {"GLOBAL": _elf.STB_GLOBAL, "WEAK": _elf.STB_WEAK, "LOCAL": _elf.STB_LOCAL}
TYPE = {"NOTYPE": _elf.STT_NOTYPE, "OBJECT": _elf.STT_OBJECT, "FUNC": _elf.STT_FUNC}


def readelf(path: Path, *args: str) -> str:
    out = subprocess.run(["readelf", "-W", *args, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr, out.stderr
    return out.stdout


def exported_constants() -> dict:
    return {n: v for n, v in vars(_elf).items()
            if re.fullmatch(r"(ELF|EV|ET|EM|EF|PT|PF|PN|SHT|SHF|SHN|DT|DF|STB|STT|VER|VERSYM|NT)"
                            r"_?[A-Za-z0-9_]+", n) and isinstance(v, int)}


@pytest.mark.skipif(not ELF_H.exists(), reason="glibc's <elf.h> not installed")
def test_constants_are_the_elf_h_values():
    """Every ELF constant the core exports has <elf.h>'s value under the same name."""
    defines = {m.group(1): int(m.group(2), 0) << int(m.group(3) or 0) for m in re.finditer(
        r"^#define\s+([A-Z][A-Za-z0-9_]*)\s+\(?(0[xX][0-9a-fA-F]+|\d+)(?: << (\d+)\))?",
        ELF_H.read_text(), re.MULTILINE)}
    ours = exported_constants()
    assert len(ours) > 90
    missing = set(ours) - set(defines)
    assert missing == NOT_IN_ELF_H
    assert {n: v for n, v in ours.items() if n in defines} == \
        {n: defines[n] for n in ours if n in defines}
    # the one byte-string constant: <elf.h>'s ELFMAG is "\177ELF"
    assert re.search(r'^#define\s+ELFMAG\s+"\\177ELF"', ELF_H.read_text(), re.MULTILINE)
    assert _elf.ELFMAG == b"\177ELF"


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    return need(compile_c(tmp_path_factory.mktemp("records"), "librec.so", LIB_C))


@needs_readelf
def test_segments_are_readelf_program_headers(lib):
    """Segment fields, by name, equal readelf -l's columns for every program header."""
    rows = [ln.split() for ln in readelf(lib, "-l").splitlines()
            if re.match(r"\s+[A-Z_]+\s+0x[0-9a-f]+\s+0x", ln)]
    segs = parse(lib.read_bytes()).segments
    assert len(segs) == len(rows) > 3
    for s, row in zip(segs, rows):
        assert isinstance(s, Segment)
        flags = "".join(row[6:-1])
        assert (s.p_offset, s.p_vaddr, s.p_filesz, s.p_memsz, s.p_align) == \
            tuple(int(x, 16) for x in (row[1], row[2], row[4], row[5], row[-1]))
        assert (bool(s.p_flags & _elf.PF_R), bool(s.p_flags & _elf.PF_W),
                bool(s.p_flags & _elf.PF_X)) == ("R" in flags, "W" in flags, "E" in flags)
        if row[0] in ("LOAD", "DYNAMIC", "INTERP", "NOTE", "GNU_STACK", "GNU_PROPERTY"):
            assert s.p_type == getattr(_elf, "PT_" + row[0])


def dyn_syms(path: Path) -> list:
    """(name, version, binding, type, defined) of readelf --dyn-syms' non-local symbols."""
    out = []
    for ln in readelf(path, "--dyn-syms").splitlines():
        m = re.match(r"\s*\d+: [0-9a-f]+\s+\d+ (\w+)\s+(\w+)\s+\w+\s+(\w+) (\S+)", ln)
        if not m or m.group(2) == "LOCAL":
            continue
        name, _, ver = m.group(4).replace("@@", "@").partition("@")
        ver = re.sub(r" \(\d+\)$", "", ver) or None
        out.append((name, ver, BIND[m.group(2)], TYPE[m.group(1)], m.group(3) != "UND"))
    return out


@needs_readelf
def test_imports_and_exports_are_readelf_dynamic_symbols(lib):
    """Import and Export fields, by name, equal readelf --dyn-syms (versions from
    the version tables, the library from the version need that names it)."""
    elf = parse(lib.read_bytes(), exports=None)
    want = dyn_syms(lib)
    assert all(isinstance(i, Import) for i in elf.imports)
    assert all(isinstance(e, Export) for e in elf.exports)
    assert sorted((i.name, i.version, i.binding, i.type) for i in elf.imports) == \
        sorted(w[:4] for w in want if not w[4])
    assert sorted((e.name, e.version, e.binding, e.type) for e in elf.exports) == \
        sorted(w[:4] for w in want if w[4])
    for i in elf.imports:
        assert (i.library is None) == (i.version is None)
        if i.library is not None:
            assert i.version in elf.version_needs[i.library]
    names = {i.name: i for i in elf.imports}
    assert names["maybe_there"].binding == _elf.STB_WEAK
    assert names["memcpy"].library == "libc.so.6" and names["memcpy"].type == _elf.STT_FUNC


def test_records_are_tuples(lib):
    """Indexing, unpacking, slicing, equality and hashing as plain tuples; JSON
    writes them as lists and pickle brings back the same record type."""
    elf = parse(lib.read_bytes(), exports=None)
    for rec in [*elf.imports, *elf.exports, *elf.segments]:
        plain = tuple(rec)
        assert rec == plain and hash(rec) == hash(plain) and rec[1:] == plain[1:]
        assert [getattr(rec, f) for f in type(rec).__match_args__] == list(plain)
        assert json.dumps(rec) == json.dumps(list(plain))
        back = pickle.loads(pickle.dumps(rec))
        assert type(back) is type(rec) and back == rec
    name, version, library, binding, typ = elf.imports[0]
    assert (name, version, library, binding, typ) == elf.imports[0]
    assert Import(list(elf.imports[0])) == elf.imports[0]
    with pytest.raises(TypeError):
        Segment((1, 2, 3))


def test_cached_facts_round_trip_into_records(lib):
    """The cache's JSON facts come back as the same Import records the parser made."""
    info = elf_info("pkg/librec.so", parse(lib.read_bytes()))
    back = facts_from_json(facts_to_json(info), "pkg/librec.so")
    assert back == info and back.imports
    assert all(type(i) is Import for i in back.imports)
    assert [i.name for i in back.imports] == [i.name for i in info.imports]


def test_max_symbols_has_one_default():
    """The parser's default and the audit's Limits use the core's one number."""
    assert inspect.signature(parse).parameters["max_symbols"].default == \
        _elf.DEFAULT_MAX_SYMBOLS == Limits().max_symbols
    assert Limits.untrusted().max_symbols < Limits().max_symbols


@needs_readelf
@pytest.mark.parametrize("cc", ["gcc", "i686", "s390x"])
def test_layout_reads_the_header_readelf_reads(tmp_path, cc):
    """elflayout's Ehdr, by (class, byte order), has readelf -h's values and sizes."""
    path = need(compile_c(tmp_path, f"{cc}.so", LIB_C, cc), cc=cc)
    data = path.read_bytes()
    lay = layout(data[4] == _elf.ELFCLASS64, data[5] == _elf.ELFDATA2LSB)
    h = lay.read_ehdr(data)
    text = readelf(path, "-h")

    def field(label: str) -> int:
        m = re.search(rf"^\s*{label}:\s+(0x[0-9a-f]+|\d+)", text, re.MULTILINE)
        assert m, label
        return int(m.group(1), 0)

    assert (h.e_phoff, h.e_shoff, h.e_flags, h.e_phnum, h.e_shnum, h.e_shstrndx) == (
        field(r"Start of program headers"), field(r"Start of section headers"),
        field("Flags"), field("Number of program headers"),
        field("Number of section headers"), field("Section header string table index"))
    assert (lay.ehdr.size, lay.phdr.size, lay.shdr.size) == (
        field("Size of this header"), field("Size of program headers"),
        field("Size of section headers"))
    assert lay.little_endian == ("little endian" in text)
    # the offsets patch.py writes e_phoff and e_phnum at hold readelf's values
    assert lay.word.unpack_from(data, lay.phoff_at)[0] == field(r"Start of program headers")
    assert lay.u16.unpack_from(data, lay.phnum_at)[0] == field("Number of program headers")
    # Elf_Sym's size is .dynsym's entry size, as readelf -S gives it
    dynsym = re.search(r"\]\s+\.dynsym\s+DYNSYM(?:\s+\S+){3}\s+([0-9a-f]+)",
                       readelf(path, "-SW"))
    assert dynsym and int(dynsym.group(1), 16) == lay.sym.size
    names = PHDR64_FIELDS if lay.elf_class == _elf.ELFCLASS64 else PHDR32_FIELDS
    assert lay.phdr_fields == names
    for seg, raw in zip(parse(data).segments, lay.phdr.iter_unpack(
            data[h.e_phoff:h.e_phoff + h.e_phnum * lay.phdr.size])):
        fields = dict(zip(lay.phdr_fields, raw))
        assert tuple(fields[f] for f in Segment.__match_args__) == seg
