"""Repair a wheel: graft the external libraries it needs into ``<name>.libs/``.

Steps, all in memory (no extraction, no patchelf), each a stage below that
returns a value:

1. read and audit the wheel (:func:`_audit`); the libraries its ELF files
   need that no policy allows and that the wheel does not carry are the
   *external* ones;
2. choose the target policy (:func:`_choose_target`): ``--plat``'s, or with
   auto the most compatible one the wheel plus what it would graft can meet;
3. collect the grafts (:func:`_collect_grafts`): find each external library
   on this system (or under ``--root``) with ld.so's search rules, with the
   libraries they need in turn;
4. patch (:func:`_patch_grafts`, :func:`_patch_members`): copy each library
   into ``<name>.libs/`` as ``<base>-<sha256[:8]>.<rest>`` and set its SONAME
   to that name; point DT_NEEDED entries at the new names; set RPATH to
   ``$ORIGIN``-relative paths (kept in-wheel entries first);
5. verify (:func:`_verify`): audit the result, which must meet the target;
   its verdict gives the tags for the name and WHEEL file (:func:`_name_output`);
6. write (:func:`_write`) the new wheel atomically, input untouched.  Verify
   comes before write so that a failed repair writes nothing.

``--plat``/``--only-plat`` are interpreted once, by :func:`plat_request`; the
options travel as one :class:`RepairOptions`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from . import __version__
from . import policy as pol
from ._elf import ElfFile, parse
from .audit import (
    AuditResult,
    ElfInfo,
    PolicyCheck,
    elf_info,
    install_path,
    judge,
    read_elf_infos,
    wheel_dir_of,
)
from .elfscan import extension_init_names
from .errors import FastElfError, PolicyError, RepairError
from .lddtree import Node
from .ldpaths import split_path
from .libfinder import FileDigest, LibraryFinder, read_library
from .patch import patch_elf
from .retag import expand_tag
from .sbom import SBOM_NAME, GraftedFile, OsPackage, PackageLookup, build_sbom
from .strip import strip_elf
from .wheel import DEFAULT_LIMITS, Limits, WheelReader
from .wheelname import parse_wheel_name
from .wheelwriter import (
    Deflated,
    Deflater,
    Pending,
    dist_info_dir,
    output_dir_problem,
    rewrite_wheel,
)

# ------------------------------------------------------------------ options and results


@dataclass(frozen=True)
class RepairOptions:
    """Everything that decides a repair besides the input and the output directory:
    the command line builds one, the stages read it (so adding an option touches
    the dataclass, not every signature between the CLI and the stage that uses it).

    ``plat``: the platform tag to reach (legacy aliases accepted), or None / "auto"
    for the best one possible; ``only_plat``: tag with it alone.  ``exclude``: globs
    of sonames or library paths to leave external.  ``root``: the sysroot searched;
    ``ld_library_path`` and ``ldpaths`` (replacing the system search) as ld.so
    would see them.  ``update_tags``: False keeps the input's file name and tags.
    ``strip``: drop symbol tables and debug sections like ``strip -s`` from every
    ELF file (in process, before patching).  ``compresslevel``: deflate level of
    the members written.  ``limits``: the safety limits for reading the input."""

    plat: str | None = None
    only_plat: bool = False
    exclude: Sequence[str] = ()
    root: str = "/"
    ld_library_path: str | None = None
    ldpaths: str | None = None
    update_tags: bool = True
    disable_isa_ext_check: bool = False
    compresslevel: int = 6
    strip: bool = False
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        # a tuple, so the frozen options cannot change under a repair through a caller's list
        object.__setattr__(self, "exclude", tuple(self.exclude))


class Grafted(NamedTuple):
    """One grafted library: the host file it was copied from, the member it became."""
    source: str
    member: str


@dataclass
class RepairResult:
    """What a repair did: the wheel written, the tags it states, what was grafted and
    patched, and the repaired wheel's own audit."""
    input: str
    output: str | None
    tags: list[str]
    grafted: dict[str, Grafted] = field(default_factory=dict)   # original soname -> Grafted
    patched: list[str] = field(default_factory=list)    # members rewritten
    audit: AuditResult | None = None
    sbom: str | None = None                         # the SBOM member written, if any

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "tags": self.tags,
                "grafted": {k: {"from": v.source, "to": v.member}
                            for k, v in self.grafted.items()},
                "patched": self.patched, "sbom": self.sbom}


class PlatRequest(NamedTuple):
    """``--plat`` and ``--only-plat`` as interpreted once; every later stage asks this
    rather than the strings (which name is auto, which is legacy)."""
    given: str | None         # the tag or policy name as given; None for auto
    only: bool                # --only-plat: the requested policy's tags alone
    legacy_name: bool         # given by a legacy name (manylinux2014): no better tags

    @property
    def auto(self) -> bool:
        return self.given is None

    @property
    def adds_better_tags(self) -> bool:
        """Whether the best satisfied policy's tags join the requested ones: not with
        --only-plat, nor for a legacy name (auditwheel's graft check matches only
        PEP 600 policy names, so it adds none)."""
        return not (self.only or self.legacy_name)


def plat_request(plat: str | None, only_plat: bool = False) -> PlatRequest:
    """The target description of the user's ``--plat``/``--only-plat``."""
    if plat is None or plat == "auto":
        return PlatRequest(None, only_plat, False)
    return PlatRequest(plat, only_plat, _is_legacy_name(plat))


def _is_legacy_name(plat: str) -> bool:
    return plat.split("_", 1)[0] in pol.LEGACY_ALIASES


# ------------------------------------------------------------------ names

def hashed_name(soname: str, data: bytes | bytearray) -> str:
    """``libfoo.so.1`` -> ``libfoo-<sha256[:8]>.so.1`` (the hash of the original file)."""
    return _hashed(soname, hashlib.sha256(data).hexdigest())


def _hashed(soname: str, digest: str) -> str:
    """:func:`hashed_name` given the file's sha256 hex digest."""
    if "/" in soname or soname in ("", ".", ".."):
        raise RepairError(f"cannot graft {soname!r}: not a plain file name")
    short = digest[:8]
    base, dot, rest = soname.partition(".so")
    return f"{base}-{short}{dot}{rest}" if dot else f"{soname}-{short}"


# auditwheel's LIBPYTHON_RE: an extension must not link libpython (the interpreter
# provides its symbols); such NEEDED entries are removed, never grafted
LIBPYTHON_RE = re.compile(r"^libpython\d+\.\d+m?\.so(\.\d)*$")
_SCRIPT_RE = re.compile(r"^[^/]+\.data/scripts/[^/]+$")


def _script_shim(binary: str) -> bytes:
    """auditwheel's shim: ``.data/scripts`` installs to bin/, so exec the moved ELF."""
    return ("#!python\nimport os\nimport sys\nimport sysconfig\n\n\n"
            "if __name__ == \"__main__\":\n    os.execv(\n"
            f"        os.path.join(sysconfig.get_path(\"platlib\"), {binary!r}),\n"
            "        sys.argv,\n    )\n").encode()


class _WheelNames(NamedTuple):
    """The names derived from the input's file name."""
    path: str
    filename: str
    libs_dir: str             # <name>.libs: where grafted libraries go
    scripts_dir: str          # <name>.scripts: where ELF files of .data/scripts move

    @classmethod
    def of(cls, path: str) -> _WheelNames:
        """Raises WheelError for a file name that is not a wheel's."""
        filename = os.path.basename(path)
        project = parse_wheel_name(filename).distribution
        return cls(path, filename, f"{project}.libs", f"{project}.scripts")


# ------------------------------------------------------------------ records between stages

class HostLibrary(NamedTuple):
    """A library found on the host to graft: its path, its digest and its parse (not
    its bytes: the patch stage reads it again, one library at a time)."""
    path: str
    digest: FileDigest
    elf: ElfFile


class _GraftSet(NamedTuple):
    """What :func:`_collect_grafts` found for one target policy."""
    grafts: dict[str, HostLibrary]      # soname -> the library to graft
    excluded: set[str]                  # sonames left external: an --exclude glob matched


class _Plan(NamedTuple):
    """The target policy and what reaching it takes."""
    target: pol.Policy
    grafts: dict[str, HostLibrary]
    excluded: set[str]
    probe: AuditResult | None       # the wheel plus the grafts, judged (when it was needed)


# A patched member as the stages hold it: compressed ahead (a future of the Deflater,
# so the raw bytes are dropped as soon as it is compressed), or small bytes (a shim)
_Content = Union[Pending, Deflated, bytes]


class NewMember(NamedTuple):
    """A member the repaired wheel gains (``rewrite_wheel``'s ``(bytes, mode)``)."""
    data: _Content
    mode: int


class _PatchedGrafts(NamedTuple):
    """The grafted libraries as written into the wheel."""
    renames: dict[str, str]             # original soname -> hashed name
    added: dict[str, NewMember]         # <name>.libs/ member -> its patched content
    files: list[GraftedFile]            # for the result and the SBOM
    infos: list[ElfInfo]                # their facts, for the final audit


class _PatchedMembers(NamedTuple):
    """The wheel's own ELF members after patching."""
    replaced: dict[str, _Content]       # member -> new content (a shim for a moved script)
    added: dict[str, NewMember]         # .data/scripts ELF files moved to <name>.scripts/
    infos: list[ElfInfo]                # the facts of every ELF member, in input order


class _Output(NamedTuple):
    """What the repaired wheel is called and which tags it states."""
    tags: list[str]               # the tags the result reports
    name: str                     # its file name
    path: str
    wheel_tags: list[str]         # the WHEEL file's Tag lines


class _WheelView:
    """The open input as the stages see it: its ELF members' facts, and their
    ElfFiles parsed on demand (each once: the search asks for a requester's
    search context again for every library it needs)."""

    def __init__(self, names: _WheelNames, reader: WheelReader, infos: list[ElfInfo]):
        self.names = names
        self.reader = reader
        self.infos = infos
        self._elfs: dict[str, ElfFile] = {}

    def data_of(self, member: str) -> bytes | memoryview:
        """Inflated anew, not kept: each member is patched once, and holding every
        ELF member's bytes would set the peak memory (parse keeps no reference).
        A view of the reader's buffer, not a copy."""
        return self.reader.read(member)

    def patchable(self, member: str) -> bytearray:
        """The member's bytes in a buffer of the caller's own (to patch in place; the
        inflated buffer itself, not a copy)."""
        return self.reader.read_owned(member)

    def elf_of(self, member: str) -> ElfFile:
        if member not in self._elfs:
            self._elfs[member] = parse(self.data_of(member))
        return self._elfs[member]


# ------------------------------------------------------------------ repair

def repair_wheel(path: str | os.PathLike[str], wheel_dir: str | os.PathLike[str],
                 options: RepairOptions | None = None, **kw: Any) -> RepairResult:
    """Repair ``path`` into ``wheel_dir``; returns what was done.

    ``options`` is a :class:`RepairOptions`; its fields are also accepted as
    keywords (``repair_wheel(path, out, plat="manylinux2014")``), not both.
    Raises RepairError (nothing written) when a library cannot be found or the
    tag cannot be reached.
    """
    opts = _options_of(options, kw)
    request = plat_request(opts.plat, opts.only_plat)
    names = _WheelNames.of(os.fspath(path))
    problem = output_dir_problem(wheel_dir)
    if problem:
        raise RepairError(f"{names.path}: {problem}")
    with WheelReader(names.path, opts.limits) as reader:
        wheel, before = _audit(names, reader, opts)
        _refuse_unrepairable(names.path, before)
        finder = _finder_for(wheel, before, opts)
        plan = _choose_target(wheel, before, finder, request, opts, probe_always=False)
        target, excluded, to_graft = plan.target, plan.excluded, plan.grafts
        del plan
        finder.forget_files()
        with PackageLookup([g.path for g in to_graft.values()], opts.root) as packages, \
                Deflater(opts.compresslevel) as deflater:
            grafts = _patch_grafts(to_graft, names.libs_dir, opts.strip, deflater)
            members = _patch_members(wheel, grafts.renames, opts.strip, deflater)
            replaced, added = _finished(members.replaced), _finished_new(
                {**grafts.added, **members.added})
            after = _verify(names, members.infos + grafts.infos, target, excluded, opts)
            output = _name_output(names, wheel_dir, after, target, request, opts.update_tags)
            sbom = _sbom(reader, output.name, grafts.files, packages.result())
        sbom_member = next(iter(sbom), None)
        _write(names.path, reader, wheel_dir, output, replaced, {**added, **sbom},
               sbom_member, opts.compresslevel)
    return RepairResult(input=names.path, output=output.path, tags=output.tags,
                        grafted={f.soname: Grafted(f.source_path, f.member)
                                 for f in grafts.files},
                        patched=sorted(members.replaced), audit=after, sbom=sbom_member)


def _options_of(options: RepairOptions | None, kw: Mapping[str, Any]) -> RepairOptions:
    """The options given as a RepairOptions or as its fields by keyword."""
    if options is None:
        return RepairOptions(**kw)
    if kw:
        raise TypeError(f"repair_wheel: options given twice (also {', '.join(sorted(kw))})")
    return options


def _audit(names: _WheelNames, reader: WheelReader,
           opts: RepairOptions) -> tuple[_WheelView, AuditResult]:
    """Stage 1: read every ELF member once and judge the wheel as it is."""
    infos = read_elf_infos(reader)
    before = judge(infos, names.filename, names.path, exclude=opts.exclude,
                   disable_isa_ext_check=opts.disable_isa_ext_check)
    return _WheelView(names, reader, infos), before


def _refuse_unrepairable(path: str, before: AuditResult) -> None:
    """A wheel the audit could not judge, or without a Linux ELF file, has nothing
    repair could graft for."""
    if before.error:
        raise RepairError(f"{path}: {before.error}")
    if before.pure:
        raise RepairError(f"{path}: no ELF file for a Linux platform; nothing to repair")


def _finder_for(wheel: _WheelView, before: AuditResult, opts: RepairOptions) -> LibraryFinder:
    """The library search of the host, set up for the wheel's libc and architecture (the
    first ELF member of that architecture gives the class, machine and ABI to match)."""
    first = next(i.path for i in wheel.infos if i.arch == before.arch)
    return LibraryFinder(wheel.elf_of(first), root=opts.root, libc=before.libc,
                         ld_library_path=opts.ld_library_path, extra_paths=opts.ldpaths)


def _patch_grafts(grafts: Mapping[str, HostLibrary], libs_dir: str,
                  strip: bool, deflater: Deflater) -> _PatchedGrafts:
    """Stage 4a: each library under its hashed name in ``libs_dir``, its SONAME that
    name, its needs of other grafted libraries renamed and found through
    ``$ORIGIN`` (no RPATH at all when it needs none), libpython dropped.

    Each library is read again (and checked against the digest taken when it was
    found), patched in place, parsed for the final audit and handed to
    ``deflater``, so one library's raw bytes are held at a time (peak memory: the
    largest, not the sum)."""
    renames = {lib: _hashed(lib, g.digest.sha256) for lib, g in grafts.items()}
    added: dict[str, NewMember] = {}
    files: list[GraftedFile] = []
    infos: list[ElfInfo] = []
    for lib, g in grafts.items():
        deps: dict[str | bytes, str | bytes] = {d: renames[d] for d in g.elf.needed
                                                if d in renames}
        drop = [d for d in g.elf.needed if LIBPYTHON_RE.match(d)] or None
        deflater.make_room(g.digest.size)
        data = read_library(g.path, g.digest)
        if strip:
            data = bytearray(strip_elf(data))
        if deps:
            new = patch_elf(data, set_soname=renames[lib], replace_needed=deps or None,
                            remove_needed=drop, set_rpath="$ORIGIN", reuse_input=True)
        else:
            new = patch_elf(data, set_soname=renames[lib], remove_needed=drop,
                            remove_rpath=True, reuse_input=True)
        member = f"{libs_dir}/{renames[lib]}"
        files.append(GraftedFile(lib, g.path, member, g.digest.sha256))
        infos.append(elf_info(member, parse(new, exports=extension_init_names(member))))
        added[member] = NewMember(deflater.submit(new), 0o755)
        del data, new             # the deflater holds the only reference now
    return _PatchedGrafts(renames, added, files, infos)


def _patch_members(wheel: _WheelView, renames: Mapping[str, str], strip: bool,
                   deflater: Deflater) -> _PatchedMembers:
    """Stage 4b: every ELF member of the wheel needing a grafted library, pointed at
    it (an ELF in ``.data/scripts`` moves to ``<name>.scripts/`` and a shim takes
    its place); with ``strip``, every ELF member stripped.  Each is patched in a
    buffer of its own and handed to ``deflater`` before the next is read."""
    replaced: dict[str, _Content] = {}
    added: dict[str, NewMember] = {}
    infos = list(wheel.infos)
    for i, info in enumerate(wheel.infos):
        deps: dict[str | bytes, str | bytes] = {d: renames[d] for d in info.needed
                                                if d in renames}
        drop = [d for d in info.needed if LIBPYTHON_RE.match(d)] or None
        if not deps and not drop:
            if strip:
                replaced[info.path] = deflater.submit(strip_elf(wheel.data_of(info.path)))
            continue
        deflater.make_room(wheel.reader.member(info.path).size)
        data = (bytearray(strip_elf(wheel.data_of(info.path))) if strip
                else wheel.patchable(info.path))
        dest = info.path
        if deps and _SCRIPT_RE.match(dest):
            dest = f"{wheel.names.scripts_dir}/{posixpath.basename(dest)}"
        new = patch_elf(data, replace_needed=deps or None, remove_needed=drop, reuse_input=True,
                        set_rpath=_rpath_for(info, dest, wheel.names.libs_dir) if deps else None)
        infos[i] = elf_info(dest, parse(new, exports=extension_init_names(dest)))
        if dest != info.path:
            mode = (wheel.reader.member(info.path).mode & 0o7777) or 0o755
            added[dest] = NewMember(deflater.submit(new), mode)
            replaced[info.path] = _script_shim(dest)
        else:
            replaced[info.path] = deflater.submit(new)
        del data, new             # the deflater holds the only reference now
    return _PatchedMembers(replaced, added, infos)


def _finished(contents: Mapping[str, _Content]) -> dict[str, Deflated | bytes]:
    """The members with their compression done (errors raised by it surface here)."""
    return {name: c if isinstance(c, (Deflated, bytes)) else c.result()
            for name, c in contents.items()}


def _finished_new(members: Mapping[str, NewMember]) -> dict[str, NewMember]:
    """:func:`_finished` for new members, their modes kept."""
    return {name: NewMember(m.data if isinstance(m.data, (Deflated, bytes)) else m.data.result(),
                            m.mode)
            for name, m in members.items()}


def _rpath_for(info: ElfInfo, dest: str, libs_dir: str) -> str:
    """The RPATH of a member at ``dest`` that needs grafted libraries: its entries that
    stay inside the wheel, then ``libs_dir`` relative to ``$ORIGIN``."""
    here = posixpath.dirname(install_path(dest))
    rel = posixpath.relpath(libs_dir, here or ".")
    keep = [e for e in split_path(info.rpath or info.runpath)
            if wheel_dir_of(e, here) is not None]
    origin = "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}"
    return ":".join(dict.fromkeys(keep + [origin]))


def _verify(names: _WheelNames, infos: list[ElfInfo], target: pol.Policy,
            excluded: Iterable[str], opts: RepairOptions) -> AuditResult:
    """Stage 5: judge the repaired wheel's ELF files; it must meet the target (the
    libraries left external by an ``--exclude`` path glob are allowed)."""
    after = judge(infos, names.filename, names.path, exclude=(*opts.exclude, *excluded),
                  disable_isa_ext_check=opts.disable_isa_ext_check)
    if target.tag not in after.tags:
        check = next((c for c in after.policies if c.tag == target.tag), None)
        why = "; ".join(check.reasons(limit=4)) if check else "unknown policy"
        raise RepairError(f"{names.path}: cannot reach {target.tag} even after grafting: {why}")
    return after


def _name_output(names: _WheelNames, wheel_dir: str | os.PathLike[str], after: AuditResult,
                 target: pol.Policy, request: PlatRequest, update_tags: bool) -> _Output:
    """The repaired wheel's tags, file name, path and WHEEL Tag lines; refuses a path
    that is the input itself."""
    input_plats = parse_wheel_name(names.filename).platform
    if update_tags:
        tags = _output_tags(after, target, request)
        out_name = _output_name(names.filename, tags, after)
    else:
        tags, out_name = input_plats, names.filename
    out = os.path.join(os.fspath(wheel_dir), out_name)
    if os.path.exists(out) and os.path.samefile(out, names.path):
        raise RepairError(f"{names.path}: the repaired wheel would overwrite its input; choose "
                          "another output directory (-w)")
    written = parse_wheel_name(out_name)
    py, abi, out_plats = written.python, written.abi, written.platform
    # WHEEL lists the input's kept tags first, then the new ones, as auditwheel does
    line_order = [t for t in input_plats + list(tags) if t in out_plats]
    wheel_tags = [f"{p}-{a}-{t}" for p in py for a in abi
                  for t in dict.fromkeys(line_order + out_plats)]
    return _Output(tags, out_name, out, wheel_tags)


def _sbom(reader: WheelReader, out_name: str, files: list[GraftedFile],
          packages: Mapping[str, OsPackage]) -> dict[str, NewMember]:
    """{the SBOM member: the SBOM of the grafted libraries}, or {} when nothing was
    grafted (then an SBOM already in the input, from an earlier repair, is kept as it
    is: the libraries it names are still there).  A new one replaces an older one."""
    member = f"{dist_info_dir(m.name for m in reader.members)}/{SBOM_NAME}"
    sbom = build_sbom(out_name, files, packages, __version__)
    return {member: NewMember(sbom, 0o644)} if sbom is not None else {}


def _write(path: str, reader: WheelReader, wheel_dir: str | os.PathLike[str], output: _Output,
           replaced: dict[str, Deflated | bytes], added: dict[str, NewMember],
           sbom_member: str | None, compresslevel: int) -> None:
    """Stage 6: write the repaired wheel (atomically: a temporary file renamed into
    place, see :func:`fastelf.wheelwriter.rewrite_wheel`).  The patched members come
    compressed already (:class:`Deflated`, at the same level); the rest (WHEEL,
    RECORD, a shim, the SBOM) are deflated by the writer."""
    try:
        os.makedirs(wheel_dir, exist_ok=True)
        rewrite_wheel(reader, output.path, replace=replaced, add=added,
                      wheel_tags=output.wheel_tags,
                      remove={sbom_member} if sbom_member is not None else (),
                      compresslevel=compresslevel)
    except OSError as e:      # disk full, -w is a file, no permission: a clean error
        raise RepairError(f"{path}: cannot write {output.path}: {e.strerror or e}") from e


# ------------------------------------------------------------------ choosing the target

def _choose_target(wheel: _WheelView, before: AuditResult, finder: LibraryFinder,
                   request: PlatRequest, opts: RepairOptions, probe_always: bool) -> _Plan:
    """Stage 2: the target policy and the grafts that reach it.

    The grafted libraries' own symbol versions count too: with --plat auto, the
    target is the most compatible policy that the wheel plus what it would graft
    can meet.  The probe is the wheel with the grafted libraries added, judged."""
    candidates = _target_policies(before, request)
    probe = None
    # the probe of a graft list: the candidate targets nearly always graft the same
    # libraries (they differ in symbol versions, not in their library lists), and the
    # same list judged again gives the same result
    probes: dict[tuple[tuple[tuple[str, str], ...], frozenset[str]], AuditResult] = {}
    for target in candidates:
        external = {lib: who for lib, who in before.external_libraries.items()
                    if lib not in target.libraries}
        found = _collect_grafts(external, wheel, finder, target, opts.exclude)
        if len(candidates) == 1 and not probe_always:
            break
        key = (tuple((lib, g.path) for lib, g in found.grafts.items()),
               frozenset(found.excluded))
        probe = probes.get(key)
        if probe is None:
            probe = probes[key] = judge(
                wheel.infos + [elf_info(f"{wheel.names.libs_dir}/{lib}", g.elf)
                               for lib, g in found.grafts.items()],
                wheel.names.filename, wheel.names.path,
                exclude=(*opts.exclude, *found.excluded),
                disable_isa_ext_check=opts.disable_isa_ext_check)
        check: PolicyCheck = next(c for c in probe.policies if c.tag == target.tag)
        if not (check.fails_beyond_libraries() or probe.blocking):
            break
    else:
        raise RepairError(f"{wheel.names.path}: no {before.libc} policy can be reached by "
                          "grafting: " + "; ".join(check.reasons(limit=4)))
    return _Plan(target, found.grafts, found.excluded, probe)


def _target_policies(before: AuditResult, request: PlatRequest) -> list[pol.Policy]:
    """The policies to try, most compatible first: the requested one, or for auto every
    policy whose only failures in the wheel's own ELF files are external libraries."""
    policies = pol.policies_for(before.libc, before.arch)
    if request.given is None:
        out = [p for check, p in zip(before.policies, policies)
               if not (check.fails_beyond_libraries() or before.blocking)]
        if out:
            return out
        raise RepairError(f"{before.path}: no {before.libc} policy can be reached by grafting: "
                          + "; ".join(before.policies[-1].reasons(limit=4)
                                      + before.blocking))
    try:
        wanted = expand_tag(request.given, before.arch)[0]
    except PolicyError as e:
        raise RepairError(str(e)) from None
    for p in policies:
        if p.tag == wanted:
            return [p]
    raise RepairError(f"{before.path}: {request.given} is not a {before.libc} policy for "
                      f"{before.arch}")


def _collect_grafts(external: Mapping[str, list], wheel: _WheelView, finder: LibraryFinder,
                    target: pol.Policy, exclude: Sequence[str]) -> _GraftSet:
    """Stage 3: find every external library and, recursively, what it needs.

    The sonames whose path matched an ``exclude`` glob are left external (as
    auditwheel's ``--exclude`` also matches paths).  Raises RepairError naming
    every library ld.so's rules would not find."""
    grafts: dict[str, HostLibrary] = {}
    excluded: set[str] = set()
    queue = [(lib, finder.requester(who[0], wheel.elf_of(who[0])))
             for lib, who in sorted(external.items())]
    missing: dict[str, Node] = {}     # soname -> the node that first needed it
    while queue:
        lib, node = queue.pop(0)
        if lib in grafts or lib in excluded or _not_grafted(lib, target, exclude):
            continue
        _refuse_path_name(wheel.names.path, node, lib)
        found = finder.find(lib, node)
        if found is None:
            missing.setdefault(lib, node)
            continue
        if any(fnmatch.fnmatchcase(p, pat) for pat in exclude
               for p in (found.path, os.path.realpath(found.path))):
            excluded.add(lib)
            continue
        grafts[lib] = HostLibrary(found.path, found.digest, found.elf)
        queue.extend((dep, found.node) for dep in found.elf.needed)
    if missing:
        raise _cannot_find(wheel.names.path, finder, missing)
    return _GraftSet(grafts, excluded)


def _not_grafted(lib: str, target: pol.Policy, exclude: Sequence[str]) -> bool:
    """Needed names never grafted: what the policy allows, the loader, libpython, and
    the sonames an ``exclude`` glob matches."""
    return (lib in target.libraries or pol.is_loader(lib) or bool(LIBPYTHON_RE.match(lib))
            or any(fnmatch.fnmatchcase(lib, pat) for pat in exclude))


def _cannot_find(path: str, finder: LibraryFinder, missing: Mapping[str, Node]) -> RepairError:
    """The error for libraries not found: at most 20 named, and the directories
    searched for the first."""
    names = sorted(missing)
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return RepairError(f"{path}: cannot find external librar"
                       f"{'y' if len(missing) == 1 else 'ies'} {shown} (searched for "
                       f"{names[0]}: {_searched(finder, missing[names[0]])}; "
                       "use --ldpaths, LD_LIBRARY_PATH or --exclude)")


_SEARCH_LABELS = {"rpath": "RPATH", "runpath": "RUNPATH", "ld_library_path": "LD_LIBRARY_PATH",
                  "ldpaths": "--ldpaths", "system": "ld.so.conf and default directories"}


def _searched(finder: LibraryFinder, node: Node) -> str:
    """The directories ld.so's rules searched for a requester, by where each came
    from (``--ldpaths`` replaces ld.so.conf and the default directories)."""
    groups: dict[str, list[str]] = {}
    for entry in finder.searcher.search_order(node):
        groups.setdefault(entry.label, []).append(entry.directory)
    if not groups:
        return "no directory"
    return "; ".join(f"{_SEARCH_LABELS.get(label, label)} {':'.join(dirs)}"
                     for label, dirs in groups.items())


def _refuse_path_name(path: str, node: Node, lib: str) -> None:
    """A DT_NEEDED name with a ``/`` is not searched by ld.so (glibc and musl open
    it as given, relative to the process's current directory), so no library in
    ``<name>.libs/`` can stand for it, and a grafted copy would be written under
    that path (``../../usr/lib/...``), outside the wheel's directories.  Refuse it."""
    if "/" in lib:
        who = node.path or node.chain[0]
        raise RepairError(f"{path}: {who} needs {lib!r} (DT_NEEDED), a path rather than a "
                          "library name: ld.so opens it relative to the current directory "
                          "and never searches for it, so it cannot be grafted; relink "
                          "against the library's SONAME, or --exclude it")


# ------------------------------------------------------------------ tags and names

def _output_tags(after: AuditResult, target: pol.Policy, request: PlatRequest) -> list[str]:
    """The tags repair adds, as auditwheel chooses them: the requested policy's, after
    the best satisfied policy's when that is more compatible.  A ``--plat`` given by
    its legacy name (manylinux2014_x86_64) gets no better tag, as in auditwheel,
    whose graft check matches only PEP 600 policy names."""
    requested = [target.tag, *target.alias_tags]
    if not request.adds_better_tags:
        return requested
    best = next((c for c in after.policies if c.satisfied), None)
    best_tags = [best.tag, *best.aliases] if best else []
    if request.auto:
        return best_tags or requested
    return list(dict.fromkeys(best_tags + requested))


def _output_name(filename: str, tags: list[str], after: AuditResult) -> str:
    """The repaired wheel's file name, as auditwheel forms it: the input's platform
    tags without ``linux_<arch>``, then the new tags, duplicates dropped, sorted
    alphabetically.  Unlike auditwheel, an input tag the repaired wheel does not
    satisfy (a false claim) is dropped rather than carried over."""
    name = parse_wheel_name(filename)
    kept = [t for t in name.platform if not t.startswith("linux_") and after.satisfies(t)]
    return name.with_platform(sorted(dict.fromkeys(kept + list(tags))))


# ------------------------------------------------------------------ show's advice

class RepairReach(NamedTuple):
    """What ``repair`` (with --plat auto) would reach, found without writing anything,
    for ``show``'s advice: the grafted libraries' own symbol versions count."""
    tag: str | None                 # the policy repair would reach; None when it cannot
    grafted: dict                   # soname -> host path of each library it would graft
    probe: AuditResult | None       # the wheel plus those libraries, judged
    problem: str | None             # why repair would fail


def repair_reach(path: str | os.PathLike[str], *, root: str = "/",
                 ld_library_path: str | None = None, ldpaths: str | None = None,
                 exclude: Sequence[str] = (), disable_isa_ext_check: bool = False,
                 limits: Limits = DEFAULT_LIMITS) -> RepairReach:
    """Plan a repair of ``path`` (search the libraries, judge the result) and say where
    it would land; nothing is written.  Raises nothing for a wheel repair refuses:
    the reason is in ``problem``."""
    opts = RepairOptions(exclude=exclude, root=root, ld_library_path=ld_library_path,
                         ldpaths=ldpaths, disable_isa_ext_check=disable_isa_ext_check,
                         limits=limits)
    names = _WheelNames.of(os.fspath(path))
    try:
        with WheelReader(names.path, opts.limits) as reader:
            wheel, before = _audit(names, reader, opts)
            if before.error or before.pure:
                return RepairReach(None, {}, None, before.error or "no ELF file to repair")
            finder = _finder_for(wheel, before, opts)
            plan = _choose_target(wheel, before, finder, plat_request(None), opts,
                                  probe_always=True)
    except FastElfError as e:
        return RepairReach(None, {}, None, str(e))
    return RepairReach(plan.target.tag, {lib: g.path for lib, g in plan.grafts.items()},
                       plan.probe, None)
