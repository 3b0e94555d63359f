"""The CPU boundary: step budgets (REP elements are steps), the wall-clock timeout, the
compiled loop's periodic return to Python, ``CPU.load`` and the status -> exception table."""
import time

import numpy as np
import pytest

from kjcore.cpu import (
    CPU,
    STATUS_EXCEPTION,
    BusError,
    CPUFault,
    GuestTimeout,
    Status,
    StepLimit,
    TripleFault,
)
from kjcore.cpu import state as S
from kjcore.first_kernel import build_first_kernel, initial_cpu_state

MIB = 1 << 20


def cpu_with(code, ram_size=1 << 16, at=0x1000):
    ram = np.zeros(ram_size, np.uint8)
    ram[at:at + len(code)] = np.frombuffer(code, np.uint8)
    cpu = CPU(ram)
    cpu.eip = at
    return cpu


def d32(v):
    return int(v).to_bytes(4, "little")


# ------------------------------------------------------------------ REP elements are steps
def _rep_movsb(n, src, dst):
    # mov ecx,n; mov esi,src; mov edi,dst; rep movsb; hlt
    return b"\xb9" + d32(n) + b"\xbe" + d32(src) + b"\xbf" + d32(dst) + b"\xf3\xa4\xf4"


def test_16mib_rep_movsb_is_16m_steps_and_stops_exactly_at_the_budget():
    n, src, dst = 16 * MIB, 1 * MIB, 20 * MIB
    cpu = cpu_with(_rep_movsb(n, src, dst), ram_size=40 * MIB)
    pattern = (np.arange(n, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8) | 1
    cpu.ram[src:src + n] = pattern
    assert cpu.run(3 + 1000) == Status.STEP_LIMIT and cpu.steps == 1003
    # stopped inside the string: the registers describe exactly the 1000 bytes moved
    assert cpu.eip == 0x100F and cpu.ecx == n - 1000
    assert (cpu.esi, cpu.edi) == (src + 1000, dst + 1000)
    assert np.array_equal(cpu.ram[dst:dst + 1000], pattern[:1000]) and cpu.ram[dst + 1000] == 0
    assert cpu.run(n - 1000) == Status.STEP_LIMIT and cpu.steps == n - 1000
    assert cpu.eip == 0x1011 and cpu.ecx == 0
    assert cpu.run(10) == Status.HLT and cpu.steps == 1
    assert np.array_equal(cpu.ram[dst:dst + n], pattern) and cpu.ecx == 0
    assert cpu.tsc == 3 + n + 1


def test_rep_string_steps_do_not_depend_on_how_the_budget_is_split():
    code = _rep_movsb(5000, 0x2000, 0x8000)
    whole = cpu_with(code)
    assert whole.run(10 ** 6) == Status.HLT and whole.steps == 5004
    split = cpu_with(code)
    total = 0
    while (st := split.run(7)) == Status.STEP_LIMIT:
        total += split.steps
    assert st == Status.HLT and total + split.steps == 5004
    a, b = whole.get_state(), split.get_state()
    assert [f for f in a.dtype.names if f not in S.WORK_FIELDS and a[f] != b[f]] == []
    assert a["tsc"] == b["tsc"] == 5004
    assert np.array_equal(whole.ram, split.ram)


def test_rep_element_loop_and_cmps_count_per_element():
    # std; mov ecx,300; mov esi,0x3000; mov edi,0x4000; rep stosb (backward: element loop);
    # mov ecx,10; repe cmpsb (first mismatch at element 4); hlt
    code = (b"\xfd\xb9" + d32(300) + b"\xbe" + d32(0x3000) + b"\xbf" + d32(0x4000) + b"\xf3\xaa"
            + b"\xfc\xb9" + d32(10) + b"\xf3\xa6\xf4")
    cpu = cpu_with(code)
    cpu.ram[0x3003] = 7
    assert cpu.run(10 ** 6) == Status.HLT
    assert cpu.steps == 4 + 300 + 2 + 4 + 1 and cpu.ecx == 6
    assert len(cpu.trace(100)) == 9               # the trace holds instructions, not elements


def test_rep_outs_to_a_port_python_answers_is_charged_per_element():
    # mov ecx,100; mov dx,0x1234; mov esi,0x2000; rep outsb; hlt
    code = b"\xb9" + d32(100) + b"\x66\xba\x34\x12\xbe" + d32(0x2000) + b"\xf3\x6e\xf4"
    cpu = cpu_with(code)
    seen = []
    cpu.on_port(0x1234, lambda port, size, value: seen.append(value))
    assert cpu.run(3 + 50) == Status.STEP_LIMIT and cpu.ecx == 50 and len(seen) == 50
    assert cpu.run(10 ** 6) == Status.HLT and cpu.steps == 51 and len(seen) == 100
    # without a handler every element stops the run (Status.IO) and is charged once done
    cpu = cpu_with(code)
    total = 0
    while (st := cpu.run(10 ** 6)) == Status.IO:
        total += cpu.steps
        cpu.complete_io()
    assert st == Status.HLT and total + cpu.steps == 3 + 100 + 1


def test_open_bus_answers_ports_nobody_handles_in_compiled_code():
    # in al,0x60; mov ecx,1000; mov dx,0x1234; mov edi,0x3000; rep insb; out 0x61,al; hlt
    code = (b"\xe4\x60\xb9" + d32(1000) + b"\x66\xba\x34\x12\xbf" + d32(0x3000)
            + b"\xf3\x6c\xe6\x61\xf4")
    cpu = cpu_with(code)
    assert cpu.run(10 ** 6) == Status.IO and cpu.io_request[0] == 0x60     # default: stop
    cpu = cpu_with(code)
    cpu.open_bus = True
    seen = []
    cpu.on_port(0x61, lambda port, size, value: seen.append(value))
    assert cpu.run(10 ** 6) == Status.HLT and cpu.steps == 4 + 1000 + 2
    assert cpu.eax & 0xFF == 0xFF and seen == [0xFF]                     # a handler still runs
    assert bytes(cpu.ram[0x3000:0x3000 + 1000]) == b"\xff" * 1000 and cpu.ram[0x3000 + 1000] == 0


# ------------------------------------------------------------------ time and slices
def test_timeout_stops_an_endless_loop_and_the_run_resumes():
    cpu = cpu_with(b"\x40\x43\xeb\xfc")            # L: inc eax; inc ebx; jmp L
    t0 = time.monotonic()
    assert cpu.run(10 ** 15, timeout=0.3) == Status.TIMEOUT
    assert 0.3 <= time.monotonic() - t0 < 1.5
    steps, eax = cpu.steps, cpu.eax
    assert steps > 0 and eax == cpu.ebx or eax == cpu.ebx + 1
    assert cpu.run(3) == Status.STEP_LIMIT and cpu.tsc == steps + 3
    with pytest.raises(GuestTimeout, match="timeout") as e:
        cpu.raise_for_status(cpu.run(10, timeout=0))
    assert isinstance(e.value, StepLimit) and e.value.state["eip"] == cpu.eip


def test_slice_boundaries_change_nothing_not_even_breakpoints():
    code = b"\x40\x43\x41\xeb\xfb"                 # L: inc eax; inc ebx; inc ecx; jmp L
    ref = cpu_with(code)
    ref.breakpoints.add(0x1002)
    sliced = cpu_with(code)
    sliced.breakpoints.add(0x1002)
    sliced.SLICE_MIN = sliced.SLICE_MAX = 3       # a slice ends on the breakpoint at once
    for _ in range(5):
        assert ref.run(10 ** 6) == sliced.run(10 ** 6) == Status.BREAK
        assert ref.steps == sliced.steps and ref.eip == sliced.eip == 0x1002
    assert np.array_equal(ref.get_state(), sliced.get_state())


# ------------------------------------------------------------------ CPU.load
def test_load_takes_the_first_kernels_register_dict():
    ram = np.zeros(8 * MIB, np.uint8)
    layout = build_first_kernel(ram, ram_size=len(ram), kernel_reserved=4 * MIB, pae=False,
                                nx=False)
    regs = initial_cpu_state(layout)
    cpu = CPU(ram)
    cpu.load(regs)
    st = cpu.get_state()
    for name in S.REG_NAMES + S.CONTROL_NAMES + S.TABLE_NAMES:
        assert st[name] == regs[name], name
    for seg in S.SEG_NAMES:
        assert (st[f"{seg}_sel"], st[f"{seg}_base"], st[f"{seg}_limit"]) == \
            (regs[f"{seg}_selector"], regs[f"{seg}_base"], regs[f"{seg}_limit"])
        assert st[f"{seg}_attr"] & 0xFFF == regs[f"{seg}_access"] | regs[f"{seg}_flags"] << 8
    assert st["cpl"] == regs["cs_selector"] & 3


@pytest.mark.parametrize("regs, error, match", [
    ({"eax": 1, "rax": 2}, ValueError, "unknown register 'rax'"),
    ({"eip": 1 << 32}, ValueError, "eip=0x100000000 does not fit"),
    ({"ebx": -1}, ValueError, "does not fit"),
    ({"gdtr_limit": 0x10000}, ValueError, "gdtr_limit"),
    ({"ecx": 1.5}, TypeError, "ecx must be an integer, not float"),
    ({"edx": True}, TypeError, "not bool"),
    ({"ds_selector": 0x10, "ds_base": 0}, ValueError, "ds_limit is missing"),
    ({"cs_selector": 8, "cs_base": 0, "cs_limit": 0xFFFFFFFF, "cs_access": 0x9B,
      "cs_flags": 0x10}, ValueError, "cs_flags=0x10"),
])
def test_load_rejects_bad_input_before_setting_anything(regs, error, match):
    cpu = cpu_with(b"\xf4")
    before = cpu.get_state()
    with pytest.raises(error, match=match):
        cpu.load(regs)
    assert np.array_equal(cpu.get_state(), before)


# ------------------------------------------------------------------ status -> exception
def test_each_error_status_has_exactly_one_exception_class():
    assert set(STATUS_EXCEPTION) == {Status.TRIPLE_FAULT, Status.STEP_LIMIT, Status.TIMEOUT,
                                     Status.BUS_ERROR, Status.UNSUPPORTED, Status.HLT,
                                     Status.IDLE, Status.STOPPED}
    for status, cls in STATUS_EXCEPTION.items():
        assert issubclass(cls, CPUFault) and cls.status == status


def test_raise_for_status_builds_the_exceptions():
    cpu = cpu_with(b"\x0f\x0b")                    # ud2 with IDTR limit 0: triple fault
    with pytest.raises(TripleFault) as e:
        cpu.raise_for_status(cpu.run(5))
    assert (e.value.vector, e.value.eip) == (6, 0x1000)
    ram = np.zeros(1 << 16, np.uint8)
    ram[0x1000:0x1006] = np.frombuffer(b"\xa1" + d32(0x100000) + b"\xf4", np.uint8)
    cpu = CPU(ram, strict_bus=True)
    cpu.eip = 0x1000
    with pytest.raises(BusError, match="past RAM at 0x100000"):
        cpu.raise_for_status(cpu.run(5))
    cpu = cpu_with(b"\xf4")
    assert cpu.raise_for_status(cpu.run(5)) is None           # HLT is a normal end here
    with pytest.raises(CPUFault, match="custom"):
        cpu.raise_for_status(Status.HLT, "custom", expected=())
