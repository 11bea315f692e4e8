"""fastelf.ldpaths / fastelf.lddtree: search order, DSTs, sysroots, and the real
loaders (glibc's LD_TRACE_LOADED_OBJECTS, musl's --list, qemu for aarch64) as
oracles on fixture trees compiled here."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from elfbuild import usable_cc

from fastelf.lddtree import ElfCache, LddError, detect_libc, resolve_tree
from fastelf.ldpaths import (
    MUSL_DEFAULT_PATH,
    expand_dst,
    glibc_default_dirs,
    musl_path,
    parse_ld_so_conf,
    rooted,
    split_path,
    system_dirs,
)

MUSL_LDSO = "/lib/ld-musl-x86_64.so.1"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")


def dep_source(value):
    return f"int dep(void) {{ return {value}; }}\n"


MID_C = "int dep(void);\nint mid(void) { return dep() + 1000; }\n"
MAIN_DEP_C = ('#include <stdio.h>\n'
              'int dep(void);\nint main(void){printf("%d\\n", dep());return 0;}\n')
MAIN_MID_C = ('#include <stdio.h>\n'
              'int mid(void);\nint main(void){printf("%d\\n", mid());return 0;}\n')


def cc(cc_, out, *args, cwd):
    out = os.path.join(str(cwd), out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run([cc_, "-o", out, *args], cwd=cwd, check=True, capture_output=True)
    return out


def src(tmp, name, text):
    p = tmp / name
    p.write_text(text)
    return str(p)


def dep_lib(tmp, rel, value, compiler="gcc"):
    """lib<rel>/libdep.so whose dep() returns ``value`` (soname libdep.so)."""
    c = src(tmp, f"dep{value}.c", dep_source(value))
    return cc(compiler, f"{rel}/libdep.so", "-shared", "-fPIC", c, "-Wl,-soname,libdep.so",
              cwd=tmp)


def trace(exe, ld_library_path=None):
    """{name: realpath or None} as glibc's ld.so resolves them (nothing runs)."""
    env = {"LD_TRACE_LOADED_OBJECTS": "1", "PATH": os.environ.get("PATH", "")}
    if ld_library_path:
        env["LD_LIBRARY_PATH"] = ld_library_path
    out = subprocess.run([exe], env=env, capture_output=True, text=True).stdout
    return _parse_trace(out)


def _parse_trace(out):
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            name, target = parts[0], parts[i + 1]
            res[name] = None if target == "not" else os.path.realpath(target)
    return res


def mine(tree):
    return {n: lib.realpath for n, lib in tree.libraries.items()}


def assert_agrees_with_ldso(tree, exe, ld_library_path=None):
    ref = trace(exe, ld_library_path)
    assert ref, "ld.so printed no trace"
    ours = mine(tree)
    for name, path in ref.items():
        assert ours.get(name) == path, (name, ours.get(name), path)
    return ref


# ------------------------------------------------------------ pure functions

def test_expand_dst_glibc_and_musl():
    assert expand_dst("$ORIGIN/../lib", "/w/bin") == "/w/bin/../lib"
    assert expand_dst("${ORIGIN}/x:y", "/o") == "/o/x:y"
    assert expand_dst("$ORIGIN", "/o") == "/o"
    assert expand_dst("$ORIGINAL/x", "/o") == "$ORIGINAL/x"        # not a token
    assert expand_dst("/opt/$LIB/$PLATFORM", "/o", lib="lib64", platform="x86_64") == \
        "/opt/lib64/x86_64"
    assert expand_dst("/opt/${LIB}x", "/o", lib="lib") == "/opt/libx"
    assert expand_dst("$ORIGIN/x", None) is None
    assert expand_dst("/opt/$LIB", "/o", lib=None) is None
    # musl: only $ORIGIN; anything else with '$' drops the element
    assert expand_dst("$ORIGIN/../lib", "/m", libc="musl") == "/m/../lib"
    assert expand_dst("${ORIGIN}/l", "/m", libc="musl") == "/m/l"
    assert expand_dst("/opt/$LIB", "/m", libc="musl") is None
    assert expand_dst("/plain", None, libc="musl") == "/plain"


def test_split_and_rooted():
    assert split_path("a::b:") == ["a", "b"]
    assert split_path(["x", "", "y"]) == ["x", "y"]
    assert split_path(None) == []
    assert rooted("/", "/usr/lib") == "/usr/lib"
    assert rooted("/sys/root", "/usr/lib/../lib") == "/sys/root/usr/lib"
    assert glibc_default_dirs("x86_64", 64) == [
        "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
        "/lib", "/usr/lib"]
    assert glibc_default_dirs("i686", 32) == [
        "/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/lib", "/usr/lib"]


def test_ld_so_conf_includes_under_fake_root(tmp_path):
    etc = tmp_path / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True)
    (etc / "more").mkdir()
    (etc / "ld.so.conf").write_text(
        "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/first  # trailing\n"
        "include more/*.conf\nhwcap 1 nosegneg\n/opt/first\n")
    (etc / "ld.so.conf.d" / "b.conf").write_text("/opt/b\n")
    (etc / "ld.so.conf.d" / "a.conf").write_text("/opt/a1\n/opt/a2=libc6\n")
    (etc / "ld.so.conf.d" / "ignored.txt").write_text("/opt/not\n")
    (etc / "more" / "loop.conf").write_text("/opt/more\ninclude /etc/ld.so.conf\n")
    dirs = parse_ld_so_conf(root=str(tmp_path))
    assert dirs == ["/opt/a1", "/opt/a2", "/opt/b", "/opt/first", "/opt/more"]
    assert parse_ld_so_conf("/etc/nope.conf", root=str(tmp_path)) == []
    sysd = system_dirs(root=str(tmp_path), arch="x86_64", elf_class=64)
    assert sysd[:5] == dirs and sysd[5] == "/lib/x86_64-linux-gnu"


def test_musl_path_file_under_fake_root(tmp_path):
    assert musl_path("x86_64", root=str(tmp_path)) == MUSL_DEFAULT_PATH
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ld-musl-x86_64.path").write_text("/m/lib:/m/usr/lib\n/m/other\n\n")
    assert musl_path("x86_64", root=str(tmp_path)) == ["/m/lib", "/m/usr/lib", "/m/other"]
    assert system_dirs(root=str(tmp_path), libc="musl", arch="x86_64") == \
        ["/m/lib", "/m/usr/lib", "/m/other"]
    assert musl_path("aarch64", root=str(tmp_path)) == MUSL_DEFAULT_PATH


# ---------------------------------------------------- glibc search order

@pytest.fixture(scope="module")
def glibc_tree(tmp_path_factory):
    """Four libdep.so builds that tell themselves apart, and a libmid.so."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    t = tmp_path_factory.mktemp("glibc")
    for i, d in enumerate(["a", "b", "c", "d"]):
        dep_lib(t, d, i + 1)
    src(t, "mid.c", MID_C)
    src(t, "main_dep.c", MAIN_DEP_C)
    src(t, "main_mid.c", MAIN_MID_C)
    return t


def run(exe, ld_library_path=None):
    env = {"PATH": os.environ.get("PATH", "")}
    if ld_library_path:
        env["LD_LIBRARY_PATH"] = ld_library_path
    return subprocess.run([exe], env=env, capture_output=True, text=True)


def test_rpath_beats_ld_library_path(glibc_tree):
    t = glibc_tree
    exe = cc("gcc", "rp/prog", "main_dep.c", "-La", "-ldep", "-Wl,--disable-new-dtags",
             "-Wl,-rpath,$ORIGIN/../a", cwd=t)
    llp = str(t / "b")
    tree = resolve_tree(exe, ld_library_path=llp)
    lib = tree.libraries["libdep.so"]
    assert lib.realpath == str(t / "a" / "libdep.so") and lib.found_via == "rpath"
    assert_agrees_with_ldso(tree, exe, llp)
    assert run(exe, llp).stdout == "1\n"


def test_ld_library_path_beats_runpath(glibc_tree):
    t = glibc_tree
    exe = cc("gcc", "runp/prog", "main_dep.c", "-La", "-ldep", "-Wl,--enable-new-dtags",
             "-Wl,-rpath,$ORIGIN/../a", cwd=t)
    llp = [str(t / "b")]
    tree = resolve_tree(exe, ld_library_path=llp)
    lib = tree.libraries["libdep.so"]
    assert lib.realpath == str(t / "b" / "libdep.so") and lib.found_via == "ld_library_path"
    assert_agrees_with_ldso(tree, exe, llp[0])
    assert run(exe, llp[0]).stdout == "2\n"
    # without LD_LIBRARY_PATH the RUNPATH applies
    tree = resolve_tree(exe)
    assert tree.libraries["libdep.so"].found_via == "runpath"
    assert tree.libraries["libdep.so"].realpath == str(t / "a" / "libdep.so")


def test_runpath_is_not_inherited_but_rpath_is(glibc_tree):
    """exe -> m/libmid.so (no path of its own) -> libdep.so, not in m/."""
    t = glibc_tree
    cc("gcc", "m/libmid.so", "-shared", "-fPIC", "mid.c", "-La", "-ldep", cwd=t)
    for tags, expect in (("--disable-new-dtags", "a"), ("--enable-new-dtags", None)):
        exe = cc("gcc", f"inh{tags}/prog", "main_mid.c", "-Lm", "-lmid", f"-Wl,{tags}",
                 "-Wl,-rpath,$ORIGIN/../m:$ORIGIN/../a", "-Wl,-rpath-link,a", cwd=t)
        tree = resolve_tree(exe)
        assert tree.libraries["libmid.so"].realpath == str(t / "m" / "libmid.so")
        dep = tree.libraries["libdep.so"]
        if expect:
            assert dep.realpath == str(t / expect / "libdep.so") and dep.found_via == "rpath"
        else:
            assert dep.path is None and tree.missing == ["libdep.so"]
        assert dep.chain == [exe, "libmid.so", "libdep.so"]
        assert_agrees_with_ldso(tree, exe)


def test_runpath_of_a_library_disables_the_rpath_chain(glibc_tree):
    """libmid has RUNPATH $ORIGIN/../d: its deps ignore the program's RPATH (a),
    though libdep.so exists in a/."""
    t = glibc_tree
    cc("gcc", "e/libmid.so", "-shared", "-fPIC", "mid.c", "-La", "-ldep",
       "-Wl,--enable-new-dtags", "-Wl,-rpath,${ORIGIN}/../d", cwd=t)
    exe = cc("gcc", "chain/prog", "main_mid.c", "-Le", "-lmid", "-Wl,--disable-new-dtags",
             "-Wl,-rpath,$ORIGIN/../e:$ORIGIN/../a", "-Wl,-rpath-link,a", cwd=t)
    tree = resolve_tree(exe)
    dep = tree.libraries["libdep.so"]
    assert dep.realpath == str(t / "d" / "libdep.so") and dep.found_via == "runpath"
    assert_agrees_with_ldso(tree, exe)
    assert run(exe).stdout == "1004\n"


def test_incompatible_candidates_are_skipped(glibc_tree):
    t = glibc_tree
    wrong = []
    for compiler, rel in (("aarch64-linux-gnu-gcc", "wrong64"), ("i686-linux-gnu-gcc", "wrong32")):
        if usable_cc(compiler):
            dep_lib(t, rel, 9, compiler)
            wrong.append(rel)
    if not wrong:
        pytest.skip("no cross compiler for an incompatible candidate")
    path = ":".join(f"$ORIGIN/../{d}" for d in wrong + ["b"])
    exe = cc("gcc", "skip/prog", "main_dep.c", "-Lb", "-ldep", "-Wl,--disable-new-dtags",
             f"-Wl,-rpath,{path}", cwd=t)
    tree = resolve_tree(exe)
    dep = tree.libraries["libdep.so"]
    assert dep.realpath == str(t / "b" / "libdep.so") and dep.error is None
    reasons = {os.path.basename(os.path.dirname(p)): r for p, r in dep.skipped}
    if "wrong64" in wrong:
        assert "aarch64" in reasons["wrong64"]
    if "wrong32" in wrong:
        assert "ELF32" in reasons["wrong32"]
    assert_agrees_with_ldso(tree, exe)     # ld.so skips other-arch files too
    assert run(exe).stdout == "2\n"


def test_a_non_elf_candidate_stops_the_search(glibc_tree):
    """glibc fails on a candidate that is not ELF instead of searching on."""
    t = glibc_tree
    (t / "text").mkdir(exist_ok=True)
    (t / "text" / "libdep.so").write_text("/* GNU ld script */\nINPUT(-lc)\n")
    exe = cc("gcc", "txt/prog", "main_dep.c", "-Lb", "-ldep", "-Wl,--disable-new-dtags",
             "-Wl,-rpath,$ORIGIN/../text:$ORIGIN/../b", cwd=t)
    dep = resolve_tree(exe).libraries["libdep.so"]
    assert dep.path is None and "text/libdep.so: not a loadable ELF" in dep.error
    r = run(exe)
    assert r.returncode != 0 and "text/libdep.so" in r.stderr


def test_nodefaultlib_stops_system_search(glibc_tree):
    t = glibc_tree
    libz = [d for d in glibc_default_dirs("x86_64", 64) if os.path.exists(d + "/libz.so.1")]
    if not libz:
        pytest.skip("no system libz.so.1")
    src(t, "z.c", "int zlibVersion(void);\nint mid(void){return zlibVersion() != 0;}\n")
    for flag in ("", "-Wl,-z,nodefaultlib"):
        rel = "zn" if flag else "zd"
        args = ["-shared", "-fPIC", "z.c", f"{libz[0]}/libz.so.1"] + ([flag] if flag else [])
        cc("gcc", f"{rel}/libmid.so", *args, cwd=t)
        exe = cc("gcc", f"{rel}/prog", "main_mid.c", f"-L{rel}", "-lmid",
                 "-Wl,-rpath,$ORIGIN", cwd=t)
        tree = resolve_tree(exe)
        z = tree.libraries["libz.so.1"]
        assert (z.path is None) == bool(flag)
        assert_agrees_with_ldso(tree, exe)


def test_json_chain_and_each_file_parsed_once(glibc_tree):
    t = glibc_tree
    cc("gcc", "j/libmid.so", "-shared", "-fPIC", "mid.c", "-La", "-ldep",
       "-Wl,-rpath,$ORIGIN/../a", cwd=t)
    os.makedirs(t / "j2", exist_ok=True)
    if not os.path.exists(t / "j2" / "libdep.so"):
        os.symlink(t / "a" / "libdep.so", t / "j2" / "libdep.so")
    exe = cc("gcc", "j/prog", "main_mid.c", "-Wl,--no-as-needed", "-Lj", "-lmid", "-La",
             "-ldep", "-Wl,-rpath,$ORIGIN:$ORIGIN/../j2", cwd=t)

    class Counting(ElfCache):
        calls = []

        def _parse(self, real):
            Counting.calls.append(real)
            return ElfCache._parse(real)

    cache = Counting()
    tree = resolve_tree(exe, cache=cache)
    resolve_tree(exe, cache=cache)              # a second tree reuses the cache
    assert len(Counting.calls) == len(set(Counting.calls))
    d = json.loads(json.dumps(tree.to_dict()))
    assert d["needed"][:2] == ["libmid.so", "libdep.so"]
    assert d["libraries"]["libmid.so"]["chain"] == [exe, "libmid.so"]
    assert d["libraries"]["libdep.so"]["chain"] == [exe, "libdep.so"]
    assert d["libraries"]["libdep.so"]["realpath"] == str(t / "a" / "libdep.so")
    assert d["libraries"]["libdep.so"]["path"] == str(t / "j2" / "libdep.so")
    assert d["libraries"]["libc.so.6"]["found_via"] == "system"
    assert d["libc"] == "glibc" and d["interpreter"].startswith("/lib")
    assert d["missing"] == []
    assert_agrees_with_ldso(tree, exe)


def test_errors(tmp_path):
    with pytest.raises(LddError):
        resolve_tree(tmp_path / "nope")
    (tmp_path / "x").write_text("not elf")
    with pytest.raises(LddError):
        resolve_tree(tmp_path / "x")
    with pytest.raises(ValueError):
        resolve_tree(sys.executable, libc="bionic")


# ------------------------------------------------------- real binaries

@pytest.mark.parametrize("prog", ["ls", "python", "ssh", "gdb", "readelf"])
def test_host_binaries_match_ldso(prog):
    exe = sys.executable if prog == "python" else shutil.which(prog)
    if exe is None:
        pytest.skip(f"{prog} not installed")
    exe = os.path.realpath(exe)
    tree = resolve_tree(exe)
    if tree.elf.interpreter is None:
        pytest.skip("static binary")
    ref = assert_agrees_with_ldso(tree, exe)
    assert set(ref) <= set(tree.libraries)
    interp = tree.libraries.get(os.path.basename(tree.elf.interpreter))
    if interp is not None:
        assert interp.found_via == "interpreter"


# -------------------------------------------------------------- sysroots

@pytest.mark.skipif(not os.path.exists(MUSL_LDSO) or not usable_cc("musl-gcc"),
                    reason="musl not installed")
def test_musl_against_its_loader_and_a_fake_root(tmp_path):
    dep_lib(tmp_path, "ml", 5, "musl-gcc")
    src(tmp_path, "main_dep.c", MAIN_DEP_C)
    exe = cc("musl-gcc", "bin/prog", "main_dep.c", "-Lml", "-ldep",
             "-Wl,-rpath,$ORIGIN/../ml", cwd=tmp_path)
    tree = resolve_tree(exe)
    assert tree.libc == "musl" and detect_libc(tree.elf) == "musl"
    assert tree.libraries["libdep.so"].realpath == str(tmp_path / "ml" / "libdep.so")
    libc = tree.libraries["libc.so"]
    assert libc.found_via == "interpreter" and libc.path == MUSL_LDSO
    out = subprocess.run([MUSL_LDSO, "--list", exe], capture_output=True, text=True).stdout
    ref = _parse_trace(out)
    for name, path in ref.items():
        assert mine(tree)[name] == path

    # a fake root: the path file lists where libdep.so lives; the loader is libc
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "opt" / "musl").mkdir(parents=True)
    shutil.copy(MUSL_LDSO, root / "lib" / "ld-musl-x86_64.so.1")
    shutil.copy(tmp_path / "ml" / "libdep.so", root / "opt" / "musl" / "libdep.so")
    (root / "etc" / "ld-musl-x86_64.path").write_text("/nowhere\n/opt/musl\n")
    plain = cc("musl-gcc", "bin/plain", "main_dep.c", "-Lml", "-ldep", cwd=tmp_path)
    tree = resolve_tree(plain, root=str(root))
    assert tree.libraries["libdep.so"].path == str(root / "opt" / "musl" / "libdep.so")
    assert tree.libraries["libdep.so"].found_via == "system"
    assert tree.libraries["libc.so"].path == str(root / "lib" / "ld-musl-x86_64.so.1")
    assert tree.search["system"] == [str(root / "nowhere"), str(root / "opt" / "musl")]
    # musl takes the first file it can open, even one of another machine
    if usable_cc("aarch64-linux-gnu-gcc"):
        dep_lib(tmp_path, "arm", 8, "aarch64-linux-gnu-gcc")
        bad = cc("musl-gcc", "bin/bad", "main_dep.c", "-Lml", "-ldep",
                 "-Wl,-rpath,$ORIGIN/../arm:$ORIGIN/../ml", cwd=tmp_path)
        dep = resolve_tree(bad).libraries["libdep.so"]
        assert dep.path is None and "arm/libdep.so: machine aarch64" in dep.error
        assert subprocess.run([bad], capture_output=True).returncode != 0
    # LD_LIBRARY_PATH comes first for musl too, and is rooted
    (root / "first").mkdir()
    shutil.copy(tmp_path / "ml" / "libdep.so", root / "first" / "libdep.so")
    tree = resolve_tree(plain, root=str(root), ld_library_path="/first")
    assert tree.libraries["libdep.so"].path == str(root / "first" / "libdep.so")


def test_glibc_fake_root_with_ld_so_conf(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    root = tmp_path / "root"
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "etc" / "ld.so.conf").write_text("include conf.d/*.conf\n")
    (root / "etc" / "conf.d" / "x.conf").write_text("/opt/x/lib\n")
    dep_lib(tmp_path, "root/opt/x/lib", 3)
    dep_lib(tmp_path, "root/usr/lib", 4)          # a built-in dir, searched later
    src(tmp_path, "main_dep.c", MAIN_DEP_C)
    exe = cc("gcc", "prog", "main_dep.c", "-Lroot/usr/lib", "-ldep", cwd=tmp_path)
    tree = resolve_tree(exe, root=str(root))
    lib = tree.libraries["libdep.so"]
    assert lib.path == str(root / "opt" / "x" / "lib" / "libdep.so")
    assert tree.search["system"][0] == str(root / "opt" / "x" / "lib")
    assert tree.libraries["libc.so.6"].path is None           # not in the fake root
    # explicit ldpaths replace the system search
    tree = resolve_tree(exe, root=str(root), ldpaths=[str(root / "usr" / "lib")])
    assert tree.libraries["libdep.so"].path == str(root / "usr" / "lib" / "libdep.so")
    assert tree.libraries["libdep.so"].found_via == "ldpaths"
    # absolute RPATH entries are looked up inside the root
    exe2 = cc("gcc", "prog2", "main_dep.c", "-Lroot/usr/lib", "-ldep",
              "-Wl,--disable-new-dtags", "-Wl,-rpath,/usr/lib", cwd=tmp_path)
    tree = resolve_tree(exe2, root=str(root))
    assert tree.libraries["libdep.so"].path == str(root / "usr" / "lib" / "libdep.so")
    assert tree.libraries["libdep.so"].found_via == "rpath"


@pytest.mark.skipif(not usable_cc("aarch64-linux-gnu-gcc")
                    or shutil.which("qemu-aarch64") is None
                    or not os.path.isdir("/usr/aarch64-linux-gnu/lib"),
                    reason="no aarch64 cross toolchain / qemu")
def test_cross_sysroot_matches_qemu_ldso(tmp_path):
    sysroot = "/usr/aarch64-linux-gnu"
    dep_lib(tmp_path, "al", 6, "aarch64-linux-gnu-gcc")
    src(tmp_path, "main_dep.c", MAIN_DEP_C)
    exe = cc("aarch64-linux-gnu-gcc", "bin/prog", "main_dep.c", "-Lal", "-ldep", "-lm",
             "-Wl,--no-as-needed", "-Wl,-rpath,$ORIGIN/../al", cwd=tmp_path)
    tree = resolve_tree(exe, root=sysroot)
    assert tree.elf.arch == "aarch64" and tree.missing == []
    out = subprocess.run(["qemu-aarch64", "-L", sysroot, "-E", "LD_TRACE_LOADED_OBJECTS=1",
                          exe], capture_output=True, text=True).stdout
    ref = {}
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            # the guest loader prints sysroot paths as the guest sees them
            ref[parts[0]] = target if target.startswith(str(tmp_path)) else rooted(sysroot, target)
    assert ref
    for name, path in ref.items():
        assert os.path.realpath(path) == tree.libraries[name].realpath, name
