"""The result cache (``--cache``): work is counted (ELF members parsed), never timed.

Oracle: the uncached audit of the same file under the same name, whose JSON
every cached result must equal; ``zipfile`` writes the wheels, so a member's
bytes and RECORD are exactly what the test says.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import hostile_support as hs
import pytest

from fastelf import cache as cache_mod
from fastelf import cli
from fastelf.audit import AuditResult, audit_path
from fastelf.report import show_text
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
    """The oracle: the uncached audit's JSON lines, byte for byte (full and compact)."""
    plain = audit_path(result.path, **kw)
    assert result.to_json() == plain.to_json()
    assert result.to_json(detail=False) == plain.to_json(detail=False)
    assert result.to_dict() == json.loads(plain.to_json())


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


# ------------------------------------------------------------------ the files and results tables
#
# The oracle for "did the cache trust the right thing" is os.stat (each test first
# asserts the stat fact it is about: the inode, the size, the mtime, the ctime) and
# the uncached audit of the file as it is now.

@pytest.fixture
def trust_fresh_files(monkeypatch):
    """Remember the hash of files written a moment ago (the tests' wheels are new;
    the racy window that would refuse them has a test of its own)."""
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)


@pytest.fixture
def fresh_engine():
    """engine_id() is computed once per process: recompute it around a test that
    changes what it hashes."""
    cache_mod.engine_id.cache_clear()
    yield
    cache_mod.engine_id.cache_clear()


def _after_clock_tick(probe: Path, than_ns: int) -> None:
    """Return once the file system's clock is past ``than_ns``, so that a change
    made now gets a later ctime (the clock is coarse: a few ms a tick).  Waits for
    a condition, not for a time."""
    while True:
        probe.write_bytes(b"")
        if os.stat(probe).st_ctime_ns > than_ns:
            return


def _same_size_pair() -> tuple[bytes, bytes]:
    """Two wheels of one size and one file name whose verdicts differ: the clean
    and the dirty ELF, zero-padded to one length, stored (not deflated)."""
    clean, dirty = ELFS["x86_64-sysv-hash.so"], ELFS["x86_64-gnu-hash.so"]
    n = max(len(clean), len(dirty))
    a, b = (hs.make_wheel({EXT: e.ljust(n, b"\0")}, dist="a", compression=zipfile.ZIP_STORED)
            for e in (clean, dirty))
    assert len(a) == len(b) and a != b
    return a, b


def _hit(result) -> bool:
    """A finished result from the results table (not judged again)."""
    return isinstance(result, cache_mod.CachedResult)


def test_a_hit_neither_hashes_nor_reads_nor_judges(tmp_path, parses, trust_fresh_files,
                                                    monkeypatch):
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    cold = c.audit(p)
    assert cold.cache_stats.wheels_hashed == 1 and not _hit(cold)

    def no(*_a, **_k):
        raise AssertionError("a hit must not read or judge the wheel")

    monkeypatch.setattr(cache_mod, "audit_path", no)
    monkeypatch.setattr(cache_mod, "judge_wheel", no)
    monkeypatch.setattr(cache_mod, "_hash_file", no)
    warm = c.audit(p)
    assert _hit(warm) and warm.cache_stats.wheels_hashed == 0 and parses == [EXT]
    assert warm.to_json() == cold.to_json() and warm.status == cold.status
    assert (warm.wheel, warm.path, warm.best_tag, warm.tags, warm.reason) == \
        (cold.wheel, cold.path, cold.best_tag, cold.tags, cold.reason)


def test_a_touched_identical_file_is_hashed_again_and_hits(tmp_path, parses, trust_fresh_files):
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    c.audit(p)
    before = os.stat(p)
    os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))    # touch -d "1 s ago"
    assert os.stat(p).st_mtime_ns != before.st_mtime_ns
    r = c.audit(p)
    assert r.cache_stats.wheels_hashed == 1 and _hit(r) and parses == [EXT]
    again = c.audit(p)                   # the new stamp is remembered
    assert again.cache_stats.wheels_hashed == 0 and _hit(again)
    _same_as_uncached(again)


def test_a_replaced_file_of_same_size_and_mtime_misses(tmp_path, trust_fresh_files):
    """Other bytes, same size, mtime put back with os.utime, new inode (written
    beside and renamed over, as downloads and pip do): the new verdict."""
    clean, dirty = _same_size_pair()
    p = tmp_path / f"a-1.0-{TAG}"
    p.write_bytes(clean)
    c = cache_mod.ResultCache(tmp_path / "c.db")
    assert c.audit(str(p)).ok
    old = os.stat(p)
    _after_clock_tick(tmp_path / "probe", old.st_ctime_ns)
    new = tmp_path / "new.part"
    new.write_bytes(dirty)
    os.replace(new, p)
    os.utime(p, ns=(old.st_atime_ns, old.st_mtime_ns))
    now = os.stat(p)
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert (now.st_ino, now.st_ctime_ns) != (old.st_ino, old.st_ctime_ns)
    r = c.audit(str(p))
    assert not _hit(r) and r.cache_stats.wheels_hashed == 1 and not r.ok
    _same_as_uncached(r)


def test_an_in_place_overwrite_keeping_inode_size_and_mtime_misses(tmp_path, trust_fresh_files):
    """Only the ctime tells: the user cannot set it back."""
    clean, dirty = _same_size_pair()
    p = tmp_path / f"a-1.0-{TAG}"
    p.write_bytes(clean)
    c = cache_mod.ResultCache(tmp_path / "c.db")
    assert c.audit(str(p)).ok
    old = os.stat(p)
    _after_clock_tick(tmp_path / "probe", old.st_ctime_ns)
    with open(p, "r+b") as fh:
        fh.write(dirty)
    os.utime(p, ns=(old.st_atime_ns, old.st_mtime_ns))
    now = os.stat(p)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == \
        (old.st_ino, old.st_size, old.st_mtime_ns)
    assert now.st_ctime_ns != old.st_ctime_ns
    r = c.audit(str(p))
    assert not _hit(r) and r.cache_stats.wheels_hashed == 1 and not r.ok
    _same_as_uncached(r)


def test_a_file_changed_within_the_racy_window_is_not_trusted(tmp_path):
    """With the real window, a file written a moment ago is hashed every time
    (a change in the same clock tick could keep every stat field), and still hits."""
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    c.audit(p)
    assert cache_mod.FileStamp.of(os.stat(p)).settled(os.stat(p).st_ctime_ns) is False
    r = c.audit(p)
    assert r.cache_stats.wheels_hashed == 1 and _hit(r)


def test_cache_verify_hashes_every_file(tmp_path, parses, trust_fresh_files):
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    c.audit(p)
    assert c.audit(p).cache_stats.wheels_hashed == 0
    r = c.audit(p, cache_verify=True)
    assert r.cache_stats.wheels_hashed == 1 and _hit(r) and parses == [EXT]
    err = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(err):
        code = cli.main(["audit", "--cache-verify", p], out=io.StringIO())
    assert code == 2 and "--cache-verify needs --cache" in err.getvalue()


@pytest.mark.parametrize("change", ["options", "limits", "version", "format", "policy data"])
def test_a_result_made_under_other_settings_misses(tmp_path, monkeypatch, trust_fresh_files,
                                                   fresh_engine, change):
    p = _write(tmp_path / "w", f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    c = cache_mod.ResultCache(tmp_path / "c.db")
    kw: dict = {}
    c.audit(p)
    assert _hit(c.audit(p))
    if change == "options":
        kw = {"disable_isa_ext_check": True}
    elif change == "limits":
        kw = {"limits": Limits(max_symbols=10**6)}
    elif change == "version":
        monkeypatch.setattr(cache_mod, "__version__", "0.0.0+other")
    elif change == "format":
        monkeypatch.setattr(cache_mod, "CACHE_FORMAT", cache_mod.CACHE_FORMAT + 100)
    else:
        files = list(cache_mod._engine_files())
        other = tmp_path / "policies.json"
        shutil.copy(files[1], other)
        with open(other, "ab") as fh:
            fh.write(b" ")
        files[1] = str(other)
        monkeypatch.setattr(cache_mod, "_engine_files", lambda: tuple(files))
    cache_mod.engine_id.cache_clear()
    r = c.audit(p, **kw)
    assert not _hit(r)
    _same_as_uncached(r, **kw)
    assert _hit(c.audit(p, **kw))


def test_warm_output_is_the_cold_output_byte_for_byte(tmp_path, trust_fresh_files):
    """OK, mislabeled, pure and skipped wheels; full and compact lines; and the
    full result a hit builds on demand equals the uncached one field by field."""
    d = tmp_path / "w"
    paths = [_write(d, f"ok-1.0-{TAG}", {EXT: ELFS["x86_64-sysv-hash.so"]}, dist="ok"),
             _write(d, f"bad-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="bad"),
             _write(d, "pure-1.0-py3-none-any.whl", {"pure/__init__.py": b""}, dist="pure"),
             _write(d, "mac-1.0-cp311-cp311-macosx_11_0_arm64.whl", {"mac/__init__.py": b""},
                    dist="mac")]
    c = cache_mod.ResultCache(tmp_path / "c.db")
    cold = [c.audit(p) for p in paths]
    warm = [c.audit(p) for p in paths]
    assert all(_hit(w) for w in warm)
    assert {w.status.value for w in warm} == {"ok", "mislabeled", "skipped"}
    for cr, wr in zip(cold, warm):
        assert (wr.to_json(), wr.to_json(False)) == (cr.to_json(), cr.to_json(False))
        assert (wr.status, wr.reason, wr.ok) == (cr.status, cr.reason, cr.ok)
        _same_as_uncached(wr)
        plain = audit_path(wr.path)
        for f in dataclasses.fields(AuditResult):
            if f.name != "cache_stats":
                assert getattr(wr, f.name) == getattr(plain, f.name), f.name
        assert show_text(wr) == show_text(plain)       # dataclasses.replace, in escaped()
    copy = pickle.loads(pickle.dumps(c.audit(paths[1])))     # a worker hands it to the batch
    assert copy.to_json() == cold[1].to_json() and copy.checks == audit_path(paths[1]).checks


def test_an_interrupted_crawl_resumes(tmp_path, trust_fresh_files):
    """A crawl killed (SIGKILL) after two of four wheels: the rerun takes those two
    from the cache, audits the other two, and prints what an uncached run prints."""
    d = tmp_path / "w"
    paths = [_write(d, f"d{i}-1.0-{TAG}", {f"d{i}/x.cpython-311-x86_64-linux-gnu.so":
                                           ELFS["x86_64-gnu-hash.so"] + bytes([i])},
                    dist=f"d{i}") for i in range(4)]
    db = tmp_path / "c.db"
    env = dict(os.environ, PYTHONPATH=str(Path(cache_mod.__file__).resolve().parent.parent))
    crawl = subprocess.Popen([sys.executable, "-m", "fastelf", "audit", "--json",
                              f"--cache={db}", "--from-file", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=env)
    assert crawl.stdin is not None and crawl.stdout is not None
    done = []
    for p in paths[:2]:
        crawl.stdin.write(p + "\n")
        crawl.stdin.flush()
        done.append(crawl.stdout.readline())       # printed after the result was stored
    crawl.send_signal(signal.SIGKILL)
    crawl.wait(timeout=60)
    rerun = subprocess.run([sys.executable, "-m", "fastelf", "audit", "--json", f"--cache={db}",
                            *paths], capture_output=True, text=True, env=env, timeout=120,
                           check=False)
    assert rerun.stderr.rstrip().endswith("cache: 2 wheel hits, 0 ELF hits, 2 ELFs parsed")
    assert rerun.stdout.splitlines(keepends=True)[:2] == done
    assert rerun.stdout == "".join(audit_path(p).to_json() + "\n" for p in paths)


def test_a_warm_run_starts_without_the_pool_or_the_network(tmp_path):
    """A one-process batch over local files (what a warm --cache run is: mostly
    start-up) loads neither concurrent.futures/multiprocessing/ctypes nor the
    remote module's http/ssl; a URL or --jobs 2 still works (tests of their own)."""
    d = tmp_path / "w"
    _write(d, f"a-1.0-{TAG}", {EXT: ELFS["x86_64-gnu-hash.so"]}, dist="a")
    code = ("import sys\nfrom fastelf import cli\n"
            f"cli.main(['audit', '--json', '--cache={tmp_path / 'c.db'}', {str(d)!r}])\n"
            "print(sorted(m for m in ('concurrent.futures', 'multiprocessing', 'ctypes',"
            " 'http.client', 'ssl', 'fastelf.remote') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(Path(cache_mod.__file__).resolve().parent.parent))
    for _ in range(2):                  # cold, then warm
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=120, check=True).stdout
        assert out.splitlines()[-1] == "[]"


def test_a_fifo_is_an_error_result_not_a_hang(tmp_path):
    """Hashing opens the file: a FIFO named like a wheel would block there forever.
    Oracle: the uncached audit's error result (run in a child with a timeout, so a
    regression fails instead of hanging the suite)."""
    fifo = tmp_path / f"a-1.0-{TAG}"
    os.mkfifo(fifo)
    code = ("import sys\nfrom fastelf.cache import ResultCache\nfrom fastelf.audit import "
            "audit_path\nr = ResultCache(sys.argv[2]).audit(sys.argv[1])\n"
            "print(r.to_json() == audit_path(sys.argv[1]).to_json(), r.status.value)")
    env = dict(os.environ, PYTHONPATH=str(Path(cache_mod.__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", code, str(fifo), str(tmp_path / "c.db")],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    assert out.stdout.split() == ["True", "error"]
