"""Every exception fastelf raises, and the exit code each one means.

One hierarchy: everything below derives from :class:`FastElfError`, so an API
caller catches that one class.  Every error names the file and the reason.
The command line maps an exception to its exit code with :func:`exit_code_of`
(one table, :data:`EXIT_CODES`); results map through their status.
"""

from __future__ import annotations

import os

from ._elf import ElfError, ElfLimitError, ElfNeedMore, FastElfError

__all__ = ["FastElfError", "ElfError", "ElfLimitError", "ElfNeedMore", "WheelError",
           "LimitError", "PolicyError", "ElfPatchError", "ElfStripError", "LddError",
           "RepairError", "MemberElfError", "RpmDatabaseError", "BdbError",
           "FastElfWarning", "PackageDatabaseWarning", "EXIT_OK", "EXIT_MISLABELED",
           "EXIT_USAGE", "EXIT_UNREADABLE", "EXIT_CODES", "exit_code_of"]

# Exit codes of the command line.
EXIT_OK = 0             # all good (skipped non-Linux wheels included)
EXIT_MISLABELED = 1     # a claim not satisfied, RECORD mismatch, a repair/retag refused
EXIT_USAGE = 2          # bad arguments, a missing file, an unknown policy
EXIT_UNREADABLE = 3     # a wheel or ELF file that cannot be read (broken, hostile, limits)


class WheelError(FastElfError):
    """A wheel cannot be read: broken zip, hostile member, bad metadata."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class LimitError(WheelError):
    """A wheel breaks one of the configured safety limits (size, ratio, count)."""


class PolicyError(FastElfError):
    """An unknown policy or platform tag was asked for."""


class ElfPatchError(FastElfError):
    """An ELF file cannot be patched as asked; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ElfStripError(FastElfError):
    """An ELF file cannot be stripped (not a linked program or library, malformed)."""


class LddError(FastElfError):
    """The object whose tree was asked for cannot be read or is not dynamic."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class RepairError(FastElfError):
    """The wheel cannot be repaired as asked; nothing was written."""


class MemberElfError(ElfError):
    """An ELF member of a wheel cannot be parsed; names the member (and whether it broke
    one of the reader's Limits)."""

    def __init__(self, member: str, reason: str, limit: bool = False) -> None:
        super().__init__(f"{member}: {reason}")
        self.member = member
        self.reason = reason
        self.limit = limit      # the member breaks one of the reader's Limits


class RpmDatabaseError(FastElfError):
    """The rpm database or one of its headers is damaged; the message says where and how."""


class BdbError(FastElfError):
    """The file is not a Berkeley DB hash file, or a part of it is damaged."""


class FastElfWarning(UserWarning):
    """Base class of fastelf's warnings (the CLI prints them as one line each)."""


class PackageDatabaseWarning(FastElfWarning):
    """A package database could not be read, wholly or in part: the SBOM lacks the
    purls it would have given (the libraries are still listed, as files)."""


# The most specific class listed decides (LimitError is a WheelError).
EXIT_CODES = {
    WheelError: EXIT_UNREADABLE,
    LddError: EXIT_UNREADABLE,
    ElfError: EXIT_UNREADABLE,
    PolicyError: EXIT_USAGE,
    FastElfError: EXIT_MISLABELED,     # repair/retag/patch refusals
}


def exit_code_of(error: BaseException) -> int:
    """The command line's exit code for ``error`` (see :data:`EXIT_CODES`)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_MISLABELED
