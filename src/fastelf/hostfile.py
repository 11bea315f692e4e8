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
    try:
        # Sized by fstat, not by ``limit``: a read of n bytes allocates n before it
        # shrinks, so reading limit + 1 would reserve the whole limit for a small
        # file.  The file may still grow meanwhile: reading goes on to the end of
        # the file, in pieces, never past limit + 1.  (Plain os.read: a repair's
        # SBOM reads dpkg's ~1000 package lists, where a file object per list shows.)
        size = os.fstat(fd).st_size
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        data = os.read(fd, size + 1)
        if len(data) <= size:
            pieces = [data]
            while len(pieces[-1]) and len(data) < size:     # a short read mid-file
                pieces.append(os.read(fd, size + 1 - len(data)))
                data = b"".join(pieces)
            if len(data) <= size:
                return data
        pieces, total = [data], len(data)
        while pieces[-1] and total <= limit:
            pieces.append(os.read(fd, min(1 << 20, limit + 1 - total)))
            total += len(pieces[-1])
    finally:
        os.close(fd)
    if total > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return b"".join(pieces)
