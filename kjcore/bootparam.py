"""The Linux/x86 32-bit boot protocol's zero page (``struct boot_params``) as kexec-tools
builds it for ``--args-linux`` (``x86-linux-setup.c`` of kexec-tools 2.0.1).

A 32-bit kernel entered at its protected-mode entry finds ESI pointing at a 4 KiB zero page
that a boot loader filled in: screen geometry, the memory map (``e820_map``), the setup header
at ``0x1f1`` (``HdrS`` magic, protocol version, ``cmd_line_ptr`` ...).  kexec-tools puts the
command line right after it, in the same buffer (6 KiB: the zero page and a
``COMMAND_LINE_SIZE`` command-line area), loads it as one segment reserving 16 KiB, and has
purgatory enter the kernel with ESI = that segment's address.

What :func:`boot_params` writes (every other byte is zero), offsets in the zero page:

=========  ==========================  ========================================================
offset     field                       value
=========  ==========================  ========================================================
``0x000``  screen_info                 cursor 0,0; video page/mode 0; 80 columns, 25 lines;
                                       ``orig_video_isVGA`` 1, ``orig_video_points`` 16
``0x002``  ``ext_mem_k`` (u16)         KiB of RAM above 1 MiB in the range holding 1 MiB,
                                       at most ``0xfc00``
``0x020``  ``cl_magic`` / ``offset``    ``0xa33f``, ``0x1000`` (the old command-line protocol)
``0x1e0``  ``alt_mem_k`` (u32)         the same KiB, unclipped
``0x1e8``  ``e820_entries`` (u8)       entries in ``e820_map`` (at most 128)
``0x1f2``  ``root_flags``              ``0xffff`` (mount root read-only)
``0x1fc``  ``root_dev``                ``0x0300`` (/dev/hda)
``0x202``  ``header``, ``version``     ``HdrS``, ``0x0206``
``0x210``  ``type_of_loader``          ``0xff`` (kexec-tools 2.0.1: "unknown")
``0x228``  ``cmd_line_ptr``            buffer address + ``0x1000``
``0x22c``  ``initrd_addr_max``         ``0x37ffffff``
``0x238``  ``cmdline_size``            2048
``0x2d0``  ``e820_map``                ``(addr u64, size u64, type u32)`` per entry
=========  ==========================  ========================================================

The command line is copied at offset ``0x1000`` with its NUL; a longer one is cut to 2047
bytes and a NUL, as kexec-tools does.  One deliberate difference: kexec-tools 2.0.1 computed
each e820 size as ``end - start`` of an inclusive range (one byte short, fixed in later
releases); kjcore writes the sizes of the machine's memory map exactly.

>>> page = boot_params(0x90000, b"console=ttyS0", [(0, 0x9fc00, 1), (0x100000, 0x3f00000, 1)])
>>> len(page), page[0x202:0x206], hex(int.from_bytes(page[0x228:0x22c], "little"))
(6144, b'HdrS', '0x91000')
>>> page[0x1000:0x100e]
b'console=ttyS0\\x00'
"""
import struct

#: the zero page, and the command-line area kexec-tools appends to it
ZERO_PAGE_SIZE = 0x1000
COMMAND_LINE_SIZE = 2048
#: the parameter segment's buffer and the memory kexec-tools reserves for it
PARAM_BUFFER_SIZE = ZERO_PAGE_SIZE + COMMAND_LINE_SIZE
PARAM_MEMSZ = 16 << 10
#: offset of the command line in the buffer
CMDLINE_OFFSET = ZERO_PAGE_SIZE

E820_MAP = 0x2D0
E820_MAX = 128
E820_ENTRY = struct.Struct("<QQI")
CL_MAGIC_VALUE = 0xA33F
BOOT_PROTOCOL = 0x0206
LOADER_TYPE_UNKNOWN = 0xFF
DEFAULT_INITRD_ADDR_MAX = 0x37FFFFFF
ROOT_DEV_HDA = 0x0300
_E820_RAM = 1

# (offset, struct format, value) of every constant field
_FIXED = (
    (0x007, "B", 80),                   # orig_video_cols
    (0x00E, "B", 25),                   # orig_video_lines
    (0x00F, "B", 1),                    # orig_video_isVGA
    (0x010, "H", 16),                   # orig_video_points
    (0x020, "H", CL_MAGIC_VALUE),       # cl_magic
    (0x022, "H", CMDLINE_OFFSET),       # cl_offset
    (0x1F2, "H", 0xFFFF),               # root_flags (mount_root_rdonly)
    (0x1FC, "H", ROOT_DEV_HDA),         # root_dev
    (0x202, "4s", b"HdrS"),             # header
    (0x206, "H", BOOT_PROTOCOL),        # version
    (0x210, "B", LOADER_TYPE_UNKNOWN),  # type_of_loader
    (0x22C, "I", DEFAULT_INITRD_ADDR_MAX),
    (0x238, "I", COMMAND_LINE_SIZE),    # cmdline_size
)


def memory_above_1m_kib(e820):
    """``(ext_mem_k, alt_mem_k)``: KiB from 1 MiB to the end of the RAM entry that holds
    1 MiB (kexec-tools' rule, with its inclusive end), 0 if none does."""
    ext = alt = 0
    for base, size, kind in e820:
        end = base + size - 1
        if kind == _E820_RAM and base <= 0x100000 < end:
            alt = min((end >> 10) - (0x100000 >> 10), 0xFFFFFFFF)
            ext = min(alt, 0xFC00)
    return ext, alt


def command_line_bytes(cmdline):
    """The bytes the command-line area receives: ``cmdline`` and a NUL, cut to
    :data:`COMMAND_LINE_SIZE` (the last byte then forced to NUL)."""
    data = bytes(cmdline)[:COMMAND_LINE_SIZE - 1]
    return data + b"\0"


def boot_params(base, cmdline, e820):
    """The parameter buffer (zero page + command line, :data:`PARAM_BUFFER_SIZE` bytes) for a
    segment loaded at ``base``; ``e820`` is ``(addr, size, type)`` entries (at most 128 used,
    as kexec-tools truncates)."""
    buf = bytearray(PARAM_BUFFER_SIZE)
    for offset, fmt, value in _FIXED:
        struct.pack_into("<" + fmt, buf, offset, value)
    entries = list(e820)[:E820_MAX]
    ext, alt = memory_above_1m_kib(entries)
    struct.pack_into("<H", buf, 0x002, ext)
    struct.pack_into("<I", buf, 0x1E0, alt)
    struct.pack_into("<B", buf, 0x1E8, len(entries))
    for i, (addr, size, kind) in enumerate(entries):
        E820_ENTRY.pack_into(buf, E820_MAP + i * E820_ENTRY.size, addr, size, kind)
    struct.pack_into("<I", buf, 0x228, (base + CMDLINE_OFFSET) & 0xFFFFFFFF)
    line = command_line_bytes(cmdline)
    buf[CMDLINE_OFFSET:CMDLINE_OFFSET + len(line)] = line
    return bytes(buf)
