"""Type stub of the compiled ELF core (``cext/fastelf/_elf.pyx``).

Keep it in step with the ``cdef readonly`` attributes of ``ElfFile`` in
``_elf.pxd``: one line per attribute, in the same order.  ``tests/test_api.py``
runs mypy's stubtest against the built module, so a missing or extra name fails.
"""

from collections.abc import Iterable
from typing import Any, Final, final

from _typeshed import structseq
from typing_extensions import Buffer

# ELF constants under their spec names; their one home is cext/fastelf/_elf.pxd.
# e_ident[EI_CLASS], [EI_DATA], [EI_VERSION]
ELFMAG: bytes
EI_NIDENT: int
EI_CLASS: int
EI_DATA: int
EI_VERSION: int
ELFCLASS32: int
ELFCLASS64: int
ELFDATA2LSB: int
ELFDATA2MSB: int
EV_CURRENT: int
# e_type
ET_NONE: int
ET_REL: int
ET_EXEC: int
ET_DYN: int
ET_CORE: int
# e_machine
EM_386: int
EM_MIPS: int
EM_PPC: int
EM_PPC64: int
EM_S390: int
EM_ARM: int
EM_X86_64: int
EM_AARCH64: int
EM_RISCV: int
EM_LOONGARCH: int
# e_flags of EM_ARM
EF_ARM_ABI_FLOAT_HARD: int
EF_ARM_EABI_VER5: int
# p_type, p_flags; e_phnum
PT_NULL: int
PT_LOAD: int
PT_DYNAMIC: int
PT_INTERP: int
PT_NOTE: int
PT_PHDR: int
PT_GNU_STACK: int
PT_GNU_PROPERTY: int
PF_X: int
PF_W: int
PF_R: int
PN_XNUM: int
# sh_type, sh_flags, special section indexes
SHT_NULL: int
SHT_PROGBITS: int
SHT_SYMTAB: int
SHT_STRTAB: int
SHT_RELA: int
SHT_HASH: int
SHT_DYNAMIC: int
SHT_NOTE: int
SHT_NOBITS: int
SHT_REL: int
SHT_DYNSYM: int
SHT_GNU_HASH: int
SHT_GNU_verdef: int
SHT_GNU_verneed: int
SHT_GNU_versym: int
SHF_ALLOC: int
SHF_INFO_LINK: int
SHN_UNDEF: int
SHN_LORESERVE: int
SHN_XINDEX: int
# d_tag
DT_NULL: int
DT_NEEDED: int
DT_PLTRELSZ: int
DT_PLTGOT: int
DT_HASH: int
DT_STRTAB: int
DT_SYMTAB: int
DT_RELA: int
DT_RELASZ: int
DT_STRSZ: int
DT_SYMENT: int
DT_INIT: int
DT_FINI: int
DT_SONAME: int
DT_RPATH: int
DT_REL: int
DT_RELSZ: int
DT_PLTREL: int
DT_JMPREL: int
DT_INIT_ARRAY: int
DT_FINI_ARRAY: int
DT_RUNPATH: int
DT_PREINIT_ARRAY: int
DT_RELRSZ: int
DT_RELR: int
DT_RELRENT: int
DT_NUM: int
DT_GNU_HASH: int
DT_CONFIG: int
DT_DEPAUDIT: int
DT_AUDIT: int
DT_VERSYM: int
DT_FLAGS_1: int
DT_LOPROC: int
DT_VERDEF: int
DT_VERDEFNUM: int
DT_VERNEED: int
DT_VERNEEDNUM: int
DT_AUXILIARY: int
DT_USED: int
DT_FILTER: int
DF_1_NODEFLIB: int
# st_info, versions, notes
STB_LOCAL: int
STB_GLOBAL: int
STB_WEAK: int
STT_NOTYPE: int
STT_OBJECT: int
STT_FUNC: int
VER_FLG_BASE: int
VERSYM_HIDDEN: int
NT_GNU_PROPERTY_TYPE_0: int

DEFAULT_MAX_SYMBOLS: int
DEFAULT_MAX_STRLEN: int
DEFAULT_MAX_STRBYTES: int
DEFAULT_MAX_NEEDED: int
DEFAULT_MAX_VERSIONS: int

@final
class Import(structseq[Any], tuple[str, str | None, str | None, int, int]):
    """An undefined dynamic symbol: a tuple with named fields."""

    __match_args__: Final = ("name", "version", "library", "binding", "type")
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def library(self) -> str | None: ...
    @property
    def binding(self) -> int: ...
    @property
    def type(self) -> int: ...

@final
class Export(structseq[Any], tuple[str, str | None, int, int]):
    """A defined dynamic symbol that was asked for: a tuple with named fields."""

    __match_args__: Final = ("name", "version", "binding", "type")
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def binding(self) -> int: ...
    @property
    def type(self) -> int: ...

@final
class Segment(structseq[int], tuple[int, int, int, int, int, int, int]):
    """One program header: a tuple with named fields."""

    __match_args__: Final = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_filesz",
                             "p_memsz", "p_align")
    @property
    def p_type(self) -> int: ...
    @property
    def p_flags(self) -> int: ...
    @property
    def p_offset(self) -> int: ...
    @property
    def p_vaddr(self) -> int: ...
    @property
    def p_filesz(self) -> int: ...
    @property
    def p_memsz(self) -> int: ...
    @property
    def p_align(self) -> int: ...

class FastElfError(Exception):
    """Base class of fastelf's errors (fastelf.errors re-exports it)."""

class ElfError(FastElfError, ValueError):
    """The buffer is not a well-formed ELF file (or breaks a limit)."""

class ElfLimitError(ElfError):
    """The file breaks one of the parser's limits."""

class ElfNeedMore(ElfError):
    """The buffer is a prefix of the file and more bytes are needed."""

    needed: int
    ranges: tuple[tuple[int, int], ...]
    def __init__(self, needed: int, ranges: Iterable[tuple[int, int]] = ()) -> None: ...

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
    def arch(self) -> str | None: ...
    @property
    def arch_error(self) -> str | None: ...
    @property
    def interpreter(self) -> str | None: ...
    @property
    def needed(self) -> list[str]: ...
    @property
    def soname(self) -> str | None: ...
    @property
    def rpath(self) -> str | None: ...
    @property
    def runpath(self) -> str | None: ...
    @property
    def imports(self) -> list[Import]: ...
    @property
    def exports(self) -> list[Export]: ...
    @property
    def version_needs(self) -> dict[str, list[str]]: ...
    @property
    def version_defs(self) -> list[str]: ...
    @property
    def isa_needed(self) -> int | None: ...
    @property
    def exec_stack(self) -> bool | None: ...
    @property
    def segments(self) -> list[Segment]: ...
    @property
    def dynamic(self) -> list[tuple[int, int]] | None: ...
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
    def x86_isa_level(self) -> int | None: ...

def parse(buf: Buffer, file_size: int | None = None, *,
          exports: Iterable[str] | None = (), max_symbols: int = ...,
          max_strlen: int = ..., max_strbytes: int = ..., max_needed: int = ...,
          max_versions: int = ...,
          present: Iterable[tuple[int, int]] | None = None) -> ElfFile: ...

