#!/usr/bin/env python3
"""Build src/fastelf/abi3.json, the stable ABI table of ``fastelf check``.

Input: tools/abi3-sources/stable_abi.txt, the [function.*] and [data.*] items
of CPython's Misc/stable_abi.toml (the manifest CPython itself tests its stable
ABI against), each under the version that added it.  Output: for each version,
the sorted symbol names it added, keeping only the symbols a release build of
CPython exports on Linux: items behind ``MS_WINDOWS`` or ``USE_STACKCHECK``
(Windows only) or ``Py_REF_DEBUG`` (debug builds only) are left out, so an
abi3 extension importing one of them is reported.

Run: python tools/gen_abi3.py   (rewrites the JSON; commit both files)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "abi3-sources" / "stable_abi.txt"
OUTPUT = HERE.parent / "src" / "fastelf" / "abi3.json"
NOT_ON_LINUX = frozenset(("MS_WINDOWS", "USE_STACKCHECK", "Py_REF_DEBUG"))


def parse(text: str) -> dict[str, list[str]]:
    """{version: [names]} from the source table; a malformed line stops the build."""
    table: dict[str, list[str]] = {}
    version = None
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("=="):
            version = line[2:].strip()
            table.setdefault(version, [])
            continue
        kind, name, *flags = line.split()
        if version is None or kind not in ("f", "d") or name in seen:
            sys.exit(f"{SOURCE}:{lineno}: bad or repeated entry: {raw!r}")
        seen.add(name)
        ifdefs = {f.split("=", 1)[1] for f in flags if f.startswith("ifdef=")}
        if not ifdefs & NOT_ON_LINUX:
            table[version].append(name)
    return {v: sorted(names) for v, names in table.items()}


def main() -> None:
    table = parse(SOURCE.read_text())
    doc = {"source": "python/cpython Misc/stable_abi.toml (see tools/abi3-sources/stable_abi.txt)",
           "added": table}
    OUTPUT.write_text(json.dumps(doc, indent=0, sort_keys=False) + "\n")
    print(f"wrote {OUTPUT} ({sum(map(len, table.values()))} symbols)")


if __name__ == "__main__":
    main()
