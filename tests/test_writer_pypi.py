"""Every wheel fastelf writes passes PyPI's upload rules, checked on each writer path.

The checker here parses the zip itself (struct, not fastelf): no data
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
from test_repair import EXT, PY, check_record, fx, wheel_tag_lines  # noqa: F401
from wheelbuild import build_wheel

from fastelf.repair import repair_wheel
from fastelf.retag import retag_wheel

packaging_tags = pytest.importorskip("packaging.tags")


def _zip64_values(extra: bytes, wanted: int) -> list:
    """The first ``wanted`` 8-byte values of the zip64 extra field (id 1), or []."""
    i = 0
    while i + 4 <= len(extra):
        hid, size = struct.unpack_from("<HH", extra, i)
        if hid == 1:
            return list(struct.unpack_from(f"<{wanted}Q", extra, i + 4)) if wanted else []
        i += 4 + size
    return []


def _resolve(values: list, extra: bytes) -> list:
    """Replace 0xFFFFFFFF fields by their zip64 values, in order."""
    big = [i for i, v in enumerate(values) if v == 0xFFFFFFFF]
    z = _zip64_values(extra, len(big))
    out = list(values)
    for i, v in zip(big, z):
        out[i] = v
    return out


def pypi_zip_problems(path: Path) -> list:
    """PyPI's structural rules, checked from the bytes; [] when the file passes."""
    data = Path(path).read_bytes()
    problems = []
    eocd = data.rfind(b"PK\x05\x06")
    assert eocd >= 0, "no end of central directory record"
    (_sig, _d, _dcd, _n1, count, cd_size, cd_off, clen) = struct.unpack_from(
        "<4sHHHHIIH", data, eocd)
    if eocd + 22 + clen != len(data):
        problems.append("trailing data after the end record")
    cd_end_expected = eocd
    loc = data.rfind(b"PK\x06\x07", 0, eocd)
    if loc >= 0 and loc == eocd - 20:
        z64_off = struct.unpack_from("<Q", data, loc + 8)[0]
        (_s, _sz, _vm, _vn, _dn, _dcd, _c1, count, cd_size, cd_off) = struct.unpack_from(
            "<4sQHHIIQQQQ", data, z64_off)
        cd_end_expected = z64_off
    if cd_off + cd_size != cd_end_expected:
        problems.append("bytes between the central directory and the end record")
    pos, expected_local = cd_off, 0
    for _ in range(count):
        (sig, _vm, _vn, flags, method, _t, _dt, crc, csize, usize, nlen, xlen, clen2,
         _disk, _ia, _ea, off) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", data, pos)
        assert sig == b"PK\x01\x02"
        name = data[pos + 46:pos + 46 + nlen]
        extra = data[pos + 46 + nlen:pos + 46 + nlen + xlen]
        usize, csize, off = _resolve([usize, csize, off], extra)
        pos += 46 + nlen + xlen + clen2
        if flags & 0x8:
            problems.append(f"{name!r}: data descriptor flag")
        if method not in (0, 8):
            problems.append(f"{name!r}: compression method {method}")
        if off != expected_local:
            problems.append(f"{name!r}: local header at {off}, expected {expected_local}")
        (lsig, _lv, lflags, lmethod, _lt, _ld, lcrc, lcs, lus, lnlen, lxlen) = \
            struct.unpack_from("<4sHHHHHIIIHH", data, off)
        lname = data[off + 30:off + 30 + lnlen]
        lextra = data[off + 30 + lnlen:off + 30 + lnlen + lxlen]
        lus, lcs = _resolve([lus, lcs], lextra)
        if (lsig, lname, lflags, lmethod, lcrc, lcs, lus) != \
                (b"PK\x03\x04", name, flags, method, crc, csize, usize):
            problems.append(f"{name!r}: local header differs from the central one")
        expected_local = off + 30 + lnlen + lxlen + csize
    if expected_local != cd_off:
        problems.append("bytes between the last member and the central directory")
    return problems


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


def test_repair_output_is_pypi_ready(fx, tmp_path):  # noqa: F811
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private))
    check_pypi_ready(Path(res.output), tmp_path)


def test_stripped_repair_output_is_pypi_ready(fx, tmp_path):  # noqa: F811
    res = repair_wheel(fx.wheel, tmp_path / "out", ld_library_path=str(fx.private), strip=True)
    check_pypi_ready(Path(res.output), tmp_path)


def test_retag_output_is_pypi_ready(fx, tmp_path):  # noqa: F811
    out = retag_wheel(fx.wheel, tmp_path / "out", ["manylinux_2_17_x86_64",
                                                   "manylinux2014_x86_64"])
    check_pypi_ready(Path(out), tmp_path)


def test_scripts_and_platlib_paths_are_pypi_ready_and_install(fx, tmp_path):  # noqa: F811
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


def test_input_with_data_descriptors_gives_clean_output(fx, tmp_path):  # noqa: F811
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


def test_checker_catches_trailing_data_and_header_mismatch(fx, tmp_path):  # noqa: F811
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
