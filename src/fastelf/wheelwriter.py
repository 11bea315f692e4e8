"""Write a modified copy of a wheel, atomically and reproducibly.

Unchanged members are copied as their compressed bytes (no inflate, no
re-deflate); new or changed members are deflated in parallel threads.
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
import struct
import tempfile
import threading
import time
import zlib
from typing import Callable, Iterator

from .errors import WheelError
from .record import b64_digest, record_files
from .wheel import DEFLATED, STORED, WheelReader, optional_module

_MIN_DOS_TIME = 315532800          # 1980-01-01, the earliest zip timestamp
_MAX_DOS_TIME = 4354819198         # 2107-12-31 23:59:58, the latest one


def record_hash(data) -> str:
    return "sha256=" + b64_digest(hashlib.sha256(data).digest())


def reproducible_date_time():
    """SOURCE_DATE_EPOCH as a zip date_time tuple (clipped to 1980..2107), else None."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return None
    try:
        t = min(max(int(epoch), _MIN_DOS_TIME), _MAX_DOS_TIME)
    except ValueError:
        raise WheelError("SOURCE_DATE_EPOCH", f"not an integer: {epoch!r}") from None
    return time.gmtime(t)[:6]


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
    old = {}

    def handler(signum, _frame):
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


def _dos(date_time):
    y, mo, d, h, mi, s = date_time
    y = max(y, 1980)
    return ((h << 11) | (mi << 5) | (s // 2)) & 0xFFFF, (((y - 1980) << 9) | (mo << 5) | d) & 0xFFFF


def dist_info_dir(names) -> str:
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

    def __init__(self, name, method, crc, csize, usize, mode, date_time, payload):
        self.name, self.method, self.crc = name, method, crc
        self.csize, self.usize, self.mode = csize, usize, mode
        self.date_time, self.payload, self.offset = date_time, payload, 0


_libdeflate = optional_module("deflate")        # the [speed] extra: libdeflate

CHUNK_SIZE = 1 << 20          # input bytes per independently compressed piece of a member
_WINDOW = 32768               # deflate's window: each piece is primed with the bytes before it
# zlib on N cores beats libdeflate on one (about 2.2x zlib's speed at level 6 on x86-64)
# from three cores on; below that a large member stays whole and goes to libdeflate
CHUNKED_MIN_JOBS = 3
# below this many new bytes in all, members are deflated in the writing thread: starting
# thread pools (and importing concurrent.futures) costs more than a second core saves
# (deflating 1 MiB takes about 10 ms); the bytes written are the same either way
THREADED_MIN_BYTES = 1 << 20


def deflate_whole(data, level: int) -> bytes | bytearray:
    """One raw deflate stream: libdeflate when installed (faster and smaller than zlib
    at the same level), else zlib."""
    if _libdeflate is not None and level != 0:
        return _libdeflate.deflate_compress(bytes(data), 6 if level < 0 else level)
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


def deflate_piece(data, start: int, stop: int, level: int) -> bytes:
    """Bytes ``data[start:stop]`` as a piece of one raw deflate stream (pigz's method).

    The piece is primed with the 32 KiB before it as a preset dictionary, so
    matches may reach back across the cut (they are resolved by the inflater,
    which has those bytes already); a piece that is not the last ends with a
    sync flush (an empty stored block: byte-aligned, not final), the last with
    the final block.  Concatenated in order, the pieces are one valid stream."""
    last = stop >= len(data)
    if start:
        z = zlib.compressobj(level, zlib.DEFLATED, -15,
                             zdict=bytes(data[max(0, start - _WINDOW):start]))
    else:
        z = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = z.compress(data[start:stop])
    return out + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def deflate_chunked(data, level: int, pool, chunk: int | None = None) -> bytes:
    """``data`` as one raw deflate stream compressed in pieces on ``pool``'s threads
    (zlib releases the GIL while it compresses)."""
    chunk = chunk or CHUNK_SIZE
    bounds = [(i, min(i + chunk, len(data))) for i in range(0, max(len(data), 1), chunk)]
    return b"".join(pool.map(lambda b: deflate_piece(data, b[0], b[1], level), bounds))


class WheelWriter:
    """Collect members, then ``write(path)`` them as one zip, atomically."""

    def __init__(self, *, compresslevel: int = 6, date_time=None, jobs: int | None = None):
        if not -1 <= compresslevel <= 9:
            raise ValueError("compresslevel must be between -1 and 9")
        self.level = compresslevel
        self.date_time = date_time or reproducible_date_time()
        self.jobs = jobs or os.cpu_count() or 1
        self._entries: list = []
        self._pending: list = []      # (entry, data) still to deflate
        self._names: set = set()
        self._compressed = lambda entry: None     # set while write() runs

    def _add_entry(self, entry):
        if entry.name in self._names:
            raise WheelError(entry.name, "member written twice")
        self._names.add(entry.name)
        self._entries.append(entry)

    def copy(self, reader: WheelReader, member, name: str | None = None):
        """Copy a member's compressed bytes unchanged (optionally renamed)."""
        dt = self.date_time or member.date_time
        self._add_entry(_Entry(name or member.name, member.method, member.crc,
                               member.compressed_size, member.size, member.mode or 0o100644,
                               dt, reader.raw(member)))

    def add(self, name: str, data: bytes, mode: int = 0o644):
        """Add a new member; it is deflated when the wheel is written."""
        dt = self.date_time or time.localtime()[:6]
        entry = _Entry(name, DEFLATED, zlib.crc32(data), 0, len(data),
                       0o100000 | (mode & 0o7777), dt, None)
        self._add_entry(entry)
        self._pending.append((entry, data))

    def _splits(self, data) -> bool:
        """Whether a member is compressed in pieces across threads: large, several
        threads, and either no libdeflate or enough threads for zlib to win."""
        return (self.level != 0 and len(data) >= 2 * CHUNK_SIZE and self.jobs > 1
                and (_libdeflate is None or self.jobs >= CHUNKED_MIN_JOBS))

    def _compress(self, data, pieces) -> bytes | bytearray:
        return deflate_chunked(data, self.level, pieces) if self._splits(data) \
            else deflate_whole(data, self.level)

    def _finish(self, entry, data, out) -> None:
        """Store a member's compressed bytes (or the data, stored, when deflate does not help)."""
        if self.level == 0 or len(out) >= len(data):
            entry.method, entry.payload, entry.csize = STORED, data, len(data)
        else:
            entry.payload, entry.csize = out, len(out)

    @contextlib.contextmanager
    def _compressor(self) -> Iterator:
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
            futures: dict = {}
            queue = iter(order)

            def top_up() -> None:
                while len(futures) < self.jobs:
                    e = next(queue, None)
                    if e is None:
                        return
                    futures[id(e)] = pool.submit(self._compress, pending[id(e)], pieces)

            def get(entry) -> None:
                if id(entry) not in pending:
                    return
                top_up()
                out = futures.pop(id(entry)).result()
                self._finish(entry, pending.pop(id(entry)), out)
                top_up()

            yield get

    def _inline_get(self, pending: dict) -> Callable[[_Entry], None]:
        """``get(entry)`` that deflates each new member when the writer reaches it, in
        this thread (used when no member is to be split: the same bytes as the pool's)."""
        def get(entry: _Entry) -> None:
            data = pending.pop(id(entry), None)
            if data is not None:
                self._finish(entry, data, deflate_whole(data, self.level))
        return get

    def write(self, path):
        """Write the zip to ``path`` via a temporary file and an atomic rename."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        with _dying_signals_raise():
            fd, tmp = tempfile.mkstemp(prefix=".fastelf-", suffix=".whl.part", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f, self._compressor() as compressed:
                    self._compressed = compressed
                    self._write_zip(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise

    def _write_zip(self, f):
        pos = 0
        for e in self._entries:
            self._compressed(e)           # a new member: its bytes, deflated by now
            e.offset = pos
            name = e.name.encode()
            flags = 0x800 if not e.name.isascii() else 0
            t, d = _dos(e.date_time)
            big = e.csize >= 0xFFFFFFFF or e.usize >= 0xFFFFFFFF
            extra = struct.pack("<HHQQ", 1, 16, e.usize, e.csize) if big else b""
            hdr = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45 if big else 20, flags, e.method,
                              t, d, e.crc, 0xFFFFFFFF if big else e.csize,
                              0xFFFFFFFF if big else e.usize, len(name), len(extra))
            f.write(hdr + name + extra)
            f.write(e.payload)
            e.payload = None              # written: the central directory needs no bytes
            pos += len(hdr) + len(name) + len(extra) + e.csize
        cd_start = pos
        for e in self._entries:
            name = e.name.encode()
            flags = 0x800 if not e.name.isascii() else 0
            t, d = _dos(e.date_time)
            z64 = []
            usize, csize, off = e.usize, e.csize, e.offset
            if usize >= 0xFFFFFFFF:
                z64.append(usize)
                usize = 0xFFFFFFFF
            if csize >= 0xFFFFFFFF:
                z64.append(csize)
                csize = 0xFFFFFFFF
            if off >= 0xFFFFFFFF:
                z64.append(off)
                off = 0xFFFFFFFF
            extra = struct.pack("<HH", 1, 8 * len(z64)) + b"".join(
                struct.pack("<Q", v) for v in z64) if z64 else b""
            cen = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", (3 << 8) | 45,
                              45 if z64 else 20, flags, e.method, t, d, e.crc, csize, usize,
                              len(name), len(extra), 0, 0, 0, (e.mode & 0xFFFF) << 16, off)
            f.write(cen + name + extra)
            pos += len(cen) + len(name) + len(extra)
        cd_size = pos - cd_start
        count = len(self._entries)
        if count >= 0xFFFF or cd_start >= 0xFFFFFFFF or cd_size >= 0xFFFFFFFF:
            f.write(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, (3 << 8) | 45, 45, 0, 0,
                                count, count, cd_size, cd_start))
            f.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, pos, 1))
            f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF,
                                0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size,
                                cd_start, 0))


def output_dir_problem(directory) -> str | None:
    """Why ``directory`` (the -w option) cannot receive a wheel, checked before any work:
    an existing path that is not a directory (``os.makedirs`` would only say "File
    exists")."""
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        return f"cannot write into {directory}: not a directory"
    return None


def rewrite_wheel(reader: WheelReader, out_path, *, replace=None, add=None, remove=(),
                  wheel_tags=None, compresslevel=6):
    """Write a copy of ``reader``'s wheel to ``out_path`` with changes.

    ``replace``: {member: new bytes}; ``add``: {member: bytes or (bytes, mode)},
    placed before the .dist-info directory; ``remove``: members to drop;
    ``wheel_tags``: if given, the WHEEL file's ``Tag:`` lines become these.
    RECORD is regenerated from the bytes written (an input RECORD is not
    trusted); RECORD.jws / RECORD.p7s signatures are dropped.
    """
    replace = dict(replace or {})
    add = dict(add or {})
    remove = set(remove)
    names = [m.name for m in reader.members]
    info = dist_info_dir(names)
    record_name = f"{info}/RECORD"
    dropped = record_files(info) | remove
    if wheel_tags is not None:
        wheel_name = f"{info}/WHEEL"
        try:
            replace[wheel_name] = _retag_wheel_file(bytes(reader.read(wheel_name)), wheel_tags)
        except UnicodeDecodeError as e:
            raise WheelError(reader.path, f"{wheel_name} is not UTF-8 text (byte {e.start}); "
                                          "cannot rewrite its Tag lines") from None
    clash = (set(add) & set(names)) - dropped
    if clash:
        raise WheelError(reader.path, f"cannot add members that exist: {sorted(clash)}")

    writer = WheelWriter(compresslevel=compresslevel)
    rows = []

    def add_new(name, data, mode=0o644):
        writer.add(name, data, mode)
        rows.append((name, record_hash(data), str(len(data))))

    for name, value in add.items():          # grafted files first, as auditwheel does
        if not name.startswith(info + "/"):
            data, mode = value if isinstance(value, tuple) else (value, 0o755)
            add_new(name, data, mode)
    for m in reader.members:
        if m.name in dropped:
            continue
        if m.name in replace:
            mode = (m.mode & 0o7777) or 0o644
            add_new(m.name, replace[m.name], mode)
            continue
        writer.copy(reader, m)
        if m.is_dir:
            continue
        # hashed from the bytes (CRC-checked on the way), never taken from the old RECORD
        data = reader.read(m)
        rows.append((m.name, record_hash(data), str(len(data))))
    for name, value in add.items():
        if name.startswith(info + "/"):
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            add_new(name, data, mode)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    w.writerow((record_name, "", ""))
    writer.add(record_name, buf.getvalue().encode())
    writer.write(out_path)


def _retag_wheel_file(text: bytes, tags) -> bytes:
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
