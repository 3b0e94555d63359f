"""Write small ELF32 (i386, little-endian) files for the loader tests.

Everything is generated: no fixture is downloaded or committed. Header fields can be
overridden one by one to build the malformed files the loader must refuse.

>>> data = build_elf32([Phdr(paddr=0x100000, data=b"hello", memsz=0x2000)], entry=0x100000)
>>> data[:4], len(data) >= EHDR_SIZE + PHDR_SIZE + 5
(b'\\x7fELF', True)
"""
import io
import struct
from dataclasses import dataclass

EHDR_SIZE, PHDR_SIZE, SHDR_SIZE = 52, 32, 40
ET_EXEC, ET_DYN, ET_CORE = 2, 3, 4
EM_386 = 3
PT_NULL, PT_LOAD, PT_INTERP, PT_NOTE = 0, 1, 3, 4
SHT_PROGBITS, SHT_STRTAB, SHT_NOBITS = 1, 3, 8

#: (name, struct code) of every Elf32_Ehdr field after e_ident's 16 bytes, in file order
EHDR_FIELDS = (("e_type", "H"), ("e_machine", "H"), ("e_version", "I"), ("e_entry", "I"),
               ("e_phoff", "I"), ("e_shoff", "I"), ("e_flags", "I"), ("e_ehsize", "H"),
               ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"), ("e_shnum", "H"),
               ("e_shstrndx", "H"))
PHDR_FIELDS = ("p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags",
               "p_align")
SHDR_FIELDS = ("sh_name", "sh_type", "sh_flags", "sh_addr", "sh_offset", "sh_size", "sh_link",
               "sh_info", "sh_addralign", "sh_entsize")


def _offsets(fields, start):
    table, at = {}, start
    for name, code in fields:
        table[name] = (at, code)
        at += struct.calcsize("<" + code)
    return table


#: field name -> (offset in the file, struct code); e_ident bytes are EI_CLASS/EI_DATA/EI_VERSION
EHDR_OFFSETS = {"EI_CLASS": (4, "B"), "EI_DATA": (5, "B"), "EI_VERSION": (6, "B"),
                **_offsets(EHDR_FIELDS, 16)}
#: field name -> (offset inside one Elf32_Phdr, struct code)
PHDR_OFFSETS = _offsets([(n, "I") for n in PHDR_FIELDS], 0)


@dataclass
class Phdr:
    """One program header and the bytes it points at.

    ``filesz``/``memsz``/``vaddr`` default to ``len(data)``/``filesz``/``paddr``; ``offset``
    defaults to wherever the builder places ``data``.
    """
    paddr: int = 0
    data: bytes = b""
    memsz: int = None
    type: int = PT_LOAD
    filesz: int = None
    vaddr: int = None
    offset: int = None
    flags: int = 5
    align: int = 0x1000


def set_field(data, offset, code, value):
    """A copy of ``data`` with ``value`` packed little-endian at ``offset``."""
    out = bytearray(data)
    struct.pack_into("<" + code, out, offset, value)
    return bytes(out)


def build_elf32(phdrs, entry=0, *, e_type=ET_EXEC, machine=EM_386, sections=False,
                data_align=16, **overrides):
    """An ELF32 file: header, program header table, each header's data, optional sections.

    ``sections=True`` adds a section table (null section, one PROGBITS/NOBITS section per
    PT_LOAD, ``.shstrtab``) so tools that read sections see a normal file. ``overrides`` set
    any field of ``EHDR_OFFSETS`` after layout (``e_phnum=0``, ``EI_CLASS=2``...).
    """
    phdrs = list(phdrs)
    body = bytearray()
    at = EHDR_SIZE + PHDR_SIZE * len(phdrs)
    placed = []
    for ph in phdrs:
        at = -(-at // data_align) * data_align
        pad = at - (EHDR_SIZE + PHDR_SIZE * len(phdrs)) - len(body)
        body += bytes(pad)
        placed.append(at)
        body += ph.data
        at += len(ph.data)
    table = bytearray()
    for ph, where in zip(phdrs, placed):
        filesz = len(ph.data) if ph.filesz is None else ph.filesz
        memsz = filesz if ph.memsz is None else ph.memsz
        table += struct.pack("<8I", ph.type, where if ph.offset is None else ph.offset,
                             ph.paddr if ph.vaddr is None else ph.vaddr, ph.paddr, filesz,
                             memsz, ph.flags, ph.align)
    out = bytearray(EHDR_SIZE) + table + body
    shoff = shnum = shstrndx = 0
    if sections:
        shoff, shnum, shstrndx, tail = _sections(phdrs, placed, len(out))
        out += tail
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    out[:EHDR_SIZE] = struct.pack("<16sHHIIIIIHHHHHH", ident, e_type, machine, 1, entry,
                                  EHDR_SIZE if phdrs else 0, shoff, 0, EHDR_SIZE, PHDR_SIZE,
                                  len(phdrs), SHDR_SIZE if sections else 0, shnum, shstrndx)
    data = bytes(out)
    for name, value in overrides.items():
        offset, code = EHDR_OFFSETS[name]
        data = set_field(data, offset, code, value)
    return data


def _sections(phdrs, placed, file_len):
    """Section table bytes placed after ``file_len``: returns (shoff, shnum, shstrndx, bytes)."""
    names = bytearray(b"\0")
    entries = [bytes(SHDR_SIZE)]
    for i, (ph, where) in enumerate(zip(phdrs, placed)):
        if ph.type != PT_LOAD:
            continue
        name_at = len(names)
        names += f".seg{i}\0".encode()
        kind = SHT_PROGBITS if ph.data else SHT_NOBITS
        size = len(ph.data) if ph.data else (ph.memsz or 0)
        entries.append(struct.pack("<10I", name_at, kind, 0x6, ph.paddr, where, size, 0, 0, 1, 0))
    strtab_name = len(names)
    names += b".shstrtab\0"
    strtab_at = file_len
    shoff = -(-(strtab_at + len(names)) // 4) * 4
    entries.append(struct.pack("<10I", strtab_name, SHT_STRTAB, 0, 0, strtab_at, len(names),
                               0, 0, 1, 0))
    tail = bytes(names) + bytes(shoff - strtab_at - len(names)) + b"".join(entries)
    return shoff, len(entries), len(entries) - 1, tail


def set_phdr_field(data, index, name, value, e_phoff=EHDR_SIZE):
    """A copy of ``data`` with field ``name`` of program header ``index`` set to ``value``."""
    offset, code = PHDR_OFFSETS[name]
    return set_field(data, e_phoff + index * PHDR_SIZE + offset, code, value)


def pyelftools_load(data, page_size=0x1000):
    """What SPEC section 10 loads from ``data``, computed from pyelftools' reading of the file.

    Returns ``([(mem, buffer bytes, page-rounded memsz), ...] sorted by mem, e_entry)``: the
    independent oracle the loader is checked against.
    """
    from elftools.elf.elffile import ELFFile
    elf = ELFFile(io.BytesIO(data))
    segments = []
    for i in range(elf.num_segments()):
        # the header only: building a Segment object makes pyelftools read sections for
        # PT_DYNAMIC, and kexec loading never looks at sections
        h = elf._get_segment_header(i)
        if h.p_type == "PT_LOAD" and h.p_memsz:
            body = data[h.p_offset:h.p_offset + min(h.p_filesz, h.p_memsz)]
            segments.append((h.p_paddr, bytes(body), -(-h.p_memsz // page_size) * page_size))
    return sorted(segments), elf.header.e_entry
