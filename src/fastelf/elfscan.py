"""Find the ELF members of a wheel and parse each one once, inflating only
as much of it as the parser asks for."""

from __future__ import annotations

import posixpath

from ._elf import ElfError, ElfLimitError, ElfNeedMore, parse
from .wheel import STORED, WheelReader

ELF_MAGIC = b"\x7fELF"
_SKIP_SUFFIXES = (".py", ".pyc", ".pyi")
_FIRST_CHUNK = 1 << 18      # inflate this much first; most small ELFs end here


def extension_init_names(member_name: str) -> tuple:
    """Symbols that make a shared object a Python extension module."""
    modname = posixpath.basename(member_name).split(".", 1)[0]
    return ("PyInit_" + modname, "init" + modname, "_cffi_pypyinit_" + modname)


class MemberElfError(ElfError):
    def __init__(self, member, reason, limit=False):
        super().__init__(f"{member}: {reason}")
        self.member = member
        self.reason = reason
        self.limit = limit      # the member breaks one of the reader's Limits


def iter_elf_members(reader: WheelReader):
    """Yield (member, ElfFile) for every member that starts with the ELF magic.

    A member that has the magic but does not parse raises MemberElfError.
    """
    for m in reader.members:
        if m.is_dir or m.size < 16 or m.name.endswith(_SKIP_SUFFIXES):
            continue
        stream = reader.stream(m)
        if stream.peek(4) != ELF_MAGIC:
            continue
        yield m, parse_member(stream, extension_init_names(m.name))


def parse_member(stream, exports=()):
    """Parse an ELF member from a MemberStream, growing the inflated prefix on demand.

    The member is then completed and its CRC-32 checked (a WheelError if it
    differs), unless it is large and the parser used less than half of it.
    """
    size = stream.member.size
    lim = stream.reader.limits
    if stream.member.method != STORED:
        stream.ensure(min(size, _FIRST_CHUNK))
    while True:
        with stream.data() as buf:
            try:
                elf = parse(buf, size, exports=exports, max_symbols=lim.max_symbols,
                            max_strlen=lim.max_strlen, max_strbytes=lim.max_strbytes)
            except ElfNeedMore as more:
                want = more.needed
            except ElfError as e:
                raise MemberElfError(stream.member.name, str(e),
                                     isinstance(e, ElfLimitError)) from None
            else:
                break
        # grow geometrically so a file needing many small steps stays linear
        stream.ensure(max(want, min(size, 2 * stream.available)))
    # the judged bytes must be the bytes pip installs: finish the member and
    # check its CRC-32, unless that costs much more than the parse (see MemberStream)
    stream.verify_after_parse(elf.bytes_used)
    return elf
