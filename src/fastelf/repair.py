"""Repair a wheel: graft the external libraries it needs into ``<name>.libs/``.

Steps, all in memory (no extraction, no patchelf):

1. audit the wheel; the libraries its ELF files need that no policy allows
   and that the wheel does not carry are the *external* ones;
2. find each on this system (or under ``--root``) with ld.so's search rules,
   with the libraries they need in turn;
3. copy each into ``<name>.libs/`` as ``<base>-<sha256[:8]>.<rest>`` and set
   its SONAME to that name; point DT_NEEDED entries at the new names; set
   RPATH to ``$ORIGIN``-relative paths (kept in-wheel entries first);
4. audit the result to find the tags it now satisfies; write the new wheel
   (atomically, input untouched) with those tags in its name and WHEEL file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from . import __version__
from . import policy as pol
from ._elf import parse
from .audit import AuditResult, elf_info, install_path, judge, read_elf_infos, wheel_dir_of
from .elfscan import extension_init_names
from .errors import FastElfError, PolicyError, RepairError
from .lddtree import Node
from .ldpaths import split_path
from .libfinder import LibraryFinder
from .patch import patch_elf
from .retag import expand_tag, split_wheel_name
from .sbom import SBOM_NAME, GraftedFile, build_sbom, owning_packages
from .strip import strip_elf
from .wheel import DEFAULT_LIMITS, WheelReader
from .wheelwriter import dist_info_dir, output_dir_problem, rewrite_wheel


@dataclass
class RepairResult:
    input: str
    output: str | None
    tags: list
    grafted: dict = field(default_factory=dict)     # original soname -> (host path, member)
    patched: list = field(default_factory=list)     # members rewritten
    audit: AuditResult | None = None
    sbom: str | None = None                         # the SBOM member written, if any

    def to_dict(self):
        return {"input": self.input, "output": self.output, "tags": self.tags,
                "grafted": {k: {"from": v[0], "to": v[1]} for k, v in self.grafted.items()},
                "patched": self.patched, "sbom": self.sbom}


def hashed_name(soname: str, data: bytes, sha256_hex: str | None = None) -> str:
    """``libfoo.so.1`` -> ``libfoo-<sha256[:8]>.so.1`` (the hash of the original file;
    ``sha256_hex``, its hex digest when the caller has it already, saves hashing again)."""
    if "/" in soname or soname in ("", ".", ".."):
        raise RepairError(f"cannot graft {soname!r}: not a plain file name")
    short = (sha256_hex or hashlib.sha256(data).hexdigest())[:8]
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


def repair_wheel(path, wheel_dir, *, plat: str | None = None, only_plat: bool = False,
                 exclude=(), root: str = "/", ld_library_path: str | None = None,
                 ldpaths: str | None = None, update_tags: bool = True,
                 disable_isa_ext_check: bool = False, compresslevel: int = 6,
                 strip: bool = False, limits=DEFAULT_LIMITS) -> RepairResult:
    """Repair ``path`` into ``wheel_dir``; returns what was done.

    ``plat``: the platform tag to reach (legacy aliases accepted), or None /
    "auto" for the best one possible.  ``strip``: drop symbol tables and debug
    sections like ``strip -s`` from every ELF file (in process, before
    patching).  Raises RepairError (nothing written)
    when a library cannot be found or the tag cannot be reached.
    """
    path = os.fspath(path)
    filename = os.path.basename(path)
    stem = split_wheel_name(filename)[0]
    problem = output_dir_problem(wheel_dir)
    if problem:
        raise RepairError(f"{path}: {problem}")
    libs_dir = stem.split("-", 1)[0] + ".libs"
    scripts_dir = stem.split("-", 1)[0] + ".scripts"
    with WheelReader(path, limits) as reader:
        infos = read_elf_infos(reader)
        before = judge(infos, filename, path, exclude=exclude,
                       disable_isa_ext_check=disable_isa_ext_check)
        if before.error:
            raise RepairError(f"{path}: {before.error}")
        if before.pure:
            raise RepairError(f"{path}: no ELF file for a Linux platform; nothing to repair")
        member_elf: dict = {}

        def data_of(member):
            """Inflated anew, not kept: each member is patched once, and holding every
            ELF member's bytes would set the peak memory (parse keeps no reference)."""
            return bytes(reader.read(member))

        def elf_of(member):
            if member not in member_elf:
                member_elf[member] = parse(data_of(member))
            return member_elf[member]

        first = next(i.path for i in infos if i.arch == before.arch)
        finder = LibraryFinder(elf_of(first), root=root, libc=before.libc,
                               ld_library_path=ld_library_path, extra_paths=ldpaths)
        target, grafts, excluded, _probe = _choose_target(
            _Wheel(path, filename, libs_dir, infos, elf_of), before, finder, plat, exclude,
            disable_isa_ext_check, probe_always=False)

        # new names, then the patched bytes of grafted libraries and wheel members
        source_sha = {lib: hashlib.sha256(data).hexdigest()
                      for lib, (_p, data, _e) in grafts.items()}
        renames = {lib: hashed_name(lib, data, source_sha[lib])
                   for lib, (_p, data, _e) in grafts.items()}
        added = {}
        result_infos = [i for i in infos]
        grafted = {}
        for lib, (host_path, data, elf) in grafts.items():
            deps = {d: renames[d] for d in elf.needed if d in renames}
            drop = [d for d in elf.needed if LIBPYTHON_RE.match(d)] or None
            new = patch_elf(strip_elf(data) if strip else data, set_soname=renames[lib],
                            replace_needed=deps or None, remove_needed=drop,
                            **({"set_rpath": "$ORIGIN"} if deps else {"remove_rpath": True}))
            member = f"{libs_dir}/{renames[lib]}"
            added[member] = (new, 0o755)
            grafted[lib] = (host_path, member)
            result_infos.append(elf_info(member, parse(new, exports=extension_init_names(member))))
        # the originals are not needed any more (peak memory: the patched copies remain)
        grafts = {lib: (h, None, e) for lib, (h, _d, e) in grafts.items()}
        finder.forget_files()
        replaced = {}
        for i, info in enumerate(result_infos[:len(infos)]):
            deps = {d: renames[d] for d in info.needed if d in renames}
            drop = [d for d in info.needed if LIBPYTHON_RE.match(d)] or None
            if strip:
                replaced[info.path] = strip_elf(data_of(info.path))
            if not deps and not drop:
                continue
            data = replaced.get(info.path) or data_of(info.path)
            dest = info.path          # an ELF in .data/scripts moves to <name>.scripts/
            if deps and _SCRIPT_RE.match(dest):
                dest = f"{scripts_dir}/{posixpath.basename(dest)}"
            here = posixpath.dirname(install_path(dest))
            rel = posixpath.relpath(libs_dir, here or ".")
            keep = [e for e in split_path(info.rpath or info.runpath)
                    if wheel_dir_of(e, here) is not None]
            origin = "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}"
            rpath = ":".join(dict.fromkeys(keep + [origin]))
            new = patch_elf(data, replace_needed=deps or None, remove_needed=drop,
                            set_rpath=rpath if deps else None)
            if dest != info.path:
                added[dest] = (new, (reader.member(info.path).mode & 0o7777) or 0o755)
                replaced[info.path] = _script_shim(dest)
            else:
                replaced[info.path] = new
            result_infos[i] = elf_info(dest, parse(new, exports=extension_init_names(dest)))

        after = judge(result_infos, filename, path, exclude=(*exclude, *excluded),
                      disable_isa_ext_check=disable_isa_ext_check)
        if target.tag not in after.tags:
            check = next((c for c in after.policies if c.tag == target.tag), None)
            why = "; ".join(check.reasons(limit=4)) if check else "unknown policy"
            raise RepairError(f"{path}: cannot reach {target.tag} even after grafting: {why}")
        tags = _output_tags(after, target, plat, only_plat)
        if not update_tags:
            tags = split_wheel_name(filename)[3]
        out_name = _output_name(filename, tags, after) if update_tags else filename
        out = os.path.join(os.fspath(wheel_dir), out_name)
        if os.path.exists(out) and os.path.samefile(out, path):
            raise RepairError(f"{path}: the repaired wheel would overwrite its input; choose "
                              "another output directory (-w)")
        _s, py, abi, out_plats = split_wheel_name(out_name)
        # WHEEL lists the input's kept tags first, then the new ones, as auditwheel does
        line_order = [t for t in split_wheel_name(filename)[3] + list(tags) if t in out_plats]
        wheel_tags = [f"{p}-{a}-{t}" for p in py for a in abi
                      for t in dict.fromkeys(line_order + out_plats)]
        sbom_member = f"{dist_info_dir(m.name for m in reader.members)}/{SBOM_NAME}"
        sbom = _sbom(out_name, source_sha, grafted, root)
        if sbom is not None:
            added[sbom_member] = (sbom, 0o644)
        try:
            os.makedirs(wheel_dir, exist_ok=True)
            rewrite_wheel(reader, out, replace=replaced, add=added, wheel_tags=wheel_tags,
                          remove={sbom_member} if sbom is not None else (),
                          compresslevel=compresslevel)
        except OSError as e:      # disk full, -w is a file, no permission: a clean error
            raise RepairError(f"{path}: cannot write {out}: {e.strerror or e}") from e
    return RepairResult(input=path, output=out, tags=tags, grafted=grafted,
                        patched=sorted(replaced), audit=after,
                        sbom=sbom_member if sbom is not None else None)


def _sbom(out_name: str, source_sha: dict, grafted: dict, root: str) -> bytes | None:
    """The SBOM of the grafted libraries, or None when nothing was grafted (then an
    SBOM already in the input, from an earlier repair, is kept as it is: the
    libraries it names are still there).  A new one replaces an older one.
    ``source_sha``: soname -> sha256 of the file as read from the system."""
    files = [GraftedFile(lib, host_path, member, source_sha[lib])
             for lib, (host_path, member) in grafted.items()]
    packages = owning_packages([f.source_path for f in files], root) if files else {}
    return build_sbom(out_name, files, packages, __version__)


class _Wheel(NamedTuple):
    """The wheel being repaired, as the planning steps see it."""
    path: str
    filename: str
    libs_dir: str
    infos: list
    elf_of: Callable


def _choose_target(w: _Wheel, before: AuditResult, finder: LibraryFinder, plat, exclude,
                   disable_isa_ext_check: bool, probe_always: bool) -> tuple:
    """(target policy, grafts, excluded sonames, probe audit or None).

    The grafted libraries' own symbol versions count too: with --plat auto, the
    target is the most compatible policy that the wheel plus what it would graft
    can meet.  The probe is the wheel with the grafted libraries added, judged."""
    candidates = _target_policies(before, plat)
    probe = None
    # the probe of a graft list: the candidate targets nearly always graft the same
    # libraries (they differ in symbol versions, not in their library lists), and the
    # same list judged again gives the same result
    probes: dict = {}
    for target in candidates:
        external = {lib: who for lib, who in before.external_libraries.items()
                    if lib not in target.libraries}
        grafts, excluded = _collect_grafts(external, w.elf_of, finder, target, exclude, w.path)
        if len(candidates) == 1 and not probe_always:
            break
        key = (tuple((lib, h) for lib, (h, _d, _e) in grafts.items()), frozenset(excluded))
        probe = probes.get(key)
        if probe is None:
            probe = probes[key] = judge(
                w.infos + [elf_info(f"{w.libs_dir}/{lib}", elf)
                           for lib, (_h, _d, elf) in grafts.items()],
                w.filename, w.path, exclude=(*exclude, *excluded),
                disable_isa_ext_check=disable_isa_ext_check)
        check = next(c for c in probe.policies if c.tag == target.tag)
        if not (check.fails_beyond_libraries() or probe.blocking):
            break
    else:
        raise RepairError(f"{w.path}: no {before.libc} policy can be reached by grafting: "
                          + "; ".join(check.reasons(limit=4)))
    return target, grafts, excluded, probe


class RepairReach(NamedTuple):
    """What ``repair`` (with --plat auto) would reach, found without writing anything,
    for ``show``'s advice: the grafted libraries' own symbol versions count."""
    tag: str | None                 # the policy repair would reach; None when it cannot
    grafted: dict                   # soname -> host path of each library it would graft
    probe: AuditResult | None       # the wheel plus those libraries, judged
    problem: str | None             # why repair would fail


def repair_reach(path, *, root: str = "/", ld_library_path: str | None = None,
                 ldpaths: str | None = None, exclude=(), disable_isa_ext_check: bool = False,
                 limits=DEFAULT_LIMITS) -> RepairReach:
    """Plan a repair of ``path`` (search the libraries, judge the result) and say where
    it would land; nothing is written.  Raises nothing for a wheel repair refuses:
    the reason is in ``problem``."""
    path = os.fspath(path)
    filename = os.path.basename(path)
    libs_dir = split_wheel_name(filename)[0].split("-", 1)[0] + ".libs"
    try:
        with WheelReader(path, limits) as reader:
            infos = read_elf_infos(reader)
            before = judge(infos, filename, path, exclude=exclude,
                           disable_isa_ext_check=disable_isa_ext_check)
            if before.error or before.pure:
                return RepairReach(None, {}, None, before.error or "no ELF file to repair")
            elfs: dict = {}

            def elf_of(member):
                if member not in elfs:
                    elfs[member] = parse(bytes(reader.read(member)))
                return elfs[member]

            first = next(i.path for i in infos if i.arch == before.arch)
            finder = LibraryFinder(elf_of(first), root=root, libc=before.libc,
                                   ld_library_path=ld_library_path, extra_paths=ldpaths)
            target, grafts, _x, probe = _choose_target(
                _Wheel(path, filename, libs_dir, infos, elf_of), before, finder, None,
                exclude, disable_isa_ext_check, probe_always=True)
    except FastElfError as e:
        return RepairReach(None, {}, None, str(e))
    return RepairReach(target.tag, {lib: h for lib, (h, _d, _e) in grafts.items()}, probe,
                       None)


def _target_policies(before: AuditResult, plat: str | None) -> list:
    """The policies to try, most compatible first: ``plat``'s, or for auto every policy
    whose only failures in the wheel's own ELF files are external libraries."""
    policies = pol.policies_for(before.libc, before.arch)
    if plat in (None, "auto"):
        out = [p for check, p in zip(before.policies, policies)
               if not (check.fails_beyond_libraries() or before.blocking)]
        if out:
            return out
        raise RepairError(f"{before.path}: no {before.libc} policy can be reached by grafting: "
                          + "; ".join(before.policies[-1].reasons(limit=4)
                                      + before.blocking))
    try:
        wanted = expand_tag(plat, before.arch)[0]
    except PolicyError as e:
        raise RepairError(str(e)) from None
    for p in policies:
        if p.tag == wanted:
            return [p]
    raise RepairError(f"{before.path}: {plat} is not a {before.libc} policy for {before.arch}")


def _collect_grafts(external, elf_of, finder, target, exclude, path):
    """Find every external library and, recursively, what it needs.

    ``elf_of(member)`` gives the ElfFile of a wheel member.  Returns (grafts,
    sonames excluded because their path matched an ``exclude`` glob, as
    auditwheel's ``--exclude`` also matches paths).
    """
    grafts = {}
    excluded = set()
    queue = [(lib, finder.requester(who[0], elf_of(who[0])))
             for lib, who in sorted(external.items())]
    missing: dict[str, Node] = {}     # soname -> the node that first needed it
    while queue:
        lib, node = queue.pop(0)
        if lib in grafts or lib in excluded or lib in target.libraries or pol.is_loader(lib) \
                or LIBPYTHON_RE.match(lib) or any(fnmatch.fnmatchcase(lib, pat) for pat in exclude):
            continue
        _refuse_path_name(path, node, lib)
        found = finder.find(lib, node)
        if found is None:
            missing.setdefault(lib, node)
            continue
        host_path, data, elf, found_node = found
        if any(fnmatch.fnmatchcase(p, pat) for pat in exclude
               for p in (host_path, os.path.realpath(host_path))):
            excluded.add(lib)
            continue
        grafts[lib] = (host_path, data, elf)
        queue.extend((dep, found_node) for dep in elf.needed)
    if missing:
        names = sorted(missing)
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise RepairError(f"{path}: cannot find external librar"
                          f"{'y' if len(missing) == 1 else 'ies'} {shown} (searched for "
                          f"{names[0]}: {_searched(finder, missing[names[0]])}; "
                          "use --ldpaths, LD_LIBRARY_PATH or --exclude)")
    return grafts, excluded


_SEARCH_LABELS = {"rpath": "RPATH", "runpath": "RUNPATH", "ld_library_path": "LD_LIBRARY_PATH",
                  "ldpaths": "--ldpaths", "system": "ld.so.conf and default directories"}


def _searched(finder: LibraryFinder, node) -> str:
    """The directories ld.so's rules searched for a requester, by where each came
    from (``--ldpaths`` replaces ld.so.conf and the default directories)."""
    groups: dict = {}
    for d, label in finder.searcher.search_order(node):
        groups.setdefault(label, []).append(d)
    if not groups:
        return "no directory"
    return "; ".join(f"{_SEARCH_LABELS.get(label, label)} {':'.join(dirs)}"
                     for label, dirs in groups.items())


def _refuse_path_name(path, node, lib: str) -> None:
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


def _output_tags(after: AuditResult, target: pol.Policy, plat, only_plat) -> list:
    """The tags repair adds, as auditwheel chooses them: the requested policy's, after
    the best satisfied policy's when that is more compatible.  A ``--plat`` given by
    its legacy name (manylinux2014_x86_64) gets no better tag, as in auditwheel,
    whose graft check matches only PEP 600 policy names."""
    requested = [target.tag, *target.alias_tags]
    if only_plat or (plat not in (None, "auto") and _is_legacy_name(plat)):
        return requested
    best = next((c for c in after.policies if c.satisfied), None)
    best_tags = [best.tag, *best.aliases] if best else []
    if plat in (None, "auto"):
        return best_tags or requested
    return list(dict.fromkeys(best_tags + requested))


def _is_legacy_name(plat: str) -> bool:
    return plat.split("_", 1)[0] in pol.LEGACY_ALIASES


def _output_name(filename: str, tags: list, after: AuditResult) -> str:
    """The repaired wheel's file name, as auditwheel forms it: the input's platform
    tags without ``linux_<arch>``, then the new tags, duplicates dropped, sorted
    alphabetically.  Unlike auditwheel, an input tag the repaired wheel does not
    satisfy (a false claim) is dropped rather than carried over."""
    stem, py, abi, old = split_wheel_name(filename)
    kept = [t for t in old if not t.startswith("linux_") and after.satisfies(t)]
    plats = sorted(dict.fromkeys(kept + list(tags)))
    return f"{stem}-{'.'.join(py)}-{'.'.join(abi)}-{'.'.join(plats)}.whl"
