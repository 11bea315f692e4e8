"""Command line: ``fastelf show``, ``fastelf audit`` (and ``python -m fastelf``).

Exit codes: 0 all good (wheels that are not Linux wheels are skipped, which
is not a failure); 1 a wheel's file name claims a platform tag that the
wheel does not satisfy (or, with --verify-record, its RECORD does not match
its contents); 2 usage error; 3 a wheel could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__
from .audit import Status, audit_path
from .batch import audit_many, find_wheels
from .report import printable, show_text, summary_line

EXIT_OK, EXIT_MISLABELED, EXIT_USAGE, EXIT_UNREADABLE = 0, 1, 2, 3


def _add_audit_options(p):
    p.add_argument("--json", action="store_true", help="print JSON (one object per wheel)")
    p.add_argument("--disable-isa-ext-check", action="store_true",
                   help="do not check the x86-64 ISA level (v2/v3/v4) of ELF files")


def _add_record_option(p):
    p.add_argument("--verify-record", action="store_true",
                   help="also hash every member and check it against RECORD; a mismatch, "
                        "an unlisted member or a missing one makes the wheel not ok (exit 1)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastelf", description="Audit and repair Linux Python wheels (manylinux/musllinux).")
    parser.add_argument("-V", "--version", action="version", version=f"fastelf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("show", help="audit one wheel and explain the verdict",
                       description="Audit one wheel: the best platform tag it satisfies, and "
                                   "what stands in the way of more compatible tags.")
    p.add_argument("wheel", metavar="WHEEL_FILE")
    _add_audit_options(p)
    _add_record_option(p)

    p = sub.add_parser("audit", help="audit many wheels (files or directories), in parallel",
                       description="Audit wheels and directories of wheels (recursively).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="worker processes (0 = one per CPU; default 1)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="text mode: print only wheels that are mislabeled or unreadable")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    _add_audit_options(p)
    _add_record_option(p)

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
                   help="strip symbol tables, debug sections and section headers from every "
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


def _options(args):
    opts = {"disable_isa_ext_check": args.disable_isa_ext_check}
    if getattr(args, "verify_record", False):
        opts["verify_record"] = True
    return opts


_EXIT_OF_STATUS = {Status.OK: EXIT_OK, Status.SKIPPED: EXIT_OK,
                   Status.MISLABELED: EXIT_MISLABELED, Status.ERROR: EXIT_UNREADABLE}


def _error(message: str) -> None:
    """One line on stderr; names from wheels and file systems are escaped (see printable)."""
    print(f"fastelf: error: {printable(str(message))}", file=sys.stderr)


def _exit_code(results) -> int:
    """The worst status decides: unreadable (3) over mislabeled (1) over ok/skipped (0)."""
    return max((_EXIT_OF_STATUS[r.status] for r in results), default=EXIT_OK)


def cmd_show(args, out):
    if not os.path.isfile(args.wheel):
        _error(f"cannot access {args.wheel}: no such file")
        return EXIT_USAGE
    r = audit_path(args.wheel, **_options(args))
    if args.json:
        out.write(json.dumps(r.to_dict(), indent=2) + "\n")
    else:
        out.write(show_text(r))
    return _exit_code([r])


def _one_line(r) -> str:
    """One line per wheel; every name in it is escaped, so no wheel can forge a line."""
    return printable(_line_of(r))


def _line_of(r) -> str:
    status = r.status
    if status is Status.ERROR:
        return f"ERROR  {r.path}: {r.reason}"
    if status is Status.SKIPPED:
        return f"SKIP   {r.path}: {r.reason}"
    if status is Status.MISLABELED:
        best = f"best tag {r.best_tag}; " if r.unsatisfied_claims and r.best_tag else ""
        return f"BAD    {r.path}: {best}{r.reason}"
    return f"OK     {r.path}: {r.best_tag or 'pure'}"


class _Progress:
    def __init__(self, total, stream):
        self.total, self.stream, self.done = total, stream, 0

    def step(self):
        self.done += 1
        width = 30
        filled = width * self.done // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        self.stream.flush()

    def close(self):
        self.stream.write("\r" + " " * 60 + "\r")
        self.stream.flush()


def cmd_audit(args, out):
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        _error(f"no such file or directory: {', '.join(missing)}")
        return EXIT_USAGE
    if args.jobs < 0:
        print("fastelf: error: --jobs must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    total = sum(1 for _ in find_wheels(args.paths))
    if total == 0:
        print(printable(f"fastelf: no wheels (*.whl) found in {', '.join(args.paths)}"),
              file=sys.stderr)
    progress = None
    if not args.no_progress and sys.stderr.isatty() and total > 1:
        progress = _Progress(total, sys.stderr)
    start = time.perf_counter()
    counts = {"wheels": 0}
    results = []
    for r in audit_many(args.paths, jobs=args.jobs, **_options(args)):
        results.append(r)
        counts["wheels"] += 1
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
        if progress:
            progress.close()
        if args.json:
            out.write(json.dumps(r.to_dict()) + "\n")
        elif not args.quiet or r.status in (Status.MISLABELED, Status.ERROR):
            out.write(_one_line(r) + "\n")
        out.flush()
        if progress:
            progress.step()
    if progress:
        progress.close()
    print(summary_line(counts, time.perf_counter() - start), file=sys.stderr)
    return _exit_code(results)


def cmd_retag(args, out):
    from .errors import FastElfError
    from .retag import expand_tag, retag_wheel

    code = EXIT_OK
    for path in args.wheels:
        r = audit_path(path, **_options(args))
        if r.error:
            _error(r.error)
            code = EXIT_UNREADABLE
            continue
        try:
            if args.plat:
                plats = [t for tag in args.plat for t in expand_tag(tag, r.arch)]
            elif r.skip_reason is not None:
                raise FastElfError(f"{path}: {r.skip_reason}")
            elif r.pure:
                raise FastElfError(f"{path}: no ELF files; give the tags with --plat")
            else:
                plats = [t for t in r.tags if t == r.best_tag or t in _aliases_of(r, r.best_tag)]
                plats = plats or [r.best_tag]
            if args.add:
                plats = [t for t in r.claimed_tags if r.satisfies(t)] + plats
            unsatisfied = [t for t in plats if not r.satisfies(t)]
            if unsatisfied and not args.force:
                raise FastElfError(f"{path}: the wheel does not satisfy {', '.join(unsatisfied)} "
                                   f"(best tag: {r.best_tag}); use --force to set it anyway")
            out.write(printable(retag_wheel(path, args.wheel_dir, plats,
                                            compresslevel=args.zip_compression_level)) + "\n")
        except FastElfError as e:
            _error(e)
            code = max(code, EXIT_MISLABELED)
    return code


def cmd_repair(args, out):
    from .errors import FastElfError, WheelError
    from .repair import repair_wheel

    code = EXIT_OK
    for path in args.wheels:
        if not os.path.isfile(path):
            _error(f"cannot access {path}: no such file")
            code = EXIT_USAGE
            continue
        try:
            res = repair_wheel(
                path, args.wheel_dir, plat=args.plat, only_plat=args.only_plat,
                exclude=args.exclude, root=args.root, ldpaths=args.ldpaths,
                ld_library_path=os.environ.get("LD_LIBRARY_PATH"),
                update_tags=not args.no_update_tags,
                disable_isa_ext_check=args.disable_isa_ext_check,
                compresslevel=args.zip_compression_level, strip=args.strip)
        except WheelError as e:
            _error(e)
            code = EXIT_UNREADABLE
            continue
        except FastElfError as e:
            _error(e)
            code = max(code, EXIT_MISLABELED)
            continue
        if args.json:
            out.write(json.dumps(res.to_dict()) + "\n")
        else:
            for lib, (src, member) in res.grafted.items():
                out.write(printable(f"grafted {lib} from {src} as {member}") + "\n")
            out.write(printable(f"wrote {res.output}") + "\n")
    return code


def cmd_lddtree(args, out):
    from .errors import FastElfError
    from .lddtree import resolve_tree

    try:
        tree = resolve_tree(args.file, root=args.root,
                            ld_library_path=os.environ.get("LD_LIBRARY_PATH"),
                            ldpaths=args.ldpaths.split(":") if args.ldpaths else None)
    except FastElfError as e:       # LddError, or LimitError from a hostile file or sysroot
        _error(e)
        return EXIT_UNREADABLE
    if args.json:
        out.write(json.dumps(tree.to_dict(), indent=2) + "\n")
        return EXIT_OK if not tree.missing else EXIT_MISLABELED
    d = tree.to_dict()
    out.write(printable(f"{d['path']} ({d['arch']}, {d['libc']}"
                        f"{', interpreter ' + d['interpreter'] if d['interpreter'] else ''})")
              + "\n")
    libs = tree.libraries

    expanded = set()

    def draw(names, depth):          # each library's own needs are shown once
        for n in names:
            lib = libs.get(n)
            where = lib.path if lib and lib.path else "not found"
            out.write(f"{'    ' * depth}{printable(n)} => {printable(where)}\n")
            if lib and lib.path and n not in expanded:
                expanded.add(n)
                draw(lib.needed, depth + 1)

    draw(tree.needed, 1)
    if tree.missing:
        out.write(printable(f"missing: {', '.join(tree.missing)}") + "\n")
        return EXIT_MISLABELED
    return EXIT_OK


def cmd_report(args, out):
    """Aggregation and rendering live in census*.py; this only wires files and errors."""
    from pathlib import Path

    from .census_html import census_of, write_html_report
    from .census_md import render_markdown
    from .errors import FastElfError

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


def _aliases_of(r, tag):
    return next((c.aliases for c in r.policies if c.tag == tag), ())


COMMANDS = {"show": cmd_show, "audit": cmd_audit, "repair": cmd_repair, "retag": cmd_retag,
            "lddtree": cmd_lddtree, "report": cmd_report}


def main(argv=None, out=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args, out or sys.stdout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
