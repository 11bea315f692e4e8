"""Static dependency trees: which file each DT_NEEDED resolves to, as ld.so would.

``resolve_tree(path)`` walks the dependencies breadth-first (the loaders' load
order), resolving each name once, from the context of the first object that
needs it, with the search order of glibc or musl (see ``fastelf.ldpaths``).
Every file is parsed once with ``fastelf._elf.parse`` (cached by realpath), and
candidates of another ELF class, byte order or machine are skipped, as ld.so
skips them.  Nothing is executed.
"""

from __future__ import annotations

import collections
import mmap
import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ._elf import (
    DF_1_NODEFLIB,
    DT_FLAGS_1,
    EF_ARM_ABI_FLOAT_HARD,
    EM_ARM,
    ET_DYN,
    ElfError,
    ElfFile,
    parse,
)
from .errors import LddError
from .hostfile import open_regular
from .ldpaths import (
    GLIBC,
    MUSL,
    MUSL_ARCH,
    check_object_limits,
    default_lib,
    default_platform,
    expand_dst,
    rooted,
    split_path,
    system_dirs,
)
from .libc import libc_of

__all__ = ["LddError", "Library", "Tree", "ElfCache", "Node", "Searcher", "SearchDir",
           "SearchResult", "Skipped", "resolve_tree", "detect_libc"]

_MUSL_RESERVED = re.compile(r"lib(c|pthread|rt|m|dl|util|xnet)\.so(\..*)?")


class ElfCache:
    """Parsed ELF files keyed by realpath; each file is read once.

    It also remembers the names each directory holds, so the search asks the
    file system once per directory rather than once per (directory, name):
    a file with hundreds of DT_NEEDED and RPATH entries costs set lookups,
    not hundreds of thousands of stat calls."""

    def __init__(self) -> None:
        self._by_real: dict[str, ElfFile | OSError | ElfError] = {}
        self._listing: dict[str, frozenset[str] | None] = {}
        self.lookups = 0              # file-system probes of candidates (for tests)

    def may_hold(self, directory: str, name: str) -> bool:
        """False when ``directory`` surely has no entry ``name`` (it is missing,
        not a directory, or listed without it).  An unlistable directory that
        can still be searched (execute-only) answers True: the caller probes."""
        if directory not in self._listing:
            try:
                names: frozenset[str] | None = frozenset(os.listdir(directory))
            except PermissionError:
                names = None                 # probe each name, as ld.so would
            except OSError:
                names = frozenset()          # missing, or not a directory
            self._listing[directory] = names
        names = self._listing[directory]
        return names is None or name in names

    def load(self, path: str) -> ElfFile:
        """The ElfFile for ``path``; raises OSError or ElfError (also cached)."""
        real = os.path.realpath(path)
        hit = self._by_real.get(real)
        if hit is None:
            try:
                hit = self._parse(real)
            except (OSError, ElfError) as exc:
                hit = exc
            self._by_real[real] = hit
        if isinstance(hit, Exception):
            raise hit
        return hit

    @staticmethod
    def _parse(real: str) -> ElfFile:
        # a FIFO, device or directory is refused without blocking (see fastelf.hostfile)
        with os.fdopen(open_regular(real), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ElfError("empty file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return parse(mm)


class Library:
    """One resolved (or missing) DT_NEEDED name."""

    __slots__ = ("name", "path", "realpath", "found_via", "soname", "needed", "rpath",
                 "runpath", "chain", "skipped", "error")

    def __init__(self, name: str, path: str | None, realpath: str | None,
                 found_via: str | None, elf: ElfFile | None, chain: list[str],
                 skipped: list[Skipped], error: str | None = None) -> None:
        self.name = name
        self.path = path
        self.realpath = realpath
        self.found_via = found_via
        self.soname = elf.soname if elf is not None else None
        self.needed = list(elf.needed) if elf is not None else []
        self.rpath = split_path(elf.rpath) if elf is not None else []
        self.runpath = split_path(elf.runpath) if elf is not None else []
        self.chain = chain
        self.skipped = skipped
        self.error = error          # why the loader would stop at a bad candidate

    @property
    def found(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path, "realpath": self.realpath, "found_via": self.found_via,
            "soname": self.soname, "needed": self.needed, "rpath": self.rpath,
            "runpath": self.runpath, "chain": self.chain,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "error": self.error,
        }

    def __repr__(self) -> str:
        return f"<Library {self.name} => {self.path}>"


class Tree:
    """The dependency tree of one ELF file."""

    def __init__(self, path: str, elf: ElfFile, libc: str, libraries: dict[str, Library],
                 search: dict[str, str | list[str]]) -> None:
        self.path = path
        self.realpath = os.path.realpath(path)
        self.elf = elf
        self.libc = libc
        self.libraries: dict[str, Library] = libraries
        self.search = search

    @property
    def needed(self) -> list[str]:
        return list(self.elf.needed)

    @property
    def missing(self) -> list[str]:
        return [n for n, lib in self.libraries.items() if lib.path is None]

    def resolved(self) -> dict[str, str | None]:
        """{needed name: host path or None} in load order."""
        return {n: lib.path for n, lib in self.libraries.items()}

    def to_dict(self) -> dict[str, object]:
        e = self.elf
        return {
            "path": self.path,
            "realpath": self.realpath,
            "arch": e.arch,
            "elf_class": e.elf_class,
            "machine": e.machine,
            "libc": self.libc,
            "interpreter": e.interpreter,
            "soname": e.soname,
            "needed": list(e.needed),
            "rpath": split_path(e.rpath),
            "runpath": split_path(e.runpath),
            "search": dict(self.search),
            "libraries": {n: lib.to_dict() for n, lib in self.libraries.items()},
            "missing": self.missing,
        }


def detect_libc(elf: ElfFile) -> str:
    """musl when the file says so (see :func:`fastelf.libc.libc_of`), else glibc."""
    return libc_of(elf) or GLIBC


class SearchDir(NamedTuple):
    """One directory of an object's search order, with the source that put it there
    (``rpath``, ``ld_library_path``, ``runpath``, ``system`` or ``ldpaths``)."""
    directory: str
    label: str


class Skipped(NamedTuple):
    """A candidate file the loader passed over (another class or machine), and why."""
    path: str
    reason: str


class SearchResult(NamedTuple):
    """What :meth:`Searcher.find` found for one DT_NEEDED name.  ``path`` and ``elf``
    are None when nothing loadable was found; ``error`` then says why the loader
    would stop (a bad candidate that ends the search), or is None (not found)."""
    path: str | None
    elf: ElfFile | None
    found_via: str | None      # a SearchDir label, "direct" or "interpreter"
    skipped: list[Skipped]
    error: str | None


class Node:
    """One loaded object: its ElfFile, the object that loaded it, its $ORIGIN.

    ``rpath_dirs`` and ``order`` memoise the node's expanded DT_RPATH and its
    whole search order (filled by Searcher), so they are computed once per
    object, not once per name it needs."""

    __slots__ = ("path", "elf", "loader", "origin", "chain", "rpath_dirs", "order")

    def __init__(self, path: str | None, elf: ElfFile, loader: Node | None, origin: str | None,
                 chain: list[str]) -> None:
        self.path, self.elf, self.loader, self.origin, self.chain = (
            path, elf, loader, origin, chain)
        self.rpath_dirs: list[str] | None = None
        self.order: list[SearchDir] | None = None


class Searcher:
    """ld.so's search, for the objects of one process image: which file a
    DT_NEEDED name loads, from the context of the object that needs it.

    ``top`` is the ElfFile of the main object: its class, machine, ABI and
    interpreter decide what a candidate must match and where the system
    search looks.  The other arguments are those of :func:`resolve_tree`.
    """

    def __init__(self, top: ElfFile, *, root: str = "/",
                 ld_library_path: str | Sequence[str] | None = None,
                 ldpaths: Sequence[str] | None = None, libc: str | None = None,
                 lib: str | None = None, platform: str | None = None,
                 cache: ElfCache | None = None) -> None:
        self.top, self.root = top, root
        self.cache = cache or ElfCache()
        self.flavour = libc or detect_libc(top)
        if self.flavour not in (GLIBC, MUSL):
            raise ValueError(f"libc must be 'glibc' or 'musl', not {libc!r}")
        self.lib = lib if lib is not None else default_lib(top.arch, top.elf_class)
        self.platform = platform if platform is not None else default_platform(top.arch)
        musl_arch = None
        if self.flavour == MUSL:
            m = re.search(r"ld-musl-([^/]+)\.so", top.interpreter or "")
            musl_arch = m.group(1) if m else MUSL_ARCH.get(top.arch or "", top.arch or "")
        self.llp = [rooted(root, d) for d in split_path(ld_library_path)]
        if ldpaths is not None:
            self.system = [os.path.abspath(d) for d in ldpaths]
            self.system_label = "ldpaths"
        else:
            self.system = [rooted(root, d) for d in system_dirs(
                root=root, libc=self.flavour, arch=top.arch, elf_class=top.elf_class,
                musl_arch=musl_arch)]
            self.system_label = "system"
        self.interp_path = rooted(root, top.interpreter) if top.interpreter else None
        self.interp_names: set[str] = set()
        if self.interp_path:
            self.interp_names.add(os.path.basename(self.interp_path))
            try:
                interp_soname = self.cache.load(self.interp_path).soname
            except (OSError, ElfError):
                interp_soname = None
            if interp_soname:
                self.interp_names.add(interp_soname)

    def expand(self, entries: Iterable[str], node: Node) -> list[str]:
        out = []
        for entry in entries:
            d = expand_dst(entry, node.origin, libc=self.flavour, lib=self.lib,
                           platform=self.platform)
            if d is None:
                continue
            if not (entry.startswith("$ORIGIN") or entry.startswith("${ORIGIN}")):
                d = rooted(self.root, d) if d.startswith("/") else d
            out.append(d)
        return out

    def check(self, elf: ElfFile) -> tuple[str | None, bool]:
        """(reason, fatal) for a candidate the loader would not use.  glibc
        skips other classes and machines (also the other ARM float ABI) and
        keeps searching; other mismatches stop the load.  musl uses the first
        file it can open, whatever it is."""
        top, musl = self.top, self.flavour == MUSL
        if elf.elf_class != top.elf_class:
            return f"ELF{elf.elf_class}, not ELF{top.elf_class}", musl
        if elf.machine != top.machine:
            return f"machine {elf.arch or elf.machine}, not {top.arch or top.machine}", musl
        if elf.machine == EM_ARM and \
                (elf.flags & EF_ARM_ABI_FLOAT_HARD) != (top.flags & EF_ARM_ABI_FLOAT_HARD):
            return "other ARM float ABI", musl
        if elf.little_endian != top.little_endian:
            return "other byte order", True
        if elf.e_type != ET_DYN:
            return "not a shared object", True
        return None, False

    def _rpath_of(self, node: Node) -> list[str]:
        """The node's own DT_RPATH, expanded (memoised on the node)."""
        if node.rpath_dirs is None:
            node.rpath_dirs = list(dict.fromkeys(self.expand(split_path(node.elf.rpath), node)))
        return node.rpath_dirs

    def search_order(self, node: Node) -> list[SearchDir]:
        """The directories (each with its label) in the order the loader searches them
        for ``node``'s needs, without duplicates; computed once per node.  Raises LimitError
        for an object beyond the limits of :func:`fastelf.ldpaths.check_object_limits`."""
        if node.order is None:
            node.order = self._search_order(node)
            check_object_limits(node.path or node.chain[0],
                                [e.directory for e in node.order
                                 if e.label != self.system_label])
        return node.order

    def _search_order(self, node: Node) -> list[SearchDir]:
        dirs: list[tuple[str, str]] = []
        for entries in (split_path(node.elf.rpath), split_path(node.elf.runpath)):
            check_object_limits(node.path or node.chain[0], entries)
        if self.flavour == GLIBC:
            if not node.elf.runpath:
                n: Node | None = node
                while n is not None:
                    if not n.elf.runpath:        # RPATH is ignored beside a RUNPATH
                        dirs += [(d, "rpath") for d in self._rpath_of(n)]
                    n = n.loader
            dirs += [(d, "ld_library_path") for d in self.llp]
            dirs += [(d, "runpath") for d in self.expand(split_path(node.elf.runpath), node)]
            flags_1 = dict(node.elf.dynamic or ()).get(DT_FLAGS_1, 0)
            if not flags_1 & DF_1_NODEFLIB:
                dirs += [(d, self.system_label) for d in self.system]
        else:
            dirs += [(d, "ld_library_path") for d in self.llp]
            n = node
            while n is not None:
                if n.elf.runpath:
                    dirs += [(d, "runpath") for d in self.expand(split_path(n.elf.runpath), n)]
                else:
                    dirs += [(d, "rpath") for d in self._rpath_of(n)]
                n = n.loader
            dirs += [(d, self.system_label) for d in self.system]
        seen, out = set(), []
        for d, label in dirs:
            if d not in seen:
                seen.add(d)
                out.append(SearchDir(d, label))
        return out

    def try_file(self, candidate: str,
                 skipped: list[Skipped]) -> tuple[ElfFile | None, str | None]:
        """(elf, error): the ElfFile to use, or an error that ends the search
        (as it ends the loader's), or (None, None) to keep searching."""
        self.cache.lookups += 1
        if not os.path.isfile(candidate) or not os.access(candidate, os.R_OK):
            return None, None
        try:
            elf = self.cache.load(candidate)
        except (OSError, ElfError) as exc:
            return None, f"{candidate}: not a loadable ELF file ({exc})"
        why, fatal = self.check(elf)
        if why is None:
            return elf, None
        if fatal:
            return None, f"{candidate}: {why}"
        skipped.append(Skipped(candidate, why))
        return None, None

    def find(self, name: str, node: Node) -> SearchResult:
        """The file the loader would load for ``name`` needed by ``node``."""
        skipped: list[Skipped] = []
        if "/" in name:
            candidate = rooted(self.root, name) if name.startswith("/") else os.path.abspath(name)
            elf, err = self.try_file(candidate, skipped)
            if elf is not None:
                return SearchResult(candidate, elf, "direct", skipped, None)
            return SearchResult(None, None, None, skipped, err)
        if self.interp_path and ((self.flavour == MUSL and _MUSL_RESERVED.fullmatch(name))
                                 or name in self.interp_names):
            # the loader is mapped first and answers to its names (musl's is
            # also libc, and takes the names of libc's parts)
            elf, err = self.try_file(self.interp_path, skipped)
            if elf is not None:
                return SearchResult(self.interp_path, elf, "interpreter", skipped, None)
        for d, label in self.search_order(node):
            if not self.cache.may_hold(d, name):
                continue
            candidate = os.path.join(d, name)
            elf, err = self.try_file(candidate, skipped)
            if elf is not None:
                return SearchResult(candidate, elf, label, skipped, None)
            if err is not None:
                return SearchResult(None, None, None, skipped, err)
        return SearchResult(None, None, None, skipped, None)


def resolve_tree(
    path: str | os.PathLike,
    *,
    root: str = "/",
    ld_library_path: str | Sequence[str] | None = None,
    ldpaths: Sequence[str] | None = None,
    libc: str | None = None,
    lib: str | None = None,
    platform: str | None = None,
    cache: ElfCache | None = None,
) -> Tree:
    """Resolve the dependencies of the ELF file at ``path`` without running it.

    root             sysroot: system directories, ld.so.conf, the musl path file,
                     absolute RPATH/RUNPATH and LD_LIBRARY_PATH entries are looked
                     up inside it.  $ORIGIN expands to an object's real location.
    ld_library_path  LD_LIBRARY_PATH as a string or a list (the environment is
                     not read: pass ``os.environ.get("LD_LIBRARY_PATH")`` for that).
    ldpaths          host directories replacing the system search (ld.so.conf and
                     built-in directories, or the musl path) entirely.
    libc             "glibc" or "musl"; detected from the file by default.
    lib, platform    values of $LIB and $PLATFORM (glibc only).
    cache            an ElfCache shared between calls.

    Raises LddError when ``path`` itself cannot be read or parsed.
    """
    path = os.path.abspath(os.fspath(path))
    cache = cache or ElfCache()
    try:
        top = cache.load(path)
    except (OSError, ElfError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LddError(path, reason) from None
    searcher = Searcher(top, root=root, ld_library_path=ld_library_path, ldpaths=ldpaths,
                        libc=libc, lib=lib, platform=platform, cache=cache)
    find = searcher.find

    def origin_of(p: str, is_top: bool) -> str:
        # glibc takes the main program's origin from /proc/self/exe (symlinks
        # resolved) and a library's from the name it was opened by.
        if is_top and top.interpreter:
            return os.path.dirname(os.path.realpath(p))
        return os.path.dirname(p)

    root_node = Node(path, top, None, origin_of(path, True), [path])
    libraries: dict[str, Library] = {}
    by_real: dict[str, Library | None] = {os.path.realpath(path): None}  # None: the top
    by_soname: dict[str, str] = {}
    if top.soname:
        by_soname[top.soname] = ""              # the top object itself
    queue = collections.deque([root_node])
    while queue:
        node = queue.popleft()
        searcher.search_order(node)          # checks the object's limits once
        for name in node.elf.needed:
            if name in libraries:
                continue
            if name in by_soname:            # matches the DT_SONAME of a loaded object
                same = libraries.get(by_soname[name])
                if same is None:
                    libraries[name] = Library(name, path, os.path.realpath(path), "loaded",
                                              top, node.chain + [name], [])
                else:
                    libraries[name] = Library(name, same.path, same.realpath, "loaded",
                                              None, node.chain + [name], [])
                    libraries[name].soname = same.soname
                continue
            hit = find(name, node)
            found, elf = hit.path, hit.elf
            chain = node.chain + [name]
            if found is None or elf is None:
                libraries[name] = Library(name, None, None, None, None, chain, hit.skipped,
                                          hit.error)
                continue
            real = os.path.realpath(found)
            libraries[name] = Library(name, os.path.normpath(found), real, hit.found_via, elf,
                                      chain, hit.skipped)
            if elf.soname and elf.soname != name:
                by_soname.setdefault(elf.soname, name)
            if real in by_real:
                continue                     # the same file under another name
            by_real[real] = libraries[name]
            queue.append(Node(found, elf, node, origin_of(found, False), chain))
    search: dict[str, str | list[str]] = {
        "root": root,
        "ld_library_path": searcher.llp,
        searcher.system_label: searcher.system,
    }
    return Tree(path, top, searcher.flavour, libraries, search)
