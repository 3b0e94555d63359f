"""The BIOS services (SPEC §14.2) through the dispatcher, against plain-Python models."""
import datetime

import numpy as np
import pytest
from bios_world import call, world

from kjcore.bios import layout as L
from kjcore.bios import services as S
from kjcore.cpu import Status

CF, ZF = 0x0001, 0x0040


def ah(cpu):
    return (cpu.eax >> 8) & 0xFF


def screen(ram):
    cells = ram[L.VGA_TEXT_BASE:L.VGA_TEXT_BASE + 2 * 80 * 25]
    return "\n".join(cells[0::2][r * 80:(r + 1) * 80].tobytes().decode("latin-1")
                     for r in range(25))


def test_install_writes_ivt_bda_ebda_and_rom():
    bios, cpu = world()
    ram = bios.ram
    ivt = ram[:0x400].view("<u4")
    for v in range(256):
        off = L.stub_offset(v) if v in L.SERVICE_VECTORS else L.DEFAULT_STUB_OFFSET
        assert ivt[v] == 0xF000 << 16 | off, hex(v)
    assert ram[L.ROM_BASE:].tobytes()[:L.ROM_SIZE] == S.ROM
    assert ram[0x40E:0x410].view("<u2")[0] == 0x9FC0
    assert ram[0x413:0x415].view("<u2")[0] == 639
    assert ram[L.EBDA_BASE] == 1 and ram[L.BDA_VIDEO_MODE] == 3
    assert screen(ram).strip() == ""


def test_e820_walk_matches_the_layout_model():
    bios, cpu = world(ram_size=48 << 20)
    model = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xA0000, 0x20000, 2),
             (0xF0000, 0x10000, 2), (0x100000, (48 << 20) - 0x100000, 1)]
    got, ebx = [], 0
    for _ in range(10):
        wait, flags = call(bios, cpu, 0x15, eax=0xE820, edx=S.SMAP, ebx=ebx, ecx=24,
                           es=0x0100, edi=0x20)
        assert not wait and not flags & CF
        assert (cpu.eax, cpu.ecx) == (S.SMAP, 20)
        raw = bios.ram[0x1020:0x1034].tobytes()
        got.append((int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little"),
                    int.from_bytes(raw[16:], "little")))
        ebx = cpu.ebx
        if not ebx:
            break
    assert got == model == bios.e820
    # Holes are not RAM: nothing usable overlaps the BIOS areas.
    for base, length, kind in got:
        if kind == 1:
            assert base + length <= L.EBDA_BASE or base >= L.HIGH_MEMORY


@pytest.mark.parametrize("regs", [dict(edx=0x12345678, ebx=0, ecx=20),
                                  dict(edx=S.SMAP, ebx=0, ecx=19),
                                  dict(edx=S.SMAP, ebx=5, ecx=20),
                                  dict(edx=S.SMAP, ebx=0xFFFFFFFF, ecx=20)])
def test_e820_bad_calls_are_unsupported(regs):
    bios, cpu = world()
    _, flags = call(bios, cpu, 0x15, eax=0xE820, es=0x100, edi=0, **regs)
    assert flags & CF and ah(cpu) == 0x86 and bios.unsupported == 1


def test_memory_sizes():
    bios, cpu = world(ram_size=40 << 20)
    call(bios, cpu, 0x12)
    assert cpu.eax & 0xFFFF == 639
    call(bios, cpu, 0x11)
    assert cpu.eax & 0xFFFF == L.EQUIPMENT
    call(bios, cpu, 0x15, eax=0x8800)
    assert cpu.eax & 0xFFFF == 39 * 1024
    _, flags = call(bios, cpu, 0x15, eax=0xE801)
    assert not flags & CF
    assert (cpu.eax & 0xFFFF, cpu.ecx & 0xFFFF) == (0x3C00, 0x3C00)
    assert (cpu.ebx & 0xFFFF, cpu.edx & 0xFFFF) == (24 * 16, 24 * 16)


def test_a20_services_drive_cpu_a20():
    bios, cpu = world()
    call(bios, cpu, 0x15, eax=0x2400)
    assert cpu.a20 is False
    call(bios, cpu, 0x15, eax=0x2402)
    assert cpu.eax & 0xFFFF == 0
    call(bios, cpu, 0x15, eax=0x2401)
    assert cpu.a20 is True
    call(bios, cpu, 0x15, eax=0x2402)
    assert cpu.eax & 0xFFFF == 1
    _, flags = call(bios, cpu, 0x15, eax=0x2403)
    assert cpu.ebx & 0xFFFF == 3 and not flags & CF


def test_a20_off_wraps_service_buffers_at_1_mib():
    bios, cpu = world()
    cpu.a20 = False
    # ES:DI = FFFF:0020 is 0x100010, which wraps to 0x10 with A20 off.
    call(bios, cpu, 0x15, eax=0xE820, edx=S.SMAP, ebx=0, ecx=20, es=0xFFFF, edi=0x20)
    assert bios.ram[0x10:0x24].tobytes()[8:16] == (0x9FC00).to_bytes(8, "little")
    assert not bios.ram[0x100010:0x100024].any()


def test_teletype_write_string_cursor_and_mode():
    bios, cpu = world()
    for ch in b"Hi\r\nA":
        call(bios, cpu, 0x10, eax=0x0E00 | ch)
    rows = screen(bios.ram).splitlines()
    assert rows[0].rstrip() == "Hi" and rows[1].rstrip() == "A"
    assert cpu.debugcon == b"Hi\r\nA"
    call(bios, cpu, 0x10, eax=0x0300, ebx=0)
    assert (cpu.edx >> 8 & 0xFF, cpu.edx & 0xFF) == (1, 1)
    call(bios, cpu, 0x10, eax=0x0200, ebx=0, edx=0x0A05)
    assert bios.cursor() == (10, 5)
    bios.ram[0x3000:0x3005] = np.frombuffer(b"hello", dtype=np.uint8)
    call(bios, cpu, 0x10, eax=0x1301, ebx=0x001E, ecx=5, edx=0x0300, es=0x0300, ebp=0)
    assert screen(bios.ram).splitlines()[3].startswith("hello")
    assert bios.ram[L.VGA_TEXT_BASE + 2 * 240 + 1] == 0x1E
    assert bios.cursor() == (3, 5) and cpu.debugcon.endswith(b"hello")
    call(bios, cpu, 0x10, eax=0x0F00)
    assert (cpu.eax & 0xFFFF, cpu.ebx >> 8 & 0xFF) == (80 << 8 | 3, 0)


def test_teletype_scrolls_at_the_bottom():
    bios, cpu = world()
    for i in range(26):
        for ch in b"%d\r\n" % i:
            call(bios, cpu, 0x10, eax=0x0E00 | ch)
    rows = screen(bios.ram).splitlines()
    assert rows[0].rstrip() == "2" and rows[23].rstrip() == "25" and rows[24].strip() == ""


def test_keyboard_queue_and_wait():
    bios, cpu = world()
    _, flags = call(bios, cpu, 0x16, eax=0x0100)
    assert flags & ZF
    wait, _ = call(bios, cpu, 0x16, eax=0x0000)
    assert wait                                   # the stub halts and asks again
    bios.keyboard.feed("ok")
    _, flags = call(bios, cpu, 0x16, eax=0x0100)
    assert not flags & ZF and cpu.eax & 0xFFFF == ord("o") and len(bios.keyboard) == 2
    wait, flags = call(bios, cpu, 0x16, eax=0x0000)
    assert not wait and cpu.eax & 0xFFFF == ord("o") and list(bios.keyboard) == [ord("k")]


def test_clock_is_deterministic_and_moves_with_waits():
    bios, cpu = world()
    call(bios, cpu, 0x1A, eax=0x0400)
    assert (cpu.ecx & 0xFFFF, cpu.edx & 0xFFFF) == (0x2008, 0x1009)
    call(bios, cpu, 0x1A, eax=0x0200)
    assert (cpu.ecx & 0xFFFF, cpu.edx >> 8 & 0xFF) == (0x1200, 0)
    call(bios, cpu, 0x1A, eax=0x0000)
    noon = (cpu.ecx & 0xFFFF) << 16 | cpu.edx & 0xFFFF
    assert noon == S.TICKS_PER_DAY // 2
    _, flags = call(bios, cpu, 0x15, eax=0x8600, ecx=0x0393, edx=0x8700)   # 60 s
    assert not flags & CF and bios.now() == S.EPOCH + datetime.timedelta(seconds=60)
    call(bios, cpu, 0x1A, eax=0x0200)
    assert cpu.ecx & 0xFFFF == 0x1201
    call(bios, cpu, 0x1A, eax=0x0000)
    assert ((cpu.ecx & 0xFFFF) << 16 | cpu.edx & 0xFFFF) == (
        (12 * 3600 + 60) * S.TICKS_PER_DAY // 86400)


@pytest.mark.parametrize("vector, eax", [(0x10, 0x4F00), (0x13, 0x0500), (0x15, 0xC000),
                                         (0x16, 0x1000), (0x1A, 0x0100), (0x15, 0xE821)])
def test_unknown_functions_set_cf_and_count(vector, eax):
    bios, cpu = world(disks=[])
    _, flags = call(bios, cpu, vector, eax=eax, edx=0x80)
    assert flags & CF and ah(cpu) == 0x86 and bios.unsupported == 1


def test_hooks_run_first_and_may_decline():
    bios, cpu = world()
    seen = []
    bios.on_service(0x12, lambda c: seen.append("declined") and False)
    bios.on_service(0x12, lambda c: seen.append("handled") or setattr(c, "eax", 42) or True)
    call(bios, cpu, 0x12)
    assert seen == ["handled"] and cpu.eax == 42
    bios.on_service(0x12, None)
    call(bios, cpu, 0x12)
    assert cpu.eax & 0xFFFF == 639
    with pytest.raises(ValueError):
        bios.on_service(0x21, lambda c: True)
    with pytest.raises(TypeError):
        bios.on_service(0x10, 5)


def test_trap_finds_the_vector_from_the_stub_address():
    bios, cpu = world()
    call(bios, cpu, 0x11)                       # sets up the stack frame
    cpu.cs.base, cpu.eip = L.ROM_BASE, L.stub_offset(0x12)
    assert bios.trap(cpu) is None and cpu.eax & 0xFFFF == 639
    cpu.eax = 0
    cpu.eip = L.stub_offset(0x12) + 1           # an `out` to the port from elsewhere
    assert bios.trap(cpu) is None and cpu.eax == 0
    cpu.eip = L.stub_offset(0x16)               # INT 16h AH=00h, no key: the run goes idle
    assert bios.trap(cpu) is Status.IDLE and cpu.eax == 0
