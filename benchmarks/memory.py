"""Peak memory and time of ``fastelf audit`` per wheel, each in a fresh process.

Every wheel is audited in its own subprocess (``python -c``), which reports its
peak RSS (``VmHWM`` from /proc/self/status, interpreter included) and the
audit's wall and CPU time; the largest peak is the number the ``Limits`` memory bound
is about.  The pinned corpus (``python benchmarks/corpus.py``) is the default
input.

    python benchmarks/memory.py                     # the pinned corpus, default limits
    python benchmarks/memory.py --untrusted a.whl   # with UNTRUSTED_LIMITS
    PYTHONPATH=/other/tree/src python benchmarks/memory.py   # another build, to compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_CHILD = r"""
import json, sys, time
from fastelf import wheel
from fastelf.audit import audit_path
limits = getattr(wheel, "UNTRUSTED_LIMITS", wheel.DEFAULT_LIMITS) if sys.argv[2] == "1" \
    else wheel.DEFAULT_LIMITS
t, c = time.perf_counter(), time.process_time()
r = audit_path(sys.argv[1], limits=limits)
t, c = time.perf_counter() - t, time.process_time() - c
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": t, "cpu": c, "peak_kib": hwm, "error": r.error}))
"""


def measure(path: Path, untrusted: bool) -> dict:
    """Audit one wheel in a fresh interpreter; its peak RSS and time."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), "1" if untrusted else "0"],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        return {"seconds": 0.0, "cpu": 0.0, "peak_kib": 0, "error": f"exit {out.returncode}: "
                f"{out.stderr.strip().splitlines()[-1:] or ''}"}
    return json.loads(out.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", nargs="*", type=Path, help="wheels (default: the pinned corpus)")
    ap.add_argument("--untrusted", action="store_true", help="audit with UNTRUSTED_LIMITS")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)
    paths = args.wheels
    if not paths:
        import corpus
        paths = corpus.available()
    rows = []
    for p in paths:
        r = measure(p, args.untrusted)
        r["wheel"] = p.name
        r["size"] = os.path.getsize(p)
        rows.append(r)
        print(f"{r['peak_kib'] / 1024:8.1f} MiB {r['seconds']:7.3f} s {r['cpu']:7.3f} s CPU "
              f"{r['size'] / 1e6:8.1f} MB "
              f"{p.name}{'  ERROR ' + r['error'] if r['error'] else ''}", flush=True)
    if rows:
        top = max(rows, key=lambda r: r["peak_kib"])
        print(f"max peak RSS {top['peak_kib'] / 1024:.1f} MiB ({top['wheel']}); "
              f"total audit time {sum(r['seconds'] for r in rows):.2f} s "
              f"({sum(r['cpu'] for r in rows):.2f} s CPU) over {len(rows)} wheels")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
