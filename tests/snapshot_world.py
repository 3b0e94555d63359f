"""Loading examples/kdump/capture.elf by hand the way ``kjexec --args-linux`` does (zero page,
command line, purgatory, backup segments), for the capture and snapshot tests."""
import os
import struct

from kjcore import KEXEC_PRESERVE_CONTEXT, Segment
from kjcore.loader import load_elf32, preserve_context_backup_segments, sort_segments
from kjcore.purgatory import purgatory_segment

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "kdump")
CAPTURE = os.path.join(EXAMPLES, "capture.elf")
PURGATORY = 0x1100000
ZERO_PAGE = PURGATORY + 0x1000
CMDLINE = PURGATORY + 0x2000
MEM_MIN, MEM_MAX = 0x1000000, 0x11FFFFF
E820_RAM, E820_RESERVED = 1, 2


def e820(ram_size):
    """The e820 map of a kjcore machine as a PC BIOS reports it: low RAM, the ROM hole, RAM."""
    return [(0, 0x9F000, E820_RAM), (0x9F000, 0x61000, E820_RESERVED),
            (0x100000, ram_size - 0x100000, E820_RAM)]


def zero_page(entries, cmdline_at):
    """A boot_params page: e820_entries at 0x1E8, cmd_line_ptr at 0x228, e820_map at 0x2D0."""
    page = bytearray(4096)
    page[0x1E8] = len(entries)
    struct.pack_into("<I", page, 0x228, cmdline_at)
    for i, (addr, size, kind) in enumerate(entries):
        struct.pack_into("<QQI", page, 0x2D0 + 20 * i, addr, size, kind)
    return bytes(page)


def _full(seg):
    """The bytes kexec leaves at a segment's destination: the buffer, then zeros."""
    return bytes(seg.buf) + bytes(seg.memsz - seg.bufsz)


def load_snapshot(m, cmdline=b"", entries=None):
    """Load capture.elf with preserve context and --args-linux's extra segments."""
    with open(CAPTURE, "rb") as f:
        image = load_elf32(f.read())
    zp = Segment(zero_page(entries or e820(m.ram_size), CMDLINE), ZERO_PAGE, 4096)
    cmd = Segment(cmdline + b"\0", CMDLINE, 4096)
    verified = list(image.segments) + [zp, cmd]
    data, entry = purgatory_segment(PURGATORY, entry=image.entry, zero_page=ZERO_PAGE,
                                    segments=[(s.mem, _full(s)) for s in verified])
    segments = verified + [Segment(data, PURGATORY, len(data))]
    backups = preserve_context_backup_segments(segments, MEM_MIN, MEM_MAX, m.ram_size)
    m.kexec_load(entry, sort_segments(segments + list(backups)), KEXEC_PRESERVE_CONTEXT)
    return m.kexec_image


def load_like_kjexec(m, cmdline=b"", mem_min=MEM_MIN, mem_max=0x10FFFFF):
    """What ``kjexec -l --load-preserve-context --args-linux`` loads (kjcore.linux_load)."""
    from kjcore.linux_load import finish_linux_load, plan_linux_load
    with open(CAPTURE, "rb") as f:
        image = load_elf32(f.read())
    plan = plan_linux_load(m, image, KEXEC_PRESERVE_CONTEXT, cmdline, mem_min=mem_min,
                           mem_max=mem_max)
    segments = list(plan.segments) + [plan.purgatory]
    segments += preserve_context_backup_segments(segments, mem_min, mem_max, m.ram_size)
    segments, entry = finish_linux_load(plan, list(sort_segments(segments)))
    m.kexec_load(entry, segments, KEXEC_PRESERVE_CONTEXT)
    return m.kexec_image
