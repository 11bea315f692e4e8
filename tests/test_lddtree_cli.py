"""The `fastelf lddtree` command."""

import json
import os
import shutil
import subprocess
import sys


def test_lddtree_cli_text_json_and_missing(tmp_path):
    """`fastelf lddtree` agrees with the loader's own trace, and exits 1 on a missing library."""
    ls = shutil.which("ls")
    trace = subprocess.run([ls], env=dict(os.environ, LD_TRACE_LOADED_OBJECTS="1"),
                           capture_output=True, text=True).stdout
    loader = {}
    for line in trace.splitlines():
        if "=>" in line:
            name, _, rest = line.strip().partition(" => ")
            loader[name] = os.path.realpath(rest.split(" (")[0])
    cmd = [sys.executable, "-m", "fastelf", "lddtree"]
    js = subprocess.run(cmd + ["--json", ls], capture_output=True, text=True)
    assert js.returncode == 0, js.stderr
    libs = json.loads(js.stdout)["libraries"]
    for name, path in loader.items():
        assert os.path.realpath(libs[name]["path"]) == path
    text = subprocess.run(cmd + [ls], capture_output=True, text=True)
    assert text.returncode == 0
    for name in loader:
        assert f"{name} => " in text.stdout

    (tmp_path / "m.c").write_text("extern int nowhere(void); int f(void){return nowhere();}\n")
    (tmp_path / "gone.c").write_text("int nowhere(void){return 1;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libgone.so"),
                    str(tmp_path / "gone.c")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libm2.so"),
                    str(tmp_path / "m.c"), "-L", str(tmp_path), "-lgone"], check=True)
    (tmp_path / "libgone.so").unlink()
    miss = subprocess.run(cmd + [str(tmp_path / "libm2.so")], capture_output=True, text=True)
    assert miss.returncode == 1
    assert "libgone.so => not found" in miss.stdout and "missing: libgone.so" in miss.stdout
