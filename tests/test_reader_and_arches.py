"""The wheel reader's economy (zero-copy stored members, early stop when
inflating) and the architectures no cross compiler here produces."""

from __future__ import annotations

import json
import mmap
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elfbuild import compile_c, need
from wheelbuild import build_wheel

from fastelf import parse_elf
from fastelf.audit import audit_wheel
from fastelf.elfscan import iter_elf_members
from fastelf.wheel import STORED, WheelReader

AUDITWHEEL_POLICY = None
try:
    import auditwheel.policy as _awp
    AUDITWHEEL_POLICY = Path(_awp.__file__).with_name("manylinux-policy.json")
except ImportError:  # pragma: no cover
    pass

SRC = "int answer(void) { return 42; }\n"


@pytest.fixture(scope="module")
def plain_so(tmp_path_factory):
    """A small shared object with no NEEDED and no versioned symbols."""
    d = tmp_path_factory.mktemp("plain")
    return need(compile_c(d, "libplain.so", SRC, args=["-nostdlib"]))


@pytest.fixture(scope="module")
def padded_so(tmp_path_factory, plain_so):
    """The same object with 3 MiB of incompressible non-allocated data at its end."""
    if shutil.which("objcopy") is None:
        pytest.skip("binutils not installed")
    d = tmp_path_factory.mktemp("padded")
    junk = d / "junk.bin"
    junk.write_bytes(bytes((i * 7919 + (i >> 9) * 31) & 0xFF for i in range(3 << 20)))
    out = d / "libpadded.so"
    subprocess.run(["objcopy", "--add-section", f".junk={junk}", str(plain_so), str(out)],
                   check=True)
    return out


def test_deflated_member_is_inflated_only_as_far_as_the_audit_needs(tmp_path, padded_so):
    data = padded_so.read_bytes()
    elf = parse_elf(data)
    assert elf.bytes_used < len(data) // 10          # what the loader-facing parts need
    wheel = build_wheel(tmp_path, {"pkg/libpadded.so": data}, name="pkg")
    with WheelReader(wheel) as reader:
        found = list(iter_elf_members(reader))
        member = reader.member("pkg/libpadded.so")
        assert member.size == len(data)
        assert [m.name for m, _ in found] == ["pkg/libpadded.so"]
        assert found[0][1].needed == elf.needed and found[0][1].soname == elf.soname
        # the junk section at the end was never inflated
        assert 0 < reader.inflated < len(data) // 2


def test_stored_member_is_read_not_mapped(tmp_path, plain_so):
    data = plain_so.read_bytes()
    wheel = build_wheel(tmp_path, {"pkg/libplain.so": data}, name="pkg", compression=0)
    with WheelReader(wheel) as reader:
        member = reader.member("pkg/libplain.so")
        assert member.method == STORED
        view = reader.stream(member).data()
        # read by pread, not mapped: truncating the file cannot kill the reader
        assert isinstance(view, memoryview) and not isinstance(view.obj, mmap.mmap)
        assert view.tobytes() == data
        list(iter_elf_members(reader))
        assert reader.inflated == 0                  # nothing was inflated or copied
        view.release()


def _relabel(data: bytes, machine: int) -> bytes:
    """The same ELF image with another e_machine (a header-only change)."""
    out = bytearray(data)
    le = out[5] == 1
    struct.pack_into("<H" if le else ">H", out, 18, machine)
    return bytes(out)


def _first_policy(arch):
    names = json.loads(AUDITWHEEL_POLICY.read_text())
    ordered = sorted((p for p in names if arch in p["symbol_versions"]),
                     key=lambda p: -p["priority"])
    return ordered[0]["name"]


@pytest.mark.skipif(AUDITWHEEL_POLICY is None, reason="auditwheel (the oracle) not installed")
@pytest.mark.parametrize("machine,arch", [(21, "ppc64le"), (243, "riscv64"),
                                          (258, "loongarch64")])
def test_little_endian_64_bit_arches(tmp_path, plain_so, machine, arch):
    data = _relabel(plain_so.read_bytes(), machine)
    assert parse_elf(data).arch == arch
    wheel = build_wheel(tmp_path, {"pkg/libplain.so": data}, name="pkg",
                        tags=f"linux_{arch}")
    r = audit_wheel(wheel)
    # no libraries, no versions: the most compatible policy auditwheel lists for the arch
    assert r.arch == arch and r.best_tag == f"{_first_policy(arch)}_{arch}"


@pytest.mark.skipif(AUDITWHEEL_POLICY is None, reason="auditwheel (the oracle) not installed")
def test_big_endian_ppc64(tmp_path, tmp_path_factory):
    lib = need(compile_c(tmp_path_factory.mktemp("s390x"), "libbe.so", SRC, cc="s390x",
                         args=["-nostdlib"]), "big-endian fixture", cc="s390x")
    data = _relabel(lib.read_bytes(), 21)
    elf = parse_elf(data)
    assert (elf.arch, elf.little_endian, elf.elf_class) == ("ppc64", False, 64)
    wheel = build_wheel(tmp_path, {"pkg/libbe.so": data}, name="pkg", tags="linux_ppc64")
    assert audit_wheel(wheel).best_tag == f"{_first_policy('ppc64')}_ppc64"
