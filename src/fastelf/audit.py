"""Audit one wheel: which platform tags do its ELF files allow, and why not others.

Everything is decided from the wheel's own bytes: the architecture and the
libc (glibc or musl) come from its ELF files, never from the host, and no
host library is opened.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from dataclasses import dataclass, field

from . import policy as pol
from ._elf import STB_WEAK, STT_FUNC, STT_NOTYPE
from .elfscan import MemberElfError, extension_init_names, iter_elf_members
from .errors import FastElfError, LimitError, WheelError
from .ldpaths import split_path
from .libc import libc_of
from .record import verify_record as verify_record_of
from .wheel import DEFAULT_LIMITS, Limits, WheelReader

SCHEMA_VERSION = 1
_WHEEL_NAME_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
    r"-(?P<plat>[^-]+)\.whl$")
_PYFPE = frozenset(("PyFPE_jbuf", "PyFPE_dummy", "PyFPE_counter"))


def platform_tags_of(filename: str) -> list:
    m = _WHEEL_NAME_RE.match(os.path.basename(filename))
    return m.group("plat").split(".") if m else []


@dataclass
class ElfInfo:
    """What the audit retained of one ELF member."""

    path: str
    arch: str | None
    libc: str | None
    interpreter: str | None
    needed: list
    soname: str | None
    rpath: str | None
    runpath: str | None
    extension: bool
    isa_level: int | None
    exec_stack: bool | None
    imports: list = field(repr=False, default_factory=list)
    version_needs: dict = field(default_factory=dict)

    def to_dict(self):
        return {"path": self.path, "arch": self.arch, "libc": self.libc,
                "interpreter": self.interpreter, "needed": self.needed, "soname": self.soname,
                "rpath": self.rpath, "runpath": self.runpath, "extension": self.extension,
                "x86_isa_level": self.isa_level, "exec_stack": self.exec_stack,
                "version_needs": {k: sorted(v) for k, v in sorted(self.version_needs.items())}}


@dataclass
class PolicyCheck:
    """One policy's verdict and, when it fails, every reason."""

    tag: str
    aliases: tuple
    satisfied: bool
    external_libraries: dict = field(default_factory=dict)   # soname -> [members]
    symbol_versions: dict = field(default_factory=dict)      # version -> {member: [symbols]}
    blacklisted_symbols: dict = field(default_factory=dict)  # soname -> {member: [symbols]}
    unavailable_symbols: dict = field(default_factory=dict)  # member -> [symbols]
    isa: dict = field(default_factory=dict)                  # member -> level

    def fails_beyond_libraries(self) -> bool:
        """Fails for a reason that grafting libraries cannot remove."""
        return bool(self.symbol_versions or self.blacklisted_symbols
                    or self.unavailable_symbols or self.isa)

    def reasons(self, limit=None):
        """One line per reason; ``limit`` caps the members and symbols named in each."""
        def names(items):
            items = list(items)
            if limit is None or len(items) <= limit:
                return ", ".join(items)
            return ", ".join(items[:limit]) + f" and {len(items) - limit} more"

        def by_member(who):
            parts = [f"{m}: {names(s) if s else '(no symbol named)'}" for m, s in who.items()]
            if limit is not None and len(parts) > limit:
                parts = parts[:limit] + [f"{len(parts) - limit} more files"]
            return "; ".join(parts)

        out = []
        for lib, who in sorted(self.external_libraries.items()):
            out.append(f"needs external library {lib} (by {names(who)})")
        for ver, who in sorted(self.symbol_versions.items()):
            out.append(f"symbol version {ver} is too recent ({by_member(who)})")
        for lib, who in sorted(self.blacklisted_symbols.items()):
            out.append(f"uses blacklisted symbols of {lib} ({by_member(who)})")
        for m, syms in sorted(self.unavailable_symbols.items()):
            out.append(f"{m} uses symbols this libc version lacks: {names(syms)}")
        for m, level in sorted(self.isa.items()):
            out.append(f"{m} requires x86-64-v{level}")
        return out

    def to_dict(self):
        return {"tag": self.tag, "aliases": list(self.aliases), "satisfied": self.satisfied,
                "external_libraries": self.external_libraries,
                "symbol_versions": self.symbol_versions,
                "blacklisted_symbols": self.blacklisted_symbols,
                "unavailable_symbols": self.unavailable_symbols, "isa": self.isa}


@dataclass
class AuditResult:
    """The verdict on one wheel.  ``to_dict()`` gives the JSON form."""

    wheel: str
    path: str
    pure: bool = False
    arch: str | None = None
    libc: str | None = None
    best_tag: str | None = None
    tags: list = field(default_factory=list)          # satisfied tags, best first
    claimed_tags: list = field(default_factory=list)
    unsatisfied_claims: dict = field(default_factory=dict)   # tag -> reason
    elfs: list = field(default_factory=list)
    ignored: dict = field(default_factory=dict)       # member -> reason
    policies: list = field(default_factory=list)
    versioned_symbols: dict = field(default_factory=dict)
    external_libraries: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)      # wheel-wide remarks and violations
    blocking: list = field(default_factory=list)      # the violations that no tag allows
    error: str | None = None
    record: object = None       # a record.RecordReport when RECORD was verified

    @property
    def ok(self) -> bool:
        """No error, every platform tag in the file name is satisfied, RECORD (if checked) holds."""
        return (self.error is None and not self.unsatisfied_claims
                and (self.record is None or self.record.ok))

    def to_dict(self):
        d = {"version": SCHEMA_VERSION, "wheel": self.wheel, "path": self.path,
             "ok": self.ok, "pure": self.pure}
        if self.error is not None:
            d["error"] = self.error
            return d
        d.update({
            "arch": self.arch, "libc": self.libc, "best_tag": self.best_tag,
            "tags": self.tags, "claimed_tags": self.claimed_tags,
            "unsatisfied_claims": self.unsatisfied_claims,
            "versioned_symbols": self.versioned_symbols,
            "external_libraries": self.external_libraries,
            "problems": self.problems, "ignored": self.ignored,
            "elfs": [e.to_dict() for e in self.elfs],
            "policies": [p.to_dict() for p in self.policies],
        })
        if self.record is not None:
            d["record"] = self.record.to_dict()
        return d


# ------------------------------------------------------------------ facts

def elf_info(path: str, elf) -> ElfInfo:
    """The audit's view of a parsed ELF file stored at ``path`` in the wheel."""
    init = extension_init_names(path)
    extension = any(name in init and typ == STT_FUNC for name, _v, _b, typ in elf.exports)
    return ElfInfo(
        path=path, arch=elf.arch, libc=libc_of(elf), interpreter=elf.interpreter,
        needed=list(elf.needed), soname=elf.soname, rpath=elf.rpath, runpath=elf.runpath,
        extension=extension, isa_level=elf.x86_isa_level if elf.arch == "x86_64" else None,
        exec_stack=elf.exec_stack, imports=elf.imports,
        version_needs={lib: list(v) for lib, v in elf.version_needs.items()})


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


def _search_dirs(value: str | None, origin: str) -> list:
    """In-wheel directories named by an RPATH/RUNPATH string."""
    dirs = (wheel_dir_of(e, origin) for e in split_path(value))
    return [d for d in dirs if d is not None]


class _Resolver:
    """Resolve DT_NEEDED names to other ELF members, following ld.so's order."""

    def __init__(self, elfs: dict):
        self.elfs = elfs      # install path -> ElfInfo

    def find(self, info: ElfInfo, lib: str, chain_rpaths: list):
        origin = posixpath.dirname(install_path(info.path))
        dirs = []
        if info.runpath is None:
            dirs += _search_dirs(info.rpath, origin)
            dirs += chain_rpaths
        dirs += _search_dirs(info.runpath, origin)
        for d in dirs:
            cand = posixpath.join(d, lib) if d else lib
            found = self.elfs.get(cand)
            if found is not None and found.arch == info.arch:
                return found
        return None

    def walk(self, root: ElfInfo, visit):
        """Call visit(requester, lib, resolved_or_None) for each edge of root's tree."""
        seen = set()
        stack = [(root, [])]
        while stack:
            info, chain = stack.pop()
            if info.path in seen:
                continue
            seen.add(info.path)
            own = [] if info.runpath is not None else _search_dirs(
                info.rpath, posixpath.dirname(install_path(info.path)))
            for lib in info.needed:
                found = self.find(info, lib, chain)
                visit(info, lib, found)
                if found is not None:
                    stack.append((found, own + chain))


# ------------------------------------------------------------------ audit

def read_elf_infos(reader: WheelReader) -> list:
    """Parse every ELF member of an open wheel once; a broken ELF raises WheelError."""
    infos = []
    try:
        for member, elf in iter_elf_members(reader):
            infos.append(elf_info(member.name, elf))
    except MemberElfError as e:
        if e.limit:
            raise LimitError(reader.path, f"member {e.member!r} breaks a limit: "
                                          f"{e.reason}") from None
        raise WheelError(reader.path, f"member {e.member!r} is not a valid ELF file: "
                                      f"{e.reason}") from None
    return infos


def judge(infos: list, wheel: str, path: str = "", *, exclude=(),
          disable_isa_ext_check: bool = False) -> AuditResult:
    """The verdict on a set of ELF members (``wheel`` is the file name, for its tags).

    ``exclude``: glob patterns of sonames to leave out of the analysis, as
    if every policy allowed them (auditwheel's ``--exclude``).
    """
    result = AuditResult(wheel=wheel, path=path, claimed_tags=platform_tags_of(wheel))
    _judge(result, infos, disable_isa_ext_check, tuple(exclude))
    return result


def audit_wheel(source, *, limits: Limits = DEFAULT_LIMITS, filename: str | None = None,
                exclude=(), disable_isa_ext_check: bool = False,
                verify_record: bool = False) -> AuditResult:
    """Audit a wheel given as a path, bytes, or binary file object.

    Raises WheelError for an unreadable wheel; returns an AuditResult otherwise.
    ``verify_record``: also hash every member against RECORD (see
    :mod:`fastelf.record`); what does not match is in ``result.record``.
    """
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else \
        getattr(source, "name", "<bytes>")
    name = filename or os.path.basename(str(path))
    with WheelReader(source, limits) as reader:
        infos = read_elf_infos(reader)
        record = verify_record_of(reader) if verify_record else None
    result = judge(infos, name, str(path), exclude=exclude,
                   disable_isa_ext_check=disable_isa_ext_check)
    result.record = record
    return result


def audit_path(path, **kw) -> AuditResult:
    """Like audit_wheel, but a broken wheel gives a result with ``error`` set."""
    try:
        return audit_wheel(path, **kw)
    except (FastElfError, OSError) as e:
        return AuditResult(wheel=os.path.basename(str(path)), path=str(path),
                           error=str(e), claimed_tags=platform_tags_of(str(path)))
    except MemoryError:     # one wheel too big for this process must not stop a batch
        return AuditResult(wheel=os.path.basename(str(path)), path=str(path),
                           error=f"{path}: out of memory while reading the wheel "
                                 "(Limits.untrusted() bounds it)",
                           claimed_tags=platform_tags_of(str(path)))


def _judge(result: AuditResult, infos: list, disable_isa: bool, exclude: tuple = ()):
    claims = [pol.parse_platform_tag(t) for t in result.claimed_tags]
    claimed_arch = next((c[2] for c in claims if c), None)
    claimed_libc = next((c[0] for c in claims if c and c[0]), None)

    # architecture: the claimed one if some ELF has it, else the first ELF's
    arches = [i.arch for i in infos if i.arch]
    arch = claimed_arch if claimed_arch in arches else (arches[0] if arches else None)
    for i in infos:
        if i.arch is None:
            result.ignored[i.path] = "unknown or unsupported architecture"
        elif i.arch != arch:
            result.ignored[i.path] = f"{i.arch} ELF in a {arch} wheel"
    elfs = [i for i in infos if i.arch == arch and arch is not None]

    libcs = {i.libc for i in elfs if i.libc}
    if len(libcs) > 1:
        result.error = "wheel mixes glibc and musl ELF files: " + ", ".join(
            f"{i.path} ({i.libc})" for i in elfs if i.libc)
        return
    libc = next(iter(libcs)) if libcs else (claimed_libc or pol.GLIBC)
    if not libcs and claimed_libc is None and elfs:
        result.problems.append("no ELF file names a libc; assuming glibc")

    if not elfs:
        result.pure = True
        result.arch, result.libc = arch, None
        for tag, claim in zip(result.claimed_tags, claims):
            if claim is not None:
                result.unsatisfied_claims[tag] = "the wheel contains no ELF file for this platform"
        return

    result.arch, result.libc, result.elfs = arch, libc, elfs
    by_path = {install_path(i.path): i for i in elfs}
    resolver = _Resolver(by_path)

    # roots: extensions, and ELFs no other ELF needs
    needed_names = {lib for i in elfs for lib in i.needed}
    roots = [i for i in elfs if i.extension or posixpath.basename(i.path) not in needed_names]
    unresolved = {}   # soname -> set of members needing it
    seen_edges = set()

    def visit(info, lib, found):
        if found is None and not pol.is_loader(lib) and (info.path, lib) not in seen_edges \
                and not any(fnmatch.fnmatchcase(lib, pat) for pat in exclude):
            seen_edges.add((info.path, lib))
            unresolved.setdefault(lib, set()).add(info.path)

    for r in roots or elfs:
        resolver.walk(r, visit)

    # wheel-wide problems that rule out every policy
    blocking = []
    purelib = [i.path for i in elfs if re.search(r"\.data/purelib/", i.path)]
    if purelib:
        blocking.append("ELF files in purelib: " + ", ".join(purelib))
    fpe = [i.path for i in elfs if i.extension and any(
        n in _PYFPE and t in (STT_FUNC, STT_NOTYPE) for n, _v, _l, _b, t in i.imports)]
    if fpe:
        blocking.append("uses PyFPE_jbuf (fpectl builds): " + ", ".join(fpe))
    ucs2 = [i.path for i in elfs if i.extension and any(
        "PyUnicodeUCS2_" in n and t == STT_FUNC for n, _v, _l, _b, t in i.imports)]
    if ucs2:
        blocking.append("compiled against a narrow-unicode (UCS2) Python: " + ", ".join(ucs2))
    result.problems.extend(blocking)
    result.blocking = blocking

    # versioned symbols from system libraries, and who uses each version
    versioned = {}
    users = {}        # version -> {member: [symbols]}
    for i in elfs:
        for lib, vers in i.version_needs.items():
            if pol.is_loader(lib):
                continue
            versioned.setdefault(lib, set()).update(vers)
            for v in vers:
                users.setdefault(v, {}).setdefault(i.path, [])
        for n, v, lib, _b, _t in i.imports:
            if v is not None and lib is not None and not pol.is_loader(lib):
                users[v].setdefault(i.path, []).append(n)
    result.versioned_symbols = {k: sorted(v) for k, v in sorted(versioned.items())}

    isa = {} if disable_isa else {i.path: i.isa_level for i in elfs if (i.isa_level or 0) >= 2}

    users_sorted = [(v, {m: sorted(set(s)) for m, s in sorted(who.items())})
                    for v, who in sorted(users.items())]
    for p in pol.policies_for(libc, arch):
        check = PolicyCheck(tag=p.tag, aliases=p.alias_tags, satisfied=False)
        check.external_libraries = {lib: sorted(who) for lib, who in sorted(unresolved.items())
                                    if lib not in p.libraries}
        for v, who in users_sorted:
            if p.version_allowed(v) is False:
                check.symbol_versions[v] = who     # shared between policies, not copied
        for i in elfs:
            for lib in p.blacklist.keys() & set(i.needed):
                bad = sorted({n for n, _v, _l, b, _t in i.imports
                              if b != STB_WEAK and n in p.blacklist[lib]})
                if bad:
                    check.blacklisted_symbols.setdefault(lib, {})[i.path] = bad
            if p.unavailable_symbols:
                lacking = sorted({n for n, _v, _l, b, _t in i.imports
                                  if b != STB_WEAK and p.lacks_symbol(n)})
                if lacking:
                    check.unavailable_symbols[i.path] = lacking
        check.isa = dict(isa)
        check.satisfied = not (blocking or check.external_libraries
                               or check.fails_beyond_libraries())
        result.policies.append(check)

    satisfied = [c for c in result.policies if c.satisfied]
    for c in satisfied:
        result.tags.extend((c.tag,) + tuple(c.aliases))
    result.best_tag = satisfied[0].tag if satisfied else f"linux_{arch}"
    if result.policies:
        result.external_libraries = result.policies[0].external_libraries
    _check_claims(result, claims, satisfied)


def _check_claims(result: AuditResult, claims: list, satisfied: list):
    sat_versions = [_policy_version(c.tag) for c in satisfied]
    for tag, claim in zip(result.claimed_tags, claims):
        if claim is None:
            if tag != "any":
                result.unsatisfied_claims[tag] = "not a Linux platform tag"
            continue
        libc, name, arch = claim
        if arch != result.arch:
            result.unsatisfied_claims[tag] = f"the ELF files are {result.arch}, not {arch}"
        elif libc is None:
            continue                       # linux_<arch> promises nothing more
        elif libc != result.libc:
            result.unsatisfied_claims[tag] = f"the ELF files link against {result.libc}"
        else:
            want = _policy_version(f"{name}_{arch}")
            if not any(v[0] == want[0] and v[1] <= want[1] for v in sat_versions):
                fail = next((c for c in result.policies if c.tag.startswith(name + "_")), None)
                why = "; ".join(fail.reasons()) if fail else "no policy of that name is known"
                if fail is None and sat_versions:
                    why = f"older than every known policy the wheel satisfies ({result.best_tag})"
                result.unsatisfied_claims[tag] = why


def _policy_version(tag: str):
    parsed = pol.parse_platform_tag(tag)
    nums = tuple(int(x) for x in parsed[1].split("_")[1:3])
    return parsed[1].split("_")[0], nums
