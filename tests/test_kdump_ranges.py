"""kexec-tools 2.0.1's crash-load rules: memory ranges, memmap=, hole placement, and the ELF
core header's PT_LOADs (896 MiB low-memory split)."""
import io

import pytest
from elftools.elf.elffile import ELFFile

import kjcore
from kjcore import KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT
from kjcore.errors import LoaderError
from kjcore.kdump.elfcorehdr import LOWMEM_LIMIT, LoadRange, build_elfcorehdr
from kjcore.kdump.ranges import (
    LoaderDie,
    MemoryMap,
    Range,
    append_option,
    crash_memory_ranges,
    iomem,
)
from kjcore.linux_load import locate_hole, plan_linux_load
from kjcore.loader import load_flat
from kjcore.segment import Segment

MiB = 1 << 20


def test_iomem_with_and_without_a_bios():
    ram, crash = iomem(kjcore.Machine(64 * MiB, crashkernel=(16 * MiB, 16 * MiB), bios=True))
    assert ram == [Range(0, 0x9FBFF), Range(MiB, 64 * MiB - 1)]
    assert crash == Range(16 * MiB, 32 * MiB - 1)
    ram, crash = iomem(kjcore.Machine(64 * MiB))
    assert ram == [Range(0, 0x9FFFF), Range(0xA0000, 64 * MiB - 1)] and crash is None


def test_crash_ranges_split_low_memory_and_leave_out_the_crash_region():
    ram = [Range(0, 0x9FBFF), Range(MiB, 1024 * MiB - 1)]
    crash = Range(16 * MiB, 32 * MiB - 1)
    ranges, reserved = crash_memory_ranges(ram, crash, KEXEC_ON_CRASH, 0xFFFFFFFF)
    assert reserved == crash
    assert ranges == [Range(0, 0x9FFFF), Range(MiB, 16 * MiB - 1),
                      Range(32 * MiB, LOWMEM_LIMIT - 1), Range(LOWMEM_LIMIT, 1024 * MiB - 1)]
    ranges, reserved = crash_memory_ranges(ram, crash, KEXEC_PRESERVE_CONTEXT, 48 * MiB - 1)
    assert reserved == Range(MiB, 48 * MiB - 1)
    assert ranges == [Range(48 * MiB, LOWMEM_LIMIT - 1), Range(LOWMEM_LIMIT, 1024 * MiB - 1)]
    with pytest.raises(LoaderDie, match="crashkernel is not reserved"):
        crash_memory_ranges(ram, None, KEXEC_ON_CRASH, 0xFFFFFFFF)


def test_high_memory_has_no_virtual_address():
    loads = [LoadRange(0, 0, 0xA0000), LoadRange(LOWMEM_LIMIT, LOWMEM_LIMIT, 128 * MiB)]
    for elf_class, minus_one in ((1, 0xFFFFFFFF), (2, 0xFFFFFFFFFFFFFFFF)):
        elf = ELFFile(io.BytesIO(build_elfcorehdr([(0x5400, 1024)], loads,
                                                  elf_class=elf_class)))
        assert [p["p_vaddr"] for p in elf.iter_segments()] == [0, 0xC0000000, minus_one]


def test_memory_map_options():
    mm = MemoryMap()
    mm.add(0, 0xA0000)
    mm.add(16 * MiB, 16 * MiB)
    mm.delete(32 * MiB - 0xA0000, 0xA0000)
    mm.delete(16 * MiB + 0x1000, 0x400)          # a 4 KiB sliver below: under 100 KiB, not listed
    assert mm.options() == (" memmap=exactmap memmap=640K@0K "
                            f"memmap={(16 * MiB - 0xA0000 - 0x1400) // 1024}K@"
                            f"{(16 * MiB + 0x1400) // 1024}K")
    with pytest.raises(LoaderError, match="not inside"):
        mm.delete(0xA0000, 0x400)
    with pytest.raises(LoaderError, match="overlaps"):
        mm.add(0x1000, 0x400)
    with pytest.raises(LoaderDie, match="Command line overflow"):
        append_option("x" * 2040, " elfcorehdr=12345K")


def test_locate_hole_first_and_last_fit():
    ram = [Range(0, 0x9FFFF), Range(MiB, 64 * MiB - 1)]
    used = [Segment.zero(0, 0, 0x1000), Segment.zero(0, MiB, 0x3000)]
    assert locate_hole(ram, used, 0x1000, 16, 0, 0xFFFFFFFF, top=False) == 0x1000
    assert locate_hole(ram, used, 0x4000, 0x4000, MiB, 0xFFFFFFFF, top=False) == MiB + 0x4000
    assert locate_hole(ram, used, 0xA0000, 1024, 16 * MiB, 32 * MiB - 1, top=True) == \
        32 * MiB - 0xA0000
    with pytest.raises(LoaderDie, match="locate_hole failed"):
        locate_hole(ram, used, 0x200000, 0x1000, 0, 0x9FFFF, top=False)


def test_plan_refuses_a_crash_load_without_crashkernel():
    m = kjcore.Machine(16 * MiB)
    with pytest.raises(LoaderDie, match="crashkernel is not reserved"):
        plan_linux_load(m, load_flat(b"\xf4", 0x800000), KEXEC_ON_CRASH, b"")
