"""Find a library on the host (or under a sysroot) for a wheel's ELF file.

The requester is not a file on disk (it sits inside the wheel), so its
``$ORIGIN`` entries were already searched in the wheel by the audit; here
only its absolute RPATH/RUNPATH entries, LD_LIBRARY_PATH and the system
directories count, in ld.so's order.  Each file found is read once: its
bytes (to graft) and its parse (to check the machine and follow its needs).
"""

from __future__ import annotations

import os

from ._elf import ElfError, parse
from .ldpaths import GLIBC, MUSL, expand_dst, rooted, split_path, system_dirs

ET_DYN = 3


class LibraryFinder:
    def __init__(self, *, root="/", libc=GLIBC, arch=None, ld_library_path=None,
                 extra_paths=None):
        self.root = root or "/"
        self.libc = libc
        self.arch = arch
        self.llp = split_path(ld_library_path)
        elf_class = 32 if arch in ("i686", "armv7l") else 64
        if extra_paths is not None:
            self.system = split_path(extra_paths)       # --ldpaths replaces the system search
        else:
            self.system = system_dirs(root=self.root, libc=libc, arch=arch, elf_class=elf_class)
        self.rejected = {}        # candidate path -> why it was skipped
        self._cache = {}

    def _dirs(self, rpath, runpath, origin):
        def expand(value):
            out = []
            for entry in split_path(value):
                d = expand_dst(entry, origin, libc=self.libc)
                if d is not None and d.startswith("/"):
                    out.append(d)
            return out

        if self.libc == MUSL:             # musl: LD_LIBRARY_PATH, then RPATH and RUNPATH alike
            return self.llp + expand(rpath) + expand(runpath) + self.system
        head = expand(rpath) if runpath is None else []
        return head + self.llp + expand(runpath) + self.system

    def _load(self, path):
        hit = self._cache.get(path)
        if hit is None:
            try:
                with open(path, "rb") as f:
                    data = f.read()
                hit = (data, parse(data))
            except (OSError, ElfError) as e:
                hit = e
            self._cache[path] = hit
        return hit

    def find(self, name, *, rpath=None, runpath=None, origin=None):
        """(host path, bytes, ElfFile) of the first matching library, or None.

        ``origin``: the directory of the requesting file when it is on the
        host (a grafted library's own dependencies), else None.
        """
        if "/" in name:
            candidates = [name]
        else:
            candidates = [os.path.join(d, name) for d in self._dirs(rpath, runpath, origin)]
        for cand in candidates:
            host = rooted(self.root, cand) if not (origin and cand.startswith(origin)) else cand
            if not os.path.isfile(host):
                continue
            hit = self._load(os.path.realpath(host))
            if isinstance(hit, Exception):
                self.rejected[host] = str(hit)
                continue
            data, elf = hit
            if self.arch is not None and elf.arch != self.arch:
                self.rejected[host] = f"{elf.arch or elf.machine} ELF, not {self.arch}"
                continue
            if elf.e_type != ET_DYN:
                self.rejected[host] = "not a shared object"
                continue
            return host, data, elf
        return None
