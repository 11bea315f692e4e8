"""Cold vs warm runs of ``fastelf audit --cache`` over the pinned corpus.

Three runs over the same wheels: no cache, a cold cache (facts are parsed and
stored), a warm cache (every wheel is a hit: hashed, never parsed).  Prints
wall time, ELF members parsed and the speed-up of the warm run over the
uncached one.  The corpus comes from ``benchmarks/corpus.py``.

    python benchmarks/bench_cache.py [--dir DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("FASTELF_BENCH_CACHE", "~/.cache/fastelf-bench")).expanduser()


def run(wheels: Path, jobs: int, extra: list) -> tuple:
    """(seconds, the summary line) of one `fastelf audit` run."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", "-q", "--no-progress",
                           "--jobs", str(jobs), str(wheels), *extra],
                          capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc.stderr.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="directory of wheels")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"--cache={Path(tmp) / 'bench.sqlite3'}"
        plain, _ = run(args.dir, args.jobs, [])
        cold, cold_line = run(args.dir, args.jobs, [db])
        warm, warm_line = run(args.dir, args.jobs, [db])
    print(f"no cache   {plain:7.2f} s")
    print(f"cold cache {cold:7.2f} s   {cold_line.split('; ', 1)[-1]}")
    print(f"warm cache {warm:7.2f} s   {warm_line.split('; ', 1)[-1]}")
    print(f"warm / uncached speed-up: {plain / warm:.1f}x")


if __name__ == "__main__":
    main()
