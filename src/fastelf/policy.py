"""Platform policies (manylinux, musllinux) as data, and tag arithmetic.

``policies.json`` lists each family's policies oldest first; each one
inherits the libraries and, per architecture, the symbol versions of the one
before it.  This module expands that into :class:`Policy` objects for one
(libc, architecture) pair.  Nothing here reads ELF files or wheels.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .errors import PolicyError

from .libc import GLIBC, MUSL  # noqa: F401 (re-exported)
_FAMILY = {GLIBC: "manylinux", MUSL: "musllinux"}

# libraries that are the dynamic loader itself: never external, never versioned
_LOADER_RE = re.compile(r"^(ld-linux.*|ld64\.so\.[12]|ld-musl-.*|ld\.so\.1)$")

# legacy aliases (PEP 513/571/599) -> PEP 600 names
LEGACY_ALIASES = {"manylinux1": "manylinux_2_5", "manylinux2010": "manylinux_2_12",
                  "manylinux2014": "manylinux_2_17"}


def is_loader(soname: str) -> bool:
    return bool(_LOADER_RE.match(soname))


@dataclass(frozen=True)
class Policy:
    """One platform tag's rules for one architecture."""

    name: str                      # e.g. "manylinux_2_17"
    arch: str
    libc: str
    priority: int                  # higher is more compatible (older)
    aliases: tuple
    libraries: frozenset           # sonames a wheel may need from the system
    symbol_versions: dict          # prefix -> frozenset of allowed "PREFIX_x.y" names
    blacklist: dict                # soname -> frozenset of symbol names
    unavailable_symbols: tuple     # fnmatch patterns of symbols this libc lacks

    @property
    def tag(self) -> str:
        return f"{self.name}_{self.arch}"

    @property
    def alias_tags(self) -> tuple:
        return tuple(f"{a}_{self.arch}" for a in self.aliases)

    def version_allowed(self, version: str) -> bool | None:
        """True/False for a version this policy governs; None if it does not."""
        prefix = version.partition("_")[0]
        allowed = self.symbol_versions.get(prefix)
        if allowed is None:
            return None
        return version in allowed

    def lacks_symbol(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.unavailable_symbols)


@lru_cache(maxsize=None)
def _data():
    text = resources.files(__package__).joinpath("policies.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=None)
def policies_for(libc: str, arch: str) -> tuple:
    """The policies of ``libc`` that exist for ``arch``, most compatible first."""
    if libc not in _FAMILY:
        raise PolicyError(f"unknown libc {libc!r}")
    data = _data()
    family = data[_FAMILY[libc]]
    out = []
    libs: set = set()
    versions: dict = {}
    blacklist: dict = {}
    unavailable: tuple = ()
    musl_libc = data["musl_libc_names"].get(arch)
    n = len(family)
    for i, entry in enumerate(family):
        libs |= set(entry.get("add_libraries", ()))
        if "blacklist" in entry:
            blacklist = {k: frozenset(v) for k, v in entry["blacklist"].items()}
        unavailable = tuple(
            pat for rule in entry.get("unavailable_symbols", ())
            if arch in rule.get("arches", (arch,)) for pat in rule["patterns"])
        arches = entry["arches"]
        if arch not in arches:
            continue
        for prefix, added in arches[arch].items():
            versions.setdefault(prefix, set()).update(f"{prefix}_{v}" for v in added)
        allowed = set(libs)
        if libc == MUSL and "libc.so" in allowed and musl_libc:
            allowed.add(musl_libc)      # Alpine's name; Debian's musl-gcc links "libc.so"
        out.append(Policy(
            name=entry["tag"], arch=arch, libc=libc, priority=100 * (n - i),
            aliases=tuple(entry.get("aliases", ())), libraries=frozenset(allowed),
            symbol_versions={k: frozenset(v) for k, v in versions.items()},
            blacklist=dict(blacklist), unavailable_symbols=unavailable))
    out.sort(key=lambda p: -p.priority)
    return tuple(out)


def all_arches(libc: str) -> list:
    arches = set()
    for entry in _data()[_FAMILY[libc]]:
        arches.update(entry["arches"])
    return sorted(arches)


_TAG_RE = re.compile(r"^(manylinux|musllinux)_(\d+)_(\d+)_(.+)$")
_LEGACY_RE = re.compile(r"^(manylinux1|manylinux2010|manylinux2014)_(.+)$")


def parse_platform_tag(tag: str):
    """Split a platform tag into (libc, policy name, arch), or None for non-Linux tags.

    ``linux_<arch>`` gives (None, "linux", arch).
    """
    m = _LEGACY_RE.match(tag)
    if m:
        return GLIBC, LEGACY_ALIASES[m.group(1)], m.group(2)
    m = _TAG_RE.match(tag)
    if m:
        libc = GLIBC if m.group(1) == "manylinux" else MUSL
        return libc, f"{m.group(1)}_{m.group(2)}_{m.group(3)}", m.group(4)
    if tag.startswith("linux_"):
        return None, "linux", tag[len("linux_"):]
    return None


def find_policy(libc: str, arch: str, name: str) -> Policy | None:
    name = LEGACY_ALIASES.get(name, name)
    for p in policies_for(libc, arch):
        if p.name == name:
            return p
    return None


def tag_order_key(tag: str):
    """Conventional order of platform tags in a wheel file name."""
    parsed = parse_platform_tag(tag)
    if parsed is None or parsed[0] is None:
        return (2, tag)
    libc, name, arch = parsed
    nums = tuple(int(x) for x in re.findall(r"\d+", name))
    legacy = tag.split("_")[0] in LEGACY_ALIASES
    return (0 if libc == GLIBC else 1, arch, nums, legacy, tag)
