"""Helpers for the CPU tests: an assembler and a small protected-mode world."""
import functools
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pytest

from kjcore.cpu import CPU

HAVE_AS = shutil.which("as") is not None and shutil.which("objcopy") is not None


@functools.lru_cache(maxsize=None)
def asm(source, code16=False):
    """Assemble AT&T-syntax i386 code with GNU as (tests needing it skip without it)."""
    if not HAVE_AS:
        pytest.skip("GNU as/objcopy not available")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.s")
        with open(src, "w") as f:
            f.write((".code16\n" if code16 else ".code32\n") + source + "\n")
        subprocess.run(["as", "--32", "-o", f"{d}/t.o", src], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", f"{d}/t.o", f"{d}/t.bin"],
                       check=True, capture_output=True)
        with open(f"{d}/t.bin", "rb") as f:
            return f.read()


def descriptor(base, limit, access, flags):
    """8-byte segment descriptor (limit in units given by G in ``flags``)."""
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (limit & 0xF0000) | (flags << 20) \
        | (base & 0xFF000000)
    return struct.pack("<II", lo, hi)


def gate(offset, selector, typ=0xE, dpl=0, present=True):
    lo = (offset & 0xFFFF) | (selector << 16)
    hi = (offset & 0xFFFF0000) | ((0x80 if present else 0) | (dpl << 5) | typ) << 8
    return struct.pack("<II", lo, hi)


GDT, IDT, TSS = 0x500, 0x800, 0x600
HANDLERS = 0x2000          # handler for vector v at HANDLERS + 16 * v: "hlt"
KSTACK = 0x9000
USTACK = 0xA000
SELECTORS = dict(code0=0x08, data0=0x10, code3=0x1B, data3=0x23, tss=0x28, small=0x30,
                 code16=0x38, expdown=0x40, rodata=0x48, data0_dpl0_only=0x50)


class World:
    """RAM with a GDT, an IDT whose handlers all halt, a TSS, and a CPU at ring 0."""

    def __init__(self, ram_size=1 << 20):
        self.ram = np.zeros(ram_size, np.uint8)
        gdt = b"".join([
            bytes(8),
            descriptor(0, 0xFFFFF, 0x9B, 0xC),       # 0x08 ring-0 code
            descriptor(0, 0xFFFFF, 0x93, 0xC),       # 0x10 ring-0 data
            descriptor(0, 0xFFFFF, 0xFB, 0xC),       # 0x18 ring-3 code
            descriptor(0, 0xFFFFF, 0xF3, 0xC),       # 0x20 ring-3 data
            descriptor(TSS, 0x67, 0x89, 0x0),        # 0x28 32-bit TSS
            descriptor(0, 0xFFF, 0x93, 0x4),         # 0x30 data, byte limit 0xFFF
            descriptor(0, 0xFFFF, 0x9B, 0x0),        # 0x38 16-bit code
            descriptor(0, 0xFFF, 0x97, 0x4),         # 0x40 expand-down data (B=1)
            descriptor(0, 0xFFFFF, 0x91, 0xC),       # 0x48 read-only data
            descriptor(0, 0xFFFFF, 0x93, 0xC),       # 0x50 ring-0 data
        ])
        self.put(GDT, gdt)
        for v in range(256):
            self.put(IDT + 8 * v, gate(HANDLERS + 16 * v, 0x08))
            self.put(HANDLERS + 16 * v, b"\xf4")
        self.put(TSS + 4, struct.pack("<II", KSTACK, 0x10))     # ESP0, SS0
        self.cpu = CPU(self.ram)
        c = self.cpu
        c.gdtr.base, c.gdtr.limit = GDT, len(gdt) - 1
        c.idtr.base, c.idtr.limit = IDT, 256 * 8 - 1
        c.load_segment("tr", 0x28, TSS, 0x67, 0x8B, 0)
        c.esp = KSTACK

    def put(self, addr, data):
        self.ram[addr:addr + len(data)] = np.frombuffer(bytes(data), np.uint8)

    def word(self, addr):
        return int.from_bytes(self.ram[addr:addr + 4].tobytes(), "little")

    def load(self, code, at=0x1000):
        self.put(at, code)
        self.cpu.eip = at
        return self.cpu

    def to_ring3(self):
        c = self.cpu
        c.load_segment("cs", 0x1B, 0, 0xFFFFFFFF, 0xFB, 0xC)
        for s in ("ds", "es", "ss"):
            c.load_segment(s, 0x23, 0, 0xFFFFFFFF, 0xF3, 0xC)
        c.esp = USTACK

    def handler_of(self, cpu):
        """Vector whose handler the CPU halted in (None if elsewhere)."""
        off = cpu.eip - 1 - HANDLERS
        return off // 16 if 0 <= off < 256 * 16 and off % 16 == 0 else None
