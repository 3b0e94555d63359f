"""The BIOS-calling examples (examples/bios_*.elf): paths, the kjexec load window, what each
program must print (computed here from the machine's ``e820`` and the disk, independently of
the programs) and the memory a round trip must leave byte-exact."""
import os

import numpy as np

import kjcore
from kjcore.bios import layout
from kjcore.fuzz.oracle import preserved_mask
from kjcore.loader import load_elf32, preserve_context_backup_segments, sort_segments

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
PROGRAMS = ("bios_e820.elf", "bios_tty.elf", "bios_disk.elf", "bios_roundtrip.elf")
#: where bios.ld links them: the first kernel's low memory, swapped out by the jump
LOAD_AT, WINDOW_END = 0x8000, 0xFFFF
KJEXEC_LOAD = ["-l", "--load-preserve-context", "--args-none", f"--mem-min={LOAD_AT:#x}",
               f"--mem-max={WINDOW_END:#x}"]
#: what bios_tty writes (examples/bios_tty.c)
TELETYPE = "teletype: hello from real mode"
STRING = "write string: kexec jump calls the BIOS"


def path(name):
    return os.path.join(EXAMPLES, name)


def load(m, name):
    """``kjexec -l --load-preserve-context --args-none`` through the API."""
    with open(path(name), "rb") as f:
        image = load_elf32(f.read())
    backups = preserve_context_backup_segments(image.segments, LOAD_AT, WINDOW_END, m.ram_size)
    m.kexec_load(image.entry, sort_segments(image.segments + backups),
                 kjcore.KEXEC_PRESERVE_CONTEXT)


def jump(m):
    return m.reboot(kjcore.LINUX_REBOOT_MAGIC1, kjcore.LINUX_REBOOT_MAGIC2,
                    kjcore.LINUX_REBOOT_CMD_KEXEC)


def firmware_bytes(ram_size):
    """Mask of the bytes the BIOS's INT 10h owns and changes: the text screen and the cursor
    words of the BIOS data area.  They are the BIOS's, not the first kernel's."""
    mask = np.zeros(ram_size, dtype=bool)
    mask[layout.VGA_TEXT_BASE:layout.VGA_TEXT_BASE + 2 * layout.TEXT_COLUMNS * layout.TEXT_ROWS] \
        = True
    mask[layout.BDA_CURSOR:layout.BDA_CURSOR + 16] = True
    return mask


def first_kernel_mask(m):
    """Invariant 8's bytes (preserved_mask) minus the BIOS's screen and cursor."""
    return preserved_mask(m, m.kexec_image) & ~firmware_bytes(m.ram_size)


def assert_byte_exact(before, after, keep):
    diff = np.flatnonzero((before != after) & keep)
    assert diff.size == 0, (f"{diff.size} first-kernel bytes changed, the first at "
                            f"{int(diff[0]):#x}: {int(before[diff[0]]):#04x} -> "
                            f"{int(after[diff[0]]):#04x}")


def e820_lines(e820):
    """bios_e820's line for each ``(base, length, type)`` entry."""
    names = {1: "usable", 2: "reserved"}
    return [f"e820: {base:016x}-{base + length - 1:016x} {names.get(kind, 'other')}"
            for base, length, kind in e820]


def e820_console(e820):
    lines = e820_lines(e820)
    return ("bios_e820: INT 15h E820 memory map\n" + "".join(f"{s}\r\n" for s in lines)
            + f"bios_e820: {len(lines)} entries\n")


def sector_lines(lba, data):
    """bios_disk's two lines for the sector ``lba`` holding ``data``."""
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data[:64])
    return [f"lba {lba:08x}: {data[:16].hex()}", f"  |{text}|"]


def disk_console(sectors, first, last):
    lines = sector_lines(0, first) + sector_lines(sectors - 1, last)
    return ("bios_disk: INT 13h extended read from disk 0x80\n"
            f"bios_disk: disk 0x80 has {sectors} sectors of 512 bytes\n"
            + "".join(f"{s}\r\n" for s in lines))


def disk_content(sectors, seed):
    """Disk bytes with a readable first sector and random ones elsewhere."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, sectors * 512, dtype=np.uint8)
    data[:64] = np.frombuffer(f"kjcore test disk {seed}: sector zero".ljust(64, "~").encode(),
                              np.uint8)
    return data.tobytes()


def screen_lines(m):
    return m.vga_text().split("\n")
