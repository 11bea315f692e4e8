"""Shared test set-up: the helper modules beside the tests (elfbuild, wheelbuild, ...)
are importable whatever pytest's import mode."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
