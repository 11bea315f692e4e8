"""Which C library an ELF file was linked for, read from the file itself."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._elf import ElfFile

GLIBC = "glibc"
MUSL = "musl"


def libc_of(elf: ElfFile) -> str | None:
    """``"musl"`` or ``"glibc"`` from the interpreter or a libc NEEDED entry; None if neither.

    musl: interpreter ``ld-musl-*``, NEEDED ``libc.musl-*`` (Alpine) or plain
    ``libc.so`` (Debian's musl-gcc).  glibc: interpreter ``ld-linux*`` /
    ``ld64.so.*`` / ``ld.so.1``, NEEDED ``libc.so.6`` or the glibc loader.
    """
    interp = posixpath.basename(elf.interpreter or "")
    if interp.startswith("ld-musl-"):
        return MUSL
    if interp.startswith(("ld-linux", "ld64.so.", "ld.so.1")):
        return GLIBC
    for lib in elf.needed:
        if lib == "libc.so" or lib.startswith(("libc.musl-", "ld-musl-")):
            return MUSL
        if lib == "libc.so.6" or lib.startswith(("ld-linux", "ld64.so.")):
            return GLIBC
    return None
