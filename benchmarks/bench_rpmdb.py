"""fastelf's own rpm database lookup against ``rpm -qf``, on a database rpm writes here.

One spec with N subpackages of F files each is built by ``rpmbuild`` and
installed with ``rpm -i --justdb`` into a temporary root (SQLite, rpm 4.18);
its headers are then also written as a BerkeleyDB ``Packages`` hash file by
``db_load`` (the RHEL 7/8 format).  Timed, best of R runs, for P paths:

- ``sqlite_owners`` and ``bdb_owners`` when every package lists the base name
  asked (the worst case: every header is parsed),
- the same for base names no package lists (the usual case for a grafted
  library: at most a few headers hold its name),
- ``rpm -qf --root`` once per path, as fastelf did before and auditwheel does.

The answers are checked equal before any time is printed.  Needs rpm,
rpmbuild and db5.3_load (``.ci/run`` installs them).

    python benchmarks/bench_rpmdb.py [--packages N] [--files F] [--repeat R]
"""

from __future__ import annotations

import argparse
import sqlite3
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastelf.rpmdb import bdb_owners, sqlite_owners

DB = "var/lib/rpm"


def spec(packages: int, files: int) -> str:
    """A spec whose subpackages pkg1..pkgN each own F files under /usr/lib64/pN/."""
    out = ["Name: benchbase", "Version: 1", "Release: 1", "Summary: b", "License: MIT",
           "AutoReqProv: no", "BuildArch: noarch", "%description", "b"]
    for i in range(1, packages + 1):
        out += [f"%package -n pkg{i}", "Summary: b", f"%description -n pkg{i}", "b"]
    out += ["%install", "for i in $(seq 1 %{npkg}); do mkdir -p %{buildroot}/usr/lib64/p$i;",
            "for j in $(seq 1 %{nfile}); do echo x > %{buildroot}/usr/lib64/p$i/lib$j.so.1;",
            "done; done"]
    for i in range(1, packages + 1):
        out += [f"%files -n pkg{i}", f"/usr/lib64/p{i}"]
    return "\n".join(out) + "\n"


def make_root(base: Path, packages: int, files: int) -> Path:
    """A root with the SQLite database rpm wrote and the same headers as BerkeleyDB."""
    top, root = base / "top", base / "root"
    (top / "SPECS").mkdir(parents=True)
    (top / "SPECS" / "b.spec").write_text(spec(packages, files))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    "--define", f"npkg {packages}", "--define", f"nfile {files}",
                    "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}",
                    "--define", "_build_id_links none", str(top / "SPECS" / "b.spec")],
                   check=True, capture_output=True)
    rpms = sorted(str(p) for p in (top / "RPMS" / "noarch").glob("pkg*.rpm"))
    subprocess.run(["rpm", "--root", str(root), "--dbpath", f"/{DB}", "-i", "--nodeps",
                    "--justdb", *rpms], check=True, capture_output=True)
    with sqlite3.connect(root / DB / "rpmdb.sqlite") as con:
        blobs = con.execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
    dump = "".join(f" {struct.pack('<I', h).hex()}\n {b.hex()}\n" for h, b in blobs)
    (base / "bdb").mkdir()
    subprocess.run(["db5.3_load", str(base / "bdb" / "Packages")], check=True,
                   input=f"VERSION=3\nformat=bytevalue\ntype=hash\nHEADER=END\n{dump}"
                         "DATA=END\n".encode())
    return root


def best(fn: Callable[[], dict], repeat: int) -> tuple:
    """(fastest seconds, answer) of ``repeat`` calls."""
    times, answer = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - start)
    return min(times), answer


def rpm_qf(root: Path, paths: list) -> dict:
    """{path: package name} from ``rpm -qf`` run once per path."""
    out = {}
    for p in paths:
        r = subprocess.run(["rpm", "--root", str(root), "--dbpath", f"/{DB}", "-qf",
                            "--queryformat", "%{NAME}", p], capture_output=True, text=True)
        if r.returncode == 0:
            out[p] = r.stdout
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=300)
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.packages
    with tempfile.TemporaryDirectory() as tmp:
        root = make_root(Path(tmp), n, args.files)
        sq, bdb = str(root / DB / "rpmdb.sqlite"), str(Path(tmp) / "bdb" / "Packages")
        picks = sorted({1, n // 4 or 1, n // 2 or 1, (3 * n) // 4 or 1, n})
        cases = {"every package lists the name": [f"/usr/lib64/p{i}/lib2.so.1" for i in picks],
                 "no package lists the name": [f"/usr/lib64/p{i}/libnone{i}.so.1"
                                               for i in picks]}
        print(f"{n} packages x {args.files} files; best of {args.repeat} (rpm -qf: 1 run)")
        for label, paths in cases.items():
            t_sq, a_sq = best(lambda p=paths: sqlite_owners(sq, p).owners, args.repeat)
            t_bdb, a_bdb = best(lambda p=paths: bdb_owners(bdb, p).owners, args.repeat)
            t_rpm, a_rpm = best(lambda p=paths: rpm_qf(root, p), 1)
            names = [{p: v.name for p, v in a.items()} for a in (a_sq, a_bdb)]
            assert names[0] == names[1] == a_rpm, (names, a_rpm)
            print(f"{len(paths)} paths, {label} ({len(a_rpm)} owned):")
            print(f"  fastelf SQLite {t_sq * 1000:8.1f} ms   fastelf BerkeleyDB "
                  f"{t_bdb * 1000:8.1f} ms   rpm -qf {t_rpm * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
