"""Remote wheels over HTTP: a real server on 127.0.0.1, with and without Range
support, and servers that lie.

Oracles: the local audit of the same file (every remote verdict must equal
it), the server's own count of the bytes it sent (what ``bytes_fetched``
must equal), fsspec's HTTP file object (a seekable remote file from another
implementation), and the wheel's size on disk.  A stalling server never
answers, so its timeout is certain, not a race.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import zipfile
from pathlib import Path

import hostile_support as hs
import pytest
from rangeserver import RangeServer as _Server

from fastelf import batch, cli, remote
from fastelf.audit import audit_path, audit_wheel
from fastelf.cache import ResultCache

ELFS = hs.seed_elfs(include_system=False)
EXT = "demo/seed.cpython-311-x86_64-linux-gnu.so"


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(mode="range"):
        srv = _Server(tmp_path / "w", mode)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def wheels(tmp_path):
    """Wheels of several kinds, one with a large non-ELF member."""
    d = tmp_path / "w"
    d.mkdir()
    made = {f"{k}-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": v
            for k, v in hs.seed_wheels().items()}
    made["big-1.0-cp311-cp311-manylinux_2_5_x86_64.whl"] = hs.make_wheel(
        {EXT: ELFS["x86_64-gnu-hash.so"], "demo/data.bin": os.urandom(1 << 20)}, dist="big")
    for name, data in made.items():
        (d / name).write_bytes(data)
    return sorted(d.iterdir())


def _verdict(r) -> dict:
    d = r.to_dict()
    d.pop("path")
    d.pop("bytes_fetched", None)
    return d


@pytest.mark.parametrize("mode", ["range", "norange"])
def test_remote_verdicts_equal_local(serve, wheels, mode):
    srv = serve(mode)
    for w in wheels:
        before, sent_before = len(srv.requests), srv.sent
        r = remote.audit_url(srv.url(w.name), timeout=30)
        assert r.error is None, r.error
        assert _verdict(r) == _verdict(audit_path(w))
        assert r.path == srv.url(w.name)
        assert r.bytes_fetched == srv.sent - sent_before <= w.stat().st_size
        if mode == "norange":
            assert len(srv.requests) - before == 1      # the one full download


def test_cli_audit_and_show_urls(serve, wheels, tmp_path):
    srv = serve()
    urls = [srv.url(w.name) for w in wheels]
    out = io.StringIO()
    code = cli.main(["audit", "--json", "--jobs", "2", *urls], out=out)
    local = io.StringIO()
    assert code == cli.main(["audit", "--json", *map(str, wheels)], out=local)
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    want = [json.loads(x) for x in local.getvalue().splitlines()]
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(cli.__file__).parent / "result.schema.json").read_text())
    for d in got:
        jsonschema.validate(d, schema)
    assert [d.pop("path") for d in got] == urls
    assert all(0 < d.pop("bytes_fetched") for d in got)
    assert got == [{k: v for k, v in d.items() if k != "path"} for d in want]
    shown = io.StringIO()
    cli.main(["show", urls[0]], out=shown)
    assert re.search(r"^fetched \d+ bytes$", shown.getvalue(), re.MULTILINE)


def test_fsspec_file_objects(serve, wheels):
    """audit_wheel takes fsspec's own seekable HTTP file; file:// goes through fsspec."""
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    srv = serve()
    w = wheels[0]
    with fsspec.filesystem("http").open(srv.url(w.name), "rb") as f:
        r = audit_wheel(f, filename=w.name)
    assert _verdict(r) == _verdict(audit_path(w))
    r = remote.audit_url(Path(w).as_uri())
    assert _verdict(r) == _verdict(audit_path(w)) and r.bytes_fetched <= w.stat().st_size


def test_only_what_the_audit_needs_is_fetched(serve, wheels):
    """Range reads: the zip's end, its central directory, local headers and the ELF
    member; a 1 MiB non-ELF member is only peeked at (its first bytes say "not ELF")."""
    srv = serve()
    big = next(w for w in wheels if w.name.startswith("big"))
    with zipfile.ZipFile(big) as zf:
        data = zf.getinfo("demo/data.bin")
    r = remote.audit_url(srv.url(big.name))
    assert _verdict(r) == _verdict(audit_path(big))
    assert r.bytes_fetched == srv.sent
    assert r.bytes_fetched < big.stat().st_size - data.compress_size // 2


@pytest.mark.parametrize("mode, message", [
    ("wrong-range", "the server answered Content-Range"),
    ("truncate", "the answer was cut short"),
    ("overlong", "the server announced"),
    ("stall", "timed out"),
])
def test_lying_servers_cost_one_wheel(serve, wheels, mode, message, monkeypatch):
    liar, honest = serve(mode), serve()
    big = next(w for w in wheels if w.name.startswith("big"))
    monkeypatch.setenv("FASTELF_HTTP_TIMEOUT", "1")
    urls = [honest.url(wheels[0].name), liar.url(big.name), honest.url(wheels[1].name)]
    results = list(batch.audit_many(urls, jobs=1))
    assert [r.path for r in results] == urls
    assert results[0].error is None and results[2].error is None
    err = results[1].error
    assert err and err.startswith(urls[1] + ": ") and message in err and "\n" not in err


def test_overlong_body_is_refused_or_ignored_never_used(serve, wheels):
    """A 206 body longer than its Content-Length: http.client reads only what was
    announced; the extra bytes break the next answer on that connection."""
    srv = serve("overlong")
    big = next(w for w in wheels if w.name.startswith("big"))
    r = remote.audit_url(srv.url(big.name), timeout=5)
    assert r.error is not None or _verdict(r) == _verdict(audit_path(big))


def test_http_errors_and_missing_files(serve, wheels):
    srv = serve()
    r = remote.audit_url(srv.url("nope-1.0-py3-none-any.whl"), timeout=5)
    assert r.error.endswith(": HTTP 404") and r.wheel == "nope-1.0-py3-none-any.whl"
    r = remote.audit_url("http://127.0.0.1:9/x-1.0-py3-none-any.whl", timeout=5)
    assert "download failed" in r.error


def test_remote_cache_by_url_size_and_etag(serve, wheels, tmp_path):
    srv = serve()
    cache = ResultCache(tmp_path / "c.db")
    url = srv.url(wheels[0].name)
    first = remote.audit_url(url, cache=cache)
    second = remote.audit_url(url, cache=cache)
    assert first.cache_stats.elfs_parsed >= 1 and second.cache_stats.wheel_hits == 1
    assert _verdict(first) == _verdict(second) == _verdict(audit_path(wheels[0]))
    assert second.bytes_fetched <= first.bytes_fetched
    musl = next(w for w in wheels if w.name.startswith("musl"))
    shutil.copy(musl, wheels[0])                  # new bytes, new ETag: not a hit
    third = remote.audit_url(url, cache=cache)
    assert third.cache_stats.wheel_hits == 0
    assert _verdict(third) == _verdict(audit_path(wheels[0])) != _verdict(first)
