"""Text output cannot be forged or broken by names inside a wheel, and the API lets
only fastelf's own exceptions out, naming inputs briefly (issue 8, points 11, 12, 14).

Oracles: the bytes the real program writes to a pipe under a UTF-8 locale (no raw
control character, no traceback, one line per wheel), readelf for what the ELF
really holds, and zipfile for what the wheel really is.
"""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import sys

import pytest
from elfbuild import compile_c, have_compiler
from wheelbuild import build_wheel

from fastelf.audit import Status, audit_path, audit_wheel
from fastelf.errors import FastElfError, WheelError
from fastelf.patch import patch_elf

HOSTILE_NEEDED = b"lib\x1b]0;pwned\x07\x1b[2J\xff\xfe\nOK     forged.whl: manylinux_2_5_x86_64.so"


def run_cli(*args):
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run([sys.executable, "-m", "fastelf", *map(str, args)],
                          capture_output=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def hostile_so(tmp_path_factory):
    """An extension with one NEEDED entry made of terminal escapes, bytes that are not
    UTF-8 and a newline (renamed in process from a real gcc-built NEEDED entry)."""
    if not have_compiler("gcc"):
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("outsafe")
    lib = compile_c(d, "libplaceholder.so", "int placeholder(void) { return 1; }\n",
                    args=["-Wl,-soname,libplaceholder.so"])
    ext = compile_c(d, "ext2.cpython-311-x86_64-linux-gnu.so",
                    "int placeholder(void);\n"
                    "void *PyInit_ext2(void) { return (void *)(long)placeholder(); }\n",
                    libs=["-Wl,--no-as-needed", str(lib)])
    out = d / "hostile.so"
    out.write_bytes(patch_elf(ext.read_bytes(),
                              replace_needed={"libplaceholder.so": HOSTILE_NEEDED}))
    readelf = subprocess.run(["readelf", "-d", "-W", str(out)], capture_output=True)
    assert readelf.returncode == 0 and b"Shared library: [lib\x1b]0;pwned" in readelf.stdout
    return out.read_bytes()


def test_show_and_audit_escape_names_from_the_wheel(tmp_path, hostile_so):
    build_wheel(tmp_path, {"pkg/__init__.py": b""}, name="good", tags="any")  # the audit's OK line
    bad = build_wheel(tmp_path, {"ext2.cpython-311-x86_64-linux-gnu.so": hostile_so},
                      name="evil", tags="manylinux_2_17_x86_64")
    show = run_cli("show", bad)
    assert show.returncode == 1, show.stderr          # mislabeled: needs an external library
    assert b"Traceback" not in show.stderr + show.stdout
    text = show.stdout.decode("utf-8")                # valid UTF-8, no raw control bytes
    assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in text)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\xff\\xfe\\x0aOK" in text
    audit = run_cli("audit", "--no-progress", tmp_path)
    lines = audit.stdout.decode("utf-8").splitlines()
    assert audit.returncode == 1 and len(lines) == 2, audit.stdout   # one line per wheel
    assert [ln.split()[0] for ln in lines] == ["BAD", "OK"]
    assert not any(ln.startswith("OK     forged") for ln in lines)
    js = run_cli("show", "--json", bad)
    assert js.returncode == 1 and b"\\u001b]0;pwned" in js.stdout    # JSON keeps the value, escaped


def test_a_directory_name_cannot_forge_a_line(tmp_path):
    d = tmp_path / "x\nOK     fake-1.0-py3-none-any.whl: manylinux_2_5_x86_64\n"
    d.mkdir()
    build_wheel(d, {"pkg/__init__.py": b"", "pkg/data.bin": b"\x7fELF" + bytes(60)},
                name="real", tags="any")
    audit = run_cli("audit", "--no-progress", tmp_path)
    lines = audit.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1 and "\\x0aOK     fake" in lines[0], lines


def test_errors_name_bytes_input_briefly_and_use_filename():
    junk = b"PK\x05\x06" + os.urandom(1 << 20)
    r = audit_path(junk)
    assert r.status is Status.ERROR and r.path == "<bytes>" and len(r.error) < 300
    r = audit_path(junk, filename="pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert r.path == "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl" and len(r.error) < 300
    assert r.claimed_tags == ["manylinux_2_17_x86_64"]


class _LyingStream(io.RawIOBase):
    """A seekable file object whose reads fail as a truncated HTTP body does."""

    def __init__(self, data):
        self._data, self._pos = data, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        self._pos = [pos, self._pos + pos, len(self._data) + pos][whence]
        return self._pos

    def tell(self):
        return self._pos

    def readinto(self, b):
        raise http.client.IncompleteRead(b"partial", 100)

    def fileno(self):
        raise OSError("no file descriptor")


def test_only_fastelf_exceptions_leave_the_api(tmp_path):
    w = build_wheel(tmp_path, {"pkg/__init__.py": b""}, name="ok", tags="any")
    stream = _LyingStream(w.read_bytes())
    with pytest.raises(WheelError) as info:
        audit_wheel(stream, filename=w.name)
    assert isinstance(info.value, FastElfError) and "IncompleteRead" in str(info.value)
    r = audit_path(_LyingStream(w.read_bytes()), filename=w.name)
    assert r.status is Status.ERROR and "IncompleteRead" in r.error
