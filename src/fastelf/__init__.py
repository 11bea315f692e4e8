"""fastelf: audit and repair Linux Python wheels (manylinux / musllinux).

The public API is importable from here; submodules are implementation detail
that may move.  Only fastelf's own exceptions (:class:`FastElfError` and its
subclasses, see :mod:`fastelf.errors`) leave these functions.
"""

__version__ = "0.1.0"     # first: modules below may read it

from typing import TYPE_CHECKING, Any

from ._elf import ElfFile
from ._elf import parse as parse_elf
from .audit import SCHEMA_VERSION, AuditResult, Status, audit_path, audit_wheel
from .errors import ElfError, FastElfError, LimitError, PolicyError, WheelError
from .wheel import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from .batch import audit_many

__all__ = [
    "DEFAULT_LIMITS",
    "SCHEMA_VERSION",
    "AuditResult",
    "ElfError",
    "ElfFile",
    "FastElfError",
    "LimitError",
    "Limits",
    "PolicyError",
    "Status",
    "WheelError",
    "__version__",
    "audit_many",
    "audit_path",
    "audit_wheel",
    "parse_elf",
]


def __getattr__(name: str) -> Any:
    """``audit_many`` is imported on first use: its module brings in multiprocessing and
    the remote reader (http.client, ssl), which ``fastelf repair`` never needs."""
    if name == "audit_many":
        from .batch import audit_many
        return audit_many
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"audit_many"})
