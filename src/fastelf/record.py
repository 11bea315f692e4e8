"""Verify a wheel's RECORD against the wheel's actual members.

RECORD (``<name>-<version>.dist-info/RECORD``) is a CSV file of
``path,algorithm=urlsafe-b64-digest,size`` rows, one per file in the wheel;
only RECORD itself (and the signature files RECORD.jws / RECORD.p7s) may
go without a hash.  Nothing in it is trusted: every member is read whole
from the zip (streamed, so memory stays small; CRC-32 and size checked),
every member it lists is hashed and compared, members it does not list and
rows naming absent members are reported, and a RECORD that is not UTF-8 CSV
is reported rather than half-read.  md5 and sha1 are
refused as too weak (as the wheel specification says).

Problems with RECORD are returned in a :class:`RecordReport`.  A member that
cannot be read at all (corrupt data, CRC mismatch, overlapping or truncated)
makes the wheel unreadable: that raises :class:`~fastelf.errors.WheelError`,
and a breached limit :class:`~fastelf.errors.LimitError`, naming the member.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import LimitError
from .wheel import WheelReader, check_member_name

_WEAK = frozenset(("md5", "sha1"))
_SIZE_RE = re.compile(r"^[0-9]{1,20}$")
_MAX_LISTED = 50        # per category, in the text form


@dataclass
class RecordReport:
    """What verifying RECORD found.  ``ok`` when there is nothing to report."""

    record: str | None = None            # the RECORD member's name
    checked: int = 0                     # members whose digest matched
    mismatched: dict[str, str] = field(default_factory=dict)   # member -> reason
    unlisted: list[str] = field(default_factory=list)     # members RECORD does not list
    missing: list[str] = field(default_factory=list)      # RECORD rows naming no member
    errors: list[str] = field(default_factory=list)       # RECORD itself is unusable/odd

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.unlisted or self.missing or self.errors)

    def problems(self, limit: int = _MAX_LISTED) -> list[str]:
        """One line per problem (``limit`` caps the lines per category)."""
        out = list(self.errors)
        items = sorted(self.mismatched.items())
        out += [f"{m}: {why}" for m, why in items[:limit]]
        if len(items) > limit:
            out.append(f"... and {len(items) - limit} more mismatched members")
        for what, names in (("not listed in RECORD", self.unlisted),
                            ("listed in RECORD but not in the wheel", self.missing)):
            out += [f"{m}: {what}" for m in names[:limit]]
            if len(names) > limit:
                out.append(f"... and {len(names) - limit} more {what}")
        return out

    def to_dict(self) -> dict[str, object]:
        return {"record": self.record, "ok": self.ok, "checked": self.checked,
                "mismatched": dict(sorted(self.mismatched.items())),
                "unlisted": self.unlisted, "missing": self.missing, "errors": self.errors}


def b64_digest(digest: bytes) -> str:
    """A digest as RECORD writes it: urlsafe base64 without padding."""
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def record_files(info: str) -> set[str]:
    """RECORD and its signature files in the dist-info directory ``info``."""
    return {f"{info}/RECORD", f"{info}/RECORD.jws", f"{info}/RECORD.p7s"}


def find_record(names: Iterable[str]) -> list[str]:
    """Member names of the form ``<top>.dist-info/RECORD`` (normally exactly one)."""
    return sorted(n for n in names
                  if n.count("/") == 1 and n.endswith(".dist-info/RECORD")
                  and not n.startswith(".dist-info/"))


def parse_record_text(text: str, report: RecordReport) -> dict[str, tuple[str, str]]:
    """RECORD rows as {path: (hash, size)}; malformed rows go to ``report.errors``."""
    rows: dict[str, tuple[str, str]] = {}
    try:
        for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
            if not row:
                continue
            if len(row) != 3:
                report.errors.append(f"RECORD line {lineno} has {len(row)} fields, not 3")
                if not row[0]:
                    continue
                row = (row + ["", ""])[:3]
            path, digest, size = row
            if path in rows:
                report.errors.append(f"RECORD lists {path!r} more than once")
                continue
            why = check_member_name(path)
            if why:
                report.errors.append(f"RECORD line {lineno}: {why}: {path!r}")
            rows[path] = (digest, size)
    except csv.Error as e:
        report.errors.append(f"RECORD is not valid CSV: {e}")
    return rows


def _hasher(digest_field: str) -> tuple[hashlib._Hash | None, str]:
    """(hashlib object, expected urlsafe-b64 digest) or (None, reason)."""
    algo, sep, value = digest_field.partition("=")
    algo = algo.strip().lower()
    if not sep or not value:
        return None, f"malformed hash {digest_field[:80]!r} (expected algorithm=digest)"
    if algo in _WEAK:
        return None, f"hash algorithm {algo} is too weak (the wheel spec forbids it)"
    if algo not in hashlib.algorithms_guaranteed or algo.startswith("shake_"):
        return None, f"unknown hash algorithm {algo[:40]!r}"
    return hashlib.new(algo), value.rstrip("=")


def verify_record(reader: WheelReader) -> RecordReport:
    """Check every member against RECORD; see the module docstring."""
    report = RecordReport()
    names = [m.name for m in reader.members]
    records = find_record(names)
    if not records:
        report.errors.append("the wheel has no .dist-info/RECORD file")
        return report
    if len(records) > 1:
        report.errors.append("the wheel has several RECORD files: " + ", ".join(records))
        return report
    record = report.record = records[0]
    info = record.rsplit("/", 1)[0]
    exempt = record_files(info)

    rec_member = reader.member(record)
    if rec_member.size > reader.limits.max_record_size:
        raise LimitError(reader.path, f"{record} is {rec_member.size} bytes, over the limit "
                                      f"of {reader.limits.max_record_size}")
    raw = bytes(reader.read(rec_member))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        report.errors.append(f"RECORD is not valid UTF-8 (byte {e.start})")
        return report
    if text.startswith("\ufeff"):
        text = text[1:]
    rows = parse_record_text(text, report)

    for m in reader.members:
        if m.is_dir:
            continue
        row = rows.get(m.name)
        if m.name in exempt or row is None:
            if m.name not in exempt:
                report.unlisted.append(m.name)
            for _chunk in reader.iter_chunks(m):      # still read it all: size and CRC-32
                pass
            continue
        digest, size = row
        if not digest:
            report.mismatched[m.name] = "listed in RECORD without a hash"
            continue
        if size and not _SIZE_RE.match(size):
            report.mismatched[m.name] = f"RECORD gives a malformed size {size[:40]!r}"
            continue
        h, expected = _hasher(digest)
        if h is None:
            report.mismatched[m.name] = expected
            continue
        got = 0
        for chunk in reader.iter_chunks(m):
            h.update(chunk)
            got += len(chunk)
        actual = b64_digest(h.digest())
        if actual != expected:
            report.mismatched[m.name] = (f"{h.name} digest differs from RECORD "
                                         f"(RECORD {expected[:60]}, actual {actual})")
        elif size and int(size) != got:
            report.mismatched[m.name] = f"size differs from RECORD (RECORD {size}, actual {got})"
        else:
            report.checked += 1
    present = set(names)
    report.missing = sorted(p for p in rows if p not in present and p not in exempt)
    return report
