"""fastelf reads exactly the wheel Python's ``zipfile`` reads, or refuses it.

pip and ``installer`` extract wheels with :mod:`zipfile`, so zipfile is the
oracle: wherever fastelf's reader and zipfile both accept an archive they
must list the same member names in the same order and give the same bytes
for each member, and fastelf never accepts an archive zipfile refuses.
Archives that zipfile and other readers (or a second end record) read
differently are refused by fastelf with a one-line WheelError naming the
file, among them the red-team's two decoys: a prefix that zipfile skips by
shifting every offset, and a zip64 end record that zipfile prefers over the
plain end record.

Inputs: the regression corpus (tests/corpus/*.zip), the crafted archives of
hostile_support.py, legitimate variants (archive comment, zip64 end records,
data descriptors written by zipfile itself), and hypothesis-mutated wheels
(derandomized: FASTELF_FUZZ_EXAMPLES sets the count, default 150).
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib

import hostile_support as hs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastelf._elf import parse
from fastelf.audit import audit_wheel
from fastelf.errors import WheelError
from fastelf.wheel import WheelReader

EXAMPLES = int(os.environ.get("FASTELF_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("FASTELF_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), print_blob=True)
WHEEL_NAME = "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"


# ------------------------------------------------------------------ the two readers

def zipfile_view(data: bytes) -> list | None:
    """[(name, bytes)] as zipfile (pip) extracts them, or None if it refuses."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return [(i.filename, z.read(i)) for i in z.infolist()]
    except Exception:       # zipfile refuses in many ways: BadZipFile, zlib.error, ...
        return None


def fastelf_view(data: bytes) -> list | None:
    """[(name, bytes)] as fastelf's reader gives them, or None if it refuses.

    Anything but a WheelError is a bug and propagates.
    """
    try:
        with WheelReader(data) as reader:
            return [(m.name, bytes(reader.read(m))) for m in reader.members]
    except WheelError:
        return None


def assert_same_reading(data: bytes) -> tuple:
    """Both readers agree wherever both accept; fastelf accepts nothing zipfile refuses."""
    mine, theirs = fastelf_view(data), zipfile_view(data)
    if mine is not None:
        assert theirs is not None, "fastelf read an archive zipfile refuses"
        assert [n for n, _ in mine] == [n for n, _ in theirs], "member names or order differ"
        for (name, a), (_, b) in zip(mine, theirs):
            assert a == b, f"member {name!r} differs"
    return mine, theirs


# ------------------------------------------------------------------ legitimate archives

def _descriptor_wheel() -> bytes:
    """A wheel written by zipfile to an unseekable stream: every member has a
    data descriptor (flag bit 3, zeros in the local header)."""
    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buf = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.buf += b
            return len(b)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in hs.dist_info({hs.EXT_NAME: hs.attack_extensions()[0]}).items():
            z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return bytes(out.buf)


def _with_comment(data: bytes, comment: bytes) -> bytes:
    eocd = data.rfind(b"PK\x05\x06")
    return data[:eocd + 20] + len(comment).to_bytes(2, "little") + comment


def legitimate_archives() -> dict:
    wheels = hs.seed_wheels()
    deflated = wheels["deflated"]
    out = {f"seed-{k}": v for k, v in wheels.items()}
    out.update({
        "comment": _with_comment(deflated, b"built by a test"),
        "zip64-end-records": hs.zip64_consistent(deflated),
        "zip64-stored": hs.zip64_consistent(wheels["stored"]),
        "data-descriptors": _descriptor_wheel(),
        "empty-blocks": hs.zip_deflate_empty_blocks(),
        "zip64-member": hs.build_zip([hs.Entry(n, d, zip64=True)
                                      for n, d in hs.dist_info({"demo/x.bin": b"tiny"}).items()]),
        "utf8-name": hs.build_zip([hs.Entry("demo/café.py".encode(), b"x = 1\n", flags=0x800)]),
        "empty-archive": hs.build_zip([]),
    })
    return out


LEGIT = legitimate_archives()


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_legitimate_archives_read_alike(name):
    mine, theirs = assert_same_reading(LEGIT[name])
    assert mine is not None and theirs is not None, "both must accept a legitimate archive"


def test_data_descriptor_wheel_really_has_descriptors():
    """The descriptor case is what it claims: flag bit 3 and zeros in the local header."""
    data = LEGIT["data-descriptors"]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert all(i.flag_bits & 0x8 for i in z.infolist())
    assert data[14:26] == bytes(12)                     # local CRC-32 and sizes


def test_zip64_end_records_are_what_zipfile_reads():
    """zipfile follows the zip64 record (its plain record says only 0xFFFF...)."""
    data = LEGIT["zip64-end-records"]
    assert data[-22 + 10:-22 + 12] == b"\xff\xff"
    assert [n for n, _ in zipfile_view(data)] == [n for n, _ in zipfile_view(
        hs.seed_wheels()["deflated"])]


# ------------------------------------------------------------------ crafted and corpus archives

CORPUS_ZIPS = sorted(p.name for p in hs.CORPUS.glob("*.zip"))
CRAFTED = {
    "local-extra-overlap": hs.zip_local_extra_overlap,
    "local-name-mismatch": hs.zip_local_name_mismatch,
    "elf-magic-not-elf": hs.zip_elf_magic_not_elf,
    "inflates-past-size": hs.zip_inflates_past_size,
}


@pytest.mark.parametrize("name", CORPUS_ZIPS)
def test_corpus_archives(name):
    assert_same_reading((hs.CORPUS / name).read_bytes())


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_archives(name):
    assert_same_reading(CRAFTED[name]())


AMBIGUOUS = {**hs.ambiguous_zips(), **hs.descriptor_cases(LEGIT["data-descriptors"])}
# zipfile itself refuses these; the rest it reads (one way among several)
ZIPFILE_REFUSES = {"zip64-locator-without-record", "local-name", "invalid-utf8-name",
                   "zip64-extensible-data", "malformed-central-extra", "extract-version-6.4",
                   "compressed-patched-data"}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_archive_is_refused(tmp_path, name):
    data = AMBIGUOUS[name]
    assert (zipfile_view(data) is None) == (name in ZIPFILE_REFUSES)
    path = tmp_path / WHEEL_NAME
    path.write_bytes(data)
    with pytest.raises(WheelError) as exc:
        audit_wheel(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and exc.value.reason


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_archive_is_refused_by_the_reader(name):
    assert_same_reading(AMBIGUOUS[name])
    assert fastelf_view(AMBIGUOUS[name]) is None


def test_real_wheels_read_alike():
    """The pinned real wheels of tests/realwheels.py (those in the cache or
    downloadable): fastelf accepts each and reads what zipfile reads."""
    import realwheels

    paths = [p for p, _why in (realwheels.fetch(w) for w in realwheels.WHEELS) if p is not None]
    if not paths:
        pytest.skip("no real wheel available (offline, empty cache)")
    for path in paths:
        mine, _theirs = assert_same_reading(path.read_bytes())
        assert mine is not None, path


# ------------------------------------------------------------------ the red-team's attack

def _needed_of_extension_zipfile_extracts(data: bytes) -> list:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return list(parse(z.read(hs.EXT_NAME)).needed)


@pytest.mark.parametrize("attack", ["prepended-decoy", "zip64-locator-decoy"])
def test_decoy_attack_end_to_end(tmp_path, attack):
    """pip would install the extension needing libmissing.so.1; fastelf must
    refuse the wheel or judge that same extension, never the decoy."""
    decoy, real = hs.attack_extensions()
    assert hs.MISSING_LIB not in parse(decoy).needed
    data = AMBIGUOUS[attack]
    installed = _needed_of_extension_zipfile_extracts(data)
    assert hs.MISSING_LIB in installed                 # what pip would install
    # the two halves on their own: the decoy passes, the real extension does not
    ok_path = tmp_path / "decoy" / WHEEL_NAME
    ok_path.parent.mkdir()
    ok_path.write_bytes(hs._pair()[0])
    assert audit_wheel(ok_path, verify_record=True).ok
    path = tmp_path / WHEEL_NAME
    path.write_bytes(data)
    try:
        result = audit_wheel(path, verify_record=True)
    except WheelError as e:
        assert e.path == str(path)
        return
    judged = {e.path: e.needed for e in result.elfs}
    assert judged == {hs.EXT_NAME: installed} and not result.ok


# ------------------------------------------------------------------ CRC-32 of audited members

def _ext_wheel(ext: bytes, method: int, crc: int | None = None) -> bytes:
    files = hs.dist_info({hs.EXT_NAME: ext})
    return hs.build_zip([hs.Entry(n, d, method=method, crc=crc if n == hs.EXT_NAME else None)
                         for n, d in files.items()])


@pytest.mark.parametrize("method", [0, 8])
def test_audit_checks_the_crc_of_elf_members(tmp_path, method):
    """A wrong CRC-32 (central and local agree on it) is refused by the audit,
    as zipfile refuses to extract the member; before, only --verify-record saw it."""
    ext = hs.attack_extensions()[0]
    data = _ext_wheel(ext, method, crc=zlib.crc32(ext) ^ 0x10)
    with zipfile.ZipFile(io.BytesIO(data)) as z, pytest.raises(zipfile.BadZipFile, match="CRC"):
        z.read(hs.EXT_NAME)
    path = tmp_path / WHEEL_NAME
    path.write_bytes(data)
    with pytest.raises(WheelError, match=f"CRC-32 mismatch in member {hs.EXT_NAME!r}"):
        audit_wheel(path)


def test_audit_refuses_a_corrupted_literal_in_a_stored_elf(tmp_path):
    """A byte changed after the CRC was computed (the red-team's corruption)."""
    ext = bytearray(hs.attack_extensions()[0])
    good_crc = zlib.crc32(ext)
    ext[len(ext) // 2] ^= 0x01
    data = _ext_wheel(bytes(ext), 0, crc=good_crc)
    assert zipfile_view(data) is None
    path = tmp_path / WHEEL_NAME
    path.write_bytes(data)
    with pytest.raises(WheelError, match="CRC-32 mismatch"):
        audit_wheel(path)


def test_large_elf_used_little_keeps_early_stop(tmp_path):
    """The documented exception: a big deflated ELF whose parser needs under
    half of it is not inflated to the end, so a bad CRC there passes the audit
    and is reported by --verify-record (zipfile refuses it too)."""
    ext = hs.attack_extensions()[0] + bytes(4 << 20)
    data = _ext_wheel(ext, 8, crc=zlib.crc32(ext) ^ 1)
    assert zipfile_view(data) is None
    with WheelReader(data) as reader:
        stream = reader.stream(reader.member(hs.EXT_NAME))
        stream.ensure(1 << 16)
        assert not stream.verify_after_parse(4096)
        assert reader.inflated < len(ext) // 2
    path = tmp_path / WHEEL_NAME
    path.write_bytes(data)
    audit_wheel(path)                                  # the trade-off: no error here
    with pytest.raises(WheelError, match="CRC-32 mismatch"):
        audit_wheel(path, verify_record=True)


def test_any_member_inflated_in_full_is_crc_checked():
    data = hs.build_zip([hs.Entry("demo/a.txt", b"hello " * 1000, method=8, crc=1)])
    with WheelReader(data) as reader:
        stream = reader.stream(reader.member("demo/a.txt"))
        with pytest.raises(WheelError, match="CRC-32 mismatch in member 'demo/a.txt'"):
            stream.ensure(6000)


@pytest.mark.parametrize("crc_ok", [True, False])
def test_big_stored_member_of_a_file_is_read_and_crc_checked(tmp_path, crc_ok):
    """A stored member over 64 KiB read from a file (its bytes left in the file
    until needed): the same bytes as zipfile, or for a wrong CRC-32 the one-line
    error where zipfile refuses it too (this read once failed with a TypeError)."""
    body = bytes(range(256)) * 1024
    crc = zlib.crc32(body) ^ (0 if crc_ok else 1)
    path = tmp_path / WHEEL_NAME
    path.write_bytes(hs.build_zip([hs.Entry("demo/big.bin", body, method=0, crc=crc)]))
    with zipfile.ZipFile(path) as z:
        if crc_ok:
            assert z.read("demo/big.bin") == body
        else:
            with pytest.raises(zipfile.BadZipFile, match="CRC"):
                z.read("demo/big.bin")
    with WheelReader(str(path)) as reader:
        if crc_ok:
            assert bytes(reader.read("demo/big.bin")) == body
        else:
            with pytest.raises(WheelError, match="CRC-32 mismatch in member 'demo/big.bin'"):
                reader.read("demo/big.bin")


# ------------------------------------------------------------------ mutated wheels

BASES = {
    "deflated": hs.seed_wheels()["deflated"],
    "stored": hs.seed_wheels()["stored"],
    "zip64": hs.zip64_consistent(hs.seed_wheels()["pure"]),
    "descriptors": LEGIT["data-descriptors"],
    "comment": LEGIT["comment"],
}
BASE_FIELDS = {k: hs.zip_fields(v) for k, v in BASES.items()}


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(BASES)))
    data = BASES[name]
    fields = BASE_FIELDS[name]
    n = len(data)
    value = st.one_of(st.sampled_from(hs.INTERESTING), st.integers(0, n + 64))
    field = st.integers(0, len(fields) - 1)
    op = st.one_of(
        st.tuples(st.just("field"), field, st.just("set"), value),
        st.tuples(st.just("field"), field, st.just("add"), st.integers(-64, 64)),
        st.tuples(st.just("field"), field, st.just("len"), st.integers(-64, 64)),
        st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(0, 7)),
        st.tuples(st.just("dup"), st.integers(0, n - 1), st.integers(0, n - 1),
                  st.integers(1, 128)),
        st.tuples(st.just("trunc"), st.integers(0, n)),
    )
    ops = draw(st.lists(op, min_size=1, max_size=4))
    out = hs.mutate(data, ops, fields)
    if draw(st.booleans()):                            # sometimes hide bytes around it
        out = draw(st.sampled_from([b"", b"PK\x03\x04", b"\0" * 30])) + out + \
            draw(st.sampled_from([b"", b"PK\x05\x06" + bytes(18), b"x"]))
    return out


def test_mutation_bases_are_read_alike():
    for name, data in BASES.items():
        assert assert_same_reading(data)[0] is not None, name
        assert BASE_FIELDS[name], name


@FUZZ
@given(mutated())
def test_mutated_wheels_read_alike(data):
    assert_same_reading(data)
