"""Time ``fastelf audit`` against ``auditwheel show`` on the same wheels, in one run.

What is measured (on the pinned corpus of benchmarks/corpus.py unless wheels
are given on the command line):

1. In process, per wheel, pinned to one CPU: ``fastelf.audit.audit_wheel``
   against ``auditwheel.wheel_abi.analyze_wheel_abi`` called the way
   ``auditwheel show`` calls it (libc and architecture from the file name).
   auditwheel memoises ``get_wheel_elfdata`` per wheel path (``lru_cache``),
   so its caches are cleared before every run; otherwise repeats would time
   a cache hit.  Per wheel: medians, the ratio auditwheel/fastelf, and the
   ratio of the sums of medians over the corpus.
2. In the same pass, fastelf with each slower inflate backend: ISA-L alone
   (libdeflate disabled) and the pure-zlib fallback (both disabled), by
   switching ``fastelf.wheel._inflate_whole`` / ``_zstream`` in process.
3. ``--jobs`` scaling: ``fastelf.batch.audit_many(corpus, jobs=N)`` (what
   ``fastelf audit --jobs N`` runs) for N = 1 .. CPUs: wall time (median
   and best), CPU time, efficiency T1 / (N * TN), and how many CPUs other
   processes kept busy meanwhile (from /proc/stat), since on a shared
   machine that decides whether a second worker can run at all.
4. With ``--cli``, the command lines end to end, as subprocesses:
   ``python -m auditwheel show W`` per wheel against
   ``python -m fastelf audit --json W`` per wheel and against one
   ``python -m fastelf audit --json --jobs N <all wheels>``.

It also checks that both tools give the same overall tag for each wheel and
prints the disagreements, without failing.  musl wheels whose tags differ are
rechecked (untimed) with auditwheel told the host runs musl 1.1, because on
a host without musl auditwheel evaluates only the newest musllinux policy.
Output: a Markdown report on stdout; ``--json FILE`` writes every number.

    python benchmarks/corpus.py                                  # fetch the corpus once
    python benchmarks/compare_auditwheel.py --cli --json bench.json   # ~11 min on 2 CPUs
    python benchmarks/compare_auditwheel.py --jobs-only --cli         # scaling only, ~30 s
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402

import fastelf  # noqa: E402
import fastelf.wheel as fw  # noqa: E402
from fastelf.audit import audit_wheel, platform_tags_of  # noqa: E402
from fastelf.batch import audit_many  # noqa: E402

try:
    import auditwheel  # noqa: E402
    from auditwheel import lddtree as _aw_lddtree  # noqa: E402
    from auditwheel import wheel_abi as _aw_wheel_abi  # noqa: E402
    from auditwheel.error import NonPlatformWheelError, WheelToolsError  # noqa: E402
    from auditwheel.wheel_abi import analyze_wheel_abi  # noqa: E402
    from auditwheel.wheeltools import get_wheel_architecture, get_wheel_libc  # noqa: E402
except ImportError:  # pragma: no cover
    auditwheel = None


# ------------------------------------------------------------- the two tools

def reset_auditwheel_caches():
    """Forget what auditwheel memoised in earlier calls, as a fresh process would.

    ``get_wheel_elfdata`` is an ``lru_cache`` keyed by the wheel path: without
    this a repeated analysis of the same wheel returns the cached ELF data
    and costs almost nothing, which would time the cache, not the audit.
    The ld.so.conf parsing caches are cleared too (cheap either way).
    """
    _aw_wheel_abi.get_wheel_elfdata.cache_clear()
    _aw_lddtree.load_ld_paths.cache_clear()
    _aw_lddtree.parse_ld_so_conf.cache_clear()


def run_auditwheel(path: Path):
    """What ``auditwheel show`` does in process; returns (overall tag, WheelAbIInfo)."""
    reset_auditwheel_caches()
    fn = path.name
    try:
        arch = get_wheel_architecture(fn)
    except (WheelToolsError, NonPlatformWheelError):
        arch = None
    try:
        libc = get_wheel_libc(fn)
    except WheelToolsError:
        libc = None
    info = analyze_wheel_abi(libc, arch, path, frozenset(), disable_isa_ext_check=False,
                             allow_graft=False)
    return info.overall_policy.name, info


def run_fastelf(path: Path):
    r = audit_wheel(path)
    return r.best_tag, r


# ------------------------------------------------------------------ backends

_ORIGINAL_BACKEND = (fw._inflate_whole, fw._zstream)


def _isal():
    try:
        from isal import isal_zlib
        return isal_zlib
    except ImportError:
        return None


BACKENDS = {
    # name -> (whole-buffer inflater, streaming module) or None when unavailable
    "default": lambda: _ORIGINAL_BACKEND,
    "isal": lambda: (None, _isal()) if _isal() is not None else None,
    "zlib": lambda: (None, zlib),
}


def backend_label(name):
    whole, stream = BACKENDS[name]()
    return "+".join(["libdeflate"] * (whole is not None)
                    + ["isal" if stream is not zlib else "zlib"])


@contextlib.contextmanager
def inflate_backend(name):
    """Make fastelf (in this process) use the named inflate backend."""
    setting = BACKENDS[name]()
    if setting is None:
        raise LookupError(f"inflate backend {name!r} is not installed")
    saved = (fw._inflate_whole, fw._zstream)
    fw._inflate_whole, fw._zstream = setting
    try:
        yield
    finally:
        fw._inflate_whole, fw._zstream = saved


@contextlib.contextmanager
def one_cpu(enabled=True):
    """Pin this process to one CPU (the one it is on), then restore the mask."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    saved = os.sched_getaffinity(0)
    cpu = min(saved)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, saved)


# ------------------------------------------------------------------- timing

def timed(fn, repeat):
    """Run fn() repeat times; return (list of seconds, last result or exception)."""
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as e:          # auditwheel may crash on a wheel: record it
            result = e
        times.append(time.perf_counter() - t0)
        if isinstance(result, Exception):
            break
    return times, result


def warm_page_cache(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def short_name(path: Path):
    parts = path.name[:-4].split("-")
    plats = platform_tags_of(path.name)
    return f"{parts[0]} {parts[1]} ({plats[0] if plats else '?'})"


def human_size(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def fmt_s(s):
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


# -------------------------------------------------------------------- parts

def compare_in_process(paths, repeat, fe_repeat, backends, log):
    """Per wheel: fastelf with each inflate backend, then auditwheel, back to back.

    Timing every variant of a wheel in the same stretch keeps them comparable
    on a machine whose load changes over the run.  The first backend
    (``default``: what is installed) gives the ``fastelf`` column.
    """
    rows = []
    for p in paths:
        per_backend = {}
        fe = None
        for name in backends:
            with inflate_backend(name):
                times, res = timed(lambda: run_fastelf(p), fe_repeat)
            per_backend[name] = {"times": times, "median": None if isinstance(res, Exception)
                                 else statistics.median(times)}
            if fe is None:
                fe_times, fe = times, res
        log(f"  fastelf     {fmt_s(statistics.median(fe_times)):>10}  {p.name}  ("
            + ", ".join(f"{k} {fmt_s(v['median'])}" for k, v in per_backend.items()) + ")")
        aw_times, aw = timed(lambda: run_auditwheel(p), repeat)
        log(f"  auditwheel  {fmt_s(statistics.median(aw_times)):>10}  {p.name}")
        row = {"wheel": p.name, "name": short_name(p), "size": p.stat().st_size,
               "fastelf_times": fe_times, "auditwheel_times": aw_times,
               "fastelf_median": statistics.median(fe_times),
               "auditwheel_median": None, "ratio": None, "backends": per_backend,
               "fastelf_error": None, "auditwheel_error": None}
        if isinstance(fe, Exception):
            row["fastelf_error"] = f"{type(fe).__name__}: {fe}"
            row["fastelf_median"] = None
        else:
            tag, r = fe
            row.update(fastelf_tag=tag, fastelf_tags=r.tags, elfs=len(r.elfs) + len(r.ignored))
        if isinstance(aw, Exception):
            row["auditwheel_error"] = f"{type(aw).__name__}: {aw}"
        else:
            tag, info = aw
            row["auditwheel_tag"] = tag
            row["auditwheel_median"] = statistics.median(aw_times)
            pols = info.policies
            row["auditwheel_policies"] = [pp.name for pp in pols]
            row["auditwheel_external_libs"] = {
                k: (str(v) if v else None)
                for k, v in sorted(info.external_refs[pols.highest.name].libs.items())}
        if row["fastelf_median"] and row["auditwheel_median"]:
            row["ratio"] = row["auditwheel_median"] / row["fastelf_median"]
        row["agreement"] = agreement(row)
        rows.append(row)
    return rows


def recheck_musl(paths, rows, log):
    """Rerun auditwheel (untimed) on musl wheels whose tag differs, as on a musl 1.1 host.

    On a host without musl, auditwheel evaluates only the newest musllinux
    policy; pretending the host runs musl 1.1 makes it evaluate
    musllinux_1_1, the tag fastelf picks, so the two verdicts can be compared.
    """
    from unittest import mock

    from auditwheel.libc import Libc, LibcVersion

    original = Libc.get_current_version

    def as_musl_1_1(self):
        return LibcVersion(1, 1) if self == Libc.MUSL else original(self)

    by_name = {p.name: p for p in paths}
    for row in rows:
        if row["agreement"] == "same" or not row.get("fastelf_tag", "").startswith("musllinux_1_1"):
            continue
        with mock.patch.object(Libc, "get_current_version", as_musl_1_1):
            try:
                tag, _ = run_auditwheel(by_name[row["wheel"]])
            except Exception as e:
                tag = f"error: {type(e).__name__}: {e}"
        row["auditwheel_tag_as_musl_1_1_host"] = tag
        row["agreement"] += (f"; auditwheel as on a musl 1.1 host: {tag}"
                             + (" (same as fastelf)" if tag == row["fastelf_tag"] else ""))
        log(f"  {row['wheel']}: auditwheel as on a musl 1.1 host says {tag}")


def agreement(row):
    """'same', or why the overall tags differ."""
    if row["auditwheel_error"]:
        return f"auditwheel failed: {row['auditwheel_error']}"
    if row["fastelf_error"]:
        return f"fastelf failed: {row['fastelf_error']}"
    fe, aw = row["fastelf_tag"], row["auditwheel_tag"]
    if fe == aw:
        return "same"
    notes = []
    if aw in row["fastelf_tags"]:
        notes.append(f"fastelf also satisfies {aw} but reports the more compatible {fe}")
    if fe.startswith("musllinux_") and len(row.get("auditwheel_policies", ())) <= 2:
        notes.append("auditwheel evaluates only one musllinux policy, "
                     f"{row['auditwheel_policies'][-1]} (the host's musl version, or the "
                     "newest known when the host has none)")
    if aw.startswith("linux_") and row.get("auditwheel_external_libs"):
        libs = ", ".join(row["auditwheel_external_libs"])
        notes.append(f"auditwheel finds external libraries not in its policy: {libs}")
    return "; ".join(notes) or "differ"


def time_jobs(paths, jobs_list, repeat, log):
    out = []
    for jobs in jobs_list:
        times, cpu, other = [], [], []
        for _ in range(repeat):
            gc.collect()
            r0 = _cpu_seconds()
            with OtherLoad() as load:
                t0 = time.perf_counter()
                results = list(audit_many([str(p) for p in paths], jobs=jobs))
                times.append(time.perf_counter() - t0)
            cpu.append(_cpu_seconds() - r0)
            if load.value is not None:
                other.append(load.value)
            errors = [r.path for r in results if r.error]
            if errors:
                log(f"  jobs {jobs}: errors in {errors}")
        out.append({"jobs": jobs, "times": times, "median": statistics.median(times),
                    "best": min(times),
                    "cpu_seconds": statistics.median(cpu),
                    "other_load": statistics.median(other) if other else None})
        log(f"  jobs {jobs}: {fmt_s(statistics.median(times))} wall, "
            f"{fmt_s(statistics.median(cpu))} CPU, other processes' load "
            f"{out[-1]['other_load'] or 0:.2f} CPUs")
    t1 = out[0]["median"] if out and out[0]["jobs"] == 1 else None
    b1 = out[0]["best"] if t1 else None
    for row in out:
        if t1:
            row["speedup"] = t1 / row["median"]
            row["efficiency"] = t1 / (row["jobs"] * row["median"])
            row["best_speedup"] = b1 / row["best"]
            row["best_efficiency"] = b1 / (row["jobs"] * row["best"])
    return out


def _machine_busy_seconds():
    """CPU-seconds all processes on the machine have used since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many CPUs other processes kept busy while a block ran (machine - ours)."""

    def __enter__(self):
        self.m0, self.c0, self.t0 = _machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        m1 = _machine_busy_seconds()
        self.value = None
        if self.m0 is not None and m1 is not None and wall > 0.5:   # /proc/stat ticks: 10 ms
            others = (m1 - self.m0) - (_cpu_seconds() - self.c0)
            self.value = max(0.0, others / wall)


def _cpu_seconds():
    """User + system CPU time of this process and its reaped children."""
    import resource
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_cli(paths, jobs_list, repeat, log, batch_only=False):
    py = sys.executable
    env = dict(os.environ)

    def run(cmd):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        return time.perf_counter() - t0, proc.returncode, proc.stderr.decode(errors="replace")

    def median_of(cmd):
        got = [run(cmd) for _ in range(repeat)]
        return statistics.median(t for t, _, _ in got), got[-1][1], got[-1][2]

    per = []
    for p in ([] if batch_only else paths):
        aw_t, aw_rc, aw_err = median_of([py, "-m", "auditwheel", "show", str(p)])
        fe_t, fe_rc, _ = median_of([py, "-m", "fastelf", "audit", "--json", "--no-progress",
                                    str(p)])
        per.append({"wheel": p.name, "auditwheel_s": aw_t, "auditwheel_rc": aw_rc,
                    "auditwheel_stderr_tail": aw_err.strip().splitlines()[-1:] if aw_rc else [],
                    "fastelf_s": fe_t, "fastelf_rc": fe_rc})
        log(f"  cli  auditwheel {fmt_s(aw_t):>10}  fastelf {fmt_s(fe_t):>10}  {p.name}")
    batch = []
    for jobs in jobs_list:
        t, rc, _ = median_of([py, "-m", "fastelf", "audit", "--json", "--no-progress",
                              "--jobs", str(jobs)] + [str(p) for p in paths])
        batch.append({"jobs": jobs, "seconds": t, "rc": rc})
        log(f"  cli  fastelf audit --jobs {jobs} (all wheels): {fmt_s(t)}")
    startup = {
        "auditwheel": median_of([py, "-m", "auditwheel", "--version"])[0],
        "fastelf": median_of([py, "-m", "fastelf", "--version"])[0],
    }
    return {"per_wheel": per, "batch": batch, "startup": startup}


# ------------------------------------------------------------------- report

def markdown(res):
    out = []
    w = out.append
    env = res["environment"]
    w(f"Machine: {env['cpu']} ({env['cpus']} CPUs), {env['platform']}, Python {env['python']}; "
      f"fastelf {env['fastelf']} (inflate backend: {env['inflate_backend']}), "
      f"auditwheel {env['auditwheel']}; fastelf source at {env['fastelf_git']}. "
      f"Load average (1/5/15 min) at start {env['loadavg_start']}, at end "
      f"{env.get('loadavg_end')}.")
    w(f"Corpus: {res['corpus_wheels']} wheels, {res['corpus_bytes'] / 1e6:.1f} MB.")
    w("")
    t = res.get("totals")
    if res.get("wheels"):
        _md_compare(res, w)
    if res.get("jobs"):
        _md_jobs(res, w, t)
    if res.get("cli"):
        _md_cli(res, w)
    if res.get("wheels"):
        _md_agreement(res, w)
    return "\n".join(out).rstrip() + "\n"


def _md_compare(res, w):
    env = res["environment"]
    w(f"In process, one CPU: medians of {res['repeat']['auditwheel']} runs (auditwheel) and "
      f"{res['repeat']['fastelf']} runs (fastelf) per wheel, pinned to one CPU"
      + (f"; other processes kept {res['other_load_in_process']:.2f} of the "
         f"{env['cpus']} CPUs busy meanwhile." if res.get("other_load_in_process") is not None
         else "."))
    w("")
    w("| wheel | size | ELFs | auditwheel show | fastelf audit | speedup | tag (fastelf) | "
      "tags agree |")
    w("|---|---:|---:|---:|---:|---:|---|---|")
    for r in res["wheels"]:
        ratio = f"{r['ratio']:.0f}x" if r["ratio"] else "-"
        agree = {"same": "yes", "musl-host": "yes (a)"}.get(
            _kind(r), f"no: auditwheel says {r.get('auditwheel_tag') or 'error'}")
        w(f"| {r['name']} | {human_size(r['size'])} | {r.get('elfs', '-')} | "
          f"{fmt_s(r['auditwheel_median'])} | {fmt_s(r['fastelf_median'])} | {ratio} | "
          f"{r.get('fastelf_tag', '-')} | {agree} |")
    t = res["totals"]
    w(f"| **total ({t['wheels']} wheels)** | {human_size(res['corpus_bytes'])} | | "
      f"**{fmt_s(t['auditwheel'])}** | **{fmt_s(t['fastelf'])}** | **{t['ratio']:.0f}x** | | |")
    w("")
    w("Inflate backends (fastelf, one CPU, sum of per-wheel medians, timed in the same pass; "
      "`zlib` is the pure-zlib fallback with no optional inflater):")
    w("")
    w("| backend | fastelf total | auditwheel / fastelf |")
    w("|---|---:|---:|")
    for name, b in res["backends"].items():
        w(f"| {b['label']}{' (default)' if name == 'default' else ''} | {fmt_s(b['total'])} | "
          f"{b['ratio']:.0f}x |")
    w("")


def _md_jobs(res, w, t):
    w("`--jobs` scaling (fastelf.batch.audit_many over the whole corpus, wall clock, "
      f"{res['repeat']['jobs']} runs each; CPU time counts this process and its workers):")
    w("")
    w("| jobs | wall (median) | speedup | efficiency | wall (best) | speedup (best) | "
      "efficiency (best) | CPU time | auditwheel (1 CPU) / fastelf | other processes' load |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for j in res["jobs"]:
        other = "-" if j.get("other_load") is None else f"{j['other_load']:.2f} CPUs"
        vs = f"{t['auditwheel'] / j['median']:.0f}x" if t else "-"
        w(f"| {j['jobs']} | {fmt_s(j['median'])} | {j.get('speedup', 0):.2f}x | "
          f"{j.get('efficiency', 0) * 100:.0f}% | {fmt_s(j['best'])} | "
          f"{j.get('best_speedup', 0):.2f}x | {j.get('best_efficiency', 0) * 100:.0f}% | "
          f"{fmt_s(j['cpu_seconds'])} | {vs} | {other} |")
    if res.get("largest_wheel_s"):
        w("")
        w(f"The slowest single wheel takes {fmt_s(res['largest_wheel_s'])} on one CPU, a "
          "floor for the wall time at any --jobs.")
    w("")


def _md_cli(res, w):
    c = res["cli"]
    w(f"Command lines end to end (subprocesses, median of {res['repeat']['cli']}; "
      f"interpreter start + imports: auditwheel {fmt_s(c['startup']['auditwheel'])}, "
      f"fastelf {fmt_s(c['startup']['fastelf'])}):")
    w("")
    w("| command | total | auditwheel / fastelf |")
    w("|---|---:|---:|")
    aw = sum(x["auditwheel_s"] for x in c["per_wheel"]) if c["per_wheel"] else None
    if c["per_wheel"]:
        fe = sum(x["fastelf_s"] for x in c["per_wheel"])
        w(f"| `auditwheel show W`, once per wheel | {fmt_s(aw)} | 1x |")
        w(f"| `fastelf audit --json W`, once per wheel | {fmt_s(fe)} | {aw / fe:.0f}x |")
    for b in c["batch"]:
        vs = f"{aw / b['seconds']:.0f}x" if aw else "-"
        w(f"| `fastelf audit --json --jobs {b['jobs']} <all wheels>` | {fmt_s(b['seconds'])}"
          f" | {vs} |")
    w("")


def _md_agreement(res, w):
    kinds = [_kind(r) for r in res["wheels"]]
    n = len(kinds)
    n_other = n - kinds.count("same") - kinds.count("musl-host")
    w(f"Tag agreement: {kinds.count('same')} of {n} wheels get the same overall tag from both "
      f"tools; {kinds.count('musl-host')} more (a) differ only because auditwheel, on a host "
      "without musl, evaluates just the newest musllinux policy: it says musllinux_1_2 where "
      "fastelf says musllinux_1_1, fastelf also satisfies musllinux_1_2, and auditwheel run as "
      f"on a musl 1.1 host (untimed recheck) gives fastelf's tag; {n_other} disagree"
      + (":" if n_other else "."))
    for r, k in zip(res["wheels"], kinds):
        if k not in ("same", "musl-host"):
            w(f"- {r['wheel']}: fastelf {r.get('fastelf_tag')}, auditwheel "
              f"{r.get('auditwheel_tag', 'error')} - {r['agreement']}")
    if res.get("auditwheel_warnings"):
        w("")
        w("auditwheel warnings: " + "; ".join(
            f"{msg} (x{n})" for msg, n in res["auditwheel_warnings"].items()))


def _kind(row):
    """same / musl-host (differs only by auditwheel's host musl policy) / differ."""
    if row["agreement"] == "same":
        return "same"
    if (row.get("auditwheel_tag") in row.get("fastelf_tags", ())
            and row.get("auditwheel_tag_as_musl_1_1_host") == row.get("fastelf_tag")):
        return "musl-host"
    return "differ"


class _CountWarnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.counts = {}

    def emit(self, record):
        msg = record.getMessage()
        self.counts[msg] = self.counts.get(msg, 0) + 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", nargs="*", type=Path,
                    help="wheels to use instead of the pinned corpus")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="keep only corpus wheels whose file name contains TEXT (repeatable)")
    ap.add_argument("-r", "--repeat", type=int, default=3,
                    help="runs of auditwheel per wheel (default 3)")
    ap.add_argument("--fastelf-repeat", type=int, default=5,
                    help="runs of fastelf per wheel and backend (default 5)")
    ap.add_argument("--jobs", type=int, nargs="*", default=None,
                    help="--jobs values to time (default 1 .. CPUs)")
    ap.add_argument("--jobs-repeat", type=int, default=7,
                    help="runs per --jobs value (default 7; median and best are shown)")
    ap.add_argument("--backends", default="isal,zlib",
                    help="slower inflate backends to time fastelf with as well, besides "
                         "the installed default (default: isal,zlib; '' for none)")
    ap.add_argument("--jobs-only", action="store_true",
                    help="only the --jobs scaling (and, with --cli, the batch command lines); "
                         "no auditwheel runs")
    ap.add_argument("--cli", action="store_true",
                    help="also time the command lines end to end (subprocesses)")
    ap.add_argument("--cli-repeat", type=int, default=1, help="runs per command (default 1)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the in-process comparison to one CPU")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write all results as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if auditwheel is None:
        ap.error("auditwheel is not installed")
    if args.wheels:
        paths = args.wheels
    else:
        missing = corpus.missing()
        if missing:
            ap.error(f"{len(missing)} corpus wheels are not downloaded; run "
                     "`python benchmarks/corpus.py` first")
        paths = corpus.available()
    if args.only:
        paths = [p for p in paths if any(s in p.name for s in args.only)]
    if not paths:
        ap.error("no wheels to benchmark")
    backends = ["default"] + [b.strip() for b in args.backends.split(",")
                              if b.strip() and b.strip() != "default"]
    for b in backends:
        if b not in BACKENDS:
            ap.error(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        if BACKENDS[b]() is None:
            log(f"inflate backend {b} is not installed: skipped")
    backends = [b for b in backends if BACKENDS[b]() is not None]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs_list = args.jobs if args.jobs is not None else list(range(1, (cpus or 1) + 1))

    warnings = _CountWarnings()
    logging.getLogger("auditwheel").addHandler(warnings)
    logging.getLogger("auditwheel").propagate = False

    warm_page_cache(paths)
    smallest = min(paths, key=lambda p: p.stat().st_size)
    run_fastelf(smallest)                               # imports, policy data
    with contextlib.suppress(Exception):
        run_auditwheel(smallest)
    warnings.counts.clear()

    res = {"environment": {
        "cpu": _cpu_model(), "cpus": cpus, "platform": platform.platform(),
        "python": platform.python_version(), "fastelf": fastelf.__version__,
        "auditwheel": _version("auditwheel"), "inflate_backend": fw.INFLATE_BACKEND,
        "fastelf_git": _git_head(), "loadavg_start": _loadavg()},
        "repeat": {"auditwheel": args.repeat, "fastelf": args.fastelf_repeat,
                   "jobs": args.jobs_repeat, "cli": args.cli_repeat},
        "corpus_bytes": sum(p.stat().st_size for p in paths), "corpus_wheels": len(paths)}

    if args.jobs_only:
        log("--jobs scaling:")
        res["jobs"] = time_jobs(paths, jobs_list or [1], args.jobs_repeat, log)
        if args.cli:
            res["cli"] = time_cli(paths, jobs_list or [1], args.cli_repeat, log, batch_only=True)
        return _finish(res, args, log)

    log(f"in process, one CPU: {len(paths)} wheels")
    with one_cpu(not args.no_pin) as cpu, OtherLoad() as load:
        res["pinned_cpu"] = cpu
        rows = compare_in_process(paths, args.repeat, args.fastelf_repeat, backends, log)
    res["other_load_in_process"] = load.value
    res["auditwheel_warnings"] = dict(warnings.counts)
    log("musl wheels with another tag, rechecked (untimed):")
    recheck_musl(paths, rows, log)
    res["wheels"] = rows
    both = [r for r in rows if r["ratio"]]
    aw_total = sum(r["auditwheel_median"] for r in both)
    fe_total = sum(r["fastelf_median"] for r in both)
    res["totals"] = {"wheels": len(both), "auditwheel": aw_total, "fastelf": fe_total,
                     "ratio": aw_total / fe_total if fe_total else None,
                     "note": "sums over the wheels both tools audited"}
    res["backends"] = {}
    for name in backends:
        total = sum(r["backends"][name]["median"] for r in both
                    if r["backends"][name]["median"])
        res["backends"][name] = {
            "label": backend_label(name), "total": total,
            "ratio": aw_total / total if total else None}

    res["largest_wheel_s"] = max((r["fastelf_median"] or 0) for r in rows)
    if jobs_list:
        log("--jobs scaling:")
        res["jobs"] = time_jobs(paths, jobs_list, args.jobs_repeat, log)
    if args.cli:
        log("command lines:")
        res["cli"] = time_cli(paths, jobs_list or [1], args.cli_repeat, log)

    return _finish(res, args, log)


def _finish(res, args, log):
    res["environment"]["loadavg_end"] = _loadavg()
    report = markdown(res)
    print(report, end="")
    if args.json:
        res["markdown"] = report
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_head():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "src", "cext"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _cpu_model():
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
