"""Machine(bios=True) (SPEC §14.2): the BIOS installed in RAM, m.e820, the service port wired to
the dispatcher on the kjcore CPU (a 16-bit code segment at the ROM stands in for real mode)."""
import gc
import json
import weakref

import pytest

import kjcore
from kjcore import machine_state, store
from kjcore.bios import layout as L
from kjcore.cpu import Status

FRAME = 0x7FFA              # the caller's IP, CS, FLAGS (SS base 0, SP = FRAME)


def machine():
    m = kjcore.Machine(ram_size=8 << 20, bios=True)
    m.cpu.a20 = True
    return m


def enter(m, vector, eax, flags=0x0203):
    """Put the CPU at the ROM stub of ``vector`` as an INT would, stopping at its IRET."""
    cpu = m.cpu
    cpu.cr0 = 0x11          # protected mode without paging: linear = physical
    cpu.flush_tlb()
    cpu.load_segment("cs", L.ROM_SEGMENT, L.ROM_BASE, 0xFFFF, 0x9B)   # 16-bit code
    cpu.load_segment("ss", 0, 0, 0xFFFF, 0x93)
    m.ram[FRAME:FRAME + 6] = list(b"\x34\x12\x00\x20") + [flags & 0xFF, flags >> 8]
    cpu.esp, cpu.eax, cpu.eip = FRAME, eax, L.stub_offset(vector)
    cpu.breakpoints.clear()
    cpu.breakpoints.add(L.ROM_BASE + L.stub_offset(vector) + 2)     # the stub's iret


def saved_flags(m):
    return int(m.ram[FRAME + 4]) | int(m.ram[FRAME + 5]) << 8


def test_machine_without_bios():
    m = kjcore.Machine(ram_size=16 << 20, bios=False)
    assert m.bios is None and m.e820 is None and not m.ram[:0x500].any()


def test_bios_machine_installs_the_bios_and_reports_e820():
    m = machine()
    assert m.e820 == L.e820(8 << 20)
    assert m.ram[4 * 0x13:4 * 0x13 + 4].view("<u4")[0] == 0xF000 << 16 | L.stub_offset(0x13)
    assert m.ram[L.BDA_MEMORY_KIB:L.BDA_MEMORY_KIB + 2].view("<u2")[0] == 639
    for frame in L.bios_frames():
        assert not m.allocator.is_free(frame)


def test_allocator_and_e820_agree_below_1_mib():
    m = kjcore.Machine(ram_size=1 << 20, kernel_reserved=64 << 10, bios=True)
    usable = {f for base, length, kind in m.e820 if kind == 1
              for f in range(-(-base // 4096), (base + length) // 4096)}
    free = set(m.allocator.state().tolist())
    assert free == usable - set(range(16))          # the first kernel keeps its 64 KiB
    assert free.isdisjoint(L.bios_frames()) and len(free) == 0x9F - 16
    plain = kjcore.Machine(ram_size=1 << 20, kernel_reserved=64 << 10, bios=False)
    assert plain.free_frames == 256 - 16
    with pytest.raises(ValueError):
        m.allocator.free(0xA0)                      # a BIOS frame is never free-able
    with pytest.raises(ValueError, match="1 MiB"):
        kjcore.Machine(ram_size=512 << 10, kernel_reserved=64 << 10, bios=True)


def test_service_port_trap_runs_the_service_on_the_cpu():
    m = machine()
    enter(m, 0x12, eax=0x1200)
    assert m.cpu.run(100) == Status.BREAK
    assert m.cpu.eax & 0xFFFF == 639 and not saved_flags(m) & 1 and not m.cpu.eflags & 1


def test_teletype_reaches_screen_and_console():
    m = machine()
    enter(m, 0x10, eax=0x0E00 | ord("K"))
    assert m.cpu.run(100) == Status.BREAK
    assert m.ram[L.VGA_TEXT_BASE] == ord("K") and m.cpu.debugcon.endswith(b"K")


def test_keyboard_wait_stops_the_run_idle_until_a_key_is_queued():
    m = machine()
    enter(m, 0x16, eax=0x0000)
    stub = L.stub_offset(0x16)
    for _ in range(2):                          # idle again and again, the OUT not done
        assert m.cpu.run(100) == Status.IDLE
        assert m.cpu.eip == stub and m.cpu.eax == 0 and m.cpu.steps == 0
    m.keyboard.feed(b"qr")
    assert m.cpu.run(100) == Status.BREAK
    assert m.cpu.eax & 0xFFFF == ord("q") and list(m.keyboard) == [ord("r")]
    enter(m, 0x16, eax=0x0000)
    assert m.cpu.run(100) == Status.BREAK and m.cpu.eax & 0xFFFF == ord("r")
    enter(m, 0x16, eax=0x0000)
    with pytest.raises(kjcore.cpu.GuestIdle, match="waits for input"):
        m.cpu.raise_for_status(m.cpu.run(100))


def test_saved_bios_machine_reopens_with_its_bios(tmp_path):
    m = machine()
    m.ram[L.BDA_CURSOR] = 7                     # BIOS state lives in RAM
    m.save(tmp_path / "m")
    m2 = kjcore.Machine.open(tmp_path / "m")
    assert m2.bios is not None and m2.e820 == m.e820 and m2.ram[L.BDA_CURSOR] == 7
    assert kjcore.Machine.open(tmp_path / "m").bios.cursor() == (0, 7)
    plain = kjcore.Machine(ram_size=8 << 20, bios=False)
    plain.save(tmp_path / "p")
    assert kjcore.Machine.open(tmp_path / "p").bios is None


def _edit_saved_config(path, edit):
    """Edit the saved config of machine directory ``path`` (checksums recomputed)."""
    meta = json.loads((path / "machine.json").read_text())
    edit(meta["state"]["config"])
    meta["meta_sha256"] = store._body_digest(meta)
    (path / "machine.json").write_text(json.dumps(meta))


def test_saved_config_records_bios_and_an_old_save_without_it_has_none(tmp_path):
    kjcore.Machine(ram_size=8 << 20, bios=False).save(tmp_path / "old")
    assert json.loads((tmp_path / "old" / "machine.json").read_text())[
        "state"]["config"]["bios"] is False
    _edit_saved_config(tmp_path / "old", lambda c: c.pop("bios"))   # saved before the field
    m = kjcore.Machine.open(tmp_path / "old")
    assert m.bios is None and m.cpu.rom is None
    assert machine_state.config_arguments({"ram_size": 1 << 20})["bios"] is False
    machine().save(tmp_path / "bad")
    _edit_saved_config(tmp_path / "bad", lambda c: c.update(bios="yes"))
    with pytest.raises(kjcore.errors.DamagedMachineFile, match="bios"):
        kjcore.Machine.open(tmp_path / "bad")


def test_machine_new_no_bios(tmp_path, capsys):
    from kjcore.commands import main as cli
    assert cli.main(["machine", "new", str(tmp_path / "a"), "--ram", "16M"]) == 0
    assert cli.main(["machine", "new", str(tmp_path / "b"), "--ram", "16M", "--no-bios"]) == 0
    assert kjcore.Machine.open(tmp_path / "a").bios is not None
    assert kjcore.Machine.open(tmp_path / "b").bios is None
    capsys.readouterr()
    for name, flagged in (("b", True), ("a", False)):
        assert cli.main(["inspect", str(tmp_path / name)]) == 0
        ram_line = next(x for x in capsys.readouterr().out.splitlines() if "  RAM " in x)
        assert ram_line.endswith(", no_bios") == flagged
    assert cli.main(["machine", "new", str(tmp_path / "c"), "--ram", "512K",
                     "--kernel-reserved", "64K"]) == 1                   # the ROM ends at 1M
    assert cli.main(["machine", "new", str(tmp_path / "c"), "--ram", "512K",
                     "--kernel-reserved", "64K", "--no-bios"]) == 0
    capsys.readouterr()
    assert cli.main(["fuzz", "-n", "10", "--ram", "512K"]) == 1     # check_layouts: a BIOS
    assert "needs ram_size=0x80000 of at least 1 MiB" in capsys.readouterr().err


def test_low_memory_destination_takes_no_bios_frame_as_source():
    m = kjcore.Machine(ram_size=2 << 20, kernel_reserved=64 << 10, bios=True)
    m.kexec_load(0x90000, [kjcore.Segment(b"\xf4" * 0x8000, 0x90000, 0x8000)],
                 kjcore.KEXEC_PRESERVE_CONTEXT)
    image = m.kexec_image
    used = {p // 4096 for p in list(image.source_pages()) + list(image.indirection_pages())}
    used |= {image.control_page // 4096, image.swap_page // 4096}
    assert used.isdisjoint(L.bios_frames())


def test_a_bios_machine_is_freed_by_reference_counting():
    gc.disable()
    try:
        m = kjcore.Machine(ram_size=2 << 20, bios=True, kernel_reserved=64 << 10)
        ref = weakref.ref(m)
        del m
        assert ref() is None
    finally:
        gc.enable()


def test_a_machine_has_a_bios_by_default():
    m = kjcore.Machine(ram_size=16 << 20)              # SPEC §14.2: bios=True is the default
    assert m.bios is not None and m.e820 == L.e820(16 << 20)
    assert m.cpu.rom == (L.ROM_BASE, L.ROM_BASE + L.ROM_SIZE)
    with pytest.raises(ValueError, match="bios=False"):
        kjcore.Machine(ram_size=512 << 10, kernel_reserved=64 << 10)
    assert kjcore.Machine(ram_size=512 << 10, kernel_reserved=64 << 10, bios=False).bios is None


def test_int13_extended_read_from_real_mode_on_an_ata_disk():
    """The seed's use case in small: real-mode code calls INT 13h AH=42h through the IVT and
    the ROM stub; the sector comes from the machine's own disk (kjcore.devices)."""
    from kjcore.devices.disk import Disk
    disk = Disk.memory(1 << 20)
    disk.write(7, bytes(range(256)) * 2)
    m = kjcore.Machine(ram_size=8 << 20, bios=True, disks=[disk])
    dap = bytes([0x10, 0, 1, 0]) + (0x8000 << 16).to_bytes(4, "little") + (7).to_bytes(8, "little")
    m.ram[0x7E00:0x7E10] = list(dap)
    # xor ax,ax; mov ds,ax; mov si,0x7e00; mov ah,0x42; mov dl,0x80; int 0x13; hlt
    code = bytes.fromhex("31c08ed8be007eb442b280cd13f4")
    m.ram[0x7C00:0x7C00 + len(code)] = list(code)
    cpu = m.cpu
    cpu.reset()
    cpu.load_segment("cs", 0, 0, 0xFFFF, 0x93)
    cpu.load_segment("ss", 0, 0, 0xFFFF, 0x93)
    cpu.eip, cpu.esp = 0x7C00, 0x7000
    assert cpu.run(10_000) == Status.HLT
    assert not cpu.eflags & 1 and cpu.eax >> 8 & 0xFF == 0
    assert m.ram[0x80000:0x80200].tobytes() == bytes(range(256)) * 2
