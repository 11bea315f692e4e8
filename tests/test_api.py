"""The typed top-level API, its stub, its exception contract and the JSON schema.

Outside oracles: mypy's stubtest (the compiled core against ``_elf.pyi``,
name by name, by introspecting the built module), the ``jsonschema``
validator (every JSON document the CLI prints, of every status, against
``fastelf/result.schema.json``), ``zipfile`` (which hostile corpus files are
readable zips at all).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import hostile_support as hs
import pytest
from elfbuild import build_ext_with_external_lib

import fastelf
from fastelf import audit as audit_mod
from fastelf import batch, cli, errors, wheel

jsonschema = pytest.importorskip("jsonschema")

PKG = Path(fastelf.__file__).resolve().parent
ROOT = PKG.parent.parent
SCHEMA = json.loads((PKG / "result.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
DETAIL_KEYS = {"versioned_symbols", "ignored", "elfs", "policies", "record"}
ELFS = hs.seed_elfs(include_system=False)


def test_top_level_names_are_the_implementations():
    assert fastelf.audit_wheel is audit_mod.audit_wheel
    assert fastelf.audit_path is audit_mod.audit_path
    assert fastelf.audit_many is batch.audit_many
    assert fastelf.AuditResult is audit_mod.AuditResult
    assert fastelf.Status is audit_mod.Status
    assert fastelf.Limits is wheel.Limits
    assert fastelf.SCHEMA_VERSION == SCHEMA["properties"]["version"]["const"]
    assert set(fastelf.__all__) <= set(dir(fastelf))


def test_typing_files_are_shipped():
    """py.typed, the stub and the schema sit in the package and match the
    package-data globs of pyproject.toml (what setuptools puts in a wheel)."""
    import fnmatch
    tomllib = pytest.importorskip("tomllib")

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["fastelf"]
    for name in ("py.typed", "_elf.pyi", "result.schema.json"):
        assert (PKG / name).is_file(), name
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


def test_stub_matches_the_compiled_core():
    """mypy's stubtest imports fastelf._elf (and the deflate walker beside it) and
    compares every name, attribute and signature with _elf.pyi (_deflateblocks.pyi):
    an attribute added to ElfFile without a stub line fails."""
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases",
         "--allowlist", str(Path(__file__).parent / "stubtest-allowlist.txt"), "fastelf._elf",
         "fastelf._deflateblocks"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(PKG.parent)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ JSON outputs

def _wheels(d: Path) -> list:
    """Wheels of every status; one with an external library when gcc is present."""
    d.mkdir()
    so = ELFS["x86_64-sysv-hash.so"]
    ext = "demo/seed.cpython-311-x86_64-linux-gnu.so"
    made = {
        "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": hs.make_wheel({ext: so}),
        "demo-1.0-cp311-cp311-manylinux_2_5_x86_64.whl": hs.make_wheel(
            {ext: ELFS["x86_64-gnu-hash.so"], "fw/x.elf": ELFS["aarch64.exe"]}),
        "demo-1.0-cp311-cp311-musllinux_1_1_x86_64.whl": hs.make_wheel(
            {"demo/m.cpython-311-x86_64-linux-musl.so": ELFS["x86_64-musl.so"]}),
        "demo-1.0-py3-none-win_amd64.whl": hs.make_wheel({"demo/__init__.py": b""}),
        "demo-1.0-py3-none-any.whl": hs.make_wheel({"demo/__init__.py": b""}),
        "demo-1.0-cp311-cp311-linux_x86_64.whl": hs.make_wheel({ext: so})[:-30],  # broken
        "bad-record-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": hs.make_wheel(
            {ext: so}, record_override="demo/nothing.py,sha256=AAAA,1\n"),
    }
    built = build_ext_with_external_lib(d / "build")
    if built is not None:
        made["ext-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"] = hs.make_wheel(
            {"foo.cpython-311-x86_64-linux-gnu.so": built.ext.read_bytes()})
    for name, data in made.items():
        (d / name).write_bytes(data)
    return sorted(d / n for n in made)


def _run(argv: list) -> tuple:
    out = io.StringIO()
    code = cli.main(argv, out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """(full, compact) JSON lines of `fastelf audit` over every fixture wheel, plus
    the `show --json --verify-record` document of each."""
    wheels = _wheels(tmp_path_factory.mktemp("api") / "w")
    _code, full = _run(["audit", "--json", "--verify-record", *map(str, wheels)])
    _code, compact = _run(["audit", "--json", "--compact", "--verify-record",
                           *map(str, wheels)])
    shown = [json.loads(_run(["show", "--json", "--verify-record", str(w)])[1])
             for w in wheels]
    return ([json.loads(x) for x in full.splitlines()],
            [json.loads(x) for x in compact.splitlines()], shown)


def test_every_output_matches_the_schema(documents):
    full, compact, shown = documents
    statuses = {d["status"] for d in full}
    assert statuses == {"ok", "mislabeled", "skipped", "error"}
    assert any("record" in d for d in full) and any(d.get("ignored") for d in full)
    for doc in full + compact + shown:
        errs = [e.message for e in VALIDATOR.iter_errors(doc)]
        assert errs == [], (doc["wheel"], errs)


def test_compact_form_is_the_full_form_without_detail(documents):
    full, compact, _shown = documents
    assert len(full) == len(compact)
    for f, c in zip(full, compact):
        assert c == {k: v for k, v in f.items() if k not in DETAIL_KEYS}
        assert not DETAIL_KEYS & set(c)


def test_schema_rejects_what_fastelf_never_prints(documents):
    """The schema has teeth: each mutation of a real document fails validation."""
    full, _compact, _shown = documents
    ok = next(d for d in full if d["status"] == "ok")
    bad = next(d for d in full if d["status"] == "mislabeled")
    err = next(d for d in full if d["status"] == "error")
    mutations = [
        {**ok, "status": "fine"},
        {**bad, "ok": True},
        {**ok, "reason": "why"},
        {k: v for k, v in ok.items() if k != "arch"},
        {**ok, "surprise": 1},
        {**ok, "version": 1},
        {**err, "arch": "x86_64", "error": None},
        {**ok, "elfs": [{"path": "x"}]},
        {k: v for k, v in ok.items() if k != "policies"},
    ]
    for doc in mutations:
        assert not VALIDATOR.is_valid(doc), doc


# ------------------------------------------------------------------ exception contract

class _FailingFile(io.BytesIO):
    def read(self, *a):
        raise ConnectionResetError("peer went away")


def test_only_fastelf_errors_escape(tmp_path):
    """Every hostile corpus file, a failing file object, a missing path and a
    directory: audit_wheel returns a result or raises a FastElfError."""
    sources = [p.read_bytes() for p in sorted(hs.CORPUS.glob("*")) if p.is_file()]
    sources += [_FailingFile(b"PK"), str(tmp_path / "nope.whl"), str(tmp_path), b""]
    for src in sources:
        try:
            r = fastelf.audit_wheel(src, filename="x-1.0-py3-none-any.whl"
                                    if isinstance(src, (bytes, io.IOBase)) else None)
        except fastelf.FastElfError as e:
            assert str(e) and "\n" not in str(e)
        else:
            assert isinstance(r, fastelf.AuditResult)
            if isinstance(src, bytes) and not zipfile.is_zipfile(io.BytesIO(src)):
                pytest.fail("a file that zipfile refuses was audited")
    assert issubclass(errors.LimitError, fastelf.WheelError)


def test_one_exception_hierarchy_and_one_exit_code_table(tmp_path):
    """Every exception fastelf defines is a FastElfError (the core's too), and the CLI's
    exit code for an error is the one errors.EXIT_CODES gives its class."""
    import inspect

    from fastelf import errors
    classes = [c for _n, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, BaseException) and not issubclass(c, Warning)]
    assert len(classes) >= 10
    assert all(issubclass(c, errors.FastElfError) for c in classes)
    warns = [c for _n, c in inspect.getmembers(errors, inspect.isclass)
             if issubclass(c, Warning)]
    assert warns and all(issubclass(c, errors.FastElfWarning) for c in warns)
    assert issubclass(errors.ElfError, ValueError)          # parse_elf's old contract holds
    # one module defines them: no other module of the package defines an exception or
    # a warning of its own (private control-flow classes, named with "_", aside)
    import pkgutil

    import fastelf
    for info in pkgutil.iter_modules(fastelf.__path__):
        if info.name == "__main__":         # importing it would run the CLI
            continue
        mod = __import__(f"fastelf.{info.name}", fromlist=["x"])
        own = [n for n, c in inspect.getmembers(mod, inspect.isclass)
               if issubclass(c, Exception) and c.__module__ == mod.__name__
               and not n.startswith("_") and c.__module__ != "fastelf.errors"]
        # hostfile.NotRegularFile is an OSError on purpose: callers treat it as one
        if info.name not in ("errors", "_elf", "hostfile"):
            assert own == [], (info.name, own)
    missing = tmp_path / "nothing.so"
    with pytest.raises(errors.LddError) as info:
        __import__("fastelf.lddtree", fromlist=["x"]).resolve_tree(missing)
    assert cli.main(["lddtree", str(missing)]) == errors.exit_code_of(info.value) == \
        errors.EXIT_UNREADABLE
    assert errors.exit_code_of(errors.LimitError("w", "r")) == errors.EXIT_UNREADABLE
    assert errors.exit_code_of(errors.PolicyError("p")) == errors.EXIT_USAGE
    assert errors.exit_code_of(errors.RepairError("r")) == errors.EXIT_MISLABELED
