"""Cold vs warm runs of the result cache over the pinned corpus, CLI and in process.

Each round, in one run of this script: ``fastelf audit --json`` without a
cache, with a new (cold) cache and again with that (warm) cache; then the same
cold and warm audits in this process (``ResultCache.audit`` and ``to_json``
for every wheel, fastelf already imported).  The medians over the rounds are
printed: wall time and CPU time (user + system, of the child for the CLI; the
machine may be shared, and CPU time is what load disturbs least), ELF members
parsed, and the warm run's speed-up over the cold one.  The warm output must
equal the cold output byte for byte (checked).  The wheels are the pinned
corpus of ``benchmarks/corpus.py`` (exactly its files: other wheels kept in the
same directory are left out), or every wheel under ``--dir``.

    python benchmarks/bench_cache.py [--dir DIR] [--jobs N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402


class Timing(NamedTuple):
    wall: float         # seconds
    cpu: float          # user + system seconds
    output: str         # what was printed (JSON lines)
    summary: str        # the CLI's summary line, or the in-process cache counts


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(wheels: list[str], jobs: int, extra: list[str]) -> Timing:
    """One `fastelf audit --json` run."""
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fastelf", "audit", "--json", "--no-progress",
                           "--jobs", str(jobs), *wheels, *extra],
                          capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    return Timing(wall, cpu, proc.stdout, proc.stderr.strip().splitlines()[-1])


def run_in_process(paths: list[str], db: Path) -> Timing:
    """Every wheel through ``ResultCache.audit``, as JSON lines."""
    from fastelf.cache import CacheStats, ResultCache
    cpu0, start = time.process_time(), time.perf_counter()
    cache = ResultCache(db)
    stats, lines = CacheStats(), []
    for p in paths:
        r = cache.audit(p)
        lines.append(r.to_json())
        stats.add(r.cache_stats)
    cache.close()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    summary = (f"cache: {stats.wheel_hits} wheel hits, {stats.elf_hits} ELF hits, "
               f"{stats.elfs_parsed} ELFs parsed, {stats.wheels_hashed} wheels hashed")
    return Timing(wall, cpu, "\n".join(lines), summary)


def _rounds(n: int, one: Callable[[Path], dict[str, Timing]]) -> dict[str, list[Timing]]:
    """``one(db)`` ``n`` times, each with a new cache file."""
    out: dict[str, list[Timing]] = {}
    for _ in range(n):
        with tempfile.TemporaryDirectory() as tmp:
            for name, t in one(Path(tmp) / "bench.sqlite3").items():
                out.setdefault(name, []).append(t)
    return out


def _report(title: str, runs: dict[str, list[Timing]]) -> None:
    wall = {k: statistics.median(t.wall for t in v) for k, v in runs.items()}
    cpu = {k: statistics.median(t.cpu for t in v) for k, v in runs.items()}
    print(f"{title} (median of {len(runs['cold'])} rounds)")
    for name, ts in runs.items():
        print(f"  {name:9} {wall[name]:7.3f} s wall {cpu[name]:7.3f} s cpu   {ts[-1].summary}")
    same = all(c.output == w.output for c, w in zip(runs["cold"], runs["warm"]))
    print(f"  warm output identical to cold: {same}")
    print(f"  warm speed-up over cold: {wall['cold'] / wall['warm']:.1f}x wall, "
          f"{cpu['cold'] / cpu['warm']:.1f}x cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="every wheel under DIR instead of the corpus")
    ap.add_argument("--jobs", type=int, default=1, help="CLI worker processes")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from fastelf.batch import find_wheels
    paths = ([str(p) for p in corpus.available()] if args.dir is None
             else list(find_wheels([args.dir])))
    where = args.dir or f"the corpus ({corpus.cache_dir()})"
    print(f"{len(paths)} wheels from {where}, {sum(os.path.getsize(p) for p in paths) >> 20} "
          f"MiB; load average {os.getloadavg()[0]:.2f}")

    def cli_round(db: Path) -> dict[str, Timing]:
        flag = [f"--cache={db}"]
        return {"no cache": run_cli(paths, args.jobs, []),
                "cold": run_cli(paths, args.jobs, flag),
                "warm": run_cli(paths, args.jobs, flag)}

    def api_round(db: Path) -> dict[str, Timing]:
        return {"cold": run_in_process(paths, db), "warm": run_in_process(paths, db)}

    _report(f"CLI: fastelf audit --json --jobs {args.jobs}", _rounds(args.rounds, cli_round))
    _report("in process: ResultCache.audit + to_json", _rounds(args.rounds, api_round))
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
