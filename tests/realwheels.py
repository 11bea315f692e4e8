"""Real wheels from PyPI for the tests, and the independent oracles they are checked with.

The wheels are small (each under 2 MB), pinned by exact version, file name
and sha256, and fetched once with ``pip download`` into a cache directory
(``$FASTELF_WHEEL_CACHE``, default ``~/.cache/fastelf-test-wheels``).  When
a wheel is missing and cannot be downloaded (no network), ``fetch`` returns
None and the caller skips.

Oracles (none of them uses fastelf):

* ``auditwheel_show(path)`` -- ``auditwheel show --json`` (auditwheel 6.8.2,
  a test dependency) in a subprocess;
* ``readelf_version_needs(path)`` / ``readelf_undefined(path)`` /
  ``readelf_dynamic(path)`` -- binutils' readelf on an ELF file;
* ``auditwheel_policies(libc)`` -- auditwheel's own policy JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

__all__ = ["RealWheel", "WHEELS", "cache_dir", "fetch", "auditwheel_show",
           "have_auditwheel", "readelf_version_needs", "readelf_undefined",
           "readelf_dynamic", "auditwheel_policies", "glibc_tag_for"]


class RealWheel(NamedTuple):
    project: str
    version: str
    platform: str      # the --platform given to pip download
    filename: str
    sha256: str
    libc: str          # "glibc" or "musl"
    arch: str
    why: str           # what this wheel is here to cover

    @property
    def id(self):
        return f"{self.project}-{self.version}-{self.platform}"


WHEELS = [
    RealWheel("MarkupSafe", "2.1.5", "manylinux_2_17_x86_64",
              "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "b91c037585eba9095565a3556f611e3cbfaa42ca1e865f7b8015fe5c7336d5a5",
              "glibc", "x86_64", "tiny C extension, GLIBC_2.14 memcpy, legacy alias in the name"),
    RealWheel("msgpack", "1.0.8", "manylinux_2_17_x86_64",
              "msgpack-1.0.8-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "83b5c044f3eff2a6534768ccfd50425939e7a8b5cf9a7261c385de1e20dcfc85",
              "glibc", "x86_64", "Cython extension, unstripped"),
    RealWheel("PyYAML", "6.0.1", "manylinux_2_17_x86_64",
              "PyYAML-6.0.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "d2b04aac4d386b172d5b9692e2d2da8de7bfb6c387fa4f801fbf6fb2e6ba4673",
              "glibc", "x86_64", "2.5 MB inflated extension with libyaml linked in statically"),
    RealWheel("cffi", "1.16.0", "manylinux_2_17_x86_64",
              "cffi-1.16.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "7b78010e7b97fef4bee1e896df8a4bbb6712b7f05b7ef630f9d1da00f6444d2e",
              "glibc", "x86_64", "versioned symbols from libc.so.6 and libpthread.so.0"),
    RealWheel("psutil", "5.9.8", "manylinux_2_17_x86_64",
              "psutil-5.9.8-cp36-abi3-manylinux_2_12_x86_64.manylinux2010_x86_64."
              "manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "d06016f7f8625a1825ba3732081d77c94589dca78b7a3fc072194851e88461a4",
              "glibc", "x86_64", "abi3, two extensions, four platform tags, best is 2_12"),
    RealWheel("pyzmq", "25.1.2", "manylinux_2_17_x86_64",
              "pyzmq-25.1.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "7598d2ba821caa37a0f9d54c25164a4fa351ce019d64d0b44b45540950458840",
              "glibc", "x86_64", "auditwheel-repaired: pyzmq.libs/ libzmq + libsodium, C++"),
    RealWheel("MarkupSafe", "2.1.5", "musllinux_1_1_x86_64",
              "MarkupSafe-2.1.5-cp311-cp311-musllinux_1_1_x86_64.whl",
              "3a57fdd7ce31c7ff06cdfbf31dafa96cc533c21e443d57f5b1ecc6cdc668ec7f",
              "musl", "x86_64", "musllinux_1_1 build (Alpine: NEEDED libc.musl-x86_64.so.1)"),
    RealWheel("MarkupSafe", "3.0.2", "musllinux_1_2_x86_64",
              "MarkupSafe-3.0.2-cp311-cp311-musllinux_1_2_x86_64.whl",
              "0bff5e0ae4ef2e1ae4fdf2dfd5b76c75e5c2fa4132d05fc1b0dabcd20c7e28c4",
              "musl", "x86_64", "musllinux_1_2 x86_64"),
    RealWheel("msgpack", "1.1.0", "musllinux_1_2_aarch64",
              "msgpack-1.1.0-cp311-cp311-musllinux_1_2_aarch64.whl",
              "8da4bf6d54ceed70e8861f833f83ce0814a2b72102e890cbdfe4b34764cdd66e",
              "musl", "aarch64", "musllinux_1_2 aarch64 (cross-arch audit)"),
]


def cache_dir() -> Path:
    d = os.environ.get("FASTELF_WHEEL_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "fastelf-test-wheels"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_DOWNLOAD_FAILED: list = []     # the first failed download of this session, if any


class FetchError(RuntimeError):
    """A wheel was downloaded but is not the pinned file (wrong hash)."""


def fetch(w: RealWheel, cache: Path | None = None):
    """The cached path of ``w``, downloading it first if needed.

    Returns ``(path, None)``, or ``(None, reason)`` when it cannot be
    downloaded (network down, PyPI unreachable).  A file whose sha256 does
    not match the pin raises FetchError: that is not a network problem.
    """
    cache = Path(cache or cache_dir())
    path = cache / w.filename
    if not path.exists() and _DOWNLOAD_FAILED:
        # one failure is enough: do not wait for pip's timeouts once per wheel
        return None, f"{w.filename} not cached; an earlier download failed: {_DOWNLOAD_FAILED[0]}"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", w.platform, "--python-version", "3.11", "--quiet",
               "--disable-pip-version-check", "--timeout", "30", "--retries", "1",
               "-d", str(cache), f"{w.project}=={w.version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            _DOWNLOAD_FAILED.append(f"pip download {w.project}=={w.version} timed out")
            return None, _DOWNLOAD_FAILED[0]
        if not path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            _DOWNLOAD_FAILED.append(f"cannot download {w.filename} (network down?): "
                                    + " | ".join(tail))
            return None, _DOWNLOAD_FAILED[-1]
    digest = _sha256(path)
    if digest != w.sha256:
        raise FetchError(f"{path}: sha256 {digest}, expected {w.sha256}; delete it to refetch")
    return path, None


# ------------------------------------------------------------------ oracles

def have_auditwheel() -> bool:
    try:
        import auditwheel  # noqa: F401
    except ImportError:
        return False
    return True


def auditwheel_show(path) -> dict:
    """``auditwheel show --json`` of a wheel, parsed.  Raises on a crash."""
    env = dict(os.environ, LC_ALL="C")
    for var in ("LD_LIBRARY_PATH", "AUDITWHEEL_LD_LIBRARY_PATH", "AUDITWHEEL_PLAT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "auditwheel", "show", "--json", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"auditwheel show failed ({proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def auditwheel_policies(libc: str) -> list:
    """auditwheel's own policy list (manylinux or musllinux), oldest first, without 'linux'."""
    from importlib import resources
    name = {"glibc": "manylinux-policy.json", "musl": "musllinux-policy.json"}[libc]
    data = json.loads(resources.files("auditwheel.policy").joinpath(name).read_text())
    return [p for p in data if p["name"] != "linux"]


def _readelf(args, path) -> str:
    exe = shutil.which("readelf")
    if exe is None:
        import pytest
        pytest.skip("readelf (binutils) not installed")
    proc = subprocess.run([exe, "--wide", *args, str(path)], capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"), check=True)
    return proc.stdout


_FILE_RE = re.compile(r"File:\s+(\S+)\s+Cnt:")
_NAME_RE = re.compile(r"Name:\s+(\S+)\s+Flags:")


def readelf_version_needs(path) -> dict:
    """{library: set of version names} from ``readelf -V`` (the .gnu.version_r section)."""
    text = _readelf(["-V"], path)
    out: dict = {}
    if "Version needs section" not in text:
        return out
    block = text.split("Version needs section", 1)[1]
    block = block.split("Version definition section", 1)[0]
    lib = None
    for line in block.splitlines():
        m = _FILE_RE.search(line)
        if m:
            lib = m.group(1)
            out.setdefault(lib, set())
            continue
        m = _NAME_RE.search(line)
        if m and lib is not None:
            out[lib].add(m.group(1))
    return out


def readelf_undefined(path) -> dict:
    """{symbol name: binding} of the undefined dynamic symbols (``readelf --dyn-syms``)."""
    out = {}
    for line in _readelf(["--dyn-syms"], path).splitlines():
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(parts) >= 8 and parts[0].endswith(":") and parts[6] == "UND":
            out[parts[7].split("@")[0]] = parts[4]
    return out


def readelf_dynamic(path) -> dict:
    """{"NEEDED": [...], "RPATH": str|None, "RUNPATH": str|None, "SONAME": str|None}."""
    out = {"NEEDED": [], "RPATH": None, "RUNPATH": None, "SONAME": None}
    for line in _readelf(["-d"], path).splitlines():
        m = re.search(r"\((NEEDED|RPATH|RUNPATH|SONAME)\)\s+.*\[(.*)\]", line)
        if m:
            if m.group(1) == "NEEDED":
                out["NEEDED"].append(m.group(2))
            else:
                out[m.group(1)] = m.group(2)
    return out


def _version_key(v: str):
    return tuple(int(x) for x in v.split("."))


def glibc_tag_for(version_needs: dict, arch: str) -> str:
    """The oldest manylinux tag, from auditwheel's policy list, allowing the newest GLIBC_x.y.

    ``version_needs`` is {lib: versions} (several ELFs merged), e.g. from readelf.
    """
    glibc = [v[len("GLIBC_"):] for vers in version_needs.values() for v in vers
             if v.startswith("GLIBC_") and re.fullmatch(r"GLIBC_\d+(\.\d+)*", v)]
    need = max((_version_key(v) for v in glibc), default=(0,))
    for p in auditwheel_policies("glibc"):
        if arch not in p["symbol_versions"]:
            continue
        major, minor = (int(x) for x in p["name"].split("_")[1:3])
        if (major, minor) >= need[:2]:
            return f"{p['name']}_{arch}"
    raise AssertionError(f"no manylinux policy for GLIBC {need}")
