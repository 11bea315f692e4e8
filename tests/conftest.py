"""Shared test set-up: the helper modules beside the tests (elfbuild, wheelbuild, ...)
are importable whatever pytest's import mode, and the fixtures several test files
share live here (so no test file imports another).

The repair fixtures compile C and build wheels once per session (their builders
are in ``repair_support``, imported when a fixture is first asked for, after the
path set-up): the tests read them and never change them."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    """The compiled extensions, private libraries and the wheel of the repair tests."""
    from repair_support import build_fx
    return build_fx(tmp_path_factory.mktemp("repair"))


@pytest.fixture(scope="session")
def repaired(fx, tmp_path_factory):
    """(fx.wheel repaired with the private libraries on LD_LIBRARY_PATH, its extraction)."""
    from repair_support import build_repaired
    return build_repaired(fx, tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("x"))


@pytest.fixture(scope="session")
def musl(tmp_path_factory):
    """A musl program needing two private musl libraries, in a wheel (skips without musl)."""
    from repair_support import build_musl
    return build_musl(tmp_path_factory)


@pytest.fixture(scope="session")
def auditwheel_path(tmp_path_factory):
    """A PATH on which auditwheel finds a patchelf it accepts (skips without auditwheel)."""
    from repair_support import build_auditwheel_path
    return build_auditwheel_path(tmp_path_factory)


@pytest.fixture(scope="session")
def rpath_wheel(fx):
    """A wheel whose extension's DT_RPATH mixes in-wheel, outside and absolute entries."""
    from repair_support import build_rpath_wheel
    return build_rpath_wheel(fx)


@pytest.fixture(scope="session")
def newlib_wheel(fx):
    """A manylinux_2_5 extension needing a private library that needs glibc 2.36."""
    from repair_support import build_newlib_wheel
    return build_newlib_wheel(fx)


@pytest.fixture(scope="session")
def datawheel(fx):
    """(a wheel with .data/scripts, .data/platlib and libpython-linked ELF files, the
    libpython-linked extension); skips without a shared libpython."""
    from repair_support import build_datawheel
    return build_datawheel(fx)
