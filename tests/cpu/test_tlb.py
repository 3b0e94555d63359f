"""The two-way set-associative software TLB (memory.tlb_set/tlb_lookup/tlb_fill).

Whether a translation is still cached is visible architecturally: remap a page in RAM
without a flush and a cached translation keeps using the old frame, a walked one the new.
"""
import numpy as np

from kjcore.cpu import CPU, Status
from kjcore.cpu import state as S

PD, PT = 0x10000, 0x11000            # one page table: 0..4 MiB, 4 KiB pages
RAM = 8 << 20
P, RW = 1, 2


def put(ram, addr, value):
    ram[addr:addr + 4] = np.frombuffer(int(value).to_bytes(4, "little"), np.uint8)


def paged_cpu(code, pages):
    """A CPU with paging on: identity 4 KiB pages for 0..4 MiB, plus ``pages`` (linear page
    -> physical frame) in a second page table for 4..8 MiB; ``code`` at 0x1000."""
    ram = np.zeros(RAM, np.uint8)
    put(ram, PD, PT | P | RW)
    put(ram, PD + 4, PT + 0x1000 | P | RW)
    for i in range(1024):
        put(ram, PT + 4 * i, (i << 12) | P | RW)
    for lin, phys in pages.items():
        put(ram, PT + 4 * (lin >> 12), phys | P | RW)
    ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
    cpu = CPU(ram)
    cpu.cr3 = PD
    cpu.cr0 = 0x80000011
    cpu.eip = 0x1000
    return cpu


# mov eax,[0x400000]; mov ebx,[0x500000]; (x2: loads alternate between the pages);
# then, after the remap, the same two loads into ecx and edx; hlt
STRIDE = bytes.fromhex("a100004000 8b1d00005000 a100004000 8b1d00005000"
                       "8b0d00004000 8b1500005000 f4")


def test_pages_1mib_apart_stay_cached_together():
    """Two buffers 1 MiB apart (pages 256 apart: one slot of a 256-entry direct-mapped
    TLB) are both cached: remapped behind the CPU's back, both still read the old frames."""
    cpu = paged_cpu(STRIDE, {0x400000: 0x600000, 0x500000: 0x601000})
    ram = cpu.ram
    ram[0x600000:0x600004] = 0x11
    ram[0x601000:0x601004] = 0x22
    ram[0x602000:0x602004] = 0x33
    assert cpu.run(4) == Status.STEP_LIMIT
    put(ram, PT + 4 * 0x400, 0x602000 | P | RW)
    put(ram, PT + 4 * 0x500, 0x602000 | P | RW)
    assert cpu.run(10) == Status.HLT
    assert (cpu.ecx, cpu.edx) == (0x11111111, 0x22222222)
    cpu.flush_tlb()                                          # now the new mapping shows
    cpu.eip = 0x1000 + len(STRIDE) - 13
    assert cpu.run(10) == Status.HLT
    assert (cpu.ecx, cpu.edx) == (0x33333333, 0x33333333)


def test_a_third_page_of_the_set_evicts_the_oldest():
    """Three pages in one set: the least recently filled one is walked again, the other
    two still hit (reloaded newest first, so the refill evicts nothing still wanted)."""
    set_of = [(v ^ (v >> 7)) & (S.TLB_SETS - 1) for v in (0x401, 0x401 + 2 * 128 + 1)]
    assert set_of[0] != set_of[1]                            # the index is hashed
    same = [v for v in range(0x400, 0x800) if (v ^ (v >> 7)) & (S.TLB_SETS - 1) == 0][:3]
    code = b"".join(bytes([0x8B, 0x05]) + (v << 12).to_bytes(4, "little") for v in same)
    code += b"".join(bytes([0x8B, 0x0D + 8 * i]) + (v << 12).to_bytes(4, "little")
                     for i, v in enumerate(reversed(same))) + b"\xf4"
    cpu = paged_cpu(code, {v << 12: 0x600000 + 0x1000 * i for i, v in enumerate(same)})
    ram = cpu.ram
    for i in range(4):
        ram[0x600000 + 0x1000 * i:0x600004 + 0x1000 * i] = 0x11 * (i + 1)
    assert cpu.run(3) == Status.STEP_LIMIT
    for v in same:
        put(ram, PT + 4 * (v & 0x3FF) + 0x1000, 0x603000 | P | RW)
    assert cpu.run(10) == Status.HLT
    assert (cpu.ecx, cpu.edx, cpu.ebx) == (0x33333333, 0x22222222, 0x44444444)


def test_invlpg_drops_either_way():
    """INVLPG finds the page in way 0 or way 1 of its set."""
    for first in (0x400000, 0x500000):
        other = 0x900000 - first
        # mov eax,[a]; mov eax,[b]; invlpg [first]; mov ecx,[0x400000]; mov edx,[0x500000]
        code = (bytes([0xA1]) + first.to_bytes(4, "little") + bytes([0xA1])
                + other.to_bytes(4, "little") + bytes([0x0F, 0x01, 0x3D])
                + first.to_bytes(4, "little") + bytes.fromhex("8b0d00004000 8b1500005000 f4"))
        cpu = paged_cpu(code, {0x400000: 0x600000, 0x500000: 0x601000})
        ram = cpu.ram
        ram[0x602000:0x602004] = 0x33
        assert cpu.run(2) == Status.STEP_LIMIT
        put(ram, PT + 4 * 0x400, 0x602000 | P | RW)
        put(ram, PT + 4 * 0x500, 0x602000 | P | RW)
        assert cpu.run(10) == Status.HLT
        fresh, stale = (cpu.ecx, cpu.edx) if first == 0x400000 else (cpu.edx, cpu.ecx)
        assert fresh == 0x33333333 and stale == 0
