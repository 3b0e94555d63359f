"""The committed purgatory build (``purgatory.elf``) as a flat image plus its relocations.

The Makefile links purgatory at address 0 with ``ld --emit-relocs``, so the file keeps the
relocation sections the link resolved. At load time every ``R_386_32`` word (an absolute
address inside the image) gets the load address added, as kexec-tools relocates its own
purgatory ELF; ``R_386_PC32``/``R_386_PLT32`` words are relative inside the one segment and
stay as they are. The file is part of the package, but it is still checked as any input
would be: one loadable segment at 0, tables inside the file, known relocation types.
"""
import functools
import os
import struct
from typing import NamedTuple

ELF_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "purgatory.elf")

_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")
_PHDR = struct.Struct("<8I")
_SHDR = struct.Struct("<10I")
_SYM = struct.Struct("<IIIBBH")
_REL = struct.Struct("<II")
PT_LOAD = 1
SHT_SYMTAB = 2
SHT_REL = 9
SHF_ALLOC = 2
SHN_ABS = 0xFFF1
R_386_32, R_386_PC32, R_386_PLT32 = 1, 2, 4


class PurgatoryImage(NamedTuple):
    """The loadable bytes of purgatory linked at 0 (``.bss`` included as zeros)."""
    data: bytes
    entry: int            #: offset of purgatory_start in data
    relocations: tuple    #: offsets of the 32-bit words that get the load address added
    symbols: dict         #: name -> (offset, size) of the global symbols


def _table(blob, offset, count, entry):
    if offset + count * entry.size > len(blob):
        raise ValueError(f"{ELF_PATH}: a table lies past the end of the file")
    return [entry.unpack_from(blob, offset + i * entry.size) for i in range(count)]


def _c_string(blob, offset):
    end = blob.find(b"\0", offset)
    if end < 0:
        raise ValueError(f"{ELF_PATH}: a symbol name runs past the end of the file")
    return blob[offset:end].decode("ascii")


def parse(blob):
    """Validate a purgatory ELF built by the Makefile and return its :class:`PurgatoryImage`."""
    if len(blob) < _EHDR.size or blob[:5] != b"\x7fELF\x01":
        raise ValueError(f"{ELF_PATH}: not an ELF32 file")
    (_, _, machine, _, entry, phoff, shoff, _, _, _, phnum, _, shnum, _) = _EHDR.unpack_from(blob)
    loads = [p for p in _table(blob, phoff, phnum, _PHDR) if p[0] == PT_LOAD]
    if machine != 3 or len(loads) != 1 or loads[0][2] != 0:
        raise ValueError(f"{ELF_PATH}: expected one i386 PT_LOAD at address 0")
    _, offset, _, _, filesz, memsz, _, _ = loads[0]
    if filesz > memsz or offset + filesz > len(blob) or not entry < filesz:
        raise ValueError(f"{ELF_PATH}: the PT_LOAD does not fit the file")
    data = blob[offset:offset + filesz] + bytes(memsz - filesz)
    sections = _table(blob, shoff, shnum, _SHDR)
    symbols, symtab, relocations = {}, [], []
    for _, kind, _, _, sh_offset, size, link, _, _, _ in sections:
        if kind == SHT_SYMTAB:
            if link >= len(sections):
                raise ValueError(f"{ELF_PATH}: the symbol table names no string table")
            strtab = sections[link][4]
            table = _table(blob, sh_offset, size // _SYM.size, _SYM)
            symbols = {_c_string(blob, strtab + s[0]): (s[1], s[2]) for s in table
                       if s[3] >> 4 == 1 and s[5] != SHN_ABS}          # STB_GLOBAL
            symtab = table
    for _, kind, _, _, sh_offset, size, _, info, _, _ in sections:
        if kind != SHT_REL:
            continue
        if info >= len(sections):
            raise ValueError(f"{ELF_PATH}: a relocation section names no section")
        if not sections[info][2] & SHF_ALLOC:
            continue
        for r_offset, r_info in _table(blob, sh_offset, size // _REL.size, _REL):
            r_type, r_sym = r_info & 0xFF, r_info >> 8
            if r_type in (R_386_PC32, R_386_PLT32):
                continue
            if r_type != R_386_32 or r_offset + 4 > memsz:
                raise ValueError(f"{ELF_PATH}: relocation type {r_type} at {r_offset:#x}")
            if r_sym >= len(symtab):
                raise ValueError(f"{ELF_PATH}: relocation at {r_offset:#x} names no symbol")
            if symtab[r_sym][5] != SHN_ABS:
                relocations.append(r_offset)
    if "purgatory_params" not in symbols:
        raise ValueError(f"{ELF_PATH}: no purgatory_params symbol")
    return PurgatoryImage(data, entry, tuple(sorted(relocations)), symbols)


@functools.lru_cache(maxsize=None)
def purgatory_image():
    """The committed build, parsed once per process."""
    with open(ELF_PATH, "rb") as f:
        return parse(f.read())
