"""INT 13h: disk services on the machine's disks (SPEC §14.2, §15).

Drive ``0x80 + i`` is ``disks[i]`` (512-byte sectors, ``.sectors``, ``.read(lba, n)``,
``.write(lba, data)``, ``.readonly``).  The CHS geometry is the usual LBA translation: 16 heads,
63 sectors per track, at most 1024 cylinders.  Every hostile request ends in a BIOS status in
AH with CF=1, never in a host error:

=========  ================================================================================
AH         when
=========  ================================================================================
``0x01``   no such drive, zero or too many sectors (more than 127 in a packet, 128 in CHS),
           CHS outside the geometry, LBA range past the disk, a packet shorter than 16 bytes
``0x03``   a write to a read-only disk
``0x09``   the buffer wraps at the end of its 64 KiB segment, crosses 1 MiB (segment:offset
           buffers) or leaves RAM (a packet's 64-bit flat buffer)
=========  ================================================================================
"""
import struct

from . import regs
from .layout import HIGH_MEMORY

SECTOR = 512
HEADS, SECTORS_PER_TRACK, MAX_CYLINDERS = 16, 63, 1024
EPARAM, EWRITEPROTECT, EBOUNDARY = 0x01, 0x03, 0x09
#: most sectors one disk address packet may move (EDD)
MAX_PACKET_SECTORS = 127
#: most sectors one CHS call may move
MAX_CHS_SECTORS = 128
#: size of the drive parameter table AH=48h fills
PARAMS_SIZE = 0x1A


class DiskError(Exception):
    """A request the BIOS refuses with status ``code`` (AH); internal to this module."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def cylinders(disk):
    """CHS cylinders of ``disk`` (at least one, at most 1024)."""
    return max(1, min(MAX_CYLINDERS, disk.sectors // (HEADS * SECTORS_PER_TRACK)))


def chs_to_lba(c, h, s):
    """The LBA of cylinder ``c``, head ``h``, sector ``s`` (1-based)."""
    return (c * HEADS + h) * SECTORS_PER_TRACK + s - 1


def int13(bios, cpu):
    """Run the INT 13h function in AH; returns False for an unknown function."""
    ah = regs.get8(cpu, "ah")
    handler = _FUNCTIONS.get(ah)
    if handler is None:
        return False
    try:
        disk = _drive(bios, cpu)
        handler(bios, cpu, disk)
    except DiskError as e:
        regs.set8(cpu, "ah", e.code)
        regs.set_carry(cpu, bios.ram, True)
    else:
        regs.set_carry(cpu, bios.ram, False)
    return True


def _drive(bios, cpu):
    disks = bios.disks
    index = regs.get8(cpu, "dl") - 0x80
    if not 0 <= index < len(disks):
        raise DiskError(EPARAM)
    return disks[index]


def _reset(bios, cpu, disk):
    regs.set8(cpu, "ah", 0)


def _buffer(bios, cpu, segment, offset, count, flat=None):
    """The physical address of a ``count``-sector buffer, checked (EBOUNDARY)."""
    n = count * SECTOR
    if flat is None:
        if offset + n > 0x10000:
            raise DiskError(EBOUNDARY)
        address = getattr(cpu, segment).base + offset if isinstance(segment, str) \
            else (segment << 4) + offset
        if address + n > HIGH_MEMORY:
            raise DiskError(EBOUNDARY)
        address = regs.physical(cpu, address)
    else:
        address = flat
    if address + n > len(bios.ram):
        raise DiskError(EBOUNDARY)
    return address


def _transfer(bios, disk, write, lba, count, address):
    if lba + count > disk.sectors:
        raise DiskError(EPARAM)
    if write and disk.readonly:
        raise DiskError(EWRITEPROTECT)
    try:
        if write:
            disk.write(lba, bios.ram[address:address + count * SECTOR].tobytes())
        else:
            regs.store_block(bios.ram, address, disk.read(lba, count))
    except ValueError:
        raise DiskError(EPARAM) from None


def _chs(bios, cpu, disk):
    count, ch, cl, dh = (regs.get8(cpu, r) for r in ("al", "ch", "cl", "dh"))
    c, s = ch | (cl & 0xC0) << 2, cl & 0x3F
    if not 0 < count <= MAX_CHS_SECTORS or not 0 < s <= SECTORS_PER_TRACK or dh >= HEADS \
            or c >= cylinders(disk):
        raise DiskError(EPARAM)
    address = _buffer(bios, cpu, "es", regs.get16(cpu, "bx"), count)
    _transfer(bios, disk, regs.get8(cpu, "ah") == 0x03, chs_to_lba(c, dh, s), count, address)
    regs.set8(cpu, "ah", 0)
    regs.set8(cpu, "al", count)


def _parameters(bios, cpu, disk):
    c = cylinders(disk) - 1
    regs.set8(cpu, "ch", c & 0xFF)
    regs.set8(cpu, "cl", SECTORS_PER_TRACK | (c >> 8) << 6)
    regs.set8(cpu, "dh", HEADS - 1)
    regs.set8(cpu, "dl", len(bios.disks))
    regs.set8(cpu, "bl", 0)
    regs.set8(cpu, "ah", 0)


def _type(bios, cpu, disk):
    total = cylinders(disk) * HEADS * SECTORS_PER_TRACK
    regs.set16(cpu, "cx", total >> 16)
    regs.set16(cpu, "dx", total)
    regs.set8(cpu, "ah", 3)                         # a fixed disk


def _check_extensions(bios, cpu, disk):
    if regs.get16(cpu, "bx") != 0x55AA:
        raise DiskError(EPARAM)
    regs.set16(cpu, "bx", 0xAA55)
    regs.set16(cpu, "cx", 0x0001)                   # the fixed-disk access subset (42h-48h)
    regs.set8(cpu, "ah", 0x30)                      # EDD 3.0


def _packet(bios, cpu, disk):
    si = regs.get16(cpu, "si")
    dap = regs.read(cpu, bios.ram, "ds", si, 0x18)
    size, _, count, offset, segment, lba, flat = struct.unpack("<BBHHHQQ", dap)
    try:
        if size < 0x10:
            raise DiskError(EPARAM)
        if count:
            if count > MAX_PACKET_SECTORS or lba >= disk.sectors:
                raise DiskError(EPARAM)
            flat_form = size >= 0x18 and (segment, offset) == (0xFFFF, 0xFFFF)
            address = _buffer(bios, cpu, segment, offset, count, flat if flat_form else None)
            _transfer(bios, disk, regs.get8(cpu, "ah") == 0x43, lba, count, address)
    except DiskError:
        regs.write(cpu, bios.ram, "ds", si + 2, b"\0\0")     # nothing was transferred
        raise
    regs.set8(cpu, "ah", 0)


def _drive_parameters(bios, cpu, disk):
    si = regs.get16(cpu, "si")
    (size,) = struct.unpack("<H", regs.read(cpu, bios.ram, "ds", si, 2))
    if size < PARAMS_SIZE:
        raise DiskError(EPARAM)
    table = struct.pack("<HHIIIQH", PARAMS_SIZE, 0x0002, cylinders(disk), HEADS,
                        SECTORS_PER_TRACK, disk.sectors, SECTOR)
    regs.write(cpu, bios.ram, "ds", si, table)
    regs.set8(cpu, "ah", 0)


_FUNCTIONS = {0x00: _reset, 0x02: _chs, 0x03: _chs, 0x08: _parameters, 0x15: _type,
              0x41: _check_extensions, 0x42: _packet, 0x43: _packet, 0x48: _drive_parameters}
