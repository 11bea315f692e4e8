"""Every wheel fastelf writes passes PyPI's upload rules, checked on each writer path.

The checker (pypi_rules.py) parses the zip itself (struct, not fastelf): no data
descriptors, no bytes before the first local header, between members or
after the end record, local and central headers agreeing (name, flags,
method, CRC, sizes), only stored/deflate; then the WHEEL ``Tag:`` lines must
equal the tags of the file name (``packaging.tags.parse_tag``), RECORD must
list every file with its real hash and size (zipfile + hashlib), zipfile must
read every member with a good CRC, and the ``installer`` package (what pip's
install step is built on) must validate RECORD and install the wheel.

Writer paths: repair, repair --strip, retag, a repaired ``.data/scripts``
ELF (moved, with a shim), a repaired ``.data/platlib`` extension, and an input
written with data descriptors (which the output must not keep).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import zipfile
from pathlib import Path

import pytest
from elfbuild import compile_c
from pypi_rules import pypi_zip_problems
from repair_support import EXT, PY, check_record, wheel_tag_lines
from wheelbuild import build_wheel

from fastelf.repair import repair_wheel
from fastelf.retag import retag_wheel

packaging_tags = pytest.importorskip("packaging.tags")


def check_pypi_ready(wheel: Path, tmp: Path) -> None:
    assert pypi_zip_problems(wheel) == []
    check_record(wheel)                       # zipfile reads all, CRCs and RECORD correct
    stem_tags = "-".join(wheel.name[:-len(".whl")].split("-")[-3:])
    assert {str(t) for t in packaging_tags.parse_tag(stem_tags)} == set(wheel_tag_lines(wheel))
    assert len(wheel_tag_lines(wheel)) == len(set(wheel_tag_lines(wheel)))
    install_with_installer(wheel, tmp / "installed")


def install_with_installer(wheel: Path, dest: Path) -> None:
    installer = pytest.importorskip("installer")
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile
    scheme = {k: str(dest / k) for k in ("purelib", "platlib", "headers", "scripts", "data")}
    with WheelFile.open(wheel) as source:
        source.validate_record()
        installer.install(source, SchemeDictionaryDestination(
            scheme, interpreter=sys.executable, script_kind="posix"), {})
    assert any((dest / "platlib").iterdir())


def test_repair_output_is_pypi_ready(fx, tmp_path):
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    check_pypi_ready(Path(res.output), tmp_path)


def test_stripped_repair_output_is_pypi_ready(fx, tmp_path):
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private), strip=True)
    check_pypi_ready(Path(res.output), tmp_path)


def test_retag_output_is_pypi_ready(fx, tmp_path):
    out = retag_wheel(fx.wheel, tmp_path / "out", ["manylinux_2_17_x86_64",
                                                   "manylinux2014_x86_64"])
    check_pypi_ready(Path(out), tmp_path)


def test_scripts_and_platlib_paths_are_pypi_ready_and_install(fx, tmp_path):
    prog = compile_c(tmp_path / "b", "dprog", "extern int baz_value(void);\n"
                     "int main(void) { return baz_value() == 42 ? 0 : 1; }\n",
                     shared=False, libs=["-Wl,--no-as-needed", str(fx.baz),
                                         f"-Wl,-rpath-link,{fx.private}"])
    wheel = build_wheel(tmp_path / "in", {
        "ppkg-1.0.data/platlib/dplat/__init__.py": "from ._ext2 import value\n",
        f"ppkg-1.0.data/platlib/dplat/_ext2{EXT}": fx.ext2,
        "ppkg-1.0.data/scripts/dprog": prog,
    }, name="ppkg", python_tag=PY, abi_tag=PY)
    res = repair_wheel(wheel, tmp_path / "out", ld_library_path=str(fx.private))
    names = zipfile.ZipFile(res.output).namelist()
    assert "ppkg.scripts/dprog" in names and "ppkg-1.0.data/scripts/dprog" in names
    check_pypi_ready(Path(res.output), tmp_path)
    shim = tmp_path / "installed" / "scripts" / "dprog"
    assert shim.read_bytes().startswith(b"#!" + os.fsencode(sys.executable))
    assert shim.stat().st_mode & stat.S_IXUSR


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile must then write data descriptors."""

    def __init__(self, sink: io.BytesIO):
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return self.sink.write(b)


def test_input_with_data_descriptors_gives_clean_output(fx, tmp_path):
    plain = build_wheel(tmp_path / "src", {"pkg/__init__.py": "", f"pkg/_plain{EXT}": fx.plain},
                        name="pkg", python_tag=PY, abi_tag=PY)
    sink = io.BytesIO()
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(_Unseekable(sink), "w",
                                                        zipfile.ZIP_DEFLATED) as dst:
        for zi in src.infolist():
            dst.writestr(zi.filename, src.read(zi))
    dd = tmp_path / "dd" / plain.name
    dd.parent.mkdir()
    dd.write_bytes(sink.getvalue())
    assert any("data descriptor" in p for p in pypi_zip_problems(dd))   # the checker sees it
    res = repair_wheel(dd, tmp_path / "out")
    check_pypi_ready(Path(res.output), tmp_path)


def test_checker_catches_trailing_data_and_header_mismatch(fx, tmp_path):
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    good = Path(res.output).read_bytes()
    trailing = tmp_path / "t.whl"
    trailing.write_bytes(good + b"junk")
    assert "trailing data after the end record" in pypi_zip_problems(trailing)
    bad = bytearray(good)
    struct.pack_into("<I", bad, 14, struct.unpack_from("<I", bad, 14)[0] ^ 1)   # local CRC
    mism = tmp_path / "m.whl"
    mism.write_bytes(bytes(bad))
    assert any("differs" in p for p in pypi_zip_problems(mism))
