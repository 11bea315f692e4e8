"""fastelf: audit and repair Linux Python wheels (manylinux / musllinux)."""

from ._elf import ElfFile, parse as parse_elf
from .errors import ElfError, FastElfError, LimitError, PolicyError, WheelError

__version__ = "0.1.0"

__all__ = [
    "ElfFile", "parse_elf", "ElfError", "FastElfError", "LimitError", "PolicyError",
    "WheelError", "__version__",
]
