"""Audit many wheels, in parallel processes, yielding results in input order.

Robustness, since a batch is the tool's main use on untrusted wheels:

* a bounded number of wheels is in flight (``IN_FLIGHT_PER_JOB`` per worker):
  the file list is read lazily and results wait only for the slowest wheel
  of the window, so memory does not grow with the number of wheels;
* a wheel whose audit kills its worker (a crash, the OOM killer) takes the
  pool down with every wheel in flight; the pool is restarted and the wheels
  that were in flight are audited again each in a process of its own, so the
  one that kills its process is blamed deterministically and the others get
  verdicts; then the batch goes on in parallel;
* a MemoryError in one wheel is that wheel's error, not the batch's end;
* workers die with their parent (Linux PR_SET_PDEATHSIG, and a watchdog
  thread that notices the parent is gone elsewhere): a killed ``fastelf audit``
  never leaves orphans running and holding its stdout open.
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import sys
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from .audit import AuditResult, audit_path, platform_tags_of

IN_FLIGHT_PER_JOB = 4            # wheels submitted but not yet yielded, per worker
_WATCHDOG_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
_WORKER_DIED = ("the worker process auditing this wheel died "
                "(crashed or was killed, e.g. for lack of memory)")


def find_wheels(paths) -> Iterator[str]:
    """Expand directories (recursively, sorted) into the ``*.whl`` files below them."""
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found: List[str] = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in files if f.endswith(".whl"))
            yield from sorted(found)
        else:
            yield p


def _error_result(path: str, error: str) -> AuditResult:
    return AuditResult(wheel=os.path.basename(path), path=path,
                       claimed_tags=platform_tags_of(path), error=error)


def _audit_one(path: str, options: dict) -> AuditResult:
    """One wheel's result; nothing raised in it may end the batch."""
    try:
        result = audit_path(path, **options)
    except MemoryError:
        return _error_result(path, f"{path}: out of memory while auditing this wheel")
    except Exception as e:          # a bug must cost one wheel, not the batch
        return _error_result(path, f"{path}: internal error: {type(e).__name__}: {e}")
    for elf in result.elfs:          # the symbol lists are large and not part of the report
        elf.imports = []
    return result


# ------------------------------------------------------------------ worker lifetime

def _worker_init(batch_pid: int) -> None:
    """Run in each worker: die when the batch process does."""
    _set_parent_death_signal()
    if not _pid_alive(batch_pid):    # it died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch_batch, args=(batch_pid, os.getppid()), daemon=True,
                     name="fastelf-parent-watchdog").start()


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere).
    The parent is the batch process (fork), or a forkserver that exits with it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)      # the process's own libc: no search
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _watch_batch(batch_pid: int, parent: int) -> None:
    """Fallback where PR_SET_PDEATHSIG does not exist: an orphan is re-parented,
    so a changed parent pid, or a batch process gone, means the batch is over."""
    while os.getppid() == parent and _pid_alive(batch_pid):
        threading.Event().wait(_WATCHDOG_SECONDS)
    os._exit(1)


def _new_pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                               initargs=(os.getpid(),))


# ------------------------------------------------------------------ the batch

def audit_many(paths, jobs: int = 1, **options) -> Iterator[AuditResult]:
    """Yield an AuditResult for each wheel under ``paths``, in order.

    ``jobs`` > 1 uses that many worker processes; 0 means one per CPU.  A
    wheel that cannot be read, or whose audit runs out of memory or kills its
    process, yields a result with ``error`` set; the others are still audited.
    """
    if jobs == 0:
        jobs = os.cpu_count() or 1
    wheels = find_wheels(paths)
    if jobs <= 1:
        for w in wheels:
            yield _audit_one(w, options)
        return
    yield from _Batch(jobs, options).run(wheels)


class _Batch:
    """The parallel audit: a window of futures in input order over a pool that
    is replaced when a worker dies."""

    def __init__(self, jobs: int, options: dict):
        self.jobs, self.options = jobs, options
        self.window = jobs * IN_FLIGHT_PER_JOB
        self.pool: Optional[ProcessPoolExecutor] = None

    def run(self, wheels: Iterable[str]) -> Iterator[AuditResult]:
        pending: Deque[Tuple[str, Future]] = collections.deque()
        source = iter(wheels)
        try:
            while True:
                while len(pending) < self.window:
                    path = next(source, None)
                    if path is None:
                        break
                    pending.append((path, self._submit(path)))
                if not pending:
                    return
                path, future = pending[0]
                try:
                    result = future.result()
                except (BrokenProcessPool, CancelledError):
                    # the pool broke; or it was shut down by _submit after a broken
                    # submission, cancelling the wheels that had not started yet
                    results = self._recover(list(pending))
                    pending.clear()
                    yield from results
                    continue
                pending.popleft()
                yield result
        finally:
            self._shutdown()

    def _submit(self, path: str) -> Future:
        """A future for ``path``; one that already failed when the pool broke since the
        last result was read (the wheel is then audited again by :meth:`_recover`)."""
        if self.pool is None:
            self.pool = _new_pool(self.jobs)
        try:
            return self.pool.submit(_audit_one, path, self.options)
        except BrokenProcessPool:
            self._shutdown()
            future: Future = Future()
            future.set_exception(BrokenProcessPool("worker died"))
            return future

    def _recover(self, in_flight: List[Tuple[str, Future]]) -> List[AuditResult]:
        """Results of the wheels that were in flight when the pool broke: those
        already done are kept; the others are audited again each in a process
        of its own (``jobs`` at a time), so only a wheel that kills its own
        process gets an error.  The next wheels go to a new pool."""
        self._shutdown()
        done: Dict[int, AuditResult] = {}
        again = []
        for i, (path, future) in enumerate(in_flight):
            if future.done() and not future.cancelled() and future.exception() is None:
                done[i] = future.result()
            else:
                again.append(i)
        for start in range(0, len(again), self.jobs):
            chunk = again[start:start + self.jobs]
            done.update(zip(chunk, _audit_isolated([in_flight[i][0] for i in chunk],
                                                   self.options)))
        return [done[i] for i in range(len(in_flight))]

    def _shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _audit_isolated(paths: List[str], options: dict) -> List[AuditResult]:
    """Audit each of ``paths`` in a process of its own, all at once."""
    pools = [_new_pool(1) for _ in paths]
    try:
        futures = [pool.submit(_audit_one, path, options) for pool, path in zip(pools, paths)]
        out = []
        for path, future in zip(paths, futures):
            try:
                out.append(future.result())
            except BrokenProcessPool:
                out.append(_error_result(path, f"{path}: {_WORKER_DIED}"))
        return out
    finally:
        for pool in pools:
            pool.shutdown(wait=True)
