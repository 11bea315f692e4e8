"""Audit many wheels, in parallel processes, yielding results in input order
(or, with ``ordered=False``, each as soon as it is done).

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
* a per-wheel ``timeout``: the worker's own interval timer raises in the
  audit (it also interrupts a blocked read); a worker stuck where no Python
  code runs is ended by its watchdog thread ``_HARD_GRACE`` seconds later,
  and the pool restart above then blames that wheel with a timeout error;
* workers die with their parent (Linux PR_SET_PDEATHSIG, and a watchdog
  thread that notices the parent is gone elsewhere): a killed ``fastelf audit``
  never leaves orphans running and holding its stdout open.

``concurrent.futures`` (and with it ``multiprocessing``), ``ctypes`` and the
remote module (``http.client``, ``ssl``) are imported when first needed: a
batch in this process over local files (a warm ``--cache`` run is mostly
start-up) never loads them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .audit import AuditResult, audit_path, platform_tags_of

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

IN_FLIGHT_PER_JOB = 4            # wheels submitted but not yet yielded, per worker
_WATCHDOG_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
_HARD_GRACE = 2.0                # seconds after a timeout before the worker ends itself
_WORKER_DIED = ("the worker process auditing this wheel died "
                "(crashed or was killed, e.g. for lack of memory)")


class _Timeout(BaseException):
    """Raised in a worker when a wheel's time is up.  A BaseException, so the
    audit's own ``except Exception`` handlers let it through."""


def _timeout_message(path: str, timeout: float) -> str:
    return f"{path}: timed out (the audit took more than {timeout:g} s)"



def find_wheels(paths: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Expand directories (recursively, sorted) into the ``*.whl`` files below them."""
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found: list[str] = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in files if f.endswith(".whl"))
            yield from sorted(found)
        else:
            yield p


def _error_result(path: str, error: str) -> AuditResult:
    return AuditResult(wheel=os.path.basename(path), path=path,
                       claimed_tags=platform_tags_of(path), error=error)


def _audit_one(path: str, options: dict[str, Any]) -> AuditResult:
    """One wheel's result; nothing raised in it may end the batch."""
    try:
        result = _audit_maybe_cached(path, options)
    except MemoryError:
        return _error_result(path, f"{path}: out of memory while auditing this wheel")
    except Exception as e:          # a bug must cost one wheel, not the batch
        return _error_result(path, f"{path}: internal error: {type(e).__name__}: {e}")
    # the symbol lists are large and not part of the report; a result from the cache
    # has no ELF list unless asked for (cache.CachedResult), and is not asked here
    for elf in vars(result).get("elfs", ()):
        elf.imports = []
    return result


def _audit_task(path: str, options: dict[str, Any], timeout: float | None) -> AuditResult:
    """What a worker runs: ``_audit_one`` (looked up at call time, so tests can
    replace it), within ``timeout`` seconds when one is given."""
    if timeout is None:
        return _audit_one(path, options)
    try:
        with _deadline(timeout):
            return _audit_one(path, options)
    except _Timeout:
        return _error_result(path, _timeout_message(path, timeout))


@contextlib.contextmanager
def _deadline(timeout: float) -> Iterator[None]:
    """Raise _Timeout in this (main) thread after ``timeout`` seconds; end the
    whole process ``_HARD_GRACE`` seconds later if that could not stop it
    (C code that never returns to the interpreter)."""
    armed = [True]

    def expire(_signum: int, _frame: Any) -> None:
        if armed[0]:                 # not once the audit is over and disarming
            raise _Timeout()

    previous = signal.signal(signal.SIGALRM, expire)
    killer = threading.Timer(timeout + _HARD_GRACE, os._exit, (124,))
    killer.daemon = True
    signal.setitimer(signal.ITIMER_REAL, timeout)
    killer.start()
    try:
        yield
    finally:
        armed[0] = False
        killer.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _audit_maybe_cached(path: str, options: dict[str, Any]) -> AuditResult:
    """``path`` may be a URL (see :mod:`fastelf.remote`); ``options["cache"]``:
    the path of a result cache to audit through; ``options["cache_verify"]``:
    hash every local wheel again instead of trusting its stat."""
    rest = {k: v for k, v in options.items() if k not in ("cache", "cache_verify")}
    cache_path = options.get("cache")
    if isinstance(path, str) and _is_url(path):
        from .remote import audit_url
        cache = None
        if cache_path is not None:
            from .cache import open_cache
            cache = open_cache(os.fspath(cache_path))
        return audit_url(path, cache=cache, **rest)
    if cache_path is None:
        return audit_path(path, **rest)
    from .cache import cached_audit
    return cached_audit(path, os.fspath(cache_path),
                        cache_verify=bool(options.get("cache_verify")), **rest)


def _is_url(path: str) -> bool:
    """:func:`fastelf.remote.is_url`, without importing the remote module for a path
    that cannot be a URL (one has ``://``)."""
    if "://" not in path:
        return False
    from .remote import is_url
    return is_url(path)


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
    import ctypes
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
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                               initargs=(os.getpid(),))


# ------------------------------------------------------------------ the batch

def audit_many(paths: Iterable[Any], jobs: int = 1, *, ordered: bool = True,
               timeout: float | None = None, **options: Any) -> Iterator[AuditResult]:
    """Yield an AuditResult for each wheel under ``paths`` (read lazily).

    ``jobs`` > 1 uses that many worker processes; 0 means one per CPU.  A
    wheel that cannot be read, or whose audit runs out of memory, kills its
    process or takes more than ``timeout`` seconds, yields a result with
    ``error`` set; the others are still audited.  ``ordered=False`` yields
    each result as soon as it is ready instead of in input order.  With a
    ``timeout`` even ``jobs=1`` audits in a worker process, which can be
    stopped.  ``options`` are audit_wheel's keyword arguments.
    """
    if jobs == 0:
        jobs = os.cpu_count() or 1
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    wheels = find_wheels(paths)
    if jobs <= 1 and timeout is None:
        for w in wheels:
            yield _audit_one(w, options)
        return
    yield from _Batch(max(jobs, 1), options, ordered=ordered, timeout=timeout).run(wheels)


class _Batch:
    """The parallel audit: a window of futures in input order over a pool that
    is replaced when a worker dies."""

    def __init__(self, jobs: int, options: dict[str, Any], *, ordered: bool = True,
                 timeout: float | None = None):
        self.jobs, self.options = jobs, options
        self.ordered, self.timeout = ordered, timeout
        self.window = jobs * IN_FLIGHT_PER_JOB
        self.pool: ProcessPoolExecutor | None = None

    def run(self, wheels: Iterable[str]) -> Iterator[AuditResult]:
        from concurrent.futures import CancelledError
        from concurrent.futures.process import BrokenProcessPool
        pending: collections.deque[tuple[str, Future]] = collections.deque()
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
                index = self._next_index(pending)
                try:
                    result = pending[index][1].result()
                except (BrokenProcessPool, CancelledError):
                    # the pool broke; or it was shut down by _submit after a broken
                    # submission, cancelling the wheels that had not started yet
                    results = self._recover(list(pending))
                    pending.clear()
                    yield from results
                    continue
                del pending[index]
                yield result
        finally:
            self._shutdown()

    def _next_index(self, pending: collections.deque[tuple[str, Future]]) -> int:
        """The position of the next result to yield: the oldest in order, else
        the first done (waiting for one)."""
        if self.ordered:
            return 0
        from concurrent.futures import FIRST_COMPLETED, wait
        while True:
            for i, (_path, future) in enumerate(pending):
                if future.done():
                    return i
            wait([future for _path, future in pending], return_when=FIRST_COMPLETED)

    def _submit(self, path: str) -> Future:
        """A future for ``path``; one that already failed when the pool broke since the
        last result was read (the wheel is then audited again by :meth:`_recover`)."""
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool
        if self.pool is None:
            self.pool = _new_pool(self.jobs)
        try:
            return self.pool.submit(_audit_task, path, self.options, self.timeout)
        except BrokenProcessPool:
            self._shutdown()
            future: Future = Future()
            future.set_exception(BrokenProcessPool("worker died"))
            return future

    def _recover(self, in_flight: list[tuple[str, Future]]) -> list[AuditResult]:
        """Results of the wheels that were in flight when the pool broke: those
        already done are kept; the others are audited again each in a process
        of its own (``jobs`` at a time), so only a wheel that kills its own
        process gets an error.  The next wheels go to a new pool."""
        self._shutdown()
        done: dict[int, AuditResult] = {}
        again = []
        for i, (path, future) in enumerate(in_flight):
            if future.done() and not future.cancelled() and future.exception() is None:
                done[i] = future.result()
            else:
                again.append(i)
        for start in range(0, len(again), self.jobs):
            chunk = again[start:start + self.jobs]
            done.update(zip(chunk, _audit_isolated([in_flight[i][0] for i in chunk],
                                                   self.options, self.timeout)))
        return [done[i] for i in range(len(in_flight))]

    def _shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _audit_isolated(paths: list[str], options: dict[str, Any],
                    timeout: float | None = None) -> list[AuditResult]:
    """Audit each of ``paths`` in a process of its own, all at once.  A process
    that dies after running longer than ``timeout`` was ended by its own
    watchdog (or at least overran): that wheel timed out."""
    from concurrent.futures.process import BrokenProcessPool
    pools = [_new_pool(1) for _ in paths]
    try:
        start = time.monotonic()
        futures = [pool.submit(_audit_task, path, options, timeout)
                   for pool, path in zip(pools, paths)]
        out = []
        for path, future in zip(paths, futures):
            try:
                out.append(future.result())
            except BrokenProcessPool:
                why = f"{path}: {_WORKER_DIED}"
                if timeout is not None and time.monotonic() - start >= timeout:
                    why = _timeout_message(path, timeout)
                out.append(_error_result(path, why))
        return out
    finally:
        for pool in pools:
            pool.shutdown(wait=True)
