"""Audits on a Dask LocalCluster (2 workers on 127.0.0.1) against ``--jobs 2``.

Oracles: the process-pool batch over the same wheels and URLs (the JSON lines
must be the same), the kernel (a task that ends its worker's process really
kills it: the nanny starts a new one).
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading

import pytest

pytest.importorskip("distributed")
import cloudpickle
import hostile_support as hs
from rangeserver import RangeServer

from fastelf import batch, cli
from fastelf import dask as fdask

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # tasks defined here


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Local wheels of every status, and the same wheels served over HTTP."""
    d = tmp_path_factory.mktemp("dask") / "w"
    d.mkdir()
    made = {f"{k}-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": v
            for k, v in hs.seed_wheels().items()}
    made["broken-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"] = b"PK\x05\x06 nope"
    for i in range(6):
        made[f"p{i}-1.0-py3-none-any.whl"] = hs.make_wheel({f"p{i}/__init__.py": b""},
                                                           dist=f"p{i}")
    for name, data in made.items():
        (d / name).write_bytes(data)
    srv = RangeServer(d, "range")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    local = sorted(str(p) for p in d.iterdir())
    urls = [srv.url(os.path.basename(p)) for p in local[:4]]
    yield local + urls
    srv.shutdown()
    srv.server_close()


def _lines(argv) -> tuple:
    out = io.StringIO()
    code = cli.main(argv, out=out)
    return code, [json.loads(x) for x in out.getvalue().splitlines()]


def _comparable(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "bytes_fetched"}


def test_dask_local_cluster_equals_jobs(corpus):
    jobs = _lines(["audit", "--json", "--jobs", "2", *corpus])
    on_dask = _lines(["audit", "--json", "--dask", "local:2", *corpus])
    assert on_dask[0] == jobs[0] == 3
    assert [d["path"] for d in on_dask[1]] == corpus
    assert list(map(_comparable, on_dask[1])) == list(map(_comparable, jobs[1]))
    unordered = _lines(["audit", "--json", "--compact", "--unordered", "--dask", "local:2",
                        *corpus])
    compact = _lines(["audit", "--json", "--compact", "--jobs", "2", *corpus])
    def key(d):
        return d["path"]
    assert sorted(map(_comparable, unordered[1]), key=key) == \
        sorted(map(_comparable, compact[1]), key=key)


@pytest.fixture(scope="module")
def client():
    with fdask.connect("local:2") as c:
        yield c


def _kill_two_wheels(path, options):
    if os.path.basename(path).startswith(("p3-", "deflated-")):
        os._exit(9)                       # the worker process dies with its task
    return batch._audit_one(path, options)


def test_a_worker_that_dies_costs_only_its_task(client, corpus):
    local = [p for p in corpus if "://" not in p]
    results = list(fdask.audit_on(client, local, task=_kill_two_wheels))
    assert [r.path for r in results] == local
    for r in results:
        if os.path.basename(r.path).startswith(("p3-", "deflated-")):
            assert r.error == f"{r.path}: {fdask._KILLED}"
        elif not r.path.endswith("broken-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"):
            assert r.error is None, r.error
    assert len(client.nthreads()) >= 1            # the cluster lives on


def test_audit_bag(client, corpus):
    bag = fdask.audit_bag(corpus, npartitions=3, detail=False)
    got = bag.compute()
    want = [r.to_dict(detail=False) for r in batch.audit_many(corpus, jobs=1)]
    assert list(map(_comparable, got)) == list(map(_comparable, want))


def test_usage_errors():
    for argv in (["audit", ".", "--dask", "local:0"], ["audit", ".", "--dask", "nonsense"],
                 ["audit", ".", "--dask", "local:2", "--timeout", "5"]):
        code, _ = _lines(argv)
        assert code == 2


def test_dask_with_a_cache(corpus, tmp_path):
    db = f"--cache={tmp_path / 'c.sqlite3'}"
    local = [p for p in corpus if "://" not in p]
    first = _lines(["audit", "--json", "--dask", "local:2", *local, db])
    second = _lines(["audit", "--json", "--dask", "local:2", *local, db])
    assert first == second
    c = __import__("fastelf.cache", fromlist=["ResultCache"]).ResultCache(tmp_path / "c.sqlite3")
    r = c.audit(next(p for p in local if "deflated" in p))
    assert r.cache_stats.wheel_hits == 1        # written by the Dask workers
