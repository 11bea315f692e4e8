"""pytest-benchmark suite: fastelf next to auditwheel 6.8.2 on the same inputs.

    python benchmarks/corpus.py                           # fetch the corpus once
    python -m pytest benchmarks/ --benchmark-only         # run
    python -m pytest benchmarks/ --benchmark-only --benchmark-group-by=group

Each group holds the fastelf and the auditwheel version of one operation, so
pytest-benchmark prints them side by side:

- ``parse-system-lib``: the facts an audit reads from one ELF (DT_NEEDED,
  SONAME, RPATH/RUNPATH, version needs, undefined dynamic symbols) from a host
  library already in memory: ``fastelf._elf.parse`` against pyelftools used the
  way auditwheel uses it.
- ``audit-small-wheel`` / ``audit-large-wheel``: a whole-wheel audit of
  PyYAML (0.7 MB) and of numpy (15.6 MB; set FASTELF_BENCH_LARGE=scipy for
  the 39 MB scipy wheel): ``fastelf.audit.audit_wheel`` against
  ``auditwheel.wheel_abi.analyze_wheel_abi`` as ``auditwheel show`` calls it,
  with auditwheel's per-path ``lru_cache`` cleared before every call (else
  the repeats would time the cache).

Corpus tests are skipped when the corpus is not downloaded.  There are no
timing thresholds: these tests only measure.  The full comparison with a
Markdown table is benchmarks/compare_auditwheel.py.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402

pytest.importorskip("pytest_benchmark")

from fastelf._elf import parse  # noqa: E402
from fastelf.audit import audit_wheel  # noqa: E402

auditwheel = pytest.importorskip("auditwheel")
from auditwheel import lddtree as aw_lddtree  # noqa: E402
from auditwheel import wheel_abi as aw_wheel_abi  # noqa: E402
from auditwheel.wheeltools import get_wheel_architecture, get_wheel_libc  # noqa: E402
from elftools.elf.dynamic import DynamicSection  # noqa: E402
from elftools.elf.elffile import ELFFile  # noqa: E402
from elftools.elf.gnuversions import GNUVerNeedSection  # noqa: E402
from elftools.elf.sections import SymbolTableSection  # noqa: E402

SYSTEM_LIBS = ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
               "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6")

SMALL = "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
LARGE = {
    "numpy": "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "scipy": "scipy-1.14.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
}


def corpus_wheel(filename) -> Path:
    entry = next(e for e in corpus.CORPUS if e.filename == filename)
    path = corpus.path_of(entry)
    if not path.is_file():
        pytest.skip(f"corpus wheel {filename} is not downloaded "
                    "(run `python benchmarks/corpus.py`)")
    return path


def auditwheel_show(path: Path) -> str:
    """auditwheel show's analysis, in process, with its memo caches cleared."""
    aw_wheel_abi.get_wheel_elfdata.cache_clear()
    aw_lddtree.load_ld_paths.cache_clear()
    aw_lddtree.parse_ld_so_conf.cache_clear()
    info = aw_wheel_abi.analyze_wheel_abi(
        get_wheel_libc(path.name), get_wheel_architecture(path.name), path, frozenset(),
        disable_isa_ext_check=False, allow_graft=False)
    return info.overall_policy.name


def pyelftools_facts(data: bytes):
    """The facts fastelf's parse gives, read with pyelftools as auditwheel does."""
    elf = ELFFile(io.BytesIO(data))
    needed, soname, rpath, runpath = [], None, None, None
    version_needs = {}
    undefined = []
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            for tag in section.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(tag.needed)
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = tag.soname
                elif tag.entry.d_tag == "DT_RPATH":
                    rpath = tag.rpath
                elif tag.entry.d_tag == "DT_RUNPATH":
                    runpath = tag.runpath
        elif isinstance(section, GNUVerNeedSection):
            for verneed, aux in section.iter_versions():
                version_needs[verneed.name] = [v.name for v in aux]
        elif isinstance(section, SymbolTableSection) and section.name == ".dynsym":
            undefined = [s.name for s in section.iter_symbols()
                         if s.entry.st_shndx == "SHN_UNDEF" and s.name]
    return needed, soname, rpath, runpath, version_needs, undefined


@pytest.fixture(scope="module")
def system_lib():
    for p in SYSTEM_LIBS:
        if os.path.isfile(p):
            return Path(p).read_bytes()
    pytest.skip("no system libc.so.6 found")


# --------------------------------------------------------------- parse

@pytest.mark.benchmark(group="parse-system-lib")
def test_parse_fastelf(benchmark, system_lib):
    elf = benchmark(parse, system_lib)
    assert elf.soname == "libc.so.6"


@pytest.mark.benchmark(group="parse-system-lib")
def test_parse_pyelftools_as_auditwheel(benchmark, system_lib):
    facts = benchmark(pyelftools_facts, system_lib)
    assert facts[1] == "libc.so.6"


# --------------------------------------------------------------- audits

@pytest.mark.benchmark(group="audit-small-wheel")
def test_audit_small_fastelf(benchmark):
    path = corpus_wheel(SMALL)
    result = benchmark(audit_wheel, path)
    assert result.best_tag == "manylinux_2_17_x86_64"


@pytest.mark.benchmark(group="audit-small-wheel")
def test_audit_small_auditwheel(benchmark):
    path = corpus_wheel(SMALL)
    tag = benchmark.pedantic(auditwheel_show, args=(path,), rounds=10, iterations=1,
                             warmup_rounds=1)
    assert tag == "manylinux_2_17_x86_64"


def _large():
    key = os.environ.get("FASTELF_BENCH_LARGE", "numpy")
    if key not in LARGE:
        pytest.fail(f"FASTELF_BENCH_LARGE must be one of {', '.join(LARGE)}")
    return corpus_wheel(LARGE[key])


@pytest.mark.benchmark(group="audit-large-wheel")
def test_audit_large_fastelf(benchmark):
    path = _large()
    result = benchmark.pedantic(audit_wheel, args=(path,), rounds=10, iterations=1,
                                warmup_rounds=1)
    assert result.best_tag == "manylinux_2_17_x86_64"


@pytest.mark.benchmark(group="audit-large-wheel")
def test_audit_large_auditwheel(benchmark):
    path = _large()
    tag = benchmark.pedantic(auditwheel_show, args=(path,), rounds=3, iterations=1)
    assert tag == "manylinux_2_17_x86_64"
