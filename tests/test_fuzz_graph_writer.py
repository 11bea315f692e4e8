"""Fuzz the two places issue 8 asked the harness to reach: the in-wheel library
resolution (NEEDED / RPATH / RUNPATH graphs) and repair's writer.

* Resolution: hypothesis draws small graphs of ELF members (paths, NEEDED
  entries, RPATH/RUNPATH strings with $ORIGIN, '..', absolute and empty
  entries, names with slashes) and the audit's external libraries must equal
  those of a plain reference model of ld.so's rules written here (RPATH of the
  object and of its loaders unless it has RUNPATH, then RUNPATH; a NEEDED name
  with a slash is never searched; loaders are never external).
* Writer: ``rewrite_wheel`` with random replacements, removals and additions
  must write a wheel that Python's zipfile reads with exactly the expected
  names and bytes, that fastelf's reader reads alike, and whose RECORD holds.

Deterministic like tests/test_fuzz.py (FASTELF_FUZZ_EXAMPLES, FASTELF_FUZZ_RANDOM).
"""

from __future__ import annotations

import os
import posixpath
import zipfile

import hostile_support as hs
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastelf.audit import ElfInfo, install_path, judge, wheel_dir_of
from fastelf.ldpaths import split_path
from fastelf.policy import is_loader
from fastelf.record import verify_record
from fastelf.wheel import WheelReader
from fastelf.wheelwriter import rewrite_wheel

EXAMPLES = int(os.environ.get("FASTELF_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("FASTELF_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), print_blob=True)

# ------------------------------------------------------------------ resolution

PATHS = ["pkg/a.cpython-311-x86_64-linux-gnu.so", "pkg/b.so", "pkg/sub/c.so",
         "pkg.libs/libx.so.1", "pkg.libs/liby.so.2", "libtop.so",
         "demo-1.0.data/platlib/pkg/d.so", "other/e.so"]
NEEDED = sorted({posixpath.basename(p) for p in PATHS}) + [
    "libc.so.6", "libm.so.6", "libext.so.1", "ld-linux-x86-64.so.2",
    "../pkg.libs/libx.so.1", "pkg.libs/liby.so.2"]
ENTRIES = ["$ORIGIN", "$ORIGIN/..", "$ORIGIN/../pkg.libs", "${ORIGIN}/sub", "$ORIGIN/../../..",
           "$ORIGIN/./", "/usr/lib", "", "$LIB", "$ORIGIN/../other", "pkg.libs"]

search_string = st.one_of(st.none(), st.lists(st.sampled_from(ENTRIES), min_size=0,
                                              max_size=4).map(":".join))


@st.composite
def elf_graphs(draw):
    paths = draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=6, unique=True))
    infos = []
    for p in paths:
        infos.append(ElfInfo(
            path=p, arch=draw(st.sampled_from(["x86_64"] * 5 + ["aarch64"])), libc="glibc",
            interpreter=None, needed=draw(st.lists(st.sampled_from(NEEDED), max_size=5)),
            soname=None, rpath=draw(search_string), runpath=draw(search_string),
            extension=draw(st.booleans()), isa_level=None, exec_stack=False))
    return infos


def reference_external(infos: list) -> dict:
    """soname -> members needing it that no search finds, by ld.so's rules."""
    by_path = {install_path(i.path): i for i in infos}
    needed_names = {lib for i in infos for lib in i.needed}
    roots = [i for i in infos if i.extension
             or posixpath.basename(i.path) not in needed_names] or infos

    def dirs(value, info):
        origin = posixpath.dirname(install_path(info.path))
        return [d for d in (wheel_dir_of(e, origin) for e in split_path(value)) if d is not None]

    unresolved: dict = {}
    seen = set()
    stack = [(r, ()) for r in roots]
    while stack:
        info, chain = stack.pop()
        if (info.path, chain) in seen:
            continue
        seen.add((info.path, chain))
        own = tuple(dirs(info.rpath, info)) if info.runpath is None else ()
        search = list(own + chain) if info.runpath is None else []
        search += dirs(info.runpath, info)
        for lib in info.needed:
            found = None
            if "/" not in lib:          # ld.so opens such a name as a path, never searches
                for d in search:
                    found = by_path.get(posixpath.join(d, lib) if d else lib)
                    if found is not None:
                        break
            if found is not None:
                stack.append((found, tuple(dict.fromkeys(own + chain))))
            elif not is_loader(lib):
                unresolved.setdefault(lib, set()).add(info.path)
    return unresolved


def _info(path, needed, rpath=None, runpath=None, extension=False):
    return ElfInfo(path=path, arch="x86_64", libc="glibc", interpreter=None, needed=needed,
                   soname=None, rpath=rpath, runpath=runpath, extension=extension,
                   isa_level=None, exec_stack=False)


@FUZZ
@given(elf_graphs())
@example([_info("libtop.so", ["pkg.libs/liby.so.2"], rpath="$ORIGIN"),    # a path, not searched
          _info("pkg.libs/liby.so.2", [])])
@example([_info("pkg/a.cpython-311-x86_64-linux-gnu.so", ["libx.so.1"], extension=True,
                rpath="$ORIGIN/../pkg.libs"),                              # RPATH is inherited
          _info("pkg.libs/libx.so.1", ["liby.so.2"]), _info("pkg.libs/liby.so.2", [])])
@example([_info("pkg/a.cpython-311-x86_64-linux-gnu.so", ["libx.so.1"], extension=True,
                runpath="$ORIGIN/../pkg.libs"),                            # RUNPATH is not
          _info("pkg.libs/libx.so.1", ["liby.so.2"]), _info("pkg.libs/liby.so.2", [])])
def test_resolution_matches_the_reference_model(infos):
    r = judge(infos, "demo-1.0-cp311-cp311-linux_x86_64.whl")
    assert r.error is None, r.error
    same_arch = [i for i in infos if i.arch == r.arch]
    want = reference_external(same_arch)
    first = r.policies[0]
    assert first.external_libraries == {
        lib: sorted(who) for lib, who in sorted(want.items()) if lib not in _allowed(r)}


def _allowed(result) -> frozenset:
    from fastelf.policy import policies_for
    return policies_for(result.libc, result.arch)[0].libraries


# ------------------------------------------------------------------ writer

name_part = st.from_regex(r"\A[a-z][a-z0-9_.]{0,7}\Z")
member_name = st.lists(name_part, min_size=1, max_size=3).map("/".join).filter(
    lambda n: not n.startswith("demo-1.0.dist-info") and ".." not in n)


@st.composite
def rewrites(draw):
    names = draw(st.lists(member_name, min_size=1, max_size=6, unique=True))
    # a name may not also be a directory of another name
    names = [n for n in names if not any(o.startswith(n + "/") for o in names)]
    files = {n: draw(st.binary(max_size=600)) for n in names}
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    replace = {n: draw(st.binary(max_size=300)) for n in names if draw(st.booleans())}
    remove = {n for n in names if n not in replace and draw(st.booleans())}
    extra = draw(st.lists(member_name, max_size=3, unique=True))
    add = {f"demo.libs/{n.replace('/', '_')}": draw(st.binary(max_size=300)) for n in extra}
    add = {n: d for n, d in add.items() if n not in files}
    if draw(st.booleans()):
        add["demo-1.0.dist-info/sboms/x.json"] = b"{}"
    return files, compression, replace, remove, add


@FUZZ
@given(rewrites(), st.sampled_from([0, 1, 6, 9]))
def test_rewritten_wheel_reads_alike_in_zipfile_and_fastelf(tmp_path_factory, case, level):
    files, compression, replace, remove, add = case
    src = hs.make_wheel(files, compression=compression)
    out = tmp_path_factory.mktemp("rewrite") / "demo-1.0-py3-none-any.whl"
    with WheelReader(src) as reader:
        originals = {m.name: bytes(reader.read(m)) for m in reader.members}
        rewrite_wheel(reader, out, replace=replace, add=add, remove=remove,
                      compresslevel=level)
    record = "demo-1.0.dist-info/RECORD"           # rewritten from the bytes written
    expected = {n: d for n, d in originals.items() if n not in remove and n != record}
    expected.update(replace)
    expected.update(add)
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        got = {i.filename: zf.read(i) for i in zf.infolist()}
        assert not any(i.flag_bits & 0x08 for i in zf.infolist())       # no data descriptors
    assert set(got) == set(expected) | {record}
    assert {n: got[n] for n in expected} == expected
    with WheelReader(out.read_bytes()) as reader:
        assert [m.name for m in reader.members] == list(got)
        assert all(bytes(reader.read(m)) == got[m.name] for m in reader.members)
        assert verify_record(reader).ok
