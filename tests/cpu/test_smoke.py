"""Basic API behaviour of kjcore.cpu.CPU (reset state, registers, statuses)."""
import numpy as np
import pytest

from kjcore.cpu import CPU, Status, TripleFault


def make(code, at=0x1000, size=1 << 16):
    ram = np.zeros(size, np.uint8)
    ram[at:at + len(code)] = np.frombuffer(bytes(code), np.uint8)
    cpu = CPU(ram)
    cpu.eip = at
    return cpu


def test_reset_state():
    cpu = CPU(np.zeros(4096, np.uint8))
    assert cpu.cr0 == 0x11 and cpu.eflags == 2 and cpu.idtr.limit == 0
    assert cpu.cs.base == 0 and cpu.cs.limit == 0xFFFFFFFF and cpu.cpl == 0
    assert cpu.ss.attrib & 0x400          # 32-bit stack


def test_ram_is_zero_copy():
    ram = np.zeros(4096, np.uint8)
    cpu = CPU(ram)
    assert cpu.ram is ram


def test_hlt_and_debugcon():
    cpu = make(b"\xb0\x41\xe6\xe9\xb0\x42\xe6\xe9\xf4")
    assert cpu.run(100) == Status.HLT
    assert cpu.debugcon == b"AB" and cpu.steps == 5
    cpu.clear_debugcon()
    assert cpu.debugcon == b""


def test_step_limit_and_step():
    cpu = make(b"\xeb\xfe")                 # jmp $
    assert cpu.run(1000) == Status.STEP_LIMIT and cpu.steps == 1000
    assert cpu.step() == Status.STEP_LIMIT and cpu.eip == 0x1000


def test_triple_fault_with_idt_limit_0():
    cpu = make(b"\x0f\x0b")                 # ud2
    st = cpu.run(10)
    assert st == Status.TRIPLE_FAULT
    assert cpu.fault == (6, None, 0x1000) and cpu.eip == 0x1000
    with pytest.raises(TripleFault) as e:
        cpu.raise_for_status(st)
    assert e.value.vector == 6 and e.value.eip == 0x1000


def test_port_handler_and_io_status():
    seen = []
    cpu = make(b"\xe4\x60\xe6\x61\xf4")      # in al,0x60; out 0x61,al; hlt
    assert cpu.run(10) == Status.IO
    assert cpu.io_request == (0x60, 1, False, 0) and cpu.eip == 0x1000
    cpu.complete_io(0x5A)
    cpu.on_port(0x61, lambda port, size, value: seen.append((port, size, value)))
    assert cpu.run(10) == Status.HLT
    assert seen == [(0x61, 1, 0x5A)] and cpu.eax & 0xFF == 0x5A


def test_breakpoint():
    cpu = make(b"\x90\x90\x90\xf4")
    cpu.breakpoints.add(0x1002)
    assert cpu.run(10) == Status.BREAK and cpu.eip == 0x1002
    assert cpu.run(10) == Status.HLT


def test_state_roundtrip():
    cpu = make(b"\x40\xf4")
    snap = cpu.get_state()
    cpu.run(10)
    assert cpu.eax == 1
    cpu.set_state(snap)
    assert cpu.eax == 0 and cpu.eip == 0x1000
    assert snap["eip"] == 0x1000 and snap["cs_limit"] == 0xFFFFFFFF


def test_bus_past_ram():
    cpu = make(b"\xa1\x00\x00\x01\x00\xa3\x00\x00\x01\x00\xf4")   # mov eax,[0x10000]; mov [..],eax
    assert cpu.run(10) == Status.HLT and cpu.eax == 0xFFFFFFFF
    cpu2 = make(b"\xa1\x00\x00\x01\x00\xf4")
    cpu2.strict_bus = True
    assert cpu2.run(10) == Status.BUS_ERROR and cpu2.bus_address == 0x10000


def test_trace_and_disassembly():
    cpu = make(b"\x40\x43\xf4")
    cpu.start_trace()
    cpu.run(10)
    assert cpu.trace(3) == [0x1000, 0x1001, 0x1002]
    assert cpu.disassemble_trace(2) == ["00001001: inc ebx", "00001002: hlt"]


def test_segment_fields_writable_from_python():
    cpu = make(b"\xf4")
    cpu.cs.selector = 0x1B
    assert cpu.cpl == 3
    cpu.cs.selector = 0x08
    cpu.ds.base = 0x100
    assert cpu.ds.base == 0x100 and cpu.cpl == 0
