"""``fastelf report``: the census of ``fastelf audit --json`` output.

Inputs are real: fixture wheels built by the C compilers (glibc, musl,
aarch64), a wheel with a grafted library, one linking a library it does not
ship, one unreadable, one skipped, one with hostile names, all audited by
the real ``fastelf audit --json``; synthetic lines varied from those
(tests/census_synth.py) give scale.

Oracles: every count is recounted here from the audit JSON with plain code
(packaging.version orders glibc versions); every bar of the page is checked
against ``jq`` running its own filter over the rows file; Python's
html.parser checks that no input string became markup; headless Chromium
loads the page from disk (charts drawn, script ran, no console message).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from census_synth import synthetic_lines
from elfbuild import compile_c
from packaging import _manylinux
from packaging.version import Version
from wheelbuild import build_wheel

from fastelf import cli
from fastelf.census import (
    InputLine,
    RowSink,
    aggregate,
    aggregate_files,
    chunks_of,
    parse_line,
    read_lines,
)
from fastelf.census_charts import all_charts, row_matches

HOSTILE = '<img src=x onerror="alert(1)">'


# ------------------------------------------------------------------ fixtures

def _c(root: Path, name: str, src: str, cc: str = "gcc", **kw):
    return compile_c(root / "elfs", name, src, cc=cc, **kw)


_GETRANDOM = ("#include <sys/random.h>\n"
              "void *PyInit_m(void){char b[4];return (void*)(long)getrandom(b,4,0);}\n")
_MALLOC = "#include <stdlib.h>\nvoid *PyInit_m(void){return malloc(8);}\n"


def _grafted_wheel(root: Path, out: Path):
    """An extension needing ``libgr-0123abcd.so.1`` from ``g.libs/``, as repair lays it out."""
    lib = _c(root, "libgr-0123abcd.so.1", "int gr(void){return 1;}\n",
             args=["-Wl,-soname,libgr-0123abcd.so.1"])
    ext = _c(root, "gr_m.so", "int gr(void);\nvoid *PyInit_m(void){return (void*)(long)gr();}\n",
             args=[f"-L{root / 'elfs'}", "-Wl,-rpath,$ORIGIN/../g.libs"],
             libs=["-l:libgr-0123abcd.so.1"])
    return build_wheel(out, {"g/m.so": ext, "g.libs/libgr-0123abcd.so.1": lib}, name="g",
                       tags="manylinux_2_17_x86_64")


def _external_wheel(root: Path, out: Path):
    """An extension linking ``libcensusext.so``, which the wheel does not ship."""
    _c(root, "libcensusext.so", "int ce(void){return 2;}\n", args=["-Wl,-soname,libcensusext.so"])
    ext = _c(root, "ext_m.so", "int ce(void);\nvoid *PyInit_m(void){return (void*)(long)ce();}\n",
             args=[f"-L{root / 'elfs'}"], libs=["-lcensusext"])
    return build_wheel(out, {"e/m.so": ext}, name="e", tags="linux_x86_64")


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> list[dict]:
    """The audit --json results of every fixture wheel, as dicts."""
    root = tmp_path_factory.mktemp("census")
    out = root / "wheels"
    build_wheel(out, {"a/m.so": _c(root, "ok.so", _MALLOC)}, name="okpkg",
                tags="manylinux_2_17_x86_64")
    build_wheel(out, {"x/m.so": _c(root, "xs.so", _MALLOC, args=["-Wl,-z,execstack"])},
                name="execstack", tags="manylinux_2_17_x86_64")   # a `checks` finding
    build_wheel(out, {"b/m.so": _c(root, "gr.so", _GETRANDOM)}, name="mislabeled",
                tags="manylinux2014_x86_64")
    build_wheel(out, {f"c/{HOSTILE}.so": _c(root, "gr.so", _GETRANDOM)}, name="hostile",
                tags="manylinux2014_x86_64")
    _grafted_wheel(root, out)
    _external_wheel(root, out)
    for cc, key, tag in (("musl", "musl", "musllinux_1_1_x86_64"),
                         ("aarch64", "arm", "manylinux_2_17_aarch64")):
        so = _c(root, f"{key}.so", _MALLOC, cc=cc)
        if so is not None:
            build_wheel(out, {f"{key}/m.so": so}, name=key, tags=tag)
    build_wheel(out, {"w/__init__.py": "x = 1\n"}, name="win", tags="win_amd64")
    (out / "broken-1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"not a zip")
    (out / f"evil{HOSTILE}-1.0-py3-none-any.whl").write_bytes(b"PK junk")
    buf = io.StringIO()
    cli.main(["audit", "--json", "--no-progress", str(out)], out=buf)
    results = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert {r["status"] for r in results} == {"ok", "mislabeled", "skipped", "error"}
    assert any(c["kind"] == "exec-stack" for r in results for c in r.get("checks", []))
    return results


def _lines(dicts: list[dict]) -> list[InputLine]:
    return [InputLine("t", i, (json.dumps(d) + "\n").encode()) for i, d in enumerate(dicts, 1)]


# ------------------------------------------------------------------ the recount (the oracle)

def recount(dicts: list[dict]) -> dict:
    """The census counted again in the plainest way, straight from the audit JSON."""
    audited = [d for d in dicts if d["status"] in ("ok", "mislabeled")]
    with_elf = [d for d in audited if not d["pure"]]
    glibc = Counter()
    for d in with_elf:
        if d["libc"] == "glibc":
            vs = [v[6:] for names in d["versioned_symbols"].values() for v in names
                  if re.fullmatch(r"GLIBC_[0-9.]+", v)]
            if vs:
                glibc[max(vs, key=Version)] += 1
    by_tag = {}
    for d in audited:
        for t in d["claimed_tags"]:
            by_tag.setdefault(t, [0, 0])[t in d["unsatisfied_claims"]] += 1
    grafted = Counter()
    for d in dicts:
        names = {re.sub(r"-[0-9a-f]{8}\.so", ".so", e["path"].split("/")[1])
                 for e in d.get("elfs", []) if re.fullmatch(r"[^/]+\.libs/[^/]+", e["path"])}
        grafted.update(names)
    return {
        "claims": Counter(_claim_state(d) for d in audited if d["claimed_tags"]),
        "claim_failures": Counter(k for d in audited
                                  for k in {_failure_kind(w)
                                            for w in d["unsatisfied_claims"].values()}),
        "problems": Counter(k for d in dicts
                            for k in dict.fromkeys(_problem_kind(p) for p in
                                                   d.get("problems", []) + d.get("checks", []))),
        "status": Counter(d["status"] for d in dicts),
        "best_tags": Counter(f"{d['arch']}/{d['libc'] or 'none'}/{d['best_tag']}"
                             for d in audited if d["arch"] and d["best_tag"]),
        "glibc_needed": glibc,
        "musl_needed": Counter(".".join(d["best_tag"].split("_")[1:3]) for d in with_elf
                               if d["libc"] == "musl" and d["best_tag"].startswith("musllinux")),
        "external": Counter(k for d in with_elf for k in d["external_libraries"]),
        "grafted": grafted,
        "claims_by_tag": {t: tuple(v) for t, v in by_tag.items()},
        "mislabeled_claimers": sum(1 for d in audited if d["unsatisfied_claims"]),
        "projects": len({re.sub(r"[-_.]+", "-", d["wheel"].split("-")[0]).lower()
                         for d in dicts}),
    }


_LEGACY = {name: ver for ver, name in _manylinux._LEGACY_MANYLINUX_MAP.items()}


def _tag_version(tag: str):
    """(family, (major, minor)) by PEP 600/656 and packaging's legacy table."""
    m = re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)_.*", tag)
    if m:
        return m.group(1), (int(m.group(2)), int(m.group(3)))
    legacy = next((v for k, v in _LEGACY.items() if tag.startswith(k + "_")), None)
    return ("manylinux", tuple(legacy)) if legacy else None


def _claim_state(d: dict) -> str:
    if d["unsatisfied_claims"]:
        return "claims more than it satisfies"
    best = _tag_version(d["best_tag"] or "")
    claimed = [v for v in map(_tag_version, d["claimed_tags"]) if v and best and v[0] == best[0]]
    if claimed and all(best[1] < v[1] for v in claimed):
        return "satisfies an older tag than it claims"
    return "satisfies what it claims"


# the wording of every reason and problem the fixtures and census_synth produce, and the kind
# the page must count it under: an unknown wording fails here rather than being guessed
_FAILURES = {"is too recent": "symbol version too recent",
             "contains no ELF file for this platform": "no ELF file for the tag"}
_PROBLEMS = {"no ELF file names a libc": "no ELF file names a libc",
             "imports symbols that older": "symbols older systems lack"}


def _failure_kind(why: str) -> str:
    (kind,) = [k for text, k in _FAILURES.items() if text in why]
    return kind


def _problem_kind(p) -> str:
    if isinstance(p, dict):
        return p["kind"]
    (kind,) = [k for text, k in _PROBLEMS.items() if text in p]
    return kind


def census_counts(result) -> dict:
    d = result.to_dict()
    return {
        "claims": Counter(d["claims"]), "claim_failures": Counter(d["claim_failures"]),
        "problems": Counter(d["problems"]),
        "status": Counter({k: v for k, v in d["status"].items() if v}),
        "best_tags": Counter({f"{g}/{t}": n for g, tags in d["best_tags"].items()
                              for t, n in tags.items()}),
        "glibc_needed": Counter(d["glibc_needed"]), "musl_needed": Counter(d["musl_needed"]),
        "external": Counter(d["external"]), "grafted": Counter(d["grafted"]),
        "claims_by_tag": {t: tuple(v) for t, v in d["claims_by_tag"].items()},
        "mislabeled_claimers": d["claims"].get("claims more than it satisfies", 0),
        "projects": len(d["projects"]),
    }


def test_every_count_matches_the_recount(audited):
    result = aggregate(_lines(audited))
    assert result.wheels == len(audited) and result.rejected == 0
    assert census_counts(result) == recount(audited)


def test_fixture_facts_land_in_their_counts(audited):
    """What each fixture was built to show is counted where the page shows it."""
    r = aggregate(_lines(audited))
    assert r.grafted == {"libgr.so.1": 1}
    assert r.external.get("libcensusext.so") == 1
    assert r.claim_failures == {"symbol version too recent": 2}     # mislabeled and hostile
    assert r.claims_by_tag["manylinux2014_x86_64"] == (0, 2)
    assert r.status["skipped"] == 1 and r.status["error"] == 2
    assert r.glibc_needed["2.25"] == 2                              # getrandom: GLIBC_2.25
    if any(d["wheel"].startswith("musl-") for d in audited):
        assert sum(r.musl_needed.values()) == 1


def test_synthetic_scale_matches_the_recount(audited):
    dicts = [json.loads(b) for b in synthetic_lines(audited, 20000)]
    result = aggregate(_lines(dicts), keep_rows=50)
    assert census_counts(result) == recount(dicts)
    assert len(result.samples["mislabeled"]) == 50       # tables are capped, counts are not


def test_parallel_chunks_give_the_serial_census(audited, tmp_path):
    """aggregate_files with 3 processes: the same counts, table rows, rows files (in input
    order) and reject line numbers as one pass over the same lines."""
    src = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    src[0].write_bytes(b"".join(synthetic_lines(audited, 3001, seed=1)) + b"junk\n\n")
    src[1].write_bytes(b"[]\n" + b"".join(synthetic_lines(audited, 997, seed=2)))
    paths = [str(p) for p in src]
    serial_rows, parallel_rows = tmp_path / "s.jsonl", tmp_path / "p.jsonl"
    with serial_rows.open("wb") as f:
        serial = aggregate(read_lines(paths), RowSink({"wheels": f}), keep_rows=1500)
    parallel = aggregate_files(paths, 3, {"wheels": str(parallel_rows)}, keep_rows=1500)
    assert parallel == serial
    assert [(r.source, r.lineno) for r in parallel.rejects] == [(paths[0], 3002), (paths[1], 1)]
    assert parallel_rows.read_bytes() == serial_rows.read_bytes()
    assert len(chunks_of(paths[0], 3)) == 3 and not list(tmp_path.glob("*.part*"))


def test_rejected_lines_are_counted_and_left_out(audited):
    junk = [b"garbage\n", b"[1, 2]\n", json.dumps({**audited[0], "version": 1}).encode() + b"\n",
            b'{"version": 2, "status": "fine", "wheel": "x"}\n']
    lines = _lines(audited) + [InputLine("junk", i, j) for i, j in enumerate(junk, 1)]
    result = aggregate(lines)
    assert result.rejected == 4 and [x.lineno for x in result.rejects] == [1, 2, 3, 4]
    assert census_counts(result) == recount(audited)


def test_an_input_file_that_cannot_be_read_is_one_line_error(tmp_path, capsys):
    rc = cli.main(["report", str(tmp_path / "missing.jsonl"), "--format", "md"], out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == cli.EXIT_UNREADABLE and len(err.splitlines()) == 1
    assert "missing.jsonl" in err


def test_read_lines_reads_stdin_and_skips_blank_lines():
    got = list(read_lines(["-"], stdin=io.BytesIO(b'{"a": 1}\n\n  \n[]\n')))
    assert [(x.source, x.lineno) for x in got] == [("<stdin>", 1), ("<stdin>", 4)]


# ------------------------------------------------------------------ the page

class _Page(HTMLParser):
    """Every start tag and attribute, the text, and each chart bar's tooltip."""

    def __init__(self):
        super().__init__()
        self.tags: Counter = Counter()
        self.attrs: set = set()
        self.text: list = []
        self._in: list = []
        self.tooltips: list = []
        self.table_rows: Counter = Counter()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        self.attrs.update(a for a, _v in attrs)
        self._in.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("id")
        if tag == "tr" and "tbody" in self._in:
            self.table_rows[self._table] += 1

    def handle_endtag(self, tag):
        while self._in and self._in.pop() != tag:
            pass

    def handle_data(self, data):
        self.text.append(data)
        if self._in[-2:] == ["g", "title"]:
            self.tooltips.append(data)


@pytest.fixture(scope="module")
def page(audited, tmp_path_factory):
    d = tmp_path_factory.mktemp("page")
    src = d / "results.jsonl"
    with src.open("wb") as f:
        f.writelines((json.dumps(x) + "\n").encode() for x in audited)
        f.writelines(synthetic_lines(audited, 3000))
        f.write(b"not json\n")
    out = d / "census.html"
    assert cli.main(["report", str(src), "-o", str(out)]) == cli.EXIT_OK
    p = _Page()
    p.feed(out.read_text(encoding="utf-8"))
    return out, p


def test_rows_files_hold_every_wheel(page, audited):
    out, _p = page
    rows = out.with_name("census.wheels.jsonl").read_text().splitlines()
    assert len(rows) == len(audited) + 3000
    mis = out.with_name("census.mislabeled.jsonl").read_text().splitlines()
    assert len(mis) == sum(json.loads(r)["status"] == "mislabeled" for r in rows)


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed (see .ci/run)")
def test_every_bar_is_the_count_jq_finds_in_the_rows_file(page):
    """The tooltip's jq filter, run by jq itself over the linked rows file, finds as many
    wheels as the bar shows (and as many not satisfying as its red part shows)."""
    out, p = page
    rows_file = out.with_name("census.wheels.jsonl")
    assert len(p.tooltips) > 20
    for tip in p.tooltips:
        for n, jq in [(tip.split("\n")[0].rsplit(": ", 1)[1],
                       re.search(r"^rows: jq '(.*)'$", tip, re.MULTILINE).group(1)),
                      *re.findall(r"^not satisfied: (\d+): jq '(.*)'$", tip, re.MULTILINE)]:
            found = subprocess.run(["jq", "-c", jq, str(rows_file)], capture_output=True,
                                   text=True, check=True).stdout.count("\n")
            assert found == int(n), tip


def test_tables_and_cards_show_the_counts(page):
    out, p = page
    rows = [json.loads(r) for r in out.with_name("census.wheels.jsonl").read_text().splitlines()]
    status = Counter(r["status"] for r in rows)
    text = " ".join(p.text)
    for s, label in (("mislabeled", "mislabeled"), ("error", "unreadable")):
        assert f"{status[s]:,} {label}" in re.sub(r"\s+", " ", text)
        assert p.table_rows[f"t-{s}"] == min(status[s], 1000)
    assert p.table_rows["t-projects"] == len({r["project"] for r in rows})
    assert "1 line is not an audit result" in text


def test_input_strings_never_become_markup(page):
    """The hostile wheel and member names appear as text, never as tags or attributes."""
    _out, p = page
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "div",
               "b", "code", "ul", "li", "figure", "figcaption", "small", "svg", "g", "text",
               "rect", "input", "span", "table", "thead", "tbody", "tr", "th", "td", "script"}
    assert set(p.tags) <= allowed and p.tags["script"] == 1 and p.tags["img"] == 0
    assert not any(a.startswith("on") for a in p.attrs)
    assert any(HOSTILE in t for t in p.text)


def test_markdown_escapes_and_counts(audited, tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in audited))
    buf = io.StringIO()
    assert cli.main(["report", str(src), "--format", "md"], out=buf) == cli.EXIT_OK
    md = buf.getvalue()
    assert not re.search(r"(?<!\\)[<>]", md)       # every < and > backslash-escaped (GFM)
    assert "\\<img src=x onerror=\"alert(1)\"\\>" in md
    for line in md.splitlines():
        if line.startswith("|") and "hostile" in line:
            assert line.count(" | ") == line.count("|") - 2      # no cell split by the input
    result = aggregate(_lines(audited))
    for c in all_charts(result):
        for bar in c.bars:
            assert f"| {bar.label.replace('|', chr(92) + '|')} | {bar.value}" in md


def test_html_needs_an_output_file_in_a_directory(tmp_path, capsys):
    assert cli.main(["report", "x.jsonl"]) == cli.EXIT_USAGE
    assert "-o FILE" in capsys.readouterr().err
    src = tmp_path / "r.jsonl"
    src.write_text("")
    assert cli.main(["report", str(src), "-o", str(tmp_path / "no" / "r.html")]) == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not a directory" in err


def test_bar_conditions_match_the_rows_they_count(audited):
    """Each bar's conditions, applied to the rows it was counted from, give its value."""
    result = aggregate(_lines(audited))
    rows = [parse_line(line).to_dict() for line in _lines(audited)]
    for c in all_charts(result):
        for bar in c.bars:
            assert sum(row_matches(r, bar.where) for r in rows) == bar.value, (c.key, bar)


# ------------------------------------------------------------------ a real browser

def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (see .ci/run)")
    return exe


def _browse(page: Path, *mode: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file: URL; console messages are logged to stderr."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", "--window-size=1280,2000", *mode,
           page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _console(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_the_console_check_sees_errors(tmp_path):
    """Without this, the browser test below could pass with a console full of errors."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>null.x = 1;</script></body></html>")
    assert any("Uncaught" in line for line in _console(_browse(bad, "--dump-dom")))


def test_chromium_renders_the_page(page, tmp_path):
    out, _p = page
    dom = _browse(out, "--dump-dom")
    assert _console(dom) == []                 # no script error, no CSP refusal, no fetch
    assert '<body data-ready="1">' in dom.stdout    # the table script ran to its end
    svgs = re.findall(r'<svg class="chart".*?</svg>', dom.stdout, re.DOTALL)
    assert len(svgs) >= 10
    for svg in svgs:
        widths = [float(w) for w in re.findall(r'class="b"[^>]*width="([0-9.]+)"', svg)]
        assert widths and max(widths) > 100            # bars drawn, the longest at scale
    shot = tmp_path / "census.png"
    run = _browse(out, f"--screenshot={shot}")
    assert _console(run) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000   # not a blank page


def test_the_json_fallback_counts_the_same(audited, monkeypatch):
    """Without orjson (an optional extra) the standard json module parses and writes rows."""
    from fastelf import census
    lines = _lines(audited) + [InputLine("t", 999, b"{bad\n")]
    with_default = aggregate(lines)
    monkeypatch.setattr(census, "_loads", json.loads)
    monkeypatch.setattr(census, "_dumps", lambda obj: json.dumps(obj).encode())
    sink = io.BytesIO()
    fallback = aggregate(lines, RowSink({"wheels": sink}))
    # the two parsers word their errors differently: rejects are compared by place
    assert [r[:2] for r in fallback.rejects] == [r[:2] for r in with_default.rejects] == \
        [("t", 999)]
    assert dataclasses.replace(fallback, rejects=()) == dataclasses.replace(with_default,
                                                                           rejects=())
    assert [json.loads(x)["wheel"] for x in sink.getvalue().splitlines()] == \
        [d["wheel"] for d in audited]
