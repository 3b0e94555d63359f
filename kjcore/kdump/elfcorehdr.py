"""The ELF core header (``elfcorehdr``) kexec-tools builds for a crash load, and its parser.

kexec-tools describes the crashed kernel's memory to the capture kernel with an ELF header
and program headers only (no data): one ``PT_NOTE`` per CPU pointing at that CPU's
crash-notes buffer (``p_offset = p_paddr`` = its physical address, ``p_vaddr = 0``, sizes
:data:`~.notes.MAX_NOTE_BYTES`), then one ``PT_LOAD`` per RAM range the capture kernel does
not own (``p_offset = p_paddr`` = the range's physical address, except the 640 KiB range
whose ``p_offset`` is the backup copy; ``p_vaddr`` its direct-map address, ``0xffffffff``
for ranges above the i386 low-memory limit of 896 MiB; flags RWX; ``p_align = 0``).  The
buffer is zero-padded to a multiple of 1 KiB.  ``ELFCLASS32`` is the default on i386
(``--elf32-core-headers``); ``--elf64-core-headers`` writes the same headers in
``ELFCLASS64`` form (``e_machine`` stays ``EM_386``).

:func:`parse_elfcorehdr` reads one back from a crashed machine's memory for
:mod:`kjcore.kdump.vmcore`: everything in it is treated as hostile.

>>> hdr = build_elfcorehdr([(0x5400, 1024)], [LoadRange(0x100000, 0x100000, 0x300000)])
>>> len(hdr), [(p.type, hex(p.offset), hex(p.vaddr), hex(p.memsz)) for p in
...            parse_elfcorehdr(hdr).phdrs]
(1024, [(4, '0x5400', '0x0', '0x400'), (1, '0x100000', '0xc0100000', '0x300000')])
"""
import struct
from typing import NamedTuple

from ..constants import PAGE_OFFSET

ELFCLASS32, ELFCLASS64 = 1, 2
ET_CORE = 4
EM_386 = 3
PT_LOAD, PT_NOTE = 1, 4
PF_RWX = 7
#: kexec-tools aligns the header buffer (and its placement) to 1 KiB: ``elfcorehdr=`` is in K
ELF_CORE_HEADER_ALIGN = 1024
#: i386 low memory (``X86_MAXMEM``): RAM above has no direct-map address (``p_vaddr = -1``)
LOWMEM_LIMIT = 0x38000000
#: program headers a header may have (more is hostile: kexec-tools makes 1 + one per range)
MAX_PHDRS = 1024

_EHDR = {ELFCLASS32: struct.Struct("<16sHHIIIIIHHHHHH"),
         ELFCLASS64: struct.Struct("<16sHHIQQQIHHHHHH")}
_PHDR = {ELFCLASS32: struct.Struct("<8I"), ELFCLASS64: struct.Struct("<IIQQQQQQ")}


class LoadRange(NamedTuple):
    """One PT_LOAD: the physical range ``[paddr, paddr + size)`` and where its bytes are
    (``offset``: ``paddr`` itself, or the backup region's address)."""
    offset: int
    paddr: int
    size: int


class Phdr(NamedTuple):
    """A program header, whatever the class."""
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class CoreHeader(NamedTuple):
    """A parsed elfcorehdr: its class and program headers."""
    elf_class: int
    phdrs: tuple


def lowmem_vaddr(paddr, elf_class):
    """``p_vaddr`` kexec-tools gives a RAM range at ``paddr`` (all ones above low memory)."""
    if paddr >= LOWMEM_LIMIT:
        return 0xFFFFFFFF if elf_class == ELFCLASS32 else 0xFFFFFFFFFFFFFFFF
    return PAGE_OFFSET + paddr


def _pack_phdr(elf_class, p):
    if elf_class == ELFCLASS32:
        return _PHDR[elf_class].pack(p.type, p.offset, p.vaddr, p.paddr, p.filesz, p.memsz,
                                     p.flags, p.align)
    return _PHDR[elf_class].pack(p.type, p.flags, p.offset, p.vaddr, p.paddr, p.filesz,
                                 p.memsz, p.align)


def _unpack_phdr(elf_class, data, at):
    v = _PHDR[elf_class].unpack_from(data, at)
    if elf_class == ELFCLASS32:
        return Phdr(v[0], v[6], v[1], v[2], v[3], v[4], v[5], v[7])
    return Phdr(*v)


def elf_header(elf_class, phnum, e_type=ET_CORE):
    """An ``Elf32_Ehdr`` / ``Elf64_Ehdr`` of an i386 core with ``phnum`` program headers
    right after it."""
    ehdr, phdr = _EHDR[elf_class], _PHDR[elf_class]
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    return ehdr.pack(ident, e_type, EM_386, 1, 0, ehdr.size, 0, 0, ehdr.size, phdr.size,
                     phnum, 0, 0, 0)


def program_headers(elf_class, phdrs):
    """The program headers ``phdrs`` (:class:`Phdr`) packed for ``elf_class``."""
    return b"".join(_pack_phdr(elf_class, p) for p in phdrs)


def build_elfcorehdr(notes, loads, *, elf_class=ELFCLASS32):
    """The elfcorehdr buffer: ``notes`` is ``(address, size)`` per CPU, ``loads`` the
    :class:`LoadRange` list in address order.  Zero-padded to 1 KiB."""
    phdrs = [Phdr(PT_NOTE, 0, addr, 0, addr, size, size, 0) for addr, size in notes]
    phdrs += [Phdr(PT_LOAD, PF_RWX, r.offset, lowmem_vaddr(r.paddr, elf_class), r.paddr,
                   r.size, r.size, 0) for r in loads]
    data = elf_header(elf_class, len(phdrs)) + program_headers(elf_class, phdrs)
    size = -(-len(data) // ELF_CORE_HEADER_ALIGN) * ELF_CORE_HEADER_ALIGN
    return data.ljust(size, b"\0")


def header_size(data):
    """Bytes the ELF header and program headers of ``data`` need (``ValueError`` if ``data``
    does not start with a 32- or 64-bit ELF header)."""
    elf_class = _check_ident(data)
    ehdr = _EHDR[elf_class].unpack_from(data, 0)
    return ehdr[5] + ehdr[10] * _PHDR[elf_class].size


def _check_ident(data):
    if len(data) < 16 or bytes(data[:4]) != b"\x7fELF":
        raise ValueError("elfcorehdr: no ELF magic")
    elf_class = data[4]
    if elf_class not in _EHDR or data[5] != 1:
        raise ValueError(f"elfcorehdr: class {data[4]} / data {data[5]} is not a "
                         "little-endian ELF32 or ELF64 header")
    if len(data) < _EHDR[elf_class].size:
        raise ValueError("elfcorehdr: truncated ELF header")
    return elf_class


def parse_elfcorehdr(data):
    """Parse an elfcorehdr (bytes-like); every field is checked before it is used.

    ``ValueError`` naming the field for a header that is not an i386 ``ET_CORE`` header of
    either class, with program headers of the right size inside ``data``, at most
    :data:`MAX_PHDRS` of them, only ``PT_NOTE`` and ``PT_LOAD``, ``filesz == memsz``, and
    ranges that fit the class's address space.
    """
    data = bytes(data)
    elf_class = _check_ident(data)
    (_, e_type, e_machine, _, _, e_phoff, _, _, _, e_phentsize, e_phnum, _, _,
     _) = _EHDR[elf_class].unpack_from(data, 0)
    if e_type != ET_CORE:
        raise ValueError(f"elfcorehdr: e_type {e_type} is not ET_CORE")
    if e_machine != EM_386:
        raise ValueError(f"elfcorehdr: e_machine {e_machine} is not EM_386")
    if e_phentsize != _PHDR[elf_class].size:
        raise ValueError(f"elfcorehdr: e_phentsize {e_phentsize} is not "
                         f"{_PHDR[elf_class].size}")
    if not 1 <= e_phnum <= MAX_PHDRS:
        raise ValueError(f"elfcorehdr: e_phnum {e_phnum} is not in 1..{MAX_PHDRS}")
    if e_phoff + e_phnum * e_phentsize > len(data):
        raise ValueError(f"elfcorehdr: e_phoff {e_phoff:#x} puts the program headers past "
                         f"the {len(data):#x} bytes read")
    limit = 1 << (32 if elf_class == ELFCLASS32 else 64)
    phdrs = []
    for i in range(e_phnum):
        p = _unpack_phdr(elf_class, data, e_phoff + i * e_phentsize)
        if p.type not in (PT_NOTE, PT_LOAD):
            raise ValueError(f"elfcorehdr: program header {i} has p_type {p.type}")
        if p.filesz != p.memsz:
            raise ValueError(f"elfcorehdr: program header {i}: p_filesz {p.filesz:#x} != "
                             f"p_memsz {p.memsz:#x}")
        if p.offset + p.memsz > limit or p.paddr + p.memsz > limit:
            raise ValueError(f"elfcorehdr: program header {i} wraps the address space")
        phdrs.append(p)
    return CoreHeader(elf_class, tuple(phdrs))
