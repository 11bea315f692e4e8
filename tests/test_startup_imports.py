"""What ``fastelf repair`` imports: start-up time bounds a small wheel's repair.

Interpreter start-up and imports are most of a one-wheel CLI call (issue 11.6), so
the repair path must not load what only other commands use: the batch engine
(multiprocessing, concurrent.futures' process pool), the remote reader (http.client,
ssl, email), Dask, the census, ``check``, the audit cache (sqlite3).  The oracle is
the interpreter's own ``sys.modules`` after a real repair in a fresh process (no
timing).  The same probe run on ``fastelf audit`` must see the batch engine, so a
probe that could not see an import would fail there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from elfbuild import compile_c, have_compiler, python_ext_source
from wheelbuild import build_wheel

import fastelf

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
EXT = sysconfig.get_config_var("EXT_SUFFIX")
SRC = str(Path(fastelf.__file__).resolve().parent.parent)

# modules that only other commands (or big wheels: the threaded deflate) use
HEAVY = ("fastelf.batch", "fastelf.remote", "fastelf.dask", "fastelf.census",
         "fastelf.census_html", "fastelf.census_md", "fastelf.check", "fastelf.cache",
         "sqlite3", "multiprocessing", "concurrent.futures", "http.client", "ssl", "email",
         "socket", "dask", "distributed", "fsspec")

# run the CLI's main() in this process, then print the modules it loaded
PROBE = ("import json, sys\n"
         "import fastelf.cli\n"
         "try:\n"
         "    rc = fastelf.cli.main(sys.argv[1:])\n"
         "except SystemExit as e:\n"
         "    rc = e.code\n"
         "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n")


def loaded_by(args: list, env_extra: dict | None = None) -> tuple:
    """(exit code, set of module names) of ``fastelf <args>`` run in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=SRC, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return last["rc"], set(last["modules"])


def heavy_in(modules: set) -> list:
    return sorted(m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY
                  or any(m.startswith(h + ".") for h in HEAVY))


@pytest.fixture(scope="module")
def grafting_wheel(tmp_path_factory):
    """A wheel whose extension needs a private library (found through LD_LIBRARY_PATH),
    so the repair finds, patches, grafts and writes: every step of the path runs."""
    if not have_compiler("gcc"):
        pytest.skip("gcc is needed")
    root = tmp_path_factory.mktemp("startup")
    lib = compile_c(root / "private", "libqux.so.1", "int qux(void) { return 7; }\n",
                    args=["-Wl,-soname,libqux.so.1"])
    ext = compile_c(root / "build", "_ext" + EXT,
                    python_ext_source("_ext", "qux()", "extern int qux(void);"),
                    args=["-I", sysconfig.get_paths()["include"]],
                    libs=["-Wl,--no-as-needed", str(lib)])
    wheel = build_wheel(root / "in", {"qux/__init__.py": "", f"qux/_ext{EXT}": ext},
                        name="qux", python_tag=PY, abi_tag=PY)
    return wheel, root / "private", root


def test_repair_loads_no_heavy_module(grafting_wheel):
    wheel, private, root = grafting_wheel
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    rc, modules = loaded_by(["repair", str(wheel), "-w", str(out)],
                            {"LD_LIBRARY_PATH": str(private)})
    assert rc == 0
    (repaired,) = out.glob("*.whl")
    with zipfile.ZipFile(repaired) as zf:          # the repair really grafted
        assert any(n.startswith("qux.libs/libqux-") for n in zf.namelist())
        assert zf.testzip() is None
    assert "fastelf.repair" in modules
    assert heavy_in(modules) == []


def test_repair_help_loads_no_heavy_module():
    rc, modules = loaded_by(["repair", "--help"])
    assert rc == 0
    assert heavy_in(modules) == []


def test_probe_sees_the_batch_engine_of_audit(grafting_wheel):
    """The control: ``fastelf audit`` does use the batch engine, and the probe sees it."""
    wheel, _private, _root = grafting_wheel
    _rc, modules = loaded_by(["audit", str(wheel)])
    assert "fastelf.batch" in modules
    assert "fastelf.batch" in heavy_in(modules)


def test_audit_many_is_still_public():
    """``fastelf.audit_many`` is imported on first use, and is the batch engine's."""
    from fastelf.batch import audit_many
    assert fastelf.audit_many is audit_many
    assert "audit_many" in dir(fastelf)
    with pytest.raises(AttributeError):
        fastelf.no_such_name  # noqa: B018
