"""Peak memory of ``patch_elf`` on one large library, in a fresh process.

The child reads the library, resets and notes its peak RSS (``VmHWM``), patches it the way
``fastelf repair`` patches a grafted library (a longer SONAME, so ``.dynstr``
is relocated, and no search path), and notes the peak again.  The difference,
in units of the input's size, is what ``patch_elf`` holds at once beyond the
input: 1.0 means one output buffer and nothing else.

    python benchmarks/bench_patch_memory.py                 # libicudata if present
    python benchmarks/bench_patch_memory.py some/lib.so     # any shared library
    python benchmarks/bench_patch_memory.py --reuse         # patch_elf(..., reuse_input=True)
    PYTHONPATH=/other/tree/src python benchmarks/bench_patch_memory.py   # compare builds

Without an argument and without libicudata, a 32 MiB library is linked with
``cc`` (a large ``.rodata`` array), as big as ICU's data library.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_ICU = Path("/usr/lib/x86_64-linux-gnu/libicudata.so.72")

_CHILD = r"""
import json, os, sys
from fastelf.patch import patch_elf

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

reuse = sys.argv[2] == "1"
with open(sys.argv[1], "rb") as f:
    data = bytearray(os.fstat(f.fileno()).st_size) if reuse else f.read()
    if reuse:
        f.readinto(data)
try:                      # reset the peak to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before, size = hwm(), len(data)
kw = {"reuse_input": True} if reuse else {}
out = patch_elf(data, set_soname="libbig-0123abcd.so.72.1", remove_rpath=True, **kw)
after = hwm()
print(json.dumps({"size": size, "out": len(out), "before_kib": before, "after_kib": after}))
"""


def _generated(tmp: str) -> Path:
    """A 32 MiB shared library: one large constant array, as in ICU's data library."""
    src = Path(tmp, "big.c")
    src.write_text("const unsigned char big[32 << 20] = {1};\n"
                   "int big_first(void) { return big[0]; }\n")
    lib = Path(tmp, "libbig.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src),
                    "-Wl,-soname,libbig.so"], check=True)
    return lib


def measure(lib: Path, reuse: bool) -> dict:
    """Patch ``lib`` in a fresh interpreter; its peak RSS before and after."""
    run = subprocess.run([sys.executable, "-c", _CHILD, str(lib), "1" if reuse else "0"],
                         capture_output=True, text=True, check=True)
    row: dict = json.loads(run.stdout)
    row["held_over_input"] = (row["after_kib"] - row["before_kib"]) * 1024 / row["size"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("library", nargs="?", type=Path, help="default: libicudata, else generated")
    ap.add_argument("--reuse", action="store_true",
                    help="read into a bytearray and patch it with reuse_input=True")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lib = args.library or (_ICU if _ICU.exists() else _generated(tmp))
        row = measure(lib, args.reuse)
    mib = 1024
    how = " (reuse_input)" if args.reuse else ""
    print(f"{lib}{how}: {row['size'] / 2**20:.1f} MiB in, "
          f"peak RSS {row['before_kib'] / mib:.1f} MiB after reading, "
          f"{row['after_kib'] / mib:.1f} MiB after patch_elf: "
          f"+{(row['after_kib'] - row['before_kib']) / mib:.1f} MiB "
          f"({row['held_over_input']:.2f} x the input)")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
