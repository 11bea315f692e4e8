"""Library search paths as the dynamic loaders build them (glibc ld.so and musl).

Paths come in two spaces.  *Logical* paths are what a loader running inside
``root`` would see (``/usr/lib``, entries of ld.so.conf, absolute RPATH
entries); they are turned into host paths with :func:`rooted`.  ``$ORIGIN``
expands to the host directory of the object itself, so an extension module
outside the sysroot still finds its neighbours.

glibc order for a library needed by object O (``dl-load.c``):
  1. if O has no DT_RUNPATH: DT_RPATH of O, of the object that loaded O, and
     so on up to the root object (an object with DT_RUNPATH has its DT_RPATH
     ignored, but the walk goes on past it);
  2. LD_LIBRARY_PATH;
  3. DT_RUNPATH of O only (never inherited);
  4. ld.so.cache, approximated by the directories of /etc/ld.so.conf;
  5. the built-in system directories (skipped with DF_1_NODEFLIB).
musl: LD_LIBRARY_PATH, then DT_RPATH/DT_RUNPATH (the same to musl) of O and
of the objects that loaded it, then /etc/ld-musl-ARCH.path or the default
``/lib:/usr/local/lib:/usr/lib``.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Iterable, List, Optional, Sequence, Union

from .libc import GLIBC, MUSL

__all__ = [
    "GLIBC", "MUSL", "MULTIARCH", "MUSL_ARCH", "MUSL_DEFAULT_PATH",
    "rooted", "split_path", "expand_dst", "parse_ld_so_conf", "musl_path",
    "glibc_default_dirs", "system_dirs", "default_lib", "default_platform",
]

# Debian multiarch triplets (the system directories of a Debian-style glibc).
MULTIARCH = {
    "x86_64": "x86_64-linux-gnu", "i686": "i386-linux-gnu", "aarch64": "aarch64-linux-gnu",
    "armv7l": "arm-linux-gnueabihf", "ppc64le": "powerpc64le-linux-gnu",
    "ppc64": "powerpc64-linux-gnu", "s390x": "s390x-linux-gnu",
    "riscv64": "riscv64-linux-gnu", "loongarch64": "loongarch64-linux-gnu",
}
# musl's LDSO_ARCH, the ARCH of /etc/ld-musl-ARCH.path and /lib/ld-musl-ARCH.so.1.
MUSL_ARCH = {
    "x86_64": "x86_64", "i686": "i386", "aarch64": "aarch64", "armv7l": "armhf",
    "ppc64le": "powerpc64le", "ppc64": "powerpc64", "s390x": "s390x",
    "riscv64": "riscv64", "loongarch64": "loongarch64",
}
MUSL_DEFAULT_PATH = ["/lib", "/usr/local/lib", "/usr/lib"]

_MAX_INCLUDE_DEPTH = 16


def rooted(root: str, path: str) -> str:
    """The host path of the logical ``path`` inside ``root``."""
    path = os.path.normpath("/" + path.lstrip("/"))
    if root in ("", "/"):
        return path
    return os.path.normpath(os.path.join(root, path.lstrip("/")))


def split_path(value: Union[str, Iterable[str], None]) -> List[str]:
    """Split a colon-separated search path (or pass a list through).

    Empty elements are dropped: to the loader they mean the current directory
    of the process, which a static resolver does not have."""
    if value is None:
        return []
    items = value.split(":") if isinstance(value, str) else list(value)
    return [p for p in items if p]


def default_lib(arch: Optional[str], elf_class: int) -> str:
    """The usual ``$LIB`` of glibc: lib64 on 64-bit RHEL-style systems, else lib."""
    return "lib64" if elf_class == 64 else "lib"


def default_platform(arch: Optional[str]) -> str:
    """A plausible ``$PLATFORM`` (AT_PLATFORM) for an architecture."""
    return {"armv7l": "v7l", "ppc64le": "power8", "ppc64": "power8"}.get(arch or "", arch or "")


_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?=/|$))")


def expand_dst(entry: str, origin: Optional[str], *, libc: str = GLIBC,
               lib: Optional[str] = None, platform: Optional[str] = None) -> Optional[str]:
    """Expand the dynamic string tokens of one search-path element.

    glibc knows $ORIGIN, $LIB and $PLATFORM (bare or braced; the bare form only
    before ``/`` or the end).  musl knows only $ORIGIN/${ORIGIN}, and drops a
    path that holds any other ``$``.  Returns None when the element cannot be
    expanded (no origin known, or a token the loader would not expand)."""
    if libc == MUSL:
        if "$" not in entry:
            return entry
        out, rest = [], entry
        while "$" in rest:
            i = rest.index("$")
            out.append(rest[:i])
            rest = rest[i:]
            if rest.startswith("${ORIGIN}"):
                rest = rest[9:]
            elif rest.startswith("$ORIGIN"):
                rest = rest[7:]
            else:
                return None
            if origin is None:
                return None
            out.append(origin)
        return "".join(out) + rest

    def sub(m):
        name = m.group(1) or m.group(2)
        value = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}[name]
        if value is None:
            raise LookupError(name)
        return value

    try:
        return _DST.sub(sub, entry)
    except LookupError:
        return None


def parse_ld_so_conf(path: str = "/etc/ld.so.conf", *, root: str = "/",
                     _depth: int = 0, _seen: Optional[set] = None) -> List[str]:
    """Directories listed by an ld.so.conf file (logical paths), following
    ``include`` globs (relative patterns are relative to the including file's
    directory) and ignoring comments and ``hwcap`` lines.  A missing file
    gives []."""
    seen = set() if _seen is None else _seen
    host = rooted(root, path)
    if _depth > _MAX_INCLUDE_DEPTH or host in seen:
        return []
    seen.add(host)
    try:
        with open(host, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    dirs: List[str] = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                if not pattern.startswith("/"):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                for match in sorted(glob.glob(rooted(root, pattern))):
                    logical = _logical(root, match)
                    dirs.extend(parse_ld_so_conf(logical, root=root, _depth=_depth + 1,
                                                 _seen=seen))
        elif words[0] == "hwcap":
            continue
        else:
            for d in re.split(r"[\s,:]+", line):
                d = d.split("=", 1)[0]         # old "dir=libtype" syntax
                if d.startswith("/"):
                    dirs.append(os.path.normpath(d))
    return _dedupe(dirs)


def musl_path(musl_arch: str, *, root: str = "/") -> List[str]:
    """musl's system path: /etc/ld-musl-ARCH.path (entries separated by newlines
    or colons) when the file exists, else the built-in default."""
    try:
        with open(rooted(root, f"/etc/ld-musl-{musl_arch}.path"),
                  encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return list(MUSL_DEFAULT_PATH)
    return [os.path.normpath(p) for p in re.split(r"[\n:]+", text) if p.strip()
            and p.strip().startswith("/")]


def glibc_default_dirs(arch: Optional[str], elf_class: int) -> List[str]:
    """glibc's built-in directories: the multiarch ones (Debian), the lib64 ones
    (RHEL and manylinux images, 64-bit only), then /lib and /usr/lib."""
    dirs = []
    triplet = MULTIARCH.get(arch or "")
    if triplet:
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if elf_class == 64:
        dirs += ["/lib64", "/usr/lib64"]
    return dirs + ["/lib", "/usr/lib"]


def system_dirs(*, root: str = "/", libc: str = GLIBC, arch: Optional[str] = None,
                elf_class: int = 64, musl_arch: Optional[str] = None) -> List[str]:
    """The system part of the search (after RPATH/LD_LIBRARY_PATH/RUNPATH), as
    logical paths: ld.so.conf then the built-in dirs for glibc, the path file
    or default for musl."""
    if libc == MUSL:
        return musl_path(musl_arch or MUSL_ARCH.get(arch or "", arch or ""), root=root)
    return _dedupe(parse_ld_so_conf("/etc/ld.so.conf", root=root)
                   + glibc_default_dirs(arch, elf_class))


def _logical(root: str, host: str) -> str:
    """Inverse of :func:`rooted` for a host path inside ``root``."""
    if root in ("", "/"):
        return os.path.normpath(host)
    return os.path.normpath("/" + os.path.relpath(host, os.path.normpath(root)))


def _dedupe(items: Sequence[str]) -> List[str]:
    out: List[str] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out
