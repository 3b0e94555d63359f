"""The BIOS ROM at 0xF0000-0xFFFFF is read-only to the guest (SPEC §14.2): every write path of
the CPU (plain stores, REP STOS/MOVS in bulk, the fast path, paged and unpaged, real and
protected mode, REP INSW from the ATA controller) drops the bytes that fall in it, writes
next to it land, and the BIOS still works afterwards.  Python writes (``m.ram``) are not
guest writes."""
import numpy as np
import pytest

import kjcore
from kjcore.bios import layout as L
from kjcore.constants import PAGE_OFFSET
from kjcore.cpu import Status
from kjcore.devices.disk import Disk

CODE = 0x8000


def bios_machine(**kw):
    m = kjcore.Machine(ram_size=8 << 20, **kw)
    m.cpu.a20 = True
    return m


def put(m, at, code):
    m.ram[at:at + len(code)] = np.frombuffer(code, np.uint8)


def flat(m, code):
    """Protected mode, paging off, flat segments, ``code`` at CODE."""
    put(m, CODE, code)
    m.cpu.reset_flat()
    m.cpu.eip, m.cpu.esp = CODE, 0x7000


def real(m, code):
    """Real mode at 0000:CODE, stack at 0000:7000."""
    put(m, CODE, code)
    cpu = m.cpu
    cpu.reset()
    cpu.load_segment("cs", 0, 0, 0xFFFF, 0x93)
    cpu.load_segment("ss", 0, 0, 0xFFFF, 0x93)
    cpu.eip, cpu.esp = CODE, 0x7000


# mov dword [0xF0100], 0x12345678; mov edi, 0xEFF00; mov ecx, 0x100; mov eax, 0x5A5A5A5A;
# cld; rep stosd; mov dword [0xEFFFE], 0xAABBCCDD (straddles the ROM start);
# mov esi, 0x9000; mov edi, 0xFFF00; mov ecx, 0x200; rep movsd; hlt
PROTECTED = bytes.fromhex(
    "c70500010f0078563412"
    "bf00ff0e00" "b900010000" "b85a5a5a5a" "fc" "f3ab" "c705feff0e00ddccbbaa"
    "be00900000" "bf00ff0f00" "b900020000" "f3a5" "f4")


def check_rom(m, rom):
    assert m.ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE].tobytes() == rom


@pytest.mark.parametrize("fast", [True, False])
def test_protected_mode_writes_into_the_rom_are_dropped(fast):
    m = bios_machine()
    rom = m.ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE].tobytes()
    m.ram[0x9000:0xA000] = 0x77
    flat(m, PROTECTED)
    m.cpu._s[kjcore.cpu.state.NO_FAST] = 0 if fast else 1
    assert m.cpu.run(10_000) == Status.HLT
    check_rom(m, rom)
    assert m.ram[0xEFFFE:0xF0000].tobytes() == b"\xdd\xcc"          # the part below the ROM
    assert m.ram[0xEFF00:0xEFFFE].tobytes() == b"\x5a" * 0xFE        # rep stosd below it
    # rep movsd from 0x9000 to 0xFFF00: the 256 bytes up to 1 MiB are ROM, the rest lands
    assert m.ram[0x100000:0x100700].tobytes() == b"\x77" * 0x700
    assert m.cpu.ecx == 0 and m.cpu.edi == 0x100700


def test_real_mode_writes_into_the_rom_are_dropped_and_the_bios_still_works():
    m = bios_machine()
    rom = m.ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE].tobytes()
    # mov ax,0xf000; mov es,ax; mov ds,ax; mov di,0x100; mov cx,0x20; mov al,0xaa; cld;
    # rep stosb; mov word [0x10c], 0x1234 (the INT 13h stub); push ds; pop ss; mov sp,0;
    # push ax (wraps to F000:FFFE, the model byte); xor ax,ax; mov ss,ax; mov sp,0x7000;
    # mov ax,0x0e41; int 0x10; hlt
    code = bytes.fromhex("b800f08ec08ed8bf0001b92000b0aafcf3aa"
                         "c7060c013412" "1e17bc000050" "31c08ed0bc0070"
                         "b8410ecd10f4")
    real(m, code)
    assert m.cpu.run(10_000) == Status.HLT
    check_rom(m, rom)
    assert m.cpu.debugcon.endswith(b"A") and m.vga_text().startswith("A")


def test_paged_writes_into_the_rom_are_dropped():
    """Through the first kernel's direct map: the TLB never holds a writable ROM page, so the
    second store to the same page walks again and is dropped too."""
    m = bios_machine()
    rom = m.ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE].tobytes()
    va = PAGE_OFFSET + L.ROM_BASE
    # mov dword [va], eax; mov dword [va + 4], eax; mov edi, va + 0x800; mov ecx, 0x40;
    # rep stosd; mov dword [PAGE_OFFSET + 0x9000], eax; hlt
    code = (b"\xa3" + va.to_bytes(4, "little") + b"\xa3" + (va + 4).to_bytes(4, "little")
            + b"\xbf" + (va + 0x800).to_bytes(4, "little") + bytes.fromhex("b940000000f3ab")
            + b"\xa3" + (PAGE_OFFSET + 0x9000).to_bytes(4, "little") + b"\xf4")
    put(m, CODE, code)
    m.cpu.eip, m.cpu.eax = PAGE_OFFSET + CODE, 0xDEADBEEF
    assert m.cpu.cr0 & 0x80000000
    assert m.cpu.run(10_000) == Status.HLT
    check_rom(m, rom)
    assert m.ram[0x9000:0x9004].tobytes() == (0xDEADBEEF).to_bytes(4, "little")


def test_rep_insw_from_the_ata_disk_into_the_rom_is_dropped():
    disk = Disk.memory(1 << 20)
    disk.write(0, bytes(range(256)) * 2)
    m = bios_machine(disks=[disk])
    rom = m.ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE].tobytes()
    # READ SECTORS of LBA 0 (1F2=1, 1F3..1F5=0, 1F6=E0, 1F7=20) then rep insw to F000:0000
    code = bytes.fromhex(
        "ba f2 01 b0 01 ee" "42 30 c0 ee" "42 ee" "42 ee" "42 b0 e0 ee" "42 b0 20 ee"
        "b8 00 f0 8e c0 31 ff b9 00 01 ba f0 01 fc f3 6d f4".replace(" ", ""))
    real(m, code)
    assert m.cpu.run(10_000) == Status.HLT
    check_rom(m, rom)
    assert m.cpu.ecx == 0 and m.cpu.edi & 0xFFFF == 0x200


def test_python_writes_and_machines_without_a_bios():
    m = bios_machine()
    m.ram[L.ROM_BASE] = 0x90                       # Python is not the guest
    assert m.ram[L.ROM_BASE] == 0x90 and m.cpu.rom == (L.ROM_BASE, L.ROM_BASE + L.ROM_SIZE)
    m.cpu.reset()
    assert m.cpu.rom == (L.ROM_BASE, L.ROM_BASE + L.ROM_SIZE)          # kept by a reset
    plain = kjcore.Machine(ram_size=8 << 20, bios=False)
    assert plain.cpu.rom is None
    flat(plain, PROTECTED)
    assert plain.cpu.run(10_000) == Status.HLT
    assert plain.ram[0xF0000:0xF0300].tobytes() == b"\xbb\xaa" + b"\x5a" * 0x2FE
    with pytest.raises(ValueError, match="physical range"):
        plain.cpu.rom = (0x2000, 0x1000)


def test_a_kexec_destination_in_the_rom_is_swapped_alike_by_both_engines():
    """The swap passes are the kexec engine's, not the guest's: a preserve-context image whose
    destination lies in the ROM is swapped in and back identically by the emulated routine and
    the native engine (invariant 13), and the ROM is whole again afterwards."""
    dest = L.ROM_BASE + 0x8000
    seen = []
    for engine in ("emulated", "native"):
        m = kjcore.Machine(ram_size=2 << 20, kernel_reserved=64 << 10, engine=engine)
        rom = m.ram[L.ROM_BASE:L.ROM_BASE + L.ROM_SIZE].tobytes()
        # two pages: a RET (the image returns at once) and data
        m.kexec_load(dest, [kjcore.Segment(b"\xc3" + bytes(4095) + b"\x5a" * 4096, dest,
                                           0x2000)], kjcore.KEXEC_PRESERVE_CONTEXT)
        result = m.kernel_kexec()
        assert m.state == "kernel" and result.pages_swapped == 4
        check_rom(m, rom)
        assert m.cpu.rom == (L.ROM_BASE, L.ROM_BASE + L.ROM_SIZE)
        seen.append((m.ram.copy(), result.steps, m.cpu.eax))
    assert np.array_equal(seen[0][0], seen[1][0]) and seen[0][1:] == seen[1][1:]
