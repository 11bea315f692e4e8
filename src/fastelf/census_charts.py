"""The charts of a census as data: what each bar counts and which rows it counts.

Both renderers (HTML and Markdown) draw these, so the page and the
Markdown never disagree.  Every bar carries ``where``: the (field, value)
conditions a row of the rows files must meet to be counted by it, so the
rows behind any bar can be selected again (``jq`` text in :func:`jq_select`).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .census import STATUSES, CensusResult

TOP = 25        # bars in a "most common" chart; the full counts are in the rows files


class Bar(NamedTuple):
    """One bar: ``value`` rows meet every ``where`` condition; ``part`` of them
    (drawn in the warning colour) also meet ``part_where``."""

    label: str
    value: int
    where: tuple[tuple[str, str | None], ...]
    part: int | None = None
    part_where: tuple[tuple[str, str | None], ...] = ()


class Chart(NamedTuple):
    """A titled list of bars; ``note`` says what is counted."""

    key: str
    title: str
    note: str
    bars: tuple[Bar, ...]
    total: int | None = None        # distinct values before the TOP cut


LIST_FIELDS = frozenset(("claimed", "unsatisfied", "claim_failures", "external", "grafted",
                         "problems"))


def jq_select(where: tuple[tuple[str, str | None], ...]) -> str:
    """The ``jq`` filter that selects a bar's rows from the wheels rows file."""
    conds = []
    for f, v in where:
        lit = json.dumps(v)
        conds.append(f"any(.{f}[]; . == {lit})" if f in LIST_FIELDS else f".{f} == {lit}")
    return f"select({' and '.join(conds)})"


def row_matches(row: dict, where: tuple[tuple[str, str | None], ...]) -> bool:
    """Does a row (a parsed line of the rows file) meet every condition?"""
    return all((v in row[f]) if f in LIST_FIELDS else row[f] == v for f, v in where)


def _top(key: str, title: str, note: str, counts: dict[str, int], field: str,
         limit: int = TOP) -> Chart:
    bars = tuple(Bar(k, n, ((field, k),)) for k, n in list(counts.items())[:limit])
    return Chart(key, title, note, bars, len(counts))


def _ordered(key: str, title: str, note: str, counts: dict[str, int], field: str) -> Chart:
    """All values, in the order given (e.g. by version), not cut."""
    return Chart(key, title, note, tuple(Bar(k, n, ((field, k),)) for k, n in counts.items()),
                 len(counts))


def status_chart(r: CensusResult) -> Chart:
    return Chart("status", "Verdicts", "wheels by audit status",
                 tuple(Bar(s, r.status[s], (("status", s),)) for s in STATUSES))


def best_tag_charts(r: CensusResult) -> list[Chart]:
    """One chart per (architecture, libc): the best tag each wheel satisfies."""
    charts = []
    for (arch, libc), tags in r.best_tags.items():
        lc = None if libc == "none" else libc      # census groups a missing libc as "none"
        bars = tuple(Bar(t, n, (("arch", arch), ("libc", lc), ("best_tag", t)))
                     for t, n in tags.items())
        charts.append(Chart(f"best-{arch}-{libc}", f"Best tag: {arch}, {libc}",
                            f"{sum(tags.values())} audited wheels", bars, len(tags)))
    return charts


def claims_by_tag_chart(r: CensusResult) -> Chart:
    bars = tuple(Bar(t, sat + unsat, (("claimed", t),), unsat, (("unsatisfied", t),))
                 for t, (sat, unsat) in list(r.claims_by_tag.items())[:TOP])
    return Chart("claims-by-tag", "Claimed tags: satisfied and not",
                 "wheels claiming each tag; the red part does not satisfy it",
                 bars, len(r.claims_by_tag))


def all_charts(r: CensusResult) -> list[Chart]:
    """Every chart of the page, in page order."""
    return [
        status_chart(r),
        *best_tag_charts(r),
        _top("claims", "Claimed vs satisfied", "audited wheels that claim a Linux tag",
             r.claims, "claim_state"),
        claims_by_tag_chart(r),
        _top("claim-failures", "Why claims fail",
             "mislabeled wheels by kind of failure (a wheel may have several)",
             r.claim_failures, "claim_failures"),
        _ordered("glibc", "glibc version needed",
                 "newest GLIBC_ symbol version the ELF files ask for", r.glibc_needed,
                 "glibc_needed"),
        _ordered("musl", "musl version needed",
                 "oldest musllinux policy satisfied", r.musl_needed, "musl_needed"),
        _top("external", "Most common external libraries",
             "needed, not in the wheel, not allowed by the oldest policy", r.external,
             "external"),
        _top("grafted", "Most common grafted libraries",
             "files in <project>.libs/ (hash removed from the name)", r.grafted, "grafted"),
        _top("problems", "Problems by kind", "wheels with each kind of problem", r.problems,
             "problems"),
    ]
