"""``repair --strip`` keeps what other tools read: checked with auditwheel 6.8.2 and binutils.

The wheel needs glibc 2.36 (arc4random) through its extension and grafts two
private libraries.  Oracles: ``auditwheel show`` gives the stripped repaired
wheel the same platform tag as the unstripped one (with no section headers it
would see no symbol versions and say manylinux_2_5); readelf finds no
``.symtab`` in any ELF member while nm -D and patchelf still read them; the
extension still imports with the original libraries hidden.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from realwheels import auditwheel_show, have_auditwheel
from repair_support import EXT, PY, check_record, clean_env, extract, hidden
from wheelbuild import build_wheel

from fastelf.repair import repair_wheel

pytestmark = pytest.mark.skipif(not have_auditwheel() or shutil.which("readelf") is None,
                                reason="auditwheel and readelf needed")


def elf_members(root: Path) -> list:
    return [p for p in sorted(root.rglob("*")) if p.is_file()
            and p.read_bytes()[:4] == b"\x7fELF"]


def test_stripped_repair_keeps_auditwheel_tag_and_tools_working(fx, tmp_path):
    wheel = build_wheel(tmp_path / "in", {"pkg/__init__.py": "from ._new import value\n",
                                          f"pkg/_new{EXT}": fx.newsym},
                        name="pkg", version="1.0", tags="linux_x86_64", python_tag=PY, abi_tag=PY)
    plain = repair_wheel(wheel, tmp_path / "plain", ld_library_path=str(fx.private))
    stripped = repair_wheel(wheel, tmp_path / "strip", ld_library_path=str(fx.private),
                            strip=True)
    assert Path(stripped.output).name == Path(plain.output).name
    assert plain.tags[0] == "manylinux_2_36_x86_64"
    check_record(stripped.output)
    shows = [auditwheel_show(w) for w in (plain.output, stripped.output)]
    assert [(s["overall_tag"], s["sym_tag"]) for s in shows] == \
        [("manylinux_2_36_x86_64", "manylinux_2_36_x86_64")] * 2
    x = extract(stripped.output, tmp_path / "x")
    elfs = elf_members(x)
    assert len(elfs) == 3
    for p in elfs:
        sections = subprocess.run(["readelf", "-SW", str(p)], capture_output=True, text=True)
        assert sections.returncode == 0 and not sections.stderr
        assert ".symtab" not in sections.stdout and ".dynsym" in sections.stdout
        nm = subprocess.run(["nm", "-D", str(p)], capture_output=True, text=True)
        assert nm.returncode == 0 and nm.stdout
        if shutil.which("patchelf"):
            pe = subprocess.run(["patchelf", "--print-rpath", str(p)], capture_output=True,
                                text=True)
            assert pe.returncode == 0, pe.stderr
    assert sum(p.stat().st_size for p in elfs) < sum(
        p.stat().st_size for p in elf_members(extract(plain.output, tmp_path / "y")))
    with hidden(fx.private):
        run = subprocess.run([sys.executable, "-c", "import pkg; print(pkg.value())"],
                             cwd=x, capture_output=True, text=True, env=clean_env())
    assert run.returncode == 0, run.stderr
