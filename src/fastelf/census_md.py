"""The census as Markdown, for a terminal or a pull request.

The same charts as the HTML page (census_charts), each as a table of
counts; every string from the input is escaped for a table cell.
"""

from __future__ import annotations

import re

from .census import CensusResult, Row
from .census_charts import Chart, all_charts

TABLE_ROWS = 20
_CELL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f|\\`*\[\]<>#~]")


def cell(value: object) -> str:
    """Text safe in a Markdown table cell: no markup, no line break, no raw HTML."""
    text = "" if value is None else str(value)
    return _CELL_RE.sub(lambda m: (f"\\{m.group()}" if m.group() >= " " else
                                   f"\\\\x{ord(m.group()):02x}"), text)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def _chart(c: Chart) -> list[str]:
    out = [f"### {cell(c.title)}", "", f"{cell(c.note)}", ""]
    if not c.bars:
        return out + ["none in this census", ""]
    partial = any(b.part is not None for b in c.bars)
    header = ["", "wheels"] + (["not satisfied"] if partial else [])
    rows = [[b.label, b.value] + ([b.part] if partial else []) for b in c.bars]
    out += _table(header, rows)
    if c.total is not None and c.total > len(c.bars):
        out.append(f"\n(top {len(c.bars)} of {c.total})")
    return out + [""]


def _rows(title: str, rows: tuple[Row, ...], total: int) -> list[str]:
    out = [f"## {title} ({total})", ""]
    if not total:
        return out + ["none", ""]
    out += _table(["wheel", "reason"], [[r.wheel, r.reason] for r in rows[:TABLE_ROWS]])
    if total > TABLE_ROWS:
        out.append(f"\n(the first {TABLE_ROWS} of {total})")
    return out + [""]


def render_markdown(r: CensusResult, title: str = "fastelf census") -> str:
    lines = [f"# {cell(title)}", "",
             f"{r.lines} input lines, {r.wheels} audit results, {r.rejected} rejected lines.", ""]
    for x in r.rejects:
        lines.append(f"- rejected: {cell(x.source)}:{x.lineno}: {cell(x.reason)}")
    lines += [""] if r.rejects else []
    for c in all_charts(r):
        lines += _chart(c)
    lines += _rows("Mislabeled wheels", r.samples["mislabeled"], r.status["mislabeled"])
    lines += _rows("Unreadable wheels", r.samples["error"], r.status["error"])
    lines += [f"## Projects ({len(r.projects)})", ""]
    lines += _table(["project", "wheels", "ok", "mislabeled", "skipped", "unreadable",
                     "newest glibc needed"],
                    [[p.project, p.wheels, p.ok, p.mislabeled, p.skipped, p.error,
                      p.newest_glibc or ""] for p in r.projects[:TABLE_ROWS]])
    return "\n".join(lines) + "\n"
