"""Memory stays bounded and reading cannot be killed (issue "Hostile input, round 2").

- The sparse parse of big ELF members (only the regions the parser asks for
  are inflated and kept) gives exactly the full parse's result, on host
  libraries and on gcc-built files whose tables patchelf moved to the end,
  with every byte never materialized set to a poison value.
- Peak RSS of a fresh process auditing hostile wheels stays under the
  documented ``UNTRUSTED_MEMORY_BOUND`` (measured: VmHWM).
- A wheel truncated or touched while it is read gives a one-line error, no
  signal death; endless streams and huge NEEDED / version tables hit limits.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import hostile_support as hs
import pytest

from fastelf import elfscan
from fastelf._elf import parse
from fastelf.audit import audit_path, audit_wheel
from fastelf.errors import LimitError
from fastelf.wheel import UNTRUSTED_LIMITS, UNTRUSTED_MEMORY_BOUND, Limits, WheelReader

SRC = str(Path(__file__).resolve().parents[1] / "src")
FIELDS = ("needed", "soname", "rpath", "runpath", "interpreter", "imports", "exports",
          "version_needs", "version_defs", "symbol_count", "segments", "dynamic",
          "isa_needed", "exec_stack", "bytes_used", "machine", "elf_class")


def _facts(elf) -> dict:
    return {f: getattr(elf, f) for f in FIELDS}


def _readelf_needed(path: Path) -> list:
    out = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def _wheel_of(path: Path, members: dict, level: int = 1) -> Path:
    """A wheel holding ``members`` (name -> bytes or Path, streamed into the zip)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for name, data in members.items():
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o100644 << 16
            with z.open(zi, "w", force_zip64=True) as out:
                if isinstance(data, Path):
                    with open(data, "rb") as f:
                        shutil.copyfileobj(f, out, 16 << 20)
                else:
                    out.write(data)
    return path


def _tables_after_zeros(tmp_path: Path, mib: int) -> Path:
    """A gcc-built library with ``mib`` MiB of zero .rodata, then patchelf
    --add-needed, which moves .dynamic/.dynstr/.dynsym past the zeros."""
    for tool in ("gcc", "patchelf", "readelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    src = tmp_path / "big.c"
    src.write_text(f"const char big[{mib}u << 20] = {{1}};\nextern int foo(void);\n"
                   "int f(void) { return big[12345] + foo(); }\n")
    so = tmp_path / "libbig.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(so), str(src),
                    "-Wl,--no-as-needed", "-lz"], check=True)
    subprocess.run(["patchelf", "--add-needed", "libextra.so.7", str(so)], check=True)
    return so


# ------------------------------------------------------------ sparse == full

def _sparse_results(monkeypatch, files: dict) -> dict:
    """Parse each file through the sparse path with tiny granules (many rounds,
    passes that restart) and every unmaterialized byte poisoned."""
    monkeypatch.setattr(elfscan, "_POISON", 0xA5)
    monkeypatch.setattr(elfscan, "_HEAD", 4096)
    monkeypatch.setattr(elfscan, "_GRANULE", 16384)
    monkeypatch.setattr(elfscan, "_MAX_ROUNDS", 10_000)
    monkeypatch.setattr(elfscan, "_MAX_PASSES", 10_000)
    data = hs.make_wheel({f"pkg/{n}": d for n, d in files.items()})
    out = {}
    with WheelReader(data, Limits(max_elf_contiguous=0)) as rd:
        for m in rd.members:
            if m.name.startswith("pkg/"):
                stream = rd.stream(m)
                assert not stream.in_memory
                out[m.name[4:]] = elfscan.parse_member(stream, elfscan.extension_init_names(m.name))
    return out


def test_poison_is_seen_if_the_parser_reads_a_byte_it_was_not_given():
    """The check below has teeth: claiming poisoned bytes are present changes the result."""
    so = hs.SEEDS / "x86_64-sysv-hash.so"
    data = so.read_bytes()
    poisoned = bytearray(b"\xa5" * len(data))
    poisoned[:64 + 56 * 2] = data[:64 + 56 * 2]       # header and first program headers only
    try:
        lied = _facts(parse(bytes(poisoned), present=[(0, len(data))]))
    except ValueError:
        lied = None
    assert lied != _facts(parse(data))


def test_sparse_parse_equals_full_parse_on_host_libraries(monkeypatch):
    paths = sorted(p for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")
                   if os.path.isfile(p) and not os.path.islink(p))
    paths = [p for p in paths if os.path.getsize(p) < 4 << 20
             and Path(p).read_bytes()[:4] == b"\x7fELF"][::4][:40]
    if len(paths) < 10:
        pytest.skip("too few host libraries")
    files = {os.path.basename(p): Path(p).read_bytes() for p in paths}
    files.update({n: d for n, d in hs.seed_elfs().items() if d[:4] == b"\x7fELF"})
    got = _sparse_results(monkeypatch, files)
    for name, data in files.items():
        try:
            want = _facts(parse(data, exports=elfscan.extension_init_names("pkg/" + name)))
        except ValueError:
            continue
        assert _facts(got[name]) == want, name


def test_sparse_parse_of_patchelf_moved_tables(tmp_path, monkeypatch):
    """Tables at the very end (after patchelf) and behind the stream: same facts, and
    readelf's NEEDED."""
    so = _tables_after_zeros(tmp_path, 2)
    data = so.read_bytes()
    got = _sparse_results(monkeypatch, {"libbig.so": data})["libbig.so"]
    assert _facts(got) == _facts(parse(data, exports=("PyInit_libbig",)))
    assert got.needed == _readelf_needed(so)


# ------------------------------------------------------------ peak memory

_CHILD = textwrap.dedent("""
    import json, sys
    from fastelf import wheel
    from fastelf.audit import audit_path
    limits = wheel.UNTRUSTED_LIMITS if sys.argv[2] == "untrusted" else wheel.DEFAULT_LIMITS
    r = audit_path(sys.argv[1], limits=limits)
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"peak": hwm << 10, "error": r.error}))
""")


def _audit_peak(wheel: Path, limits: str = "untrusted") -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(wheel), limits], check=False,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _elf_with_dynamic_at(size: int, needed: bytes = b"libfar.so.3") -> tuple:
    """An ELF64 of ``size`` bytes, all zeros but its headers and, in the last
    bytes, a dynamic section and string table naming ``needed``."""
    tail_off = size - 4096
    strtab = b"\0" + needed + b"\0"
    dyn = struct.pack("<8Q", 5, tail_off + 512, 10, len(strtab), 1, 1, 0, 0)
    head = bytearray(64 + 2 * 56)
    head[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", head, 16, 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    struct.pack_into("<IIQQQQQQ", head, 64, 1, 5, 0, 0, 0, size, size, 4096)
    struct.pack_into("<IIQQQQQQ", head, 120, 2, 6, tail_off, tail_off, tail_off,
                     len(dyn), len(dyn), 8)
    tail = bytearray(4096)
    tail[:len(dyn)] = dyn
    tail[512:512 + len(strtab)] = strtab
    return bytes(head), bytes(tail)


def _stream_elf_wheel(path: Path, size: int) -> Path:
    head, tail = _elf_with_dynamic_at(size)
    with zipfile.ZipFile(path, "w", compresslevel=1) as z:
        zi = zipfile.ZipInfo("pkg/huge.so", date_time=(2020, 1, 1, 0, 0, 0))
        zi.compress_type = zipfile.ZIP_DEFLATED
        with z.open(zi, "w", force_zip64=True) as out:
            out.write(head)
            zeros = bytes(16 << 20)
            left = size - len(head) - len(tail)
            while left:
                out.write(zeros[:min(left, len(zeros))])
                left -= min(left, len(zeros))
            out.write(tail)
    return path


def test_huge_zero_member_with_tables_at_its_end_stays_under_the_bound(tmp_path):
    """1 GiB declared, 1 MB compressed, its dynamic section in the last page: the
    whole member is streamed, only the head and the tail kept."""
    wheel = _stream_elf_wheel(tmp_path / "huge-1.0-cp311-cp311-linux_x86_64.whl", 1 << 30)
    assert os.path.getsize(wheel) < 2 << 20
    res = _audit_peak(wheel)
    assert res["error"] is None
    assert res["peak"] < UNTRUSTED_MEMORY_BOUND, res
    with WheelReader(wheel) as rd:          # and it read the right bytes
        (_, elf), = list(elfscan.iter_elf_members(rd))
    assert elf.needed == ["libfar.so.3"]


@pytest.mark.parametrize("limits", ["untrusted", "default"])
def test_tables_after_a_huge_zero_middle_stay_under_the_bound(tmp_path, limits):
    so = _tables_after_zeros(tmp_path, 320)
    wheel = _wheel_of(tmp_path / "big-1.0-cp311-cp311-linux_x86_64.whl", {"pkg/libbig.so": so})
    res = _audit_peak(wheel, limits)
    assert res["error"] is None, res
    assert res["peak"] < UNTRUSTED_MEMORY_BOUND, res
    with WheelReader(wheel) as rd:
        (_, elf), = list(elfscan.iter_elf_members(rd))
    assert elf.needed == _readelf_needed(so)


def test_zip_bomb_member_declaring_4_gib_is_refused_small(tmp_path):
    """A member declaring 4 GiB of zeros from a tiny payload: refused before inflating."""
    e = hs.Entry("pkg/bomb.so", b"", method=8, payload=b"\x03\x00", usize=(4 << 30) - 1,
                 csize=2, zip64=True)
    wheel = tmp_path / "bomb-1.0-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(hs.build_zip([e]))
    res = _audit_peak(wheel)
    assert res["error"] and ("bomb" in res["error"] or "ratio" in res["error"]), res
    assert res["peak"] < UNTRUSTED_MEMORY_BOUND


# ------------------------------------------------------------ no SIGBUS

_TRUNCATE_CHILD = textwrap.dedent("""
    import os, sys
    from fastelf import wheel
    from fastelf.audit import audit_path
    path, after, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    real, calls = wheel._pread, [0]
    def pread(fd, size, offset):
        calls[0] += 1
        if calls[0] == after:        # another process rewrites the wheel mid-read
            if how == "truncate":
                os.truncate(path, os.path.getsize(path) // 2)
            else:
                os.utime(path, ns=(1, 1))
        return real(fd, size, offset)
    wheel._pread = pread
    r = audit_path(path, limits=wheel.Limits(max_elf_contiguous=0))
    print(r.error)
""")


@pytest.mark.parametrize("how", ["truncate", "touch"])
def test_wheel_changed_while_read_is_a_one_line_error(tmp_path, how):
    """A stored 24 MiB ELF is read by ranges; the file is truncated (or its mtime
    changed) after a few reads.  A shared mapping would die of SIGBUS here."""
    head, tail = _elf_with_dynamic_at(24 << 20)
    data = head + bytes((24 << 20) - len(head) - len(tail)) + tail
    wheel = tmp_path / "cut-1.0-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(hs.make_wheel({"pkg/cut.so": data}, compression=zipfile.ZIP_STORED))
    out = subprocess.run([sys.executable, "-c", _TRUNCATE_CHILD, str(wheel), "4", how],
                         check=False, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert out.returncode == 0, out.stderr           # no signal death, no traceback
    line = out.stdout.strip()
    assert "\n" not in line and line.startswith(str(wheel)), line
    assert "changed while being read" in line, line


def test_endless_or_unseekable_stream_is_capped():
    with open("/dev/zero", "rb") as f, pytest.raises(
            LimitError, match="input stream is longer than the limit of 1048576"):
        audit_wheel(f, limits=Limits(max_stream_size=1 << 20))
    r, w = os.pipe()                                  # a pipe with a real wheel still works
    data = hs.make_wheel({"pkg/lib.so": (hs.SEEDS / "x86_64-sysv-hash.so").read_bytes()})
    pid = os.fork()
    if pid == 0:                                      # pragma: no cover - child
        os.close(r)
        os.write(w, data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        res = audit_wheel(f, filename="demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    os.waitpid(pid, 0)
    assert res.error is None and res.elfs


# ------------------------------------------------------------ count limits

def _many_needed(n: int) -> bytes:
    """The seed library with ``n`` DT_NEEDED entries, all naming one string."""
    data = bytearray((hs.SEEDS / "x86_64-sysv-hash.so").read_bytes())
    elf = parse(bytes(data))
    dyn = [(t, v) for t, v in elf.dynamic]
    needed = next(v for t, v in dyn if t == 1)
    while len(data) % 8:
        data += b"\0"
    new = len(data)
    entries = [(1, needed)] * n + [(t, v) for t, v in dyn if t != 1] + [(0, 0)]
    data += b"".join(struct.pack("<QQ", t, v) for t, v in entries)
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    for i in range(phnum):
        base = phoff + 56 * i
        if struct.unpack_from("<I", data, base)[0] == 2:
            struct.pack_into("<QQQQQ", data, base + 8, new, new, new, 16 * len(entries),
                             16 * len(entries))
    hs._first_load_covers_all(data)
    return bytes(data)


def test_needed_entries_are_capped_naming_wheel_member_and_limit(tmp_path):
    wheel = tmp_path / "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(hs.make_wheel({"pkg/many.so": _many_needed(5000)}))
    err = audit_path(wheel).error
    assert err.startswith(str(wheel)) and "pkg/many.so" in err, err
    assert "more DT_NEEDED entries than the limit" in err and "Limits.max_needed = 4096" in err
    assert audit_path(wheel, limits=Limits(max_needed=5000)).error is None
    assert len(parse(_many_needed(5000), max_needed=5000).needed) == 5000


def test_version_entries_are_capped():
    data = hs.long_verneed_chain(entries=1000)
    e = parse(data)
    n = sum(len(v) for v in e.version_needs.values()) + len(e.version_defs)
    assert n >= 1000 and parse(data, max_versions=n).version_needs == e.version_needs
    with pytest.raises(ValueError, match="more version entries than the limit"):
        parse(data, max_versions=n - 1)


def test_per_wheel_budgets_do_not_multiply_by_the_number_of_elfs(tmp_path):
    so = (hs.SEEDS / "x86_64-sysv-hash.so").read_bytes()
    one = parse(so, exports=None)
    files = {f"pkg/lib{i}.so": so for i in range(10)}
    wheel = tmp_path / "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(hs.make_wheel(files))
    enough = Limits(max_wheel_symbols=10 * one.symbol_count)
    assert audit_path(wheel, limits=enough).error is None
    err = audit_path(wheel, limits=Limits(max_wheel_symbols=10 * one.symbol_count - 1)).error
    assert "Limits.max_wheel_symbols" in err and "pkg/lib9.so" in err, err
    total = sum(parse(so, exports=(f"PyInit_lib{i}",)).strbytes for i in range(10))
    assert audit_path(wheel, limits=Limits(max_wheel_strbytes=total)).error is None
    err = audit_path(wheel, limits=Limits(max_wheel_strbytes=total - 1)).error
    assert "Limits.max_wheel_strbytes" in err, err


def test_memory_error_is_a_per_wheel_error(tmp_path, monkeypatch):
    """A MemoryError (e.g. under RLIMIT_AS) fails that wheel only, in one line."""
    from fastelf import audit

    def boom(*a, **kw):
        raise MemoryError()
    monkeypatch.setattr(audit, "audit_wheel", boom)
    r = audit.audit_path(tmp_path / "x-1.0-py3-none-any.whl")
    assert r.error and "out of memory" in r.error


def test_untrusted_preset_is_documented():
    assert Limits.untrusted() is UNTRUSTED_LIMITS
    assert str(UNTRUSTED_MEMORY_BOUND >> 20) + " MiB" in Limits.__doc__


def test_bytes_input_stays_zero_copy():
    data = hs.make_wheel({"pkg/lib.so": (hs.SEEDS / "x86_64-sysv-hash.so").read_bytes()},
                         compression=zipfile.ZIP_STORED)
    with WheelReader(data) as rd:
        view = rd.stream(rd.member("pkg/lib.so")).data()
        assert view.obj is data
        view.release()
    with WheelReader(io.BytesIO(data)) as rd:
        assert rd.read("pkg/lib.so")[:4] == b"\x7fELF"


def test_a_dropped_member_stream_frees_its_bytes_at_once():
    """A stream half-way through inflating (its inflate loop suspended inside it) is
    freed when the caller drops it, by reference counting alone: no reference cycle
    keeps its inflated bytes alive until a garbage collection that may come late."""
    import gc
    import weakref
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m.bin", os.urandom(1 << 16) * 64)      # 4 MiB, streamed (not whole)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with WheelReader(buf.getvalue()) as reader:
            m = reader.members[0]
            stream = reader.stream(m)
            stream.ensure(1 << 20)
            assert 1 << 20 <= stream.available < m.size     # the loop is suspended mid-member
            dropped = weakref.ref(stream)
            del stream
            assert dropped() is None
    finally:
        if was_enabled:
            gc.enable()
