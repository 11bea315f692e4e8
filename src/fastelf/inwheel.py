"""The ELF members of a wheel as the loader will see them once installed.

What the audit keeps of each ELF member (:class:`ElfInfo`), where a member
lands in site-packages (:func:`install_path`), which in-wheel directory an
``$ORIGIN`` RPATH element names (:func:`wheel_dir_of`), and how ld.so resolves
one member's DT_NEEDED names to other members (:class:`Resolver`).  This layer
knows the wheel's members and ld.so's search order, nothing of policies or
verdicts: :mod:`fastelf.audit` judges on top of it, :mod:`fastelf.repair`
and :mod:`fastelf.check` read the same facts.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from ._elf import STT_FUNC, ElfFile, Import
from .elfscan import MemberElfError, extension_init_names, iter_elf_members
from .errors import LimitError, WheelError
from .ldpaths import check_object_limits, split_path
from .libc import libc_of
from .wheel import WheelReader

if TYPE_CHECKING:
    from .cache import WheelSession

# visit(requester, needed name, the member it resolves to or None): one edge of a tree
Visit = Callable[["ElfInfo", str, Optional["ElfInfo"]], None]
# (RPATH directories, RUNPATH directories) of one member, inside the wheel
SearchDirs = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass
class ElfInfo:
    """What the audit retained of one ELF member."""

    path: str
    arch: str | None
    libc: str | None
    interpreter: str | None
    needed: list[str]
    soname: str | None
    rpath: str | None
    runpath: str | None
    extension: bool
    isa_level: int | None
    exec_stack: bool | None
    imports: list[Import] = field(repr=False, default_factory=list)
    version_needs: dict[str, list[str]] = field(default_factory=dict)
    relr: bool = False      # DT_RELR: only glibc >= 2.36 and musl >= 1.2.4 apply it

    def to_dict(self) -> dict:
        return {"path": self.path, "arch": self.arch, "libc": self.libc,
                "interpreter": self.interpreter, "needed": self.needed, "soname": self.soname,
                "rpath": self.rpath, "runpath": self.runpath, "extension": self.extension,
                "x86_isa_level": self.isa_level, "exec_stack": self.exec_stack,
                "dt_relr": self.relr,
                "version_needs": {k: sorted(v) for k, v in sorted(self.version_needs.items())}}


def elf_info(path: str, elf: ElfFile) -> ElfInfo:
    """The audit's view of a parsed ELF file stored at ``path`` in the wheel."""
    init = extension_init_names(path)
    extension = any(name in init and typ == STT_FUNC for name, _v, _b, typ in elf.exports)
    return ElfInfo(
        path=path, arch=elf.arch, libc=libc_of(elf), interpreter=elf.interpreter,
        needed=list(elf.needed), soname=elf.soname, rpath=elf.rpath, runpath=elf.runpath,
        extension=extension, isa_level=elf.x86_isa_level if elf.arch == "x86_64" else None,
        exec_stack=elf.exec_stack, imports=elf.imports,
        version_needs={lib: list(v) for lib, v in elf.version_needs.items()}, relr=elf.relr)


def read_elf_infos(reader: WheelReader, elf_cache: WheelSession | None = None) -> list[ElfInfo]:
    """Parse every ELF member of an open wheel once; a broken ELF raises WheelError.

    ``elf_cache`` (a :class:`fastelf.cache.WheelSession`) supplies the facts of
    members it has seen, byte for byte, and parses the others."""
    try:
        if elf_cache is not None:
            infos: list[ElfInfo] = elf_cache.elf_infos(reader)
        else:
            infos = [elf_info(member.name, elf) for member, elf in iter_elf_members(reader)]
    except MemberElfError as e:
        if e.limit:
            raise LimitError(reader.path, f"member {e.member!r} breaks a limit: "
                                          f"{e.reason}") from None
        raise WheelError(reader.path, f"member {e.member!r} is not a valid ELF file: "
                                      f"{e.reason}") from None
    return infos


# ------------------------------------------------------------------ install paths

_DATA_LIB_RE = re.compile(r"^[^/]+\.data/(?:platlib|purelib)/")


def install_path(member: str) -> str:
    """Where a member lands relative to site-packages: ``X.data/platlib/a/b`` -> ``a/b``.

    ``$ORIGIN`` means the installed file's directory, so RPATHs are resolved
    against this path, not the member's path in the zip.
    """
    return _DATA_LIB_RE.sub("", member)


_ORIGIN_RE = re.compile(r"^\$(ORIGIN|\{ORIGIN\})(?=/|$)")


def wheel_dir_of(entry: str, origin: str) -> str | None:
    """The in-wheel directory ('' = the root) that one RPATH/RUNPATH element names.

    ``origin`` is the installed directory of the file holding the element.
    None when the element is not ``$ORIGIN``-relative or leaves the wheel.
    """
    m = _ORIGIN_RE.match(entry)
    rest = entry[m.end():] if m else None
    if rest is None or "$" in rest:
        return None
    rel = posixpath.normpath(posixpath.join(origin or ".", "." + rest))
    if rel == ".." or rel.startswith("../"):
        return None
    return "" if rel == "." else rel


def _search_dirs(value: str | None, origin: str) -> list[str]:
    """In-wheel directories named by an RPATH/RUNPATH string."""
    dirs = (wheel_dir_of(e, origin) for e in split_path(value))
    return [d for d in dirs if d is not None]


# ------------------------------------------------------------------ resolution

class Resolver:
    """Resolve DT_NEEDED names to other ELF members, following ld.so's order.

    The work is linear in the input, however many DT_NEEDED and RPATH entries
    a hostile member has: each member's own search directories are computed
    once (deduplicated, and only those holding some ELF member kept, the
    others cannot resolve anything in the wheel); a name is looked up in an
    index of the members by file name, and the first of its directories in
    search order wins; a member reached again with the same inherited
    directories is not walked again, from any root.

    A name holding a ``/`` is never searched by ld.so: it is opened as given,
    relative to the process's current directory, so it never resolves to a
    member of the wheel (whatever the current directory is when it loads).
    """

    def __init__(self, elfs: dict[str, ElfInfo], wheel: str = "wheel") -> None:
        self.elfs = elfs      # install path -> ElfInfo
        self.wheel = wheel
        self._homes: dict[str, dict[str, ElfInfo]] = {}     # file name -> {in-wheel dir: info}
        for path, info in elfs.items():
            d, base = posixpath.split(path)
            self._homes.setdefault(base, {})[d] = info
        self._member_dirs = {posixpath.dirname(p) for p in elfs}
        self._own: dict[str, SearchDirs] = {}       # member -> (rpath dirs, runpath dirs)
        self._walked: set[tuple[str, tuple[str, ...]]] = set()   # (member, inherited dirs)
        self.lookups = 0              # index probes, for tests

    def _dirs(self, info: ElfInfo) -> SearchDirs:
        """(RPATH dirs, RUNPATH dirs) of a member inside the wheel, each once."""
        hit = self._own.get(info.path)
        if hit is None:
            what = f"{self.wheel}: member {info.path!r}"
            rpath, runpath = split_path(info.rpath), split_path(info.runpath)
            check_object_limits(what, rpath)
            check_object_limits(what, runpath)
            origin = posixpath.dirname(install_path(info.path))
            hit = self._own[info.path] = (self._kept_dirs(info.rpath, origin),
                                          self._kept_dirs(info.runpath, origin))
        return hit

    def _kept_dirs(self, value: str | None, origin: str) -> tuple[str, ...]:
        """The in-wheel directories of one search path that hold some ELF member, each once."""
        return tuple(d for d in dict.fromkeys(_search_dirs(value, origin))
                     if d in self._member_dirs)

    def search_order(self, info: ElfInfo, chain_rpaths: tuple[str, ...]) -> dict[str, int]:
        """{dir: position} in ld.so's order for the needs of ``info``, whose loaders'
        RPATH directories are ``chain_rpaths``."""
        rpath, runpath = self._dirs(info)
        dirs = (rpath + chain_rpaths if info.runpath is None else ()) + runpath
        order: dict[str, int] = {}
        for d in dirs:
            order.setdefault(d, len(order))
        return order

    def find(self, info: ElfInfo, lib: str, order: dict[str, int]) -> ElfInfo | None:
        """The member ``lib`` resolves to from ``info`` with search ``order``, or None."""
        self.lookups += 1
        homes = self._homes.get(lib) if "/" not in lib else None
        if not homes:
            return None
        best: tuple[int, ElfInfo] | None = None
        for d, found in homes.items():
            pos = order.get(d)
            if pos is not None and found.arch == info.arch and (best is None or pos < best[0]):
                best = (pos, found)
        return best[1] if best else None

    def walk(self, root: ElfInfo, visit: Visit) -> None:
        """Call visit(requester, lib, resolved_or_None) for each edge of root's tree."""
        seen: set[str] = set()
        stack: list[tuple[ElfInfo, tuple[str, ...]]] = [(root, ())]
        while stack:
            info, chain = stack.pop()
            if info.path in seen or (info.path, chain) in self._walked:
                continue
            seen.add(info.path)
            self._walked.add((info.path, chain))
            order = self.search_order(info, chain)
            own = self._dirs(info)[0] if info.runpath is None else ()
            inherited = tuple(dict.fromkeys(own + chain))
            check_object_limits(f"{self.wheel}: member {info.path!r}", inherited)
            for lib in info.needed:
                found = self.find(info, lib, order)
                visit(info, lib, found)
                if found is not None:
                    stack.append((found, inherited))
