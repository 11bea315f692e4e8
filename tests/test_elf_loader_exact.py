"""fastelf never reads a shared object more permissively than glibc's loader.

Each case starts from a real gcc-built shared object and edits a few bytes,
found with readelf (the oracle for where each field lies), so that the file's
own tables disagree: a vn_cnt or DT_VERNEEDNUM that hides a version need, a
second PT_DYNAMIC, a PT_DYNAMIC whose p_offset is not where p_vaddr maps, a
DT_HASH nchain below symbols that relocations name.  For each one the test
asserts

* what the host's glibc loader does with the file (``ctypes.CDLL`` in a
  subprocess, which dlopens it with RTLD_NOW): the need a crafted table hides
  still stops it (a version renamed to GLIBC_9.99, which no glibc has, or a
  symbol renamed to one libc lacks);
* that ``fastelf.parse_elf`` reports that version need or import, the same
  whole and by prefixes (the ElfNeedMore protocol that streams zip members);
* that auditing the file in a wheel gives no manylinux tag when the loader
  refuses it (never more permissive than the loader).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import elfbuild as eb
import pytest
from wheelbuild import build_wheel

import fastelf
from fastelf._elf import ElfError, ElfNeedMore
from fastelf.audit import audit_wheel
from fastelf.patch import ElfPatchError, patch_elf

READELF = shutil.which("readelf")
HOST_GLIBC_X86_64 = (platform.machine() == "x86_64" and sys.platform == "linux"
                     and os.path.exists("/lib64/ld-linux-x86-64.so.2"))
pytestmark = [
    pytest.mark.skipif(READELF is None, reason="readelf (binutils) not installed"),
    pytest.mark.skipif(not HOST_GLIBC_X86_64, reason="needs an x86_64 glibc host loader"),
]

MEMBER = "victim/_victim.cpython-311-x86_64-linux-gnu.so"
DT_NULL, DT_DEBUG = 0, 21
DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFE, 0x6FFFFFFF
PT_DYNAMIC, PT_NOTE = 2, 4

_VICTIM_C = r"""
#include <math.h>
#include <stdio.h>
#include <string.h>
double victim_cbrt(double x) { return cbrt(x); }
void *victim_copy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
int victim_puts(const char *s) { return puts(s); }
"""


# ------------------------------------------------------------- readelf: where fields lie

def _readelf(*args) -> str:
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run([READELF, "-W", *map(str, args)], capture_output=True, text=True,
                          check=True, env=env).stdout


class Need(NamedTuple):
    """One vernaux entry as readelf -V lists it (offsets are file offsets)."""
    entry: int      # its verneed entry
    position: int   # which verneed entry of the chain (0 first)
    aux: int        # the vernaux entry itself
    aux_position: int
    file: str
    name: str


def version_needs(path) -> list[Need]:
    out = _readelf("-V", path)
    section = re.search(r"Version needs section .*?\n\s*Addr: \S+\s+Offset: (0x[0-9a-f]+)", out)
    assert section, out
    base = int(section.group(1), 16)
    needs, entry, position, aux_position, file = [], None, -1, 0, None
    for line in out[section.end():].splitlines():
        m = re.match(r"\s*(0x[0-9a-f]+|0+): Version: \d+\s+File: (\S+)", line)
        if m:
            entry, file = base + int(m.group(1), 16), m.group(2)
            position, aux_position = position + 1, 0
            continue
        m = re.match(r"\s*(0x[0-9a-f]+|0+):\s+Name: (\S+)", line)
        if m:
            needs.append(Need(entry, position, base + int(m.group(1), 16), aux_position,
                              file, m.group(2)))
            aux_position += 1
    return needs


class Phdr(NamedTuple):
    index: int
    type: str
    offset: int
    vaddr: int
    filesz: int
    memsz: int


def program_headers(path) -> tuple[int, list[Phdr]]:
    """(file offset of the program header table, its entries) from readelf -l."""
    out = _readelf("-l", path)
    phoff = int(re.search(r"starting at offset (\d+)", out).group(1))
    rows = re.findall(r"^\s+([A-Z_]+)\s+(0x[0-9a-f]+) (0x[0-9a-f]+) 0x[0-9a-f]+ "
                      r"(0x[0-9a-f]+) (0x[0-9a-f]+)", out, re.MULTILINE)
    return phoff, [Phdr(i, t, *(int(x, 16) for x in rest)) for i, (t, *rest) in enumerate(rows)]


def dynamic_offset(path) -> int:
    return int(re.search(r"Dynamic section at offset (0x[0-9a-f]+)", _readelf("-d", path))
               .group(1), 16)


def section_offset(path, name: str) -> int:
    for line in _readelf("-S", path).splitlines():
        f = line.replace("[ ", "[").split()
        if len(f) > 4 and f[1] == name:
            return int(f[4], 16)
    raise AssertionError(f"{path}: no section {name}")


def dynsym(path) -> list[tuple[int, str]]:
    """(index, name@version) of each dynamic symbol, from readelf --dyn-syms."""
    rows = re.findall(r"^\s+(\d+): [0-9a-f]+\s+\d+ \w+\s+\w+\s+\w+\s+\w+ ?(\S*)",
                      _readelf("--dyn-syms", path), re.MULTILINE)
    return [(int(i), n) for i, n in rows]


# ------------------------------------------------------------- editing bytes

def elf_hash(name: bytes) -> int:
    """The SysV ELF hash (vna_hash holds it; glibc compares it before the name)."""
    h = 0
    for ch in name:
        h = ((h << 4) + ch) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def rename_need(data: bytearray, path, old: str, new: str) -> Need:
    """Rename version need ``old`` to ``new`` (same length) in .dynstr and fix its vna_hash."""
    assert len(old) == len(new)
    need = next(n for n in version_needs(path) if n.name == old)
    vna_name, = struct.unpack_from("<I", data, need.aux + 8)
    at = section_offset(path, ".dynstr") + vna_name
    assert data[at:at + len(old) + 1] == old.encode() + b"\0"
    data[at:at + len(old)] = new.encode()
    struct.pack_into("<I", data, need.aux, elf_hash(new.encode()))
    return need


def dynamic_entries(data, offset: int) -> list[tuple[int, int]]:
    out = []
    while True:
        tag, val = struct.unpack_from("<qQ", data, offset + 16 * len(out))
        out.append((tag, val))
        if tag == DT_NULL:
            return out


def set_dynamic(data: bytearray, offset: int, tag: int, value: int):
    for k, (t, _v) in enumerate(dynamic_entries(data, offset)):
        if t == tag:
            struct.pack_into("<Q", data, offset + 16 * k + 8, value)
            return
    raise AssertionError(f"no dynamic tag {tag:#x}")


def set_phdr(data: bytearray, phoff: int, index: int, **fields):
    """Set fields of ELF64 program header ``index`` (type, flags, offset, vaddr, ...)."""
    layout = {"type": (0, "I"), "flags": (4, "I"), "offset": (8, "Q"), "vaddr": (16, "Q"),
              "paddr": (24, "Q"), "filesz": (32, "Q"), "memsz": (40, "Q"), "align": (48, "Q")}
    for name, value in fields.items():
        at, fmt = layout[name]
        struct.pack_into("<" + fmt, data, phoff + 56 * index + at, value)


def spare_after(phdrs: list[Phdr], index: int) -> Phdr:
    """A program header after ``index`` that loading does without (to reuse)."""
    return next(p for p in phdrs if p.index > index
                and p.type in ("NOTE", "GNU_EH_FRAME", "GNU_RELRO"))


def append_decoy_dynamic(data: bytearray, path, size: int) -> int:
    """Append a copy of the dynamic section without DT_VERNEED/DT_VERNEEDNUM
    (turned into DT_DEBUG), padded with DT_NULL to ``size`` bytes: a table
    that asks for no symbol versions at all.  Returns its file offset."""
    entries = dynamic_entries(data, dynamic_offset(path))
    while len(data) % 8:
        data.append(0)
    at = len(data)
    for tag, val in entries:
        if tag in (DT_VERNEED, DT_VERNEEDNUM):
            tag, val = DT_DEBUG, 0
        data += struct.pack("<qQ", tag, val)
    data += bytes(at + size - len(data))
    return at


# ------------------------------------------------------------- the oracles

def _oracle_env() -> dict:
    """The environment for a loader oracle: without LD_PRELOAD (tests/sanitize.sh
    preloads glibc's ASan runtime, which musl's loader cannot load)."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def dlopen(path) -> str | None:
    """None when the host's loader loads ``path`` (ctypes: dlopen with RTLD_NOW); else its error."""
    code = ("import ctypes, sys\n"
            "try:\n    ctypes.CDLL(sys.argv[1])\n"
            "except OSError as e:\n    print(e)\n    sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, check=False, env=_oracle_env())
    assert proc.returncode in (0, 3), proc.stderr     # a crash is not an answer
    return None if proc.returncode == 0 else proc.stdout.strip()


def parse_by_prefixes(data: bytes):
    """parse_elf fed growing prefixes, as a streamed zip member is (ElfNeedMore protocol)."""
    have = 64
    while True:
        try:
            return fastelf.parse_elf(data[:have], len(data))
        except ElfNeedMore as more:
            assert more.needed > have, "asked for no more than it had"
            have = more.needed


def facts(elf):
    return (elf.needed, elf.version_needs, elf.imports, elf.symbol_count, elf.isa_needed)


def parse_both(data: bytes):
    """parse_elf on the whole file; the prefix protocol must agree with it."""
    whole = fastelf.parse_elf(data)
    assert facts(parse_by_prefixes(data)) == facts(whole)
    return whole


def manylinux_tags(tmp_path, data: bytes) -> list:
    """The manylinux tags an audit of a wheel holding ``data`` grants."""
    wheel = build_wheel(tmp_path / "wheels", {MEMBER: data}, name="victim")
    result = audit_wheel(wheel)
    assert result.error is None and result.elfs, result.error
    return [t for t in result.tags if t.startswith("manylinux")]


def write(tmp_path, name: str, data) -> Path:
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


# ------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def victim(tmp_path_factory) -> Path:
    """libvictim.so: needs libm.so.6 (GLIBC_2.2.5) and libc.so.6 (GLIBC_2.14, GLIBC_2.2.5)."""
    d = tmp_path_factory.mktemp("loader-exact")
    return eb.need(eb.compile_c(d, "libvictim.so", _VICTIM_C, libs=["-lm"]), "gcc")


@pytest.fixture(scope="module")
def victim_sysv(tmp_path_factory) -> Path:
    """The same with only a DT_HASH table (--hash-style=sysv): nchain counts the symbols."""
    d = tmp_path_factory.mktemp("loader-exact-sysv")
    return eb.need(eb.compile_c(d, "libvictim-sysv.so", _VICTIM_C, libs=["-lm"],
                                args=["-Wl,--hash-style=sysv"]), "gcc")


@pytest.fixture()
def too_new(victim, tmp_path) -> tuple[bytearray, Need]:
    """libvictim.so with its GLIBC_2.14 need renamed GLIBC_9.99 (the bytes, the need)."""
    data = bytearray(victim.read_bytes())
    need = rename_need(data, victim, "GLIBC_2.14", "GLIBC_9.99")
    assert need.file == "libc.so.6"
    return data, need


# ------------------------------------------------------------- the cases

def test_oracles_on_the_unedited_and_renamed_library(victim, tmp_path, too_new):
    """The baseline: the loader takes the real file and refuses GLIBC_9.99; so does fastelf."""
    assert dlopen(victim) is None
    elf = parse_both(victim.read_bytes())
    assert "GLIBC_2.14" in elf.version_needs["libc.so.6"]
    assert "manylinux_2_17_x86_64" in manylinux_tags(tmp_path, victim.read_bytes())

    data, _need = too_new
    err = dlopen(write(tmp_path, "renamed.so", data))
    assert err and "GLIBC_9.99" in err and "not found" in err
    assert "GLIBC_9.99" in parse_both(bytes(data)).version_needs["libc.so.6"]
    assert manylinux_tags(tmp_path, bytes(data)) == []


def test_vn_cnt_cannot_hide_a_version_need(tmp_path, too_new):
    """glibc follows vna_next and ignores vn_cnt: a vn_cnt below the need's place hides nothing."""
    data, need = too_new
    struct.pack_into("<H", data, need.entry + 2, need.aux_position)   # vn_cnt
    path = write(tmp_path, "vn_cnt.so", data)
    assert f"Cnt: {need.aux_position}" in _readelf("-V", path)      # readelf trusts it
    err = dlopen(path)
    assert err and "GLIBC_9.99" in err
    assert "GLIBC_9.99" in parse_both(bytes(data)).version_needs["libc.so.6"]
    assert manylinux_tags(tmp_path, bytes(data)) == []


def test_dt_verneednum_cannot_hide_a_version_need(victim, tmp_path, too_new):
    """glibc follows vn_next and ignores DT_VERNEEDNUM."""
    data, need = too_new
    set_dynamic(data, dynamic_offset(victim), DT_VERNEEDNUM, need.position)
    path = write(tmp_path, "verneednum.so", data)
    err = dlopen(path)
    assert err and "GLIBC_9.99" in err
    elf = parse_both(bytes(data))
    assert "GLIBC_9.99" in elf.version_needs["libc.so.6"]
    assert set(elf.version_needs) == {"libc.so.6", "libm.so.6"}
    assert manylinux_tags(tmp_path, bytes(data)) == []


def test_the_last_pt_dynamic_is_the_one_loaded(victim, tmp_path, too_new):
    """Two PT_DYNAMIC: a decoy first (asking for no versions), the real one last.

    glibc's _dl_map_object_from_fd and musl's map_library keep the last one.
    """
    data, _need = too_new
    phoff, phdrs = program_headers(victim)
    real = next(p for p in phdrs if p.type == "DYNAMIC")
    spare = spare_after(phdrs, real.index)
    decoy = append_decoy_dynamic(data, victim, real.filesz)
    set_phdr(data, phoff, real.index, offset=decoy, vaddr=decoy, paddr=decoy)
    set_phdr(data, phoff, spare.index, type=PT_DYNAMIC, flags=6, offset=real.offset,
             vaddr=real.vaddr, paddr=real.vaddr, filesz=real.filesz, memsz=real.memsz, align=8)
    path = write(tmp_path, "two-dynamic.so", data)
    with pytest.raises(ElfPatchError, match="inconsistent ELF"):    # repair won't patch a decoy
        patch_elf(bytes(data), set_rpath="$ORIGIN")
    assert [p.type for p in program_headers(path)[1]].count("DYNAMIC") == 2
    err = dlopen(path)
    assert err and "GLIBC_9.99" in err
    elf = parse_both(bytes(data))
    assert "GLIBC_9.99" in elf.version_needs["libc.so.6"]
    assert manylinux_tags(tmp_path, bytes(data)) == []


def test_pt_dynamic_is_read_at_its_address_not_its_offset(victim, tmp_path, too_new):
    """p_offset points at a decoy table; the loader reads the one mapped at p_vaddr."""
    data, _need = too_new
    phoff, phdrs = program_headers(victim)
    real = next(p for p in phdrs if p.type == "DYNAMIC")
    decoy = append_decoy_dynamic(data, victim, real.filesz)
    set_phdr(data, phoff, real.index, offset=decoy)
    path = write(tmp_path, "dynamic-offset.so", data)
    with pytest.raises(ElfPatchError, match="inconsistent ELF"):    # repair won't patch a decoy
        patch_elf(bytes(data), set_rpath="$ORIGIN")
    err = dlopen(path)
    assert err and "GLIBC_9.99" in err
    elf = parse_both(bytes(data))
    assert "GLIBC_9.99" in elf.version_needs["libc.so.6"]
    assert manylinux_tags(tmp_path, bytes(data)) == []


def _shrink_nchain(path, data: bytearray, symbol: str) -> int:
    """Set DT_HASH's nchain to the index of ``symbol``: it and what follows fall outside."""
    index = next(i for i, n in dynsym(path) if n.split("@")[0] == symbol)
    struct.pack_into("<I", data, section_offset(path, ".hash") + 4, index)
    return index


def test_import_beyond_dt_hash_nchain_is_read(victim_sysv, tmp_path):
    """A JUMP_SLOT relocation names memcpy@GLIBC_2.14 by its index, past nchain.

    The loader looks it up all the same: renamed to memcpz (which libc lacks)
    the library does not load.  fastelf reports the import with its version,
    and the audit lists memcpy as the symbol that needs GLIBC_2.14.
    """
    assert "memcpy" in _readelf("-r", victim_sysv)
    data = bytearray(victim_sysv.read_bytes())
    index = _shrink_nchain(victim_sysv, data, "memcpy")
    assert dlopen(write(tmp_path, "nchain.so", data)) is None

    elf = parse_both(bytes(data))
    assert elf.symbol_count > index
    assert ("memcpy", "GLIBC_2.14", "libc.so.6") in \
        [(i.name, i.version, i.library) for i in elf.imports]

    wheel = build_wheel(tmp_path / "wheels", {MEMBER: bytes(data)}, name="victim")
    result = audit_wheel(wheel)
    old = next(c for c in result.policies if c.tag == "manylinux_2_5_x86_64")
    assert not old.satisfied
    assert old.symbol_versions["GLIBC_2.14"] == {MEMBER: ["memcpy"]}

    # the loader resolves the symbol past nchain: a name libc lacks stops it
    name = struct.unpack_from("<I", data, section_offset(victim_sysv, ".dynsym") + 24 * index)[0]
    at = section_offset(victim_sysv, ".dynstr") + name
    assert data[at:at + 7] == b"memcpy\0"
    data[at:at + 6] = b"memcpz"
    err = dlopen(write(tmp_path, "nchain-memcpz.so", data))
    assert err and "memcpz" in err
    assert "memcpz" in [i.name for i in parse_both(bytes(data)).imports]


def test_repeated_table_tag_with_another_value_is_refused(victim):
    """glibc keeps the last DT_VERNEED, readelf and patchelf the first: refused as ambiguous."""
    data = bytearray(victim.read_bytes())
    dyn = dynamic_offset(victim)
    entries = dynamic_entries(data, dyn)
    verneed = dict(entries)[DT_VERNEED]
    # the linker leaves spare DT_NULL entries at the end of the section
    phdrs = program_headers(victim)[1]
    real = next(p for p in phdrs if p.type == "DYNAMIC")
    assert real.filesz >= 16 * (len(entries) + 1), "no spare dynamic entry"
    struct.pack_into("<qQ", data, dyn + 16 * (len(entries) - 1), DT_VERNEED, verneed + 16)
    with pytest.raises(ElfError, match="inconsistent ELF: two DT_VERNEED entries differ"):
        fastelf.parse_elf(bytes(data))
    # the same value twice is no ambiguity
    struct.pack_into("<qQ", data, dyn + 16 * (len(entries) - 1), DT_VERNEED, verneed)
    assert "GLIBC_2.14" in parse_both(bytes(data)).version_needs["libc.so.6"]


def test_dynamic_entries_past_p_filesz_are_read(victim, tmp_path, too_new):
    """The loaders read dynamic entries up to DT_NULL; p_filesz does not stop them.

    p_filesz is cut to the entries before DT_VERNEED, so a reader that stops
    at p_filesz sees no version needs; the loader still checks them.
    """
    data, _need = too_new
    phoff, phdrs = program_headers(victim)
    real = next(p for p in phdrs if p.type == "DYNAMIC")
    entries = dynamic_entries(data, real.offset)
    first = next(k for k, (t, _v) in enumerate(entries) if t in (DT_VERNEED, DT_VERNEEDNUM))
    set_phdr(data, phoff, real.index, filesz=16 * first, memsz=16 * first)
    path = write(tmp_path, "short-dynamic.so", data)
    err = dlopen(path)
    assert err and "GLIBC_9.99" in err
    assert "GLIBC_9.99" in parse_both(bytes(data)).version_needs["libc.so.6"]
    assert manylinux_tags(tmp_path, bytes(data)) == []


def test_isa_note_is_read_at_its_address_not_its_offset(tmp_path):
    """glibc reads PT_GNU_PROPERTY/PT_NOTE at p_vaddr (_dl_process_pt_gnu_property):
    a decoy note at p_offset saying "baseline" cannot hide an x86-64-v4 need."""
    lib = eb.need(eb.compile_c(tmp_path, "libisa4.so", _VICTIM_C, libs=["-lm"],
                               args=["-Wl,-z,x86-64-v4"]), "gcc")
    assert "x86 ISA needed: x86-64-v4" in _readelf("-n", lib)
    data = bytearray(lib.read_bytes())
    phoff, phdrs = program_headers(lib)
    prop = next(p for p in phdrs if p.type == "GNU_PROPERTY")
    note = bytes(data[prop.offset:prop.offset + prop.filesz])
    # namesz, descsz, type, "GNU\0", then the property: type, datasz, value
    assert note[12:16] == b"GNU\0" and struct.unpack_from("<II", note, 16) == (0xC0008002, 4)
    decoy = bytearray(note)
    struct.pack_into("<I", decoy, 24, 1)          # x86-64 baseline
    while len(data) % 8:
        data.append(0)
    at = len(data)
    data += decoy
    for p in phdrs:
        if p.offset == prop.offset and p.type in ("NOTE", "GNU_PROPERTY"):
            set_phdr(data, phoff, p.index, offset=at)
    path = write(tmp_path, "isa-decoy.so", data)
    # the loader treats both files alike (both load on a v4 CPU, both fail on others)
    assert (dlopen(lib) is None) == (dlopen(path) is None)
    assert fastelf.parse_elf(lib.read_bytes()).x86_isa_level == 4
    assert parse_both(bytes(data)).x86_isa_level == 4

    wheel = build_wheel(tmp_path / "wheels", {MEMBER: bytes(data)}, name="victim")
    assert audit_wheel(wheel).policies[0].isa == {MEMBER: 4}


def test_later_pt_load_zero_filling_the_dynamic_section_is_refused(victim):
    """The loaders map PT_LOADs in order, each over the ones before, and zero-fill
    each one's p_memsz past p_filesz: a later PT_LOAD whose zero-filled tail covers
    the dynamic section blanks what the file holds there, so the file is refused."""
    data = bytearray(victim.read_bytes())
    phoff, phdrs = program_headers(victim)
    real = next(p for p in phdrs if p.type == "DYNAMIC")
    spare = spare_after(phdrs, real.index)
    page = real.vaddr & ~0xFFF
    set_phdr(data, phoff, spare.index, type=1, flags=6, offset=real.offset & ~0xFFF,
             vaddr=page, paddr=page, filesz=0, memsz=0x1000, align=0x1000)
    with pytest.raises(ElfError, match="inconsistent ELF: two PT_LOAD segments map different"):
        fastelf.parse_elf(bytes(data))


# ------------------------------------------------------------- musl's loader

_DLOPEN_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (!dlopen(argv[1], RTLD_NOW)) { printf("%s\n", dlerror()); return 3; }
    return 0;
}
"""
_MUSL_VICTIM_C = r"""
#include <string.h>
extern int stub(void);
void *victim_copy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
int victim_stub(void) { return stub(); }
"""
MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"


class MuslKit(NamedTuple):
    dlopen: Path      # a musl program that dlopens argv[1] with RTLD_NOW
    stubdir: Path     # holds libstub.so, which the victim needs
    victim: Path      # NEEDED libstub.so and libc.so; DT_HASH only (--hash-style=sysv)


@pytest.fixture(scope="module")
def musl(tmp_path_factory) -> MuslKit:
    if not os.path.exists(MUSL_LOADER):
        pytest.skip("musl's loader is not installed")
    d = tmp_path_factory.mktemp("loader-exact-musl")
    exe = eb.need(eb.compile_c(d, "dlopen", _DLOPEN_C, cc="musl", shared=False), "musl-gcc")
    stub = eb.compile_c(d / "stub", "libstub.so", "int stub(void) { return 1; }\n", cc="musl")
    victim = eb.compile_c(d, "libmuslvictim.so", _MUSL_VICTIM_C, cc="musl",
                          args=["-Wl,--hash-style=sysv"], libs=[f"-L{stub.parent}", "-lstub"])
    return MuslKit(exe, stub.parent, victim)


def musl_dlopen(kit: MuslKit, path, with_stub: bool = True) -> str | None:
    """None when musl's loader loads ``path``; else its error."""
    env = dict(_oracle_env(), LD_LIBRARY_PATH=str(kit.stubdir) if with_stub else "")
    proc = subprocess.run([str(kit.dlopen), str(path)], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert proc.returncode in (0, 3), proc.stderr
    return None if proc.returncode == 0 else proc.stdout.strip()


def test_musl_reads_the_last_pt_dynamic_at_its_address(musl, tmp_path):
    """musl's map_library keeps the last PT_DYNAMIC and reads it at p_vaddr: a
    decoy table without DT_NEEDED libstub.so (first, and at p_offset) hides nothing."""
    assert musl_dlopen(musl, musl.victim) is None
    assert "libstub.so" in musl_dlopen(musl, musl.victim, with_stub=False)
    for variant in ("two-dynamic", "offset"):
        data = bytearray(musl.victim.read_bytes())
        phoff, phdrs = program_headers(musl.victim)
        real = next(p for p in phdrs if p.type == "DYNAMIC")
        at = dynamic_offset(musl.victim)
        entries = dynamic_entries(data, at)
        k = entries.index((1, next(v for t, v in entries if t == 1)))   # the first DT_NEEDED
        decoy = append_decoy_dynamic(data, musl.victim, real.filesz)
        struct.pack_into("<qQ", data, decoy + 16 * k, DT_DEBUG, 0)       # drop libstub.so
        if variant == "offset":
            set_phdr(data, phoff, real.index, offset=decoy)
        else:
            spare = spare_after(phdrs, real.index)
            set_phdr(data, phoff, real.index, offset=decoy, vaddr=decoy, paddr=decoy)
            set_phdr(data, phoff, spare.index, type=PT_DYNAMIC, flags=6, offset=real.offset,
                     vaddr=real.vaddr, paddr=real.vaddr, filesz=real.filesz,
                     memsz=real.memsz, align=8)
        path = write(tmp_path, f"musl-{variant}.so", data)
        err = musl_dlopen(musl, path, with_stub=False)
        assert err and "libstub.so" in err, variant
        assert musl_dlopen(musl, path) is None, variant
        assert "libstub.so" in parse_both(bytes(data)).needed, variant


def test_musl_resolves_symbols_past_dt_hash_nchain(musl, tmp_path):
    """musl's do_relocs looks up the symbol a relocation names by index, past nchain."""
    data = bytearray(musl.victim.read_bytes())
    index = _shrink_nchain(musl.victim, data, "memcpy")
    assert musl_dlopen(musl, write(tmp_path, "musl-nchain.so", data)) is None
    elf = parse_both(bytes(data))
    assert elf.symbol_count > index
    assert {"memcpy", "stub"} <= {i.name for i in elf.imports}

    name = struct.unpack_from("<I", data, section_offset(musl.victim, ".dynsym") + 24 * index)[0]
    at = section_offset(musl.victim, ".dynstr") + name
    assert data[at:at + 7] == b"memcpy\0"
    data[at:at + 6] = b"memcpz"
    err = musl_dlopen(musl, write(tmp_path, "musl-nchain-memcpz.so", data))
    assert err and "memcpz" in err
    assert "memcpz" in {i.name for i in parse_both(bytes(data)).imports}
