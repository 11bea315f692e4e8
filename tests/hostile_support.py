"""Shared pieces of the hostile-input tests (test_hostile.py, test_fuzz.py, fuzz_atheris.py).

* seed ELF files: small shared objects and executables committed under
  ``tests/corpus/seeds/`` (regenerate with ``python tests/hostile_support.py
  --make-seeds``; every compiler that is installed contributes one), plus a
  few small system libraries when they exist;
* ``make_wheel``: a deterministic wheel (zip) with a correct RECORD;
* field maps: where each ELF header / program header / dynamic entry /
  verneed / verdef / GNU hash field, and each zip EOCD / central-directory /
  local-header field lies in a file, so mutations can aim at them;
* ``mutate``: apply a list of mutation operations to bytes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from elfbuild import usable_cc

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
SEEDS = CORPUS / "seeds"

# Small system libraries used as extra seeds when present (they vary by host,
# so the fuzz tests never depend on them being there).
SYSTEM_SEEDS = ("/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libffi.so.8")

# ------------------------------------------------------------------ seeds

_SEED_C = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char buf[64];
void *PyInit_seed(void) { memcpy(buf, "seed", 5); return strdup(buf); }
int seed_exported(int x) { return (int)sqrt((double)x) + puts(buf); }
int seed_other(const char *s) { return (int)strlen(s) + (int)strtol(s, 0, 10); }
"""
_SEED_EXE_C = r"""
#include <stdio.h>
int main(int argc, char **argv) { printf("%d %s\n", argc, argv[0]); return 0; }
"""
_VERSION_SCRIPT = ("SEED_1.0 { global: seed_other; };\n"
                   "SEED_2.0 { global: PyInit_seed; seed_exported; local: *; } SEED_1.0;\n")

# name -> (compiler, extra link args, executable?)
_SEED_RECIPES = {
    "x86_64-gnu-hash.so": ("gcc", ["-Wl,--hash-style=gnu", "-Wl,-z,x86-64-v2"], False),
    "x86_64-sysv-hash.so": ("gcc", ["-Wl,--hash-style=sysv", "-Wl,--disable-new-dtags"], False),
    "x86_64.exe": ("gcc", [], True),
    "x86_64-musl.so": ("musl-gcc", [], False),
    "i686.so": ("i686-linux-gnu-gcc", ["-Wl,--hash-style=both"], False),
    "s390x.so": ("s390x-linux-gnu-gcc", [], False),
    "ppc32be.so": ("powerpc-linux-gnu-gcc", [], False),
    "aarch64.exe": ("aarch64-linux-gnu-gcc", [], True),
    "armhf.so": ("arm-linux-gnueabihf-gcc", [], False),
}


def make_seeds(outdir=SEEDS):
    """Compile the seed ELF files with every compiler that is installed."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "seed.c").write_text(_SEED_C)
        (tmp / "exe.c").write_text(_SEED_EXE_C)
        (tmp / "v.map").write_text(_VERSION_SCRIPT)
        for name, (cc, extra, exe) in _SEED_RECIPES.items():
            if not usable_cc(cc):
                continue
            common = ["-Os", "-s", "-Wl,-z,noseparate-code", "-Wl,-z,max-page-size=4096"]
            if exe:
                cmd = [cc, *common, "-o", str(outdir / name), str(tmp / "exe.c"), *extra]
            else:
                cmd = [cc, "-shared", "-fPIC", *common, "-Wl,-soname,libseed.so.1",
                       "-Wl,-rpath,$ORIGIN/../seed.libs", f"-Wl,--version-script={tmp}/v.map",
                       "-o", str(outdir / name), str(tmp / "seed.c"), "-lm", *extra]
            subprocess.run(cmd, check=True)
            made.append(outdir / name)
    return made


def seed_elfs(include_system=True) -> dict:
    """name -> bytes of every seed ELF available (committed seeds first)."""
    out = {p.name: p.read_bytes() for p in sorted(SEEDS.glob("*")) if p.is_file()}
    if include_system:
        for path in SYSTEM_SEEDS:
            if os.path.exists(path) and os.path.getsize(path) < 400_000:
                out[os.path.basename(path)] = Path(path).read_bytes()
    return out


# ------------------------------------------------------------------ wheels

def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(files: dict, *, dist="demo", version="1.0", record=True,
               compression=zipfile.ZIP_DEFLATED, extra_record_rows=(),
               record_override=None) -> bytes:
    """A wheel (bytes) holding ``files`` (name -> bytes) plus dist-info metadata.

    The bytes are deterministic (fixed timestamps).  ``record_override``
    replaces the RECORD text; ``extra_record_rows`` are appended to it.
    """
    info = f"{dist}-{version}.dist-info"
    members = dict(files)
    members.setdefault(f"{info}/METADATA",
                       f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode())
    members.setdefault(f"{info}/WHEEL",
                       b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                       b"Tag: cp311-cp311-manylinux_2_17_x86_64\n")
    if record:
        if record_override is not None:
            text = record_override
        else:
            s = io.StringIO()
            w = csv.writer(s, lineterminator="\n")
            for name, data in members.items():
                w.writerow([name, record_hash(data), len(data)])
            for row in extra_record_rows:
                w.writerow(row)
            w.writerow([f"{info}/RECORD", "", ""])
            text = s.getvalue()
        members[f"{info}/RECORD"] = text.encode() if isinstance(text, str) else text
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = 0o100644 << 16
            zi.create_system = 3
            zi.compress_type = compression
            z.writestr(zi, data)
    return out.getvalue()


WHEEL_NAME = "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"


def seed_wheels() -> dict:
    """name -> wheel bytes, built from the seeds (deflated and stored variants)."""
    elfs = seed_elfs(include_system=False)
    out = {}
    if "x86_64-gnu-hash.so" in elfs:
        so = elfs["x86_64-gnu-hash.so"]
        out["deflated"] = make_wheel({"demo/seed.cpython-311-x86_64-linux-gnu.so": so,
                                      "demo/__init__.py": b"x = 1\n"})
        out["stored"] = make_wheel({"demo/seed.cpython-311-x86_64-linux-gnu.so": so,
                                    "demo.libs/libz.so.1": elfs.get("x86_64-sysv-hash.so", so)},
                                   compression=zipfile.ZIP_STORED)
    if "x86_64-musl.so" in elfs:
        out["musl"] = make_wheel({"demo/seed.cpython-311-x86_64-linux-musl.so":
                                  elfs["x86_64-musl.so"]})
    out["pure"] = make_wheel({"demo/__init__.py": b"print('hi')\n"})
    return out


# ------------------------------------------------------------------ field maps

def _endian(data):
    return "<" if data[5] == 1 else ">"


def elf_fields(data: bytes) -> list:
    """(offset, size, label) of the header fields of a *valid* ELF file."""
    from fastelf._elf import parse

    fields = []
    is64 = data[4] == 2
    e = _endian(data)
    W = 8 if is64 else 4
    fields += [(4, 1, "EI_CLASS"), (5, 1, "EI_DATA"), (6, 1, "EI_VERSION"), (7, 1, "EI_OSABI")]
    if is64:
        hdr = [(16, 2, "e_type"), (18, 2, "e_machine"), (32, 8, "e_phoff"), (40, 8, "e_shoff"),
               (48, 4, "e_flags"), (54, 2, "e_phentsize"), (56, 2, "e_phnum"),
               (58, 2, "e_shentsize"), (60, 2, "e_shnum")]
        ph = [(0, 4, "p_type"), (4, 4, "p_flags"), (8, 8, "p_offset"), (16, 8, "p_vaddr"),
              (32, 8, "p_filesz"), (40, 8, "p_memsz"), (48, 8, "p_align")]
        phoff, = struct.unpack_from(e + "Q", data, 32)
        phnum, = struct.unpack_from(e + "H", data, 56)
        phent = 56
    else:
        hdr = [(16, 2, "e_type"), (18, 2, "e_machine"), (28, 4, "e_phoff"), (32, 4, "e_shoff"),
               (36, 4, "e_flags"), (42, 2, "e_phentsize"), (44, 2, "e_phnum"),
               (46, 2, "e_shentsize"), (48, 2, "e_shnum")]
        ph = [(0, 4, "p_type"), (4, 4, "p_offset"), (8, 4, "p_vaddr"), (16, 4, "p_filesz"),
              (20, 4, "p_memsz"), (24, 4, "p_flags"), (28, 4, "p_align")]
        phoff, = struct.unpack_from(e + "I", data, 28)
        phnum, = struct.unpack_from(e + "H", data, 44)
        phent = 32
    fields += hdr
    for i in range(phnum):
        fields += [(phoff + i * phent + o, s, f"phdr[{i}].{n}") for o, s, n in ph]
    elf = parse(data)
    segs = elf.segments

    def v2o(addr):
        for (t, _f, off, vaddr, filesz, _m, _a) in segs:
            if t == 1 and vaddr <= addr < vaddr + filesz:
                return addr - vaddr + off
        return None

    dyn = next((s for s in segs if s.p_type == 2), None)
    tags = {}
    if dyn is not None:
        for i, (tag, val) in enumerate(elf.dynamic or ()):
            base = dyn.p_offset + i * 2 * W
            fields += [(base, W, f"dyn[{i}].tag"), (base + W, W, f"dyn[{i}].val")]
            tags[tag] = val
    # verneed chain
    if 0x6ffffffe in tags and v2o(tags[0x6ffffffe]) is not None:
        off = v2o(tags[0x6ffffffe])
        for _ in range(tags.get(0x6fffffff, 0)):
            if off + 16 > len(data):
                break
            fields += [(off + 2, 2, "vn_cnt"), (off + 4, 4, "vn_file"), (off + 8, 4, "vn_aux"),
                       (off + 12, 4, "vn_next")]
            cnt, _f, aux, nxt = struct.unpack_from(e + "HIII", data, off + 2)
            a = off + aux
            for _ in range(cnt):
                if a + 16 > len(data):
                    break
                fields += [(a + 4, 2, "vna_flags"), (a + 6, 2, "vna_other"),
                           (a + 8, 4, "vna_name"), (a + 12, 4, "vna_next")]
                anext, = struct.unpack_from(e + "I", data, a + 12)
                if not anext:
                    break
                a += anext
            if not nxt:
                break
            off += nxt
    # verdef chain
    if 0x6ffffffc in tags and v2o(tags[0x6ffffffc]) is not None:
        off = v2o(tags[0x6ffffffc])
        for _ in range(tags.get(0x6ffffffd, 0)):
            if off + 20 > len(data):
                break
            fields += [(off + 2, 2, "vd_flags"), (off + 4, 2, "vd_ndx"), (off + 6, 2, "vd_cnt"),
                       (off + 12, 4, "vd_aux"), (off + 16, 4, "vd_next")]
            aux, nxt = struct.unpack_from(e + "II", data, off + 12)
            fields.append((off + aux, 4, "vda_name"))
            if not nxt:
                break
            off += nxt
    if 0x6ffffef5 in tags and v2o(tags[0x6ffffef5]) is not None:
        off = v2o(tags[0x6ffffef5])
        fields += [(off, 4, "gnu_nbuckets"), (off + 4, 4, "gnu_symoffset"),
                   (off + 8, 4, "gnu_bloom_size"), (off + 12, 4, "gnu_bloom_shift")]
        nb, _so, bloom = struct.unpack_from(e + "III", data, off)
        b0 = off + 16 + bloom * W
        fields += [(b0 + 4 * i, 4, f"gnu_bucket[{i}]") for i in range(min(nb, 8))]
    if 4 in tags and v2o(tags[4]) is not None:
        off = v2o(tags[4])
        fields += [(off, 4, "hash_nbucket"), (off + 4, 4, "hash_nchain")]
    for (t, _f, off, _v, filesz, _m, _a) in segs:
        if t in (4, 0x6474e553) and filesz >= 12:
            fields += [(off, 4, "note_namesz"), (off + 4, 4, "note_descsz"),
                       (off + 8, 4, "note_type")]
            if filesz >= 24:
                fields += [(off + 16, 4, "note_prop_type"), (off + 20, 4, "note_prop_size")]
    return [f for f in fields if f[0] + f[1] <= len(data)]


def zip_fields(data: bytes) -> list:
    """(offset, size, label) of the EOCD, central-directory and local-header fields."""
    fields = []
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        return fields
    fields += [(eocd + 4, 2, "eocd.disk"), (eocd + 6, 2, "eocd.cd_disk"),
               (eocd + 8, 2, "eocd.count_disk"), (eocd + 10, 2, "eocd.count"),
               (eocd + 12, 4, "eocd.cd_size"), (eocd + 16, 4, "eocd.cd_offset"),
               (eocd + 20, 2, "eocd.comment_len")]
    count, = struct.unpack_from("<H", data, eocd + 10)
    cd_off, = struct.unpack_from("<I", data, eocd + 16)
    pos = cd_off
    cd = [(4, 2, "made_by"), (6, 2, "needed"), (8, 2, "flags"), (10, 2, "method"),
          (12, 2, "mtime"), (14, 2, "mdate"), (16, 4, "crc"), (20, 4, "csize"), (24, 4, "usize"),
          (28, 2, "name_len"), (30, 2, "extra_len"), (32, 2, "comment_len"),
          (34, 2, "disk"), (36, 2, "int_attr"), (38, 4, "ext_attr"), (42, 4, "header_offset")]
    lh = [(4, 2, "needed"), (6, 2, "flags"), (8, 2, "method"), (14, 4, "crc"), (18, 4, "csize"),
          (22, 4, "usize"), (26, 2, "name_len"), (28, 2, "extra_len")]
    for i in range(count):
        if pos + 46 > len(data) or data[pos:pos + 4] != b"PK\x01\x02":
            break
        fields += [(pos + o, s, f"cd[{i}].{n}") for o, s, n in cd]
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        fields.append((pos + 46, min(nlen, 8), f"cd[{i}].name"))
        hoff, = struct.unpack_from("<I", data, pos + 42)
        if hoff + 30 <= len(data):
            fields += [(hoff + o, s, f"local[{i}].{n}") for o, s, n in lh]
            fields.append((hoff + 30, min(8, nlen), f"local[{i}].name"))
            fields.append((hoff + 30 + nlen, 4, f"local[{i}].data"))
        pos += 46 + nlen + xlen + clen
    return [f for f in fields if f[0] + f[1] <= len(data)]


# ------------------------------------------------------------------ mutation

INTERESTING = (0, 1, 2, 4, 7, 8, 0x10, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF,
               0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x100000000,
               0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF)


def set_field(buf: bytearray, off: int, size: int, value: int, endian="<"):
    value &= (1 << (8 * size)) - 1
    if size in (1, 2, 4, 8):
        struct.pack_into(endian + {1: "B", 2: "H", 4: "I", 8: "Q"}[size], buf, off, value)
    else:
        buf[off:off + size] = value.to_bytes(8, "little")[:size].ljust(size, b"\0")


def get_field(buf, off, size, endian="<"):
    if size in (1, 2, 4, 8):
        return struct.unpack_from(endian + {1: "B", 2: "H", 4: "I", 8: "Q"}[size], buf, off)[0]
    return int.from_bytes(bytes(buf[off:off + size]), "little")


def mutate(data: bytes, ops, fields=(), endian="<") -> bytes:
    """Apply mutation ops (tuples) to ``data``:

    ("flip", pos, bit) ("byte", pos, value) ("trunc", length)
    ("field", index, mode, value): mode "set" sets the field to value,
    "add" adds value (may be negative), "len" sets it to len(data) + value
    ("zero_range", pos, n) ("dup", src, dst, n) copies a range over another.
    """
    buf = bytearray(data)
    for op in ops:
        kind = op[0]
        n = len(buf)
        if n == 0:
            break
        if kind == "flip":
            buf[op[1] % n] ^= 1 << (op[2] & 7)
        elif kind == "byte":
            buf[op[1] % n] = op[2] & 0xFF
        elif kind == "trunc":
            del buf[op[1] % (n + 1):]
        elif kind == "zero_range":
            p = op[1] % n
            buf[p:p + op[2]] = bytes(len(buf[p:p + op[2]]))
        elif kind == "dup":
            s, d = op[1] % n, op[2] % n
            chunk = buf[s:s + op[3]]
            buf[d:d + len(chunk)] = chunk[:n - d]
            del buf[n:]
        elif kind == "field" and fields:
            off, size, _label = fields[op[1] % len(fields)]
            if off + size > n:
                continue
            mode, value = op[2], op[3]
            if mode == "set":
                new = value
            elif mode == "add":
                new = get_field(buf, off, size, endian) + value
            else:
                new = n + value
            set_field(buf, off, size, new, endian)
    return bytes(buf)




# ------------------------------------------------------------------ crafted files

def string_bomb(nsyms=40_000, run=200_000, defined=False) -> bytes:
    """An ELF (from the sysv-hash seed) whose many undefined symbols all name
    different suffixes of one long string: each name is short to store but
    up to ``run`` bytes long to decode, so decoding them all naively takes
    nsyms * run / 2 bytes (4 GB with the defaults) from a 1.2 MB file.
    ``defined``: make them defined symbols (export candidates) instead.
    """
    data = bytearray((SEEDS / "x86_64-sysv-hash.so").read_bytes())
    e = "<"
    phoff, = struct.unpack_from(e + "Q", data, 32)
    phnum, = struct.unpack_from(e + "H", data, 56)
    # appended: the long string, a DT_HASH header, the symbol table
    strs = len(data)
    data += b"A" * run + b"\0"
    while len(data) % 8:
        data += b"\0"
    hash_off = len(data)
    data += struct.pack(e + "II", 1, nsyms + 1) + bytes(8)
    sym_off = len(data)
    data += bytes(24)                              # symbol 0
    for i in range(nsyms):
        data += struct.pack(e + "IBBHQQ", (strs + i % run), 0x12, 0, 1 if defined else 0, 0, 0)
    # the first PT_LOAD (offset 0 -> vaddr 0) now covers the whole file
    for i in range(phnum):
        base = phoff + 56 * i
        p_type, = struct.unpack_from(e + "I", data, base)
        p_offset, p_vaddr = struct.unpack_from(e + "QQ", data, base + 8)
        if p_type == 1 and p_offset == 0 and p_vaddr == 0:
            struct.pack_into(e + "QQ", data, base + 32, len(data), len(data))
            break
    else:
        raise ValueError("seed has no PT_LOAD at offset 0")
    dyn = next(struct.unpack_from(e + "Q", data, phoff + 56 * i + 8)[0] for i in range(phnum)
               if struct.unpack_from(e + "I", data, phoff + 56 * i)[0] == 2)
    k = dyn
    while True:
        tag, = struct.unpack_from(e + "Q", data, k)
        if tag == 0:
            break
        new = {5: 0, 10: len(data), 6: sym_off, 4: hash_off}.get(tag)   # STRTAB STRSZ SYMTAB HASH
        if tag == 0x6ffffff0:                      # DT_VERSYM: drop (set to DT_DEBUG)
            struct.pack_into(e + "QQ", data, k, 21, 0)
        elif new is not None:
            struct.pack_into(e + "Q", data, k + 8, new)
        k += 16
    return bytes(data)


def _first_load_covers_all(data: bytearray, e="<"):
    """Stretch the PT_LOAD at offset 0 (vaddr 0) over the whole file (ELF64)."""
    phoff, = struct.unpack_from(e + "Q", data, 32)
    phnum, = struct.unpack_from(e + "H", data, 56)
    for i in range(phnum):
        base = phoff + 56 * i
        p_type, = struct.unpack_from(e + "I", data, base)
        p_offset, p_vaddr = struct.unpack_from(e + "QQ", data, base + 8)
        if p_type == 1 and p_offset == 0 and p_vaddr == 0:
            struct.pack_into(e + "QQ", data, base + 32, len(data), len(data))
            return
    raise ValueError("no PT_LOAD at offset 0")


def _set_dynamic(data: bytearray, values: dict, e="<"):
    """Set the values of existing dynamic entries (tag -> value) of an ELF64 file."""
    phoff, = struct.unpack_from(e + "Q", data, 32)
    phnum, = struct.unpack_from(e + "H", data, 56)
    dyn = next(struct.unpack_from(e + "Q", data, phoff + 56 * i + 8)[0] for i in range(phnum)
               if struct.unpack_from(e + "I", data, phoff + 56 * i)[0] == 2)
    k = dyn
    while True:
        tag, = struct.unpack_from(e + "Q", data, k)
        if tag == 0:
            break
        if tag in values:
            struct.pack_into(e + "Q", data, k + 8, values[tag])
        k += 16


def long_verneed_chain(entries=1000, pad=40_000) -> bytes:
    """An ELF whose verneed chain has ``entries`` entries that all share one
    vernaux entry (two steps each), followed by ``pad`` zero bytes.  The
    parser's step budget grows with the buffer: the whole file is big enough
    for the chain, a prefix that holds just the chain is not, and the two
    must still agree (not "loops" for one and fine for the other).
    """
    from fastelf._elf import parse

    data = bytearray((SEEDS / "x86_64-sysv-hash.so").read_bytes())
    tags = dict(parse(bytes(data)).dynamic)
    old = tags[0x6ffffffe]                # .gnu.version_r: vaddr == offset in this seed
    _ver, _cnt, vn_file, vn_aux, _next = struct.unpack_from("<HHIII", data, old)
    vna_name, = struct.unpack_from("<I", data, old + vn_aux + 8)
    while len(data) % 8:
        data += b"\0"
    chain = len(data)
    aux = chain + 16 * entries            # the shared vernaux, after the chain
    for i in range(entries):
        here = chain + 16 * i
        data += struct.pack("<HHIII", 1, 1, vn_file, aux - here, 16 if i < entries - 1 else 0)
    data += struct.pack("<IHHII", 0x0d696915, 0, 2, vna_name, 0)
    data += bytes(pad)
    _first_load_covers_all(data)
    _set_dynamic(data, {0x6ffffffe: chain, 0x6fffffff: entries})
    return bytes(data)


# ------------------------------------------------------------------ a raw zip writer

class Entry:
    """One member for ``build_zip``: every field a hostile zip might lie about."""

    def __init__(self, name, data=b"", *, method=0, payload=None, crc=None, usize=None,
                 csize=None, flags=0, mode=0o100644, local_name=None, local_extra=b"",
                 local_flags=None, made_by=0x031E, zip64=False):
        import zlib

        self.name = name.encode() if isinstance(name, str) else name
        self.local_name = (local_name.encode() if isinstance(local_name, str) else local_name) \
            if local_name is not None else self.name
        if payload is None:
            if method == 8:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                payload = c.compress(data) + c.flush()
            else:
                payload = data
        self.payload = payload
        self.method = method
        self.crc = zlib.crc32(data) if crc is None else crc
        self.usize = len(data) if usize is None else usize
        self.csize = len(payload) if csize is None else csize
        self.flags = flags
        self.local_flags = flags if local_flags is None else local_flags
        self.mode = mode
        self.local_extra = local_extra
        self.made_by = made_by
        self.zip64 = zip64          # sizes in a zip64 extra field of the central entry


def build_zip(entries, *, comment=b"", cd_entries=None) -> bytes:
    """A zip of ``Entry`` objects, written field by field (no zipfile sanity checks).

    ``cd_entries``: (entry index, name override) pairs to list in the central
    directory instead of one per entry (to make overlapping members).
    """
    out = bytearray()
    offsets = []
    for e in entries:
        offsets.append(len(out))
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, e.local_flags, e.method, 0, 0x5021,
                           e.crc, e.csize & 0xFFFFFFFF, e.usize & 0xFFFFFFFF,
                           len(e.local_name), len(e.local_extra))
        out += e.local_name + e.local_extra + e.payload
    cd = bytearray()
    listing = cd_entries if cd_entries is not None else [(i, None) for i in range(len(entries))]
    for i, name in listing:
        e = entries[i]
        name = e.name if name is None else (name.encode() if isinstance(name, str) else name)
        extra = struct.pack("<HHQQ", 1, 16, e.usize, e.csize) if e.zip64 else b""
        csize = 0xFFFFFFFF if e.zip64 else e.csize & 0xFFFFFFFF
        usize = 0xFFFFFFFF if e.zip64 else e.usize & 0xFFFFFFFF
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", e.made_by, 20, e.flags, e.method,
                          0, 0x5021, e.crc, csize, usize, len(name),
                          len(extra), 0, 0, 0, (e.mode & 0xFFFF) << 16, offsets[i])
        cd += name + extra
    cd_off = len(out)
    out += cd
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(listing), len(listing), len(cd),
                       cd_off, len(comment)) + comment
    return bytes(out)


def dist_info(files: dict, dist="demo", version="1.0") -> list:
    """Entries for ``files`` plus METADATA, WHEEL and a correct RECORD (all stored)."""
    info = f"{dist}-{version}.dist-info"
    files = dict(files)
    files.setdefault(f"{info}/METADATA", b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    files.setdefault(f"{info}/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
    rows = "".join(f"{n},{record_hash(d)},{len(d)}\n" for n, d in files.items())
    files[f"{info}/RECORD"] = (rows + f"{info}/RECORD,,\n").encode()
    return files


# ------------------------------------------------------------------ ambiguous zips
# Archives that Python's zipfile (what pip and installer use) reads one way and
# a reader trusting other fields reads another way.  fastelf must refuse each.

EXT_NAME = "demo/ext.cpython-311-x86_64-linux-gnu.so"
MISSING_LIB = "libmissing.so.1"


def attack_extensions() -> tuple:
    """(decoy, real): the seed extension (libc and libm only) and the same
    extension renamed to need ``MISSING_LIB`` instead of libm (a library no
    policy allows and no system has)."""
    from fastelf.patch import patch_elf

    decoy = (SEEDS / "x86_64-sysv-hash.so").read_bytes()
    real = patch_elf(decoy, replace_needed={"libm.so.6": MISSING_LIB})
    return decoy, real


def _stored_wheel(ext: bytes, pad_to: int = 0) -> bytes:
    """A stored wheel holding ``ext`` (zero-padded to ``pad_to`` bytes) with its RECORD."""
    files = dist_info({EXT_NAME: ext + bytes(max(0, pad_to - len(ext)))})
    return build_zip([Entry(n, d) for n, d in files.items()])


def _end(data: bytes) -> tuple:
    """(entry count, central directory size, offset, end record position)."""
    eocd = data.rfind(b"PK\x05\x06")
    count, size, off = struct.unpack_from("<HII", data, eocd + 10)
    return count, size, off, eocd


def _shift_central(cd: bytes, delta: int) -> bytes:
    """A central directory whose local header offsets are moved by ``delta``."""
    out = bytearray(cd)
    pos = 0
    while pos < len(out):
        nlen, xlen, clen = struct.unpack_from("<HHH", out, pos + 28)
        hoff, = struct.unpack_from("<I", out, pos + 42)
        struct.pack_into("<I", out, pos + 42, hoff + delta)
        pos += 46 + nlen + xlen + clen
    return bytes(out)


def _pair() -> tuple:
    """(decoy wheel, real wheel): same member names, so same-sized central
    directories, the real one's members padded to be at least as long."""
    decoy_ext, real_ext = attack_extensions()
    return (_stored_wheel(decoy_ext),
            _stored_wheel(real_ext, pad_to=max(len(decoy_ext), len(real_ext))))


def zip_prepended_decoy() -> bytes:
    """The real wheel with a prefix holding the decoy's members and central
    directory, placed where the real end record's (unshifted) offset points.

    zipfile sees the prefix (end record position - size - offset = prefix
    length), shifts every offset by it and extracts the real extension; a
    reader taking the offsets as they are reads the decoy.
    """
    decoy, real = _pair()
    _n, d_size, d_off, _e = _end(decoy)
    _n, r_size, r_off, _e = _end(real)
    assert d_size == r_size and d_off <= r_off
    prefix = decoy[:d_off] + bytes(r_off - d_off) + decoy[d_off:d_off + d_size]
    return prefix + real


def zip64_locator_decoy() -> bytes:
    """A plain end record naming the decoy's central directory, preceded by a
    zip64 end record and locator naming the real one.  zipfile reads the
    zip64 record whenever a locator sits before the end record and ignores
    the plain values; a reader that consults zip64 only for saturated fields
    reads the decoy."""
    decoy, real = _pair()
    n, d_size, d_off, _e = _end(decoy)
    _n, r_size, r_off, _e = _end(real)
    locals_ = decoy[:d_off] + real[:r_off]
    decoy_cd = decoy[d_off:d_off + d_size]
    real_cd = _shift_central(real[r_off:r_off + r_size], d_off)
    out = bytearray(locals_)
    decoy_cd_off = len(out)
    out += decoy_cd
    real_cd_off = len(out)
    out += real_cd
    rec = len(out)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n,
                       len(real_cd), real_cd_off)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, rec, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(decoy_cd), decoy_cd_off, 0)
    return bytes(out)


def zip64_consistent(data: bytes) -> bytes:
    """``data`` rewritten with a zip64 end record and locator that agree with
    a saturated plain end record: a legitimate zip64 layout both read alike."""
    n, size, off, eocd = _end(data)
    out = bytearray(data[:eocd])
    rec = len(out)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, off)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, rec, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                       0xFFFFFFFF, 0)
    return bytes(out)


def insert_bytes(data: bytes, at: int, blob: bytes) -> bytes:
    """``blob`` inserted at offset ``at`` (before the central directory) with
    every offset fixed up, so the archive stays self-consistent for zipfile."""
    n, size, off, eocd = _end(data)
    assert at <= off
    out = bytearray()
    out += data[:at] + blob + data[at:off]
    cd = bytearray(data[off:off + size])
    pos = 0
    while pos < len(cd):
        nlen, xlen, clen = struct.unpack_from("<HHH", cd, pos + 28)
        hoff, = struct.unpack_from("<I", cd, pos + 42)
        if hoff >= at:
            struct.pack_into("<I", cd, pos + 42, hoff + len(blob))
        pos += 46 + nlen + xlen + clen
    new_off = len(out)
    out += cd + data[off + size:eocd]
    end = bytearray(data[eocd:])
    struct.pack_into("<I", end, 16, new_off)
    return bytes(out + end)


def _local_offset(data: bytes, index: int) -> int:
    _n, _size, off, _e = _end(data)
    pos = off
    for _ in range(index):
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + nlen + xlen + clen
    return struct.unpack_from("<I", data, pos + 42)[0]


def _set_local(data: bytes, index: int, field_off: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, _local_offset(data, index) + field_off, value)
    return bytes(out)


def _central_offset(data: bytes, index: int) -> int:
    _n, _size, pos, _e = _end(data)
    for _ in range(index):
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + nlen + xlen + clen
    return pos


def _set_central(data: bytes, index: int, field_off: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, _central_offset(data, index) + field_off, value)
    return bytes(out)


def zip64_with_extensible_data(data: bytes) -> bytes:
    """A zip64 end record carrying 8 bytes of extensible data: zipfile looks
    for it 56 bytes before the locator only, misses it, and falls back on the
    saturated plain values; readers following the locator find it."""
    n, size, off, eocd = _end(data)
    out = bytearray(data[:eocd])
    rec = len(out)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 52, 45, 45, 0, 0, n, n, size, off)
    out += bytes(8)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, rec, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                       0xFFFFFFFF, 0)
    return bytes(out)


def _descriptor_tampered(data: bytes) -> bytes:
    """``data`` (whose first member has a signed data descriptor) with the
    descriptor's compressed size off by one: zipfile never reads it."""
    out = bytearray(data)
    nlen, xlen = struct.unpack_from("<HH", data, 26)
    csize, = struct.unpack_from("<I", data, _central_offset(data, 0) + 20)
    at = 30 + nlen + xlen + csize
    assert data[at:at + 4] == b"PK\x07\x08"
    struct.pack_into("<I", out, at + 8, csize + 1)
    return bytes(out)


def ambiguous_zips() -> dict:
    """name -> archive that zipfile and some other reader (or a second end
    record) read differently, or that no legitimate wheel writer produces.
    Every one must be refused by fastelf."""
    decoy, real = _pair()
    n, size, off, eocd = _end(real)
    hidden = bytes(real[:_local_offset(real, 1)])    # a whole local record as junk
    cases = {
        "prepended-decoy": zip_prepended_decoy(),
        "zip64-locator-decoy": zip64_locator_decoy(),
        "prefix-junk": b"MZ" + bytes(510) + real,             # a self-extractor stub
        "prefix-with-fixed-offsets": insert_bytes(real, 0, b"#!/bin/sh\nexit 0\n"),
        "gap-between-members": insert_bytes(real, _local_offset(real, 1), hidden),
        "gap-before-central-directory": insert_bytes(real, off, b"\0" * 16),
        "trailing-data": real + b"trailing",
        "appended-archive": real + decoy,
        "eocd-in-comment": real[:eocd + 20] + struct.pack("<H", len(decoy)) + decoy,
        "count-below-entries": real[:eocd + 8] + struct.pack("<HH", n - 1, n - 1)
        + real[eocd + 12:],
        "zip64-locator-without-record": real[:eocd] + struct.pack("<4sIQI", b"PK\x06\x07", 0,
                                                                   off + size, 1)
        + real[eocd:eocd + 16] + struct.pack("<IH", off, 0),
        "local-method": _set_local(real, 0, 8, "<H", 8),
        "local-crc": _set_local(real, 0, 14, "<I", 0xDEADBEEF),
        "local-csize": _set_local(real, 0, 18, "<I", 1000),
        "local-usize": _set_local(real, 0, 22, "<I", 1000),
        "local-flags": _set_local(real, 0, 6, "<H", 0x800),
        "local-name": zip_local_name_mismatch(),
        "non-ascii-name-without-utf8-flag": build_zip(
            [Entry("demo/caf\xe9.py".encode("latin-1"), b"x = 1\n")]),
        "invalid-utf8-name": build_zip([Entry(b"demo/\xff.py", b"x = 1\n", flags=0x800)]),
        "eocd-signature-in-central-directory": build_zip(
            [Entry(b"demo/PK\x05\x06.py", b"x = 1\n")]),
        "zip64-extensible-data": zip64_with_extensible_data(real),
        "zip64-locator-points-elsewhere": zip64_consistent(real)[:-34]
        + struct.pack("<Q", 0) + zip64_consistent(real)[-26:],
        "malformed-central-extra": _set_central(build_zip([Entry("demo/x.bin", b"tiny",
                                                                 zip64=True)]),
                                                0, 46 + len("demo/x.bin") + 2, "<H", 17),
        "two-zip64-extras": _two_zip64_extras(),
        "extract-version-6.4": _set_central(real, 0, 6, "<H", 64),
        "compressed-patched-data": build_zip([Entry("demo/x.py", b"x = 1\n", flags=0x20)]),
    }
    return cases


def _two_zip64_extras() -> bytes:
    """A central entry with two zip64 extra fields (zipfile applies them in turn)."""
    z = build_zip([Entry("demo/x.bin", b"tiny", zip64=True)])
    pos = _central_offset(z, 0)
    nlen, xlen = struct.unpack_from("<HH", z, pos + 28)
    extra_end = pos + 46 + nlen + xlen
    dup = z[pos + 46 + nlen:extra_end]
    out = bytearray(z[:extra_end] + dup + z[extra_end:])
    struct.pack_into("<H", out, pos + 30, 2 * xlen)
    n, size, off, eocd = _end(bytes(out))
    struct.pack_into("<I", out, eocd + 12, size + xlen)
    return bytes(out)


def descriptor_cases(wheel_with_descriptors: bytes) -> dict:
    """Ambiguous variants of a wheel whose members have data descriptors."""
    return {"data-descriptor-disagrees": _descriptor_tampered(wheel_with_descriptors)}


# ------------------------------------------------------------------ crafted corpus files

def zip_deflate_empty_blocks() -> bytes:
    """A deflated ELF member whose stream starts with 1,000 empty stored blocks."""
    import zlib

    so = (SEEDS / "x86_64-sysv-hash.so").read_bytes()
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = b"\x00\x00\x00\xff\xff" * 1000 + c.compress(so) + c.flush()
    files = dist_info({"demo/seed.cpython-311-x86_64-linux-gnu.so": so})
    return build_zip([Entry(n, d, method=8, payload=payload if n.endswith(".so") else None)
                      for n, d in files.items()])


def zip_local_extra_overlap() -> bytes:
    """Member 2's whole local record sits inside member 1's local *extra field*
    (the "extra-field quoting" of overlapping-file zip bombs): the central
    directory spans do not overlap, the local header's do.
    """
    import zlib

    files = dist_info({"demo/" + "a" * 40 + ".py": b"a = 1\n", "demo/b.py": b"b = 2\n"})
    names = list(files)
    first, second = names[0], names[1]
    d1, d2 = files[first], files[second]
    n1, n2 = first.encode(), second.encode()
    rec2 = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x5021, zlib.crc32(d2),
                       len(d2), len(d2), len(n2), 0) + n2 + d2
    out = bytearray()
    out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x5021, zlib.crc32(d1),
                       len(d1), len(d1), len(n1), len(rec2)) + n1
    off2 = len(out)
    out += rec2 + d1
    offsets = {first: 0, second: off2}
    rest = [Entry(n, d) for n, d in files.items() if n not in (first, second)]
    tail = build_zip(rest)               # the other members, then their central directory
    cd_start = struct.unpack_from("<I", tail, len(tail) - 6)[0]
    base = len(out)
    out += tail[:cd_start]
    cd = bytearray()
    for name, data in ((first, d1), (second, d2)):
        nb = name.encode()
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x031E, 20, 0, 0, 0, 0x5021,
                          zlib.crc32(data), len(data), len(data), len(nb), 0, 0, 0, 0,
                          0o100644 << 16, offsets[name]) + nb
    pos = cd_start
    count = len(rest)
    for _ in range(count):                # shift the other members' header offsets
        nlen, = struct.unpack_from("<H", tail, pos + 28)
        entry = bytearray(tail[pos:pos + 46 + nlen])
        struct.pack_into("<I", entry, 42, struct.unpack_from("<I", entry, 42)[0] + base)
        cd += entry
        pos += 46 + nlen
    cd_off = len(out)
    out += cd + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count + 2, count + 2, len(cd),
                            cd_off, 0)
    return bytes(out)


def zip_local_name_mismatch() -> bytes:
    files = dist_info({"demo/seed.cpython-311-x86_64-linux-gnu.so":
                       (SEEDS / "x86_64-sysv-hash.so").read_bytes()})
    entries = [Entry(n, d) for n, d in files.items()]
    entries[0].local_name = b"demo/other.cpython-311-x86_64-linux-gnu.so"
    return build_zip(entries)


def zip_elf_magic_not_elf() -> bytes:
    return build_zip([Entry(n, d) for n, d in dist_info(
        {"pkg/data.bin": b"\x7fELF is not an ELF file" + bytes(64)}).items()])


def zip_inflates_past_size() -> bytes:
    """An ELF member of 10 MB (mostly zeros) whose headers declare 200 kB."""
    so = (SEEDS / "x86_64-sysv-hash.so").read_bytes()
    big = so + bytes(10_000_000)
    files = dist_info({"demo/x.so": big})
    return build_zip([Entry(n, d, method=8, usize=200_000 if n == "demo/x.so" else None)
                      for n, d in files.items()])


def make_corpus():
    """Write the crafted regression files (the fuzz-found ones are kept as found)."""
    import gzip

    def gz(data):
        return gzip.compress(data, 9, mtime=0)

    made = {
        "elf-strings-bomb.elf.gz": gz(string_bomb(nsyms=5000)),
        "elf-exports-long-string.elf.gz": gz(string_bomb(nsyms=5000, defined=True)),
        "elf-verneed-long-chain.elf.gz": gz(long_verneed_chain()),
        "zip-deflate-empty-blocks.zip": zip_deflate_empty_blocks(),
        "zip-local-extra-overlap.zip": zip_local_extra_overlap(),
        "zip-local-name-mismatch.zip": zip_local_name_mismatch(),
        "zip-elf-magic-not-elf.zip": zip_elf_magic_not_elf(),
        "zip-inflates-past-size.zip": zip_inflates_past_size(),
    }
    for name, data in made.items():
        (CORPUS / name).write_bytes(data)
    return sorted(made)


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-seeds"]:
        for p in make_seeds():
            print(p, p.stat().st_size)
    elif sys.argv[1:] == ["--make-corpus"]:
        for name in make_corpus():
            print(CORPUS / name, (CORPUS / name).stat().st_size)
    else:
        print("usage: python tests/hostile_support.py --make-seeds | --make-corpus",
              file=sys.stderr)
        sys.exit(2)


# ------------------------------------------------------------------ loader-search bombs

def many_needed_elf(workdir, needed: int, rpath, *, stubs=(), runpath=False,
                    interp=None, executable=False) -> bytes:
    """An x86-64 ELF (linked by gcc) with ``needed`` DT_NEEDED entries
    ``libn0.so`` .. ``libn<needed-1>.so`` and the search path ``rpath`` (a list of
    entries) as DT_RPATH (DT_RUNPATH with ``runpath``).

    Every NEEDED name is a symlink to one empty stub library without SONAME, so
    the linker records the file name; ``stubs`` are further libraries (paths)
    linked in after them.  ``interp`` sets PT_INTERP (an executable is built).
    """
    d = Path(workdir)
    libs = d / "L"
    libs.mkdir(parents=True, exist_ok=True)
    stub = d / "stub.so"
    if not stub.exists():
        (d / "stub.c").write_text("int stub_fn(void) { return 0; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(stub), str(d / "stub.c")],
                       check=True)
    args = []
    for i in range(needed):
        link = libs / f"libn{i}.so"
        if not link.exists():
            os.symlink(stub, link)
        args.append(f"-l:libn{i}.so")
    src = d / "m.c"
    src.write_text("int PyInit_m(void) { return 0; }\nint main(void) { return 0; }\n")
    out = d / "out.elf"
    cmd = ["gcc", "-o", str(out), str(src), "-L", str(libs), "-Wl,--no-as-needed",
           *args, *map(str, stubs)]
    cmd += [] if executable or interp else ["-shared", "-fPIC"]
    if rpath:
        cmd += [f"-Wl,-rpath,{':'.join(rpath)}",
                "-Wl,--enable-new-dtags" if runpath else "-Wl,--disable-new-dtags"]
    if interp:
        cmd += [f"-Wl,--dynamic-linker={interp}"]
    subprocess.run(cmd, check=True, capture_output=True)
    data = out.read_bytes()
    out.unlink()
    return data
