"""``kjcore demo``: kexec jump end to end on a simulated i386 machine.

Loads a small physical-mode program with ``KEXEC_PRESERVE_CONTEXT``, prints the kimage as the
kernel stored it (the indirection list decoded from simulated RAM, control and swap page, a
compact memory map), then jumps into it and back N times with ``reboot(LINUX_REBOOT_CMD_KEXEC)``:
each time the relocation routine (i386 code on kjcore's CPU) swaps the image in, calls it in
physical mode, the program prints a line on the debug console (port 0xE9) and calls the
jump-back entry, and the routine swaps the first kernel's memory back.  After every return the
demo checks that every byte of the first kernel's memory is restored (SPEC §12 invariant 8).
"""
import time

import numpy as np

from .. import plot
from ..constants import (
    KEXEC_PRESERVE_CONTEXT,
    LINUX_REBOOT_CMD_KEXEC,
    LINUX_REBOOT_MAGIC1,
    LINUX_REBOOT_MAGIC2,
    MAX_RAM_SIZE,
    PAGE_SIZE,
)
from ..fuzz.oracle import preserved_mask
from ..inspect import STRIP_CHARS, memory_strip
from ..kimage import flag_name
from ..machine import Machine
from ..segment import Segment
from . import demo_bios
from .grammar import COUNT, RAM_SIZE, Parser, UsageError, number

# The physical-mode program, a peer of the first kernel (SPEC §7.8-7.9).  On entry [ESP] is
# the jump-back entry; it prints its message, then calls the jump-back entry, so its own
# re-entry point is the instruction after that call, where it picks up the (same) jump-back
# entry again and loops:
#        mov  (%esp), %ebx          # jump-back entry
#   1:   mov  $msg, %esi
#   2:   lodsb ; test %al, %al ; jz 3f ; out %al, $0xe9 ; jmp 2b
#   3:   call *%ebx                 # back to the first kernel
#        mov  (%esp), %ebx          # entered again: the routine called us anew
#        jmp  1b
PAYLOAD_AT = 0x100000
_MSG_AT = 32
_CODE = (bytes([0x8B, 0x1C, 0x24, 0xBE]) + (PAYLOAD_AT + _MSG_AT).to_bytes(4, "little")
         + bytes([0xAC, 0x84, 0xC0, 0x74, 0x04, 0xE6, 0xE9, 0xEB, 0xF7, 0xFF, 0xD3,
                  0x8B, 0x1C, 0x24, 0xEB, 0xEB]))
PAYLOAD = _CODE.ljust(_MSG_AT, b"\x90") + b"hello from physical mode\n\0"


#: ``kjcore demo --help``'s description (plain text: argparse prints it as it is)
_DESCRIPTION = ("Kexec jump end to end on a simulated i386 machine: load a physical-mode "
                "program with KEXEC_PRESERVE_CONTEXT, show the kimage as the kernel stored it, "
                "then jump into it and back, checking after every return that the first "
                "kernel's memory is restored.")


def main(argv=None):
    """Run the demo; returns a process exit code (0 when every check passed)."""
    ap = Parser(prog="kjcore demo", description=_DESCRIPTION)
    ap.add_argument("--ram", type=RAM_SIZE, default=64 << 20,
                    help="RAM size (default 64M, at most 1G)")
    ap.add_argument("--image-size", type=number(PAGE_SIZE, MAX_RAM_SIZE, size=True),
                    help="image memsz, rounded up to pages (default 1M)")
    ap.add_argument("--jumps", type=COUNT, help="round trips (default 5)")
    ap.add_argument("--engine", default="emulated", choices=["emulated", "native"],
                    help="swap on the CPU (emulated, default) or by _swap.pyx (native)")
    ap.add_argument("--pae", action="store_true", help="PAE first kernel (with fix_pae_return)")
    ap.add_argument("--bios", action="store_true", help="call the BIOS from a physical-mode "
                    "program instead (examples/bios_e820.elf; uses --ram, --engine, --pae)")
    ap.add_argument("--plot", metavar="FILE", help="draw the memory map after the jumps "
                    "(.png/.svg/.pdf; needs matplotlib)")
    args = ap.parse_args(argv)
    if args.bios:
        if args.jumps or args.image_size or args.plot:
            raise UsageError("--jumps, --image-size and --plot do not apply to --bios")
        return demo_bios.run(args.ram, args.engine, args.pae)
    if args.plot:
        plot.check_target(args.plot)
    args.jumps, args.image_size = args.jumps or 5, args.image_size or 1 << 20
    ram_size, image_size = args.ram, args.image_size
    try:
        m = Machine(ram_size, engine=args.engine, pae=args.pae, fix_pae_return=args.pae)
    except ValueError as e:
        raise UsageError(str(e)) from None
    rng = np.random.default_rng(0)
    lo = m.kernel_reserved
    m.ram[lo:] = rng.integers(0, 256, m.ram_size - lo, dtype=np.uint8)   # the kernel's data
    segments = [Segment(PAYLOAD, PAYLOAD_AT, -(-image_size // PAGE_SIZE) * PAGE_SIZE)]
    print(f"kexec_load(entry={PAYLOAD_AT:#x}, {segments}, KEXEC_PRESERVE_CONTEXT)")
    m.kexec_load(PAYLOAD_AT, segments, KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    print(img)
    entries = list(img.entries())
    print(f"indirection list in RAM: {len(entries)} words, "
          f"{len(img.indirection_pages())} indirection page(s)")
    for flag, addr in entries[:5]:
        print(f"  {flag_name(flag):<12} {addr:#010x}")
    if len(entries) > 7:
        print(f"  ... {len(entries) - 7} more ...")
    for flag, addr in entries[-2:] if len(entries) > 5 else []:
        print(f"  {flag_name(flag):<12} {addr:#010x}")
    strip, cell = memory_strip(m)
    legend = ", ".join(f"{char} {kind}" for kind, char in STRIP_CHARS.items())
    print(f"memory map ({cell // 1024} KiB per cell; {legend}):\n  {strip}")

    keep = preserved_mask(m, img)
    before = m.ram.copy()
    ok = True
    times, steps, pages = [], 0, 0
    for n in range(1, args.jumps + 1):
        t0 = time.perf_counter()
        m.reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC)
        times.append(time.perf_counter() - t0)
        r = m.last_result
        steps += r.steps
        pages += r.pages_swapped
        restored = np.array_equal(m.ram[keep], before[keep])
        ok &= restored and r.debugcon == PAYLOAD[_MSG_AT:-1]
        print(f"jump {n}: guest said {r.debugcon.decode().strip()!r}, {r.steps} steps, "
              f"{r.pages_swapped} pages swapped, re-entry {r.start:#x}, first kernel's "
              f"memory restored: {'yes' if restored else 'NO'} ({1e3 * times[-1]:.1f} ms)")
    later = times[1:] or times
    print(f"summary: {args.jumps} round trips, {steps} guest steps, {pages} pages "
          f"swapped, {1e3 * sum(later) / len(later):.2f} ms per jump after the first "
          f"(engine={args.engine}); all checks {'passed' if ok else 'FAILED'}")
    if args.plot:
        plot.save_memory_map(m, args.plot, title="kjcore demo: the image loaded, after the jumps")
        print(f"memory map drawn to {args.plot}")
    return 0 if ok else 1
