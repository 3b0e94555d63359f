"""The full trace (kjcore/cpu/trace.py, SPEC §16): each record keeps what ran, as it ran."""
import numpy as np
import pytest
from jump_world import CALL_BACK, DEST, UD2, asm, load, machine, out_e9

import kjcore
from kjcore.cpu import CPU, Status, TripleFault
from kjcore.cpu import state as S
from kjcore.cpu.trace import Mode

pytest.importorskip("capstone")


def _cpu(code, at=0x1000, ram_size=1 << 16):
    ram = np.zeros(ram_size, np.uint8)
    ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
    cpu = CPU(ram)
    cpu.eip = at
    return cpu


def test_a_real_jump_disassembles_without_bad_lines():
    m = machine()
    load(m, asm(out_e9("J"), CALL_BACK))
    r = m.kernel_kexec(trace=100_000)
    assert r.debugcon == b"J" and len(r.trace) > 100
    lines = kjcore.cpu.trace.disassemble(r.trace)
    assert not [line for line in lines if "(bad)" in line]
    # the physical-mode part: paging off, the payload at its destination, linear == physical
    payload = [t for t in r.trace if t.linear == DEST]
    assert payload and payload[0].physical == DEST and not payload[0].mode.paging
    assert payload[0].code == bytes.fromhex("b04a")
    assert {t.mode.paging for t in r.trace} == {True, False}
    # the last instruction is the routine's return into the first kernel (paging on again)
    assert r.trace[-1].mode.paging and lines[-1].split(": ")[1].startswith("ret")
    assert not m.cpu.tracing


def test_a_jump_that_dies_leaves_its_trace_on_the_cpu():
    m = machine()
    load(m, asm(out_e9("J"), UD2))
    with pytest.raises(TripleFault):
        m.kernel_kexec(trace=50)
    last = m.cpu.trace_records()[-1]
    assert (last.linear, last.physical, last.code) == (DEST + 4, DEST + 4, UD2)
    assert m.cpu.disassemble_trace(1) == [f"{DEST + 4:08x}: ud2"]


def test_a_jump_without_trace_costs_nothing_and_carries_none():
    m = machine()
    load(m, asm(out_e9("J"), CALL_BACK))
    r = m.kernel_kexec()
    assert r.trace == () and not m.cpu.trace_records()
    with pytest.raises(ValueError, match="positive"):
        m.kernel_kexec(trace=0)
    with pytest.raises(TypeError, match="integer"):
        m.kernel_kexec(trace=1.5)
    assert m.state == "kernel"


def test_trace_is_bounded_to_the_last_records():
    runs = []
    for limit in (100_000, 7):
        m = machine()
        load(m, asm(out_e9("J"), CALL_BACK))
        runs.append(m.kernel_kexec(trace=limit).trace)
    full, last = runs
    assert len(last) == 7 and [t.linear for t in last] == [t.linear for t in full[-7:]]


def test_real_mode_code_is_traced_and_disassembled_as_16_bit():
    code = bytes.fromhex("b8 34 12 40 eb 00 f4")         # mov ax,0x1234; inc ax; jmp $+2; hlt
    ram = np.zeros(1 << 20, np.uint8)
    cpu = CPU(ram)
    cpu.reset()
    cpu.load_segment("cs", 0x1000, 0x10000, 0xFFFF, 0x9B)
    cpu.eip = 0x100
    ram[0x10100:0x10100 + len(code)] = np.frombuffer(code, np.uint8)
    cpu.start_trace()
    assert cpu.run(100) == Status.HLT and cpu.eax & 0xFFFF == 0x1235
    recs = cpu.trace_records()
    assert recs[0].mode == Mode(protected=False, paging=False, cpl=0, code32=False, v86=False)
    assert str(recs[0].mode) == "real, CPL 0, 16-bit code"
    assert [r.physical for r in recs] == [0x10100, 0x10103, 0x10104, 0x10106]
    assert [line.split(": ")[1] for line in cpu.disassemble_trace()] == [
        "mov ax, 0x1234", "inc ax", "jmp 0x10106", "hlt"]


def test_bytes_as_fetched_after_self_modifying_code():
    # mov byte [0x1010], 0x43 (rewrite the 'inc eax' at 0x1010 into 'inc ebx'); jmp; ...
    code = asm(bytes.fromhex("c6 05 10 10 00 00 43"), bytes.fromhex("eb 07"), bytes(7),
               bytes.fromhex("40 c6 05 10 10 00 00 90 f4"))
    cpu = _cpu(code)
    cpu.start_trace()
    assert cpu.run(100) == Status.HLT and cpu.ebx == 1 and cpu.eax == 0
    lines = [line.split(": ")[1] for line in cpu.disassemble_trace()]
    assert lines == ["mov byte ptr [0x1010], 0x43", "jmp 0x1010", "inc ebx",
                     "mov byte ptr [0x1010], 0x90", "hlt"]
    assert cpu.read_linear(0x1010, 1) == b"\x90"    # memory now holds neither instruction


def test_paged_code_keeps_physical_address_and_page_crossing():
    # identity-map 0..4 MiB but put linear page 0x400000 on physical 0x3000
    ram = np.zeros(1 << 20, np.uint8)
    pd, pt = 0x8000, 0x9000
    ram[pd:pd + 4] = np.frombuffer(np.uint32(pt | 3).tobytes(), np.uint8)
    ram[pd + 4:pd + 8] = np.frombuffer(np.uint32(0xA000 | 3).tobytes(), np.uint8)
    ram[pt:pt + 4096] = np.frombuffer((np.arange(1024, dtype=np.uint32) << 12 | 3).tobytes(),
                                      np.uint8)
    ram[0xA000:0xA004] = np.frombuffer(np.uint32(0x3000 | 3).tobytes(), np.uint8)
    ram[0xA004:0xA008] = np.frombuffer(np.uint32(0x5000 | 3).tobytes(), np.uint8)
    # mov eax, 0x11223344 straddling linear 0x400FFE..0x401002 (physical 0x3FFE / 0x5000)
    ram[0x3FFE:0x4000] = [0xB8, 0x44]
    ram[0x5000:0x5004] = [0x33, 0x22, 0x11, 0xF4]
    cpu = CPU(ram)
    cpu.load({"cr3": pd, "cr0": cpu.cr0 | S.CR0_PG, "eip": 0x400FFE})
    cpu.start_trace(2)
    assert cpu.run(10) == Status.HLT and cpu.eax == 0x11223344
    first, last = cpu.trace_records()
    assert (first.linear, first.physical, first.code) == (0x400FFE, 0x3FFE,
                                                         bytes.fromhex("b844332211"))
    assert (last.linear, last.physical) == (0x401003, 0x5003) and last.mode.paging
    assert cpu.disassemble_trace() == ["00400ffe: mov eax, 0x11223344", "00401003: hlt"]


def test_fetch_fault_records_the_bytes_it_got():
    cpu = _cpu(b"", at=0x1000)
    cpu.load({"eip": 0xFFFF_FF00})                       # past RAM: open bus, all ones
    cpu.start_trace()
    cpu.run(1)
    assert cpu.trace_records()[0].physical == 0xFFFF_FF00


def test_trace_records_survive_long_runs_and_stop():
    loop = bytes.fromhex("b9 00 30 00 00 40 49 75 fc f4")  # mov ecx,0x3000; inc eax; dec; jnz
    cpu = _cpu(loop)
    cpu.start_trace(5)
    assert cpu.run(10 ** 6) == Status.HLT and cpu.steps == 1 + 3 * 0x3000 + 1
    assert [r.linear for r in cpu.trace_records()] == [0x1007, 0x1005, 0x1006, 0x1007, 0x1009]
    cpu.stop_trace()
    cpu.eip = 0x1000
    cpu.run(10 ** 6)
    assert len(cpu.trace_records()) == 5 and not cpu.tracing
    assert cpu.trace(2) == [0x1007, 0x1009]            # the linear ring still runs


def test_io_stop_is_recorded_once():
    cpu = _cpu(bytes.fromhex("e6 70 f4"))                # out 0x70, al; hlt
    seen = []
    cpu.on_port(0x70, lambda port, size, value: seen.append(value))
    cpu.start_trace()
    assert cpu.run(10) == Status.HLT and seen == [0]
    assert cpu.disassemble_trace() == ["00001000: out 0x70, al", "00001002: hlt"]


def test_disassemble_without_trace_says_so():
    cpu = _cpu(b"\xf4")
    cpu.run(1)
    with pytest.raises(ValueError, match="start_trace"):
        cpu.disassemble_trace()
    with pytest.raises(ValueError, match="positive"):
        cpu.start_trace(-1)
