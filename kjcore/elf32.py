"""Validating ELF32 parser for the loader: the ELF header and the program and section header tables.

Only what kexec-tools' ``build_elf_info`` looks at is parsed, and every value read from the file
is checked against the file length *before* it is used, so a hostile file can neither make the
parser allocate memory in proportion to a size it claims nor loop longer than the file is long.
Each rejection is one :class:`LoaderError` whose ``field`` names the offending header field.

>>> from kjcore.elf32 import parse_elf32, LoaderError
>>> try:
...     parse_elf32(b"\\x7fELF\\x02" + bytes(60))
... except LoaderError as e:
...     print(e.field, "|", e)
EI_CLASS | EI_CLASS: ELFCLASS64 (2) is not supported, kjcore loads ELFCLASS32 (1) files only
"""
import struct
from typing import NamedTuple

from .errors import LoaderError

# e_ident (System V ABI, "ELF Identification").
ELFMAG = b"\x7fELF"
EI_NIDENT = 16
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1

# e_type / e_machine.
ET_REL = 1
ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4
EM_386 = 3
EM_486 = 6          # accepted by kexec-tools' elf_x86_probe, rejected here (SPEC section 10)

# p_type.
PT_NULL = 0
PT_LOAD = 1
PT_INTERP = 3
PT_NOTE = 4
#: e_phnum value meaning "the real count is in section 0" (extended numbering)
PN_XNUM = 0xFFFF

# sh_type values whose sh_entsize kexec-tools checks, with the size it requires.
SHT_NOBITS = 8
_SH_ENTSIZE = {2: 16,    # SHT_SYMTAB: Elf32_Sym
               4: 12,    # SHT_RELA:   Elf32_Rela
               6: 8,     # SHT_DYNAMIC: Elf32_Dyn
               9: 8}     # SHT_REL:    Elf32_Rel

EHDR_SIZE = 52
PHDR_SIZE = 32
SHDR_SIZE = 40
_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")
_PHDR = struct.Struct("<8I")
_SHDR = struct.Struct("<10I")
assert (_EHDR.size, _PHDR.size, _SHDR.size) == (EHDR_SIZE, PHDR_SIZE, SHDR_SIZE)

_TYPE_NAMES = {ET_REL: "ET_REL", ET_EXEC: "ET_EXEC", ET_DYN: "ET_DYN", ET_CORE: "ET_CORE"}
_U32_END = 1 << 32





class Elf32Header(NamedTuple):
    """The fields of ``Elf32_Ehdr`` after ``e_ident`` (little-endian, already validated)."""
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int


class Elf32Phdr(NamedTuple):
    """One ``Elf32_Phdr``; its file bytes ``[p_offset, p_offset + p_filesz)`` lie inside the
    file."""
    p_type: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int
    p_align: int


def byte_view(data):
    """``data`` as a flat read-only ``memoryview`` of bytes, without copying.

    >>> byte_view(bytearray(b"abc"))[1:].tobytes()
    b'bc'
    """
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
    if not view.c_contiguous:
        raise TypeError("data must be a contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view.toreadonly()


def _check_ident(view):
    size = len(view)
    if size < EI_NIDENT:
        raise LoaderError("e_ident", f"file is {size} bytes, too short for the "
                                     f"{EI_NIDENT}-byte ELF identification")
    if view[:4] != ELFMAG:
        raise LoaderError("e_ident", f"bad magic {view[:4].tobytes()!r}, not an ELF file")
    ei_class, ei_data, ei_version = view[4], view[5], view[6]
    if ei_class != ELFCLASS32:
        kind = "ELFCLASS64 " if ei_class == ELFCLASS64 else ""
        raise LoaderError("EI_CLASS", f"{kind}({ei_class}) is not supported, "
                                      "kjcore loads ELFCLASS32 (1) files only")
    if ei_data != ELFDATA2LSB:
        # kexec-tools byte-swaps ELFDATA2MSB files; an i386 image is little-endian by definition.
        raise LoaderError("EI_DATA", f"{ei_data} is not ELFDATA2LSB (1): i386 images are "
                                     "little-endian")
    if ei_version != EV_CURRENT:
        raise LoaderError("EI_VERSION", f"{ei_version} is not EV_CURRENT (1)")
    if size < EHDR_SIZE:
        raise LoaderError("Elf32_Ehdr", f"file is {size} bytes, the ELF32 header needs "
                                        f"{EHDR_SIZE}")


def parse_header(data):
    """Check ``e_ident`` and the ELF32 header of ``data``; return ``(view, Elf32Header)``.

    The machine and type are checked here too: kjcore only loads i386 executables.
    """
    view = byte_view(data)
    _check_ident(view)
    ehdr = Elf32Header(*_EHDR.unpack_from(view, 0)[1:])
    if ehdr.e_ehsize != EHDR_SIZE:
        raise LoaderError("e_ehsize", f"{ehdr.e_ehsize} is not sizeof(Elf32_Ehdr) = {EHDR_SIZE}")
    if ehdr.e_type not in (ET_EXEC, ET_DYN, ET_CORE):
        name = _TYPE_NAMES.get(ehdr.e_type, str(ehdr.e_type))
        raise LoaderError("e_type", f"{name} is not ET_EXEC, ET_DYN or ET_CORE")
    if ehdr.e_machine != EM_386:
        raise LoaderError("e_machine", f"{ehdr.e_machine} is not EM_386 (3)")
    if ehdr.e_version != EV_CURRENT:
        raise LoaderError("e_version", f"{ehdr.e_version} is not EV_CURRENT (1)")
    return view, ehdr


def _table_fits(view, offset, count, entsize, what):
    """Raise unless ``count`` entries of ``entsize`` bytes at ``offset`` lie inside the file."""
    end = offset + count * entsize      # Python ints: no wrap, and count <= 0xFFFF
    if end > len(view):
        field = "e_phoff" if what == "program" else "e_shoff"
        raise LoaderError(field, f"{what} header table [{offset:#x}, {end:#x}) ({count} entries) "
                                 f"runs past the end of the {len(view)}-byte file")


def parse_phdrs(view, ehdr):
    """Validate the program header table; return a tuple of :class:`Elf32Phdr`.

    Every header (not only PT_LOAD) must have its file bytes inside the file and an address
    range that does not wrap, as kexec-tools' ``build_mem_phdrs`` requires.
    """
    if ehdr.e_phnum == 0 or ehdr.e_phoff == 0:
        field = "e_phnum" if ehdr.e_phnum == 0 else "e_phoff"
        raise LoaderError(field, f"no program header table (e_phoff={ehdr.e_phoff:#x}, "
                                 f"e_phnum={ehdr.e_phnum})")
    if ehdr.e_phnum == PN_XNUM:
        raise LoaderError("e_phnum", "PN_XNUM (0xffff): extended program header numbering "
                                     "is not supported")
    if ehdr.e_phentsize != PHDR_SIZE:
        raise LoaderError("e_phentsize", f"{ehdr.e_phentsize} is not sizeof(Elf32_Phdr) = "
                                         f"{PHDR_SIZE}")
    _table_fits(view, ehdr.e_phoff, ehdr.e_phnum, PHDR_SIZE, "program")
    table = view[ehdr.e_phoff:ehdr.e_phoff + ehdr.e_phnum * PHDR_SIZE]
    phdrs = tuple(Elf32Phdr(*fields) for fields in _PHDR.iter_unpack(table))
    size = len(view)
    for i, ph in enumerate(phdrs):
        if ph.p_offset + ph.p_filesz > size:
            field = "p_offset" if ph.p_offset > size else "p_filesz"
            raise LoaderError(field, f"program header {i}: file bytes [{ph.p_offset:#x}, "
                                     f"{ph.p_offset + ph.p_filesz:#x}) run past the end of the "
                                     f"{size}-byte file")
        # i386 kexec-tools computes p_paddr + p_memsz in a 32-bit unsigned long: a sum that
        # reaches 2**32 wraps below p_paddr and the file is refused.
        if (ph.p_paddr + ph.p_memsz) % _U32_END < ph.p_paddr:
            raise LoaderError("p_memsz", f"program header {i}: p_paddr {ph.p_paddr:#x} + "
                                         f"p_memsz {ph.p_memsz:#x} wraps past 4 GiB")
    return phdrs


def check_shdrs(view, ehdr):
    """Validate the section header table the way kexec-tools' ``build_mem_shdrs`` does.

    Sections are not used for loading, but kexec-tools refuses a file whose section table is
    out of bounds or whose sections claim bytes past the end, so kjcore does too.
    """
    if ehdr.e_shoff == 0 or ehdr.e_shnum == 0:
        return
    if ehdr.e_shentsize != SHDR_SIZE:
        raise LoaderError("e_shentsize", f"{ehdr.e_shentsize} is not sizeof(Elf32_Shdr) = "
                                         f"{SHDR_SIZE}")
    _table_fits(view, ehdr.e_shoff, ehdr.e_shnum, SHDR_SIZE, "section")
    size = len(view)
    table = view[ehdr.e_shoff:ehdr.e_shoff + ehdr.e_shnum * SHDR_SIZE]
    for i, (_name, sh_type, _flags, sh_addr, sh_offset, sh_size, _link, _info, _align,
            sh_entsize) in enumerate(_SHDR.iter_unpack(table)):
        need = _SH_ENTSIZE.get(sh_type)
        if need is not None and sh_entsize != need:
            raise LoaderError("sh_entsize", f"section {i} of type {sh_type}: {sh_entsize} is "
                                            f"not {need}")
        if sh_type != SHT_NOBITS and sh_offset + sh_size > size:
            field = "sh_offset" if sh_offset > size else "sh_size"
            raise LoaderError(field, f"section {i}: bytes [{sh_offset:#x}, "
                                     f"{sh_offset + sh_size:#x}) run past the end of the "
                                     f"{size}-byte file")
        if (sh_addr + sh_size) % _U32_END < sh_addr:
            raise LoaderError("sh_size", f"section {i}: sh_addr {sh_addr:#x} + sh_size "
                                         f"{sh_size:#x} wraps past 4 GiB")


def parse_elf32(data):
    """Parse and validate an i386 ELF32 file; return ``(view, Elf32Header, phdrs)``.

    ``view`` is a read-only ``memoryview`` of ``data`` (no copy), so callers can hand out
    segment buffers as slices of it.

    >>> ehdr = struct.pack("<4s3B9xHHIIIIIHHHHHH", ELFMAG, 1, 1, 1, ET_EXEC, EM_386, 1,
    ...                    0x100000, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    >>> phdr = struct.pack("<8I", PT_LOAD, 84, 0x100000, 0x100000, 2, 0x10, 5, 0x1000)
    >>> view, ehdr, phdrs = parse_elf32(ehdr + phdr + b"hi")
    >>> hex(ehdr.e_entry), len(phdrs), hex(phdrs[0].p_paddr), phdrs[0].p_filesz
    ('0x100000', 1, '0x100000', 2)
    """
    view, ehdr = parse_header(data)
    phdrs = parse_phdrs(view, ehdr)
    check_shdrs(view, ehdr)
    return view, ehdr, phdrs
