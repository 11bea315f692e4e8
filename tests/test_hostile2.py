"""Hostile input, round 2: the loader search, repair/retag output, batch processes.

Each defect must end in a clear one-line error or a correct verdict, with
bounded work, and never cost the rest of a batch.  No test measures time:
work is counted (lookups, file opens, paths pulled), and subprocess timeouts
are only hang guards.  Outside oracles: readelf (what an ELF really holds),
the real glibc loader (what a slash in DT_NEEDED means), the kernel (whether
a process is still alive, what signal ended it), ``zipfile`` (what was written).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import hostile_support as hs
import pytest
from elfbuild import compile_c, have_compiler

from fastelf import batch, cli, inwheel, lddtree, ldpaths
from fastelf.audit import audit_path
from fastelf.errors import LimitError
from fastelf.lddtree import ElfCache, resolve_tree
from fastelf.repair import RepairError, repair_wheel
from fastelf.retag import retag_wheel
from fastelf.wheel import Limits

pytestmark = pytest.mark.skipif(not have_compiler("gcc") or shutil.which("readelf") is None,
                                reason="gcc and readelf are needed")

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = dict(os.environ, PYTHONPATH=SRC)
SO = (hs.SEEDS / "x86_64-sysv-hash.so").read_bytes()      # manylinux-clean, no external libs
EXT = "demo/seed.cpython-311-x86_64-linux-gnu.so"
HANG_GUARD = 120                                           # seconds; only against hangs


def readelf_needed(data: bytes, tmp_path) -> list:
    """DT_NEEDED names as binutils' readelf reads them (the oracle)."""
    f = tmp_path / "readelf-input"
    f.write_bytes(data)
    out = subprocess.run(["readelf", "-dW", str(f)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("[", 1)[1].rsplit("]", 1)[0] for line in out.splitlines()
            if "(NEEDED)" in line]


def wait_for(condition) -> None:
    """Wait until ``condition()`` holds; the deadline is only a hang guard."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, "hang guard"
        time.sleep(0.02)


def one_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastelf: error: "), text
    assert "Traceback" not in text
    return lines[0]


# ------------------------------------------------------------------ 1. NEEDED x RPATH

def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """An extension with 300 DT_NEEDED and 300 DT_RPATH entries."""
    d = tmp_path_factory.mktemp("bomb")
    rpath = ["$ORIGIN"] + [f"$ORIGIN/r{i}" for i in range(299)]
    return hs.many_needed_elf(d, 300, rpath)


def test_needed_times_rpath_is_linear_in_audit(bomb, tmp_path, monkeypatch):
    members = 12
    files = {f"demo/m{i}.cpython-311-x86_64-linux-gnu.so": bomb for i in range(members)}
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel(files))
    dir_calls = _counting(monkeypatch, inwheel, "wheel_dir_of")
    find_calls = _counting(monkeypatch, inwheel.Resolver, "find")
    r = audit_path(wheel)
    assert r.error is None
    needed = readelf_needed(bomb, tmp_path)
    assert len(needed) == 301                      # 300 libn*.so + libc.so.6
    # one lookup per (member, DT_NEEDED) edge; each RPATH entry expanded once per member
    # (it used to be NEEDED x RPATH per member: 90,000 here)
    assert len(find_calls) == members * len(needed)
    assert len(dir_calls) <= members * 2 * 300
    # the verdict: every libn*.so is external, needed by every member
    check = r.policies[0]
    assert sorted(check.external_libraries) == sorted(n for n in needed if n.startswith("libn"))
    assert all(len(who) == members for who in check.external_libraries.values())
    # repair searches the host for all 300 from the first member needing each (here the
    # same one): its search order is built once, not once per library (300)
    orders = _counting(monkeypatch, lddtree.Searcher, "_search_order")
    with pytest.raises(RepairError, match=r"cannot find external libraries libn0.so, .* and "
                                          r"280 more \(searched"):
        repair_wheel(wheel, tmp_path / "out")
    assert len(orders) == 1


def test_chained_members_resolve_once_per_inherited_path(tmp_path, monkeypatch):
    """40 libraries in a chain, each RPATH $ORIGIN, needed by 40 extensions: every
    library is walked once, not once per extension."""
    d = tmp_path / "chain"
    d.mkdir()
    libs = []
    for i in range(40):
        src = "int f%d(void){return %d;}\n" % (i, i)
        link = [str(libs[-1])] if libs else []
        libs.append(compile_c(d, f"libc{i}.so", src, args=[f"-Wl,-soname,libc{i}.so"],
                              libs=["-Wl,--no-as-needed", *link]))
    files = {f"demo/libc{i}.so": p.read_bytes() for i, p in enumerate(libs)}
    ext = compile_c(d, "e.so", "int PyInit_e(void){return 0;}\n",
                    args=["-Wl,-rpath,$ORIGIN", "-Wl,--disable-new-dtags"],
                    libs=["-Wl,--no-as-needed", str(libs[-1])])
    for i in range(40):
        files[f"demo/e{i}.cpython-311-x86_64-linux-gnu.so"] = ext.read_bytes()
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel(files))
    find_calls = _counting(monkeypatch, inwheel.Resolver, "find")
    r = audit_path(wheel)
    assert r.error is None and not r.policies[0].external_libraries
    # each extension's own edges (2: libc39.so, libc.so.6) plus each library's once
    lib_edges = sum(len(readelf_needed(p.read_bytes(), tmp_path)) for p in libs)
    assert len(find_calls) == 40 * 2 + lib_edges


def test_needed_and_rpath_limits_are_clear(tmp_path, monkeypatch):
    """NEEDED entries are capped where the file is parsed (Limits.max_needed, one
    home for that limit); search paths by the resolver (MAX_SEARCH_DIRS), in audit
    and lddtree alike."""
    monkeypatch.setattr(ldpaths, "MAX_SEARCH_DIRS", 50)
    many_needed = hs.many_needed_elf(tmp_path / "a", 51, ["$ORIGIN"])
    many_dirs = hs.many_needed_elf(tmp_path / "b", 2, [f"$ORIGIN/r{i}" for i in range(51)])
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({EXT: many_needed}))
    r = audit_path(wheel, limits=Limits(max_needed=50))
    assert r.error.startswith(f"{wheel}: member '{EXT}' breaks a limit: ") and \
        "more DT_NEEDED entries than the limit" in r.error and \
        "(Limits.max_needed = 50)" in r.error, r.error
    assert audit_path(wheel, limits=Limits(max_needed=52)).error is None
    words = "51 directories (RPATH/RUNPATH), more than the limit"
    wheel.write_bytes(hs.make_wheel({EXT: many_dirs}))
    r = audit_path(wheel)
    assert r.error.startswith(f"{wheel}: member '{EXT}': ") and words in r.error, r.error
    f = tmp_path / "x.so"                   # lddtree on the file: the same limit
    f.write_bytes(many_dirs)
    with pytest.raises(LimitError, match=re.escape(words.split(",")[0])):
        resolve_tree(f)


def test_lddtree_with_root_probes_only_names_that_exist(tmp_path, bomb):
    """lddtree --root over a file with 300 NEEDED x 300 RPATH entries: the file
    system is probed only where a needed name exists, not 90,000 times."""
    root = tmp_path / "root"
    lib = root / "usr" / "lib"
    lib.mkdir(parents=True)
    (root / "etc").mkdir()
    stub = (tmp_path / "stub.c")
    stub.write_text("int s(void){return 0;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib / "stub.so"), str(stub)],
                   check=True)
    for i in range(10):                     # 10 of the 300 names exist under the root
        os.link(lib / "stub.so", lib / f"libn{i}.so")
    rpath = [f"/opt/r{i}" for i in range(150)] + ["/usr/lib"]
    data = hs.many_needed_elf(tmp_path / "b", 300, rpath)
    f = tmp_path / "bomb.so"
    f.write_bytes(data)
    cache = ElfCache()
    tree = resolve_tree(f, root=str(root), cache=cache)
    found = {n: lib_.path for n, lib_ in tree.libraries.items() if lib_.path}
    assert {n: Path(p) for n, p in found.items()} == {f"libn{i}.so": lib / f"libn{i}.so"
                                                      for i in range(10)}
    assert len(tree.missing) == 291          # 290 libn*.so and libc.so.6 (absent in root)
    assert cache.lookups <= 10 + 1
    # the CLI prints the tree and exits 1 (missing libraries), without a traceback
    proc = subprocess.run([sys.executable, "-m", "fastelf", "lddtree", "--root", str(root),
                           str(f)], capture_output=True, text=True, env=ENV, timeout=HANG_GUARD)
    assert proc.returncode == 1 and "libn9.so => " + str(lib / "libn9.so") in proc.stdout
    assert proc.stderr == ""


# ------------------------------------------------------------------ 2. FIFO PT_INTERP

def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "fastelf", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=HANG_GUARD, **kw)


@pytest.fixture
def fifo_root(tmp_path):
    """A sysroot whose loader, ld.so.conf and one candidate library are FIFOs."""
    root = tmp_path / "root"
    (root / "lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr" / "lib").mkdir(parents=True)
    os.mkfifo(root / "lib" / "ld-fifo.so.2")
    os.mkfifo(root / "etc" / "ld.so.conf")
    os.mkfifo(root / "lib" / "libbar.so.1")           # first candidate: skipped
    bar = compile_c(tmp_path / "b", "libbar.so.1", "int bar(void){return 1;}\n",
                    args=["-Wl,-soname,libbar.so.1"])
    shutil.copy(bar, root / "usr" / "lib" / "libbar.so.1")
    return root, bar


def test_fifo_interpreter_does_not_hang_lddtree(tmp_path, fifo_root):
    root, bar = fifo_root
    exe = tmp_path / "tool"
    exe.write_bytes(hs.many_needed_elf(tmp_path / "e", 0, [], stubs=[bar],
                                       interp="/lib/ld-fifo.so.2"))
    proc = _run_cli(["lddtree", "--root", root, "--json", exe])
    tree = json.loads(proc.stdout)
    assert tree["interpreter"] == "/lib/ld-fifo.so.2"
    assert tree["libraries"]["libbar.so.1"]["path"] == str(root / "usr" / "lib" / "libbar.so.1")
    # the file itself a FIFO: one line
    os.mkfifo(tmp_path / "fifo.so")
    proc = _run_cli(["lddtree", tmp_path / "fifo.so"])
    assert proc.returncode == 3
    assert one_error_line(proc.stderr).endswith("fifo.so: not a regular file")


def test_fifo_interpreter_does_not_hang_repair(tmp_path, fifo_root):
    root, bar = fifo_root
    exe = hs.many_needed_elf(tmp_path / "e", 0, [], stubs=[bar], interp="/lib/ld-fifo.so.2")
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({"demo-1.0.data/scripts/tool": exe,
                                     EXT: SO}))
    out = tmp_path / "out"
    proc = _run_cli(["repair", "--root", root, "-w", out, wheel])
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(next(out.glob("*.whl"))) as z:
        grafted = [n for n in z.namelist() if n.startswith("demo.libs/")]
    assert len(grafted) == 1 and grafted[0].startswith("demo.libs/libbar-")


# ------------------------------------------------------------------ 3. signals

_BLOCKING_WRITE = textwrap.dedent("""
    import sys
    from fastelf import cli, wheelwriter

    def blocked(self, f):                # part of the zip is written, then wait
        f.write(b"PK partial")
        f.flush()
        print("writing", flush=True)
        sys.stdin.read()

    wheelwriter.WheelWriter._write_zip = blocked
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("command", ["repair", "retag"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_writing_leaves_no_part_file(tmp_path, command, sig):
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({EXT: SO}))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKING_WRITE, command, "-w", str(out),
                             str(wheel)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline() == "writing\n"
        assert [p.name for p in out.iterdir()][0].endswith(".whl.part")   # the state to undo
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        proc.kill()
    assert proc.returncode == -sig, err     # died of the signal, as without the handler
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_signal_handlers_are_restored(tmp_path):
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({EXT: SO}))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    retag_wheel(wheel, tmp_path / "out", ["manylinux_2_5_x86_64"])
    assert {s: signal.getsignal(s) for s in before} == before


# ------------------------------------------------------------------ 4. "/" in DT_NEEDED

def slash_needed(tmp_path, lib_dir: str):
    """An extension whose DT_NEEDED is ``<lib_dir>/libq.so`` (linked by relative
    path to a library without SONAME), with RPATH $ORIGIN."""
    build = tmp_path / "build"
    q = compile_c(build / lib_dir, "libq.so", "int q(void){return 7;}\n")
    (build / "e.c").write_text("int q(void);\nint PyInit_e(void){return q();}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", "e.cpython-311-x86_64-linux-gnu.so",
                    "e.c", f"{lib_dir}/libq.so", "-Wl,-rpath,$ORIGIN",
                    "-Wl,--disable-new-dtags"], cwd=build, check=True)
    ext = build / "e.cpython-311-x86_64-linux-gnu.so"
    assert readelf_needed(ext.read_bytes(), tmp_path)[0] == f"{lib_dir}/libq.so"
    return ext, q


def _dlopen(path, cwd):
    code = f"import ctypes; ctypes.CDLL({str(path)!r}); print('loaded')"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=HANG_GUARD)


def test_slash_needed_is_relative_to_the_cwd_not_searched(tmp_path):
    """The real loader: ``sub/libq.so`` is opened relative to the current directory,
    never searched in RPATH $ORIGIN, so a wheel does not satisfy it by holding
    ``sub/libq.so`` next to the extension."""
    ext, q = slash_needed(tmp_path, "sub")
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    shutil.copy(ext, site / ext.name)
    shutil.copy(q, site / "sub" / "libq.so")
    assert _dlopen(site / ext.name, cwd=site).stdout == "loaded\n"
    far = _dlopen(site / ext.name, cwd="/")
    assert far.returncode != 0 and "sub/libq.so" in far.stderr
    # audit agrees: not resolved inside the wheel, an external library
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({ext.name: ext.read_bytes(),
                                     "sub/libq.so": q.read_bytes()}))
    r = audit_path(wheel)
    assert r.policies[0].external_libraries == {"sub/libq.so": [ext.name]}


def test_repair_refuses_to_graft_a_path(tmp_path):
    ext, _q = slash_needed(tmp_path, "../lib")
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({f"demo/{ext.name}": ext.read_bytes()}))
    out = tmp_path / "out"
    with pytest.raises(RepairError) as e:
        repair_wheel(wheel, out)       # the CWD is such that ../lib/libq.so may not exist
    msg = str(e.value)
    assert f"demo/{ext.name} needs '../lib/libq.so' (DT_NEEDED), a path" in msg
    # also when the path exists from the CWD: it is never grafted as '../lib/...'
    proc = _run_cli(["repair", "-w", out, wheel], cwd=ext.parent)
    assert proc.returncode != 0 and "a path rather than a library name" in \
        one_error_line(proc.stderr)
    assert not out.exists() or not list(out.iterdir())


# ------------------------------------------------------------------ 5. I/O errors

@pytest.fixture
def plain_wheel(tmp_path):
    wheel = tmp_path / "in" / hs.WHEEL_NAME
    wheel.parent.mkdir()
    wheel.write_bytes(hs.make_wheel({EXT: SO}))
    return wheel


def _cli_error(capsys, argv, words):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    line = one_error_line(err)
    assert words in line, line
    return line


@pytest.mark.parametrize("command", ["repair", "retag"])
def test_output_directory_problems_are_one_line(tmp_path, plain_wheel, capsys, command):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    _cli_error(capsys, [command, "-w", str(afile), str(plain_wheel)], "cannot write")
    # the output name exists as a directory
    out = tmp_path / "out"
    cli.main([command, "-w", str(out), str(plain_wheel)])
    written = next(out.glob("*.whl"))
    capsys.readouterr()
    written.unlink()
    written.mkdir()
    _cli_error(capsys, [command, "-w", str(out), str(plain_wheel)], "Is a directory")
    assert [p.name for p in out.iterdir()] == [written.name]      # no .part left behind
    if os.geteuid() != 0:                                          # root ignores modes
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        _cli_error(capsys, [command, "-w", str(ro), str(plain_wheel)], "Permission denied")


@pytest.mark.parametrize("command", ["repair", "retag"])
def test_non_utf8_wheel_file_is_one_line(tmp_path, capsys, command):
    wheel = tmp_path / hs.WHEEL_NAME
    wheel.write_bytes(hs.make_wheel({EXT: SO, "demo-1.0.dist-info/WHEEL":
                                     b"Wheel-Version: 1.0\nGenerator: t\xff\xfe\n"
                                     b"Root-Is-Purelib: false\n"
                                     b"Tag: cp311-cp311-manylinux_2_17_x86_64\n"}))
    line = _cli_error(capsys, [command, "-w", str(tmp_path / "out"), str(wheel)],
                      "demo-1.0.dist-info/WHEEL is not UTF-8 text")
    assert str(wheel) in line


# ------------------------------------------------------------------ 6. ld.so.conf includes

def test_include_glob_through_symlink_loops_reads_each_file_once(tmp_path, monkeypatch):
    root = tmp_path / "root"
    conf_d = root / "etc" / "c"
    conf_d.mkdir(parents=True)
    (root / "etc" / "ld.so.conf").write_text("include /etc/c/*.conf\n")
    (conf_d / "x.conf").write_text("/opt/lib\ninclude */*.conf\n")
    for i in range(6):                       # 6 ways back into the same directory
        os.symlink(".", conf_d / f"s{i}")
    opens = _counting(monkeypatch, ldpaths, "open_regular")
    assert ldpaths.parse_ld_so_conf(root=str(root)) == ["/opt/lib"]
    # ld.so.conf, x.conf, and each of x.conf's 6 matches once (found to be x.conf)
    assert len(opens) == 1 + 1 + 6


def test_include_limits(tmp_path, monkeypatch):
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "ld.so.conf").write_text("include /etc/l0.conf\n")
    for i in range(20):                      # distinct files, each including the next
        (etc / f"l{i}.conf").write_text(f"/opt/l{i}\ninclude /etc/l{i + 1}.conf\n")
    with pytest.raises(LimitError, match="includes nest deeper than 16 levels"):
        ldpaths.parse_ld_so_conf(root=str(root))
    proc = _run_cli(["lddtree", "--root", root, sys.executable])
    assert proc.returncode == 3
    assert one_error_line(proc.stderr) == (
        f"fastelf: error: {root}/etc/ld.so.conf: ld.so.conf includes nest deeper than 16 "
        f"levels (at /etc/l16.conf)")
    monkeypatch.setattr(ldpaths, "MAX_CONF_FILES", 5)
    with pytest.raises(LimitError, match="includes more than 5 files"):
        ldpaths.parse_ld_so_conf(root=str(root))
    (etc / "ld.so.conf").write_text("".join(f"/d{i}\n" for i in range(5000)))
    with pytest.raises(LimitError, match="lists more than 4096 directories"):
        ldpaths.parse_ld_so_conf(root=str(root))


def test_ld_so_conf_fifo_does_not_hang(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc" / "ld.so.conf")
    os.mkfifo(root / "etc" / "ld-musl-x86_64.path")
    code = ("from fastelf import ldpaths; import sys; r = sys.argv[1]; "
            "print(ldpaths.parse_ld_so_conf(root=r), ldpaths.musl_path('x86_64', root=r))")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                          text=True, env=ENV, timeout=HANG_GUARD)
    assert proc.stdout == f"[] {ldpaths.MUSL_DEFAULT_PATH}\n", proc.stderr


# ------------------------------------------------------------------ 7. batch

def _pure_wheels(d, n):
    d.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        p = d / f"p{i:03d}-1.0-py3-none-any.whl"
        p.write_bytes(hs.make_wheel({f"p{i}/__init__.py": b""}, dist=f"p{i:03d}"))
        out.append(p)
    return out


_BLOCKED_WORKERS = textwrap.dedent("""
    import os, sys
    from fastelf import batch, cli

    def blocked(path, options):          # each worker says who it is, then blocks
        with open(os.path.join(sys.argv[1], str(os.getpid())), "w"):
            pass
        open(sys.argv[2]).read()         # a FIFO nobody writes to
    blocked.__module__, blocked.__qualname__ = batch.__name__, "_audit_one"
    batch._audit_one = blocked
    sys.exit(cli.main(["audit", "--jobs", "2", *sys.argv[3:]]))
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path, sig):
    wheels = _pure_wheels(tmp_path / "w", 2)
    pids = tmp_path / "pids"
    pids.mkdir()
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_WORKERS, str(pids), str(fifo),
                             *map(str, wheels)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    try:
        wait_for(lambda: len(list(pids.iterdir())) == 2 or proc.poll() is not None)
        assert proc.poll() is None               # both workers are busy in a wheel
        workers = [int(p.name) for p in pids.iterdir()]
        proc.send_signal(sig)
        out, _err = proc.communicate(timeout=HANG_GUARD)   # EOF: no worker holds stdout
    finally:
        proc.kill()
    assert proc.returncode == -sig and out == b""
    for pid in workers:                       # PDEATHSIG is sent when the parent exits
        wait_for(lambda: not _alive(pid))


def test_memory_error_costs_one_wheel(tmp_path, monkeypatch):
    wheels = _pure_wheels(tmp_path / "w", 6)
    real = batch.audit_path

    def audit_or_oom(path, **kw):
        if "p003" in os.path.basename(path):
            raise MemoryError
        return real(path, **kw)

    monkeypatch.setattr(batch, "audit_path", audit_or_oom)
    for jobs in (1, 2):
        results = list(batch.audit_many([tmp_path / "w"], jobs=jobs))
        assert [r.path for r in results] == [str(w) for w in wheels]
        for r in results:
            if "p003" in r.path:
                assert r.error == f"{r.path}: out of memory while auditing this wheel"
            else:
                assert r.error is None and r.pure


def test_wheels_in_flight_are_bounded(tmp_path):
    wheels = _pure_wheels(tmp_path / "w", 40)
    pulled = []

    def source():
        for w in wheels:
            pulled.append(w)
            yield w

    results = batch.audit_many(source(), jobs=2)
    first = next(results)
    assert first.path == str(wheels[0])
    assert len(pulled) == 2 * batch.IN_FLIGHT_PER_JOB       # not all 40
    rest = list(results)
    assert [r.path for r in [first, *rest]] == [str(w) for w in wheels]
    assert all(r.error is None for r in rest)


def test_pool_restarts_after_a_worker_dies(tmp_path, monkeypatch):
    """The killer is the first wheel: the wheels in flight with it are audited each
    in its own process, then a new pool of 2 audits the rest (not one by one)."""
    wheels = _pure_wheels(tmp_path / "w", 30)
    real_one, real_pool = batch._audit_one, batch._new_pool
    pools = []

    def audit_or_die(path, options):
        if os.path.basename(path).startswith("p000"):
            os._exit(9)
        return real_one(path, options)

    def counted_pool(jobs):
        pools.append(jobs)
        return real_pool(jobs)

    audit_or_die.__module__, audit_or_die.__qualname__ = batch.__name__, "_audit_one"
    monkeypatch.setattr(batch, "_audit_one", audit_or_die)
    monkeypatch.setattr(batch, "_new_pool", counted_pool)
    results = list(batch.audit_many([tmp_path / "w"], jobs=2))
    assert [r.path for r in results] == [str(w) for w in wheels]
    assert results[0].error == f"{wheels[0]}: " + batch._WORKER_DIED
    assert all(r.error is None and r.pure for r in results[1:])
    window = 2 * batch.IN_FLIGHT_PER_JOB
    assert pools.count(2) == 2                  # the first pool, and one after the death
    assert pools.count(1) <= window             # only the wheels in flight, alone
    assert set(pools) <= {1, 2}


def test_watchdog_ends_a_worker_whose_batch_is_gone():
    """Where PR_SET_PDEATHSIG is missing, the watchdog thread ends the worker."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                               # exited and reaped: its pid is free
    code = ("import os; from fastelf import batch; "
            f"batch._watch_batch({gone.pid}, os.getppid()); print('not reached')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, timeout=HANG_GUARD)
    assert proc.returncode == 1 and proc.stdout == ""


def test_bounded_glob_matches_glob(tmp_path):
    """The bounded include glob finds what ``glob.glob`` finds (the oracle)."""
    import glob
    for rel in ("a/x.conf", "a/.h.conf", "a/b/y.conf", "c/z.conf", "c/z.txt", "d.conf",
                "e/f/g/h.conf", "a/[x].conf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    os.symlink("a", tmp_path / "link")
    walk = ldpaths._ConfWalk(str(tmp_path), "/etc/ld.so.conf")
    for pattern in ("*/*.conf", "*.conf", "*/.*.conf", "a/*", "*/b/*.conf", "*/*/*/*.conf",
                    "link/*.conf", "a/x.conf", "a/nope.conf", "[ac]/?.c*", "nope/*.conf"):
        full = f"{tmp_path}/{pattern}"
        assert ldpaths._bounded_glob(walk, full) == sorted(glob.glob(full)), pattern


def test_include_glob_fanout_is_bounded(tmp_path, monkeypatch):
    """``include */*/*/.../none.conf`` through a symlink loop: glob would list 6^9
    directories; the walk stops at the limit."""
    root = tmp_path / "root"
    conf_d = root / "etc" / "c"
    conf_d.mkdir(parents=True)
    for i in range(6):
        os.symlink(".", conf_d / f"s{i}")
    (root / "etc" / "ld.so.conf").write_text("include /etc/c" + "/*" * 9 + "/none.conf\n")
    listed = _counting(monkeypatch, os, "listdir")
    with pytest.raises(LimitError, match="matches more than 1024 paths|list more than 1024"):
        ldpaths.parse_ld_so_conf(root=str(root))
    assert len(listed) <= ldpaths.MAX_CONF_FILES


def test_pool_broken_at_submit_time(tmp_path, monkeypatch):
    """The pool may break between two submissions (a worker died meanwhile): the
    old code raised out of the batch there; now that wheel is audited again."""
    wheels = _pure_wheels(tmp_path / "w", 12)
    real_pool = batch._new_pool
    made = []

    class Breaking:
        def __init__(self, pool):
            self.pool, self.calls = pool, 0

        def submit(self, *a):
            self.calls += 1
            if self.calls == 3:
                raise BrokenProcessPool("a worker died")
            return self.pool.submit(*a)

        def shutdown(self, **kw):
            self.pool.shutdown(**kw)

    def pool_breaking_once(jobs):
        pool = real_pool(jobs)
        made.append(jobs)
        return Breaking(pool) if len(made) == 1 else pool

    monkeypatch.setattr(batch, "_new_pool", pool_breaking_once)
    results = list(batch.audit_many([tmp_path / "w"], jobs=2))
    assert [r.path for r in results] == [str(w) for w in wheels]
    assert all(r.error is None and r.pure for r in results)


def test_read_regular_reads_what_is_there_and_refuses_more(tmp_path):
    """A host file is read whole up to its limit; a larger one is refused, a FIFO is
    not opened for a blocking read.  Oracles: the bytes on disk, and tracemalloc for
    what reading a small file under a large limit allocates (read(n) reserves n
    bytes first, so sizing the read by the limit would reserve all of it)."""
    import errno
    import tracemalloc

    from fastelf.hostfile import NotRegularFile, read_regular

    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    tracemalloc.start()
    try:
        assert read_regular(str(small), 256 << 20) == small.read_bytes()
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_regular(str(empty), 10) == b""
    exact = tmp_path / "exact"
    exact.write_bytes(b"y" * 10)
    assert read_regular(str(exact), 10) == b"y" * 10
    with pytest.raises(OSError) as e:
        read_regular(str(small), 999)
    assert e.value.errno == errno.EFBIG
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile):
        read_regular(str(fifo), 10)
