"""Type stub of the compiled ELF core (``cext/fastelf/_elf.pyx``).

Keep it in step with the ``cdef readonly`` attributes of ``ElfFile`` in
``_elf.pxd``: one line per attribute, in the same order.  ``tests/test_api.py``
runs mypy's stubtest against the built module, so a missing or extra name fails.
"""

from typing import Iterable, List, Optional, Tuple

from typing_extensions import Buffer

EM_386: int
EM_PPC64: int
EM_S390: int
EM_ARM: int
EM_X86_64: int
EM_AARCH64: int
EM_RISCV: int
EM_LOONGARCH: int

STB_LOCAL: int
STB_GLOBAL: int
STB_WEAK: int
STT_NOTYPE: int
STT_OBJECT: int
STT_FUNC: int

DEFAULT_MAX_SYMBOLS: int
DEFAULT_MAX_STRLEN: int
DEFAULT_MAX_STRBYTES: int
DEFAULT_MAX_NEEDED: int
DEFAULT_MAX_VERSIONS: int

# (name, version, library, binding, type): an undefined dynamic symbol
_Import = Tuple[str, Optional[str], Optional[str], int, int]
# (name, version, binding, type): a defined dynamic symbol that was asked for
_Export = Tuple[str, Optional[str], int, int]
# (p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz, p_align)
_Segment = Tuple[int, int, int, int, int, int, int]

class FastElfError(Exception):
    """Base class of fastelf's errors (fastelf.errors re-exports it)."""

class ElfError(FastElfError, ValueError):
    """The buffer is not a well-formed ELF file (or breaks a limit)."""

class ElfLimitError(ElfError):
    """The file breaks one of the parser's limits."""

class ElfNeedMore(ElfError):
    """The buffer is a prefix of the file and more bytes are needed."""

    needed: int
    ranges: Tuple[Tuple[int, int], ...]
    def __init__(self, needed: int, ranges: Iterable[Tuple[int, int]] = ()) -> None: ...

class ElfFile:
    """What the dynamic loader sees of one ELF file (read-only attributes)."""

    @property
    def elf_class(self) -> int: ...
    @property
    def little_endian(self) -> bool: ...
    @property
    def osabi(self) -> int: ...
    @property
    def e_type(self) -> int: ...
    @property
    def machine(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def arch(self) -> Optional[str]: ...
    @property
    def arch_error(self) -> Optional[str]: ...
    @property
    def interpreter(self) -> Optional[str]: ...
    @property
    def needed(self) -> List[str]: ...
    @property
    def soname(self) -> Optional[str]: ...
    @property
    def rpath(self) -> Optional[str]: ...
    @property
    def runpath(self) -> Optional[str]: ...
    @property
    def imports(self) -> List[_Import]: ...
    @property
    def exports(self) -> List[_Export]: ...
    @property
    def version_needs(self) -> dict[str, List[str]]: ...
    @property
    def version_defs(self) -> List[str]: ...
    @property
    def isa_needed(self) -> Optional[int]: ...
    @property
    def exec_stack(self) -> Optional[bool]: ...
    @property
    def segments(self) -> List[_Segment]: ...
    @property
    def dynamic(self) -> Optional[List[Tuple[int, int]]]: ...
    @property
    def relr(self) -> bool: ...
    @property
    def symbol_count(self) -> int: ...
    @property
    def strbytes(self) -> int: ...
    @property
    def bytes_used(self) -> int: ...
    @property
    def is_dynamic(self) -> bool: ...
    @property
    def x86_isa_level(self) -> Optional[int]: ...

def parse(buf: Buffer, file_size: Optional[int] = None, *,
          exports: Optional[Iterable[str]] = (), max_symbols: int = ...,
          max_strlen: int = ..., max_strbytes: int = ..., max_needed: int = ...,
          max_versions: int = ...,
          present: Optional[Iterable[Tuple[int, int]]] = None) -> ElfFile: ...

