"""How the ``fastelf`` process ends: ``cli.run`` flushes and leaves with ``os._exit``.

Skipping the interpreter's teardown must lose nothing: the oracle is ``cli.main``
run in this process (the same output and exit code, byte for byte), the shell's
view of a process (its exit status, what reached the pipe and stderr), and the
installed entry point's metadata.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from wheelbuild import build_wheel

import fastelf
from fastelf import cli

SRC = str(Path(fastelf.__file__).resolve().parent.parent)
ELF_BYTES = Path(sys.executable).resolve().read_bytes()   # any ELF file will do


def fastelf_process(args: list[str], **kw: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "fastelf", *args], capture_output=True,
                          env=env, timeout=120, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exit")
    pure = build_wheel(root, {"p/__init__.py": "x = 1\n"}, name="pure", tags="any",
                       python_tag="py3", abi_tag="none")
    mislabeled = build_wheel(root, {"m/__init__.py": "", "m/tool": ELF_BYTES},
                             name="mislabeled", tags="any", python_tag="py3", abi_tag="none")
    broken = root / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"PK\x03\x04 not a zip at all")
    return {"pure": pure, "mislabeled": mislabeled, "broken": broken}


@pytest.mark.parametrize("which", ["pure", "mislabeled", "broken"])
@pytest.mark.parametrize("json_out", [False, True])
def test_process_says_what_main_says(wheels: dict[str, Path], which: str,
                                     json_out: bool) -> None:
    args = ["audit", str(wheels[which]), "--no-progress"] + (["--json"] if json_out else [])
    out = io.StringIO()
    code = cli.main(args, out)
    proc = fastelf_process(args)
    assert proc.returncode == code
    assert proc.stdout.decode() == out.getvalue()
    assert b"Traceback" not in proc.stderr and b"Exception ignored" not in proc.stderr


def test_exit_codes_differ_as_documented(wheels: dict[str, Path]) -> None:
    # a test above that compared two equal wrong codes would pass; these are the table's
    codes = {w: fastelf_process(["audit", str(p), "--no-progress"]).returncode
             for w, p in wheels.items()}
    assert codes == {"pure": 0, "mislabeled": 1, "broken": 3}


def test_large_output_reaches_the_pipe_whole(wheels: dict[str, Path], tmp_path: Path) -> None:
    # more than a pipe holds (64 KiB): the flush before os._exit must write all of it
    many = [str(wheels["mislabeled"])] * 600
    out = io.StringIO()
    code = cli.main(["audit", *many, "--json", "--no-progress"], out)
    assert len(out.getvalue()) > 1 << 16
    proc = fastelf_process(["audit", *many, "--json", "--no-progress"])
    assert (proc.returncode, proc.stdout.decode()) == (code, out.getvalue())
    # and into a file
    target = tmp_path / "out.jsonl"
    with open(target, "wb") as fh:
        env = dict(os.environ, PYTHONPATH=SRC)
        rc = subprocess.run([sys.executable, "-m", "fastelf", "audit", *many, "--json",
                             "--no-progress"], stdout=fh, env=env, timeout=120).returncode
    assert rc == code and target.read_text() == out.getvalue()


def test_reader_gone_is_quiet(wheels: dict[str, Path]) -> None:
    # `fastelf audit ... | head -c 1`: the pipe closes under the writer
    env = dict(os.environ, PYTHONPATH=SRC)
    many = [str(wheels["pure"])] * 400
    proc = subprocess.Popen([sys.executable, "-m", "fastelf", "audit", *many, "--json",
                             "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1) == b"{"
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0
    assert err == b""


def test_repair_output_is_complete(fx: object, tmp_path: Path) -> None:
    # a repaired wheel written by a process that ends with os._exit is whole
    wheel = fx.wheel                                          # type: ignore[attr-defined]
    env = dict(os.environ, PYTHONPATH=SRC,
               LD_LIBRARY_PATH=str(fx.private))               # type: ignore[attr-defined]
    proc = subprocess.run([sys.executable, "-m", "fastelf", "repair", str(wheel),
                           "-w", str(tmp_path)], capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (out,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
    assert not list(tmp_path.glob("*.part"))


def test_console_script_is_run() -> None:
    # the `fastelf` command pip installs calls run(), which ends the process itself
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "fastelf"]
    assert script.value == "fastelf.cli:run"
    assert script.load() is cli.run
