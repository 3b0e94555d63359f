"""``kjcore demo --bios``: the seed's use case, calling BIOS code under Linux with kexec jump.

A PC with a resident BIOS (SPEC §14.2) runs the first kernel.  ``examples/bios_e820.elf`` (a C
program on ``bios_call`` from ``examples/bioscall.S``, linked at 0x8000 in the first kernel's
low memory) is loaded with ``KEXEC_PRESERVE_CONTEXT`` as ``kexec -l --load-preserve-context
--args-none --mem-min=0x8000 --mem-max=0xffff`` would, and entered with
``reboot(LINUX_REBOOT_CMD_KEXEC)``.  For each BIOS service it leaves 32-bit physical mode for
real mode, executes INT 15h (E820) or INT 10h (the screen) and comes back; then it returns to
the first kernel through the jump-back entry.  The demo shows the console and the screen,
checks them against ``m.e820``, checks that the first kernel's memory is byte-exact (the low
memory the program used included) and prints what one BIOS call round trip costs.
"""
import os
import statistics
import time

import numpy as np

from ..bios import layout
from ..constants import (
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
)
from ..fuzz.oracle import preserved_mask
from ..loader import load_elf32, preserve_context_backup_segments, sort_segments
from ..machine import Machine
from .grammar import UsageError

#: the example program, in the source tree (examples/ is not part of the installed package)
PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "examples", "bios_e820.elf")
#: bios.ld links the program here; the load window kjexec is given
WINDOW = (0x8000, 0xFFFF)
_TYPES = {layout.E820_RAM: "usable", layout.E820_RESERVED: "reserved"}


def firmware_mask(ram_size):
    """The bytes the BIOS's INT 10h owns and writes: the text screen and the BDA's cursor words.

    They are the BIOS's, not the first kernel's, so the byte-exact check leaves them out."""
    mask = np.zeros(ram_size, dtype=bool)
    screen = 2 * layout.TEXT_COLUMNS * layout.TEXT_ROWS
    mask[layout.VGA_TEXT_BASE:layout.VGA_TEXT_BASE + screen] = True
    mask[layout.BDA_CURSOR:layout.BDA_CURSOR + 16] = True
    return mask


def expected_lines(e820):
    """What bios_e820 prints for each entry of ``e820``."""
    return [f"e820: {base:016x}-{base + size - 1:016x} {_TYPES.get(kind, 'other')}"
            for base, size, kind in e820]


class RoundTrips:
    """A research hook on INT 10h: the guest steps (``cpu.tsc``) and the wall time between a
    cursor query (AH=03h) and the write string (AH=13h) that follows it in ``screen_write``:
    one ``bios_call`` round trip, PM -> real mode -> INT 10h -> PM, plus a few instructions
    of C between the two calls."""

    def __init__(self):
        self.steps, self.seconds, self._last = [], [], None

    def __call__(self, cpu):
        ah = (cpu.eax >> 8) & 0xFF
        now = (cpu.tsc, time.perf_counter())
        if ah == 0x13 and self._last is not None:
            self.steps.append(now[0] - self._last[0])
            self.seconds.append(now[1] - self._last[1])
        self._last = now if ah == 0x03 else None
        return False                            # the built-in service runs


def _box(lines, width):
    bar = "+" + "-" * width + "+"
    return [bar] + [f"|{s:<{width}}|" for s in lines] + [bar]


def run(ram_size, engine="emulated", pae=False):
    """The demo; returns a process exit code (0 when every check passed)."""
    if not os.path.exists(PROGRAM):
        raise UsageError(f"kjcore demo --bios runs {PROGRAM} from the kjcore source tree, "
                         "which is not there")
    try:
        m = Machine(ram_size, engine=engine, pae=pae, fix_pae_return=pae, bios=True)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"A PC: {ram_size >> 20} MiB of RAM, the first kernel running, a resident BIOS (ROM at "
          f"{layout.ROM_BASE:#x}, IVT, BDA, EBDA).  Its memory map, m.e820:")
    for line in expected_lines(m.e820):
        print("  " + line[6:])
    with open(PROGRAM, "rb") as f:
        image = load_elf32(f.read())
    backups = preserve_context_backup_segments(image.segments, *WINDOW, m.ram_size)
    segments = sort_segments(image.segments + backups)
    print(f"\nkexec -l --load-preserve-context --args-none --mem-min={WINDOW[0]:#x} "
          f"--mem-max={WINDOW[1]:#x} examples/bios_e820.elf\n"
          "  (bios_call from examples/bioscall.S; the whole program lies below 64 KiB, in "
          "memory the first kernel owns)")
    for s in segments:
        print(f"  {s}")
    m.kexec_load(image.entry, segments, KEXEC_PRESERVE_CONTEXT)
    print(f"  {m.kexec_image}")
    keep = preserved_mask(m, m.kexec_image) & ~firmware_mask(m.ram_size)
    before = m.ram.copy()
    trips = RoundTrips()
    m.bios.on_service(0x10, trips)
    print("\nreboot(LINUX_REBOOT_CMD_KEXEC): the relocation routine swaps the program in and "
          "calls it in physical mode;\nfor each INT it leaves protected mode, runs the BIOS in "
          "real mode and comes back.")
    t0 = time.perf_counter()
    m.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC)
    wall = time.perf_counter() - t0
    r = m.last_result
    console = r.debugcon.decode("latin-1")
    print("debug console (port 0xE9):")
    for line in console.splitlines():
        print("  " + line.rstrip("\r"))
    lines = expected_lines(m.e820)
    screen = m.vga_text().split("\n")
    used = max((i + 1 for i, s in enumerate(screen) if s), default=0)
    print(f"VGA text screen at {layout.VGA_TEXT_BASE:#x} (m.vga_text(), the first {used} of "
          f"{layout.TEXT_ROWS} rows):")
    for line in _box(screen[:used], layout.TEXT_COLUMNS):
        print("  " + line)
    checks = {
        "console lists m.e820": all(f"{s}\r\n" in console for s in lines)
        and console.endswith(f"bios_e820: {len(lines)} entries\n"),
        "screen lists m.e820": screen[:len(lines)] == lines,
        "first kernel's memory byte-exact (the low memory the program used included)":
            bool(np.array_equal(m.ram[keep], before[keep])),
        "back in the first kernel": m.state == "kernel",
    }
    print(f"\nchecks after {r.steps} guest steps, {r.pages_swapped} pages swapped, "
          f"{1e3 * wall:.1f} ms:")
    for name, ok in checks.items():
        print(f"  {name}: {'yes' if ok else 'NO'}")
    if trips.steps:
        print(f"one BIOS call round trip (PM -> real mode -> INT 10h -> PM): "
              f"{min(trips.steps)} guest instructions, "
              f"{1e6 * statistics.median(trips.seconds):.0f} us (median of {len(trips.steps)}; "
              "the BIOS service runs in Python)")
    ok = all(checks.values()) and bool(trips.steps)
    print(f"summary: all checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1
