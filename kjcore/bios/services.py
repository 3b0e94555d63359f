"""The Python side of kjcore's BIOS: installation and the services (SPEC §14.2).

The ROM (:file:`bios.S`) only traps: each service stub executes ``out %al, $SERVICE_PORT``;
:meth:`Bios.trap` (the CPU's handler of that port) finds the vector from the stub's address
and calls :meth:`Bios.call`, which runs the research hooks of ``on_service`` and then the
built-in service.  Services read and write the registers and report CF/ZF in the FLAGS the INT
saved (:mod:`kjcore.bios.regs`), and the stub IRETs.  INT 16h AH=00h on an empty keyboard queue
waits: the trap stops the run with ``Status.IDLE`` before the stub's OUT completes, so a script
queues keys (``m.keyboard.feed``) and runs again, and the OUT asks again.  An unknown function
returns CF=1, AH=0x86 and is counted in :attr:`Bios.unsupported`.

The clock is deterministic: it starts at :data:`EPOCH` and only INT 15h AH=86h (wait) moves it.
"""
import collections
import datetime
from pathlib import Path

import numpy as np

from ..cpu.status import Status
from . import layout as L
from . import regs
from .disk import int13

#: the machine's clock at power-on (the day Linux 2.6.27 came out, at noon)
EPOCH = datetime.datetime(2008, 10, 9, 12, 0, 0)
#: timer ticks per day (the PIT's 1193182 Hz / 65536, as BIOSes count them)
TICKS_PER_DAY = 0x1800B0
SMAP = 0x534D4150
E820_ENTRY = 20
UNSUPPORTED = 0x86
#: the committed ROM image
ROM = Path(__file__).with_name("bios.bin").read_bytes()


class Keyboard(collections.deque):
    """The keys INT 16h hands out: key words ``scan << 8 | ascii``, oldest first.

    >>> k = Keyboard(); k.feed("hi"); [hex(w) for w in k]
    ['0x68', '0x69']
    """

    def feed(self, data):
        """Queue the bytes of ``data`` (``str`` is encoded as latin-1) as keys without scan
        codes."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.extend(bytes(data))


class Bios:
    """The resident BIOS of one machine.

    ``ram`` is the machine's RAM, ``disks`` the machine's disk list (the live list: disks
    attached later are seen), ``keyboard`` a :class:`Keyboard`.  What INT 10h writes is also
    copied to the debug console of the CPU that called it (``cpu.write_debugcon``).  The BIOS
    holds no reference to the machine or its CPU, so a machine is freed by reference counting.
    """

    def __init__(self, ram, *, disks, keyboard):
        self.ram = ram
        self.e820 = L.e820(len(ram))
        self.disks = disks
        self.keyboard = keyboard
        #: the I/O port the ROM stubs trap through (the machine routes it to :meth:`trap`)
        self.port = L.SERVICE_PORT
        #: calls of functions the BIOS does not have (CF=1, AH=0x86)
        self.unsupported = 0
        #: microseconds since :data:`EPOCH`
        self.clock_us = 0
        self._hooks = {}

    # ------------------------------------------------------------------ boot
    def install(self):
        """Write what the BIOS left in memory at boot: ROM, IVT, BDA, EBDA, a blank screen."""
        ram = self.ram
        ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE] = np.frombuffer(ROM, dtype=np.uint8)
        ivt = np.full(256, L.ROM_SEGMENT << 16 | L.DEFAULT_STUB_OFFSET, dtype="<u4")
        for v in L.SERVICE_VECTORS:
            ivt[v] = L.ROM_SEGMENT << 16 | L.stub_offset(v)
        ram[L.IVT_BASE:L.IVT_BASE + L.IVT_SIZE] = ivt.view(np.uint8)
        ram[L.BDA_BASE:L.BDA_BASE + L.BDA_SIZE] = 0
        ram[L.EBDA_BASE:L.EBDA_BASE + L.EBDA_SIZE] = 0
        ram[L.EBDA_BASE] = L.EBDA_SIZE >> 10                  # its size in KiB
        for address, value, size in (
                (L.BDA_EBDA_SEGMENT, L.EBDA_BASE >> 4, 2), (L.BDA_EQUIPMENT, L.EQUIPMENT, 2),
                (L.BDA_MEMORY_KIB, L.CONVENTIONAL_KIB, 2), (L.BDA_VIDEO_MODE, 3, 1),
                (L.BDA_COLUMNS, L.TEXT_COLUMNS, 2), (L.BDA_ROWS, L.TEXT_ROWS - 1, 1),
                (L.BDA_HARD_DISKS, len(self.disks), 1), (L.BDA_TICKS, self.ticks(), 4)):
            ram[address:address + size] = np.frombuffer(value.to_bytes(size, "little"),
                                                         dtype=np.uint8)
        self._clear_screen()

    # ------------------------------------------------------------------ dispatch
    def on_service(self, vector, fn):
        """Call ``fn(cpu)`` when the guest executes INT ``vector`` into the BIOS, before the
        built-in service; when it returns True the call is handled (the built-in service does
        not run).  The latest hook runs first.  ``fn=None`` removes the vector's hooks."""
        if vector not in L.SERVICE_VECTORS:
            raise ValueError(f"vector {vector!r} has no BIOS service (one of "
                             f"{[hex(v) for v in L.SERVICE_VECTORS]})")
        if fn is None:
            self._hooks.pop(vector, None)
        elif not callable(fn):
            raise TypeError("fn must be callable as fn(cpu)")
        else:
            self._hooks.setdefault(vector, []).insert(0, fn)

    def trap(self, cpu):
        """The service port's handler: run the service of the stub the CPU is in.

        An ``out`` to the port from anywhere else does nothing.  Returns ``Status.IDLE`` when
        the service waits for input (the run stops; the next run executes the OUT again),
        else None."""
        offset = (cpu.cs.base + cpu.eip - L.ROM_BASE - L.STUB_OFFSET) & 0xFFFFFFFF
        index, rest = divmod(offset, L.STUB_SIZE)
        if rest or index >= len(L.SERVICE_VECTORS):
            return None
        return Status.IDLE if self.call(cpu, L.SERVICE_VECTORS[index]) else None

    def call(self, cpu, vector):
        """Run INT ``vector`` on ``cpu`` (stopped inside the INT); True when the caller must
        wait for input and call again."""
        for fn in self._hooks.get(vector, ()):
            if fn(cpu):
                return False
        handled = _VECTORS[vector](self, cpu)
        if handled is None:
            self.unsupported += 1
            regs.set8(cpu, "ah", UNSUPPORTED)
            regs.set_carry(cpu, self.ram, True)
            return False
        return handled == "wait"

    def _ok(self, cpu):
        regs.set_carry(cpu, self.ram, False)
        return "done"

    # ------------------------------------------------------------------ INT 10h
    def _cell(self, row, col):
        return L.VGA_TEXT_BASE + 2 * (row * L.TEXT_COLUMNS + col)

    def _clear_screen(self):
        cells = self.ram[L.VGA_TEXT_BASE:self._cell(L.TEXT_ROWS, 0)]
        cells[0::2], cells[1::2] = ord(" "), L.TEXT_ATTRIBUTE

    def cursor(self, page=0):
        """(row, column) of the cursor of video ``page`` (from the BDA)."""
        a = L.BDA_CURSOR + 2 * (page & 7)
        return int(self.ram[a + 1]), int(self.ram[a])

    def _set_cursor(self, row, col, page=0):
        a = L.BDA_CURSOR + 2 * (page & 7)
        self.ram[a], self.ram[a + 1] = col, row

    def _put(self, byte, attribute=None, page=0):
        """Teletype one byte on the screen (CR, LF, BS, BEL are controls); scrolls."""
        row, col = self.cursor(page)
        row, col = min(row, L.TEXT_ROWS - 1), min(col, L.TEXT_COLUMNS - 1)
        if byte == 0x0D:
            col = 0
        elif byte == 0x0A:
            row += 1
        elif byte == 0x08:
            col = max(0, col - 1)
        elif byte != 0x07:
            cell = self._cell(row, col)
            self.ram[cell] = byte
            if attribute is not None:
                self.ram[cell + 1] = attribute
            col += 1
            if col == L.TEXT_COLUMNS:
                row, col = row + 1, 0
        if row == L.TEXT_ROWS:
            screen = self.ram[L.VGA_TEXT_BASE:self._cell(L.TEXT_ROWS, 0)]
            screen[:-2 * L.TEXT_COLUMNS] = screen[2 * L.TEXT_COLUMNS:].copy()
            screen[-2 * L.TEXT_COLUMNS::2] = ord(" ")
            screen[-2 * L.TEXT_COLUMNS + 1::2] = L.TEXT_ATTRIBUTE
            row = L.TEXT_ROWS - 1
        self._set_cursor(row, col, page)

    def _int10(self, cpu):
        ah = regs.get8(cpu, "ah")
        if ah == 0x0E:
            byte = regs.get8(cpu, "al")
            self._put(byte)
            cpu.write_debugcon(bytes([byte]))
        elif ah == 0x13:
            self._write_string(cpu)
        elif ah == 0x02:
            row, col = regs.get8(cpu, "dh"), regs.get8(cpu, "dl")
            self._set_cursor(min(row, L.TEXT_ROWS - 1), min(col, L.TEXT_COLUMNS - 1),
                             regs.get8(cpu, "bh"))
        elif ah == 0x03:
            row, col = self.cursor(regs.get8(cpu, "bh"))
            regs.set8(cpu, "dh", row)
            regs.set8(cpu, "dl", col)
            regs.set16(cpu, "cx", 0x0607)             # the cursor's scan lines
        elif ah == 0x0F:
            regs.set8(cpu, "al", int(self.ram[L.BDA_VIDEO_MODE]))
            regs.set8(cpu, "ah", L.TEXT_COLUMNS)
            regs.set8(cpu, "bh", 0)
        else:
            return None
        return self._ok(cpu)

    def _write_string(self, cpu):
        mode, page, attribute = regs.get8(cpu, "al"), regs.get8(cpu, "bh"), regs.get8(cpu, "bl")
        count, bp = regs.get16(cpu, "cx"), regs.get16(cpu, "bp")
        saved = self.cursor(page)
        self._set_cursor(min(regs.get8(cpu, "dh"), L.TEXT_ROWS - 1),
                         min(regs.get8(cpu, "dl"), L.TEXT_COLUMNS - 1), page)
        step = 2 if mode & 2 else 1              # bit 1: the string alternates char, attribute
        data = regs.read(cpu, self.ram, "es", bp, count * step)
        text = data[::step]
        for i, byte in enumerate(text):
            self._put(byte, data[2 * i + 1] if mode & 2 else attribute, page)
        cpu.write_debugcon(text)
        if not mode & 1:                         # bit 0: the cursor stays after the string
            self._set_cursor(*saved, page)

    # ------------------------------------------------------------------ INT 11h, 12h
    def _word_from_bda(self, cpu, address):
        regs.set16(cpu, "ax", int(self.ram[address]) | int(self.ram[address + 1]) << 8)
        return self._ok(cpu)

    def _int11(self, cpu):
        return self._word_from_bda(cpu, L.BDA_EQUIPMENT)

    def _int12(self, cpu):
        return self._word_from_bda(cpu, L.BDA_MEMORY_KIB)

    # ------------------------------------------------------------------ INT 13h
    def _int13(self, cpu):
        return "done" if int13(self, cpu) else None

    # ------------------------------------------------------------------ INT 15h
    def _int15(self, cpu):
        ax, ah = regs.get16(cpu, "ax"), regs.get8(cpu, "ah")
        extended_kib = max(0, len(self.ram) - L.HIGH_MEMORY) >> 10
        if cpu.eax == 0xE820:
            return self._e820(cpu)
        if ax == 0xE801:
            below16 = min(extended_kib, 0x3C00)
            above16 = min(max(0, len(self.ram) - (16 << 20)) >> 16, 0xFFFF)
            for r, v in (("ax", below16), ("cx", below16), ("bx", above16), ("dx", above16)):
                regs.set16(cpu, r, v)
        elif ah == 0x88:
            regs.set16(cpu, "ax", min(extended_kib, 0xFFFF))
        elif ax in (0x2400, 0x2401):
            cpu.a20 = ax == 0x2401
            regs.set8(cpu, "ah", 0)
        elif ax == 0x2402:
            regs.set16(cpu, "ax", 1 if cpu.a20 else 0)
        elif ax == 0x2403:
            regs.set16(cpu, "ax", 0)
            regs.set16(cpu, "bx", 0x0003)        # keyboard controller and port 0x92
        elif ah == 0x86:
            self.clock_us += regs.get16(cpu, "cx") << 16 | regs.get16(cpu, "dx")
            regs.set8(cpu, "ah", 0)
        else:
            return None
        return self._ok(cpu)

    def _e820(self, cpu):
        index = cpu.ebx
        if cpu.edx != SMAP or cpu.ecx < E820_ENTRY or index >= len(self.e820):
            return None
        base, length, kind = self.e820[index]
        entry = base.to_bytes(8, "little") + length.to_bytes(8, "little") + \
            kind.to_bytes(4, "little")
        regs.write(cpu, self.ram, "es", regs.get16(cpu, "di"), entry)
        cpu.eax, cpu.ecx = SMAP, E820_ENTRY
        cpu.ebx = 0 if index + 1 == len(self.e820) else index + 1
        return self._ok(cpu)

    # ------------------------------------------------------------------ INT 16h
    def _int16(self, cpu):
        ah = regs.get8(cpu, "ah")
        if ah == 0x00:
            if not self.keyboard:
                return "wait"
            regs.set16(cpu, "ax", self.keyboard.popleft())
        elif ah == 0x01:
            regs.set_zero(cpu, self.ram, not self.keyboard)
            if self.keyboard:
                regs.set16(cpu, "ax", self.keyboard[0])
        else:
            return None
        return self._ok(cpu)

    # ------------------------------------------------------------------ INT 1Ah
    def now(self):
        """The machine's clock (a ``datetime``)."""
        return EPOCH + datetime.timedelta(microseconds=self.clock_us)

    def ticks(self):
        """Timer ticks since midnight."""
        t = self.now()
        us = ((t.hour * 60 + t.minute) * 60 + t.second) * 10**6 + t.microsecond
        return us * TICKS_PER_DAY // (86400 * 10**6)

    def _int1a(self, cpu):
        ah, t = regs.get8(cpu, "ah"), self.now()
        if ah == 0x00:
            ticks = self.ticks()
            regs.set16(cpu, "cx", ticks >> 16)
            regs.set16(cpu, "dx", ticks)
            regs.set8(cpu, "al", 0)              # midnight has not passed since the last read
        elif ah == 0x02:
            for r, v in (("ch", t.hour), ("cl", t.minute), ("dh", t.second), ("dl", 0)):
                regs.set8(cpu, r, _bcd(v))
        elif ah == 0x04:
            for r, v in (("ch", t.year // 100), ("cl", t.year % 100), ("dh", t.month),
                         ("dl", t.day)):
                regs.set8(cpu, r, _bcd(v))
        else:
            return None
        return self._ok(cpu)


def _bcd(n):
    return (n // 10) << 4 | n % 10


_VECTORS = {0x10: Bios._int10, 0x11: Bios._int11, 0x12: Bios._int12, 0x13: Bios._int13,
            0x15: Bios._int15, 0x16: Bios._int16, 0x1A: Bios._int1a}
