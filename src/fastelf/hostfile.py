"""Open files of the host (or of a sysroot) that fastelf reads on its own account.

The loader search opens paths that come from untrusted input: PT_INTERP,
RPATH entries, ld.so.conf ``include`` globs.  Any of them can name a FIFO
(a blocking ``open`` would hang forever), a device such as /dev/zero (a
read that never ends) or a directory.  Every such file is therefore opened
non-blocking, checked with ``fstat`` on the descriptor that was opened (so a
file swapped after a ``stat`` cannot slip through) and used only when it is
a regular file.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["NotRegularFile", "open_regular", "read_regular"]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class NotRegularFile(OSError):
    """The path names a FIFO, device, socket or directory, not a regular file."""


def open_regular(path: str) -> int:
    """A read-only descriptor of the regular file ``path`` (caller closes it).

    Raises NotRegularFile for anything else, OSError when it cannot be opened.
    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer.
    """
    fd = os.open(path, _FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises NotRegularFile, OSError, or OSError(EFBIG) for a larger file: a
    file the caller only expects to be small is refused rather than cut.
    """
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        # Sized by fstat, not by ``limit``: read(n) allocates n bytes before it
        # shrinks them, so read(limit + 1) would reserve the whole limit for a
        # small file.  The file may still grow meanwhile: reading goes on to EOF,
        # in pieces, never past limit + 1.
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        data = f.read(size + 1)
        if len(data) <= size:           # a short read: the end of the file
            return data
        pieces, total = [data], len(data)
        while pieces[-1] and total <= limit:
            pieces.append(f.read(min(1 << 20, limit + 1 - total)))
            total += len(pieces[-1])
    if total > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return b"".join(pieces)
