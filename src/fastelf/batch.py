"""Audit many wheels, in parallel processes, yielding results in input order."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .audit import AuditResult, audit_path, platform_tags_of


def find_wheels(paths):
    """Expand directories (recursively, sorted) into the ``*.whl`` files below them."""
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in files if f.endswith(".whl"))
            yield from sorted(found)
        else:
            yield p


def _audit_one(path, options):
    result = audit_path(path, **options)
    for elf in result.elfs:          # the symbol lists are large and not part of the report
        elf.imports = []
    return result


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def audit_many(paths, jobs: int = 1, **options):
    """Yield an AuditResult for each wheel under ``paths``, in order.

    ``jobs`` > 1 uses that many worker processes; 0 means one per CPU.
    Work is handed out largest wheel first, so one big wheel does not start
    last and leave the other workers idle; results still come in input
    order.  A wheel that cannot be read yields a result with ``error`` set;
    the others are still audited.
    """
    wheels = list(find_wheels(paths))
    if jobs == 0:
        jobs = os.cpu_count() or 1
    if jobs <= 1 or len(wheels) <= 1:
        for w in wheels:
            yield _audit_one(w, options)
        return
    order = sorted(range(len(wheels)), key=lambda i: -_size(wheels[i]))
    with ProcessPoolExecutor(max_workers=min(jobs, len(wheels))) as ex:
        futures = {i: ex.submit(_audit_one, wheels[i], options) for i in order}
        for i in range(len(wheels)):
            try:
                result = futures[i].result()
            except BrokenProcessPool:
                break
            yield result
        else:
            return
    # A worker died (a crash, or killed for memory) and took the pool down: the
    # wheels not finished are audited again one per process, so only the wheel
    # that kills its process is reported, and the others still get a verdict.
    for j in range(i, len(wheels)):
        f = futures[j]
        if f.done() and not f.cancelled() and f.exception() is None:
            yield f.result()
        else:
            yield _audit_isolated(wheels[j], options)


def _audit_isolated(path, options):
    with ProcessPoolExecutor(max_workers=1) as ex:
        try:
            return ex.submit(_audit_one, path, options).result()
        except BrokenProcessPool:
            return AuditResult(wheel=os.path.basename(path), path=path,
                               claimed_tags=platform_tags_of(path),
                               error="the worker process auditing this wheel died "
                                     "(crashed or was killed, e.g. for lack of memory)")
