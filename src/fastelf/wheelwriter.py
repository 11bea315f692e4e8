"""Write a modified copy of a wheel, atomically and reproducibly.

Unchanged members are copied as their compressed bytes (no inflate, no
re-deflate); new or changed members are deflated in parallel threads (how bytes
become a deflate stream, whole or in pieces, is :mod:`fastelf.deflating`).
RECORD is rewritten from the bytes written: unchanged members are inflated
(and CRC-checked) to hash them, so a stale input RECORD is never copied.  The output is
written to a temporary file next to the destination and renamed into place,
so a failure never leaves a half-written wheel and the input is never touched.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import signal
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import zipformat as zf
from .deflating import Data, deflate_split, deflate_whole, splits
from .errors import WheelError
from .record import b64_digest, record_files
from .wheel import DEFLATED, STORED, Member, WheelReader

if TYPE_CHECKING:       # concurrent.futures is imported only where threads are started
    from concurrent.futures import Future, ThreadPoolExecutor

DateTime = tuple[int, int, int, int, int, int]  # a zip date_time: year .. second

_MIN_DOS_TIME = 315532800          # 1980-01-01, the earliest zip timestamp
_MAX_DOS_TIME = 4354819198         # 2107-12-31 23:59:58, the latest one


def record_hash(data: Data) -> str:
    """RECORD's ``sha256=<urlsafe base64, no padding>`` of ``data``."""
    return "sha256=" + b64_digest(hashlib.sha256(data).digest())


def reproducible_date_time() -> DateTime | None:
    """SOURCE_DATE_EPOCH as a zip date_time tuple (clipped to 1980..2107), else None."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return None
    try:
        t = min(max(int(epoch), _MIN_DOS_TIME), _MAX_DOS_TIME)
    except ValueError:
        raise WheelError("SOURCE_DATE_EPOCH", f"not an integer: {epoch!r}") from None
    return _date_time(time.gmtime(t))


def _date_time(t: time.struct_time) -> DateTime:
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


class _Terminated(BaseException):
    """A terminating signal arrived while a ``.whl.part`` file existed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_DYING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def _dying_signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise _Terminated instead of ending
    the process at once, so the temporary file is removed on the way out; then
    the old handlers are restored and the signal is sent again, and the process
    dies of it as it would have (same exit status for the parent to see).

    Only signals left at their default action are taken over, and only in the
    main thread (the only one Python lets set handlers): a program that handles
    them itself keeps its own handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Callable[..., object] | int | None] = {}

    def handler(signum: int, _frame: object) -> None:
        raise _Terminated(signum)

    for sig in _DYING_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    except _Terminated as e:
        for sig, h in old.items():
            signal.signal(sig, h)
        old = {}
        os.kill(os.getpid(), e.signum)
        raise                     # only reached if the signal is blocked
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def dist_info_dir(names: Iterable[str]) -> str:
    """The wheel's single top-level ``*.dist-info`` directory."""
    dirs = {n.split("/", 1)[0] for n in names
            if n.count("/") == 1 and n.split("/", 1)[0].endswith(".dist-info")
            and n.endswith("/WHEEL")}
    if len(dirs) != 1:
        raise WheelError("wheel", f"expected one .dist-info directory with a WHEEL file, "
                                  f"found {sorted(dirs) or 'none'}")
    return dirs.pop()


class _Entry:
    __slots__ = ("name", "method", "crc", "csize", "usize", "mode", "date_time",
                 "payload", "offset")

    def __init__(self, name: str, method: int, crc: int, csize: int, usize: int, mode: int,
                 date_time: DateTime, payload: Data | None):
        self.name, self.method, self.crc = name, method, crc
        self.csize, self.usize, self.mode = csize, usize, mode
        self.date_time, self.payload, self.offset = date_time, payload, 0


# below this many new bytes in all, members are deflated in the writing thread: starting
# thread pools (and importing concurrent.futures) costs more than a second core saves
# (deflating 1 MiB takes about 10 ms); the bytes written are the same either way
THREADED_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class Deflated:
    """A member compressed ahead of the writer: everything its zip entry and its RECORD
    row need, so the uncompressed bytes can be dropped at once (a repair holds the
    compressed copies of its patched members, not the raw ones)."""
    method: int                       # DEFLATED, or STORED when deflate did not help
    payload: bytes | bytearray        # the bytes written after the local header
    crc: int
    size: int                         # uncompressed
    record_hash: str                  # RECORD's ``sha256=...`` of the uncompressed bytes


def deflate_member(data: bytes | bytearray | memoryview, level: int, jobs: int,
                   pieces: ThreadPoolExecutor | None) -> Deflated:
    """``data`` compressed as :class:`WheelWriter` would compress it when writing (same
    bytes for the same ``level`` and the same ``jobs > 1``, whatever the core count:
    output stays reproducible); stored when deflate does not make it smaller, or at
    level 0.  A member :func:`~fastelf.deflating.splits` says to split is compressed in
    pieces on ``pieces``' threads."""
    crc, size, digest = zlib.crc32(data), len(data), record_hash(data)
    if level != 0:
        out = (deflate_split(data, level, pieces) if pieces is not None
               and splits(size, level, jobs) else deflate_whole(data, level))
        if len(out) < size:
            return Deflated(DEFLATED, out, crc, size, digest)
    return Deflated(STORED, data if isinstance(data, (bytes, bytearray)) else bytes(data),
                    crc, size, digest)


class Pending(Protocol):
    """A member on its way to becoming :class:`Deflated`: a Future of the Deflater's
    pool, or :class:`Done` when it was compressed at once."""

    def done(self) -> bool: ...
    def result(self) -> Deflated: ...


class Done:
    """A member compressed in the caller's thread, with a Future's two methods."""

    __slots__ = ("_value",)

    def __init__(self, value: Deflated) -> None:
        self._value = value

    def done(self) -> bool:
        return True

    def result(self) -> Deflated:
        return self._value


class Deflater:
    """Compresses members into :class:`Deflated` entries on threads while the caller goes
    on producing the next one; ``submit`` returns a :class:`Pending`.  The uncompressed
    bytes waiting or being compressed are bounded (at most ``jobs`` members and
    ``max_pending`` bytes, but always one member): a producer that gets ahead waits,
    so the raw bytes held at once stay near the largest member, not the sum.  A split
    member's pieces run on a second pool of ``jobs`` threads while its member thread
    waits for them, so the bound needs no change for it: one over ``max_pending``
    (libicudata's 31 MB) is compressed alone, on all the cores; a smaller one shares
    them with the members that still fit beside it.

    A member that is not to be split and is under ``THREADED_MIN_BYTES`` (or any
    unsplit member with one job) is compressed at once in the caller's thread, and
    the thread pools are started only for the first larger one, so a small repair pays
    for neither threads nor the import of ``concurrent.futures``."""

    def __init__(self, compresslevel: int = 6, jobs: int | None = None,
                 max_pending: int = 16 << 20) -> None:
        if not -1 <= compresslevel <= 9:
            raise ValueError("compresslevel must be between -1 and 9")
        self.level = compresslevel
        self.jobs = jobs or os.cpu_count() or 1
        self.max_pending = max_pending
        self._inflight: list[tuple[Pending, int]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pieces: ThreadPoolExecutor | None = None
        self._open = False

    def __enter__(self) -> Deflater:
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._pieces is not None:
            self._pieces.shutdown()
        self._pool = self._pieces = None
        self._inflight = []
        self._open = False

    def make_room(self, size: int) -> None:
        """Wait until a member of ``size`` bytes fits within the bound (or nothing is in
        flight).  A producer calls it before it reads or builds a large member, so
        that member and the ones still being compressed are not held together."""
        self._inflight = [(f, n) for f, n in self._inflight if not f.done()]
        while self._inflight and (len(self._inflight) >= self.jobs or sum(
                n for _f, n in self._inflight) + size > self.max_pending):
            self._inflight.pop(0)[0].result()     # an error surfaces here or at result()

    def submit(self, data: bytes | bytearray | memoryview) -> Pending:
        """Queue ``data`` (the caller must not change it afterwards) for compression."""
        if not self._open:
            raise RuntimeError("Deflater.submit outside its with block")
        if not splits(len(data), self.level, self.jobs) and (
                self.jobs == 1 or len(data) < THREADED_MIN_BYTES):
            return Done(deflate_member(data, self.level, self.jobs, None))
        self.make_room(len(data))
        pool, pieces = self._pools()
        future = pool.submit(deflate_member, data, self.level, self.jobs, pieces)
        self._inflight.append((future, len(data)))
        return future

    def _pools(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        """The member pool and the pieces pool, started on first use."""
        if self._pool is None or self._pieces is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.jobs)
            self._pieces = ThreadPoolExecutor(self.jobs)
        return self._pool, self._pieces


class WheelWriter:
    """Collect members, then ``write(path)`` them as one zip, atomically."""

    def __init__(self, *, compresslevel: int = 6, date_time: DateTime | None = None,
                 jobs: int | None = None) -> None:
        if not -1 <= compresslevel <= 9:
            raise ValueError("compresslevel must be between -1 and 9")
        self.level = compresslevel
        self.date_time = date_time or reproducible_date_time()
        self.jobs = jobs or os.cpu_count() or 1
        self._entries: list[_Entry] = []
        self._pending: list[tuple[_Entry, Data]] = []      # still to deflate
        self._names: set[str] = set()
        self._compressed: Callable[[_Entry], None] = lambda entry: None  # set by write()

    def _add_entry(self, entry: _Entry) -> None:
        if entry.name in self._names:
            raise WheelError(entry.name, "member written twice")
        self._names.add(entry.name)
        self._entries.append(entry)

    def copy(self, reader: WheelReader, member: Member, name: str | None = None) -> None:
        """Copy a member's compressed bytes unchanged (optionally renamed)."""
        dt = self.date_time or member.date_time
        self._add_entry(_Entry(name or member.name, member.method, member.crc,
                               member.compressed_size, member.size, member.mode or 0o100644,
                               dt, reader.raw(member)))

    def add(self, name: str, data: Data, mode: int = 0o644) -> None:
        """Add a new member; it is deflated when the wheel is written."""
        dt = self.date_time or _date_time(time.localtime())
        entry = _Entry(name, DEFLATED, zlib.crc32(data), 0, len(data),
                       0o100000 | (mode & 0o7777), dt, None)
        self._add_entry(entry)
        self._pending.append((entry, data))

    def add_deflated(self, name: str, member: Deflated, mode: int = 0o644) -> None:
        """Add a member compressed ahead by :func:`deflate_member` (written as it is)."""
        dt = self.date_time or _date_time(time.localtime())
        self._add_entry(_Entry(name, member.method, member.crc, len(member.payload),
                               member.size, 0o100000 | (mode & 0o7777), dt, member.payload))

    def _splits(self, data: Data) -> bool:
        return splits(len(data), self.level, self.jobs)

    def _compress(self, data: Data, pieces: ThreadPoolExecutor) -> bytes | bytearray:
        return deflate_split(data, self.level, pieces) if self._splits(data) \
            else deflate_whole(data, self.level)

    def _finish(self, entry: _Entry, data: Data, out: bytes | bytearray) -> None:
        """Store a member's compressed bytes (or the data, stored, when deflate does not help)."""
        if self.level == 0 or len(out) >= len(data):
            entry.method, entry.payload, entry.csize = STORED, data, len(data)
        else:
            entry.payload, entry.csize = out, len(out)

    @contextlib.contextmanager
    def _compressor(self) -> Iterator[Callable[[_Entry], None]]:
        """Deflate the new members in threads, ahead of the writer by a bounded window
        (``jobs`` members, or one split member): ``get(entry)`` waits for one entry.
        A written member's bytes are dropped, so the compressed copies held at once
        stay near the largest member instead of the sum of all."""
        pending = {id(e): d for e, d in self._pending}
        order = [e for e, _d in self._pending]
        self._pending = []
        if not order:
            yield lambda entry: None
            return
        if not any(self._splits(d) for d in pending.values()) and (
                self.jobs == 1 or sum(len(d) for d in pending.values()) < THREADED_MIN_BYTES):
            yield self._inline_get(pending)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.jobs) as pool, ThreadPoolExecutor(self.jobs) as pieces:
            futures: dict[int, Future[bytes | bytearray]] = {}
            queue = iter(order)

            def top_up() -> None:
                while len(futures) < self.jobs:
                    e = next(queue, None)
                    if e is None:
                        return
                    futures[id(e)] = pool.submit(self._compress, pending[id(e)], pieces)

            def get(entry: _Entry) -> None:
                if id(entry) not in pending:
                    return
                top_up()
                out = futures.pop(id(entry)).result()
                self._finish(entry, pending.pop(id(entry)), out)
                top_up()

            yield get

    def _inline_get(self, pending: dict[int, Data]) -> Callable[[_Entry], None]:
        """``get(entry)`` that deflates each new member when the writer reaches it, in
        this thread (used when no member is to be split: the same bytes as the pool's)."""
        def get(entry: _Entry) -> None:
            data = pending.pop(id(entry), None)
            if data is not None:
                self._finish(entry, data, deflate_whole(data, self.level))
        return get

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the zip to ``path`` via a temporary file and an atomic rename."""
        dest = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(dest))
        with _dying_signals_raise():
            fd, tmp = tempfile.mkstemp(prefix=".fastelf-", suffix=".whl.part", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f, self._compressor() as compressed:
                    self._compressed = compressed
                    self._write_zip(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise

    def _write_zip(self, f: io.BufferedWriter) -> None:
        """The local records and data, then the central directory and end records."""
        pos = 0
        for e in self._entries:
            self._compressed(e)           # a new member: its bytes, deflated by now
            e.offset = pos
            head = _local_record(e)
            f.write(head)
            if e.payload is None:           # copied, added or compressed by now
                raise WheelError(e.name, "no bytes to write (written twice?)")
            f.write(e.payload)
            e.payload = None              # written: the central directory needs no bytes
            pos += len(head) + e.csize
        cd_start = pos
        for e in self._entries:
            entry = _central_record(e)
            f.write(entry)
            pos += len(entry)
        f.write(_end_records(len(self._entries), cd_start, pos - cd_start))


# ---------------------------------------------------------------- zip records
# The writer's choices within the format (fastelf.zipformat): made on Unix by
# a zip 4.5 writer; version needed 2.0, or 4.5 for an entry that needs zip64.
_MADE_BY = (zf.HOST_UNIX << 8) | zf.VERSION_ZIP64


def _name_and_flags(e: _Entry) -> tuple[bytes, int]:
    """The encoded name and its flag: bit 11 (UTF-8) for a name that is not ASCII."""
    return e.name.encode(), zf.FLAG_UTF8 if not e.name.isascii() else 0


def _local_record(e: _Entry) -> bytes:
    """Local header, name and extra field of ``e`` (4.3.7); a member of 4 GiB or more
    has saturated sizes and both sizes in a zip64 extra field (4.5.3)."""
    name, flags = _name_and_flags(e)
    t, d = zf.dos_date_time(e.date_time)
    big = e.csize >= zf.SATURATED_32 or e.usize >= zf.SATURATED_32
    extra = zf.pack_zip64_extra((e.usize, e.csize)) if big else b""
    hdr = zf.LocalHeader(
        zf.LOCAL_SIG, zf.VERSION_ZIP64 if big else zf.VERSION_DEFAULT, flags, e.method, t, d,
        e.crc, zf.SATURATED_32 if big else e.csize, zf.SATURATED_32 if big else e.usize,
        len(name), len(extra))
    return hdr.pack() + name + extra


def _central_record(e: _Entry) -> bytes:
    """Central header, name and extra field of ``e`` (4.3.12); each value of 4 GiB or
    more is saturated and given in the zip64 extra field, in the order of 4.5.3."""
    name, flags = _name_and_flags(e)
    t, d = zf.dos_date_time(e.date_time)
    values = (e.usize, e.csize, e.offset)
    z64 = [v for v in values if v >= zf.SATURATED_32]
    usize, csize, off = (min(v, zf.SATURATED_32) for v in values)
    extra = zf.pack_zip64_extra(z64) if z64 else b""
    cen = zf.CentralHeader(
        zf.CENTRAL_SIG, _MADE_BY, zf.VERSION_ZIP64 if z64 else zf.VERSION_DEFAULT, flags,
        e.method, t, d, e.crc, csize, usize, len(name), len(extra), 0, 0, 0,
        zf.unix_external_attr(e.mode), off)
    return cen.pack() + name + extra


def _end_records(count: int, cd_start: int, cd_size: int) -> bytes:
    """The end of central directory record (4.3.16), preceded by the zip64 end record
    and locator (4.3.14, 4.3.15) when the count, offset or size needs them."""
    cd_end = cd_start + cd_size
    if count >= zf.SATURATED_16 or cd_start >= zf.SATURATED_32 or cd_size >= zf.SATURATED_32:
        return (zf.Zip64EndRecord(zf.ZIP64_END_SIG, zf.ZIP64_END_RECORD_BODY, _MADE_BY,
                                  zf.VERSION_ZIP64, 0, 0, count, count, cd_size,
                                  cd_start).pack()
                + zf.Zip64Locator(zf.ZIP64_LOCATOR_SIG, 0, cd_end, 1).pack()
                + zf.EndRecord(zf.END_SIG, 0, 0, zf.SATURATED_16, zf.SATURATED_16,
                               zf.SATURATED_32, zf.SATURATED_32, 0).pack())
    return zf.EndRecord(zf.END_SIG, 0, 0, count, count, cd_size, cd_start, 0).pack()


def output_dir_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why ``directory`` (the -w option) cannot receive a wheel, checked before any work:
    an existing path that is not a directory (``os.makedirs`` would only say "File
    exists")."""
    d = os.fspath(directory)
    if os.path.exists(d) and not os.path.isdir(d):
        return f"cannot write into {d}: not a directory"
    return None


def rewrite_wheel(reader: WheelReader, out_path: str | os.PathLike[str], *,
                  replace: Mapping[str, Data | Deflated] | None = None,
                  add: Mapping[str, Data | Deflated | tuple[Any, int]] | None = None,
                  remove: Iterable[str] = (), wheel_tags: Iterable[str] | None = None,
                  compresslevel: int = 6) -> None:
    """Write a copy of ``reader``'s wheel to ``out_path`` with changes.

    ``replace``: {member: new bytes}; ``add``: {member: bytes or (bytes, mode)}
    (a :class:`Deflated` may stand for the bytes in both: it is written as compressed),
    placed before the .dist-info directory; ``remove``: members to drop;
    ``wheel_tags``: if given, the WHEEL file's ``Tag:`` lines become these.
    RECORD is regenerated from the bytes written (an input RECORD is not
    trusted); RECORD.jws / RECORD.p7s signatures are dropped.
    """
    replaced: dict[str, Data | Deflated] = dict(replace or {})
    added = dict(add or {})
    names = [m.name for m in reader.members]
    info = dist_info_dir(names)
    record_name = f"{info}/RECORD"
    dropped = record_files(info) | set(remove)
    if wheel_tags is not None:
        wheel_name = f"{info}/WHEEL"
        try:
            replaced[wheel_name] = _retag_wheel_file(bytes(reader.read(wheel_name)), wheel_tags)
        except UnicodeDecodeError as e:
            raise WheelError(reader.path, f"{wheel_name} is not UTF-8 text (byte {e.start}); "
                                          "cannot rewrite its Tag lines") from None
    clash = (set(added) & set(names)) - dropped
    if clash:
        raise WheelError(reader.path, f"cannot add members that exist: {sorted(clash)}")

    writer = WheelWriter(compresslevel=compresslevel)
    rows: list[tuple[str, str, str]] = []

    def add_new(name: str, data: Data | Deflated, mode: int = 0o644) -> None:
        if isinstance(data, Deflated):        # compressed ahead: its raw bytes are gone
            writer.add_deflated(name, data, mode)
            rows.append((name, data.record_hash, str(data.size)))
            return
        writer.add(name, data, mode)
        rows.append((name, record_hash(data), str(len(data))))

    for name, value in added.items():          # grafted files first, as auditwheel does
        if not name.startswith(info + "/"):
            data, mode = value if isinstance(value, tuple) else (value, 0o755)
            add_new(name, data, mode)
    for m in reader.members:
        if m.name in dropped:
            continue
        if m.name in replaced:
            mode = (m.mode & 0o7777) or 0o644
            add_new(m.name, replaced[m.name], mode)
            continue
        writer.copy(reader, m)
        if m.is_dir:
            continue
        # hashed from the bytes (CRC-checked on the way), never taken from the old RECORD
        data = reader.read(m)
        rows.append((m.name, record_hash(data), str(len(data))))
    for name, value in added.items():
        if name.startswith(info + "/"):
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            add_new(name, data, mode)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    w.writerow((record_name, "", ""))
    writer.add(record_name, buf.getvalue().encode())
    writer.write(out_path)


def _retag_wheel_file(text: bytes, tags: Iterable[str]) -> bytes:
    """The WHEEL file with its ``Tag:`` lines replaced by ``tags``, where the first was."""
    lines = text.decode("utf-8").splitlines()
    out = [ln for ln in lines if not ln.startswith("Tag:")]
    # keep the blank-line-free header form; tags go where the first Tag line was
    first = next((i for i, ln in enumerate(lines) if ln.startswith("Tag:")), len(out))
    first = min(first, len(out))
    while out and out[-1] == "":
        out.pop()
    first = min(first, len(out))
    out[first:first] = [f"Tag: {t}" for t in tags]
    return ("\n".join(out) + "\n").encode()
