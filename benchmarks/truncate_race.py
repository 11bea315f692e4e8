"""Truncate a wheel while fastelf audits it, many times: how often does the
auditing process die of a signal (SIGBUS with a shared mapping) instead of
reporting a one-line error?  A demonstration, not a test: it depends on timing.

    python benchmarks/truncate_race.py                 # 12 trials, this tree
    PYTHONPATH=/other/src python benchmarks/truncate_race.py   # another tree
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

_CHILD = ("import sys\nfrom fastelf.audit import audit_path\n"
          "print(audit_path(sys.argv[1]).error)\n")


def _elf(size: int, salt: int) -> bytes:
    """An ELF64 header then ``size`` incompressible bytes (read by every parse to
    its end: the program header points PT_DYNAMIC at the last page)."""
    import struct
    head = bytearray(64 + 112)
    head[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", head, 16, 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    struct.pack_into("<IIQQQQQQ", head, 64, 1, 5, 0, 0, 0, size, size, 4096)
    struct.pack_into("<IIQQQQQQ", head, 120, 2, 6, size - 4096, size - 4096, size - 4096,
                     16, 16, 8)
    body = random.Random(salt).randbytes(size - len(head) - 4096)
    return bytes(head) + body + bytes(4096)


def build(path: Path, members: int = 300, size: int = 2 << 20) -> None:
    with zipfile.ZipFile(path, "w", compresslevel=1) as z:
        for i in range(members):
            zi = zipfile.ZipInfo(f"pkg/lib{i}.so", date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, _elf(size, i % 4))


def trial(src: Path, work: Path) -> str:
    """'signal', 'error' (one line) or 'done' (finished before the cut)."""
    shutil.copyfile(src, work)
    p = subprocess.Popen([sys.executable, "-c", _CHILD, str(work)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(random.uniform(0.15, 0.6))
    os.truncate(work, os.path.getsize(work) // 2)
    out, _ = p.communicate()
    if p.returncode < 0:
        return "signal"
    return "done" if out.strip() == "None" else "error"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--trials", type=int, default=12)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "race-1.0-cp311-cp311-linux_x86_64.whl"
        build(src)
        work = Path(d) / "cut-1.0-cp311-cp311-linux_x86_64.whl"
        counts = {"signal": 0, "error": 0, "done": 0}
        for _ in range(args.trials):
            counts[trial(src, work)] += 1
    print(f"killed by a signal: {counts['signal']}, one-line error: {counts['error']}, "
          f"finished before the cut: {counts['done']} (of {args.trials})")
    return 1 if counts["signal"] else 0


if __name__ == "__main__":
    sys.exit(main())
