"""Write small, valid wheels for the tests.

``build_wheel(dir, {member path: bytes}, ...)`` writes
``<name>-<version>-<py>-<abi>-<plat>.whl`` holding those members plus a
``<name>-<version>.dist-info`` directory with METADATA, WHEEL and a RECORD
whose sha256 hashes and sizes match (PEP 376 / PEP 427 / the binary
distribution format spec).  Members can be deflated (the default) or stored,
and ELF members keep an executable mode.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["build_wheel", "wheel_filename", "record_hash", "read_record"]

_EPOCH = (2020, 1, 1, 0, 0, 0)    # fixed timestamp: byte-identical output for the same input


def record_hash(data: bytes) -> str:
    """``sha256=<urlsafe base64, unpadded>`` as written in RECORD."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def wheel_filename(name: str, version: str, tags: str | Sequence[str],
                   python_tag: str = "cp311", abi_tag: str = "cp311",
                   build: str | None = None) -> str:
    """The PEP 427 file name; ``tags`` is one platform tag or several (joined with '.')."""
    plat = tags if isinstance(tags, str) else ".".join(tags)
    parts = [name.replace("-", "_"), version] + ([build] if build else []) + [
        python_tag, abi_tag, plat]
    return "-".join(parts) + ".whl"


def build_wheel(directory, files: Mapping[str, bytes | str | Path], *,
                name: str = "fixture", version: str = "1.0",
                tags: str | Sequence[str] = "linux_x86_64",
                python_tag: str = "cp311", abi_tag: str = "cp311",
                compression: int = zipfile.ZIP_DEFLATED, root_is_purelib: bool = False,
                filename: str | None = None) -> Path:
    """Write a wheel into ``directory`` and return its path.

    ``files`` maps member paths (POSIX, relative to the wheel root) to their
    contents: bytes, text, or a Path whose bytes are read.  ``tags`` gives
    the platform tag(s) of the file name and of the WHEEL ``Tag:`` lines;
    ``filename`` overrides the file name only (for mislabeled wheels).
    ``compression`` is ``zipfile.ZIP_DEFLATED`` or ``zipfile.ZIP_STORED``.
    A member path ending in "/" (with empty contents) is a directory entry.
    """
    plats = [tags] if isinstance(tags, str) else list(tags)
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    members = {}
    for path, content in files.items():
        if isinstance(content, Path):
            content = content.read_bytes()
        elif isinstance(content, str):
            content = content.encode()
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"unsafe member path {path!r}")
        members[path] = content
    members[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Summary: fastelf test fixture\n").encode()
    wheel_lines = ["Wheel-Version: 1.0", "Generator: fastelf-tests (wheelbuild.py)",
                   f"Root-Is-Purelib: {'true' if root_is_purelib else 'false'}"]
    wheel_lines += [f"Tag: {python_tag}-{abi_tag}-{p}" for p in plats]
    members[f"{info}/WHEEL"] = ("\n".join(wheel_lines) + "\n").encode()
    record_name = f"{info}/RECORD"
    record = "".join(f"{p},{record_hash(b)},{len(b)}\n" for p, b in members.items()
                     if not p.endswith("/"))
    record += f"{record_name},,\n"
    members[record_name] = record.encode()

    out = Path(directory) / (filename or wheel_filename(name, version, plats, python_tag,
                                                         abi_tag))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=compression) as zf:
        for path, data in members.items():
            zi = zipfile.ZipInfo(path, date_time=_EPOCH)
            zi.compress_type = compression
            if path.endswith("/"):          # a directory entry: no data, not in RECORD
                if data:
                    raise ValueError(f"directory entry {path!r} with data")
                zi.external_attr = (0o040755 << 16) | 0x10
            else:
                mode = 0o755 if data[:4] == b"\x7fELF" else 0o644
                zi.external_attr = (0o100000 | mode) << 16
            zi.create_system = 3
            zf.writestr(zi, data)
    tmp.replace(out)
    return out


def read_record(wheel_path) -> dict:
    """RECORD of a wheel as {path: (hash, size)} (for checking a wheel's integrity)."""
    with zipfile.ZipFile(wheel_path) as zf:
        rec = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        out = {}
        for line in zf.read(rec).decode().splitlines():
            if not line:
                continue
            path, h, size = line.rsplit(",", 2)
            out[path] = (h, int(size) if size else None)
        return out
