"""Exceptions raised by fastelf.  Every error names the file and the reason."""

from ._elf import ElfError, ElfNeedMore

__all__ = ["FastElfError", "ElfError", "ElfNeedMore", "WheelError", "LimitError", "PolicyError"]


class FastElfError(Exception):
    """Base class of fastelf's own errors."""


class WheelError(FastElfError):
    """A wheel cannot be read: broken zip, hostile member, bad metadata."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class LimitError(WheelError):
    """A wheel breaks one of the configured safety limits (size, ratio, count)."""


class PolicyError(FastElfError):
    """An unknown policy or platform tag was asked for."""
