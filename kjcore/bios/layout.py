"""Where the resident PC BIOS lives in physical memory (SPEC §14.2): one place for each fact.

=====================  =====================  ==========================================
range                  name                   content
=====================  =====================  ==========================================
``0x00000-0x003FF``    IVT                    256 real-mode far pointers (offset, segment)
``0x00400-0x004FF``    BDA                    BIOS data area (equipment word, memory size,
                                              video mode, cursor, EBDA segment, disks)
``0x9FC00-0x9FFFF``    EBDA                   extended BIOS data area (1 KiB, reserved)
``0xA0000-0xBFFFF``    VGA                    video memory; text mode 3 at ``0xB8000``
``0xF0000-0xFFFFF``    ROM                    :file:`bios.bin` (64 KiB), reset vector at
                                              ``0xFFFF0``
=====================  =====================  ==========================================

``0xC0000-0xEFFFF`` (option ROMs) holds nothing and is not in the memory map (a hole, as on PCs
without option ROMs).  :func:`e820` is the map INT 15h E820 reports; :func:`bios_frames` the page
frames below 1 MiB the first kernel must never hand out.  The service stubs' offsets inside the
ROM (:data:`STUB_OFFSET`, :data:`STUB_SIZE`, :data:`SERVICE_VECTORS`) are checked against the
assembled :file:`bios.S` by the tests.

>>> [(hex(b), hex(n), t) for b, n, t in e820(16 << 20)]   # doctest: +NORMALIZE_WHITESPACE
[('0x0', '0x9fc00', 1), ('0x9fc00', '0x400', 2), ('0xa0000', '0x20000', 2),
 ('0xf0000', '0x10000', 2), ('0x100000', '0xf00000', 1)]
>>> [hex(f) for f in bios_frames()][:3], len(bios_frames())
(['0x0', '0x9f', '0xa0'], 98)
"""
from ..constants import PAGE_SHIFT

IVT_BASE, IVT_SIZE = 0x00000, 0x400
BDA_BASE, BDA_SIZE = 0x00400, 0x100
EBDA_BASE, EBDA_SIZE = 0x9FC00, 0x400
VGA_BASE, VGA_SIZE = 0xA0000, 0x20000
ROM_BASE, ROM_SIZE = 0xF0000, 0x10000
#: the real-mode segment of the ROM (CS of every service stub)
ROM_SEGMENT = ROM_BASE >> 4
#: one megabyte: the top of real-mode memory and where extended memory starts
HIGH_MEMORY = 0x100000

#: VGA text mode 3: 80x25 cells of (character, attribute) at 0xB8000
VGA_TEXT_BASE = 0xB8000
TEXT_COLUMNS, TEXT_ROWS = 80, 25
TEXT_ATTRIBUTE = 0x07           # light grey on black

#: the kjcore service port: each stub executes ``out %al, $SERVICE_PORT`` (see bios.S); not
#: 0xE9 (debug console) nor 0xEA (the jump campaigns' checkpoint port, kjcore.fuzz.jumps)
SERVICE_PORT = 0xEC
#: the vectors with a service stub, in the order of the stubs in the ROM
SERVICE_VECTORS = (0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x1A)
#: ROM offset of the first stub, and the distance between two stubs
STUB_OFFSET, STUB_SIZE = 0x0100, 0x10
#: ROM offset of the stub every other vector points to (a bare IRET)
DEFAULT_STUB_OFFSET = 0x0000
#: ROM offset of the reset vector (physical 0xFFFF0), the BIOS date and the model byte
RESET_OFFSET, DATE_OFFSET, MODEL_OFFSET = 0xFFF0, 0xFFF5, 0xFFFE

# BIOS data area fields (absolute physical addresses)
BDA_EBDA_SEGMENT = 0x40E        # word: EBDA_BASE >> 4
BDA_EQUIPMENT = 0x410           # word: INT 11h
BDA_MEMORY_KIB = 0x413          # word: INT 12h
BDA_VIDEO_MODE = 0x449          # byte: 3
BDA_COLUMNS = 0x44A             # word: 80
BDA_CURSOR = 0x450              # 8 words (one per page): column | row << 8
BDA_TICKS = 0x46C               # dword: timer ticks since midnight
BDA_HARD_DISKS = 0x475          # byte: number of hard disks
BDA_ROWS = 0x484                # byte: rows - 1

#: the equipment word: 80x25 colour video (bits 4-5 = 10b), no floppy, no x87
EQUIPMENT = 0x0020
#: conventional memory below the EBDA, in KiB (INT 12h)
CONVENTIONAL_KIB = EBDA_BASE >> 10

E820_RAM, E820_RESERVED = 1, 2


def stub_offset(vector):
    """ROM offset of the service stub of ``vector`` (``ValueError`` if it has none)."""
    return STUB_OFFSET + STUB_SIZE * SERVICE_VECTORS.index(vector)


def e820(ram_size):
    """The BIOS memory map of a machine with ``ram_size`` bytes: ``(base, length, type)``.

    Usable RAM below the EBDA, the reserved EBDA, VGA and ROM areas, usable RAM from 1 MiB to
    ``ram_size`` (absent when ``ram_size`` is 1 MiB).  ``ValueError`` below 1 MiB: the ROM
    would not be in RAM.
    """
    if ram_size < HIGH_MEMORY:
        raise ValueError(f"ram_size={ram_size:#x}: a machine with a BIOS needs at least 1 MiB")
    entries = [(0, EBDA_BASE, E820_RAM), (EBDA_BASE, EBDA_SIZE, E820_RESERVED),
               (VGA_BASE, VGA_SIZE, E820_RESERVED), (ROM_BASE, ROM_SIZE, E820_RESERVED)]
    if ram_size > HIGH_MEMORY:
        entries.append((HIGH_MEMORY, ram_size - HIGH_MEMORY, E820_RAM))
    return entries


def bios_frames():
    """Page frames below 1 MiB the BIOS owns: the IVT/BDA frame and every frame not wholly
    usable RAM in :func:`e820` (EBDA, VGA, the option-ROM hole, ROM)."""
    usable_end = EBDA_BASE >> PAGE_SHIFT          # the EBDA's frame is not wholly usable
    return [0] + list(range(usable_end, HIGH_MEMORY >> PAGE_SHIFT))
