"""``fastelf check``: everything a Linux wheel must pass before upload, in one pass.

Each problem is a :class:`Finding` (kind, file, reason).  The checks, by kind:

* ``platform-tag``: a platform tag in the file name that the wheel does not
  satisfy (what ``fastelf audit`` decides).
* ``exec-stack``: an ELF file that asks for an executable stack.  glibc 2.41
  and later refuse to ``dlopen`` such a library (older glibc silently makes
  every thread stack of the process executable).
* ``abi3``: in a ``cp3X-abi3`` wheel, a libpython symbol outside the stable
  ABI of 3.X (CPython's own manifest, ``abi3.json``), a NEEDED libpython, or
  an extension file name that only one Python version loads.
* ``zip``, ``wheel-name``, ``wheel-tags``, ``dist-info``, ``metadata``,
  ``record``: the rules PyPI enforces at upload (or that pip enforces at
  install): no data descriptors, no trailing or prepended data, local headers
  that agree with the central directory, only stored/deflate, WHEEL ``Tag:``
  lines equal to the file name's tags, a complete and correct RECORD, a valid
  and normalized (PEP 427/491) file name, a ``.dist-info`` directory and
  METADATA that match the file name's name and version.
* ``soname``, ``rpath``, ``extension-libc``: a library whose SONAME is not its
  file name (NEEDED entries name the SONAME, so the file is never found), an
  RPATH/RUNPATH entry that searches outside the wheel, an extension whose
  file-name platform (``x86_64-linux-gnu``, ``-musl``) disagrees with the ELF.

Nothing is written; the zip structure is read here leniently, with the
record layouts of :mod:`fastelf.zipformat` that the strict reader in
:mod:`fastelf.wheel` uses and the same choice of end record (read-only, no
member data), so it reports, one finding per rule, what that reader would
refuse outright at the first problem.
"""

from __future__ import annotations

import email.message
import email.parser
import json
import os
import posixpath
import re
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple

from packaging.tags import Tag, parse_tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from . import zipformat as zf
from ._elf import STB_WEAK
from .errors import FastElfError, WheelError
from .ldpaths import split_path
from .wheel import DEFAULT_LIMITS, Limits, WheelReader
from .wheelname import parse_wheel_name

if TYPE_CHECKING:
    from .audit import ElfInfo, WheelSource
    from .record import RecordReport

_MAX_NAMED = 5          # members or symbols named in one finding
_MAX_META = 1 << 20     # bytes read of WHEEL / METADATA


class Kind(str, Enum):
    """What rule a finding breaks; the JSON ``kind`` is its value."""

    PLATFORM_TAG = "platform-tag"
    EXEC_STACK = "exec-stack"
    ABI3 = "abi3"
    ZIP = "zip"
    WHEEL_NAME = "wheel-name"
    WHEEL_TAGS = "wheel-tags"
    DIST_INFO = "dist-info"
    METADATA = "metadata"
    RECORD = "record"
    SONAME = "soname"
    RPATH = "rpath"
    EXTENSION_LIBC = "extension-libc"
    UNREADABLE = "unreadable"


class Finding(NamedTuple):
    """One problem: ``file`` is a member path, or the wheel's file name for wheel-wide ones."""

    kind: Kind
    file: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class CheckReport:
    """Every finding on one wheel; ``ok`` when there is none."""

    path: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "ok": self.ok,
                "problems": [f.to_dict() for f in self.findings]}


def _some(items: Sequence[str], limit: int = _MAX_NAMED) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# ------------------------------------------------------------------ ELF checks

# glibc's DEFAULT_STACK_PERMS (sysdeps/<arch>/stackinfo.h) lacks PF_X only on
# these arches; everywhere else (x86_64, i686, armv7l, ppc64/ppc64le, s390x)
# an object without PT_GNU_STACK gets an executable stack.  riscv64 and
# loongarch64 are treated as executable too: when unsure, report.
_NONEXEC_STACK_DEFAULT = frozenset(("aarch64",))


def exec_stack_findings(infos: Iterable[ElfInfo]) -> list[Finding]:
    """ELF files whose stack glibc would make executable (explicitly or by default)."""
    out = []
    for i in infos:
        if i.arch is None:
            continue
        if i.exec_stack:
            why = "asks for an executable stack (PT_GNU_STACK has PF_X)"
        elif i.exec_stack is None and i.arch not in _NONEXEC_STACK_DEFAULT:
            why = (f"has no PT_GNU_STACK header, so it gets the {i.arch} default, "
                   "an executable stack")
        else:
            continue
        if i.interpreter:           # a program: the kernel sets up its stack
            effect = "the kernel runs the program with an executable stack"
        else:
            effect = ("glibc >= 2.41 refuses to dlopen it, older glibc makes every thread "
                      "stack executable")
        out.append(Finding(Kind.EXEC_STACK, i.path, f"{why}: {effect} (link with "
                           "-Wl,-z,noexecstack)"))
    return out


@lru_cache(maxsize=1)
def stable_abi() -> dict[str, tuple[int, int]]:
    """{symbol: (3, minor) it entered the stable ABI}, from abi3.json (tools/gen_abi3.py)."""
    text = resources.files(__package__).joinpath("abi3.json").read_text()
    table = json.loads(text)["added"]
    return {name: _pyver(v) for v, names in table.items() for name in names}


def _pyver(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def abi3_floor(wheel_name: str) -> tuple[int, int] | None:
    """The oldest Python a ``cp3X-abi3`` wheel claims to run on, or None if not abi3.

    Several abi3 tags (``cp38.cp39-abi3``) promise the oldest of them.
    """
    try:
        tags = parse_wheel_filename(os.path.basename(wheel_name))[3]
    except InvalidWheelFilename:
        return None
    floors = [(3, int(m.group(1))) for t in tags if t.abi == "abi3"
              for m in [re.fullmatch(r"cp3(\d+)", t.interpreter)] if m]
    return min(floors) if floors else None


_PY_SYMBOL = re.compile(r"_?Py[A-Z_]")
_VERSIONED_EXT = re.compile(r"\.cpython-3\d+[a-z]*-[^./]*\.so$")


def abi3_findings(infos: Iterable[ElfInfo], wheel_name: str) -> list[Finding]:
    """What breaks the stable ABI promise of a ``cp3X-abi3`` wheel (nothing if not abi3).

    Symbols are CPython's when they start ``Py``/``_Py`` followed by a capital or
    underscore (how CPython names its API); weak imports are optional and skipped.
    """
    floor = abi3_floor(wheel_name)
    if floor is None:
        return []
    table = stable_abi()
    want = f"{floor[0]}.{floor[1]}"
    out = []
    for i in infos:
        libpython = [lib for lib in i.needed if lib.startswith("libpython")]
        if libpython:
            out.append(Finding(Kind.ABI3, i.path, f"links {_some(libpython)}: an abi3 "
                               "extension must not link libpython (it ties the file to one "
                               "Python build)"))
        if i.extension and _VERSIONED_EXT.search(i.path):
            out.append(Finding(Kind.ABI3, i.path, "the file name's .cpython-3XY suffix "
                               "makes only that Python version import it; abi3 extensions "
                               "end in .abi3.so"))
        missing, newer = [], []
        for name, _ver, _lib, bind, _typ in i.imports:
            if bind == STB_WEAK or not _PY_SYMBOL.match(name):
                continue
            added = table.get(name)
            if added is None:
                missing.append(name)
            elif added > floor:
                newer.append(f"{name} ({added[0]}.{added[1]})")
        if missing:
            out.append(Finding(Kind.ABI3, i.path, f"uses symbols outside the stable ABI: "
                               f"{_some(sorted(set(missing)))}"))
        if newer:
            out.append(Finding(Kind.ABI3, i.path, f"uses symbols newer than the wheel's "
                               f"abi3 floor {want}: {_some(sorted(set(newer)))}"))
    return out


def soname_findings(infos: Iterable[ElfInfo]) -> list[Finding]:
    """Libraries whose SONAME differs from their file name.

    A program that links the library records the SONAME as its NEEDED entry,
    and ld.so then looks for a file of that name: a file named otherwise is
    never found.  Extension modules are loaded by path, so theirs do not count.
    """
    out = []
    for i in infos:
        base = posixpath.basename(i.path)
        if i.soname is not None and not i.extension and i.soname != base:
            out.append(Finding(Kind.SONAME, i.path, f"SONAME {i.soname} does not match "
                               f"the file name {base}: libraries linked against it look "
                               f"for {i.soname}"))
    return out


def rpath_findings(infos: Iterable[ElfInfo]) -> list[Finding]:
    """RPATH/RUNPATH entries that search outside the installed wheel."""
    from .audit import install_path, wheel_dir_of
    out = []
    for i in infos:
        origin = posixpath.dirname(install_path(i.path))
        for tag, value in (("RPATH", i.rpath), ("RUNPATH", i.runpath)):
            outside = [e for e in dict.fromkeys(split_path(value))
                       if wheel_dir_of(e, origin) is None]
            if outside:
                out.append(Finding(Kind.RPATH, i.path, f"{tag} searches outside the wheel: "
                                   f"{_some(outside)} (directories of the installing "
                                   "machine or of other packages)"))
    return out


# CPython's multiarch triplets (the platform part of an extension's file name)
_TRIPLET_ARCH = {"x86_64": "x86_64", "i386": "i686", "i686": "i686", "aarch64": "aarch64",
                 "arm": "armv7l", "powerpc64le": "ppc64le", "powerpc64": "ppc64",
                 "s390x": "s390x", "riscv64": "riscv64", "loongarch64": "loongarch64"}
_EXT_PLATFORM = re.compile(r"\.cpython-[^.-]+-([a-z0-9_]+)-linux-(gnu|musl)[a-z0-9_]*\.so$")


def extension_platform_findings(infos: Iterable[ElfInfo]) -> list[Finding]:
    """Extensions whose file-name platform disagrees with the ELF file's libc or arch.

    Python imports an extension only when the suffix matches its own
    (``importlib.machinery.EXTENSION_SUFFIXES``): a musl Python skips a
    ``-linux-gnu`` file, so the wheel installs but its module is missing.
    """
    out = []
    for i in infos:
        m = _EXT_PLATFORM.search(i.path)
        if not (i.extension and m):
            continue
        arch, libc = _TRIPLET_ARCH.get(m.group(1)), "glibc" if m.group(2) == "gnu" else "musl"
        if i.libc is not None and i.libc != libc:
            out.append(Finding(Kind.EXTENSION_LIBC, i.path, f"named for {libc} "
                               f"(linux-{m.group(2)}) but linked against {i.libc}"))
        if arch is not None and i.arch is not None and arch != i.arch:
            out.append(Finding(Kind.EXTENSION_LIBC, i.path, f"named for {m.group(1)} but "
                               f"is an {i.arch} ELF file"))
    return out


def elf_findings(infos: Sequence[ElfInfo], wheel_name: str) -> list[Finding]:
    """Every ELF-level check on the wheel's parsed ELF members."""
    return (exec_stack_findings(infos) + abi3_findings(infos, wheel_name)
            + soname_findings(infos) + rpath_findings(infos)
            + extension_platform_findings(infos))


# ------------------------------------------------------------------ zip layout

# local header flags that must equal the central entry's: descriptor, encryption, UTF-8 name
_LOCAL_FLAGS = zf.FLAG_DESCRIPTOR | zf.FLAG_ENCRYPTED | zf.FLAG_UTF8


class _Bytes:
    """Random access to the wheel's bytes: a path (pread) or an in-memory buffer."""

    def __init__(self, source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> None:
        self._fd: int | None = None
        if isinstance(source, (str, os.PathLike)):
            # non-blocking and regular files only: a FIFO must not hang the check
            self._fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(self._fd)
                self._fd = None
                raise ValueError("not a regular file")
            self.size = st.st_size
        else:
            self._buf = memoryview(source).cast("B")
            self.size = len(self._buf)

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise ValueError(f"{n} bytes at offset {off} lie outside the file")
        if self._fd is not None:
            return os.pread(self._fd, n, off)
        return bytes(self._buf[off:off + n])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class _Entry(NamedTuple):
    name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    offset: int


def zip_findings(source: WheelSource, display: str = "") -> list[Finding]:
    """PyPI's zip rules, checked on the raw layout of ``source`` (a path or bytes).

    Anything else (a file object) is not checked here: [] is returned.
    Members are located as Python's ``zipfile`` locates them (the last end of
    central directory record, offsets shifted by any prepended bytes).
    """
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return []
    where = display or (os.path.basename(os.fspath(source))
                        if isinstance(source, (str, os.PathLike)) else "<bytes>")
    try:
        data = _Bytes(source)
    except (OSError, ValueError) as e:
        return [Finding(Kind.ZIP, where, f"cannot read: {getattr(e, 'strerror', None) or e}")]
    try:
        return _zip_layout_findings(data, where)
    except (ValueError, struct.error) as e:
        return [Finding(Kind.ZIP, where, f"zip structure unreadable: {e}")]
    finally:
        data.close()


def _end_record_at(data: _Bytes) -> int | None:
    """Where zipfile finds the end record (as :class:`WheelReader` does), or None."""
    pos = zf.find_end_record(data.size, lambda start, stop: data.read(start, stop - start))
    if pos < 0 or pos + zf.END_RECORD_SIZE > data.size:
        return None
    return pos


def _zip_layout_findings(data: _Bytes, where: str) -> list[Finding]:
    out: list[Finding] = []
    eocd = _end_record_at(data)
    if eocd is None:
        return [Finding(Kind.ZIP, where, "no end of central directory record")]
    rec = zf.EndRecord.unpack(data.read(eocd, zf.END_RECORD_SIZE))
    count, cd_size, cd_off = rec.entries, rec.cd_size, rec.cd_offset
    end = eocd + zf.END_RECORD_SIZE + rec.comment_length
    if end < data.size:
        out.append(Finding(Kind.ZIP, where, f"{data.size - end} bytes of trailing data after "
                           "the end of central directory record"))
    elif end > data.size:
        out.append(Finding(Kind.ZIP, where, "the archive comment runs past the end of the file"))
    cd_end = eocd
    loc = eocd - zf.ZIP64_LOCATOR_SIZE
    if loc >= 0 and data.read(loc, 4) == zf.ZIP64_LOCATOR_SIG:
        locator = zf.Zip64Locator.unpack(data.read(loc, zf.ZIP64_LOCATOR_SIZE))
        head = data.read(locator.end_offset, zf.ZIP64_END_RECORD_SIZE)
        if head[:4] != zf.ZIP64_END_SIG:
            return out + [Finding(Kind.ZIP, where, "zip64 end record missing")]
        z64 = zf.Zip64EndRecord.unpack(head)
        count, cd_size, cd_off = z64.entries, z64.cd_size, z64.cd_offset
        cd_end = loc - zf.ZIP64_END_RECORD_SIZE
    shift = cd_end - cd_size - cd_off           # bytes prepended to the archive
    if shift > 0:
        out.append(Finding(Kind.ZIP, where, f"{shift} bytes of data before the first "
                           "member (prepended to the archive)"))
    elif shift < 0:
        return out + [Finding(Kind.ZIP, where, "central directory size and offset are "
                              "inconsistent")]
    entries = _central_entries(data, cd_off + shift, count)
    return out + _entry_findings(data, entries, shift, where)


def _central_entries(data: _Bytes, off: int, count: int) -> list[_Entry]:
    entries = []
    head = zf.CENTRAL_HEADER_SIZE
    for _ in range(count):
        raw = data.read(off, head)
        if raw[:4] != zf.CENTRAL_SIG:
            raise ValueError(f"bad central directory entry at offset {off}")
        h = zf.CentralHeader.unpack(raw)
        name = data.read(off + head, h.name_length)
        extra = data.read(off + head + h.name_length, h.extra_length)
        usize, csize, hoff = _zip64_sizes(extra, h.size, h.compressed_size, h.header_offset)
        entries.append(_Entry(name, h.flags, h.method, h.crc, csize, usize, hoff))
        off += h.total_length
    return entries


def _zip64_sizes(extra: bytes, usize: int, csize: int, hoff: int) -> tuple[int, ...]:
    """Sizes and offset from the first zip64 extra field, for the saturated fields.

    Lenient where the reader is strict (it refuses the wheel): fields past a
    short zip64 field stay saturated."""
    field = next((f for f in zf.walk_extra(extra) if f.tag == zf.ZIP64_EXTRA_TAG), None)
    if field is None:
        return usize, csize, hoff
    return zf.resolve_zip64((usize, csize, hoff), zf.zip64_extra_values(extra, field))


def _entry_findings(data: _Bytes, entries: list[_Entry], shift: int,
                    where: str) -> list[Finding]:
    descriptors, methods, mismatched = [], [], []
    for e in entries:
        name = e.name.decode("utf-8" if e.flags & zf.FLAG_UTF8 else "cp437", "replace")
        if e.flags & zf.FLAG_DESCRIPTOR:
            descriptors.append(name)
        if e.method not in (zf.STORED, zf.DEFLATED):
            methods.append(f"{name} (method {e.method})")
        why = _local_mismatch(data, e, shift)
        if why:
            mismatched.append(f"{name} ({why})")
    out = []
    if descriptors:
        out.append(Finding(Kind.ZIP, where, "members written with data descriptors "
                           f"(PyPI rejects them): {_some(descriptors)}"))
    if methods:
        out.append(Finding(Kind.ZIP, where, "members compressed with a method other than "
                           f"stored or deflate: {_some(methods)}"))
    if mismatched:
        out.append(Finding(Kind.ZIP, where, "local headers disagree with the central "
                           f"directory: {_some(mismatched)}"))
    return out


def _local_mismatch(data: _Bytes, e: _Entry, shift: int) -> str | None:
    """Why the local header of ``e`` disagrees with its central entry, or None."""
    raw = data.read(e.offset + shift, zf.LOCAL_HEADER_SIZE)
    if raw[:4] != zf.LOCAL_SIG:
        return "no local header at its offset"
    h = zf.LocalHeader.unpack(raw)
    if data.read(e.offset + shift + zf.LOCAL_HEADER_SIZE, h.name_length) != e.name:
        return "different name"
    if h.method != e.method:
        return "different compression method"
    if (h.flags ^ e.flags) & _LOCAL_FLAGS:
        return "different flags"
    if h.flags & zf.FLAG_DESCRIPTOR:
        return None                        # sizes are in the descriptor (reported above)
    if h.crc != e.crc:
        return "different CRC-32"
    csize, usize = h.compressed_size, h.size
    if (csize != zf.SATURATED_32 and csize != e.csize
            or usize != zf.SATURATED_32 and usize != e.usize):
        return "different sizes"
    return None


# ------------------------------------------------------------------ wheel metadata

def name_findings(wheel_name: str) -> list[Finding]:
    """The file name: valid (as pip parses it), escaped (PEP 427/491) and with a
    normalized (PEP 440) version.  Upper case is not reported: the spec asks
    for lower case, but installers and PyPI compare names case-folded."""
    base = os.path.basename(wheel_name)
    try:
        parse_wheel_filename(base)
    except InvalidWheelFilename as e:
        return [Finding(Kind.WHEEL_NAME, base, f"not a valid wheel file name: {e}")]
    written = parse_wheel_name(base)    # packaging accepted it; the parts as written
    name, version = written.distribution, written.version
    out = []
    escaped = re.sub(r"[-_.]+", "_", name)
    if name != escaped:         # case is left alone: pip and PyPI compare names folded
        out.append(Finding(Kind.WHEEL_NAME, base, f"the name {name!r} is not escaped "
                           f"(PEP 491: each run of -_. becomes one _): {escaped!r}"))
    try:
        normal = str(Version(version))
    except InvalidVersion:
        normal = version
    if normal != version:
        out.append(Finding(Kind.WHEEL_NAME, base, f"the version {version!r} is not "
                           f"normalized (PEP 440): {normal!r}"))
    return out


def dist_info_of(names: Iterable[str]) -> list[str]:
    """The top-level ``*.dist-info`` directories among member names."""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    return sorted(t for t in tops if t.endswith(".dist-info"))


def metadata_findings(reader: WheelReader, wheel_name: str) -> list[Finding]:
    """The ``.dist-info`` directory, WHEEL and METADATA against the file name."""
    base = os.path.basename(wheel_name)
    try:
        name, version, _build, tags = parse_wheel_filename(base)
    except InvalidWheelFilename:
        return []           # reported by name_findings
    infos = dist_info_of(m.name for m in reader.members)
    if len(infos) != 1:
        what = "no .dist-info directory" if not infos else \
            "several .dist-info directories: " + _some(infos)
        return [Finding(Kind.DIST_INFO, base, what)]
    info = infos[0]
    out = []
    dname, _, dver = info[:-len(".dist-info")].partition("-")
    if canonicalize_name(dname) != name or not _same_version(dver, version):
        out.append(Finding(Kind.DIST_INFO, info, f"does not match the file name's "
                           f"{name} {version}"))
    out += _wheel_file_findings(reader, f"{info}/WHEEL", tags)
    out += _metadata_file_findings(reader, f"{info}/METADATA", name, version)
    return out


def _same_version(text: str, version: Version) -> bool:
    try:
        return Version(text) == version
    except InvalidVersion:
        return False


def _headers(reader: WheelReader, member: str) -> email.message.Message | str:
    """The RFC 822 headers of a small member, or a reason it has none."""
    if member not in reader:
        return "missing"
    m = reader.member(member)
    if m.size > _MAX_META:
        return f"larger than {_MAX_META} bytes"
    try:
        text = bytes(reader.read(m)).decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    except FastElfError as e:       # corrupt member: a finding here, not an audit error
        return e.reason if isinstance(e, WheelError) else str(e)
    return email.parser.HeaderParser().parsestr(text)


def _wheel_file_findings(reader: WheelReader, member: str,
                         tags: frozenset[Tag]) -> list[Finding]:
    msg = _headers(reader, member)
    if isinstance(msg, str):
        return [Finding(Kind.WHEEL_TAGS, member, msg)]
    if not msg.get("Wheel-Version"):
        return [Finding(Kind.WHEEL_TAGS, member, "no Wheel-Version field")]
    declared: set[Tag] = set()
    for line in msg.get_all("Tag") or []:
        declared |= parse_tag(line.strip())
    if declared != set(tags):
        extra = sorted(map(str, declared - tags))
        lacking = sorted(map(str, tags - declared))
        parts = ([f"not in the file name: {_some(extra)}"] if extra else []) + \
                ([f"missing: {_some(lacking)}"] if lacking else [])
        return [Finding(Kind.WHEEL_TAGS, member, "Tag lines differ from the file name's "
                        "tags (" + "; ".join(parts) + ")")]
    return []


def _metadata_file_findings(reader: WheelReader, member: str, name: str,
                            version: Version) -> list[Finding]:
    msg = _headers(reader, member)
    if isinstance(msg, str):
        return [Finding(Kind.METADATA, member, msg)]
    mname, mver = msg.get("Name") or "", msg.get("Version") or ""
    if canonicalize_name(mname) != name or not _same_version(mver, version):
        return [Finding(Kind.METADATA, member, f"Name/Version {mname} {mver} do not match "
                        f"the file name's {name} {version}")]
    return []


def record_findings(report: RecordReport) -> list[Finding]:
    """RECORD problems (PyPI emails the maintainers about a RECORD mismatch)."""
    where = report.record or "RECORD"
    return [Finding(Kind.RECORD, where, p) for p in report.problems(limit=_MAX_NAMED)]


def audit_findings(source: WheelSource, reader: WheelReader, infos: Sequence[ElfInfo],
                   wheel_name: str) -> list[Finding]:
    """The findings ``audit`` adds to its result (all but platform tags and RECORD)."""
    named = wheel_name != "<bytes>"
    out = zip_findings(source, os.path.basename(wheel_name))
    if named:
        out += name_findings(wheel_name) + metadata_findings(reader, wheel_name)
    return out + elf_findings(infos, wheel_name if named else "")


# ------------------------------------------------------------------ the verb

def check_wheel(source: WheelSource, *, filename: str | None = None,
                limits: Limits = DEFAULT_LIMITS) -> CheckReport:
    """Run every check on one wheel (a path, or bytes with ``filename``).

    A wheel that cannot be read at all gives an ``unreadable`` finding, after
    whatever the zip-layout checks can say about why.
    """
    from .audit import judge, read_elf_infos
    from .record import verify_record

    path = os.fsdecode(os.fspath(source)) if isinstance(source, (str, os.PathLike)) \
        else (filename or "<bytes>")
    name = filename or os.path.basename(path)
    try:
        with WheelReader(source, limits, name=path) as reader:
            infos = read_elf_infos(reader)
            record = verify_record(reader)
            findings = audit_findings(source, reader, infos, name)
    except FastElfError as e:
        reason = e.reason if isinstance(e, WheelError) else str(e)
        return CheckReport(path, tuple(zip_findings(source, os.path.basename(name))
                                       + [Finding(Kind.UNREADABLE, name, reason)]))
    result = judge(infos, name, path)
    tags = [Finding(Kind.PLATFORM_TAG, os.path.basename(name), f"claims {tag}: {why}")
            for tag, why in result.unsatisfied_claims.items()]
    if result.error:
        tags.append(Finding(Kind.PLATFORM_TAG, os.path.basename(name), result.error))
    return CheckReport(path, tuple(tags + findings + record_findings(record)))
