"""In-process strip, checked against binutils ``strip -s`` on the same input.

Oracles: the section list ``readelf -SW`` prints for fastelf's output equals
the one for ``strip -s``'s output (same sections kept, same order); nm, nm -D,
strip, patchelf and readelf accept fastelf's output exactly as they accept
``strip -s``'s (same exit status and diagnostics); the stripped program still
runs; and the dynamic facts (needed, interpreter, version needs, imports) are
unchanged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elfbuild import compile_c, have_compiler

from fastelf import parse_elf
from fastelf.strip import ElfStripError, strip_elf

pytestmark = pytest.mark.skipif(shutil.which("readelf") is None or shutil.which("strip") is None,
                                reason="binutils not installed")

LIB_C = ("#include <stdio.h>\nstatic int helper(int y) { return y + 1; }\n"
         "int visible(int z) { return helper(z) * 2; }\n"
         "void say(void) { puts(\"hello\"); }\n")
CROSS = {"aarch64": "aarch64-linux-gnu", "i686": "i686-linux-gnu", "s390x": "s390x-linux-gnu",
         "armhf": "arm-linux-gnueabihf"}


def section_names(path: Path) -> list:
    out = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr, out.stderr
    return [m.group(1) for m in re.finditer(r"^\s*\[\s*\d+\]\s+(\S*)", out.stdout, re.MULTILINE)]


def tool_verdicts(path: Path) -> list:
    """(exit status, stderr with the file name masked) of each tool that reads the file."""
    tools = [["nm"], ["nm", "-D"], ["readelf", "-a", "-W"], ["strip", "-s", "-o", "/dev/null"]]
    if shutil.which("patchelf"):
        tools.append(["patchelf", "--print-needed"])
    out = []
    for t in tools:
        r = subprocess.run([*t, str(path)], capture_output=True, text=True)
        out.append((t[0], r.returncode, r.stderr.replace(str(path), "FILE")))
    return out


def compare_with_binutils(src: Path, tmp: Path, strip_tool: str = "strip") -> bytes:
    gnu, ours = tmp / f"{src.name}.gnu", tmp / f"{src.name}.fastelf"
    subprocess.run([strip_tool, "-s", "-o", str(gnu), str(src)], check=True)
    data = strip_elf(src.read_bytes())
    ours.write_bytes(data)
    assert section_names(ours) == section_names(gnu)
    assert ".symtab" not in section_names(ours)
    assert tool_verdicts(ours) == tool_verdicts(gnu)
    before, after = parse_elf(src.read_bytes()), parse_elf(data)
    assert (after.needed, after.soname, after.interpreter, after.version_needs) == \
        (before.needed, before.soname, before.interpreter, before.version_needs)
    assert sorted(after.imports) == sorted(before.imports)
    return data


def test_stripped_executable_runs_and_matches_strip_s(tmp_path):
    src = tmp_path / "ls"
    shutil.copy(shutil.which("ls"), src)
    out = compare_with_binutils(src, tmp_path)
    dst = tmp_path / "ls.run"
    dst.write_bytes(out)
    dst.chmod(0o755)
    run = subprocess.run([str(dst), "/"], capture_output=True, text=True)
    assert run.returncode == 0 and "usr" in run.stdout.split()


@pytest.mark.skipif(not have_compiler("gcc"), reason="gcc needed")
def test_debug_library_loses_symbols_and_debug_sections_like_strip_s(tmp_path):
    lib = compile_c(tmp_path / "b", "libdbg.so", LIB_C, args=["-g", "-Wl,-soname,libdbg.so"])
    assert ".debug_info" in section_names(lib) and ".symtab" in section_names(lib)
    out = compare_with_binutils(lib, tmp_path)
    assert len(out) < lib.stat().st_size
    kept = section_names(tmp_path / "libdbg.so.fastelf")
    assert not any(n.startswith(".debug") for n in kept) and ".dynsym" in kept
    # the stripped library still loads and works
    main = compile_c(tmp_path / "m", "main", "void say(void);\nint main(void){say();return 0;}\n",
                     shared=False, libs=[str(tmp_path / "libdbg.so.fastelf")])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "libdbg.so").write_bytes(out)
    run = subprocess.run([str(main)], capture_output=True, text=True,
                         env={"LD_LIBRARY_PATH": str(tmp_path / "run")})
    assert run.returncode == 0 and run.stdout == "hello\n"


@pytest.mark.parametrize("cc", sorted(CROSS))
def test_cross_libraries_match_strip_s(tmp_path, cc):
    triple = CROSS[cc]
    if not have_compiler(cc) or shutil.which(f"{triple}-strip") is None:
        pytest.skip(f"{triple} toolchain not installed")
    lib = compile_c(tmp_path / "b", "libx.so", LIB_C, args=["-g"], cc=cc)
    compare_with_binutils(lib, tmp_path, f"{triple}-strip")


def test_strip_is_idempotent_and_keeps_a_file_without_section_headers(tmp_path):
    once = strip_elf(open(shutil.which("ls"), "rb").read())
    assert strip_elf(once) == once
    # no section headers at all (what sstrip leaves): only the segments remain
    raw = bytearray(once)
    raw[40:48] = bytes(8)
    raw[60:64] = bytes(4)
    out = strip_elf(bytes(raw))
    assert len(out) < len(once) and parse_elf(out).needed == parse_elf(once).needed


def test_strip_refuses_what_it_cannot_strip(tmp_path):
    with pytest.raises(ElfStripError, match="not an ELF"):
        strip_elf(b"\x00" * 64)
    obj = tmp_path / "a.o"
    (tmp_path / "a.c").write_text("int f(void){return 1;}\n")
    subprocess.run(["gcc", "-c", "-o", str(obj), str(tmp_path / "a.c")], check=True)
    with pytest.raises(ElfStripError, match="program headers"):
        strip_elf(obj.read_bytes())
    data = open(shutil.which("ls"), "rb").read()
    with pytest.raises(ElfStripError):
        strip_elf(data[: len(data) // 3])
