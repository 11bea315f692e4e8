"""Command line: ``fastelf show``, ``fastelf audit`` (and ``python -m fastelf``).

Exit codes: 0 all good (wheels that are not Linux wheels are skipped, which
is not a failure); 1 a wheel's file name claims a platform tag that the
wheel does not satisfy (or, with --verify-record, its RECORD does not match
its contents); 2 usage error; 3 a wheel could not be read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import __version__
from .audit import AuditResult, Status, audit_path
from .errors import (
    EXIT_MISLABELED,
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    FastElfError,
    exit_code_of,
)
from .report import (
    Progress,
    batch_line,
    lddtree_text,
    printable,
    repair_text,
    show_text,
    summary_line,
)

if TYPE_CHECKING:
    from .cache import CacheStats
    from .repair import RepairOptions, RepairReach


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (one object per wheel)")
    p.add_argument("--disable-isa-ext-check", action="store_true",
                   help="do not check the x86-64 ISA level (v2/v3/v4) of ELF files")


def _add_record_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify-record", action="store_true",
                   help="also hash every member and check it against RECORD; a mismatch, "
                        "an unlisted member or a missing one makes the wheel not ok (exit 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastelf", description="Audit and repair Linux Python wheels (manylinux/musllinux).")
    parser.add_argument("-V", "--version", action="version", version=f"fastelf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("show", help="audit one wheel and explain the verdict",
                       description="Audit one wheel: the best platform tag it satisfies, and "
                                   "what stands in the way of more compatible tags.")
    p.add_argument("wheel", metavar="WHEEL_FILE_OR_URL",
                   help="a path, an https:// URL or any fsspec URL (s3://, gs://, ...)")
    _add_audit_options(p)
    _add_record_option(p)
    p.add_argument("--ldpaths", metavar="PATHS",
                   help="for the repair advice: colon-separated directories replacing "
                        "ld.so.conf and the default ones (as in repair)")
    p.add_argument("--root", default="/", help="for the repair advice: a sysroot to search")

    p = sub.add_parser("audit", help="audit many wheels (files or directories), in parallel",
                       description="Audit wheels and directories of wheels (recursively).")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="wheels, directories of wheels, https:// or fsspec URLs of wheels")
    p.add_argument("--from-file", metavar="LIST",
                   help="also audit the wheels listed in LIST, one path or URL a line, read as the "
                        "batch goes ('-' reads standard input); blank lines are skipped")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="worker processes (0 = one per CPU; default 1)")
    p.add_argument("--unordered", action="store_true",
                   help="print each wheel's result as soon as it is done, not in input order")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up on a wheel after this long (an error result for it; the "
                        "batch goes on); audits then always run in worker processes")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="audit on a Dask cluster: tcp://host:8786, or local:N to start a "
                        "LocalCluster of N workers on 127.0.0.1 (needs fastelf[dask]); paths "
                        "must be visible to the workers, URLs work anywhere")
    p.add_argument("--cache", nargs="?", const="", default=None, metavar="PATH",
                   help="reuse ELF facts from earlier runs: a wheel seen before (same "
                        "SHA-256) is not parsed again, an ELF member seen in another wheel "
                        "(same compressed bytes) is parsed once; verdicts are always "
                        "recomputed. PATH (write --cache=PATH) defaults to "
                        "$XDG_CACHE_HOME/fastelf/cache.sqlite3")
    p.add_argument("--cache-verify", action="store_true",
                   help="with --cache: hash every wheel again instead of trusting an unchanged "
                        "stat (device, inode, size, mtime, ctime) for its SHA-256")
    p.add_argument("--compact", action="store_true",
                   help="with --json: the verdict and its reasons only, without per-ELF and "
                        "per-policy detail (to_dict(detail=False))")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="text mode: print only wheels that are mislabeled or unreadable")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    _add_audit_options(p)
    _add_record_option(p)

    p = sub.add_parser("check", help="check wheels against everything an upload must pass",
                       description="Check wheels before upload: platform tags, abi3 (stable "
                                   "ABI), executable stacks, PyPI's zip/WHEEL/RECORD/file-name "
                                   "rules, sonames, RPATHs and extension file names. One line "
                                   "per problem; exit 1 if there is any (3 if a wheel is "
                                   "unreadable).")
    p.add_argument("wheels", nargs="+", metavar="WHEEL_FILE")
    p.add_argument("--json", action="store_true", help="print JSON (one object per wheel)")

    p = sub.add_parser("repair", help="graft external libraries into the wheel and retag it",
                       description="Copy each wheel's external shared libraries into "
                                   "<name>.libs/, patch its ELF files to use them (in-process, "
                                   "no patchelf) and retag it. The input is never modified.")
    p.add_argument("wheels", nargs="+", metavar="WHEEL_FILE")
    p.add_argument("-w", "--wheel-dir", default="wheelhouse",
                   help="directory to write repaired wheels to (default: wheelhouse)")
    p.add_argument("--plat", default="auto", metavar="PLATFORM",
                   help="platform tag to reach, e.g. manylinux_2_17_x86_64 or manylinux2014 "
                        "(default: auto, the most compatible one possible)")
    p.add_argument("--only-plat", action="store_true",
                   help="tag the result with --plat only, not also with better tags it meets")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="glob of a soname or library path to leave external (not grafted); "
                        "repeatable")
    p.add_argument("--ldpaths", metavar="PATHS",
                   help="colon-separated directories that replace the system search "
                        "(ld.so.conf and default directories); RPATH, LD_LIBRARY_PATH and "
                        "RUNPATH still come first")
    p.add_argument("--root", default="/", help="resolve libraries inside this sysroot")
    p.add_argument("--no-update-tags", action="store_true",
                   help="keep the file name's platform tags")
    p.add_argument("--strip", action="store_true",
                   help="strip symbol tables and debug sections (like strip -s) from every "
                        "ELF file (in process)")
    p.add_argument("-z", "--zip-compression-level", type=int, default=6, choices=range(-1, 10),
                   metavar="LEVEL", help="deflate level for rewritten members (-1..9, default 6)")
    _add_audit_options(p)

    p = sub.add_parser("lddtree", help="show how ld.so would resolve an ELF file's libraries",
                       description="Resolve the DT_NEEDED tree of an ELF file statically, with "
                                   "ld.so's search order (RPATH, LD_LIBRARY_PATH, RUNPATH, "
                                   "ld.so.conf or the musl path file, default directories).")
    p.add_argument("file", metavar="ELF_FILE")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.add_argument("--root", default="/", help="resolve inside this sysroot")
    p.add_argument("--ldpaths", metavar="PATHS",
                   help="colon-separated directories replacing the system search")

    p = sub.add_parser("retag", help="rewrite a wheel's platform tags (file name and WHEEL)",
                       description="Write a copy of each wheel with new platform tags. Without "
                                   "--plat the best tag the wheel satisfies is used. A requested "
                                   "tag the wheel does not satisfy is refused unless --force.")
    p.add_argument("wheels", nargs="+", metavar="WHEEL_FILE")
    p.add_argument("--plat", action="append", default=[], metavar="TAG",
                   help="platform tag to set (repeatable; legacy aliases such as manylinux2014 "
                        "are expanded to both names)")
    p.add_argument("--add", action="store_true",
                   help="keep the wheel's current platform tags that it satisfies")
    p.add_argument("--force", action="store_true", help="set tags even if not satisfied")
    p.add_argument("-w", "--wheel-dir", default="wheelhouse",
                   help="directory to write to (default: wheelhouse)")
    p.add_argument("-z", "--zip-compression-level", type=int, default=6, choices=range(-1, 10),
                   metavar="LEVEL", help="deflate level for rewritten members (-1..9, default 6)")
    _add_audit_options(p)

    p = sub.add_parser("report", help="a census page (HTML or Markdown) of audit --json output",
                       description="Count the JSON lines of `fastelf audit --json` (files, or - "
                                   "for stdin) into one self-contained HTML page with charts "
                                   "and tables, plus JSON lines files of the rows behind the "
                                   "counts beside it; or Markdown with --format md.")
    p.add_argument("inputs", nargs="+", metavar="RESULTS.jsonl")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write (required for html; md goes to stdout without it)")
    p.add_argument("--format", choices=("html", "md"), default="html")
    p.add_argument("--title", default="fastelf census", help="the page's title")
    p.add_argument("--no-rows", action="store_true",
                   help="html: do not write the rows files beside the page")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="processes counting chunks of the input files (0 = one per CPU; "
                        "default 1; stdin is read by one)")
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The audit keyword arguments the shared audit options ask for."""
    opts: dict[str, Any] = {"disable_isa_ext_check": args.disable_isa_ext_check}
    if getattr(args, "verify_record", False):
        opts["verify_record"] = True
    return opts


_EXIT_OF_STATUS = {Status.OK: EXIT_OK, Status.SKIPPED: EXIT_OK,
                   Status.MISLABELED: EXIT_MISLABELED, Status.ERROR: EXIT_UNREADABLE}


def _error(message: str | Exception) -> None:
    """One line on stderr; names from wheels and file systems are escaped (see printable)."""
    print(f"fastelf: error: {printable(str(message))}", file=sys.stderr)


def _one_line_warnings(previous: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints fastelf's own warnings (classes defined in
    its modules, such as sbom.PackageDatabaseWarning) as one line on stderr, like its
    errors, and hands any other to ``previous``."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if category.__module__.startswith(f"{__package__}."):
            print(f"fastelf: warning: {printable(str(message))}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)
    return show


def _fail(error: FastElfError) -> int:
    """Print ``error`` (one line) and return its exit code (errors.EXIT_CODES)."""
    _error(error)
    return exit_code_of(error)


def _not_a_file(path: str) -> str:
    return "not a regular file" if os.path.exists(path) else "no such file"


def _exit_code(results: Iterable[AuditResult]) -> int:
    """The worst status decides: unreadable (3) over mislabeled (1) over ok/skipped (0)."""
    return max((_EXIT_OF_STATUS[r.status] for r in results), default=EXIT_OK)


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    """Audit one wheel (a path or URL) and explain the verdict, with repair's reach."""
    from .remote import audit_url, is_url

    if is_url(args.wheel):
        r = audit_url(args.wheel, **_options(args))
    elif not os.path.isfile(args.wheel):
        _error(f"cannot access {args.wheel}: {_not_a_file(args.wheel)}")
        return EXIT_USAGE
    else:
        r = audit_path(args.wheel, **_options(args))
    reach = _repair_reach(args, r)
    if args.json:
        d = r.to_dict()
        if reach is not None:
            d["repair"] = {"tag": reach.tag, "grafted": reach.grafted, "problem": reach.problem}
        out.write(json.dumps(d, indent=2) + "\n")
    else:
        out.write(show_text(r, reach))
        if r.bytes_fetched is not None:
            out.write(f"fetched {r.bytes_fetched} bytes\n")
    return _exit_code([r])


def _repair_reach(args: argparse.Namespace, r: AuditResult) -> RepairReach | None:
    """Where ``repair`` would land, when the wheel needs external libraries: the
    libraries are searched on this system as repair searches them, so the advice
    counts their own symbol versions.  None when there is nothing to graft."""
    from .remote import is_url
    if r.error or r.pure or not r.external_libraries or is_url(args.wheel):
        return None
    from .repair import repair_reach
    return repair_reach(args.wheel, root=args.root, ldpaths=args.ldpaths,
                        ld_library_path=os.environ.get("LD_LIBRARY_PATH"),
                        disable_isa_ext_check=args.disable_isa_ext_check)


def _listed_paths(list_file: str) -> Iterator[str]:
    """The entries of a --from-file list, lazily (a list may hold millions)."""
    stream = sys.stdin if list_file == "-" else open(list_file, encoding="utf-8",
                                                        errors="surrogateescape")
    try:
        for line in stream:
            entry = line.strip()
            if entry:
                yield entry
    finally:
        if stream is not sys.stdin:
            stream.close()


def _audit_sources(args: argparse.Namespace) -> Iterator[str]:
    """Everything to audit: the PATH arguments, then the --from-file entries."""
    yield from args.paths
    if args.from_file:
        yield from _listed_paths(args.from_file)


def _check_audit_args(args: argparse.Namespace) -> str | None:
    """A usage error message, or None."""
    if args.cache and (args.cache.endswith(".whl") or os.path.isdir(args.cache)):
        return (f"--cache took {args.cache} as the cache file; write --cache=PATH, or put "
                "--cache after the wheels")
    if args.cache_verify and args.cache is None:
        return "--cache-verify needs --cache"
    if not args.paths and not args.from_file:
        return "give at least one PATH or --from-file LIST"
    from .batch import _is_url  # remote.is_url; remote (http, ssl) is imported for URLs only
    missing = [p for p in args.paths if not _is_url(p) and not os.path.exists(p)]
    if missing:
        return f"no such file or directory: {', '.join(missing)}"
    if args.from_file and args.from_file != "-" and not os.path.isfile(args.from_file):
        return f"cannot read the list {args.from_file}: no such file"
    if args.jobs < 0:
        return "--jobs must be 0 or more"
    if args.timeout is not None and not args.timeout > 0:
        return "--timeout must be a positive number of seconds"
    if args.dask is not None:
        if args.timeout is not None:
            return "--timeout is not supported with --dask (Dask runs audits in threads)"
        if not re.fullmatch(r"local:[1-9][0-9]*|[a-z]+://.+", args.dask):
            return "--dask takes tcp://host:port or local:N"
    return None


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    """Audit a batch of wheels; one line (or JSON object) each, the summary, the exit code."""
    from .batch import find_wheels

    problem = _check_audit_args(args)
    if problem:
        _error(problem)
        return EXIT_USAGE
    progress = None
    if not args.from_file:              # a list is read once, as the batch goes: no total
        total = sum(1 for _ in find_wheels(args.paths))
        if total == 0:
            print(printable(f"fastelf: no wheels (*.whl) found in {', '.join(args.paths)}"),
                  file=sys.stderr)
        if not args.no_progress and sys.stderr.isatty() and total > 1:
            progress = Progress(total, sys.stderr)
    options = _options(args)
    cache_stats = None
    if args.cache is not None:
        from .cache import CacheStats, check_cache, default_cache_path
        options["cache"] = args.cache or str(default_cache_path())
        if args.cache_verify:
            options["cache_verify"] = True
        problem = check_cache(options["cache"])
        if problem:
            _error(problem)
            return EXIT_USAGE
        cache_stats = CacheStats()
    with contextlib.ExitStack() as stack:
        try:
            results = _engine(args, options, stack)
        except FastElfError as e:
            _error(e)
            return EXIT_USAGE
        return _report_batch(args, results, progress, cache_stats, out)


def _engine(args: argparse.Namespace, options: dict[str, Any],
            stack: contextlib.ExitStack) -> Iterable[AuditResult]:
    """The results of the batch: worker processes here, or a Dask cluster."""
    from .batch import audit_many
    if args.dask is None:
        return audit_many(_audit_sources(args), jobs=args.jobs, ordered=not args.unordered,
                          timeout=args.timeout, **options)
    from .dask import audit_on, connect
    client = stack.enter_context(connect(args.dask))
    return audit_on(client, _audit_sources(args), ordered=not args.unordered, **options)


def _report_batch(args: argparse.Namespace, results: Iterable[AuditResult],
                  progress: Progress | None, cache_stats: CacheStats | None,
                  out: TextIO) -> int:
    """Print each result as it comes (flushed), the summary; the exit code."""
    start = time.perf_counter()
    counts = {"wheels": 0}
    code = EXIT_OK                      # the worst status so far: no result is kept
    for r in results:
        if cache_stats is not None and r.cache_stats is not None:
            cache_stats.add(r.cache_stats)
        counts["wheels"] += 1
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
        code = max(code, _EXIT_OF_STATUS[r.status])
        if progress:
            progress.close()
        if args.json:
            out.write(r.to_json(detail=not args.compact) + "\n")
        elif not args.quiet or r.status in (Status.MISLABELED, Status.ERROR):
            out.write(batch_line(r) + "\n")
        out.flush()                     # a crawl can be followed with tail -f
        if progress:
            progress.step()
    if progress:
        progress.close()
    line = summary_line(counts, time.perf_counter() - start)
    if cache_stats is not None:
        line += (f"; cache: {cache_stats.wheel_hits} wheel hits, {cache_stats.elf_hits} ELF "
                 f"hits, {cache_stats.elfs_parsed} ELFs parsed")
    print(line, file=sys.stderr)
    return code


def cmd_retag(args: argparse.Namespace, out: TextIO) -> int:
    """Audit each wheel, let retag choose its tags, write the copy; the worst exit code."""
    from .retag import choose_tags, retag_wheel

    code = EXIT_OK
    for path in args.wheels:
        r = audit_path(path, **_options(args))
        if r.error:
            _error(r.error)
            code = EXIT_UNREADABLE
            continue
        try:
            plats = choose_tags(r, path, args.plat, add=args.add, force=args.force)
            out.write(printable(retag_wheel(path, args.wheel_dir, plats,
                                            compresslevel=args.zip_compression_level)) + "\n")
        except FastElfError as e:
            code = max(code, _fail(e))
    return code


def cmd_repair(args: argparse.Namespace, out: TextIO) -> int:
    """Repair each wheel into -w; one line per graft and per output, the exit code."""
    from .allocator import return_large_blocks
    from .repair import repair_wheel

    return_large_blocks()          # this process is the command's own (see allocator.py)
    options = _repair_options(args)
    code = EXIT_OK
    for path in args.wheels:
        if not os.path.isfile(path):
            _error(f"cannot access {path}: {_not_a_file(path)}")
            code = EXIT_USAGE
            continue
        try:
            res = repair_wheel(path, args.wheel_dir, options)
        except FastElfError as e:
            code = max(code, _fail(e))
            continue
        if args.json:
            out.write(json.dumps(res.to_dict()) + "\n")
        else:
            out.write(repair_text(res))
    return code


def _repair_options(args: argparse.Namespace) -> RepairOptions:
    """The repair options of the command line; LD_LIBRARY_PATH comes from the
    environment, as ld.so takes it."""
    from .repair import RepairOptions

    return RepairOptions(
        plat=args.plat, only_plat=args.only_plat, exclude=args.exclude, root=args.root,
        ldpaths=args.ldpaths, ld_library_path=os.environ.get("LD_LIBRARY_PATH"),
        update_tags=not args.no_update_tags, disable_isa_ext_check=args.disable_isa_ext_check,
        compresslevel=args.zip_compression_level, strip=args.strip)


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Check each wheel as an upload would be; one line per problem, the exit code."""
    from .check import Kind, check_wheel

    code = EXIT_OK
    for path in args.wheels:
        if not os.path.isfile(path):
            _error(f"cannot access {path}: {_not_a_file(path)}")
            code = max(code, EXIT_USAGE)
            continue
        report = check_wheel(path)
        if args.json:
            out.write(json.dumps(report.to_dict()) + "\n")
        elif report.ok:
            out.write(printable(f"{path}: ok") + "\n")
        for f in () if args.json else report.findings:
            out.write(printable(f"{path}: {f.kind.value}: {f.file}: {f.reason}") + "\n")
        if any(f.kind is Kind.UNREADABLE for f in report.findings):
            code = max(code, EXIT_UNREADABLE)
        elif not report.ok:
            code = max(code, EXIT_MISLABELED)
    return code


def cmd_lddtree(args: argparse.Namespace, out: TextIO) -> int:
    """Resolve an ELF file's tree as ld.so would; exit 1 when a library is missing."""
    from .lddtree import resolve_tree

    try:
        tree = resolve_tree(args.file, root=args.root,
                            ld_library_path=os.environ.get("LD_LIBRARY_PATH"),
                            ldpaths=args.ldpaths.split(":") if args.ldpaths else None)
    except FastElfError as e:       # LddError, or LimitError from a hostile file or sysroot
        return _fail(e)
    if args.json:
        out.write(json.dumps(tree.to_dict(), indent=2) + "\n")
    else:
        out.write(lddtree_text(tree))
    return EXIT_MISLABELED if tree.missing else EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    """Aggregation and rendering live in census*.py; this only wires files and errors."""
    from pathlib import Path

    from .census_html import census_of, write_html_report
    from .census_md import render_markdown
    if args.format == "html" and not args.output:
        _error("report: --format html needs -o FILE (the page and its rows files)")
        return EXIT_USAGE
    jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    try:
        if args.format == "html":
            result = write_html_report(args.inputs, Path(args.output), args.title,
                                       not args.no_rows, jobs)
        else:
            result = census_of(args.inputs, jobs)
            text = render_markdown(result, args.title)
            if args.output:
                Path(args.output).write_text(text, encoding="utf-8")
            else:
                out.write(text)
    except (FastElfError, OSError) as e:
        _error(f"report: {e}")
        return EXIT_UNREADABLE
    if result.rejected:
        print(f"fastelf: report: {result.rejected} input lines are not schema-2 audit results "
              "and were left out (listed in the report)", file=sys.stderr)
    return EXIT_OK


COMMANDS = {"show": cmd_show, "audit": cmd_audit, "repair": cmd_repair, "retag": cmd_retag,
            "lddtree": cmd_lddtree, "check": cmd_check, "report": cmd_report}


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; its exit code (130 on ^C, 0 when the reader closed the pipe)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return COMMANDS[args.command](args, out or sys.stdout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


_EXIT_FLUSH_FAILED = 120       # CPython's status when flushing stdout at exit fails


def run() -> NoReturn:
    """The ``fastelf`` command: :func:`main`, then the process ends at once.

    Once the output is flushed nothing is left to do, so the interpreter's teardown
    (freeing every module and object one by one: ~10-25 ms here, a tenth of a small
    repair) is skipped with ``os._exit``.  Every file fastelf writes is closed (and
    renamed into place) inside ``main``; worker processes and threads are joined there."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:       # the reader went away, as main() allows for
        pass
    except OSError:               # disk full under a redirect: what Python itself exits with
        code = code or _EXIT_FLUSH_FAILED
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
