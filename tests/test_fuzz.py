"""Fuzz the ELF core and the wheel reader / audit with hypothesis (bounded, for CI).

Every mutated input must parse (or audit) or raise one of the documented
errors -- ElfError (and its ElfLimitError), WheelError, LimitError.  Any other
exception, a crash or a hang is a bug: fix it, and save the input under
tests/corpus/ with an entry in CORPUS below (test_corpus_replays replays
every file there).

Seeds: the ELF files in tests/corpus/seeds/ (gcc, musl-gcc and cross
compilers: ELF32/ELF64, little and big endian, GNU and SysV hash, verneed,
verdef, notes) plus a few small system libraries, and wheels built from them.
Mutations: bit flips, byte writes, truncations, zeroed and copied ranges, and
edits aimed at ELF header / program header / dynamic / verneed / verdef /
hash / note fields and zip EOCD / central directory / local header fields.

The examples are deterministic by default (derandomized, no database) so CI
is reproducible; FASTELF_FUZZ_EXAMPLES=N sets the examples per test (default
150) and FASTELF_FUZZ_RANDOM=1 explores new ones each run.  For long
coverage-guided runs use tests/fuzz_atheris.py by hand.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import hostile_support as hs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from fastelf import elfscan, wheel
from fastelf._elf import ElfError, ElfNeedMore, parse
from fastelf.audit import audit_path, audit_wheel
from fastelf.errors import LimitError, WheelError
from fastelf.record import verify_record
from fastelf.report import show_text
from fastelf.wheel import WheelReader

EXAMPLES = int(os.environ.get("FASTELF_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("FASTELF_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), print_blob=True)
DOCUMENTED = (ElfError, WheelError)          # LimitError is a WheelError
EXPORTS = ("PyInit_seed", "initseed", "_cffi_pypyinit_seed")

SEEDS = hs.seed_elfs()
SEED_NAMES = sorted(SEEDS)
FIELDS = {n: hs.elf_fields(d) for n, d in SEEDS.items()}
WHEELS = hs.seed_wheels()
WHEEL_NAMES = sorted(WHEELS)
ZIP_FIELDS = {n: hs.zip_fields(d) for n, d in WHEELS.items()}


def test_seeds_are_there_and_valid():
    assert len([n for n in SEEDS if not n.startswith("lib")]) >= 2, "tests/corpus/seeds is empty"
    for name, data in SEEDS.items():
        e = parse(data, exports=None)
        assert e.dynamic, name
        assert FIELDS[name], name
    assert {"deflated", "stored", "pure"} <= set(WHEELS)
    for name, data in WHEELS.items():
        assert ZIP_FIELDS[name], name


# ------------------------------------------------------------------ strategies

def _ops(n, nfields):
    n = max(n, 1)
    field = st.integers(0, max(nfields - 1, 0))
    ops = [
        st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(0, 7)),
        st.tuples(st.just("byte"), st.integers(0, n - 1), st.integers(0, 255)),
        st.tuples(st.just("trunc"), st.integers(0, n)),
        st.tuples(st.just("zero_range"), st.integers(0, n - 1), st.integers(1, 64)),
        st.tuples(st.just("dup"), st.integers(0, n - 1), st.integers(0, n - 1),
                  st.integers(1, 128)),
    ]
    if nfields:
        value = st.one_of(st.sampled_from(hs.INTERESTING), st.integers(0, n + 64))
        ops += [
            st.tuples(st.just("field"), field, st.just("set"), value),
            st.tuples(st.just("field"), field, st.just("add"), st.integers(-64, 64)),
            st.tuples(st.just("field"), field, st.just("len"), st.integers(-64, 64)),
        ]
        # field edits are the most productive: weight them
        ops += ops[-3:]
    return st.lists(st.one_of(ops), min_size=1, max_size=6)


@st.composite
def mutated_elf(draw):
    name = draw(st.sampled_from(SEED_NAMES))
    data = SEEDS[name]
    ops = draw(_ops(len(data), len(FIELDS[name])))
    return name, ops, hs.mutate(data, ops, FIELDS[name], hs._endian(data))


@st.composite
def mutated_wheel(draw):
    name = draw(st.sampled_from(WHEEL_NAMES))
    data = WHEELS[name]
    ops = draw(_ops(len(data), len(ZIP_FIELDS[name])))
    return name, ops, hs.mutate(data, ops, ZIP_FIELDS[name])


# ------------------------------------------------------------------ helpers

def facts(e):
    return (e.elf_class, e.little_endian, e.machine, e.arch, e.arch_error, e.interpreter,
            e.needed, e.soname, e.rpath, e.runpath, e.imports, e.exports, e.version_needs,
            e.version_defs, e.isa_needed, e.exec_stack, e.segments, e.dynamic,
            e.symbol_count)


def outcome(fn):
    """('ok', facts) or ('error', message); only documented errors are caught."""
    try:
        return "ok", facts(fn())
    except ElfNeedMore as e:
        return "more", e.needed
    except ElfError as e:
        assert str(e), "an error without a reason"
        return "error", f"{type(e).__name__}: {e}"


def check_elf(data, exports=EXPORTS):
    """Parse ``data`` whole: an ElfFile or an ElfError, never 'need more'."""
    got = outcome(lambda: parse(data, exports=exports))
    assert got[0] != "more", "ElfNeedMore without a file_size"
    if got[0] == "ok":
        e = parse(data, exports=exports)
        assert e.bytes_used <= len(data)
        for name, ver, lib, bind, typ in e.imports:
            assert isinstance(name, str) and 0 <= bind < 16 and 0 <= typ < 16
            assert (ver is None) == (lib is None) or lib is None
        # a prefix of bytes_used bytes is enough and gives the same facts
        assert outcome(lambda: parse(memoryview(data)[:e.bytes_used], len(data),
                                     exports=exports)) == got
    return got


def prefix_protocol(data, start, exports=EXPORTS):
    """Feed growing prefixes as the parser asks; the verdict must equal the whole file's.

    The first rounds give exactly what is asked; later ones at least double
    the prefix, as elfscan does (a chain walked past the end of a prefix asks
    for one more entry at a time).
    """
    size = len(data)
    k = min(max(start, 1), size)
    for rounds in range(64):
        got = outcome(lambda: parse(memoryview(data)[:k], size, exports=exports))
        if got[0] != "more":
            return got
        needed = got[1]
        assert k < needed <= size, f"ElfNeedMore({needed}) with {k} of {size} bytes"
        k = needed if rounds < 8 else max(needed, min(size, 2 * k))
    raise AssertionError("the prefix protocol did not converge in 64 rounds")


def check_audit(data, filename=hs.WHEEL_NAME, verify=False):
    """Audit wheel bytes: a result (that renders) or a documented error."""
    try:
        r = audit_wheel(data, filename=filename, verify_record=verify)
    except DOCUMENTED as e:
        assert str(e)
        if isinstance(e, WheelError):
            assert e.path == (filename or "<bytes>") and e.reason    # named, never the data
        return e
    json.dumps(r.to_dict())
    assert isinstance(show_text(r), str)
    return r


def read_all_members(data):
    """Open and read every member (CRC checked) and stream it: documented errors only."""
    try:
        with WheelReader(data) as reader:
            for m in reader.members:
                for fn in (lambda: reader.read(m), lambda: list(reader.iter_chunks(m, 4096))):
                    try:
                        fn()
                    except LimitError:
                        raise
                    except WheelError as e:
                        assert repr(m.name) in str(e)
            verify_record(reader)
    except WheelError as e:
        assert e.reason


# ------------------------------------------------------------------ ELF core

@FUZZ
@given(mutated_elf())
def test_mutated_elf_parses_or_raises_elferror(case):
    _name, _ops, data = case
    check_elf(data)
    check_elf(data, exports=None)


@FUZZ
@given(mutated_elf(), st.integers(0, 1 << 16))
def test_prefix_and_whole_file_agree(case, start):
    _name, _ops, data = case
    if not data:
        return
    assert prefix_protocol(data, start) == outcome(lambda: parse(data, exports=EXPORTS))


@FUZZ
@given(st.one_of(st.binary(max_size=512),
                 st.binary(max_size=512).map(lambda b: b"\x7fELF" + b),
                 st.tuples(st.sampled_from([b"\x7fELF\x01\x01\x01", b"\x7fELF\x02\x01\x01",
                                            b"\x7fELF\x01\x02\x01", b"\x7fELF\x02\x02\x01"]),
                           st.binary(min_size=40, max_size=600)).map(lambda t: t[0] + t[1])))
@example(b"\x7fE\x00")                 # tests/corpus/elf-3-bytes-bad-magic.elf
def test_garbage_is_not_elf(data):
    if not data:
        with pytest.raises(ElfError):
            parse(data)
        return
    check_elf(data)
    assert prefix_protocol(data, 1) == outcome(lambda: parse(data, exports=EXPORTS))


# ------------------------------------------------------------------ wheels

@FUZZ
@given(mutated_elf(), st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       st.sampled_from([hs.WHEEL_NAME, "demo-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
                        "demo-1.0-py3-none-any.whl", "demo-1.0-cp311-cp311-linux_i686.whl",
                        "demo-1.0-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
                        "not-a-wheel-name.whl"]),
       st.booleans())
def test_audit_of_a_mutated_elf_member(case, compression, filename, with_lib):
    _name, _ops, data = case
    files = {"demo/seed.cpython-311-x86_64-linux-gnu.so": data}
    if with_lib:
        files["demo.libs/libm.so.6"] = SEEDS["x86_64-sysv-hash.so"]
    w = hs.make_wheel(files, compression=compression)
    got = check_audit(w, filename)
    # A stored member is parsed whole; a deflated one by growing prefixes (here
    # forced: no libdeflate, 64-byte first chunk).  The verdict must not differ.
    saved = wheel._inflate_whole, elfscan._FIRST_CHUNK, wheel.MemberStream._CHUNK
    try:
        wheel._inflate_whole, elfscan._FIRST_CHUNK, wheel.MemberStream._CHUNK = None, 64, 64
        again = check_audit(hs.make_wheel(files, compression=zipfile.ZIP_DEFLATED), filename)
    finally:
        wheel._inflate_whole, elfscan._FIRST_CHUNK, wheel.MemberStream._CHUNK = saved
    if isinstance(got, Exception):
        assert isinstance(again, Exception) and again.reason == got.reason
    else:
        assert not isinstance(again, Exception), again
        assert again.to_dict() == got.to_dict()


@FUZZ
@given(mutated_wheel(), st.booleans())
def test_mutated_zip(case, verify):
    _name, _ops, data = case
    check_audit(data, verify=verify)
    read_all_members(data)


@FUZZ
@given(st.one_of(st.text(max_size=120), st.from_regex(
    r"\A[a-z]{1,5}-[0-9.]{1,4}-(py3|cp311)-(none|cp311)-"
    r"((many|musl)linux_[0-9]{1,2}_[0-9]{1,3}_[a-z0-9_]{0,10}|manylinux(1|2010|2014)_[a-z0-9_]{0,8}"
    r"|linux_[a-z0-9_]{0,8}|any)(\.[a-z0-9_]{1,20})?\.whl\Z")))
def test_any_file_name(filename):
    """Platform tags come from the (untrusted) file name: any name must be handled --
    judged when pip's parser accepts it, refused with a WheelError naming it when not."""
    try:
        parse_wheel_filename(filename)
        valid = True
    except InvalidWheelFilename:
        valid = not filename        # no name given: nothing is claimed
    for w in (WHEELS["deflated"], WHEELS["pure"]):
        got = check_audit(w, filename or None)
        if valid:
            assert not isinstance(got, Exception), got
        else:
            assert isinstance(got, WheelError) and "not a valid wheel file name" in got.reason


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.lists(st.tuples(st.sampled_from(["demo/seed.so", "demo/__init__.py",
                                                     "demo-1.0.dist-info/METADATA", "../x",
                                                     "demo/ghost", ""]),
                                    st.sampled_from(["", "sha256=", "md5=abc", "sha256=x=",
                                                     "sha512=abc", "foo=bar", "sha256"]),
                                    st.sampled_from(["", "1", "-1", "x",
                                                     "99999999999999999999999"])),
                          max_size=6).map(
                     lambda rows: "\n".join(",".join(r) for r in rows))))
def test_any_record_content(record):
    """RECORD is attacker-controlled text: never trusted, never a crash."""
    w = hs.make_wheel({"demo/seed.so": SEEDS["x86_64-sysv-hash.so"], "demo/__init__.py": b""},
                      record_override=record)
    r = check_audit(w, verify=True)
    assert not isinstance(r, Exception), r
    assert r.record is not None
    assert not r.record.ok                    # nothing above is a complete, correct RECORD
    assert r.record.problems()
    assert not r.ok


# ------------------------------------------------------------------ the regression corpus

def _zip_ok_with_elf(r):
    assert not r.pure and r.elfs, "the ELF member was missed"


# file name -> (expected outcome, substring of the error, or a check of the result).
# ELF files (.elf, .elf.gz) go through parse() whole and by prefixes; zips
# (.zip) through audit_wheel/audit_path on the file in place.
CORPUS = {
    # SIGFPE: DT_SYMENT 0 with no hash table -> division by zero in the symbol count
    "elf-dt-syment-zero.elf": ("ElfError", "bad DT_SYMENT"),
    # 3 bytes "\x7fE\0": "bad magic" whole, "truncated identification" as a prefix
    "elf-3-bytes-bad-magic.elf": ("ElfError", "bad magic"),
    # 40,000 symbols naming suffixes of one 200 kB string: 4 GB of str (MemoryError)
    "elf-strings-bomb.elf.gz": ("ElfLimitError", "strings longer in total than the limit"),
    # the same, defined: each export candidate used to be scanned to its end
    "elf-exports-long-string.elf.gz": ("ok", None),
    # a verneed chain longer than a prefix's step budget: "loops" as a prefix, fine whole
    "elf-verneed-long-chain.elf.gz": ("ok", None),
    # EOCD signature in the last 21 bytes: struct.error
    "zip-eocd-truncated.zip": ("WheelError", "no end of central directory record"),
    # a deflated ELF member starting with 1,000 empty stored blocks: taken for a non-ELF
    "zip-deflate-empty-blocks.zip": ("ok", _zip_ok_with_elf),
    # a local header whose extra field swallows the next member
    "zip-local-extra-overlap.zip": ("WheelError", "overlaps the next member"),
    # local header names another file than the central directory
    "zip-local-name-mismatch.zip": ("WheelError", "names a different file"),
    # ELF magic, not an ELF: BufferError from WheelReader.close() replaced the WheelError
    "zip-elf-magic-not-elf.zip": ("WheelError", "is not a valid ELF file"),
    # a member inflating far past its declared size (libdeflate said only "corrupt")
    "zip-inflates-past-size.zip": ("LimitError", "inflates past its declared size"),
}


def _load(path):
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def test_corpus_is_described():
    files = {p.name for p in hs.CORPUS.iterdir() if p.is_file() and p.name != "README.md"}
    assert files == set(CORPUS), "every corpus file needs an entry in CORPUS (and back)"
    readme = (hs.CORPUS / "README.md").read_text()
    for name in CORPUS:
        assert name in readme, f"{name} is not described in tests/corpus/README.md"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_replays(name, tmp_path):
    kind, want = CORPUS[name]
    path = hs.CORPUS / name
    if ".elf" in name:
        data = _load(path)
        got = check_elf(data)
        assert prefix_protocol(data, 1) == got, "a prefix and the whole file disagree"
        assert prefix_protocol(data, 4096) == got
        if kind == "ok":
            assert got[0] == "ok", got
        else:
            assert got[0] == "error" and got[1].startswith(kind + ":"), got
            assert want in got[1]
        return
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    try:
        r = audit_wheel(path, verify_record=True, filename="corpus-1.0-py3-none-any.whl")
        got = ("ok", r)
    except DOCUMENTED as e:
        got = (type(e).__name__, e)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before, "the input was modified"
    assert got[0] == kind, got
    if kind == "ok":
        if want:
            want(got[1])
    else:
        assert want in str(got[1]) and str(path) in str(got[1])
        assert want in audit_path(path, verify_record=True).error
    # the same through bytes and through an open file object
    with open(path, "rb") as f:
        again = check_audit(f.read(), verify=True)
    assert type(again).__name__ == kind if kind != "ok" else not isinstance(again, Exception)


def test_corpus_zip_through_the_cli(tmp_path):
    """A directory of every corpus zip: each broken one is reported, the rest audited."""
    d = tmp_path / "wheels"
    d.mkdir()
    for name in CORPUS:
        if name.endswith(".zip"):
            shutil.copy(hs.CORPUS / name,
                        d / (name[:-4].replace("-", "_") + "-1.0-py3-none-any.whl"))
    from fastelf import cli
    out = io.StringIO()
    code = cli.main(["audit", str(d), "--json", "--jobs", "2", "--verify-record"], out=out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == sum(1 for n in CORPUS if n.endswith(".zip"))
    errors = {Path(x["path"]).name.split("-1.0-")[0]: x.get("error") for x in lines}
    for name, (kind, want) in CORPUS.items():
        if name.endswith(".zip"):
            err = errors[name[:-4].replace("-", "_")]
            if kind == "ok":
                assert err is None, err
            else:
                assert err and want in err
    assert code == 3
