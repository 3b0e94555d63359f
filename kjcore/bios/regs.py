"""Register and memory access for BIOS services running on a stopped kjcore CPU (SPEC §14.2).

A service runs while the guest sits on the ``out`` of its ROM stub, inside the INT: the
caller's FLAGS, CS and IP are on the stack at SS:SP (IP at +0, CS at +2, FLAGS at +4) and the
stub's IRET pops them, so a service reports CF and ZF by editing that saved FLAGS word
(:func:`set_carry`, :func:`set_zero`), as an INT handler must.  Research hooks
(``m.bios.on_service``) use the same helpers.

Guest memory is addressed as real mode does: ``segment base + (offset & 0xFFFF)`` with the
offset wrapping inside its 64 KiB segment, bit 20 forced to 0 while the A20 gate is off
(``cpu.a20``), reads past RAM giving all ones and writes there or into the ROM dropped.  Nothing
here can touch host memory outside the RAM array.
"""
import numpy as np

from .layout import HIGH_MEMORY, ROM_BASE, ROM_SIZE

CF, ZF = 0x0001, 0x0040
_M16 = 0xFFFF


def get8(cpu, name):
    """``al``, ``ah``, ``bl``, ``bh``, ``cl``, ``ch``, ``dl`` or ``dh``."""
    value = getattr(cpu, "e" + name[0] + "x")
    return (value >> 8) & 0xFF if name[1] == "h" else value & 0xFF


def set8(cpu, name, value):
    reg = "e" + name[0] + "x"
    shift = 8 if name[1] == "h" else 0
    old = getattr(cpu, reg)
    setattr(cpu, reg, (old & ~(0xFF << shift) & 0xFFFFFFFF) | ((value & 0xFF) << shift))


def get16(cpu, name):
    """``ax``, ``bx``, ``cx``, ``dx``, ``si``, ``di``, ``bp`` or ``sp``."""
    return getattr(cpu, "e" + name) & _M16


def set16(cpu, name, value):
    reg = "e" + name
    setattr(cpu, reg, (getattr(cpu, reg) & 0xFFFF0000) | (value & _M16))


def physical(cpu, address):
    """The physical address the A20 gate makes of ``address``."""
    return address if cpu.a20 else address & ~HIGH_MEMORY


def read(cpu, ram, segment, offset, n):
    """``n`` bytes at ``segment:offset`` (``segment`` names a segment register); the offset
    wraps at 64 KiB."""
    base = getattr(cpu, segment).base
    out = np.full(n, 0xFF, dtype=np.uint8)
    for i in range(n):
        a = physical(cpu, (base + ((offset + i) & _M16)) & 0xFFFFFFFF)
        if a < len(ram):
            out[i] = ram[a]
    return out.tobytes()


def write(cpu, ram, segment, offset, data):
    """Store ``data`` at ``segment:offset`` as :func:`read` addresses it."""
    base = getattr(cpu, segment).base
    for i, byte in enumerate(data):
        store_byte(ram, physical(cpu, (base + ((offset + i) & _M16)) & 0xFFFFFFFF), byte)


def store_byte(ram, address, byte):
    """One byte to physical ``address``; past RAM or inside the ROM it is dropped."""
    if address < len(ram) and not ROM_BASE <= address < ROM_BASE + ROM_SIZE:
        ram[address] = byte


def store_block(ram, address, data):
    """``data`` to physical ``[address, address + len(data))`` (already checked to be inside
    RAM); the part inside the ROM is dropped."""
    end = address + len(data)
    buf = np.frombuffer(data, dtype=np.uint8)
    for lo, hi in ((address, min(end, ROM_BASE)), (max(address, ROM_BASE + ROM_SIZE), end)):
        if lo < hi:
            ram[lo:hi] = buf[lo - address:hi - address]


def _flags_address(cpu):
    return physical(cpu, (cpu.ss.base + ((cpu.esp + 4) & _M16)) & 0xFFFFFFFF)


def saved_flags(cpu, ram):
    """The FLAGS word the INT pushed (what the stub's IRET will pop)."""
    a = _flags_address(cpu)
    return int(ram[a]) | int(ram[a + 1]) << 8 if a + 1 < len(ram) else _M16


def _set_saved_flag(cpu, ram, bit, on):
    a = _flags_address(cpu)
    flags = saved_flags(cpu, ram)
    flags = flags | bit if on else flags & ~bit
    store_byte(ram, a, flags & 0xFF)
    store_byte(ram, a + 1, flags >> 8)


def set_carry(cpu, ram, on):
    """Set (``on``) or clear CF in the caller's saved FLAGS."""
    _set_saved_flag(cpu, ram, CF, on)


def set_zero(cpu, ram, on):
    """Set (``on``) or clear ZF in the caller's saved FLAGS."""
    _set_saved_flag(cpu, ram, ZF, on)
