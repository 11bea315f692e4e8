"""Time ``fastelf report`` on a large crawl: by default 1,000,000 audit result lines.

    python benchmarks/bench_census.py [N] [--keep DIR]

The lines are varied (tests/census_synth.py) from the real ``fastelf audit
--json`` output of fixture wheels built here with the C compiler, so they
carry the full schema-2 detail (elfs, policies) a crawl writes.  The input
is written first (not timed); then the whole report is timed: reading and
parsing every line, the counts, the rows files beside the page, the page.
Prints one Markdown table row.  No threshold: this only measures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "src"))

from census_synth import synthetic_lines  # noqa: E402
from elfbuild import compile_c  # noqa: E402
from wheelbuild import build_wheel  # noqa: E402

from fastelf import cli  # noqa: E402
from fastelf.census_html import write_html_report  # noqa: E402


def templates(work: Path) -> list[dict]:
    """Real audit results: an ok, a mislabeled and an unreadable wheel."""
    ok = compile_c(work, "ok.so", "#include <stdlib.h>\nvoid *PyInit_m(void){return malloc(8);}\n")
    bad = compile_c(work, "bad.so", "#include <sys/random.h>\nvoid *PyInit_m(void)"
                                    "{char b[4];return (void*)(long)getrandom(b,4,0);}\n")
    if ok is None or bad is None:
        sys.exit("bench_census: needs gcc")
    wheels = work / "wheels"
    build_wheel(wheels, {"a/m.so": ok}, name="a", tags="manylinux_2_17_x86_64")
    build_wheel(wheels, {"b/m.so": bad}, name="b", tags="manylinux2014_x86_64")
    (wheels / "c-1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"not a zip")
    buf = io.StringIO()
    cli.main(["audit", "--json", "--no-progress", str(wheels)], out=buf)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write input and report here (default: a temp dir)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="runs, by processes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        src = work / "results.jsonl"
        with src.open("wb", buffering=1 << 20) as f:
            f.writelines(synthetic_lines(templates(work), args.n))
        out = work / "census.html"
        print("| lines | input MB | --jobs | wall s | CPU s | lines/s | page KB | rows MB |")
        print("|---|---|---|---|---|---|---|---|")
        for jobs in args.jobs:
            t0, c0 = time.perf_counter(), os.times()
            result = write_html_report([str(src)], out, jobs=jobs)
            wall, c1 = time.perf_counter() - t0, os.times()
            cpu = sum(c1[:4]) - sum(c0[:4])         # user + system, children included
            rows_mb = sum(p.stat().st_size for p in work.glob("census.*.jsonl")) / 1e6
            print(f"| {result.lines:,} | {src.stat().st_size / 1e6:,.0f} | {jobs} | {wall:.1f} "
                  f"| {cpu:.1f} | {result.lines / wall:,.0f} | {out.stat().st_size / 1e3:,.0f} "
                  f"| {rows_mb:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
