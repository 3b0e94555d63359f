"""INT 13h (SPEC §14.2, §15) against a plain-Python model of CHS/LBA and the disk address
packet; hostile calls give BIOS status codes, never host errors."""
import struct

import numpy as np
import pytest
from bios_world import Disk, call, world

from kjcore.bios import disk as D

CF = 0x0001
SECTORS = 16 * 63 * 3 + 5                 # three cylinders and a partial one


def ah(cpu):
    return (cpu.eax >> 8) & 0xFF


def model_lba(c, h, s):
    return c * 16 * 63 + h * 63 + (s - 1)


def chs_regs(c, h, s):
    return dict(ecx=(c & 0xFF) << 8 | (c >> 8) << 6 | s, edx=h << 8 | 0x80)


def test_parameters_type_and_extensions():
    bios, cpu = world(disks=[Disk(SECTORS), Disk(100)])
    _, flags = call(bios, cpu, 0x13, eax=0x0800, edx=0x80)
    assert not flags & CF and ah(cpu) == 0
    cl, ch = cpu.ecx & 0xFF, cpu.ecx >> 8 & 0xFF
    assert (ch | (cl & 0xC0) << 2, cl & 0x3F) == (2, 63)          # max cylinder 2 (of 3)
    assert (cpu.edx >> 8 & 0xFF, cpu.edx & 0xFF) == (15, 2)        # max head, drive count
    _, flags = call(bios, cpu, 0x13, eax=0x1500, edx=0x80)
    assert ah(cpu) == 3 and ((cpu.ecx & 0xFFFF) << 16 | cpu.edx & 0xFFFF) == 3 * 16 * 63
    _, flags = call(bios, cpu, 0x13, eax=0x4100, ebx=0x55AA, edx=0x80)
    assert not flags & CF and cpu.ebx & 0xFFFF == 0xAA55 and ah(cpu) == 0x30
    _, flags = call(bios, cpu, 0x13, eax=0x4100, ebx=0x1234, edx=0x80)
    assert flags & CF and ah(cpu) == D.EPARAM
    _, flags = call(bios, cpu, 0x13, eax=0x0000, edx=0x80)
    assert not flags & CF and ah(cpu) == 0
    bios.ram[0x2000:0x2002] = np.frombuffer(struct.pack("<H", 0x1E), dtype=np.uint8)
    _, flags = call(bios, cpu, 0x13, eax=0x4800, edx=0x81, ds=0x200, esi=0)
    size, info, cyl, heads, spt, total, bps = struct.unpack(
        "<HHIIIQH", bios.ram[0x2000:0x201A].tobytes())
    assert not flags & CF and (size, cyl, heads, spt, total, bps) == (0x1A, 1, 16, 63, 100, 512)
    bios.ram[0x2000:0x2002] = np.frombuffer(struct.pack("<H", 0x10), dtype=np.uint8)
    _, flags = call(bios, cpu, 0x13, eax=0x4800, edx=0x81, ds=0x200, esi=0)
    assert flags & CF and ah(cpu) == D.EPARAM


@pytest.mark.parametrize("c, h, s, n", [(0, 0, 1, 1), (1, 5, 17, 3), (2, 15, 63, 1),
                                        (0, 0, 63, 128)])
def test_chs_read_and_write_match_the_model(c, h, s, n):
    disk = Disk(SECTORS)
    bios, cpu = world(disks=[disk])
    _, flags = call(bios, cpu, 0x13, eax=0x0200 | n & 0xFF, ebx=0, es=0x1000, **chs_regs(c, h, s))
    lba = model_lba(c, h, s)
    assert not flags & CF and ah(cpu) == 0 and cpu.eax & 0xFF == n & 0xFF
    assert bios.ram[0x10000:0x10000 + n * 512].tobytes() == disk.read(lba, n)
    bios.ram[0x20000:0x20000 + n * 512] = 0x5A
    _, flags = call(bios, cpu, 0x13, eax=0x0300 | n & 0xFF, ebx=0, es=0x2000,
                    **chs_regs(c, h, s))
    assert not flags & CF and disk.read(lba, n) == b"\x5a" * (n * 512)


@pytest.mark.parametrize("eax, regs, code", [
    (0x0201, dict(edx=0x81), D.EPARAM),                                 # no such drive
    (0x0201, dict(edx=0x00), D.EPARAM),                                 # floppy: none
    (0x0200, chs_regs(0, 0, 1), D.EPARAM),                              # zero sectors
    (0x0281, chs_regs(0, 0, 1), D.EPARAM),                              # 129 sectors
    (0x0201, chs_regs(0, 0, 0), D.EPARAM),                              # sector 0
    (0x0201, chs_regs(0, 16, 1), D.EPARAM),                             # head 16
    (0x0201, chs_regs(3, 0, 1), D.EPARAM),                              # past the geometry
    (0x0280, dict(ebx=0xC000, **chs_regs(0, 0, 1)), D.EBOUNDARY),       # wraps at 64 KiB
])
def test_hostile_chs_calls(eax, regs, code):
    disk = Disk(SECTORS)
    before = bytes(disk.data)
    bios, cpu = world(disks=[disk])
    ram_before = bios.ram.copy()
    regs.setdefault("ebx", 0)
    _, flags = call(bios, cpu, 0x13, eax=eax, es=0x1000, **regs)
    assert flags & CF and ah(cpu) == code
    assert bytes(disk.data) == before
    assert np.array_equal(bios.ram[0x10000:0x30000], ram_before[0x10000:0x30000])


def test_read_only_disk_refuses_writes():
    disk = Disk(SECTORS, readonly=True)
    bios, cpu = world(disks=[disk])
    _, flags = call(bios, cpu, 0x13, eax=0x0301, ebx=0, es=0x1000, **chs_regs(0, 0, 1))
    assert flags & CF and ah(cpu) == D.EWRITEPROTECT


def dap(bios, count, segment, offset, lba, size=0x10, flat=0):
    raw = struct.pack("<BBHHHQQ", size, 0, count, offset, segment, lba, flat)
    bios.ram[0x3000:0x3018] = np.frombuffer(raw, dtype=np.uint8)


def dap_count(bios):
    return int(bios.ram[0x3002]) | int(bios.ram[0x3003]) << 8


@pytest.mark.parametrize("lba, n", [(0, 1), (1000, 5), (SECTORS - 127, 127)])
def test_packet_read_and_write_match_the_model(lba, n):
    disk = Disk(SECTORS)
    bios, cpu = world(disks=[disk])
    dap(bios, n, 0x1000, 0, lba)
    _, flags = call(bios, cpu, 0x13, eax=0x4200, edx=0x80, ds=0x300, esi=0)
    assert not flags & CF and dap_count(bios) == n
    assert bios.ram[0x10000:0x10000 + n * 512].tobytes() == disk.read(lba, n)
    bios.ram[0x10000:0x10000 + n * 512] = 0xA5
    _, flags = call(bios, cpu, 0x13, eax=0x4300, edx=0x80, ds=0x300, esi=0)
    assert not flags & CF and disk.read(lba, n) == b"\xa5" * (n * 512)


def test_packet_flat_buffer_above_1_mib():
    disk = Disk(SECTORS)
    bios, cpu = world(disks=[disk])
    dap(bios, 4, 0xFFFF, 0xFFFF, 7, size=0x18, flat=0x180000)
    _, flags = call(bios, cpu, 0x13, eax=0x4200, edx=0x80, ds=0x300, esi=0)
    assert not flags & CF and bios.ram[0x180000:0x180800].tobytes() == disk.read(7, 4)


@pytest.mark.parametrize("count, segment, offset, lba, size, flat, code", [
    (1, 0x1000, 0, 0, 0x0F, 0, D.EPARAM),                  # packet too short
    (128, 0x1000, 0, 0, 0x10, 0, D.EPARAM),                # too many sectors
    (0xFFFF, 0x1000, 0, 0, 0x10, 0, D.EPARAM),             # a huge count
    (1, 0x1000, 0, SECTORS, 0x10, 0, D.EPARAM),            # LBA past the disk
    (2, 0x1000, 0, SECTORS - 1, 0x10, 0, D.EPARAM),        # range past the disk
    (1, 0x1000, 0, 2**64 - 1, 0x10, 0, D.EPARAM),          # a wrapping LBA
    (2, 0x1000, 0xFE00, 0, 0x10, 0, D.EBOUNDARY),          # wraps at 64 KiB
    (8, 0xFFFF, 0x0010, 0, 0x10, 0, D.EBOUNDARY),          # crosses 1 MiB (HMA)
    (16, 0xF800, 0x7E00, 0, 0x10, 0, D.EBOUNDARY),         # crosses 1 MiB
    (4, 0xFFFF, 0xFFFF, 0, 0x18, (2 << 20) - 1024, D.EBOUNDARY),   # flat buffer leaves RAM
    (4, 0xFFFF, 0xFFFF, 0, 0x18, 2**64 - 512, D.EBOUNDARY),        # flat buffer wraps
])
def test_hostile_packets(count, segment, offset, lba, size, flat, code):
    disk = Disk(SECTORS)
    before = bytes(disk.data)
    bios, cpu = world(disks=[disk])
    dap(bios, count, segment, offset, lba, size, flat)
    ram_before = bios.ram.copy()
    for fn in (0x42, 0x43):
        dap(bios, count, segment, offset, lba, size, flat)
        _, flags = call(bios, cpu, 0x13, eax=fn << 8, edx=0x80, ds=0x300, esi=0)
        assert flags & CF and ah(cpu) == code and dap_count(bios) == 0
        assert bytes(disk.data) == before
    changed = np.flatnonzero(bios.ram != ram_before)
    assert set(changed) <= {0x3002, 0x3003} | set(range(0x7FFA, 0x8000))   # count, stack


def test_packet_zero_count_does_nothing():
    bios, cpu = world(disks=[Disk(SECTORS)])
    dap(bios, 0, 0x1000, 0, 0)
    _, flags = call(bios, cpu, 0x13, eax=0x4200, edx=0x80, ds=0x300, esi=0)
    assert not flags & CF and ah(cpu) == 0


def test_packet_wrapping_inside_its_segment_is_read_as_real_mode_does():
    # DS:SI = 0300:FFF8: the packet's tail wraps to 0300:0000, as a 16-bit offset does.
    disk = Disk(SECTORS)
    bios, cpu = world(disks=[disk])
    raw = struct.pack("<BBHHHQ", 0x10, 0, 1, 0, 0x1000, 9)
    bios.ram[0x3000 + 0xFFF8:0x3000 + 0x10000] = np.frombuffer(raw[:8], dtype=np.uint8)
    bios.ram[0x3000:0x3008] = np.frombuffer(raw[8:], dtype=np.uint8)
    _, flags = call(bios, cpu, 0x13, eax=0x4200, edx=0x80, ds=0x300, esi=0xFFF8)
    assert not flags & CF and bios.ram[0x10000:0x10200].tobytes() == disk.read(9, 1)
