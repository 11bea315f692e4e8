"""Human-readable text: audit results (``fastelf show``, the batch summary), the
progress bar of ``fastelf audit`` and the ``fastelf lddtree`` drawing.

Presentation only: every decision is taken by the module that computed the
result; this one turns it into lines for a terminal.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .audit import AuditResult
    from .lddtree import Tree
    from .repair import RepairReach, RepairResult



def printable(text: str) -> str:
    """``text`` safe for a terminal and for line-oriented output.

    Names in a wheel (members, libraries, symbols, the file name itself) are
    the wheel author's: control characters could move the cursor, recolour the
    terminal or forge extra lines, and bytes that are not UTF-8 (kept as
    surrogate escapes) cannot even be encoded.  Every character that is not
    printable becomes an escape: ``\\xNN`` for a control character or a raw
    byte, ``\\uNNNN`` for any other.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:          # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def escaped(obj: Any) -> Any:
    """A copy of ``obj`` (a result record, or containers of them) with every string
    passed through :func:`printable`, for text output; enums are kept as they are."""
    if isinstance(obj, Enum):
        return obj
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {escaped(k): escaped(v) for k, v in obj.items()}
    if isinstance(obj, (list, set, frozenset)):
        return type(obj)(escaped(x) for x in obj)
    if isinstance(obj, tuple):
        items = [escaped(x) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: escaped(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def _para(text: str, width: int = 78) -> str:
    """``text`` wrapped to ``width`` as one paragraph."""
    return textwrap.fill(text, width) + "\n"


def show_text(r: AuditResult, reach: RepairReach | None = None) -> str:
    """The ``fastelf show`` report for one AuditResult (names escaped, see printable).

    ``reach`` (a :class:`fastelf.repair.RepairReach`, or None) is what repair would
    reach: the advice for each more compatible tag then names what grafting cannot
    remove, such as the grafted libraries' own too-recent symbol versions."""
    r = escaped(r)
    reach = escaped(reach) if reach is not None else None
    out = []
    if r.error:
        return f"error: {r.error}\n"
    if r.skip_reason is not None:
        out.append(_para(f"{r.wheel} was skipped: {r.skip_reason}. fastelf audits only "
                         "Linux wheels (manylinux, musllinux, linux_<arch>)."))
    elif r.pure:
        out.append(_para(f"{r.wheel} contains no ELF file for a Linux platform "
                         "(a pure-Python wheel)."))
    if r.pure:
        out.extend(_para("Note: " + p) for p in r.problems)
        out.extend(_ignored(r))
        out.extend(_claims(r))
        return "".join(x if x.endswith("\n") else x + "\n" for x in out)
    out.append(_para(f'{r.wheel} is consistent with the following platform tag: '
                     f'"{r.best_tag}".'))
    others = [t for t in r.tags if t != r.best_tag]
    if others:
        out.append(_para(f"It also satisfies {len(others)} other tag"
                         f"{'s' if len(others) > 1 else ''}: " + ", ".join(others) + "."))
    out.append(_para(f"Architecture {r.arch}, libc {r.libc} (decided from the wheel's "
                     f"{len(r.elfs)} ELF file{'s' if len(r.elfs) != 1 else ''})."))
    for p in r.problems:
        out.append(_para(("Problem: " if p in r.blocking else "Note: ") + p))
    if r.versioned_symbols:
        libs = "; ".join(f"{lib} with versions {', '.join(v)}"
                         for lib, v in r.versioned_symbols.items())
        out.append(_para("The wheel references external versioned symbols in these "
                         f"system-provided shared libraries: {libs}"))
    else:
        out.append(_para("The wheel references no external versioned symbols from "
                         "system-provided shared libraries."))
    if r.external_libraries:
        out.append("The following external shared libraries are required by the wheel:\n")
        for lib, who in r.external_libraries.items():
            out.append(f"  {lib}  (needed by {', '.join(who)})\n")
    else:
        out.append("The wheel requires no external shared libraries! :)\n")
    out.extend(_reach_lines(reach))
    probe = {c.tag: c for c in reach.probe.policies} if reach and reach.probe else {}
    # policies more compatible than the best one, grouped when their reasons agree
    groups: list[tuple[list[str], list[str]]] = []      # (tags, their shared reasons)
    for check in r.policies:
        if check.satisfied:
            break
        reasons = probe.get(check.tag, check).reasons(limit=4)
        if groups and groups[-1][1] == reasons:
            groups[-1][0].append(check.tag)
        else:
            groups.append(([check.tag], reasons))
    for tags, reasons in groups:
        named = f'"{tags[0]}"' if len(tags) == 1 else f'any of "{tags[0]}" … "{tags[-1]}"'
        out.append(f"To achieve {named}:\n")
        out.extend(f"  - {why}\n" for why in reasons)
    out.extend(_ignored(r))
    out.extend(_claims(r))
    return "".join(x if x.endswith("\n") else x + "\n" for x in out)


def _reach_lines(reach: RepairReach | None) -> list[str]:
    """What repair would reach, when it was asked."""
    if reach is None:
        return []
    if reach.tag is None:
        return [_para(f"Repair cannot make it more compatible: {reach.problem}")]
    libs = ", ".join(f"{lib} from {path}" for lib, path in reach.grafted.items())
    return [_para(f'Repair would reach "{reach.tag}" by grafting {libs} (their own '
                  "symbol versions count).")]


def _ignored(r: AuditResult) -> list[str]:
    """The ELF files left out of the verdict, with why."""
    if not r.ignored:
        return []
    return ["Ignored ELF files:\n"] + [f"  {m}: {why}\n" for m, why in r.ignored.items()]


def _claims(r: AuditResult) -> list[str]:
    """The file name's claims, each satisfied or not, and the RECORD verdict."""
    out = []
    for tag in r.claimed_tags:
        if tag in r.unsatisfied_claims:
            out.append(f'The file name claims "{tag}", which the wheel does NOT satisfy: '
                       f"{r.unsatisfied_claims[tag]}\n")
    if r.unchecked_claims and r.skip_reason is None:
        out.append("Not checked (not Linux platform tags): "
                   + ", ".join(r.unchecked_claims) + "\n")
    checked = [t for t in r.claimed_tags if t not in r.unchecked_claims]
    if checked and not r.unsatisfied_claims:
        out.append("The Linux platform tags in the file name are all satisfied.\n"
                   if r.unchecked_claims else
                   "The platform tags in the file name are all satisfied.\n")
    rec = getattr(r, "record", None)
    if rec is not None:
        if rec.ok:
            out.append(f"RECORD matches the wheel ({rec.checked} members hashed).\n")
        else:
            out.append(f"RECORD does NOT match the wheel ({rec.checked} members matched):\n")
            out.extend(f"  - {p}\n" for p in rec.problems())
    return out


def batch_line(r: AuditResult) -> str:
    """The batch's line for one wheel: its status, path and best tag or reason.
    Every name in it is escaped, so no wheel can forge a line."""
    from .audit import Status

    status = r.status
    if status is Status.ERROR:
        line = f"ERROR  {r.path}: {r.reason}"
    elif status is Status.SKIPPED:
        line = f"SKIP   {r.path}: {r.reason}"
    elif status is Status.MISLABELED:
        best = f"best tag {r.best_tag}; " if r.unsatisfied_claims and r.best_tag else ""
        line = f"BAD    {r.path}: {best}{r.reason}"
    else:
        line = f"OK     {r.path}: {r.best_tag or 'pure'}"
    return printable(line)


def repair_text(res: RepairResult) -> str:
    """What ``repair`` prints for one wheel: each grafted library, then the output."""
    lines = [f"grafted {lib} from {g.source} as {g.member}" for lib, g in res.grafted.items()]
    lines.append(f"wrote {res.output}")
    return "".join(printable(line) + "\n" for line in lines)


def summary_line(counts: dict, seconds: float) -> str:
    """The batch summary; ``counts`` maps "wheels" and each Status value to a count.

    Skipped wheels (not Linux wheels) have their own count: they are not ok.
    """
    parts = [f"{counts.get('wheels', 0)} wheels audited in {seconds:.2f}s",
             f"{counts.get('ok', 0)} ok",
             f"{counts.get('mislabeled', 0)} mislabeled",
             f"{counts.get('skipped', 0)} skipped (not Linux wheels)",
             f"{counts.get('error', 0)} unreadable"]
    return ", ".join(parts)


class Progress:
    """A one-line progress bar redrawn in place on ``stream`` (a terminal)."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.done = total, stream, 0

    def step(self) -> None:
        """Count one more item done and redraw the bar."""
        self.done += 1
        filled = self.WIDTH * self.done // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{self.done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        """Blank the bar's line, so that what is printed next starts clean."""
        self.stream.write("\r" + " " * 60 + "\r")
        self.stream.flush()


def lddtree_text(tree: Tree) -> str:
    """The ``fastelf lddtree`` drawing (names escaped, see :func:`printable`).

    A header line, then one line per DT_NEEDED edge, indented by depth; each
    library's own needs are drawn once, under its first appearance; then the
    names that were not found, if any.
    """
    elf = tree.elf
    interpreter = f", interpreter {elf.interpreter}" if elf.interpreter else ""
    out = [printable(f"{tree.path} ({elf.arch}, {tree.libc}{interpreter})") + "\n"]
    expanded: set[str] = set()
    stack: list[tuple[Iterator[str], int]] = [(iter(tree.needed), 1)]
    while stack:                    # depth first, in DT_NEEDED order, as ld.so lists them
        names, depth = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        lib = tree.libraries.get(name)
        where = lib.path if lib and lib.path else "not found"
        out.append(f"{'    ' * depth}{printable(name)} => {printable(where)}\n")
        if lib and lib.path and name not in expanded:
            expanded.add(name)
            stack.append((iter(lib.needed), depth + 1))
    if tree.missing:
        out.append(printable(f"missing: {', '.join(tree.missing)}") + "\n")
    return "".join(out)
