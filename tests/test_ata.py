"""The ATA PIO controller (kjcore.devices.ata, SPEC §15): registers, IDENTIFY, LBA28/48 and
CHS addressing, error paths, nIEN, and guest programs moving sectors through the ports
(REP INSW/OUTSW in bulk, and during a kexec jump)."""
import struct

import numpy as np
import pytest
from cpu.cpu_world import World, asm
from jump_world import DEST, P, machine, reboot

from kjcore import Segment
from kjcore.cpu import CPU, Status
from kjcore.devices import AtaController, Disk
from kjcore.devices.ata import ABRT, DRDY, DRQ, ERR, IDNF, identify_words

DATA, ERROR, COUNT, LOW, MID, HIGH, DEVICE, COMMAND, CONTROL = \
    0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6


def _out(ata, port, value, size=1):
    ata.port(port, size, value)


def _in(ata, port, size=1):
    return ata.port(port, size, None)


def _task(ata, lba, count, device=0xE0, ext=False):
    """Program the task file for LBA ``lba`` (48-bit: high bytes first, as the HOB pairs)."""
    if ext:
        _out(ata, COUNT, count >> 8)
        for i, port in enumerate((LOW, MID, HIGH)):
            _out(ata, port, (lba >> (24 + 8 * i)) & 0xFF)
    _out(ata, COUNT, count & 0xFF)
    for i, port in enumerate((LOW, MID, HIGH)):
        _out(ata, port, (lba >> (8 * i)) & 0xFF)
    _out(ata, DEVICE, device | ((lba >> 24) & 0x0F if not ext else 0))


def _read_words(ata, n):
    return b"".join(struct.pack("<H", _in(ata, DATA, 2)) for _ in range(n))


def _write_words(ata, data):
    for (w,) in struct.iter_unpack("<H", data):
        _out(ata, DATA, w, 2)


def _pattern(n_sectors, seed=1):
    return np.random.default_rng(seed).integers(0, 256, n_sectors * 512, np.uint8).tobytes()


# ------------------------------------------------------------------ IDENTIFY
def _ascii(words):
    return b"".join(struct.pack(">H", w) for w in words).decode().rstrip()


def test_identify_device_words():
    disk = Disk.memory(100 * 1008 * 512)         # 100 cylinders of 16 heads x 63 sectors
    ata = AtaController([disk])
    _out(ata, DEVICE, 0xA0)
    _out(ata, COMMAND, 0xEC)
    assert _in(ata, COMMAND) == DRDY | 0x10 | DRQ
    raw = _read_words(ata, 256)
    w = struct.unpack("<256H", raw)
    assert _in(ata, COMMAND) & (DRQ | ERR) == 0
    assert list(w) == identify_words(disk)
    assert _ascii(w[27:47]) == "KJCORE ATA DISK" and _ascii(w[23:27]) == "1.0"
    assert (w[1], w[3], w[6]) == (100, 16, 63) and w[54:57] == (100, 16, 63)
    assert w[57] | w[58] << 16 == 100 * 1008
    assert w[49] & 0x0200 and w[83] & 0x0400 and w[86] & 0x0400     # LBA; 48-bit
    assert w[83] & 0x3000 == 0x3000                                  # FLUSH CACHE (EXT)
    assert w[60] | w[61] << 16 == disk.sectors
    assert sum(w[100 + i] << (16 * i) for i in range(4)) == disk.sectors
    assert w[255] & 0xFF == 0xA5 and sum(raw) % 256 == 0


def test_identify_caps_lba28_at_its_limit(tmp_path):
    sectors = (1 << 28) + 8                       # a sparse 128 GiB file
    disk = Disk.create(str(tmp_path / "big.img"), sectors * 512)
    w = identify_words(disk)
    assert w[60] | w[61] << 16 == 0x0FFFFFFF
    assert sum(w[100 + i] << (16 * i) for i in range(4)) == sectors
    assert w[1] == 16383


# ------------------------------------------------------------------ data commands
def test_lba28_write_then_read():
    disk = Disk.memory(1 << 20)
    ata = AtaController([disk])
    data = _pattern(3)
    _task(ata, 0x123, 3)
    _out(ata, COMMAND, 0x30)
    for i in range(3):
        assert _in(ata, CONTROL) & DRQ
        _write_words(ata, data[i * 512:(i + 1) * 512])
    assert _in(ata, COMMAND) == DRDY | 0x10
    assert disk.read(0x123, 3) == data and disk.read(0x122, 1) == bytes(512)
    _task(ata, 0x123, 3)
    _out(ata, COMMAND, 0x20)
    assert _read_words(ata, 768) == data
    assert _in(ata, DATA, 2) == 0xFFFF                # no DRQ: the bus floats


def test_lba28_count_zero_is_256_sectors():
    disk = Disk.memory(1 << 20)
    ata = AtaController([disk])
    _task(ata, 10, 0)
    _out(ata, COMMAND, 0x30)
    _write_words(ata, b"\x01" * 256 * 512)
    assert disk.read(10, 256) == b"\x01" * 256 * 512 and disk.read(266, 1) == bytes(512)


def test_lba48_uses_the_high_order_bytes(tmp_path):
    sectors = (1 << 32) + 64                      # sparse 2 TiB: LBA needs bits 32+
    disk = Disk.create(str(tmp_path / "huge.img"), sectors * 512)
    ata = AtaController([disk])
    lba = (1 << 32) + 5
    _task(ata, lba, 2, device=0x40, ext=True)
    _out(ata, CONTROL, 0x80)                      # HOB: read back the previous bytes
    assert [_in(ata, p) for p in (COUNT, LOW, MID, HIGH)] == [0, 0, 1, 0]
    _out(ata, CONTROL, 0)
    assert [_in(ata, p) for p in (COUNT, LOW, MID, HIGH)] == [2, 5, 0, 0]
    _out(ata, COMMAND, 0x34)
    data = _pattern(2, seed=2)
    _write_words(ata, data)
    assert disk.read(lba, 2) == data
    _task(ata, lba, 2, device=0x40, ext=True)
    _out(ata, COMMAND, 0x24)
    assert _read_words(ata, 512) == data
    _task(ata, sectors - 1, 2, device=0x40, ext=True)   # one past the end
    _out(ata, COMMAND, 0x24)
    assert _in(ata, COMMAND) & (ERR | DRQ) == ERR and _in(ata, ERROR) == ABRT | IDNF


def test_chs_addresses():
    disk = Disk.memory(20 * 1008 * 512)
    ata = AtaController([disk])
    c, h, s = 3, 5, 7
    lba = (c * 16 + h) * 63 + s - 1
    disk.write(lba, b"\x77" * 512)
    _out(ata, COUNT, 1)
    _out(ata, LOW, s)
    _out(ata, MID, c & 0xFF)
    _out(ata, HIGH, c >> 8)
    _out(ata, DEVICE, 0xA0 | h)                   # LBA bit clear: CHS
    _out(ata, COMMAND, 0x20)
    assert _read_words(ata, 256) == b"\x77" * 512
    for c, h, s in [(3, 5, 0), (3, 5, 64), (20, 0, 1)]:
        _out(ata, LOW, s)
        _out(ata, MID, c & 0xFF)
        _out(ata, DEVICE, 0xA0 | h)
        _out(ata, COMMAND, 0x20)
        assert _in(ata, COMMAND) & (ERR | DRQ) == ERR
        assert _in(ata, ERROR) == ABRT | IDNF


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("command", [0x00, 0xC8, 0xCA, 0xA1, 0xFF, 0x91])
def test_unknown_commands_abort(command):
    disk = Disk.memory(1 << 20)
    ata = AtaController([disk])
    _task(ata, 0, 1)
    _out(ata, COMMAND, command)
    assert _in(ata, COMMAND) == DRDY | 0x10 | ERR and _in(ata, ERROR) == ABRT
    _write_words(ata, b"\x99" * 512)               # no DRQ: dropped
    assert disk.read(0, 1) == bytes(512)


@pytest.mark.parametrize("lba, count", [(2047, 2), (2048, 1), (0x0FFFFFFF, 1)])
def test_out_of_range_aborts_without_touching_the_disk(lba, count):
    disk = Disk.memory(1 << 20)
    ata = AtaController([disk])
    _task(ata, lba, count)
    _out(ata, COMMAND, 0x30)
    assert _in(ata, COMMAND) & (ERR | DRQ) == ERR and _in(ata, ERROR) == ABRT | IDNF
    _write_words(ata, b"\x99" * 1024)
    assert disk.read(2046, 2) == bytes(1024)


def test_readonly_disk_aborts_writes(tmp_path):
    path = tmp_path / "ro.img"
    path.write_bytes(b"\x22" * 4096)
    disk = Disk.open(str(path), readonly=True)
    ata = AtaController([disk])
    _task(ata, 1, 1)
    _out(ata, COMMAND, 0x30)
    assert _in(ata, COMMAND) & ERR and _in(ata, ERROR) == ABRT
    _write_words(ata, bytes(512))
    assert path.read_bytes() == b"\x22" * 4096
    _out(ata, COMMAND, 0x20)                      # reading is fine
    assert _read_words(ata, 256) == b"\x22" * 512
    _out(ata, COMMAND, 0xE7)
    assert _in(ata, COMMAND) == DRDY | 0x10


def test_absent_slave_reads_zero_and_ignores_commands():
    disk = Disk.memory(1 << 20)
    ata = AtaController([disk])
    _out(ata, DEVICE, 0xF0)                       # slave
    assert _in(ata, COMMAND) == 0 and _in(ata, CONTROL) == 0
    _out(ata, COMMAND, 0xEC)
    _out(ata, DEVICE, 0xE0)
    assert _in(ata, COMMAND) == DRDY | 0x10       # the master saw nothing


def test_slave_is_disk_one():
    a, b = Disk.memory(4096), Disk.memory(4096)
    ata = AtaController([a, b])
    _task(ata, 2, 1, device=0xF0)
    _out(ata, COMMAND, 0x30)
    _write_words(ata, b"\x31" * 512)
    assert b.read(2, 1) == b"\x31" * 512 and a.read(2, 1) == bytes(512)


def test_nien_and_the_interrupt_line():
    ata = AtaController([Disk.memory(4096)])
    _out(ata, COMMAND, 0xE7)
    assert ata.irq
    _in(ata, CONTROL)                             # alternate status leaves it
    assert ata.irq
    _in(ata, COMMAND)                             # status acknowledges it
    assert not ata.irq
    _task(ata, 0, 2)
    _out(ata, COMMAND, 0x30)
    assert not ata.irq                            # a write's first block: no interrupt
    _write_words(ata, bytes(512))
    assert ata.irq                                # the first sector is written
    _in(ata, COMMAND)
    _write_words(ata, bytes(512))
    assert ata.irq and _in(ata, COMMAND) == DRDY | 0x10
    _task(ata, 0, 1)
    _out(ata, COMMAND, 0x20)
    assert ata.irq                                # data-in: at the block, before the data
    _in(ata, COMMAND)
    _read_words(ata, 256)
    assert not ata.irq and _in(ata, COMMAND) == DRDY | 0x10   # and none at the end
    _out(ata, CONTROL, 0x02)                      # nIEN
    _task(ata, 0, 1)
    _out(ata, COMMAND, 0x20)
    _read_words(ata, 256)
    _out(ata, COMMAND, 0x00)
    assert not ata.irq


def test_software_reset_gives_the_signature():
    ata = AtaController([Disk.memory(4096)])
    _task(ata, 0x345678, 9)
    _out(ata, COMMAND, 0x20)
    _out(ata, CONTROL, 0x04)
    _out(ata, CONTROL, 0x00)
    assert [_in(ata, p) for p in (COUNT, LOW, MID, HIGH)] == [1, 1, 0, 0]
    assert _in(ata, COMMAND) == DRDY | 0x10 and _in(ata, ERROR) == 1


# ------------------------------------------------------------------ guest programs
#: write ``count`` sectors at LBA ``lba`` from ESI, read them back to EDI (GNU as; %ebx = count)
_COMMAND = """
    mov $0x1f2, %dx
    mov %bl, %al
    out %al, %dx
    mov $0x1f3, %dx
    mov ${lba}, %al
    out %al, %dx
    inc %dx
    xor %al, %al
    out %al, %dx
    inc %dx
    out %al, %dx
    inc %dx
    mov $0xe0, %al
    out %al, %dx
    inc %dx
    mov ${command}, %al
    out %al, %dx
"""
GUEST = (_COMMAND.format(lba=9, command=0x30) + """
    mov $0x1f0, %dx
    mov $0x10000, %esi
    mov %ebx, %ecx
    shl $8, %ecx
    rep outsw
""" + _COMMAND.format(lba=9, command=0x20) + """
    mov $0x1f0, %dx
    mov $0x40000, %edi
    mov %ebx, %ecx
    shl $7, %ecx
    rep insl
    mov $0x1f7, %dx
    in %dx, %al
    hlt
""")


def _guest(source, disk, *, bulk=True, count=4, steps=None, at=0x10000, a20=True):
    """Run ``source`` at 0x1000 on a flat protected-mode CPU with ``disk`` on the ATA ports;
    the pattern of ``count`` sectors is at ``at``; returns (cpu, the value-handler calls)."""
    ram = np.zeros(1 << 20, np.uint8)
    code = asm(source)
    ram[0x1000:0x1000 + len(code)] = np.frombuffer(code, np.uint8)
    ram[at:at + count * 512] = np.frombuffer(_pattern(count, seed=3), np.uint8)
    cpu = CPU(ram)
    cpu.a20 = a20
    ata = AtaController([disk])
    calls = []

    def port(p, size, value):
        calls.append(p)
        return ata.port(p, size, value)
    for p in (DATA, ERROR, COUNT, LOW, MID, HIGH, DEVICE, COMMAND, CONTROL):
        cpu.on_port(p, port, string=ata.string if bulk and p == DATA else None)
    cpu.eip, cpu.esp, cpu.ebx = 0x1000, 0x9000, count
    if steps is None:
        assert cpu.run(1 << 20) == Status.HLT
    else:
        for _ in range(100_000):
            if cpu.run(steps) == Status.HLT:
                break
    return cpu, calls


def _regs(cpu):
    return [getattr(cpu, r) for r in ("eax", "ecx", "edx", "esi", "edi", "eip")]


def test_guest_moves_sectors_in_bulk():
    disk = Disk.memory(1 << 20)
    cpu, calls = _guest(GUEST, disk, count=40)
    data = _pattern(40, seed=3)
    assert disk.read(9, 40) == data and disk.read(49, 1) == bytes(512)
    assert cpu.ram[0x40000:0x40000 + 40 * 512].tobytes() == data
    assert calls.count(DATA) == 0                  # each string moved in one bulk call
    assert (cpu.esi, cpu.edi, cpu.ecx, cpu.eax & 0xFF) == (0x10000 + 40 * 512,
                                                           0x40000 + 40 * 512, 0, DRDY | 0x10)


def test_a20_off_takes_the_element_path():
    """With the A20 gate closed a linear address is not a RAM index: no bulk transfer."""
    disk = Disk.memory(1 << 20)
    cpu, calls = _guest(GUEST, disk, count=2, a20=False)
    assert disk.read(9, 2) == _pattern(2, seed=3)
    assert calls.count(DATA) > 2 * 256


@pytest.mark.parametrize("steps", [None, 1, 7, 300])
def test_bulk_and_per_element_agree(steps):
    a, b = Disk.memory(1 << 20), Disk.memory(1 << 20)
    fast, _ = _guest(GUEST, a, count=3, steps=steps)
    slow, calls = _guest(GUEST, b, bulk=False, count=3)
    assert calls.count(DATA) == 3 * 256 + 3 * 128
    assert a.read(0, 2048) == b.read(0, 2048)
    assert _regs(fast) == _regs(slow)
    if steps is None:
        assert fast.steps == slow.steps           # every element is still one step
    assert (fast.ram == slow.ram).all()


PARTIAL = _COMMAND.format(lba=2, command=0x30) + """
    mov $0x1f0, %dx
    mov $0x10000, %esi
    mov $100, %ecx
    rep outsw
    mov $156, %ecx
    rep outsw
    mov $44, %ecx
    rep outsw
    hlt
"""


@pytest.mark.parametrize("bulk", [True, False])
def test_strings_split_across_and_past_a_sector(bulk):
    disk = Disk.memory(1 << 20)
    cpu, _ = _guest(PARTIAL, disk, bulk=bulk, count=1)
    assert disk.read(2, 1) == _pattern(1, seed=3) and disk.read(3, 1) == bytes(512)
    assert (cpu.esi, cpu.ecx) == (0x10000 + 600, 0)   # the last 44 words went nowhere


def test_reverse_and_16_bit_address_strings_fall_back():
    disk = Disk.memory(1 << 20)
    source = _COMMAND.format(lba=1, command=0x30) + """
    mov $0x1f0, %dx
    mov $0x101fe, %esi
    mov $256, %ecx
    std
    rep outsw
    cld
    hlt
"""
    cpu, calls = _guest(source, disk, count=1)
    assert calls.count(DATA) == 256
    words = np.frombuffer(_pattern(1, seed=3), "<u2")
    assert np.array_equal(np.frombuffer(disk.read(1, 1), "<u2"), words[::-1])


def test_16_bit_addresses_wrap_inside_the_string():
    source = _COMMAND.format(lba=1, command=0x30) + """
    mov $0x1f0, %dx
    mov $0x5555ff00, %esi
    mov $0x77770100, %ecx
    addr16 rep outsw
    hlt
"""
    a, b = Disk.memory(1 << 20), Disk.memory(1 << 20)
    fast, calls = _guest(source, a, count=1, at=0xFF00)
    slow, _ = _guest(source, b, bulk=False, count=1, at=0xFF00)
    assert calls.count(DATA) == 0                 # two bulk calls: up to the wrap, after it
    assert (fast.esi, fast.ecx) == (0x55550100, 0x77770000) and _regs(fast) == _regs(slow)
    assert a.read(1, 1) == b.read(1, 1) == _pattern(1, seed=3)[:256] + bytes(256)


@pytest.mark.parametrize("bulk", [True, False])
def test_a_segment_limit_inside_the_string_faults_as_element_by_element(bulk):
    """DS with a byte limit of 0xFFF: 128 words go out, the next element is #GP(0) with
    ESI/ECX describing the elements done and EIP on the instruction."""
    w = World()
    code = asm(_COMMAND.format(lba=3, command=0x30).replace("%bl", "$1") + """
    mov $0x30, %ax
    mov %ax, %ds
    mov $0x1f0, %dx
    mov $0xf00, %esi
    mov $256, %ecx
    rep outsw
    hlt
""")
    cpu = w.load(code)
    w.put(0xF00, _pattern(1, seed=4)[:256])
    disk = Disk.memory(1 << 20)
    ata = AtaController([disk])
    if bulk:
        ata.attach(cpu)
    else:
        for p in (DATA, ERROR, COUNT, LOW, MID, HIGH, DEVICE, COMMAND, CONTROL):
            cpu.on_port(p, ata.port)
    assert cpu.run(100_000) == Status.HLT and w.handler_of(cpu) == 13
    assert (cpu.esi, cpu.ecx) == (0x1000, 128)
    assert w.word(0x9000 - 12) == 0x1000 + len(code) - 4    # the pushed EIP: rep outsw
    assert ata.status & DRQ and ata.string(DATA, 2, True, np.zeros(0, np.uint8)) == 0
    w.put(0x1000, bytes(256))                               # finish the sector by hand
    ata.string(DATA, 2, True, np.full(256, 0x42, np.uint8))
    assert disk.read(3, 1) == _pattern(1, seed=4)[:256] + b"\x42" * 256


def test_ata_ports_are_answered_during_a_jump():
    m = machine(disks=[1 << 20])
    code = asm(_COMMAND.format(lba=4, command=0x30).replace("%bl", "$1") + f"""
    mov $0x1f0, %dx
    mov ${DEST + 0x800:#x}, %esi
    mov $256, %ecx
    rep outsw
    mov (%esp), %eax
    call *%eax
""")
    page = code.ljust(0x800, b"\0") + b"\x66" * 512
    m.kexec_load(DEST, [Segment(page, DEST, 0x1000)], P)
    assert reboot(m) == 0 and m.state == "kernel"
    assert m.disks[0].read(4, 1) == b"\x66" * 512
