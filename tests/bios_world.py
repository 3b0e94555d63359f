"""Stand-ins for the BIOS tests: a CPU stopped inside an INT, in-memory disks."""
import numpy as np

from kjcore.bios import Bios, Keyboard
from kjcore.cpu import CPU

#: where the stand-in caller's stack frame (IP, CS, FLAGS) lies
STACK_SEGMENT, STACK_TOP = 0x0700, 0x1000
INITIAL_FLAGS = 0x0202


class Disk:
    """The contract of ``m.disks[i]`` (SPEC §15) over a bytearray."""

    def __init__(self, sectors, readonly=False):
        self.sectors = sectors
        self.data = bytearray(i * 7 % 251 for i in range(sectors * 512))
        self.readonly = readonly
        self.path = None

    def read(self, lba, n):
        if lba < 0 or n < 0 or lba + n > self.sectors:
            raise ValueError("out of range")
        return bytes(self.data[lba * 512:(lba + n) * 512])

    def write(self, lba, data):
        n = len(data) // 512
        if lba < 0 or len(data) % 512 or lba + n > self.sectors:
            raise ValueError("out of range")
        self.data[lba * 512:(lba + n) * 512] = data


def world(ram_size=2 << 20, disks=()):
    """A fresh RAM with the BIOS installed and a CPU with its A20 gate open."""
    ram = np.zeros(ram_size, dtype=np.uint8)
    disks = list(disks)
    bios = Bios(ram, disks=disks, keyboard=Keyboard())
    bios.install()
    cpu = CPU(ram)
    cpu.a20 = True
    return bios, cpu


def call(bios, cpu, vector, flags=INITIAL_FLAGS, **registers):
    """Enter INT ``vector`` as the CPU would (FLAGS, CS, IP on SS:SP) and run the service.

    Returns (wait, saved FLAGS after the service)."""
    ram = bios.ram
    cpu.ss.selector, cpu.ss.base = STACK_SEGMENT, STACK_SEGMENT << 4
    cpu.esp = STACK_TOP - 6
    frame = (STACK_SEGMENT << 4) + STACK_TOP - 6
    ram[frame:frame + 6] = np.frombuffer(
        (0x1234).to_bytes(2, "little") + (0x2000).to_bytes(2, "little")
        + flags.to_bytes(2, "little"), dtype=np.uint8)
    for name, value in registers.items():
        if name in ("ds", "es"):
            getattr(cpu, name).selector = value
            getattr(cpu, name).base = value << 4
        else:
            setattr(cpu, name, value)
    wait = bios.call(cpu, vector)
    return wait, int(ram[frame + 4]) | int(ram[frame + 5]) << 8
