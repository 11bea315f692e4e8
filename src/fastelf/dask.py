"""Audit on a Dask cluster (``fastelf audit --dask SCHEDULER``; extra ``[dask]``).

Each wheel (a path the workers can see, or a URL) is one task running the
same per-wheel audit as ``--jobs`` (:func:`fastelf.batch._audit_one`), so
the JSON lines are the same.  A bounded window of tasks is in flight (four
per worker thread), so a list of millions streams through.  A task whose
worker dies is retried once on another worker (the scheduler's
``allowed-failures`` is set to 1 for a cluster fastelf starts); if it kills
that one too, the wheel gets an error result and the batch goes on.  The
scheduler's ``worker-saturation`` is set to 1.0 so that a worker holds only
the task its thread runs (the others wait in the scheduler's queue): a worker
that dies then takes no innocent wheel with it.  Set both on a scheduler you
start yourself for the same guarantees.

``audit_bag(urls)`` gives the same results as a dask bag of JSON-ready dicts,
for pipelines that already use dask.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from .audit import AuditResult
from .batch import _audit_one, _error_result, find_wheels

IN_FLIGHT_PER_THREAD = 4
_KILLED = ("the Dask worker auditing this wheel died, and so did the one that "
           "retried it (crashed or was killed, e.g. for lack of memory)")


def _import() -> Any:
    try:
        import distributed
    except ImportError:
        from .errors import FastElfError
        raise FastElfError("--dask needs dask.distributed: pip install 'fastelf[dask]'") from None
    return distributed


@contextlib.contextmanager
def connect(scheduler: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``tcp://host:port`` (an existing scheduler),
    or ``local:N`` (a LocalCluster of N single-threaded worker processes on
    127.0.0.1, closed on exit)."""
    distributed = _import()
    import dask
    if scheduler.startswith("local:"):
        n = int(scheduler.split(":", 1)[1])
        if n < 1:
            raise ValueError("local:N needs N >= 1")
        with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                              "distributed.scheduler.worker-saturation": 1.0}):
            cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", silence_logs=40)
            try:
                with distributed.Client(cluster) as client:
                    yield client
            finally:
                cluster.close()
        return
    with distributed.Client(scheduler) as client:
        yield client


def _threads(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


def audit_on(client: Any, paths: Iterable[Any], *, ordered: bool = True,
             task: Callable[[str, dict], AuditResult] = _audit_one,
             **options: Any) -> Iterator[AuditResult]:
    """Yield an AuditResult per wheel under ``paths``, audited on ``client``'s
    cluster; in input order unless ``ordered=False``.  ``task`` is the
    per-wheel function (tests substitute one)."""
    distributed = _import()
    window = _threads(client) * IN_FLIGHT_PER_THREAD
    pending: collections.deque[tuple] = collections.deque()
    done = None if ordered else distributed.as_completed()   # holds what it has not yielded
    source = iter(find_wheels(paths))
    while True:
        while len(pending) < window:
            path = next(source, None)
            if path is None:
                break
            future = client.submit(task, path, options, pure=False, retries=0)
            pending.append((path, future))
            if done is not None:
                done.add(future)
        if not pending:
            return
        if done is None:
            path, future = pending.popleft()
        else:
            finished = next(done)
            index = next(i for i, (_p, f) in enumerate(pending) if f is finished)
            path, future = pending[index]
            del pending[index]
        yield _outcome(path, future, distributed)


def _outcome(path: str, future: Any, distributed: Any) -> AuditResult:
    """The task's result, or an error result when it could not be had."""
    try:
        return future.result()
    except distributed.KilledWorker:
        return _error_result(path, f"{path}: {_KILLED}")
    except Exception as e:          # a lost scheduler, a result that failed to unpickle
        return _error_result(path, f"{path}: Dask task failed: {type(e).__name__}: {e}")
    finally:
        future.release()


def _audit_dict(path: str, options: dict, detail: bool) -> dict:
    return _audit_one(path, options).to_dict(detail=detail)


def audit_bag(urls: Iterable[str], *, npartitions: int | None = None, detail: bool = True,
              **options: Any) -> Any:
    """A dask bag of the JSON-ready result dicts (``AuditResult.to_dict``) of the
    wheels at ``urls`` (paths the workers can see, or URLs)."""
    _import()
    import dask.bag as db
    items = list(urls)
    bag = db.from_sequence(items, npartitions=npartitions or max(1, min(len(items), 100)))
    return bag.map(_audit_dict, options, detail)
