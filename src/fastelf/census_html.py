"""The census as one self-contained HTML page, and the rows files beside it.

Charts are inline SVG drawn here, so the page needs no chart library and
no network: it opens from disk, prints, and shows its charts with scripts
off.  The only script (``census_table.js``, inlined) sorts and filters the
tables; a Content-Security-Policy allows that script by its hash and
nothing else, so even a string that escaped escaping could not run.

Every string taken from the input (wheel names, reasons, errors, library
names: all chosen by whoever built the wheels) goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from collections.abc import Iterable
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import IO, Any, NamedTuple

from .census import CensusResult, Row, RowSink, aggregate, aggregate_files, read_lines
from .census_charts import Bar, Chart, all_charts, jq_select
from .errors import FastElfError

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
TABLE_ROWS = 1000           # rows of each table in the page; all rows are in the rows files
PROJECT_ROWS = 2000
ROW_FILES = {"wheels": "every wheel", "mislabeled": "mislabeled wheels",
             "error": "unreadable wheels", "skipped": "skipped wheels"}


class RowFiles(NamedTuple):
    """The rows files of a report: ``names`` maps a rows key to its file name."""

    directory: Path
    names: dict[str, str]


def esc(value: object) -> str:
    """HTML text for any value: markup escaped, control characters shown as ``\\xNN``."""
    text = "" if value is None else str(value)
    text = _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return html.escape(text, quote=True)


# ------------------------------------------------------------------ charts

_W, _LABEL, _ROW, _VALUE = 620, 260, 20, 110


def _bar_svg(y: int, bar: Bar, scale: float) -> str:
    full = max(1.0, bar.value * scale) if bar.value else 0.0
    label = bar.label if len(bar.label) <= 38 else bar.label[:36] + "\u2026"
    tip = f"{bar.label}: {bar.value}\nrows: jq '{jq_select(bar.where)}'"
    if bar.part is not None:
        tip += f"\nnot satisfied: {bar.part}: jq '{jq_select(bar.part_where)}'"
    parts = [f'<g><title>{esc(tip)}</title>',
             f'<text x="{_LABEL - 6}" y="{y + 14}" text-anchor="end">{esc(label)}</text>',
             (f'<rect class="bg" x="{_LABEL}" y="{y + 3}" width="{_W - _LABEL - _VALUE}" '
             f'height="{_ROW - 6}"/>'),
             f'<rect class="b" x="{_LABEL}" y="{y + 3}" width="{full:.1f}" height="{_ROW - 6}"/>']
    if bar.part:
        parts.append(f'<rect class="p" x="{_LABEL}" y="{y + 3}" '
                     f'width="{max(1.0, bar.part * scale):.1f}" height="{_ROW - 6}"/>')
    value = f"{bar.value:,}" + (f" ({bar.part:,} not)" if bar.part else "")
    parts.append(f'<text class="v" x="{_LABEL + full + 4:.1f}" y="{y + 14}">{esc(value)}</text>')
    return "".join(parts) + "</g>"


def chart_svg(chart: Chart) -> str:
    """A horizontal bar chart; an empty chart says so instead of drawing nothing."""
    if not chart.bars:
        return '<p class="empty">none in this census</p>'
    top = max(b.value for b in chart.bars) or 1
    scale = (_W - _LABEL - _VALUE) / top
    height = _ROW * len(chart.bars) + 4
    body = "".join(_bar_svg(i * _ROW, b, scale) for i, b in enumerate(chart.bars))
    return (f'<svg class="chart" role="img" aria-label="{esc(chart.title)}" '
            f'viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _figure(chart: Chart, rows_file: str | None) -> str:
    more = ""
    if chart.total is not None and chart.total > len(chart.bars):
        more = f'<p class="more">top {len(chart.bars)} of {chart.total:,}'
        more += f'; all in <a href="{esc(rows_file)}">{esc(rows_file)}</a>' if rows_file else ""
        more += "</p>"
    return (f'<figure id="chart-{esc(chart.key)}"><figcaption>{esc(chart.title)}'
            f'<small>{esc(chart.note)}</small></figcaption>{chart_svg(chart)}{more}</figure>')


# ------------------------------------------------------------------ tables

class Column(NamedTuple):
    title: str
    numeric: bool = False


def table_html(key: str, columns: list[Column], rows: Iterable[list[Any]],
               shown: int, total: int, rows_file: str | None) -> str:
    """A sortable, filterable table (see census_table.js) of at most ``shown`` rows."""
    head = "".join(f'<th{" class=num" if c.numeric else ""}>{esc(c.title)}</th>'
                   for c in columns)
    body = []
    for cells in rows:
        tds = "".join(f'<td class="num" data-v="{esc(v)}">{esc(f"{v:,}")}</td>'
                      if isinstance(v, int) else f"<td>{esc(v)}</td>" for v in cells)
        body.append(f"<tr>{tds}</tr>")
    note = f"{total:,} in all" if total == shown else f"the first {shown:,} of {total:,}"
    if rows_file:
        note += f'; all rows: <a href="{esc(rows_file)}">{esc(rows_file)}</a> (JSON lines)'
    return (f'<div class="tablebar"><input class="filter" type="search" '
            f'placeholder="filter rows" aria-label="filter {esc(key)}" data-table="t-{key}" '
            f'data-count="c-{key}"><span id="c-{key}"></span><span class="more">{note}</span>'
            f'</div><div class="scroll"><table class="data" id="t-{key}"><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _rows_table(key: str, rows: tuple[Row, ...], total: int, rows_file: str | None,
                what: str) -> str:
    """Mislabeled wheels with what they claim and satisfy; unreadable ones have only a name
    and an error (nothing else of them was read)."""
    cells: Iterable[list[Any]]
    if key == "error":
        cols = [Column("wheel"), Column(what)]
        cells = ([r.wheel, r.reason or ""] for r in rows[:TABLE_ROWS])
    else:
        cols = [Column("wheel"), Column("arch"), Column("libc"), Column("claimed"),
                Column("best tag"), Column(what)]
        cells = ([r.wheel, r.arch or "", r.libc or "", " ".join(r.claimed), r.best_tag or "",
                  r.reason or ""] for r in rows[:TABLE_ROWS])
    return table_html(key, cols, cells, min(len(rows), TABLE_ROWS), total, rows_file)


def _projects_table(r: CensusResult) -> str:
    cols = [Column("project"), Column("wheels", True), Column("ok", True),
            Column("mislabeled", True), Column("skipped", True), Column("unreadable", True),
            Column("architectures"), Column("newest glibc needed")]
    cells = ([p.project, p.wheels, p.ok, p.mislabeled, p.skipped, p.error, " ".join(p.arches),
              p.newest_glibc or ""] for p in r.projects[:PROJECT_ROWS])
    return table_html("projects", cols, cells, min(len(r.projects), PROJECT_ROWS),
                      len(r.projects), None)


# ------------------------------------------------------------------ page

def _cards(r: CensusResult, files: dict[str, str]) -> str:
    names = {"ok": "ok", "mislabeled": "mislabeled", "skipped": "skipped (not Linux)",
             "error": "unreadable"}
    cards = [f'<div class="card"><b>{r.wheels:,}</b>wheels</div>']
    for s, label in names.items():
        link = files.get(s)
        text = f'<a href="{esc(link)}">{esc(label)}</a>' if link else esc(label)
        cards.append(f'<div class="card {s}"><b>{r.status[s]:,}</b>{text}</div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _rejects(r: CensusResult) -> str:
    if not r.rejected:
        return ""
    items = "".join(f"<li>{esc(x.source)}:{x.lineno}: {esc(x.reason)}</li>" for x in r.rejects)
    hidden = r.rejected - len(r.rejects)
    more = "" if hidden == 0 else f"<li>and {hidden} more</li>"
    lines = "1 line is" if r.rejected == 1 else f"{r.rejected:,} lines are"
    return (f"<h2>Rejected input lines</h2><p>{lines} not an audit result of "
            f"schema version 2, left out of every count.</p><ul>{items}{more}</ul>")


def render_html(r: CensusResult, files: dict[str, str] | None = None,
                title: str = "fastelf census") -> str:
    """The page.  ``files`` maps a rows key (see ROW_FILES) to the file name it links."""
    files = files or {}
    wheels = files.get("wheels")
    charts = all_charts(r)
    how = ("Every bar's tooltip gives the <code>jq</code> filter that selects its wheels "
           f'from <a href="{esc(wheels)}">{esc(wheels)}</a>.' if wheels else "")
    parts = [f"<h1>{esc(title)}</h1>",
             f'<p class="sub">{r.lines:,} input lines, {r.wheels:,} audit results. {how}</p>',
             _cards(r, files), _rejects(r),
             "<h2>Charts</h2>", '<div class="grid">',
             *(_figure(c, wheels) for c in charts), "</div>",
             "<h2>Mislabeled wheels</h2>",
             _rows_table("mislabeled", r.samples["mislabeled"], r.status["mislabeled"],
                         files.get("mislabeled"), "reason"),
             "<h2>Unreadable wheels</h2>",
             _rows_table("error", r.samples["error"], r.status["error"], files.get("error"),
                         "error"),
             "<h2>Projects</h2>", _projects_table(r),
             ('<p class="more">Made by fastelf report from <code>fastelf audit --json</code> '
             "output. No network is used to view this page.</p>")]
    return _page(title, "\n".join(p for p in parts if p))


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _page(title: str, body: str) -> str:
    script = _asset("census_table.js")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    page = _asset("census_template.html")
    for mark, text in (("@SCRIPT_HASH@", f"sha256-{digest}"), ("@TITLE@", esc(title)),
                       ("@SCRIPT@", script), ("@BODY@", body)):
        page = page.replace(mark, text, 1)     # body last: input text is never re-scanned
    return page


# ------------------------------------------------------------------ files

def row_file_names(out: Path) -> RowFiles:
    """``report.html`` -> ``report.wheels.jsonl``, ``report.mislabeled.jsonl``, ..."""
    stem = out.name[:-len(out.suffix)] if out.suffix else out.name
    return RowFiles(out.parent, {k: f"{stem}.{'unreadable' if k == 'error' else k}.jsonl"
                                 for k in ROW_FILES})


def census_of(paths: list[str], jobs: int = 1, row_paths: dict[str, str] | None = None,
              keep_rows: int = TABLE_ROWS) -> CensusResult:
    """The census of input files (``-`` is stdin), rows to ``row_paths`` (key -> file).

    ``jobs`` > 1 counts chunks of the files in that many processes (not for stdin).
    """
    row_paths = row_paths or {}
    if jobs > 1 and "-" not in paths:
        return aggregate_files(paths, jobs, row_paths, keep_rows)
    with ExitStack() as stack:
        streams: dict[str, IO[bytes]] = {
            k: stack.enter_context(open(p, "wb", buffering=1 << 20))
            for k, p in row_paths.items()}
        return aggregate(read_lines(paths), RowSink(streams), keep_rows=keep_rows)


def write_html_report(paths: list[str], out: Path, title: str = "fastelf census",
                      rows: bool = True, jobs: int = 1) -> CensusResult:
    """Count ``paths``, write the page to ``out`` and (``rows``) the rows files beside it.

    Each file is written under a temporary name and renamed when complete,
    so an interrupted run leaves the previous report whole.
    """
    if not out.parent.is_dir():
        raise FastElfError(f"{out.parent}: not a directory (the report's place)")
    files = row_file_names(out) if rows else RowFiles(out.parent, {})
    tmp = {k: files.directory / f".{n}.tmp" for k, n in files.names.items()}
    result = census_of(paths, jobs, {k: str(p) for k, p in tmp.items()})
    page_tmp = out.with_name(f".{out.name}.tmp")
    page_tmp.write_text(render_html(result, files.names, title), encoding="utf-8")
    for k, p in tmp.items():
        os.replace(p, files.directory / files.names[k])
    os.replace(page_tmp, out)
    return result
