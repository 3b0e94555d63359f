"""Machine.panic: crash_kexec, the crash notes and the crash image at entry (SPEC §17)."""
import numpy as np
import pytest
from kdump_world import CRASHKERNEL

import kjcore
from kjcore import KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT, Segment
from kjcore.commands import main as cli
from kjcore.cpu import Status
from kjcore.first_kernel import STACK_BOTTOM, STACK_TOP
from kjcore.kdump.crash import KernelPanic, crash_registers
from kjcore.kdump.notes import (
    CRASH_NOTES,
    KEXEC_NOTE_BYTES,
    NT_PRSTATUS,
    parse_notes,
    parse_prstatus,
)
from kjcore.relocate import jump_back_entry
from kjcore.store import open_machine, save_machine

MiB = 1 << 20
ENTRY = CRASHKERNEL[0] + 0x100000
HLT = b"\xf4"


def crash_machine(code=HLT, flags=KEXEC_ON_CRASH):
    m = kjcore.Machine(ram_size=64 * MiB, crashkernel=CRASHKERNEL)
    m.kexec_load(ENTRY, [Segment(code, ENTRY, 0x2000)], flags)
    return m


def saved_note(m):
    notes = parse_notes(m.ram[CRASH_NOTES:CRASH_NOTES + 1024])
    assert [(n.name, n.type) for n in notes] == [(b"CORE", NT_PRSTATUS)]
    return parse_prstatus(notes[0].desc)


def test_panic_without_crash_image_stops_the_kernel():
    m = kjcore.Machine(ram_size=16 * MiB)
    before = m.ram.copy()
    r = m.panic("no dump")
    assert (r.state, r.crash_kexec, r.result) == ("panicked", "no crash image", None)
    assert r.message == "Kernel panic - not syncing: no dump" and m.state == "panicked"
    assert np.array_equal(m.ram, before)               # no crash notes without a crash image
    assert not m.kexec_lock.locked()


def test_panic_runs_the_crash_image_with_the_registers_saved():
    m = crash_machine()
    m.cpu.ebx, m.cpu.esi = 0x1234, 0xCAFE               # the panicking CPU's registers
    expected = crash_registers(m.cpu)
    before = m.ram.copy()
    r = m.panic("oops")
    assert (r.state, r.crash_kexec, m.state) == ("crash-kernel", "ran", "crash-kernel")
    assert r.result.status == Status.HLT and r.result.pages_swapped == 0
    note = saved_note(m)
    assert {k: note[k] for k in expected} == expected and note["pid"] == 1
    assert (note["ebx"], note["esi"], note["orig_eax"]) == (0x1234, 0xCAFE, 0xFFFFFFFF)
    # registers at the crash image's entry (SPEC 7.7): general registers zero, paging off,
    # stack at the top of the control page, interrupts off
    cpu, control = m.cpu, m.kexec_crash_image.control_page
    assert cpu.eip == ENTRY + 1
    assert [cpu.eax, cpu.ebx, cpu.ecx, cpu.edx, cpu.esi, cpu.edi, cpu.ebp] == [0] * 7
    assert cpu.esp == control + 4096 and not cpu.cr0 & 0x80000000 and not cpu.eflags & 0x200
    # memory: outside the crash region only the crash notes, the kernel stack and the kexec
    # page tables changed (the image was loaded in place at kexec_load time)
    changed = np.flatnonzero(m.ram != before)
    allowed = [(CRASH_NOTES, CRASH_NOTES + KEXEC_NOTE_BYTES), (STACK_BOTTOM, STACK_TOP),
               *[(t, t + 4096) for t in m.first_kernel.kexec_tables()],
               (CRASHKERNEL[0], sum(CRASHKERNEL))]
    assert all(any(a <= x < b for a, b in allowed) for x in changed)
    assert bytes(m.ram[ENTRY:ENTRY + 1]) == HLT


def test_panic_with_the_kexec_lock_held_runs_nothing():
    m = crash_machine()
    before = m.ram.copy()
    with m.kexec_lock:
        with pytest.raises(KernelPanic, match="kexec lock is held"):
            m.panic("during a load")
    assert m.state == "panicked" and np.array_equal(m.ram, before)
    with pytest.raises(RuntimeError, match="not running"):
        m.kexec_load(0, [], KEXEC_ON_CRASH)


def test_panic_from_a_device_callback_during_a_jump():
    m = crash_machine()
    m.kexec_load(0x800000, [Segment(b"\xc3", 0x800000, 0x1000)], KEXEC_PRESERVE_CONTEXT)

    class Panicking:
        def suspend(self, state):
            m.panic("in suspend")

        def resume(self, state):
            pass
    m.devices = [Panicking()]
    with pytest.raises(KernelPanic):
        m.reboot(kjcore.LINUX_REBOOT_MAGIC1, kjcore.LINUX_REBOOT_MAGIC2,
                 kjcore.LINUX_REBOOT_CMD_KEXEC)
    assert m.state == "panicked" and not m.kexec_lock.locked()


def test_panic_twice():
    m = crash_machine()
    snap = m.snapshot()
    m.panic("first")
    first = m.ram.copy()
    with pytest.raises(RuntimeError, match="state='crash-kernel'"):
        m.panic("second")
    m.restore(snap)
    assert m.state == "kernel"
    m.panic("first")
    assert np.array_equal(m.ram, first) and m.state == "crash-kernel"


def test_a_preserve_flagged_crash_image_that_returns():
    m = crash_machine(code=b"\xc3", flags=KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT)
    image = m.kexec_crash_image
    assert image.swap_page is None and image.preserve_context
    r = m.panic("ret")
    # after the ret ESP = 0 + 4096: the routine read the re-entry point at 0x1000 (the kernel
    # text) and returned to crash_kexec
    assert r.state == "panicked" and r.crash_kexec == "ran"
    assert image.start == int.from_bytes(bytes(m.ram[0x1000:0x1004]), "little")
    assert not m.kexec_lock.locked()


def test_a_preserve_flagged_crash_image_that_halts_owns_the_machine():
    m = crash_machine(flags=KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT)
    r = m.panic()
    # ESP = 0 + 4096 ("swap page" 0): the jump-back address is pushed at physical 0xffc
    assert r.state == "crash-kernel" and m.cpu.esp == 0xFFC
    assert int.from_bytes(bytes(m.ram[0xFFC:0x1000]), "little") == \
        jump_back_entry(m.kexec_crash_image.control_page)


def test_panic_message_is_checked_and_cut():
    m = kjcore.Machine(ram_size=16 * MiB)
    with pytest.raises(TypeError):
        m.panic(b"bytes")
    assert m.state == "kernel"
    assert m.panic("x" * 5000).message == "Kernel panic - not syncing: " + "x" * 1023


def test_crash_kernel_state_is_saved(tmp_path):
    m = crash_machine()
    m.panic("saved")
    save_machine(m, tmp_path / "m")
    m2 = open_machine(tmp_path / "m")
    assert m2.state == "crash-kernel" and saved_note(m2) == saved_note(m)


def test_cli_panic(tmp_path, capsys):
    path = str(tmp_path / "m")
    save_machine(crash_machine(), path)
    assert cli.main(["panic", path, "--message", "from the shell"]) == 0
    out = capsys.readouterr().out
    assert "Kernel panic - not syncing: from the shell" in out and "crash-kernel" in out
    assert open_machine(path).state == "crash-kernel"
    assert cli.main(["panic", path]) == 1
    assert "not running" in capsys.readouterr().err
    save_machine(kjcore.Machine(ram_size=16 * MiB), path)
    assert cli.main(["panic", path]) == 0
    assert "no crash image loaded" in capsys.readouterr().out
    assert open_machine(path).state == "panicked"


def test_panic_from_a_port_handler_during_a_jump():
    m = kjcore.Machine(ram_size=64 * MiB)
    # the peer writes to port 0x60, whose handler makes the first kernel panic
    m.kexec_load(0x800000, [Segment(b"\xe6\x60\xc3", 0x800000, 0x1000)], KEXEC_PRESERVE_CONTEXT)
    m.cpu.on_port(0x60, lambda port, size, value: m.panic("from a port handler"))
    with pytest.raises(KernelPanic, match="from a port handler"):
        m.kernel_kexec()
    assert m.state == "panicked" and not m.kexec_lock.locked()


def test_the_crash_image_budget():
    m = crash_machine(code=b"\xeb\xfe")                 # jmp . : never halts
    r = m.panic("loop", max_steps=10_000)
    assert r.state == "crash-kernel" and r.result.status == Status.STEP_LIMIT
    with pytest.raises(ValueError):
        crash_machine().panic(max_steps=0)


@pytest.mark.parametrize("nx", [False, True])
def test_panic_on_a_pae_kernel(nx):
    m = kjcore.Machine(ram_size=64 * MiB, pae=True, nx=nx, crashkernel=CRASHKERNEL)
    m.kexec_load(ENTRY, [Segment(HLT, ENTRY, 0x1000)], KEXEC_ON_CRASH)
    r = m.panic("pae")
    assert r.state == "crash-kernel" and m.cpu.eip == ENTRY + 1 and not m.cpu.cr4 & 0x20
