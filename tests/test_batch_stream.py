"""Streaming batches: --from-file lists, unordered results, per-wheel timeouts,
JSON lines flushed one by one, and a CLI that keeps no result.

No test measures time: a wheel that must time out never finishes (it sleeps
forever, or blocks the timer signal and sleeps), and "as it completes" is shown
by a wheel that cannot finish until another wheel's result has been yielded.
Oracles: the positional-argument mode of the same CLI (what a list must equal),
the garbage collector (which results are still alive), the kernel (stdin).
"""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import hostile_support as hs
import pytest

from fastelf import batch, cli

SRC = str(Path(batch.__file__).resolve().parent.parent)
ENV = dict(os.environ, PYTHONPATH=SRC)
HANG_GUARD = 120                        # seconds; only against hangs


def _pure_wheels(d: Path, n: int) -> list:
    d.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        p = d / f"p{i:03d}-1.0-py3-none-any.whl"
        p.write_bytes(hs.make_wheel({f"p{i}/__init__.py": b""}, dist=f"p{i:03d}"))
        out.append(p)
    return out


def _cli(argv: list, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastelf", *argv], input=stdin,
                          capture_output=True, text=True, env=ENV, timeout=HANG_GUARD, check=False)


# ------------------------------------------------------------------ --from-file

def test_from_file_equals_the_same_paths_as_arguments(tmp_path):
    wheels = _pure_wheels(tmp_path / "w", 5)
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"PK\x05\x06 not a zip")
    entries = [str(w) for w in wheels[:3]] + [str(broken), str(tmp_path / "gone.whl"),
                                              str(wheels[3]), str(wheels[4])]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(entries[:4]) + "\n\n  " + "\n".join(entries[4:]) + "\n")

    # the missing file is a usage error as an argument, an error result in a list
    expected = _cli(["audit", "--json", *entries[:4], *entries[5:]])
    for argv, stdin in ((["--from-file", str(listing)], ""),
                        (["--from-file", "-"], listing.read_text()),
                        (["--from-file", str(listing), "--jobs", "2"], "")):
        got = _cli(["audit", "--json", *argv], stdin)
        lines = [json.loads(x) for x in got.stdout.splitlines()]
        assert [d["path"] for d in lines] == entries
        missing = lines.pop(4)
        assert missing["status"] == "error" and "gone.whl" in missing["error"]
        assert lines == [json.loads(x) for x in expected.stdout.splitlines()]
        assert got.returncode == expected.returncode == 3
        assert got.stderr.startswith("7 wheels audited")


def test_from_file_usage_errors(tmp_path):
    for argv in (["audit"], ["audit", "--from-file", str(tmp_path / "none.txt")],
                 ["audit", str(tmp_path), "--timeout", "0"],
                 ["audit", str(tmp_path), "--timeout", "-1"]):
        proc = _cli(argv)
        assert proc.returncode == 2 and proc.stderr.startswith("fastelf: error: "), argv
        assert proc.stderr.count("\n") == 1


# ------------------------------------------------------------------ unordered

def test_unordered_yields_each_result_when_done(tmp_path, monkeypatch):
    """Wheel 0 cannot finish before the batch has yielded another wheel's result:
    only a batch that yields as results complete gets past it."""
    wheels = _pure_wheels(tmp_path / "w", 8)
    flag = tmp_path / "another-result-was-yielded"
    real = batch._audit_one

    def wait_for_flag(path, options):
        if os.path.basename(path).startswith("p000"):
            while not flag.exists():
                time.sleep(0.01)
        return real(path, options)

    monkeypatch.setattr(batch, "_audit_one", wait_for_flag)   # workers are forked
    seen = []
    for r in batch.audit_many([tmp_path / "w"], jobs=2, ordered=False):
        seen.append(r.path)
        flag.touch()
    assert seen[0] != str(wheels[0])
    assert sorted(seen) == [str(w) for w in wheels]


def test_unordered_keeps_the_window_bounded(tmp_path):
    wheels = _pure_wheels(tmp_path / "w", 40)
    pulled = []

    def source():
        for w in wheels:
            pulled.append(w)
            yield w

    results = batch.audit_many(source(), jobs=2, ordered=False)
    next(results)
    assert len(pulled) == 2 * batch.IN_FLIGHT_PER_JOB
    rest = list(results)
    assert len(rest) == 39 and all(r.error is None for r in rest)


# ------------------------------------------------------------------ timeouts

def _never_finishing(block_timer_signal: bool):
    real = batch._audit_one

    def audit(path, options):
        if os.path.basename(path).startswith("p001"):
            if block_timer_signal:        # as C code would that never returns
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                time.sleep(3600)
        return real(path, options)
    return audit


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_wheel_over_the_timeout_gets_an_error_and_the_batch_goes_on(tmp_path, monkeypatch,
                                                                      jobs):
    wheels = _pure_wheels(tmp_path / "w", 5)
    monkeypatch.setattr(batch, "_audit_one", _never_finishing(False))
    results = list(batch.audit_many([tmp_path / "w"], jobs=jobs, timeout=0.5))
    assert [r.path for r in results] == [str(w) for w in wheels]
    assert results[1].error == f"{wheels[1]}: timed out (the audit took more than 0.5 s)"
    assert all(r.error is None and r.pure for i, r in enumerate(results) if i != 1)


def test_a_worker_deaf_to_the_timer_is_ended_and_blamed(tmp_path, monkeypatch):
    """The timer signal is blocked: the worker's watchdog ends the process, the
    pool restarts, and the wheel is blamed with a timeout, not a crash."""
    wheels = _pure_wheels(tmp_path / "w", 4)
    monkeypatch.setattr(batch, "_audit_one", _never_finishing(True))
    monkeypatch.setattr(batch, "_HARD_GRACE", 0.5)
    results = list(batch.audit_many([tmp_path / "w"], jobs=2, timeout=0.5))
    assert [r.path for r in results] == [str(w) for w in wheels]
    assert results[1].error == f"{wheels[1]}: timed out (the audit took more than 0.5 s)"
    assert all(r.error is None and r.pure for i, r in enumerate(results) if i != 1)


def test_timeout_from_the_cli(tmp_path):
    """A real wheel well within a generous timeout is audited in a worker and
    gets the same verdict as without one."""
    _pure_wheels(tmp_path / "w", 2)
    (tmp_path / "w" / "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(
        hs.seed_wheels()["deflated"])
    plain = _cli(["audit", "--json", str(tmp_path / "w")])
    timed = _cli(["audit", "--json", "--timeout", "600", str(tmp_path / "w")])
    assert timed.stdout == plain.stdout and timed.returncode == plain.returncode


# ------------------------------------------------------------------ the CLI streams

class _Out(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushed = ""

    def flush(self):
        self.flushed = self.getvalue()


def test_cli_flushes_each_line_and_keeps_no_result(tmp_path, monkeypatch):
    """While the batch makes result k, line k-1 is already flushed and result
    k-2 is garbage (cmd_audit kept every result before: memory grew with the batch)."""
    wheels = _pure_wheels(tmp_path / "w", 6)
    out = _Out()
    alive = []
    real = batch.audit_many      # the CLI imports it from fastelf.batch when it runs

    def watched(*a, **kw):
        for i, r in enumerate(real(*a, **kw)):
            if i >= 1:
                assert out.flushed.count("\n") == i
            if i >= 2:
                gc.collect()
                assert alive[i - 2]() is None, "cmd_audit still holds an old result"
            alive.append(weakref.ref(r))
            yield r
            del r

    monkeypatch.setattr(batch, "audit_many", watched)
    code = cli.main(["audit", "--json", "--compact", str(tmp_path / "w")], out=out)
    assert code == 0 and len(alive) == len(wheels)
    assert [json.loads(x)["path"] for x in out.flushed.splitlines()] == list(map(str, wheels))
