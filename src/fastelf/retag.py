"""Change a wheel's platform tags: file name and WHEEL ``Tag:`` lines."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import policy as pol
from .errors import FastElfError, PolicyError, WheelError
from .wheel import WheelReader
from .wheelname import WheelName, parse_wheel_name
from .wheelwriter import output_dir_problem, rewrite_wheel

if TYPE_CHECKING:
    from .audit import AuditResult


def split_wheel_name(filename: str) -> WheelName:
    """(stem 'name-ver[-build]', python tags, abi tags, platform tags) of a wheel file name,
    as written; WheelError when packaging refuses the name (see :mod:`fastelf.wheelname`)."""
    return parse_wheel_name(filename)


def expand_tag(tag: str, arch: str | None = None) -> list[str]:
    """A policy name or tag, with legacy alias, as full platform tags.

    ``manylinux2014_x86_64`` -> [manylinux_2_17_x86_64, manylinux2014_x86_64];
    ``manylinux_2_28`` with arch -> [manylinux_2_28_<arch>].
    """
    parsed = pol.parse_platform_tag(tag)
    if parsed is None and arch:
        parsed = pol.parse_platform_tag(f"{tag}_{arch}")
    if parsed is None:
        raise PolicyError(f"not a Linux platform tag: {tag!r}")
    libc, name, tag_arch = parsed
    if libc is None:
        return [f"linux_{tag_arch}"]
    p = pol.find_policy(libc, tag_arch, name)
    if p is None:
        if re.match(r"^(manylinux|musllinux)_\d+_\d+$", name):
            return [f"{name}_{tag_arch}"]       # a valid PEP 600/656 tag we have no data for
        raise PolicyError(f"unknown platform tag {tag!r}")
    return [p.tag, *p.alias_tags]


def ordered_tags(tags: Iterable[str]) -> list[str]:
    """``tags`` once each, in the conventional order of a wheel file name."""
    return sorted(dict.fromkeys(tags), key=pol.tag_order_key)


def retagged_name(filename: str, plats: Iterable[str]) -> str:
    """``filename`` with its platform tags replaced by ``plats`` (in conventional order)."""
    return parse_wheel_name(filename).with_platform(ordered_tags(plats))


def _aliases_of(r: AuditResult, tag: str) -> tuple:
    """The legacy alias tags of the policy whose tag is ``tag`` (manylinux2014_*, ...)."""
    return next((c.aliases for c in r.policies if c.tag == tag), ())


def _default_tags(r: AuditResult, path: str) -> list[str]:
    """Without --plat: the best tag the wheel satisfies and its aliases.

    A skipped or pure wheel has no best tag to offer: the caller must name one.
    """
    if r.skip_reason is not None:
        raise FastElfError(f"{path}: {r.skip_reason}")
    if r.pure:
        raise FastElfError(f"{path}: no ELF files; give the tags with --plat")
    best = r.best_tag
    if best is None:                    # an unreadable wheel: judged nothing
        raise FastElfError(f"{path}: {r.error or 'the wheel was not judged'}")
    plats = [t for t in r.tags if t == best or t in _aliases_of(r, best)]
    return plats or [best]


def choose_tags(r: AuditResult, path: str, requested: Iterable[str] = (), *,
                add: bool = False, force: bool = False) -> list[str]:
    """The platform tags ``fastelf retag`` sets on the audited wheel ``r`` at ``path``.

    ``requested`` (policy names or tags, legacy aliases expanded to both names,
    see :func:`expand_tag`), or else the best tag the wheel satisfies; with
    ``add``, first the claimed tags the wheel satisfies.  A tag the wheel does
    not satisfy is refused (FastElfError) unless ``force``: retag must not
    make a wheel claim what it cannot keep.
    """
    requested = list(requested)
    if requested:
        plats = [t for tag in requested for t in expand_tag(tag, r.arch)]
    else:
        plats = _default_tags(r, path)
    if add:
        plats = [t for t in r.claimed_tags if r.satisfies(t)] + plats
    unsatisfied = [t for t in plats if not r.satisfies(t)]
    if unsatisfied and not force:
        raise FastElfError(f"{path}: the wheel does not satisfy {', '.join(unsatisfied)} "
                           f"(best tag: {r.best_tag}); use --force to set it anyway")
    return plats


def retag_wheel(path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                plats: Iterable[str], *, compresslevel: int = 6) -> str:
    """Write a copy of ``path`` into ``out_dir`` whose platform tags are ``plats``.

    Returns the new file's path.  The input is never modified; if the
    output would overwrite the input, the input is left alone and an error
    is raised.
    """
    plats = ordered_tags(plats)
    if not plats:
        raise PolicyError("no platform tag given")
    problem = output_dir_problem(out_dir)
    if problem:
        raise WheelError(path, problem)
    name = retagged_name(os.path.basename(os.fspath(path)), plats)
    out = os.path.join(os.fspath(out_dir), name)
    if os.path.exists(out) and os.path.samefile(out, path):
        raise WheelError(path, "the retagged wheel would overwrite its input; choose another "
                               "output directory (-w)")
    parsed = parse_wheel_name(name)
    tags = [f"{p}-{a}-{pl}" for p in parsed.python for a in parsed.abi for pl in plats]
    with WheelReader(path) as reader:
        try:
            os.makedirs(out_dir, exist_ok=True)
            rewrite_wheel(reader, out, wheel_tags=tags, compresslevel=compresslevel)
        except OSError as e:      # -w is a file, the name is a directory, no permission
            raise WheelError(path, f"cannot write {out}: {e.strerror or e}") from None
    return out
