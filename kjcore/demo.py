"""``kjcore demo``: the load side of kexec jump, end to end, on a simulated machine.

Loads a small physical-mode image with ``KEXEC_PRESERVE_CONTEXT``, prints the kimage as the
kernel stored it (the indirection list decoded from simulated RAM, control and swap page, a
compact memory map), then performs the two swap phases of a jump — the image's pages swapped in
over the first kernel's, then swapped back — with the native engine, and verifies that every
byte of the first kernel's memory is restored.
"""
import argparse
import time

import numpy as np

from .constants import KEXEC_PRESERVE_CONTEXT, PAGE_SIZE
from .kimage import flag_name
from .machine import Machine
from .segment import Segment
from .swap import swap_pages

# A tiny physical-mode program: print "kjcore\n" on the debug console (port 0xE9) and return.
#   mov $msg, %esi ; 1: lodsb ; test %al,%al ; jz 2f ; out %al,$0xe9 ; jmp 1b ; 2: ret
PAYLOAD_AT = 0x100000
_CODE = bytes([0xBE]) + (PAYLOAD_AT + 16).to_bytes(4, "little") + bytes(
    [0xAC, 0x84, 0xC0, 0x74, 0x04, 0xE6, 0xE9, 0xEB, 0xF7, 0xC3])
PAYLOAD = _CODE.ljust(16, b"\x90") + b"kjcore\n\0"


def parse_size(text):
    """``'64M'`` -> 67108864 (suffixes K, M, G; plain numbers are bytes)."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text[:-1] if scale > 1 else text, 0) * scale


def memory_map(m, img):
    """A compact map of the machine's RAM: one character per ``cell`` bytes."""
    cell = max(PAGE_SIZE, m.ram_size // 64)
    legend = np.full(m.ram_size // cell, ".", dtype="<U1")
    legend[: m.kernel_reserved // cell] = "K"
    for s in img.segments:
        legend[s.mem // cell:(s.mem + s.memsz + cell - 1) // cell] = "D"
    for p in img.source_pages().tolist():
        if legend[p // cell] not in "D":
            legend[p // cell] = "s"
    for p in img.indirection_pages().tolist():
        legend[p // cell] = "i"
    legend[img.control_page // cell] = "C"
    legend[img.swap_page // cell] = "W"
    return "".join(legend), cell


def main(argv=None):
    """Run the demo; returns a process exit code (0 when the first kernel's memory is restored)."""
    ap = argparse.ArgumentParser(prog="kjcore demo", description=__doc__.splitlines()[0])
    ap.add_argument("--ram", default="64M", help="RAM size (default 64M)")
    ap.add_argument("--image-size", default="1M", help="image memsz (default 1M)")
    ap.add_argument("--engine", default="native", choices=["native", "numba", "reference"])
    args = ap.parse_args(argv)
    ram_size, image_size = parse_size(args.ram), parse_size(args.image_size)

    m = Machine(ram_size)
    rng = np.random.default_rng(0)
    m.ram[:] = rng.integers(0, 256, m.ram_size, dtype=np.uint8)     # the first kernel's data
    segments = [Segment(PAYLOAD, PAYLOAD_AT, -(-image_size // PAGE_SIZE) * PAGE_SIZE)]
    print(f"kexec_load(entry={PAYLOAD_AT:#x}, {segments}, KEXEC_PRESERVE_CONTEXT)")
    m.kexec_load(PAYLOAD_AT, segments, KEXEC_PRESERVE_CONTEXT)
    img = m.kexec_image
    print(img)
    entries = list(img.entries())
    print(f"indirection list in RAM: {len(entries)} words, "
          f"{len(img.indirection_pages())} indirection page(s)")
    for flag, addr in entries[:6]:
        print(f"  {flag_name(flag):<12} {addr:#010x}")
    if len(entries) > 8:
        print(f"  ... {len(entries) - 8} more ...")
    for flag, addr in entries[-2:] if len(entries) > 6 else []:
        print(f"  {flag_name(flag):<12} {addr:#010x}")
    mmap, cell = memory_map(m, img)
    print(f"memory map ({cell // 1024} KiB per cell; K kernel, D destinations, s sources, "
          f"i indirection, C control, W swap):\n  {mmap}")

    before = m.ram.copy()
    t0 = time.perf_counter()
    n_in = swap_pages(m.ram, img.head, img.swap_page, args.engine)
    t1 = time.perf_counter()
    image_ok = bytes(m.ram[PAYLOAD_AT:PAYLOAD_AT + len(PAYLOAD)]) == PAYLOAD
    n_out = swap_pages(m.ram, img.head, img.swap_page, args.engine)
    t2 = time.perf_counter()
    keep = np.ones(m.ram_size, dtype=bool)
    keep[img.swap_page:img.swap_page + PAGE_SIZE] = False        # scratch of the routine
    restored = np.array_equal(m.ram[keep], before[keep])
    mib = n_in * PAGE_SIZE / (1 << 20)
    print(f"swap in : {n_in} pages ({mib:.1f} MiB) in {1e3 * (t1 - t0):.2f} ms, "
          f"image at its destination: {'yes' if image_ok else 'NO'}")
    print(f"swap out: {n_out} pages in {1e3 * (t2 - t1):.2f} ms "
          f"({3 * 2 * mib / max(t2 - t0, 1e-9):.0f} MiB/s copied, engine={args.engine})")
    print(f"first kernel's memory restored byte for byte: {'yes' if restored else 'NO'}")
    return 0 if restored and image_ok else 1
