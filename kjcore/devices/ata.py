"""The ATA (IDE) PIO controller on the primary channel (SPEC §15).

Ports 0x1F0-0x1F7 (command block) and 0x3F6 (control block); disk 0 is the master, disk 1
the slave.  Commands complete at once (BSY is never seen): IDENTIFY DEVICE (0xEC), READ
SECTORS (0x20/0x21), WRITE SECTORS (0x30/0x31) with CHS or 28-bit LBA addresses, READ /
WRITE SECTORS EXT (0x24/0x34, 48-bit LBA through the HOB register pairs), FLUSH CACHE
(0xE7/0xEA).  Any other command, a count or address outside the disk, a bad CHS address
or a write to a read-only disk sets ERR in the status and ABRT (with IDNF for an address)
in the error register and moves no data.  The interrupt line is modelled as
:attr:`AtaController.irq`: raised at each data-in block, after each written sector and at
the end of a command without data, unless nIEN is set in the device control register;
dropped by a read of the status register (not the alternate status).  No PIC is modelled,
so guests poll.

Data moves through the data port 0x1F0 a sector at a time (a DRQ block is one sector);
REP INSW/OUTSW (and INSD/OUTSD) reach :meth:`AtaController.string` through the CPU's bulk
path (:mod:`kjcore.cpu.portstring`), which copies whole sectors between guest RAM and the
disk with numpy in one call.
"""
import numpy as np

from .disk import SECTOR_SIZE

__all__ = ["AtaController", "PORTS", "identify_words"]

DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, COMMAND = range(0x1F0, 0x1F8)
CONTROL = 0x3F6
#: the ports the controller answers
PORTS = tuple(range(0x1F0, 0x1F8)) + (CONTROL,)

BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT, IDNF = 0x04, 0x10
NIEN, SRST, HOB = 0x02, 0x04, 0x80
DEV_LBA, DEV_SLAVE = 0x40, 0x10

_READ = {0x20: False, 0x21: False, 0x24: True}     # command -> 48-bit
_WRITE = {0x30: False, 0x31: False, 0x34: True}
_FLUSH = (0xE7, 0xEA)
_IDENTIFY = 0xEC
MODEL = "KJCORE ATA DISK"
FIRMWARE = "1.0"


def _ascii_words(text, n_words):
    """ATA strings: space-padded, two characters per word, the first in the high byte."""
    raw = text.ljust(2 * n_words)[:2 * n_words].encode("ascii")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def identify_words(disk, serial="KJ0"):
    """The 256 IDENTIFY DEVICE words for ``disk`` (ATA/ATAPI-6 layout)."""
    cyl, heads, spt = disk.geometry
    w = [0] * 256
    w[0] = 0x0040                               # fixed device, ATA
    w[1], w[3], w[6] = cyl, heads, spt
    w[10:20] = _ascii_words(serial, 10)
    w[23:27] = _ascii_words(FIRMWARE, 4)
    w[27:47] = _ascii_words(MODEL, 20)
    w[47] = 0x8000                              # READ/WRITE MULTIPLE: not supported
    w[49] = 0x0200                              # LBA supported (no DMA)
    w[50] = 0x4000
    w[53] = 0x0001                              # words 54-58 valid
    w[54], w[55], w[56] = cyl, heads, spt
    chs = cyl * heads * spt
    w[57], w[58] = chs & 0xFFFF, chs >> 16
    lba28 = min(disk.sectors, 0x0FFFFFFF)
    w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
    w[80] = 0x007E                              # ATA-1 .. ATA/ATAPI-6
    w[82], w[83], w[84] = 0x4000, 0x7400, 0x4000  # FLUSH CACHE (EXT), 48-bit supported
    w[85], w[86], w[87] = 0x4000, 0x3400, 0x4000  # ... and enabled
    for i in range(4):
        w[100 + i] = (disk.sectors >> (16 * i)) & 0xFFFF
    w[255] = 0x00A5
    total = sum((x & 0xFF) + (x >> 8) for x in w)
    w[255] |= ((-total) & 0xFF) << 8            # all 512 bytes sum to 0 mod 256
    return w


class AtaController:
    """The primary-channel controller serving ``disks[0]`` (master) and ``disks[1]``
    (slave).  :meth:`attach` puts it on a CPU's ports."""

    def __init__(self, disks):
        self.disks = list(disks)[:2]
        self.irq = False
        self._reset()

    def _reset(self):
        self.status, self.error = DRDY | DSC, 0x01       # diagnostic code: no error
        self.control = 0
        self.features = 0
        self.device = 0xA0
        self._regs = {COUNT: [1, 0], LBA_LOW: [1, 0], LBA_MID: [0, 0], LBA_HIGH: [0, 0]}
        self._buf = np.zeros(0, np.uint8)     # the DRQ block being moved
        self._pos = 0
        self._lba = self._left = 0            # next sector and sectors still to move
        self._writing = False

    def attach(self, cpu):
        """Answer :data:`PORTS` on ``cpu``, REP INS/OUTS on the data port in bulk."""
        for port in PORTS:
            cpu.on_port(port, self.port, string=self.string if port == DATA else None)

    # ------------------------------------------------------------------ registers
    @property
    def _disk(self):
        i = 1 if self.device & DEV_SLAVE else 0
        return self.disks[i] if i < len(self.disks) else None

    def port(self, port, size, value):
        """One register access (the CPU's ``on_port`` handler)."""
        if value is None:
            return self._read(port, size)
        self._write(port, size, value)
        return None

    def _read(self, port, size):
        if port == DATA:
            return int.from_bytes(self._take(size).tobytes().ljust(size, b"\xff"), "little")
        if self._disk is None and port in (COMMAND, CONTROL):
            return 0                                # no device answers
        if port == COMMAND:
            self.irq = False
            return self.status
        if port == CONTROL:
            return self.status                      # alternate status: irq unchanged
        if port == ERROR:
            return self.error
        if port == DEVICE:
            return self.device
        return self._regs[port][1 if self.control & HOB else 0]

    def _write(self, port, size, value):
        value &= 0xFF if port != DATA else (1 << (8 * size)) - 1
        if port == DATA:
            self._give(np.frombuffer(value.to_bytes(size, "little"), np.uint8))
        elif port == CONTROL:
            if self.control & SRST and not value & SRST:
                self._reset()                        # end of a software reset
            self.control = value
        elif self._disk is not None or port != COMMAND:
            self.control &= ~HOB
            if port == COMMAND:
                self._command(value)
            elif port == ERROR:
                self.features = value
            elif port == DEVICE:
                self.device = value
            else:
                self._regs[port] = [value, self._regs[port][0]]

    # ------------------------------------------------------------------ commands
    def _finish(self, status):
        self.status = status
        if not self.control & NIEN:
            self.irq = True

    def _abort(self, error=ABRT):
        self.error = error
        self._buf, self._pos, self._left = np.zeros(0, np.uint8), 0, 0
        self._finish(DRDY | DSC | ERR)

    def _command(self, cmd):
        disk = self._disk
        self.error = 0
        if cmd == _IDENTIFY:
            words = np.array(identify_words(disk), dtype="<u2")
            self._buf, self._pos, self._left = words.view(np.uint8), 0, 0
            self._writing = False
            self._finish(DRDY | DSC | DRQ)
        elif cmd in _FLUSH:
            disk.flush()
            self._finish(DRDY | DSC)
        elif cmd in _READ or cmd in _WRITE:
            ext = _READ.get(cmd, _WRITE.get(cmd))
            lba, count = self._address(ext)
            if lba is None or lba + count > disk.sectors:
                return self._abort(ABRT | IDNF)
            if cmd in _WRITE and disk.readonly:
                return self._abort()
            self._lba, self._left, self._writing = lba, count, cmd in _WRITE
            self._next_block(interrupt=not self._writing)  # a write's first block: no irq
        else:
            self._abort()
        return None

    def _address(self, ext):
        """(first sector, count) from the task file; sector None for a bad CHS address."""
        r = self._regs
        if ext:
            count = (r[COUNT][1] << 8 | r[COUNT][0]) or 65536
            lba = 0
            for i, p in enumerate((LBA_LOW, LBA_MID, LBA_HIGH)):
                lba |= r[p][0] << (8 * i) | r[p][1] << (8 * i + 24)
            return lba, count
        count = r[COUNT][0] or 256
        if self.device & DEV_LBA:
            lba = (self.device & 0x0F) << 24 | r[LBA_HIGH][0] << 16 | r[LBA_MID][0] << 8 \
                | r[LBA_LOW][0]
            return lba, count
        cyl, heads, spt = self._disk.geometry
        c, h, s = r[LBA_HIGH][0] << 8 | r[LBA_MID][0], self.device & 0x0F, r[LBA_LOW][0]
        if not (c < cyl and h < heads and 1 <= s <= spt):
            return None, count
        return (c * heads + h) * spt + s - 1, count

    def _next_block(self, interrupt=True):
        """Start the next sector's DRQ block, or end the command (a read ends without an
        interrupt: its last one came with its last block)."""
        status = DRDY | DSC
        if self._left == 0:
            self._buf, self._pos = np.zeros(0, np.uint8), 0
            interrupt = self._writing
        else:
            self._buf = np.zeros(SECTOR_SIZE, np.uint8) if self._writing \
                else self._disk.view(self._lba, 1).copy()
            self._pos = 0
            status |= DRQ
        if interrupt:
            self._finish(status)
        else:
            self.status = status

    def _end_block(self):
        """The DRQ block has been moved: commit a written sector, go on."""
        if self._left == 0:                     # IDENTIFY
            self._buf, self._pos = np.zeros(0, np.uint8), 0
            self.status = DRDY | DSC
            return
        if self._writing:
            self._disk.write(self._lba, self._buf)
        self._lba += 1
        self._left -= 1
        self._next_block()

    # ------------------------------------------------------------------ data
    def _take(self, n):
        """Up to ``n`` bytes of the data-in block (empty unless DRQ is up for reading)."""
        if not self.status & DRQ or self._writing:
            return np.zeros(0, np.uint8)
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        if self._pos == len(self._buf):
            self._end_block()
        return out

    def _give(self, data):
        """Bytes written to the data port (dropped unless DRQ is up for writing)."""
        if not self.status & DRQ or not self._writing:
            return
        k = min(len(data), len(self._buf) - self._pos)
        self._buf[self._pos:self._pos + k] = data[:k]
        self._pos += k
        if self._pos == len(self._buf):
            self._end_block()

    def string(self, port, size, out, buf):
        """REP INS/OUTS on the data port: move whole elements between ``buf`` (guest RAM)
        and the command's data, up to its end; returns the elements moved."""
        if not self.status & DRQ or out != self._writing:
            return 0
        done = 0                                   # bytes of buf moved
        total = len(buf) - len(buf) % size
        while done < total and self.status & DRQ:
            if self._pos == 0 and self._left > 1 and total - done >= 2 * SECTOR_SIZE:
                k = min((total - done) // SECTOR_SIZE, self._left) - 1
                self._bulk(buf[done:done + k * SECTOR_SIZE], k)
                done += k * SECTOR_SIZE
                continue
            n = min(total - done, len(self._buf) - self._pos)
            n -= n % size
            if n == 0:
                break           # an element across the block's end: the value handler's
            chunk = buf[done:done + n]
            if out:
                self._give(chunk)
            else:
                chunk[:] = self._take(n)
            done += n
        return done // size

    def _bulk(self, chunk, k):
        """Whole sectors ``_lba .. _lba+k-1`` straight between ``chunk`` and the disk, then
        the next sector's block (k < sectors left, so the command goes on)."""
        if self._writing:
            self._disk.write(self._lba, chunk)
        else:
            chunk[:] = self._disk.view(self._lba, k)
        self._lba += k
        self._left -= k
        self._next_block()
