"""Change a wheel's platform tags: file name and WHEEL ``Tag:`` lines."""

from __future__ import annotations

import os
import re

from . import policy as pol
from .errors import PolicyError, WheelError
from .wheel import WheelReader
from .wheelwriter import output_dir_problem, rewrite_wheel

_NAME_RE = re.compile(r"^(?P<stem>.+)-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def split_wheel_name(filename: str):
    """(stem 'name-ver[-build]', python tags, abi tags, platform tags) of a wheel file name."""
    m = _NAME_RE.match(os.path.basename(filename))
    if not m:
        raise WheelError(filename, "not a wheel file name (name-version-py-abi-platform.whl)")
    return m.group("stem"), m.group("py").split("."), m.group("abi").split("."), \
        m.group("plat").split(".")


def expand_tag(tag: str, arch: str | None = None) -> list:
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


def ordered_tags(tags) -> list:
    return sorted(dict.fromkeys(tags), key=pol.tag_order_key)


def retagged_name(filename: str, plats) -> str:
    stem, py, abi, _old = split_wheel_name(filename)
    return f"{stem}-{'.'.join(py)}-{'.'.join(abi)}-{'.'.join(ordered_tags(plats))}.whl"


def retag_wheel(path, out_dir, plats, *, compresslevel=6) -> str:
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
    _stem, py, abi, _old = split_wheel_name(name)
    tags = [f"{p}-{a}-{pl}" for p in py for a in abi for pl in plats]
    with WheelReader(path) as reader:
        try:
            os.makedirs(out_dir, exist_ok=True)
            rewrite_wheel(reader, out, wheel_tags=tags, compresslevel=compresslevel)
        except OSError as e:      # -w is a file, the name is a directory, no permission
            raise WheelError(path, f"cannot write {out}: {e.strerror or e}") from None
    return out
