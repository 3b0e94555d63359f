"""capture.elf given bad boot parameters stops with one line on the debug console and halts,
writing nothing (run on kjcore's CPU directly, entered as purgatory enters it)."""
import struct
from pathlib import Path

import numpy as np
import pytest
from snapshot_world import CAPTURE, e820, zero_page

from kjcore.cpu import CPU, Status
from kjcore.devices import AtaController, Disk
from kjcore.loader import load_elf32

RAM = 20 << 20
#: old memory at 0x1000-0x3FFF the good header's PT_LOAD describes
PATTERN = bytes(i * 7 % 251 for i in range(0x3000))
ZERO_PAGE, CMDLINE, HEADER, STACK = 0x90000, 0x91000, 0x92000, 0x80000


def _run(cmdline, header=b"", disk_size=1 << 20, entries=None):
    ram = np.zeros(RAM, np.uint8)
    image = load_elf32(Path(CAPTURE).read_bytes())
    (seg,) = image.segments
    ram[seg.mem:seg.mem + seg.bufsz] = np.frombuffer(bytes(seg.buf), np.uint8)
    ram[ZERO_PAGE:ZERO_PAGE + 4096] = np.frombuffer(zero_page(entries or e820(RAM), CMDLINE),
                                                    np.uint8)
    ram[CMDLINE:CMDLINE + len(cmdline) + 1] = np.frombuffer(cmdline + b"\0", np.uint8)
    ram[HEADER:HEADER + len(header)] = np.frombuffer(header, np.uint8)
    ram[0x1000:0x4000] = np.frombuffer(PATTERN, np.uint8)
    disk = Disk.memory(disk_size)
    cpu = CPU(ram)
    AtaController([disk]).attach(cpu)
    cpu.eip, cpu.esp, cpu.esi = image.entry, STACK, ZERO_PAGE
    assert cpu.run(50_000_000) == Status.HLT
    return bytes(cpu.debugcon).decode(), disk


def _header(phnum=1, machine=3, load=(0, 0x1000)):
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 4, machine, 1, 0,
                       52, 0, 0, 52, 32, phnum, 0, 0, 0)
    return ehdr + struct.pack("<8I", 1, load[0], 0xC0000000 + load[0], load[0], load[1],
                              load[1], 7, 0) * phnum


@pytest.mark.parametrize("cmdline, header, message", [
    (b"quiet", b"", "no elfcorehdr= and no kexec jump to return from"),
    (b"elfcorehdr=%dK" % (HEADER // 1024), b"\x7fELF\x02", "not an i386 ELF32 core header"),
    (b"elfcorehdr=%dK" % (HEADER // 1024), _header(machine=62), "not an i386 ELF32 core"),
    (b"elfcorehdr=%dK" % (HEADER // 1024), _header(phnum=65), "too many program headers"),
    (b"elfcorehdr=%#x" % HEADER, _header(load=(0, 8 << 20)), "does not fit disk 0"),
    (b"elfcorehdr=12Q", b"", "bad elfcorehdr= value"),
])
def test_bad_parameters_stop_with_a_message(cmdline, header, message):
    console, disk = _run(cmdline, header)
    assert message in console and console.count("\n") == 2, console
    assert disk.read(0, 1) == bytes(512)                    # nothing written


def test_a_good_header_is_written():
    console, disk = _run(b"root=/dev/sda elfcorehdr=0x92000", _header(load=(0x1000, 0x3000)))
    assert console.endswith("capture: done\n")
    assert disk.read(0, 1)[:4] == b"\x7fELF"
    assert disk.read(8, 24) == PATTERN                      # the PT_LOAD at file offset 0x1000
    assert disk.read(32, 1) == bytes(512)
