"""A real gdb (Debian's ``gdb``, batch mode) attached to a preserve-context jump (SPEC §16):
registers, memory through paging, a breakpoint at the payload entry, continue, stepi, a
watchpoint on a first-kernel page that the jump's swap rewrites, monitor commands, detach."""
import re

import pytest
from gdb_world import GDB, drive
from jump_world import CALL_BACK, DEST, HLT, UD2, asm, load, machine, out_e9

from kjcore.constants import PAGE_OFFSET
from kjcore.cpu import TripleFault
from kjcore.machine_kexec import JumpResult
from kjcore.relocate import entry_offset, routine_flags

pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")
PAYLOAD = asm(out_e9("A"), out_e9("B"), CALL_BACK)


def test_gdb_steps_a_jump_and_watches_a_first_kernel_page():
    m = machine()
    load(m, PAYLOAD)
    result, out = drive(m, [
        "info registers", "x/2xb $pc", f"break *{DEST:#x}", "continue", "stepi",
        "info registers eip", f"x/4xb {DEST:#x}", f"watch *(int*){DEST:#x}", "continue",
        "delete", "detach"])
    assert isinstance(result, JumpResult) and result.debugcon == b"AB", out
    regs = dict(re.findall(r"^(\w+)\s+(0x[0-9a-f]+)", out.split("Breakpoint 1 at")[0], re.M))
    assert set(regs) >= {"eax", "ecx", "esp", "eip", "eflags", "cs", "ss", "gs"}
    # attached before the routine's first instruction, at the control page's kernel address
    entry = PAGE_OFFSET + m.kexec_image.control_page + entry_offset(routine_flags(False, True))
    assert int(regs["eip"], 16) == entry, out
    assert regs["cs"] == "0x60", out
    assert f"Breakpoint 1, 0x{DEST:08x}" in out, out
    assert f"eip            {DEST + 2:#x}" in out, out          # stepi: one instruction
    assert f"{DEST:#x}:\t0xb0\t0x41\t0xe6\t0xe9" in out, out      # the payload, as loaded
    # the swap back puts the first kernel's page back at DEST: the watchpoint stops the jump
    assert "Hardware watchpoint 2" in out and "New value = 0" in out, out
    assert "detached" in out and m.state == "kernel"


def test_gdb_monitor_commands_and_kill():
    m = machine()
    load(m, PAYLOAD)
    source = int(m.kexec_image.source_pages()[0])
    result, out = drive(m, [f"monitor phys {source:#x} 4", f"monitor phys {DEST:#x} 2",
                            "monitor kimage", "monitor what", "kill"])
    assert result is None and m.state == "image", out
    # before the jump the image waits in its source page; the destination is the first kernel's
    assert f"{source:08x}: b0 41 e6 e9\n{DEST:08x}: 00 00\n" in out, out
    assert "KImage(type='default'" in out and "DESTINATION" in out and "SOURCE" in out, out
    assert "kjcore monitor commands" in out, out


def test_gdb_sees_a_triple_fault_as_sigsegv():
    m = machine()
    load(m, asm(UD2, HLT))
    error, out = drive(m, ["continue", "info registers eip", "continue"], raises=TripleFault)
    assert isinstance(error, TripleFault) and m.state == "lost"
    assert "SIGSEGV" in out and f"eip            {DEST:#x}" in out, out
    assert "terminated with signal SIGSEGV" in out, out


def test_gdb_sees_the_jump_come_back_as_an_exit():
    m = machine()
    load(m, PAYLOAD)
    result, out = drive(m, ["continue"])
    assert isinstance(result, JumpResult) and "exited normally" in out, out
