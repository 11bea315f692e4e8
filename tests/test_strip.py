"""In-process strip: the result still loads and runs, and has no section headers."""

import shutil
import subprocess

import pytest

from fastelf import parse_elf
from fastelf.strip import ElfStripError, strip_elf


def _readelf(path, *args):
    return subprocess.run(["readelf", *args, str(path)], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils not installed")
def test_stripped_executable_runs_and_keeps_dynamic_facts(tmp_path):
    src = open(shutil.which("ls"), "rb").read()
    out = strip_elf(src)
    dst = tmp_path / "ls"
    dst.write_bytes(out)
    dst.chmod(0o755)
    assert len(out) < len(src)
    run = subprocess.run([str(dst), "/"], capture_output=True, text=True)
    assert run.returncode == 0 and "usr" in run.stdout.split()
    header = _readelf(dst, "-h").stdout
    assert "Number of section headers:         0" in header
    full = _readelf(dst, "-a", "-W")
    assert "Warning" not in full.stderr and "Error" not in full.stderr
    before, after = parse_elf(src), parse_elf(out)
    assert (after.needed, after.interpreter, after.version_needs) == \
        (before.needed, before.interpreter, before.version_needs)
    assert sorted(after.imports) == sorted(before.imports)


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

