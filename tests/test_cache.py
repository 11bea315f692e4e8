"""The result cache (``--cache``): work is counted (ELF members parsed), never timed.

Oracle: the uncached audit of the same file under the same name, whose JSON
every cached result must equal; ``zipfile`` writes the wheels, so a member's
bytes and RECORD are exactly what the test says.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import hostile_support as hs
import pytest

from fastelf import cache as cache_mod
from fastelf import cli
from fastelf.audit import audit_path
from fastelf.wheel import Limits

ELFS = hs.seed_elfs(include_system=False)
EXT = "demo/seed.cpython-311-x86_64-linux-gnu.so"
TAG = "cp311-cp311-manylinux_2_17_x86_64.whl"


@pytest.fixture
def parses(monkeypatch):
    """Every ELF member the cache hands to the parser."""
    seen = []
    real = cache_mod.parse_member

    def counted(stream, exports=()):
        seen.append(stream.member.name)
        return real(stream, exports)

    monkeypatch.setattr(cache_mod, "parse_member", counted)
    return seen


def _write(d: Path, name: str, files: dict, **kw) -> str:
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_bytes(hs.make_wheel(files, **kw))
    return str(p)


def _same_as_uncached(result, **kw):
    plain = audit_path(result.path, **kw)
    assert result.to_dict() == plain.to_dict()


def test_second_run_parses_nothing(tmp_path, parses):
    w = [_write(tmp_path / "w", f"d{i}-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"],
                                                    f"d{i}/libz.so.1": ELFS["x86_64-sysv-hash.so"],
                                                    f"d{i}/__init__.py": b"x = %d\n" % i},
                dist=f"d{i}") for i in range(3)]
    c = cache_mod.ResultCache(tmp_path / "c.db")
    first = [c.audit(p) for p in w]
    assert len(parses) == 2          # the same two libraries in all three wheels
    assert [r.cache_stats.elf_hits for r in first] == [0, 2, 2]
    del parses[:]
    second = [c.audit(p) for p in w]
    assert parses == [] and all(r.cache_stats.wheel_hits == 1 for r in second)
    for r in first + second:
        _same_as_uncached(r)
    c.close()
    reopened = cache_mod.ResultCache(tmp_path / "c.db")       # persisted on disk
    assert reopened.audit(w[0]).cache_stats.wheel_hits == 1 and parses == []


def test_a_crafted_record_cannot_borrow_a_clean_verdict(tmp_path, parses):
    """Wheel B's RECORD gives its .so the hash and size of A's clean one; B's
    bytes differ, so B's member is parsed and judged on its own bytes."""
    clean, dirty = ELFS["x86_64-sysv-hash.so"], ELFS["x86_64-gnu-hash.so"]
    a = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: clean}, dist="a")
    b = _write(tmp_path / "w", f"b-1.0-{TAG}", {EXT: dirty}, dist="b",
               record_override=f"{EXT},{hs.record_hash(clean)},{len(clean)}\n")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    ra, rb = c.audit(a), c.audit(b)
    assert parses == [EXT, EXT]
    assert ra.ok and not rb.ok
    _same_as_uncached(rb)


def test_same_bytes_under_another_name_are_judged_again(tmp_path, parses):
    """The facts are reused, the verdict is not: a renamed copy claiming an
    older tag gets that tag's verdict (its ELF members come from the cache; the
    wheel entry is the name's, since check findings depend on the name)."""
    files = {EXT: ELFS["x86_64-gnu-hash.so"]}
    a = _write(tmp_path / "w", f"a-1.0-{TAG}", files, dist="a")
    older = tmp_path / "w" / "a-1.0-cp311-cp311-manylinux_2_5_x86_64.whl"
    older.write_bytes(Path(a).read_bytes())
    c = cache_mod.ResultCache(tmp_path / "c.db")
    ra, rb = c.audit(a), c.audit(str(older))
    assert rb.cache_stats.wheel_hits == 0 and rb.cache_stats.elf_hits == 1
    assert len(parses) == 1
    assert ra.status != rb.status or ra.reason != rb.reason
    _same_as_uncached(ra)
    _same_as_uncached(rb)


def test_stricter_limits_do_not_reuse_facts(tmp_path, parses):
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    assert c.audit(p).error is None
    strict = Limits(max_symbols=1)
    r = c.audit(p, limits=strict)
    assert r.error == audit_path(p, limits=strict).error and "limit" in r.error
    assert len(parses) == 2


def test_verify_record_still_reads_the_wheel(tmp_path, parses):
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a",
               extra_record_rows=[["demo/missing.py", "sha256=AAAA", "1"]])
    c = cache_mod.ResultCache(tmp_path / "c.db")
    c.audit(p)
    r = c.audit(p, verify_record=True)
    assert r.cache_stats.wheel_hits == 0 and r.cache_stats.elf_hits == 1
    assert r.status.value == "mislabeled"
    _same_as_uncached(r, verify_record=True)


def test_cli_cache_default_path_and_summary(tmp_path):
    d = tmp_path / "w"
    for i in range(3):
        _write(d, f"d{i}-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist=f"d{i}")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=str(Path(cache_mod.__file__).resolve().parent.parent))

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "fastelf", "audit", "--json", str(d),
                               *extra], capture_output=True, text=True, env=env, timeout=120,
                              check=False)

    plain = run()
    first, second = run("--cache"), run("--jobs", "2", "--cache")
    swallowed = subprocess.run([sys.executable, "-m", "fastelf", "audit", "--cache", str(d)],
                               capture_output=True, text=True, env=env, timeout=120, check=False)
    assert swallowed.returncode == 2 and "--cache=PATH" in swallowed.stderr
    assert (tmp_path / "xdg" / "fastelf" / "cache.sqlite3").is_file()
    assert first.stdout == second.stdout == plain.stdout
    assert first.stderr.rstrip().endswith("cache: 0 wheel hits, 2 ELF hits, 1 ELFs parsed")
    assert second.stderr.rstrip().endswith("cache: 3 wheel hits, 0 ELF hits, 0 ELFs parsed")
    out = io.StringIO()
    assert cli.main(["audit", "--json", f"--cache={tmp_path / 'x.db'}", str(d)],
                    out=out) == plain.returncode
    assert [json.loads(x) for x in out.getvalue().splitlines()] == \
        [json.loads(x) for x in plain.stdout.splitlines()]


def test_an_unusable_cache_is_a_usage_error(tmp_path):
    _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    bogus = tmp_path / "not-a-db"
    bogus.write_text("hello, I am not SQLite\n" * 100)
    err = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(err):
        code = cli.main(["audit", str(tmp_path / "w"), f"--cache={bogus}"], out=io.StringIO())
    assert code == 2
    assert err.getvalue().startswith(f"fastelf: error: cannot use the cache {bogus}: ")
    assert err.getvalue().count("\n") == 1
