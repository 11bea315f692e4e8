"""Remote wheels: ``https://`` (and ``http://``) URLs through HTTP Range requests,
any other fsspec URL (``s3://``, ``gs://``, ``file://``, ...) through fsspec.

The reader reads a wheel through a seekable binary file object; this module
makes one for a URL and counts the bytes it fetched.  For HTTP the first
request asks for the zip's tail (where the central directory is found); later
reads fetch only the ranges asked for, so a reader that seeks and reads
ranges pulls the tail, the central directory and the ELF members' compressed
bytes, not the rest.  A server that ignores Range (answers 200) is read once,
whole.  Every answer is checked: the status, ``Content-Range`` against the
range asked for and the size first announced, the body length against the
range; a stalled or slow-dripping server is cut off at ``timeout`` seconds per
request.  Each failure is a one-line :class:`~fastelf.errors.WheelError`
naming the URL.
"""

from __future__ import annotations

import bisect
import http.client
import io
import os
import posixpath
import re
import socket
import ssl
import time
import urllib.parse
from typing import Any

from .audit import AuditResult, audit_path, platform_tags_of
from .errors import WheelError

TAIL = 64 << 10              # the first request: the zip's last 64 KiB (EOCD + most CDs)
MIN_FETCH = 64 << 10         # smaller reads are rounded up to this
MAX_REDIRECTS = 5
_CHUNK = 64 << 10
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)\Z")
_REDIRECTS = (301, 302, 303, 307, 308)


def is_url(entry: str) -> bool:
    """``scheme://...`` with a scheme of two letters or more (not ``C:\\``)."""
    return bool(re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", entry))


def wheel_name_of(url: str) -> str:
    """The file name at the end of the URL's path (percent-decoded, no query)."""
    return posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP(S) Range requests; ``bytes_fetched``
    counts body bytes received, ``requests`` the requests made."""

    def __init__(self, url: str, timeout: float = 60.0, max_size: int = 64 << 30):
        super().__init__()
        self.name = url
        self.timeout, self.max_size = timeout, max_size
        self.bytes_fetched = self.requests = 0
        self.etag: str | None = None
        self._url = url
        self._conn: http.client.HTTPConnection | None = None
        self._starts: list[int] = []        # sorted starts of the fetched spans
        self._spans: dict[int, bytes] = {}
        self._pos = 0
        self.size = self._first_fetch()

    # ------------------------------------------------------------ io.RawIOBase
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        done = 0
        while done < n:
            piece = self._cached(self._pos + done, n - done)
            if piece is None:
                self._fetch(self._pos + done, n - done)
                continue
            view[done:done + len(piece)] = piece
            done += len(piece)
        self._pos += n
        return n

    def readall(self) -> bytes:
        return self.read(self.size - self._pos) if self._pos < self.size else b""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._spans.clear()
        super().close()

    # ------------------------------------------------------------ spans
    def _cached(self, pos: int, n: int) -> bytes | None:
        """Up to ``n`` bytes at ``pos`` from a fetched span, or None."""
        i = bisect.bisect_right(self._starts, pos) - 1
        if i < 0:
            return None
        start = self._starts[i]
        data = self._spans[start]
        if pos >= start + len(data):
            return None
        return data[pos - start:pos - start + n]

    def _keep(self, start: int, data: bytes) -> None:
        if start not in self._spans:
            bisect.insort(self._starts, start)
        elif len(self._spans[start]) >= len(data):
            return
        self._spans[start] = data

    def _fetch(self, pos: int, n: int) -> None:
        """Fetch at least [pos, pos + n), up to the next span or the end."""
        i = bisect.bisect_right(self._starts, pos)
        limit = self._starts[i] if i < len(self._starts) else self.size
        end = min(max(pos + n, pos + MIN_FETCH), limit, self.size)
        status, headers, body = self._get(f"bytes={pos}-{end - 1}", end - pos)
        if status != 206:
            raise self._error(f"asked for bytes {pos}-{end - 1}, got HTTP {status} "
                              "(the server stopped honouring Range requests)")
        self._check_range(headers, pos, end - 1)
        self._keep(pos, body)

    # ------------------------------------------------------------ HTTP
    def _first_fetch(self) -> int:
        """The tail with a suffix Range; the whole file from a server without Range."""
        status, headers, body = self._get(f"bytes=-{TAIL}", None)
        self.etag = headers.get("etag")
        if status == 200:                    # Range ignored: this was the one full download
            self._keep(0, body)
            return len(body)
        if status != 206:
            raise self._error(f"HTTP {status}")
        m = _CONTENT_RANGE.match(headers.get("content-range", ""))
        if not m:
            raise self._error(f"bad Content-Range {headers.get('content-range')!r}")
        first, last, total = map(int, m.groups())
        if total > self.max_size:
            raise self._error(f"the file is {total} bytes, over the limit of {self.max_size}")
        if last != total - 1 or first != max(0, total - TAIL) or len(body) != last - first + 1:
            raise self._error(f"Content-Range {headers.get('content-range')!r} is not the "
                              f"last {TAIL} bytes asked for")
        self._keep(first, body)
        return total

    def _check_range(self, headers: dict, first: int, last: int) -> None:
        want = f"bytes {first}-{last}/{self.size}"
        got = headers.get("content-range", "")
        if got != want:
            raise self._error(f"asked for {want}, the server answered Content-Range {got!r}")

    def _get(self, byte_range: str, expect: int | None) -> tuple:
        """(status, lower-case headers, body) of one GET, following redirects."""
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, body = self._request(byte_range, expect)
            if status not in _REDIRECTS:
                return status, headers, body
            location = headers.get("location")
            if not location:
                raise self._error(f"HTTP {status} without a Location")
            self._url = urllib.parse.urljoin(self._url, location)
            self._disconnect()
        raise self._error(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, byte_range: str, expect: int | None) -> tuple:
        deadline = time.monotonic() + self.timeout
        self.requests += 1
        try:
            conn = self._connection()
            conn.request("GET", self._target(), headers={
                "Range": byte_range, "Accept-Encoding": "identity",
                "User-Agent": "fastelf"})
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status in _REDIRECTS or resp.status >= 300:
                resp.read(_CHUNK)
                self._disconnect()
                return resp.status, headers, b""
            body = self._read_body(resp, headers, expect, deadline)
        except WheelError:
            self._disconnect()
            raise
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            self._disconnect()
            why = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else \
                f"{type(e).__name__}: {e}"
            raise self._error(f"download failed: {why}") from None
        if resp.will_close:
            self._disconnect()
        return resp.status, headers, body

    def _read_body(self, resp: http.client.HTTPResponse, headers: dict,
                   expect: int | None, deadline: float) -> bytes:
        """The whole body, within the deadline, no longer than announced."""
        length = headers.get("content-length")
        announced = int(length) if length and length.isdigit() else None
        if resp.status == 206 and expect is not None and announced not in (None, expect):
            raise self._error(f"asked for {expect} bytes, the server announced {announced}")
        cap = announced if announced is not None else self.max_size
        if cap > self.max_size:
            raise self._error(f"the answer is {cap} bytes, over the limit of {self.max_size}")
        parts, got = [], 0
        while True:
            if time.monotonic() > deadline:
                raise self._error(f"download timed out after {self.timeout:g} s")
            chunk = resp.read(min(_CHUNK, cap - got + 1)) if cap >= got else b""
            if not chunk:
                break
            got += len(chunk)
            self.bytes_fetched += len(chunk)
            if got > cap:
                raise self._error(f"the server sent more than the {cap} bytes announced")
            parts.append(chunk)
        if announced is not None and got != announced:
            raise self._error(f"the answer was cut short: {got} of {announced} bytes")
        if expect is not None and resp.status == 206 and got != expect:
            raise self._error(f"asked for {expect} bytes, got {got}")
        return b"".join(parts)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urllib.parse.urlsplit(self._url)
            if not parts.hostname:
                raise self._error("no host name in the URL")
            if parts.scheme == "https":
                self._conn = http.client.HTTPSConnection(parts.hostname, parts.port,
                                                         timeout=self.timeout)
            elif parts.scheme == "http":
                self._conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                                        timeout=self.timeout)
            else:
                raise self._error(f"redirected to a {parts.scheme!r} URL")
        return self._conn

    def _target(self) -> str:
        parts = urllib.parse.urlsplit(self._url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _error(self, reason: str) -> WheelError:
        return WheelError(self.name, reason)


class _CountingFile(io.RawIOBase):
    """Counts the bytes read through a file object (fsspec's own caches may
    fetch more or less from the store: this is what the audit asked for)."""

    def __init__(self, inner: Any, name: str):
        super().__init__()
        self.inner, self.name, self.bytes_fetched = inner, name, 0
        self.etag = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def readinto(self, b: Any) -> int:
        data = self.inner.read(len(b))
        memoryview(b).cast("B")[:len(data)] = data
        self.bytes_fetched += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self.inner.read()
        self.bytes_fetched += len(data)
        return data

    def close(self) -> None:
        self.inner.close()
        super().close()


def open_url(url: str, timeout: float | None = None) -> Any:
    """A seekable binary file for ``url`` with ``bytes_fetched`` and ``etag``."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return HttpRangeFile(url, timeout=timeout or http_timeout())
    try:
        import fsspec
    except ImportError:
        raise WheelError(url, f"{scheme}:// URLs need fsspec: pip install "
                              "'fastelf[remote]'") from None
    try:
        return _CountingFile(fsspec.open(url, "rb").open(), url)
    except Exception as e:          # fsspec's backends raise their own types
        raise WheelError(url, f"cannot open: {type(e).__name__}: {e}") from None


def audit_url(url: str, *, timeout: float | None = None, cache: Any = None,
              **options: Any) -> AuditResult:
    """Audit the wheel at ``url`` (an error result when it cannot be fetched or
    read); ``result.bytes_fetched`` is what came over the network.  ``timeout``:
    seconds per HTTP request (default :func:`http_timeout`).  ``cache``:
    a :class:`fastelf.cache.ResultCache`, keyed by URL + size + ETag."""
    name = wheel_name_of(url)
    try:
        f = open_url(url, timeout)
    except WheelError as e:
        return AuditResult(wheel=name, path=url, error=str(e), claimed_tags=platform_tags_of(name))
    with f:
        if cache is not None:
            result = cache.audit_file(f, name, remote_key(url, f), **options)
        else:
            result = audit_path(f, filename=name, **options)
        result.path = url
        result.bytes_fetched = f.bytes_fetched
    return result


def remote_key(url: str, f: Any) -> str | None:
    """The wheel-level cache key of a remote file: URL, size and ETag (no ETag:
    no wheel-level entry; members are still keyed by their bytes)."""
    if not getattr(f, "etag", None):
        return None
    size = getattr(f, "size", None)
    return f"{url}\0{size}\0{f.etag}"


def http_timeout(default: float = 60.0) -> float:
    """Seconds one HTTP request may take: $FASTELF_HTTP_TIMEOUT, else ``default``."""
    try:
        return float(os.environ.get("FASTELF_HTTP_TIMEOUT", default))
    except ValueError:
        return default
