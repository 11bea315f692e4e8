"""Find on the host (or under a sysroot) the libraries a wheel's ELF files need.

The search is ld.so's, from :class:`fastelf.lddtree.Searcher`.  A requester
inside the wheel is not a file on disk: its ``$ORIGIN`` entries were already
searched in the wheel by the audit, so here it has no origin and only its
absolute RPATH/RUNPATH entries, LD_LIBRARY_PATH and the system directories
count.  A library found on the host keeps its loader chain, so its own
dependencies are searched with inherited RPATHs, as ld.so does.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from ._elf import ElfFile
from .errors import WheelError
from .hostfile import open_regular
from .lddtree import Node, Searcher
from .ldpaths import split_path


class FileDigest(NamedTuple):
    """A host file's sha256 (hex) and size, taken when it was found.  Its bytes are not
    kept: repair reads the file again when it patches it and checks the digest
    (:func:`read_library`), so the search holds no library's bytes."""
    sha256: str
    size: int


class FoundLibrary(NamedTuple):
    """A library found on the host for a requester, as ld.so would load it."""
    path: str             # the host path (under the sysroot when there is one)
    digest: FileDigest    # of the file as found
    elf: ElfFile
    node: Node            # its own search context: its dependencies inherit its loaders'


class LibraryFinder:
    def __init__(self, top_elf: ElfFile, *, root: str = "/", libc: str | None = None,
                 ld_library_path: str | None = None,
                 extra_paths: str | None = None) -> None:
        """``top_elf``: an ElfFile of the wheel (its class, machine and ABI must match);
        ``extra_paths``: --ldpaths, replacing the system search."""
        self.searcher = Searcher(
            top_elf, root=root or "/", ld_library_path=ld_library_path, libc=libc,
            ldpaths=split_path(extra_paths) if extra_paths is not None else None)
        # host path -> its digest: repair may ask for a library again
        self._digests: dict[str, FileDigest] = {}
        self._requesters: dict[str, Node] = {}     # member -> Node

    def forget_files(self) -> None:
        """Drop what was learnt of the files read so far (their digests)."""
        self._digests.clear()

    def requester(self, member: str, elf: ElfFile) -> Node:
        """The search context of an ELF file inside the wheel: one Node per member,
        so its search order is computed once however many libraries it needs."""
        node = self._requesters.get(member)
        if node is None:
            node = self._requesters[member] = Node(None, elf, None, None, [member])
        return node

    def find(self, name: str, node: Node) -> FoundLibrary | None:
        """The library ``name`` that ``node`` needs, or None when ld.so would not find one."""
        hit = self.searcher.find(name, node)
        path, elf = hit.path, hit.elf
        if path is None or elf is None:
            return None
        digest = self._digests.get(path)
        if digest is None:
            digest = self._digests[path] = file_digest(path)
        found = Node(path, elf, node, os.path.dirname(path), node.chain + [name])
        return FoundLibrary(path, digest, elf, found)


_HASH_PIECE = 1 << 20


def file_digest(path: str) -> FileDigest:
    """The sha256 and size of a host file, read a piece at a time (nothing kept)."""
    h = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(open_regular(path), "rb") as f:     # never a FIFO or device
            while piece := f.read(_HASH_PIECE):
                h.update(piece)
                size += len(piece)
    except OSError as e:       # changed since the search looked at it
        raise WheelError(path, f"cannot read this library: {e.strerror or e}") from None
    return FileDigest(h.hexdigest(), size)


def read_library(path: str, digest: FileDigest) -> bytearray:
    """The whole file ``path``, read in place into a bytearray of the caller's own
    (repair patches it in place, so a library costs its size once), which must
    still be the file ``digest`` was taken of: a WheelError if it changed since."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            data = bytearray(digest.size)
            got = f.readinto(data)
            extra = f.read(1)
    except OSError as e:
        raise WheelError(path, f"cannot read this library: {e.strerror or e}") from None
    if got != digest.size or extra or hashlib.sha256(data).hexdigest() != digest.sha256:
        raise WheelError(path, "this library changed while it was being grafted")
    return data
