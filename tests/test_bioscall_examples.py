"""The BIOS-calling examples through the public API (SPEC §14.3): bios_call goes from the
kexec jump payload's 32-bit physical mode to a real-mode INT and back; what the programs print
is computed from ``m.e820`` and the disk, and the first kernel's memory, including the low
memory the program used as its destination, is byte-exact after the round trip."""
import re

import pytest
from bios_examples import (
    EXAMPLES,
    LOAD_AT,
    PROGRAMS,
    STRING,
    TELETYPE,
    WINDOW_END,
    assert_byte_exact,
    disk_console,
    disk_content,
    e820_console,
    e820_lines,
    first_kernel_mask,
    jump,
    load,
    path,
    screen_lines,
)
from rebuild import assert_same_bytes, make_copy, require_recorded_gcc, require_toolchain

import kjcore
from kjcore.bios import regs
from kjcore.loader import load_elf32

MiB = 1 << 20
SOURCES = ("Makefile", "bios.ld", "bioscall.S", "bioscall.h", "biosprint.c", "biosprint.h",
           "bios_e820.c", "bios_tty.c", "bios_disk.c", "bios_roundtrip.c")


def test_rebuild_is_byte_identical(tmp_path):
    require_toolchain(tmp_path)
    require_recorded_gcc(path("Makefile"), "the examples")
    build = make_copy(tmp_path, EXAMPLES, SOURCES, ["bios"])
    assert_same_bytes(build, EXAMPLES, PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_linked_below_64k(name):
    with open(path(name), "rb") as f:
        image = load_elf32(f.read())
    (seg,) = image.segments
    assert image.entry == seg.mem == LOAD_AT and seg.mem + seg.memsz <= WINDOW_END + 1


def _run(m, name):
    load(m, name)
    keep = first_kernel_mask(m)
    before = m.ram.copy()
    assert jump(m) == 0 and m.state == "kernel"
    assert_byte_exact(before, m.ram, keep)
    return m.debugcon.decode("latin-1")


@pytest.mark.parametrize("ram", [16 * MiB, 48 * MiB])
def test_e820_map_on_console_and_screen(ram):
    m = kjcore.Machine(ram, bios=True)
    during = []                         # low memory while the BIOS runs: the program's
    m.bios.on_service(0x15, lambda cpu: during.append(m.ram[LOAD_AT:WINDOW_END + 1].copy()))
    first_kernel = m.ram[LOAD_AT:WINDOW_END + 1].copy()
    assert _run(m, "bios_e820.elf") == e820_console(m.e820)
    with open(path("bios_e820.elf"), "rb") as f:
        program = bytes(load_elf32(f.read()).segments[0].buf)
    assert bytes(during[0][:len(program)]) != bytes(first_kernel[:len(program)])
    assert bytes(during[0][:0x400]) == program[:0x400]          # its code, unchanged
    lines = e820_lines(m.e820)
    assert screen_lines(m)[:len(lines)] == lines
    assert m.bios.cursor() == (len(lines), 0)


def test_e820_registers_reach_the_bios_and_cf_comes_back():
    """A research hook sees the registers bios_call loaded from ``in``; CF = 1 from the BIOS
    reaches the program (it stops and reports 0 entries)."""
    m = kjcore.Machine(16 * MiB, bios=True)
    seen = []

    def refuse(cpu):
        seen.append((cpu.eax, cpu.edx, cpu.ecx, cpu.ebx, cpu.es.base + (cpu.edi & 0xFFFF)))
        regs.set8(cpu, "ah", 0x86)
        regs.set_carry(cpu, m.ram, True)
        return True
    m.bios.on_service(0x15, refuse)
    console = _run(m, "bios_e820.elf")
    assert console == "bios_e820: INT 15h E820 memory map\nbios_e820: 0 entries\n"
    ((eax, edx, ecx, ebx, buffer),) = seen
    assert (eax, edx, ecx, ebx) == (0xE820, 0x534D4150, 20, 0)
    assert LOAD_AT <= buffer <= WINDOW_END - 20


def test_teletype_write_string_and_cursor():
    m = kjcore.Machine(16 * MiB, bios=True)
    console = _run(m, "bios_tty.elf")
    row, col = m.bios.cursor()
    assert (row, col) == (4, 4 + len(STRING))
    assert console == ("bios_tty: INT 10h text output\nbios_tty: video mode 3, 80 columns\n"
                       f"{TELETYPE}\r\n{STRING}\nbios_tty: cursor at row {row}, column {col}\n")
    screen = screen_lines(m)
    assert screen[2] == " " * 4 + TELETYPE and screen[4] == " " * 4 + STRING
    cell = 0xB8000 + 2 * (4 * 80 + 4)
    assert set(m.ram[cell + 1:cell + 2 * len(STRING):2].tolist()) == {0x1F}


def test_registers_come_back_from_the_bios():
    """What the BIOS returns in DX (INT 10h AH=03h) is what the program prints."""
    m = kjcore.Machine(16 * MiB, bios=True)

    def cursor(cpu):
        if regs.get8(cpu, "ah") != 0x03:
            return False
        regs.set16(cpu, "dx", 0x1742)
        regs.set_carry(cpu, m.ram, False)
        return True
    m.bios.on_service(0x10, cursor)
    assert _run(m, "bios_tty.elf").endswith("cursor at row 23, column 66\n")


@pytest.mark.parametrize("sectors", [64, 2880])
def test_disk_read(sectors, tmp_path):
    m = kjcore.Machine(16 * MiB, bios=True)
    data = disk_content(sectors, seed=sectors)
    disk_file = tmp_path / "disk.img"
    disk_file.write_bytes(data)
    m.attach_disk(str(disk_file))
    first, last = data[:512], data[-512:]
    console = _run(m, "bios_disk.elf")
    assert console == disk_console(sectors, first, last)
    shown = [s.rstrip("\r\n") for s in console.splitlines()[2:]]
    assert screen_lines(m)[:4] == shown
    assert disk_file.read_bytes() == data            # a read writes nothing


def test_disk_program_without_a_disk():
    m = kjcore.Machine(16 * MiB, bios=True)
    console = _run(m, "bios_disk.elf")
    assert console.endswith("bios_disk: AH=41h (extensions check) failed, AH=01\n")


def test_two_programs_one_after_the_other():
    """Loading and running a second program after the first: both come back, memory exact."""
    m = kjcore.Machine(16 * MiB, bios=True)
    _run(m, "bios_e820.elf")
    m.debugcon = b""
    assert _run(m, "bios_tty.elf").startswith("bios_tty: INT 10h text output\n")


def test_roundtrip_program():
    """bios_roundtrip: 1000 INT 12h calls, all answered 639 KiB; on kjcore the TSC counts
    instructions, so its figure is the instructions of one round trip."""
    m = kjcore.Machine(16 * MiB, bios=True)
    console = _run(m, "bios_roundtrip.elf")
    found = re.fullmatch(r"bios_roundtrip: 1000 calls of INT 12h, 0 wrong, (\d+) TSC ticks "
                         r"per call\n", console)
    assert found and 1000 * int(found.group(1)) < m.last_result.steps
