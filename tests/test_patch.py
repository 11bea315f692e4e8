"""fastelf.patch against real toolchain output, with readelf/patchelf/ld.so as oracles.

Every fixture is compiled here (gcc, musl-gcc and the Debian cross compilers),
patched in process, inspected with readelf and patchelf, and run: natively,
through the musl loader, or under qemu-user with the cross sysroot.  Targets
whose toolchain is missing are skipped.
"""

import os
import shutil
import struct
import subprocess

import pytest
from elfbuild import toolchain_problem

from fastelf._elf import parse
from fastelf.errors import FastElfError
from fastelf.patch import DEFAULT_PAGE_SIZE, ElfPatchError, patch_elf

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_PHDR = 1, 2, 3, 6
PF_W = 2

FOO_C = "int foo(void) { return 42; }\n"
BAR_C = "int bar(void) { return 7; }\n"
MAIN_C = ('#include <stdio.h>\nint foo(void);\n'
          'int main(void) { printf("foo=%d\\n", foo()); return 0; }\n')
VERSION_MAP = "FOO_1.0 { global: foo; local: *; };\n"

# name: (compiler, runner prefix, sysroot that must exist or None)
TARGETS = {
    "x86_64": ("gcc", [], None),
    "musl": ("musl-gcc", [], "/lib/ld-musl-x86_64.so.1"),
    "aarch64": ("aarch64-linux-gnu-gcc", ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
                "/usr/aarch64-linux-gnu"),
    "i686": ("i686-linux-gnu-gcc", ["qemu-i386", "-L", "/usr/i686-linux-gnu"],
             "/usr/i686-linux-gnu"),
    "armhf": ("arm-linux-gnueabihf-gcc", ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"],
              "/usr/arm-linux-gnueabihf"),
    "s390x": ("s390x-linux-gnu-gcc", ["qemu-s390x", "-L", "/usr/s390x-linux-gnu"],
              "/usr/s390x-linux-gnu"),
    "ppc": ("powerpc-linux-gnu-gcc", ["qemu-ppc", "-L", "/usr/powerpc-linux-gnu"],
            "/usr/powerpc-linux-gnu"),
}
LONG_DIR = "some/very/long/path/" + "/".join(["component-%02d-of-a-deep-tree" % i
                                              for i in range(8)]) + "/lib"
LONG_RPATH = "$ORIGIN/../" + LONG_DIR

needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="no readelf")


def _missing(target):
    cc, runner, root = TARGETS[target]
    problem = toolchain_problem(cc)
    if problem:
        return problem
    for tool in runner[:1]:
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if root and not os.path.exists(root):
        return f"{root} missing"
    return None


class Kit:
    """Builds, writes and runs fixtures for one target in one directory."""

    def __init__(self, target, workdir):
        self.target = target
        self.cc, self.runner, _ = TARGETS[target]
        self.dir = workdir
        for name, text in (("foo.c", FOO_C), ("bar.c", BAR_C), ("main.c", MAIN_C),
                           ("v.map", VERSION_MAP)):
            (workdir / name).write_text(text)
        self.build("libfoo.so", "-shared", "-fPIC", "foo.c", "-Wl,-soname,libfoo.so",
                   "-Wl,--version-script=v.map")
        self.build("libbar.so", "-shared", "-fPIC", "bar.c")         # no DT_SONAME
        self.build("main", "main.c", "-L.", "-Wl,--no-as-needed", "-lfoo", "-lbar")

    def build(self, out, *args):
        subprocess.run([self.cc, "-o", out, *args], cwd=self.dir, check=True,
                       capture_output=True)
        return (self.dir / out).read_bytes()

    def read(self, name):
        return (self.dir / name).read_bytes()

    def run(self, path, **kw):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
        return subprocess.run(self.runner + [str(path)], capture_output=True, text=True,
                              env=env, timeout=60, **kw)


_KITS = {}


@pytest.fixture(params=list(TARGETS))
def kit(request, tmp_path_factory):
    reason = _missing(request.param)
    if reason:
        pytest.skip(reason)
    if request.param not in _KITS:
        _KITS[request.param] = Kit(request.param, tmp_path_factory.mktemp(request.param))
    return _KITS[request.param]


@pytest.fixture
def x86(tmp_path_factory):
    if "x86_64" not in _KITS:
        _KITS["x86_64"] = Kit("x86_64", tmp_path_factory.mktemp("x86_64"))
    return _KITS["x86_64"]


# ------------------------------------------------------------------ oracles

def write(path, data, mode=0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def readelf(path, *opts):
    """readelf output; any warning or error on stderr fails the test."""
    r = subprocess.run(["readelf", "-W", *opts, str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", f"readelf {opts} {path}: {r.stderr}"
    return r.stdout


def readelf_clean(path):
    readelf(path, "-a")


def patchelf(path, *opts):
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf not installed")
    r = subprocess.run(["patchelf", *opts, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def dyn_tags(path):
    """{tag name: [values]} from readelf -d."""
    out = {}
    for line in readelf(path, "-d").splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x") and parts[1].startswith("("):
            out.setdefault(parts[1].strip("()"), []).append(parts[2])
    return out


def section_range(path, name):
    """(start, end) file offsets of a section, from readelf -S; (None, None) if absent."""
    for line in readelf(path, "-S").splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[1] == name:
            off, size = int(parts[4], 16), int(parts[5], 16)
            return off, off + size
    return None, None


def header(data):
    """(e_phoff, e_phnum, e_shoff) of an ELF image."""
    e = "<" if data[5] == 1 else ">"
    if data[4] == 2:
        phoff, shoff = struct.unpack_from(e + "QQ", data, 32)
        phnum = struct.unpack_from(e + "H", data, 56)[0]
    else:
        phoff, shoff = struct.unpack_from(e + "II", data, 28)
        phnum = struct.unpack_from(e + "H", data, 44)[0]
    return phoff, phnum, shoff


def loads(data):
    return [s for s in parse(data).segments if s.p_type == PT_LOAD]


def check_layout(data):
    """Loader invariants of program headers, for every page size up to 64 KiB."""
    elf = parse(data)
    segs = elf.segments
    phoff, phnum, _ = header(data)
    ld = [s for s in segs if s.p_type == PT_LOAD]
    assert [s.p_vaddr for s in ld] == sorted(s.p_vaddr for s in ld), "PT_LOAD not sorted by p_vaddr"
    for s in ld:
        assert s.p_align >= 4096 and s.p_offset % s.p_align == s.p_vaddr % s.p_align, \
            f"misaligned PT_LOAD {s}"
        assert s.p_offset + s.p_filesz <= len(data)
    # no two PT_LOADs share a page at the larger of their alignments
    for a, b in zip(ld, ld[1:]):
        page = max(a.p_align, b.p_align) if b.p_align >= DEFAULT_PAGE_SIZE else b.p_align
        assert a.p_vaddr + a.p_memsz <= b.p_vaddr - b.p_vaddr % page, f"overlapping pages: {a} {b}"
    # the program header table is in the memory image
    size = phnum * (56 if elf.elf_class == 64 else 32)
    holder = [s for s in ld if s.p_offset <= phoff and phoff + size <= s.p_offset + s.p_filesz]
    assert holder, "program header table outside every PT_LOAD"
    types = [s.p_type for s in segs]
    if PT_PHDR in types:
        phdr = segs[types.index(PT_PHDR)]
        assert types.index(PT_PHDR) < types.index(PT_LOAD)
        assert phdr.p_offset == phoff and phdr.p_filesz == size
        assert phdr.p_vaddr == holder[0].p_vaddr + phoff - holder[0].p_offset
        # kernels before 5.18 compute AT_PHDR from the first PT_LOAD
        assert ld[0].p_vaddr - ld[0].p_offset + phoff == phdr.p_vaddr
    if PT_INTERP in types:
        assert types.index(PT_INTERP) < types.index(PT_LOAD)
    return elf


def fill_spare_dynamic_slots(data):
    """Use up the DT_NULL slack of .dynamic with duplicate DT_SYMENT entries (as lld
    output has no slack).  Returns the new image and the number of slots used."""
    elf = parse(data)
    dyn = [s for s in elf.segments if s.p_type == PT_DYNAMIC][0]
    esz = 16 if elf.elf_class == 64 else 8
    fmt = ("<" if elf.little_endian else ">") + ("QQ" if elf.elf_class == 64 else "II")
    slots = dyn.p_filesz // esz
    used = len(elf.dynamic)
    syment = dict(elf.dynamic)[11]
    out = bytearray(data)
    for i in range(used, slots - 1):
        struct.pack_into(fmt, out, dyn.p_offset + i * esz, 11, syment)
    return bytes(out), slots - 1 - used


# ---------------------------------------------------------- the main scenario

@needs_readelf
def test_graft_rename_and_long_rpath_runs(kit, tmp_path):
    """auditwheel's repair: hash-renamed lib in a deep dir, NEEDED rewritten,
    a long RPATH that cannot fit in the old .dynstr, an unused NEEDED removed."""
    lib = patch_elf(kit.read("libfoo.so"), set_soname="libfoo-1234abcd.so",
                    set_rpath="$ORIGIN")
    main_in = kit.read("main")
    main = patch_elf(main_in, replace_needed={"libfoo.so": "libfoo-1234abcd.so"},
                     remove_needed=["libbar.so"], set_rpath=LONG_RPATH)
    assert len(LONG_RPATH) > 200
    libpath = write(tmp_path / LONG_DIR / "libfoo-1234abcd.so", lib)
    exe = write(tmp_path / "bin" / "prog", main)
    orig = write(tmp_path / "bin" / "orig", main_in)

    # the unpatched program cannot find its libraries in this tree
    assert kit.run(orig).returncode != 0
    r = kit.run(exe)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "foo=42\n"

    for f in (exe, libpath):
        readelf_clean(f)
        check_layout(f.read_bytes())
    tags = dyn_tags(exe)
    assert tags["NEEDED"][0] == "Shared library: [libfoo-1234abcd.so]"
    assert not any("libbar" in v or "[libfoo.so]" in v for v in tags["NEEDED"])
    assert tags["RPATH"] == [f"Library rpath: [{LONG_RPATH}]"]
    assert "RUNPATH" not in tags
    assert patchelf(exe, "--print-rpath").strip() == LONG_RPATH
    needed = patchelf(exe, "--print-needed").split()
    assert needed[0] == "libfoo-1234abcd.so" and "libbar.so" not in needed
    assert patchelf(libpath, "--print-soname").strip() == "libfoo-1234abcd.so"

    # the symbol-version requirement follows the rename (glibc checks it at load)
    if kit.target != "musl":
        verneed = readelf(exe, "-V")
        assert "File: libfoo-1234abcd.so" in verneed and "File: libfoo.so " not in verneed
        verdef = readelf(libpath, "-V")
        assert "Flags: BASE  Index: 1  Cnt: 1  Name: libfoo-1234abcd.so" in verdef

    # a segment was added at the end, and the original image is intact before it
    assert len(loads(main)) == len(loads(main_in)) + 1
    new = loads(main)[-1]
    assert new[2] >= len(main_in) and new[6] == DEFAULT_PAGE_SIZE
    # with section headers the table grows in place (what binutils expects)
    assert header(main)[:2] == (header(main_in)[0], header(main_in)[1] + 1)


@needs_readelf
def test_in_place_when_the_new_string_fits(kit, tmp_path):
    """A shorter RPATH and a shorter NEEDED name reuse the old strings' bytes."""
    long_rpath = "$ORIGIN/" + "x" * 60
    data = kit.build("main_rp", "main.c", "-L.", "-lfoo", "-Wl,--disable-new-dtags",
                     f"-Wl,-rpath,{long_rpath}")
    assert dyn_tags(write(tmp_path / "in", data))["RPATH"] == [f"Library rpath: [{long_rpath}]"]
    out = patch_elf(data, set_rpath="$ORIGIN/lib", replace_needed={"libfoo.so": "libf.so"})
    assert len(out) == len(data)
    assert parse(out).segments == parse(data).segments
    changed = [i for i in range(len(data)) if data[i] != out[i]]
    assert changed
    allowed = [section_range(tmp_path / "in", name)
               for name in (".dynstr", ".dynamic", ".gnu.version_r")]
    for i in changed:   # only .dynstr, .dynamic and .gnu.version_r bytes changed
        assert any(lo <= i < hi for lo, hi in allowed if lo is not None), hex(i)
    assert b"x" * 60 not in out       # the dead string was cleared
    exe = write(tmp_path / "prog", out)
    write(tmp_path / "lib" / "libf.so", patch_elf(kit.read("libfoo.so"), set_soname="libf.so"))
    readelf_clean(exe)
    assert patchelf(exe, "--print-rpath").strip() == "$ORIGIN/lib"
    r = kit.run(exe)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


@needs_readelf
def test_set_soname_adds_the_tag_and_the_linker_reads_it(kit, tmp_path):
    data = kit.read("libbar.so")
    assert parse(data).soname is None
    out = patch_elf(data, set_soname="libbar-5678.so.1")
    lib = write(tmp_path / "libbar.so", out)
    readelf_clean(lib)
    check_layout(out)
    assert dyn_tags(lib)["SONAME"] == ["Library soname: [libbar-5678.so.1]"]
    assert patchelf(lib, "--print-soname").strip() == "libbar-5678.so.1"
    # ld reads our DT_SONAME and records it as the NEEDED name
    (tmp_path / "use.c").write_text(
        '#include <stdio.h>\nint bar(void);\n'
        'int main(void){printf("bar=%d\\n", bar());return 0;}\n')
    subprocess.run([kit.cc, "-o", "use", "use.c", "-L.", "-lbar", "-Wl,-rpath,$ORIGIN"],
                   cwd=tmp_path, check=True, capture_output=True)
    assert parse((tmp_path / "use").read_bytes()).needed[0] == "libbar-5678.so.1"
    (tmp_path / "libbar-5678.so.1").write_bytes(out)
    r = kit.run(tmp_path / "use")
    assert (r.returncode, r.stdout) == (0, "bar=7\n"), r.stderr


@needs_readelf
def test_runpath_rpath_conversions(kit, tmp_path):
    data = kit.build("main_runpath", "main.c", "-L.", "-lfoo", "-Wl,--enable-new-dtags",
                     "-Wl,-rpath,$ORIGIN/rp")
    src = write(tmp_path / "src", data)
    assert "RUNPATH" in dyn_tags(src) and "RPATH" not in dyn_tags(src)

    forced = write(tmp_path / "forced", patch_elf(data, force_rpath=True))
    tags = dyn_tags(forced)
    assert tags.get("RPATH") == ["Library rpath: [$ORIGIN/rp]"] and "RUNPATH" not in tags
    assert len(forced.read_bytes()) == len(data)      # a tag change only

    back = write(tmp_path / "back", patch_elf(forced.read_bytes(), set_runpath="$ORIGIN/x"))
    tags = dyn_tags(back)
    assert tags.get("RUNPATH") == ["Library runpath: [$ORIGIN/x]"] and "RPATH" not in tags

    gone = write(tmp_path / "gone", patch_elf(back.read_bytes(), remove_rpath=True))
    tags = dyn_tags(gone)
    assert "RPATH" not in tags and "RUNPATH" not in tags
    assert patchelf(gone, "--print-rpath").strip() == ""

    # an added RUNPATH (none before) on the plain program, which then finds its lib
    out = write(tmp_path / "prog", patch_elf(kit.read("main"), set_runpath="$ORIGIN/rp"))
    assert dyn_tags(out)["RUNPATH"] == ["Library runpath: [$ORIGIN/rp]"]
    write(tmp_path / "rp" / "libfoo.so", kit.read("libfoo.so"))
    write(tmp_path / "rp" / "libbar.so", kit.read("libbar.so"))
    for f in (forced, back, gone, out):
        readelf_clean(f)
    r = kit.run(out)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


@needs_readelf
def test_no_spare_dynamic_slot_relocates_dynamic(kit, tmp_path):
    """Like lld output: no DT_NULL slack.  Adding DT_SONAME/DT_RPATH moves
    .dynamic into the new RW segment; the loader then writes DT_DEBUG there."""
    full, used = fill_spare_dynamic_slots(kit.read("main"))
    assert used >= 0
    out = patch_elf(full, set_soname="prog", set_rpath="$ORIGIN/l")
    elf = check_layout(out)
    dyn = [s for s in elf.segments if s.p_type == PT_DYNAMIC][0]
    new = loads(out)[-1]
    assert new.p_offset <= dyn.p_offset
    assert dyn.p_offset + dyn.p_filesz <= new.p_offset + new.p_filesz
    assert new.p_flags & PF_W
    exe = write(tmp_path / "prog", out)
    readelf_clean(exe)
    assert "Dynamic section at offset 0x%x" % dyn.p_offset in readelf(exe, "-d")
    sect = [ln for ln in readelf(exe, "-S").splitlines() if " .dynamic " in ln][0]
    assert "%06x" % dyn.p_offset in sect
    assert patchelf(exe, "--print-soname").strip() == "prog"
    write(tmp_path / "l" / "libfoo.so", kit.read("libfoo.so"))
    write(tmp_path / "l" / "libbar.so", kit.read("libbar.so"))
    r = kit.run(exe)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


@needs_readelf
def test_repatch_extends_the_added_segment(kit, tmp_path):
    once = patch_elf(kit.read("main"), set_rpath="$ORIGIN/" + "a" * 100)
    twice = patch_elf(once, set_rpath="$ORIGIN/" + "b" * 300 + ":$ORIGIN/lib")
    assert len(loads(twice)) == len(loads(once)) == len(loads(kit.read("main"))) + 1
    assert loads(twice)[-1][4] > loads(once)[-1][4]
    check_layout(twice)
    exe = write(tmp_path / "prog", twice)
    readelf_clean(exe)
    write(tmp_path / "lib" / "libfoo.so", kit.read("libfoo.so"))
    write(tmp_path / "lib" / "libbar.so", kit.read("libbar.so"))
    r = kit.run(exe)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


@needs_readelf
def test_without_section_headers(kit, tmp_path):
    data = bytearray(kit.read("main"))
    if data[4] == 2:
        struct.pack_into(("<" if data[5] == 1 else ">") + "Q", data, 40, 0)
        struct.pack_into(("<" if data[5] == 1 else ">") + "HHH", data, 58, 0, 0, 0)
    else:
        struct.pack_into(("<" if data[5] == 1 else ">") + "I", data, 32, 0)
        struct.pack_into(("<" if data[5] == 1 else ">") + "HHH", data, 46, 0, 0, 0)
    full, _ = fill_spare_dynamic_slots(bytes(data))
    out = patch_elf(full, replace_needed={"libfoo.so": "libfoo-1234abcd.so"},
                    set_rpath=LONG_RPATH, set_soname="x")
    check_layout(out)
    # no section headers tell what follows the program headers: the table moves
    assert header(out)[0] >= len(full) and header(out)[1] == header(full)[1] + 1
    exe = write(tmp_path / "bin" / "prog", out)
    assert "There are no sections in this file" in readelf(exe, "-S")
    readelf(exe, "-l", "-d")
    write(tmp_path / LONG_DIR / "libfoo-1234abcd.so",
          patch_elf(kit.read("libfoo.so"), set_soname="libfoo-1234abcd.so"))
    write(tmp_path / LONG_DIR / "libbar.so", kit.read("libbar.so"))
    r = kit.run(exe)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


# ------------------------------------------------------- x86-64 specifics

@needs_readelf
def test_explicit_loader_and_strip(x86, tmp_path):
    """Run through ld.so as a program (it maps the executable itself), and
    check binutils strip keeps a patched file working."""
    out = patch_elf(x86.read("main"), replace_needed={"libfoo.so": "libfoo-1234abcd.so"},
                    set_rpath=LONG_RPATH)
    exe = write(tmp_path / "bin" / "prog", out)
    write(tmp_path / LONG_DIR / "libfoo-1234abcd.so",
          patch_elf(x86.read("libfoo.so"), set_soname="libfoo-1234abcd.so"))
    write(tmp_path / LONG_DIR / "libbar.so", x86.read("libbar.so"))
    interp = parse(out).interpreter
    r = subprocess.run([interp, str(exe)], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr
    if shutil.which("strip"):
        subprocess.run(["strip", "-s", str(exe)], check=True, capture_output=True)
        readelf_clean(exe)
        assert parse(exe.read_bytes()).rpath == LONG_RPATH
        r = subprocess.run([str(exe)], capture_output=True, text=True)
        assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


def test_page_size_option(x86):
    out = patch_elf(x86.read("libfoo.so"), set_rpath="$ORIGIN/" + "z" * 300, page_size=4096)
    new = loads(out)[-1]
    assert new[6] == 4096 and new[2] % 4096 == new[3] % 4096
    with pytest.raises(ValueError):
        patch_elf(x86.read("libfoo.so"), set_rpath="x", page_size=1000)


def test_shared_library_gets_no_executable_padding(x86):
    data = x86.read("libfoo.so")
    out = patch_elf(data, set_rpath="$ORIGIN/" + "z" * 300)
    new = loads(out)[-1]
    assert new[2] < len(data) + 16          # appended right after the old end
    assert new[3] % DEFAULT_PAGE_SIZE == new[2] % DEFAULT_PAGE_SIZE
    check_layout(out)


def test_input_is_not_modified_and_noop(x86):
    data = bytearray(x86.read("main"))
    before = bytes(data)
    out = patch_elf(data, set_rpath=LONG_RPATH, replace_needed={"libfoo.so": "libq.so"})
    assert bytes(data) == before and out != before
    assert patch_elf(before) == before
    same = patch_elf(before, replace_needed={"libfoo.so": "libfoo.so"})
    assert parse(same).needed == parse(before).needed


def test_reuses_existing_strings(x86):
    """A new NEEDED equal to an existing string (here the soname of libc's
    verneed file) costs no new bytes."""
    data = x86.read("main")
    out = patch_elf(data, replace_needed={"libbar.so": "libc.so.6"})
    assert len(out) == len(data)
    assert parse(out).needed == ["libfoo.so", "libc.so.6", "libc.so.6"]


# ------------------------------------------------------------------ errors

def test_errors(x86, tmp_path):
    main = x86.read("main")
    with pytest.raises(ElfPatchError, match="not an ELF"):
        patch_elf(b"#!/bin/sh\n", set_soname="x")
    with pytest.raises(ElfPatchError, match="not in DT_NEEDED: libnope.so"):
        patch_elf(main, replace_needed={"libnope.so": "x.so"})
    with pytest.raises(ElfPatchError, match="symbol versions are required"):
        patch_elf(main, remove_needed=["libc.so.6"])
    with pytest.raises(ElfPatchError):
        patch_elf(main[:1000], set_soname="x")
    subprocess.run(["gcc", "-c", "-o", "foo.o", "foo.c"], cwd=x86.dir, check=True)
    with pytest.raises(ElfPatchError, match="not an executable or shared object"):
        patch_elf(x86.read("foo.o"), set_soname="x")
    with pytest.raises(ValueError):
        patch_elf(main, set_rpath="a", set_runpath="b")
    with pytest.raises(ValueError):
        patch_elf(main, set_rpath="")
    with pytest.raises(ValueError):
        patch_elf(main, set_rpath="a\0b")
    with pytest.raises(ValueError):
        patch_elf(main, remove_rpath=True, set_rpath="a")
    with pytest.raises(ValueError):
        patch_elf(main, replace_needed={"libfoo.so": "a"}, remove_needed=["libfoo.so"])
    assert issubclass(ElfPatchError, FastElfError)


def test_hostile_inputs_raise_only_patch_errors(x86):
    """Corrupted copies of a real library: a clean error or a parseable result."""
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    base = x86.read("libfoo.so")
    dyn = [s for s in parse(base).segments if s.p_type == PT_DYNAMIC][0]
    hot = list(range(0, 64 + 56 * 12)) + list(range(dyn.p_offset, dyn.p_offset + dyn.p_filesz))

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(st.lists(st.tuples(st.sampled_from(hot) | st.integers(0, len(base) - 1),
                                         st.integers(0, 255)), min_size=1, max_size=8),
                      st.booleans())
    def run(edits, grow):
        data = bytearray(base)
        for off, val in edits:
            data[off] = val
        try:
            out = patch_elf(bytes(data), set_soname="libx.so",
                            set_rpath="$ORIGIN/" + ("q" * 400 if grow else "q"))
        except ElfPatchError:
            return
        elf = parse(out)
        assert elf.soname == "libx.so"
    run()


# ------------------------------------------------ buffers handed to patch_elf

@needs_readelf
def test_reuse_input_patches_the_callers_bytearray(kit, tmp_path):
    """reuse_input=True grows and patches the caller's bytearray itself (no second
    copy of the file): the same bytes as the default result, read by readelf and
    patchelf and run by the loader."""
    args = dict(replace_needed={"libfoo.so": "libfoo-1234abcd.so"}, set_rpath=LONG_RPATH)
    main = kit.read("main")
    buf = bytearray(main)
    out = patch_elf(buf, reuse_input=True, **args)
    assert out is buf and len(buf) > len(main)        # grown in place: relocated tables
    assert bytes(buf) == patch_elf(main, **args)
    exe = write(tmp_path / "bin" / "prog", bytes(buf))
    readelf_clean(exe)
    assert patchelf(exe, "--print-rpath").strip() == LONG_RPATH
    lib = bytearray(kit.read("libfoo.so"))
    assert patch_elf(lib, set_soname="libfoo-1234abcd.so", reuse_input=True) is lib
    write(tmp_path / LONG_DIR / "libfoo-1234abcd.so", bytes(lib))
    write(tmp_path / LONG_DIR / "libbar.so", kit.read("libbar.so"))
    r = kit.run(exe)
    assert (r.returncode, r.stdout) == (0, "foo=42\n"), r.stderr


def test_reuse_input_refusals_leave_the_buffer(x86):
    """A refused patch leaves the given bytearray as it was, and still resizable
    (no view of it outlives the call, even while the error is held)."""
    main = x86.read("main")
    buf = bytearray(main)
    with pytest.raises(ElfPatchError, match="not in DT_NEEDED: libnope.so") as err:
        patch_elf(buf, replace_needed={"libnope.so": "x.so"}, set_rpath=LONG_RPATH,
                  reuse_input=True)
    assert bytes(buf) == main
    buf += b"more"                      # BufferError if a view were still exported
    assert err.value is not None
    assert patch_elf(buf[:len(main)], reuse_input=True) == main       # nothing to do
    with pytest.raises(TypeError, match="reuse_input needs a bytearray"):
        patch_elf(main, set_soname="x", reuse_input=True)


def test_memoryview_input_is_read_in_place(x86):
    """A memoryview (here of part of a larger buffer, as a zip member may be) gives
    the bytes result of the same input as bytes, and stays the caller's to use."""
    main = x86.read("main")
    big = bytearray(b"junk" + main + b"tail")
    view = memoryview(big)[4:4 + len(main)]
    out = patch_elf(view, set_rpath=LONG_RPATH)
    assert isinstance(out, bytes) and out == patch_elf(main, set_rpath=LONG_RPATH)
    assert parse(out).rpath == LONG_RPATH
    assert view.tobytes() == main and big[4:4 + len(main)] == main     # untouched, usable
