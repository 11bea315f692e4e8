"""The version is written once, as ``fastelf.__version__``.

Oracles: setuptools (the build backend) resolves pyproject's dynamic version
the way ``pip wheel`` does when it writes METADATA; ``fastelf -V`` as a user
runs it.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import fastelf

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"

try:
    import tomllib
except ImportError:         # Python < 3.11
    tomllib = pytest.importorskip("tomli")


def test_pyproject_names_no_version_of_its_own():
    """A second written version could drift from ``__version__``: pyproject defers to it."""
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert "version" not in data["project"]
    assert "version" in data["project"]["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastelf.__version__"}


def test_setuptools_builds_the_package_version():
    """setuptools expands the dynamic version (for METADATA) to ``fastelf.__version__``."""
    config = pytest.importorskip("setuptools.config.pyprojecttoml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # [tool.setuptools] is "beta" in older setuptools
        project = config.read_configuration(str(PYPROJECT), expand=True)["project"]
    assert project["version"] == fastelf.__version__


def test_the_command_line_reports_the_package_version():
    run = subprocess.run([sys.executable, "-m", "fastelf", "-V"], capture_output=True,
                         text=True, check=True)
    assert run.stdout.strip() == f"fastelf {fastelf.__version__}"
