"""Crawler-scale figures on the pinned corpus (``benchmarks/corpus.py``).

* throughput per core: compressed MB/s of ``fastelf audit --jobs 1``;
* ``--jobs 2`` against ``--dask local:2`` (needs fastelf[dask]);
* remote: the same wheels served by a Range-capable HTTP server on 127.0.0.1
  (``tests/rangeserver.py``): bytes fetched against bytes on disk, and time.

The cache's cold/warm figures are ``benchmarks/bench_cache.py``.

    python benchmarks/bench_crawl.py [--dir DIR] [--no-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import rangeserver  # noqa: E402

DEFAULT_DIR = Path(os.environ.get("FASTELF_BENCH_CACHE", "~/.cache/fastelf-bench")).expanduser()


def audit(args: list) -> tuple:
    """(seconds, JSON results) of one ``fastelf audit --json --compact`` run."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", "--json", "--compact",
                           "--no-progress", *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    return seconds, [json.loads(x) for x in proc.stdout.splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args()
    wheels = sorted(args.dir.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    print(f"corpus: {len(wheels)} wheels, {size / 1e6:.1f} MB compressed")

    one, res = audit(["--jobs", "1", str(args.dir)])
    print(f"--jobs 1        {one:6.2f} s  {size / 1e6 / one:6.1f} MB/s per core")
    two, _ = audit(["--jobs", "2", str(args.dir)])
    print(f"--jobs 2        {two:6.2f} s  {one / two:4.2f}x of --jobs 1")
    if not args.no_dask:
        dsk, _ = audit(["--dask", "local:2", str(args.dir)])
        print(f"--dask local:2  {dsk:6.2f} s  {one / dsk:4.2f}x of --jobs 1 "
              "(includes starting the cluster)")

    srv = rangeserver.start(args.dir)
    try:
        urls = [srv.url(w.name) for w in wheels]
        rem, rres = audit(["--jobs", "1", *urls])
    finally:
        rangeserver.stop(srv)
    fetched = sum(d.get("bytes_fetched", 0) for d in rres)
    same = [{k: v for k, v in d.items() if k not in ("path", "bytes_fetched")} for d in rres] == \
        [{k: v for k, v in d.items() if k != "path"} for d in res]
    print(f"remote --jobs 1 {rem:6.2f} s  fetched {fetched / 1e6:.1f} MB of {size / 1e6:.1f} MB "
          f"({100 * fetched / size:.0f}%), {srv.requests.__len__()} requests; "
          f"verdicts {'equal' if same else 'DIFFER'} to local")


if __name__ == "__main__":
    main()
