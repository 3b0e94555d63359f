"""``/proc/vmcore`` of a capture kernel: the crashed first kernel's memory as an ELF core file.

The capture kernel finds the ELF core header kexec-tools prepared at the address its
``elfcorehdr=`` option gives, and builds the core file the way 2.6.27's ``fs/proc/vmcore.c``
does: the ELF header of the same class with one merged ``PT_NOTE`` and the ``PT_LOAD``
headers; the notes of every ``PT_NOTE`` of the header, each cut at its empty final note and
concatenated; then each ``PT_LOAD``'s bytes, read from the old memory at its ``p_offset``
(for the first 640 KiB that is the backup copy purgatory made, so the capture kernel's own
use of low memory does not show), at file offsets right after the notes (no alignment, as in
2.6.27).  ``gdb -c``, ``readelf`` and pyelftools read the result; the ``NT_PRSTATUS`` note
holds the registers ``crash_save_cpu`` saved at the panic.

Everything in the crashed machine's memory is untrusted: the header is parsed by
:func:`kjcore.kdump.elfcorehdr.parse_elfcorehdr`, notes by :func:`kjcore.kdump.notes.parse_notes`,
every range must lie in RAM, and the file may not exceed twice the RAM (overlapping ranges).
"""
import os
import re
from typing import NamedTuple

from ..bootparam import CMDLINE_OFFSET, COMMAND_LINE_SIZE
from .elfcorehdr import (
    ELFCLASS32,
    PT_LOAD,
    PT_NOTE,
    Phdr,
    elf_header,
    header_size,
    parse_elfcorehdr,
    program_headers,
)
from .notes import notes_size

#: the largest ELF core header read (1024 program headers of the larger class and the header)
MAX_HEADER_BYTES = 64 + 1024 * 56
_ELFCOREHDR = re.compile(rb"(?:^| )elfcorehdr=(0x[0-9a-fA-F]+|\d+)([KMG]?)(?= |$)")
_SUFFIX = {b"": 0, b"K": 10, b"M": 20, b"G": 30}


class Vmcore(NamedTuple):
    """What :func:`write_vmcore` wrote: the file's size, its class, the notes' size and the
    PT_LOAD headers of the file."""
    size: int
    elf_class: int
    notes: bytes
    loads: tuple


def elfcorehdr_from_image(image):
    """The ``elfcorehdr=`` address on the command line of a crash image loaded with
    ``--args-linux`` (found through its zero page's ``cmd_line_ptr``), or None."""
    for seg in image.segments:
        head = bytes(seg.read(0, min(seg.bufsz, CMDLINE_OFFSET + COMMAND_LINE_SIZE)))
        if len(head) < 0x22C or head[0x202:0x206] != b"HdrS":
            continue
        ptr = int.from_bytes(head[0x228:0x22C], "little")
        if not seg.mem <= ptr < seg.mem + len(head):
            continue
        line = head[ptr - seg.mem:].split(b"\0")[0]
        found = _ELFCOREHDR.findall(line)
        if found:
            digits, suffix = found[-1]
            return int(digits, 0) << _SUFFIX[suffix]
    return None


def _ram_bytes(ram, addr, size, what):
    if addr < 0 or size < 0 or addr + size > len(ram):
        raise ValueError(f"{what} [{addr:#x}, {addr + size:#x}) is not in RAM "
                         f"(0 - {len(ram):#x})")
    return ram[addr:addr + size]


def read_elfcorehdr(ram, addr):
    """Parse the ELF core header at physical ``addr`` of ``ram`` (hostile)."""
    first = bytes(_ram_bytes(ram, addr, min(64, max(0, len(ram) - addr)), "elfcorehdr"))
    size = max(header_size(first), len(first))
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"elfcorehdr: headers of {size:#x} bytes (at most "
                         f"{MAX_HEADER_BYTES:#x})")
    return parse_elfcorehdr(bytes(_ram_bytes(ram, addr, size, "elfcorehdr")))


def write_vmcore(ram, elfcorehdr, path):
    """Write the vmcore of the crashed memory ``ram`` described by the header at
    ``elfcorehdr`` to ``path``; returns a :class:`Vmcore`.  ``ValueError`` for a header or
    note that does not hold up; ``path`` is not left half written."""
    hdr = read_elfcorehdr(ram, elfcorehdr)
    notes = b""
    for i, p in enumerate(hdr.phdrs):
        if p.type == PT_NOTE:
            data = bytes(_ram_bytes(ram, p.offset, p.memsz, f"PT_NOTE {i}"))
            notes += data[:notes_size(data)]
    loads = [p for p in hdr.phdrs if p.type == PT_LOAD]
    for i, p in enumerate(loads):
        _ram_bytes(ram, p.offset, p.memsz, f"PT_LOAD {i}")
    total = sum(p.memsz for p in loads)
    if total > 2 * len(ram):
        raise ValueError(f"elfcorehdr: its PT_LOAD ranges add up to {total:#x} bytes, more "
                         "than twice the RAM")
    phnum = 1 + len(loads)
    head = len(elf_header(hdr.elf_class, phnum)) + len(program_headers(hdr.elf_class, [
        Phdr(PT_NOTE, 0, 0, 0, 0, 0, 0, 0)])) * phnum
    offset = head + len(notes)
    if hdr.elf_class == ELFCLASS32 and offset + total > 0xFFFFFFFF:
        raise ValueError("vmcore: an ELF32 core cannot hold more than 4 GiB")
    out = [Phdr(PT_NOTE, 0, head, 0, 0, len(notes), len(notes), 0)]
    for p in loads:
        out.append(p._replace(offset=offset))
        offset += p.memsz
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(elf_header(hdr.elf_class, phnum) + program_headers(hdr.elf_class, out))
            f.write(notes)
            for p in loads:
                f.write(memoryview(ram[p.offset:p.offset + p.memsz]))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Vmcore(offset, hdr.elf_class, notes, tuple(out[1:]))
