"""Synthetic census input at any scale, shaped like real ``fastelf audit --json`` lines.

``synthetic_lines(templates, n)`` takes real audit results (dicts parsed
from the output of ``fastelf audit --json`` on fixture wheels) and writes
``n`` variants: other project names and versions, other architectures,
libcs, best tags, glibc versions, external and grafted libraries and
problems, drawn from a seeded generator, so a 1-million-line crawl can be
made in seconds without a million wheels.  The fields a census reads keep
the types and wording audit.py writes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

ARCHES = ["x86_64", "x86_64", "x86_64", "aarch64", "aarch64", "i686", "s390x", "ppc64le"]
GLIBC = ["2.2.5", "2.3", "2.3.4", "2.4", "2.14", "2.17", "2.25", "2.27", "2.28", "2.34"]
MUSL_TAGS = ["musllinux_1_1", "musllinux_1_2"]
EXTERNAL = ["libssl.so.3", "libcrypto.so.3", "libgomp.so.1", "libopenblas.so.0", "libcurl.so.4",
            "libxml2.so.2", "libpq.so.5", "libffi.so.8", "libhdf5.so.310", "libzmq.so.5"]
GRAFTED = ["libgfortran", "libquadmath", "libopenblas", "libssl", "libcrypto", "libz",
           "libgomp", "libstdc++", "libjpeg", "libpng16"]
PROBLEMS = ["no ELF file names a libc; assuming glibc",
            ("the wheel imports symbols that older manylinux_2_17 systems lack: "
            "getrandom (glibc 2.25); glibc >= 2.25 is needed"),
            {"kind": "exec-stack", "message": "pkg/a.so asks for an executable stack"}]


def _variant(rng: random.Random, base: dict, i: int) -> dict:
    d = dict(base)
    project = f"proj{int(rng.paretovariate(1.2)) % 5000}"
    arch = rng.choice(ARCHES)
    musl = rng.random() < 0.15
    libc = "musl" if musl else "glibc"
    if musl:
        best = f"{rng.choice(MUSL_TAGS)}_{arch}"
    else:
        g = rng.choice(GLIBC)
        major, minor = g.split(".")[:2]
        best = f"manylinux_{major}_{max(5, int(minor))}_{arch}"
    claimed = best if rng.random() < 0.8 else best.replace("_1_2_", "_1_1_").replace(
        "_2_28_", "_2_17_").replace("_2_34_", "_2_17_")
    d["wheel"] = f"{project}-1.{i % 7}-cp311-cp311-{claimed}.whl"
    d["path"] = f"crawl/{d['wheel']}"
    if d.get("status") == "error" or rng.random() < 0.02:
        return {"version": 2, "wheel": d["wheel"], "path": d["path"], "status": "error",
                "reason": f"{d['path']}: not a zip file", "ok": False, "pure": False,
                "error": f"{d['path']}: not a zip file"}
    unsat = {} if claimed == best else {claimed: "symbol version GLIBC_2.28 is too recent "
                                                 "(pkg/a.so: fcntl64)"}
    d.update(status="mislabeled" if unsat else "ok", arch=arch, libc=libc, best_tag=best,
             tags=[best], claimed_tags=[claimed], unsatisfied_claims=unsat, pure=False,
             reason="; ".join(f"{t}: {w}" for t, w in unsat.items()) or None, ok=not unsat)
    d["versioned_symbols"] = {} if musl else {"libc.so.6": ["GLIBC_2.2.5", f"GLIBC_{g}"]}
    d["external_libraries"] = {e: ["pkg/a.so"] for e in rng.sample(EXTERNAL, rng.choice(
        [0, 0, 0, 1, 2]))}
    elfs = list(d.get("elfs") or [])
    for lib in rng.sample(GRAFTED, rng.choice([0, 0, 1, 3])):
        elfs.append({"path": f"{project}.libs/{lib}-{rng.getrandbits(32):08x}.so.1",
                     "arch": arch, "libc": libc})
    d["elfs"] = elfs
    d["problems"] = [rng.choice(PROBLEMS)] if rng.random() < 0.1 else []
    return d


def synthetic_lines(templates: list[dict], n: int, seed: int = 13) -> Iterator[bytes]:
    """``n`` JSON lines (bytes, newline-terminated) varied from ``templates``."""
    rng = random.Random(seed)
    for i in range(n):
        yield (json.dumps(_variant(rng, templates[i % len(templates)], i)) + "\n").encode()
