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

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import LimitError
from .hostfile import open_regular, read_regular
from .libc import GLIBC, MUSL

__all__ = [
    "GLIBC", "MUSL", "MULTIARCH", "MUSL_ARCH", "MUSL_DEFAULT_PATH",
    "rooted", "split_path", "expand_dst", "parse_ld_so_conf", "musl_path",
    "glibc_default_dirs", "system_dirs", "default_lib", "default_platform",
    "MAX_SEARCH_DIRS", "check_object_limits",
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

# Bounds on an ld.so.conf tree (glibc has none; a real one has a few files and dirs).
MAX_CONF_DEPTH = 16
MAX_CONF_FILES = 1024
MAX_CONF_DIRS = 4096
MAX_CONF_BYTES = 1 << 20
# Bound on one object's search path as the search sees it: real libraries have a few
# search directories.  Its DT_NEEDED entries are bounded where the file is parsed
# (Limits.max_needed, the core's DEFAULT_MAX_NEEDED), so a hostile file costs at most
# max_needed x MAX_SEARCH_DIRS cheap set lookups.
MAX_SEARCH_DIRS = 1024


def rooted(root: str, path: str) -> str:
    """The host path of the logical ``path`` inside ``root``."""
    path = os.path.normpath("/" + path.lstrip("/"))
    if root in ("", "/"):
        return path
    return os.path.normpath(os.path.join(root, path.lstrip("/")))


def split_path(value: str | Iterable[str] | None) -> list[str]:
    """Split a colon-separated search path (or pass a list through).

    Empty elements are dropped: to the loader they mean the current directory
    of the process, which a static resolver does not have."""
    if value is None:
        return []
    items = value.split(":") if isinstance(value, str) else list(value)
    return [p for p in items if p]


def default_lib(arch: str | None, elf_class: int) -> str:
    """The usual ``$LIB`` of glibc: lib64 on 64-bit RHEL-style systems, else lib."""
    return "lib64" if elf_class == 64 else "lib"


def default_platform(arch: str | None) -> str:
    """A plausible ``$PLATFORM`` (AT_PLATFORM) for an architecture."""
    return {"armv7l": "v7l", "ppc64le": "power8", "ppc64": "power8"}.get(arch or "", arch or "")


_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?=/|$))")


def expand_dst(entry: str, origin: str | None, *, libc: str = GLIBC,
               lib: str | None = None, platform: str | None = None) -> str | None:
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

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        value = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}[name]
        if value is None:
            raise LookupError(name)
        return value

    try:
        return _DST.sub(sub, entry)
    except LookupError:
        return None


@dataclass
class _ConfWalk:
    """State of one ld.so.conf expansion: the files already read (by device and
    inode, so symlinked directories cannot make one file look like many) and
    the counts the limits apply to."""

    root: str
    top: str
    seen: set[tuple[int, int]] = field(default_factory=set)
    files: int = 0
    listed: int = 0
    dirs: list[str] = field(default_factory=list)

    def limit(self, what: str) -> LimitError:
        return LimitError(rooted(self.root, self.top), f"ld.so.conf {what}")


def parse_ld_so_conf(path: str = "/etc/ld.so.conf", *, root: str = "/") -> list[str]:
    """Directories listed by an ld.so.conf file (logical paths), following
    ``include`` globs (relative patterns are relative to the including file's
    directory) and ignoring comments and ``hwcap`` lines.  A missing file, or
    one that is not a regular file, gives [].

    Each file is read once, however many includes reach it.  Raises LimitError
    beyond MAX_CONF_DEPTH levels of includes, MAX_CONF_FILES files or
    MAX_CONF_DIRS directories: real systems use a handful of each, and an
    include glob through a symlink loop would otherwise multiply per level."""
    walk = _ConfWalk(root, path)
    _read_conf(walk, path, 0)
    return _dedupe(walk.dirs)


def _read_conf(walk: _ConfWalk, path: str, depth: int) -> None:
    """Add the directories of one ld.so.conf file (and its includes) to ``walk``."""
    if depth > MAX_CONF_DEPTH:
        raise walk.limit(f"includes nest deeper than {MAX_CONF_DEPTH} levels (at {path})")
    try:
        fd = open_regular(rooted(walk.root, path))
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in walk.seen:
            return
        walk.seen.add((st.st_dev, st.st_ino))
        walk.files += 1
        if walk.files > MAX_CONF_FILES:
            raise walk.limit(f"includes more than {MAX_CONF_FILES} files")
        text = f.read(MAX_CONF_BYTES + 1)
    if len(text) > MAX_CONF_BYTES:
        raise walk.limit(f"file {path} is larger than {MAX_CONF_BYTES} bytes")
    for line in text.decode("utf-8", "surrogateescape").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                _read_include(walk, path, pattern, depth)
        elif words[0] != "hwcap":
            for d in re.split(r"[\s,:]+", line):
                d = d.split("=", 1)[0]         # old "dir=libtype" syntax
                if d.startswith("/"):
                    walk.dirs.append(os.path.normpath(d))
            if len(walk.dirs) > MAX_CONF_DIRS:
                raise walk.limit(f"lists more than {MAX_CONF_DIRS} directories")


def _read_include(walk: _ConfWalk, path: str, pattern: str, depth: int) -> None:
    """Read the files one ``include`` pattern of ``path`` matches, in sorted order."""
    if not pattern.startswith("/"):
        pattern = os.path.join(os.path.dirname(path), pattern)
    for match in _bounded_glob(walk, rooted(walk.root, pattern)):
        _read_conf(walk, _logical(walk.root, match), depth + 1)


_MAGIC = re.compile(r"[*?[]")


def _bounded_glob(walk: _ConfWalk, pattern: str) -> list[str]:
    """``sorted(glob.glob(pattern))`` for an absolute host pattern, with its work
    bounded: glob would list every directory a pattern like ``*/*/*/x`` reaches,
    which through a symlink loop grows as a power of the depth.  Raises LimitError
    when one level matches, or the whole walk lists, more than MAX_CONF_FILES."""
    parts = [p for p in pattern.split("/") if p]
    paths = ["/"]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        found: list[str] = []
        for base in paths:
            if not _MAGIC.search(part):
                cand = os.path.join(base, part)
                if os.path.lexists(cand) if last else os.path.isdir(cand):
                    found.append(cand)
                continue
            walk.listed += 1
            if walk.listed > MAX_CONF_FILES:
                raise walk.limit(f"include globs list more than {MAX_CONF_FILES} directories")
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:           # like glob: '*' does not match a leading dot
                if (name.startswith(".") and not part.startswith(".")) \
                        or not fnmatch.fnmatchcase(name, part):
                    continue
                cand = os.path.join(base, name)
                if last or os.path.isdir(cand):
                    found.append(cand)
        if len(found) > MAX_CONF_FILES:
            raise walk.limit(f"include {pattern} matches more than {MAX_CONF_FILES} paths")
        paths = found
    return sorted(paths)


def musl_path(musl_arch: str, *, root: str = "/") -> list[str]:
    """musl's system path: /etc/ld-musl-ARCH.path (entries separated by newlines
    or colons) when the file exists, else the built-in default."""
    try:
        text = read_regular(rooted(root, f"/etc/ld-musl-{musl_arch}.path"),
                            MAX_CONF_BYTES).decode("utf-8", "surrogateescape")
    except OSError:
        return list(MUSL_DEFAULT_PATH)
    return [os.path.normpath(p) for p in re.split(r"[\n:]+", text) if p.strip()
            and p.strip().startswith("/")]


def glibc_default_dirs(arch: str | None, elf_class: int) -> list[str]:
    """glibc's built-in directories: the multiarch ones (Debian), the lib64 ones
    (RHEL and manylinux images, 64-bit only), then /lib and /usr/lib."""
    dirs = []
    triplet = MULTIARCH.get(arch or "")
    if triplet:
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if elf_class == 64:
        dirs += ["/lib64", "/usr/lib64"]
    return dirs + ["/lib", "/usr/lib"]


def system_dirs(*, root: str = "/", libc: str = GLIBC, arch: str | None = None,
                elf_class: int = 64, musl_arch: str | None = None) -> list[str]:
    """The system part of the search (after RPATH/LD_LIBRARY_PATH/RUNPATH), as
    logical paths: ld.so.conf then the built-in dirs for glibc, the path file
    or default for musl."""
    if libc == MUSL:
        return musl_path(musl_arch or MUSL_ARCH.get(arch or "", arch or ""), root=root)
    return _dedupe(parse_ld_so_conf("/etc/ld.so.conf", root=root)
                   + glibc_default_dirs(arch, elf_class))


def check_object_limits(what: str, search: Sequence[str]) -> None:
    """Raise LimitError when the object ``what`` has a search path (RPATH/RUNPATH
    entries, or the directories inherited from its loaders) longer than
    MAX_SEARCH_DIRS.  (Its DT_NEEDED entries were capped when it was parsed.)"""
    if len(search) > MAX_SEARCH_DIRS:
        raise LimitError(what, f"a library search path of {len(search)} directories "
                               f"(RPATH/RUNPATH), more than the limit of {MAX_SEARCH_DIRS}")


def _logical(root: str, host: str) -> str:
    """Inverse of :func:`rooted` for a host path inside ``root``."""
    if root in ("", "/"):
        return os.path.normpath(host)
    return os.path.normpath("/" + os.path.relpath(host, os.path.normpath(root)))


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
