"""Tests of the ELF core, fastelf._elf.parse, with readelf (binutils) as the oracle.

The fixtures are compiled from C by tests/elfbuild.py (host gcc, musl-gcc and
cross compilers when installed); a sample of the host's own libraries and
programs is checked the same way.  Everything readelf can tell is compared:
header, program headers, dynamic tags and strings, version tables, the
dynamic symbols with their versions, and the x86 ISA note.
"""

from __future__ import annotations

import glob
import mmap
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import elfbuild as eb
import pytest

from fastelf._elf import ElfError, ElfNeedMore, parse

READELF = shutil.which("readelf")
pytestmark = pytest.mark.skipif(READELF is None, reason="readelf (binutils) not installed")

# ----------------------------------------------------------------- fixtures

# fixture name -> COMPILERS key it is built with (gives the expected arch)
FIXTURES = {
    "ext": "gcc", "libbar": "gcc", "newglibc": "gcc", "zerr": "gcc", "isa_v3": "gcc",
    "musl_lib": "musl", "musl_exe": "musl", "exe": "gcc", "rpath": "gcc", "runpath": "gcc",
    "original": "gcc", "stripped": "gcc", "no_sections": "gcc",
    "ver_provider": "gcc", "ver_consumer": "gcc",
    "hash_sysv": "gcc", "hash_gnu": "gcc", "hash_both": "gcc", "execstack": "gcc",
    "armel_lib": "armel",
}
for _t in eb.CROSS_TARGETS:
    FIXTURES[f"{_t}_lib"] = _t
    FIXTURES[f"{_t}_exe"] = _t


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    """Every fixture, built once: name -> Path, or None when its compiler is missing."""
    d = tmp_path_factory.mktemp("elf-fixtures")
    out = dict.fromkeys(FIXTURES)
    ext = eb.build_ext_with_external_lib(d)
    if ext:
        out["ext"], out["libbar"] = ext.ext, ext.lib
    out["newglibc"] = eb.build_too_new_glibc(d)
    out["zerr"] = eb.build_blacklisted_zlib(d)
    out["isa_v3"] = eb.build_isa_level(d)
    musl = eb.build_musl(d)
    if musl:
        out["musl_lib"], out["musl_exe"] = musl
    out["exe"] = eb.build_executable(d)
    paths = eb.build_rpath_runpath(d)
    if paths:
        out["rpath"], out["runpath"] = paths
    st = eb.build_stripped(d)
    if st:
        out["original"], out["stripped"], out["no_sections"] = st
    ver = eb.build_versioned_pair(d)
    if ver:
        out["ver_provider"], out["ver_consumer"] = ver
    hashes = eb.build_hash_styles(d)
    if hashes:
        for style, p in hashes.items():
            out[f"hash_{style}"] = p
    out["execstack"] = eb.build_exec_stack(d)
    out["armel_lib"] = eb.build_arm_softfloat(d)
    for t in eb.CROSS_TARGETS:
        cross = eb.build_cross(d, t)
        if cross:
            out[f"{t}_lib"], out[f"{t}_exe"] = cross
    out["_dir"] = d
    return out


def get(fx, name) -> Path:
    return eb.need(fx[name], f"fixture {name}", cc=FIXTURES[name])


def _is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _system_sample():
    """A deterministic spread of the host's shared libraries and programs."""
    picks = []
    for pattern, count in (("/usr/lib/x86_64-linux-gnu/*.so*", 40), ("/usr/bin/*", 25)):
        files = sorted({os.path.realpath(p) for p in glob.glob(pattern)})
        files = [p for p in files if os.path.isfile(p) and os.path.getsize(p) < 20 << 20
                 and _is_elf(p)]
        if files:
            step = max(1, len(files) // count)
            picks += files[::step][:count]
    for must in ("/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
                 "/usr/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                 "/lib64/ld-linux-x86-64.so.2", "/usr/bin/ls", sys.executable):
        real = os.path.realpath(must)
        if _is_elf(real) and real not in picks:
            picks.append(real)
    return picks


SYSTEM = _system_sample()
HOST_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
TARGETS = [f"fx:{n}" for n in FIXTURES] + SYSTEM


def resolve(fx, target) -> Path:
    if target.startswith("fx:"):
        return get(fx, target[3:])
    return Path(target)


def _ids(t):
    return t if t.startswith("fx:") else "sys:" + os.path.basename(t)


# ------------------------------------------------------------ the oracle

def readelf(*args) -> str:
    proc = subprocess.run([READELF, "-W", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"))
    return proc.stdout


PT_NAMES = {"NULL": 0, "LOAD": 1, "DYNAMIC": 2, "INTERP": 3, "NOTE": 4, "SHLIB": 5, "PHDR": 6,
            "TLS": 7, "GNU_EH_FRAME": 0x6474E550, "GNU_STACK": 0x6474E551,
            "GNU_RELRO": 0x6474E552, "GNU_PROPERTY": 0x6474E553}
ET_NAMES = {"NONE": 0, "REL": 1, "EXEC": 2, "DYN": 3, "CORE": 4}
EM_NAMES = {"Advanced Micro Devices X86-64": 62, "AArch64": 183, "ARM": 40,
            "IBM S/390": 22, "Intel 80386": 3, "PowerPC64": 21, "RISC-V": 243,
            "LoongArch": 258}
STB = {"LOCAL": 0, "GLOBAL": 1, "WEAK": 2, "UNIQUE": 10}
STT = {"NOTYPE": 0, "OBJECT": 1, "FUNC": 2, "SECTION": 3, "FILE": 4, "COMMON": 5, "TLS": 6,
       "IFUNC": 10}
ISA_BITS = {"x86-64-baseline": 1, "x86-64-v2": 2, "x86-64-v3": 4, "x86-64-v4": 8}
DT_GNU_HASH = 0x6FFFFEF5

SYM_RE = re.compile(r"^\s*(\d+): ([0-9a-fA-F]+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+"
                    r"(?:\[[^\]]*\]\s+)?(\S+) ?(.*)$")


def _split_version(field):
    """'name@@V' / 'name@V' / 'name@V (3)' / 'name' -> (name, version, index, default)."""
    index = None
    m = re.match(r"^(.*) \((\d+)\)$", field)
    if m:
        field, index = m.group(1), int(m.group(2))
    if "@@" in field:
        name, ver = field.split("@@", 1)
        return name, ver, index, True
    if "@" in field:
        name, ver = field.split("@", 1)
        return name, ver, index, False
    return field, None, index, False


@lru_cache(maxsize=None)
def oracle(path, versions_from=None):
    """What readelf says about ``path`` (versions from ``versions_from`` if given)."""
    path = str(path)
    o = {}
    head = readelf("-h", path)
    o["class"] = int(re.search(r"Class:\s+ELF(\d+)", head).group(1))
    o["le"] = "little endian" in re.search(r"Data:\s+(.*)", head).group(1)
    o["type"] = ET_NAMES[re.search(r"Type:\s+(\w+)", head).group(1)]
    o["machine_name"] = re.search(r"Machine:\s+(.*)", head).group(1).strip()
    o["flags"] = int(re.search(r"Flags:\s+(0x[0-9a-f]+)", head).group(1), 16)
    o["shnum"] = int(re.search(r"Number of section headers:\s+(\d+)", head).group(1))

    prog = readelf("-l", path)
    o["interp"] = None
    m = re.search(r"\[Requesting program interpreter: (.*)\]", prog)
    if m:
        o["interp"] = m.group(1)
    segs = []
    in_table = False
    for line in prog.splitlines():
        if line.strip().startswith("Type") and "Offset" in line:
            in_table = True
            continue
        if in_table:
            if not line.strip():
                break
            if line.strip().startswith("["):
                continue
            tok = line.split()
            flags = "".join(tok[6:-1])
            segs.append({"type": PT_NAMES.get(tok[0]), "offset": int(tok[1], 16),
                         "vaddr": int(tok[2], 16), "filesz": int(tok[4], 16),
                         "memsz": int(tok[5], 16), "align": int(tok[-1], 16),
                         "flags": (4 if "R" in flags else 0) | (2 if "W" in flags else 0)
                         | (1 if "E" in flags else 0)})
    o["segments"] = segs
    stack = [s for s in segs if s["type"] == PT_NAMES["GNU_STACK"]]
    o["exec_stack"] = bool(stack[0]["flags"] & 1) if stack else None

    dyn = readelf("-d", path)
    o["has_dynamic"] = "Dynamic section at offset" in dyn
    o["dyn_tags"] = [int(m.group(1), 16) for m in
                     re.finditer(r"^\s*0x([0-9a-f]+) \(", dyn, re.M)]
    o["needed"], o["soname"], o["rpath"], o["runpath"] = [], None, None, None
    for m in re.finditer(r"\((NEEDED|SONAME|RPATH|RUNPATH)\)\s+[^\[]*\[(.*)\]$", dyn, re.M):
        if m.group(1) == "NEEDED":
            o["needed"].append(m.group(2))
        else:
            o[m.group(1).lower()] = m.group(2)

    ver = readelf("-V", versions_from or path)
    o["version_defs"] = [m.group(3) for m in re.finditer(
        r"Rev: \d+\s+Flags: (.*?)\s+Index: (\d+)\s+Cnt: \d+\s+Name: (\S+)", ver)]
    needs, index_lib, current = {}, {}, None
    for line in ver.splitlines():
        m = re.search(r"Version: \d+\s+File: (\S+)\s+Cnt: \d+", line)
        if m:
            current = m.group(1)
            needs.setdefault(current, [])
            continue
        m = re.search(r"Name: (\S+)\s+Flags: .*?\s+Version: (\d+)", line)
        if m and current is not None:
            needs[current].append(m.group(1))
            index_lib[int(m.group(2))] = current
    o["version_needs"] = needs

    syms = readelf("--dyn-syms", path) if o["shnum"] else readelf("-D", "-s", path)
    m = re.search(r"Symbol table (?:'\.dynsym' |for image )contains (\d+) entr", syms)
    o["symbol_count"] = int(m.group(1)) if m else 0
    imports, exports = [], []
    for line in syms.splitlines():
        m = SYM_RE.match(line)
        if not m:
            continue
        _, _, _, typ, bind, _, ndx, rest = m.groups()
        name, version, index, _default = _split_version(rest)
        if STB[bind] == 0:
            continue
        if ndx == "UND":
            lib = index_lib.get(index) if version is not None else None
            imports.append((name, version, lib, STB[bind], STT[typ]))
        else:
            exports.append((name, version, STB[bind], STT[typ]))
    o["imports"] = sorted(imports, key=repr)
    o["exports"] = sorted(exports, key=repr)

    isa = None
    m = re.search(r"x86 ISA needed: (.*)", readelf("-n", path))
    if m:
        isa = 0
        for word in m.group(1).split(","):
            word = word.strip()
            if word and word != "<None>":
                isa |= ISA_BITS[word]
    o["isa_needed"] = isa
    return o


def versions_source(fx, target):
    """readelf -V needs section headers: take versions of the section-less copy from its source."""
    return str(get(fx, "stripped")) if target == "fx:no_sections" else None


def facts(e):
    """Every attribute of an ElfFile, for whole-result comparisons."""
    return {k: getattr(e, k) for k in (
        "elf_class", "little_endian", "osabi", "e_type", "machine", "flags", "arch",
        "arch_error", "interpreter", "needed", "soname", "rpath", "runpath", "imports",
        "exports", "version_needs", "version_defs", "isa_needed", "exec_stack", "segments",
        "dynamic", "symbol_count", "bytes_used")}


def load(path) -> bytes:
    return Path(path).read_bytes()


# ------------------------------------------------- comparison with readelf

@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_header_matches_readelf(fx, target):
    path = resolve(fx, target)
    data = load(path)
    e = parse(data)
    o = oracle(path)
    assert e.elf_class == o["class"]
    assert e.little_endian == o["le"]
    assert e.e_type == o["type"]
    assert e.flags == o["flags"]
    assert o["machine_name"] in EM_NAMES, o["machine_name"]
    assert e.machine == EM_NAMES[o["machine_name"]]
    assert e.osabi == data[7]
    if target.startswith("fx:"):
        _, arch, cls, le = eb.COMPILERS[FIXTURES[target[3:]]]
        assert (e.arch, e.elf_class, e.little_endian) == (arch, cls, le)
        assert e.arch_error is None if arch else e.arch_error
    else:
        assert e.arch == HOST_ARCH and e.arch_error is None


@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_program_headers_match_readelf(fx, target):
    path = resolve(fx, target)
    e = parse(load(path))
    o = oracle(path)
    assert len(e.segments) == len(o["segments"])
    for (ptype, pflags, off, vaddr, filesz, memsz, align), s in zip(e.segments, o["segments"]):
        if s["type"] is not None:
            assert ptype == s["type"]
        assert (pflags & 7, off, vaddr, filesz, memsz, align) == (
            s["flags"], s["offset"], s["vaddr"], s["filesz"], s["memsz"], s["align"])
    assert e.interpreter == o["interp"]
    assert e.exec_stack == o["exec_stack"]


@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_dynamic_matches_readelf(fx, target):
    path = resolve(fx, target)
    e = parse(load(path))
    o = oracle(path)
    if not o["has_dynamic"]:
        assert e.dynamic is None and e.needed == [] and e.imports == []
        return
    tags = o["dyn_tags"]
    if tags and tags[-1] == 0:
        tags = tags[:-1]          # readelf shows the terminating DT_NULL; fastelf stops there
    assert [t for t, _ in e.dynamic] == tags
    assert e.needed == o["needed"]
    assert e.soname == o["soname"]
    assert e.rpath == o["rpath"]
    assert e.runpath == o["runpath"]


@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_versions_match_readelf(fx, target):
    path = resolve(fx, target)
    e = parse(load(path))
    o = oracle(path, versions_source(fx, target))
    assert e.version_needs == o["version_needs"]
    assert e.version_defs == o["version_defs"]


@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_dynamic_symbols_match_readelf(fx, target):
    path = resolve(fx, target)
    e = parse(load(path), exports=None)
    o = oracle(path, versions_source(fx, target))
    assert e.symbol_count == o["symbol_count"]
    assert sorted(e.imports, key=repr) == o["imports"]
    # readelf does not print the version of the ABS symbol that names a version node
    # (e.g. 'GLIBC_2.2.5' itself): there the only right answers are None or the name.
    got = sorted(e.exports, key=repr)
    want = o["exports"]
    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=lambda t: (t[0], t[2], t[3], repr(t[1]))),
                    sorted(want, key=lambda t: (t[0], t[2], t[3], repr(t[1])))):
        if w[1] is None and g[1] is not None:
            assert g[1] == g[0] and (g[0], g[2], g[3]) == (w[0], w[2], w[3])
        else:
            assert g == w


@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_isa_note_matches_readelf(fx, target):
    path = resolve(fx, target)
    e = parse(load(path))
    assert e.isa_needed == oracle(path)["isa_needed"]


# ------------------------------------------------------ fixture ground truth

def test_ext_needs_private_lib(fx):
    ext, bar = parse(load(get(fx, "ext")), exports=("PyInit_",)), parse(load(get(fx, "libbar")))
    assert "libbar.so.1" in ext.needed
    assert bar.soname == "libbar.so.1"
    assert ext.rpath is None and ext.runpath is None
    assert [x.name for x in ext.imports if x.name == "bar_value"] == ["bar_value"]
    assert ext.exports == [("PyInit_foo", None, 1, 2)]     # STB_GLOBAL, STT_FUNC
    assert ext.arch == "x86_64" and ext.interpreter is None


def test_exports_prefix_selection(fx):
    data = load(get(fx, "ext"))
    assert parse(data).exports == []                       # default: none asked for
    names = lambda e: sorted(x.name for x in e.exports)     # noqa: E731
    assert names(parse(data, exports=("PyInit_",))) == ["PyInit_foo"]
    assert names(parse(data, exports=("my_", "PyInit_"))) == ["PyInit_foo", "my_PyInit_lookalike"]
    assert names(parse(data, exports=("PyInit_foo_longer",))) == []
    everything = parse(data, exports=None)
    assert {"PyInit_foo", "my_PyInit_lookalike"} <= set(names(everything))
    assert sorted(parse(data, exports=("",)).exports) == sorted(everything.exports)
    # the choice of exports does not change anything else
    a, b = facts(parse(data)), facts(everything)
    a.pop("exports"), b.pop("exports")
    assert a == b


def test_too_new_glibc_symbol(fx):
    path = get(fx, "newglibc")
    assert "arc4random@GLIBC_2.36" in readelf("--dyn-syms", path)
    e = parse(load(path))
    assert ("arc4random", "GLIBC_2.36", "libc.so.6", 1, 2) in e.imports
    assert "GLIBC_2.36" in e.version_needs["libc.so.6"]


def test_blacklisted_zlib_symbol_is_undefined(fx):
    e = parse(load(get(fx, "zerr")))
    assert "libz.so.1" in e.needed
    z = [x for x in e.imports if x.name == "z_errmsg"]
    assert len(z) == 1 and z[0][3] == 1


def test_x86_isa_level(fx):
    path = get(fx, "isa_v3")
    assert "x86-64-v3" in readelf("-n", path)
    e = parse(load(path))
    assert e.isa_needed is not None and e.isa_needed & 4
    assert e.x86_isa_level == 3
    plain = parse(load(get(fx, "libbar")))
    assert plain.isa_needed is None and plain.x86_isa_level is None


def test_musl_fixtures(fx):
    lib, exe = parse(load(get(fx, "musl_lib"))), parse(load(get(fx, "musl_exe")))
    assert lib.needed == ["libc.so"]
    assert exe.interpreter == "/lib/ld-musl-x86_64.so.1"
    for e in (lib, exe):
        assert e.version_needs == {} and e.imports
        assert all(v is None and lib_ is None for _, v, lib_, _, _ in e.imports)


def test_executable_interpreter(fx):
    e = parse(load(get(fx, "exe")))
    assert e.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert e.e_type in (2, 3)
    assert "libm.so.6" in e.needed and "libc.so.6" in e.needed
    assert parse(load(get(fx, "libbar"))).interpreter is None


def test_rpath_and_runpath(fx):
    r, n = parse(load(get(fx, "rpath"))), parse(load(get(fx, "runpath")))
    assert (r.rpath, r.runpath) == ("$ORIGIN/../rlib:/opt/rpath-dir", None)
    assert (n.rpath, n.runpath) == (None, "$ORIGIN/runlib")
    assert (r.soname, n.soname) == ("librpath.so", "librunpath.so")


def test_stripped_and_sectionless_parse_like_original(fx):
    original, stripped, bare = (load(get(fx, k)) for k in ("original", "stripped", "no_sections"))
    assert len(bare) < len(stripped) < len(original)
    assert struct.unpack_from("<Q", bare, 40)[0] == 0
    assert struct.unpack_from("<HHH", bare, 58) == (0, 0, 0)
    full = facts(parse(original, exports=None))
    assert full["imports"] and full["version_needs"] and full["symbol_count"] > 1
    assert any(x[0] == "maybe_there" and x[3] == 2 for x in full["imports"])   # weak
    assert any(x[0] == "tls_counter" and x[3] == 6 for x in full["exports"])   # STT_TLS
    for data in (stripped, bare):
        assert facts(parse(data, exports=None)) == full


def test_versioned_library_and_consumer(fx):
    p, c = parse(load(get(fx, "ver_provider")), exports=None), parse(load(get(fx, "ver_consumer")))
    assert set(p.version_defs) == {"libver.so.1", "VER_1", "VER_2"}
    assert {("foo", "VER_1"), ("foo", "VER_2"), ("bar", "VER_1")} <= \
        {(x.name, x.version) for x in p.exports}
    assert set(c.version_needs["libver.so.1"]) == {"VER_1", "VER_2"}
    imported = {x.name: (x.version, x.library) for x in c.imports}
    assert imported["foo"] == ("VER_2", "libver.so.1")
    assert imported["bar"] == ("VER_1", "libver.so.1")


def test_hash_styles_count_the_same_symbols(fx):
    tags = {}
    for style in ("sysv", "gnu", "both"):
        e = parse(load(get(fx, f"hash_{style}")))
        tags[style] = {t for t, _ in e.dynamic}
        assert e.symbol_count == oracle(get(fx, f"hash_{style}"))["symbol_count"]
    assert 4 in tags["sysv"] and DT_GNU_HASH not in tags["sysv"]
    assert 4 not in tags["gnu"] and DT_GNU_HASH in tags["gnu"]
    assert {4, DT_GNU_HASH} <= tags["both"]


def _retag(data, old, new, value=None):
    """Change the dynamic tag ``old`` to ``new`` (and its value) in an ELF64 LE image."""
    e = parse(data)
    seg = [s for s in e.segments if s.p_type == 2][0]
    out = bytearray(data)
    for i in range(seg.p_filesz // 16):
        if struct.unpack_from("<q", out, seg.p_offset + 16 * i)[0] == old:
            struct.pack_into("<q", out, seg.p_offset + 16 * i, new)
            if value is not None:
                struct.pack_into("<Q", out, seg.p_offset + 16 * i + 8, value)
            return bytes(out)
    raise AssertionError(f"tag {old:#x} not found")


def test_symbol_count_falls_back_to_section_headers(fx):
    data = load(get(fx, "hash_gnu"))
    full = parse(data, exports=None)
    nohash = _retag(data, DT_GNU_HASH, 21)          # DT_GNU_HASH -> DT_DEBUG
    e = parse(nohash, exports=None)
    assert e.symbol_count == full.symbol_count == oracle(get(fx, "hash_gnu"))["symbol_count"]
    assert e.imports == full.imports and e.exports == full.exports
    # with neither a hash table nor section headers, .dynsym is bounded by the table that
    # follows it (GNU ld puts .dynstr right after .dynsym)
    bare = fx["_dir"] / "nohash-nosections.so"
    bare.write_bytes(nohash)
    eb.strip_section_headers(bare, bare)
    e = parse(load(bare), exports=None)
    assert e.symbol_count == full.symbol_count
    assert e.imports == full.imports and e.exports == full.exports


def test_cross_arch_facts(fx):
    seen = 0
    for t in eb.CROSS_TARGETS:
        if fx[f"{t}_lib"] is None:
            continue
        seen += 1
        lib, exe = parse(load(fx[f"{t}_lib"])), parse(load(fx[f"{t}_exe"]))
        assert lib.arch == exe.arch == eb.COMPILERS[t][1]
        assert exe.interpreter and exe.interpreter.startswith("/lib")
        assert "libm.so.6" in lib.needed and "libc.so.6" in lib.needed
        assert any(x.name == "cos" and x.version and x.version.startswith("GLIBC_")
                   for x in lib.imports)
    if not seen:
        pytest.skip("no cross compiler installed")


def test_arm_float_abi(fx):
    hf = parse(load(get(fx, "armhf_lib")))
    assert (hf.arch, hf.arch_error, hf.elf_class) == ("armv7l", None, 32)
    assert hf.flags & 0x400
    soft = parse(load(get(fx, "armel_lib")))
    assert soft.machine == 40 and soft.arch is None
    assert "not hard-float" in soft.arch_error


def test_big_endian_s390x(fx):
    data = load(get(fx, "s390x_lib"))
    assert data[5] == 2
    e = parse(data)
    assert (e.arch, e.little_endian, e.elf_class, e.machine) == ("s390x", False, 64, 22)


def test_unknown_machine(fx):
    data = bytearray(load(get(fx, "libbar")))
    struct.pack_into("<H", data, 18, 0x1234)
    e = parse(bytes(data))
    assert e.arch is None and "unknown architecture" in e.arch_error
    assert e.needed == parse(load(get(fx, "libbar"))).needed


# ------------------------------------------------------- buffers and prefixes

def feed(data, start=0):
    """Parse as a streaming caller does: grow the prefix to what ElfNeedMore asks for."""
    size, n, rounds = len(data), start, 0
    view = memoryview(data)
    while True:
        try:
            return parse(view[:n], size, exports=None), rounds
        except ElfNeedMore as exc:
            assert n < exc.needed <= size
            n = exc.needed
            rounds += 1
            assert rounds < 100


NEEDMORE_TARGETS = [f"fx:{n}" for n in FIXTURES] + SYSTEM[::6]


@pytest.mark.parametrize("target", NEEDMORE_TARGETS, ids=_ids)
def test_need_more_protocol(fx, target):
    data = load(resolve(fx, target))
    full = parse(data, exports=None)
    for start in (0, 16, 64):
        got, rounds = feed(data, start)
        assert facts(got) == facts(full)
        assert rounds >= 1
    used = full.bytes_used
    assert 0 < used <= len(data)
    assert facts(parse(data[:used], len(data), exports=None)) == facts(full)
    with pytest.raises(ElfNeedMore) as exc:
        parse(data[:used - 1], len(data))
    assert used - 1 < exc.value.needed <= used


def test_mmap_memoryview_and_bytes_agree(fx):
    path = get(fx, "ext")
    data = load(path)
    ref = facts(parse(data, exports=None))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert facts(parse(m, exports=None)) == ref
        assert facts(parse(memoryview(m), exports=None)) == ref
    assert facts(parse(bytearray(data), exports=None)) == ref
    padded = b"junk" + data
    assert facts(parse(memoryview(padded)[4:], exports=None)) == ref


def _truncations(data, used, cuts):
    size = len(data)
    for cut in cuts:
        prefix = data[:cut]
        if cut < used:
            with pytest.raises(ElfError) as exc:
                parse(prefix, exports=None)
            assert not isinstance(exc.value, ElfNeedMore), cut
            assert str(exc.value)
            with pytest.raises(ElfNeedMore) as more:
                parse(prefix, size, exports=None)
            assert cut < more.value.needed <= used, cut
        else:
            assert parse(prefix, exports=None).imports == parse(data, exports=None).imports
            assert parse(prefix, size, exports=None).bytes_used == used


def test_every_truncation_of_a_small_elf(fx):
    data = load(get(fx, "libbar"))
    used = parse(data).bytes_used
    _truncations(data, used, range(len(data)))


@pytest.mark.parametrize("name", ["i686_lib", "s390x_lib", "musl_exe", "no_sections"])
def test_truncations_other_layouts(fx, name):
    data = load(get(fx, name))
    used = parse(data).bytes_used
    _truncations(data, used, sorted(set(range(0, 1024)) | set(range(0, len(data), 7))))


# --------------------------------------------------------- malformed input

@pytest.mark.parametrize("blob", [
    b"abc", b"#!/bin/sh\necho hi\n", b"PK\x03\x04" + bytes(200), bytes(100),
    b"MZ\x90\x00" + bytes(300), b"\x7fELX" + bytes(60), b"ELF\x7f" + bytes(60),
], ids=["short", "script", "zip", "zeros", "pe", "almost", "reversed"])
def test_non_elf_input(blob):
    with pytest.raises(ElfError, match="not an ELF"):
        parse(blob)
    with pytest.raises(ElfError, match="not an ELF"):   # even as a prefix of a bigger file
        parse(blob[:4], 10_000)


def test_empty_input():
    with pytest.raises(ElfError):
        parse(b"")
    with pytest.raises(ElfNeedMore) as exc:
        parse(b"", 1000)
    assert 0 < exc.value.needed <= 1000
    with pytest.raises(ValueError):
        parse(b"\x7fELF" + bytes(100), 10)         # file_size smaller than the buffer


@pytest.mark.parametrize("offset,value,words", [
    (4, 0, "class"), (4, 3, "class"), (5, 0, "encoding"), (5, 7, "encoding"),
    (6, 0, "version"), (6, 2, "version"),
])
def test_bad_identification(fx, offset, value, words):
    data = bytearray(load(get(fx, "libbar")))
    data[offset] = value
    with pytest.raises(ElfError, match=words) as exc:
        parse(bytes(data))
    assert not isinstance(exc.value, ElfNeedMore)


def test_bad_program_header_entry_size(fx):
    data = bytearray(load(get(fx, "libbar")))
    struct.pack_into("<H", data, 54, 55)
    with pytest.raises(ElfError, match="program header"):
        parse(bytes(data))


def test_limits(fx):
    data = load(get(fx, "ext"))
    e = parse(data)
    with pytest.raises(ElfError, match="limit"):
        parse(data, max_symbols=e.symbol_count - 1)
    assert parse(data, max_symbols=e.symbol_count).symbol_count == e.symbol_count
    longest = max(len(n) for n in e.needed)
    with pytest.raises(ElfError, match="limit"):
        parse(data, max_strlen=longest - 1)


# ---- hand-made notes (the gABI layout, written out here, not taken from the parser)

def _note(name, ntype, desc, align):
    pad = lambda n: (-n) % align                    # noqa: E731
    hdr = struct.pack("<III", len(name), len(desc), ntype)
    body = hdr + name
    body += b"\0" * pad(len(body))                  # desc starts aligned from the note start
    return body + desc + b"\0" * pad(len(desc))


def _prop(ptype, value, palign):
    data = struct.pack("<I", value)
    return struct.pack("<II", ptype, len(data)) + data + b"\0" * ((-len(data)) % palign)


def _mini_elf(segments_payload, is64=True, extra=b""):
    """An ELF with one PT_NOTE per payload, laid out after the program headers."""
    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    n = len(segments_payload)
    off = ehsize + phentsize * n
    phdrs, body = b"", b""
    for payload, align in segments_payload:
        start = off + len(body)
        if is64:
            phdrs += struct.pack("<IIQQQQQQ", 4, 4, start, start, start, len(payload),
                                 len(payload), align)
        else:
            phdrs += struct.pack("<IIIIIIII", 4, start, start, start, len(payload),
                                 len(payload), 4, align)
        body += payload
    if is64:
        ident = b"\x7fELF\x02\x01\x01" + bytes(9)
        hdr = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, ehsize, 0, 0, ehsize,
                                  phentsize, n, 64, 0, 0)
    else:
        ident = b"\x7fELF\x01\x01\x01" + bytes(9)
        hdr = ident + struct.pack("<HHIIIIIHHHHHH", 3, 3, 1, 0, ehsize, 0, 0, ehsize,
                                  phentsize, n, 40, 0, 0)
    return hdr + phdrs + body + extra


ISA = 0xC0008002        # GNU_PROPERTY_X86_ISA_1_NEEDED
FEATURE = 0xC0000002    # GNU_PROPERTY_X86_FEATURE_1_AND


def test_isa_note_layouts():
    # ELF64: 8-byte aligned note, the property after another property
    desc = _prop(FEATURE, 3, 8) + _prop(ISA, 0b111, 8)
    e = parse(_mini_elf([(_note(b"GNU\0", 5, desc, 8), 8)]))
    assert e.isa_needed == 0b111 and e.x86_isa_level == 3
    # ELF32: 4-byte alignment everywhere
    desc = _prop(FEATURE, 3, 4) + _prop(ISA, 0b11, 4)
    e = parse(_mini_elf([(_note(b"GNU\0", 5, desc, 4), 4)], is64=False))
    assert e.isa_needed == 0b11 and e.x86_isa_level == 2
    # the ISA property in a second property note, after a build-id note and a first property note
    notes = (_note(b"GNU\0", 3, bytes(20), 8) + _note(b"GNU\0", 5, _prop(FEATURE, 1, 8), 8)
             + _note(b"GNU\0", 5, _prop(ISA, 0b1111, 8), 8))
    assert parse(_mini_elf([(notes, 8)])).x86_isa_level == 4
    # a note of another owner with the same type is not a property note
    assert parse(_mini_elf([(_note(b"XYZ\0", 5, _prop(ISA, 7, 8), 8), 8)])).isa_needed is None
    # only in the second of two PT_NOTE segments
    e = parse(_mini_elf([(_note(b"GNU\0", 1, bytes(16), 4), 4),
                         (_note(b"GNU\0", 5, _prop(ISA, 0b11, 8), 8), 8)]))
    assert e.x86_isa_level == 2


def test_isa_note_outside_segment_is_ignored():
    # the segment ends right after an unpadded 1-byte descriptor; a valid ISA note follows
    # in the file, outside the segment: it must not be reported
    inside = struct.pack("<III", 4, 1, 1) + b"GNU\0" + b"\x01"
    outside = b"\0\0\0" + _note(b"GNU\0", 5, _prop(ISA, 0b111, 8), 8)
    e = parse(_mini_elf([(inside, 4)], extra=outside))
    assert e.isa_needed is None


def _parse_in_subprocess(data):
    """Parse in a child process, so a memory error is a test failure, not a dead run."""
    code = textwrap.dedent("""
        import sys
        from fastelf._elf import parse, ElfError
        data = sys.stdin.buffer.read()
        for n in (len(data), len(data) - 1):
            try:
                e = parse(data[:n], len(data))
                print(e.isa_needed)
            except ElfError as exc:
                print("error", type(exc).__name__, exc)
    """)
    return subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                          timeout=60)


def test_unpadded_last_property_stays_in_bounds():
    # ELF64 property arrays are 8-aligned; here the last 4-byte property is not padded and
    # the note ends the file: reading must stop at the end of the descriptor
    desc = struct.pack("<II", ISA, 4) + struct.pack("<I", 0b11)
    note = struct.pack("<III", 4, len(desc), 5) + b"GNU\0" + desc
    proc = _parse_in_subprocess(_mini_elf([(note, 8)]))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().split("\n")
    assert lines[0] == "3" and lines[1].startswith("error ElfNeedMore")


@pytest.mark.parametrize("hashed", [True, False], ids=["gnu-hash", "section-count"])
def test_zero_symbol_entry_size(fx, hashed):
    # DT_SYMENT 0 once divided the section size by zero (SIGFPE) when the symbols were
    # counted from the section headers
    data = load(get(fx, "hash_gnu"))
    if not hashed:
        data = _retag(data, DT_GNU_HASH, 21)
    data = _retag(data, 11, 11, value=0)             # DT_SYMENT = 0
    proc = _parse_in_subprocess(data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith("error ElfError bad DT_SYMENT")


def test_bytes_used_covers_every_segment_asked_for():
    # an ISA note first, then a second (build-id) note segment far later in the file:
    # a prefix of bytes_used bytes must be enough to parse
    first = _note(b"GNU\0", 5, _prop(ISA, 0b11, 8), 8)
    data = _mini_elf([(first, 8), (_note(b"GNU\0", 3, bytes(20), 4), 4)])
    e = parse(data)
    assert e.isa_needed == 0b11
    assert facts(parse(data[:e.bytes_used], len(data))) == facts(e)
    got, _ = feed(data)
    assert facts(got) == facts(e)


# ------------------------------------------------ random damage never crashes

def test_random_damage_raises_only_elf_error(fx):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    data = load(get(fx, "ver_consumer"))
    e = parse(data)
    # the structures the parser reads: header, program headers, dynamic section and
    # everything it points to (up to bytes_used)
    limit = e.bytes_used
    widths = st.sampled_from([1, 2, 4, 8])
    values = st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF,
                              len(data), len(data) - 1, len(data) + 1, 1 << 31])
    edit = st.tuples(st.integers(0, limit - 8), widths, values)

    @settings(max_examples=400, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(edit, min_size=1, max_size=6), st.integers(0, len(data)))
    def check(edits, cut):
        buf = bytearray(data)
        for off, width, value in edits:
            buf[off:off + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        buf = bytes(buf)
        for args in ((buf,), (buf[:cut], len(buf))):
            try:
                r = parse(*args, exports=None)
            except ElfError as exc:
                assert str(exc)
            else:
                assert r.bytes_used <= len(buf)
                for name, ver, lib, bind, typ in r.imports:
                    assert isinstance(name, str) and bind in range(16) and typ in range(16)

    check()
