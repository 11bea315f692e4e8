"""Wheel file names: the one place fastelf reads them.

packaging's :func:`~packaging.utils.parse_wheel_filename` (what pip uses)
decides whether a name is a wheel name; this module keeps, beside that
verdict, the parts as they are written, because fastelf writes names back
(retag, repair) and must not rename a project or reorder its tags.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .errors import WheelError

BAD_WHEEL_NAME = ("not a valid wheel file name (PEP 427: "
                  "name-version[-build]-python-abi-platform.whl)")


class WheelName(NamedTuple):
    """A valid wheel file name split into its parts, each as written (case kept)."""

    stem: str               # "name-version" or "name-version-build"
    python: list[str]       # python tags, e.g. ["cp311"]
    abi: list[str]          # abi tags, e.g. ["cp311"] or ["abi3"]
    platform: list[str]     # platform tags in the name's order

    @property
    def distribution(self) -> str:
        """The project name as written (escaped per PEP 427, not canonicalized)."""
        return self.stem.split("-")[0]

    @property
    def version(self) -> str:
        """The version as written (not normalized)."""
        return self.stem.split("-")[1]

    def with_platform(self, platform: list[str]) -> str:
        """This file name with the platform tags replaced by ``platform`` (in that order)."""
        return f"{self.stem}-{'.'.join(self.python)}-{'.'.join(self.abi)}-{'.'.join(platform)}.whl"


def parse_wheel_name(filename: str) -> WheelName:
    """The parts of the wheel file name ``filename`` (a path's directory is ignored).

    Raises WheelError (the message :func:`fastelf.audit.judge_wheel` has always
    given) when packaging refuses the name.
    """
    base = os.path.basename(filename)
    try:
        parse_wheel_filename(base)
    except InvalidWheelFilename:
        raise WheelError(filename, BAD_WHEEL_NAME) from None
    # packaging accepted it: 4 or 5 dashes, so the last three parts are the tags
    stem, python, abi, platform = base[:-len(".whl")].rsplit("-", 3)
    return WheelName(stem, python.split("."), abi.split("."), platform.split("."))


def platform_tags_of(filename: str) -> list[str]:
    """The platform tags of a wheel file name, in the name's order; [] if not a wheel name.

    Lower case, as packaging's tags and installers compare them; packaging
    returns a set, so the order (and duplicates dropped) come from the name.
    """
    try:
        parsed = parse_wheel_name(filename)
    except WheelError:
        return []
    return list(dict.fromkeys(t.lower() for t in parsed.platform))
