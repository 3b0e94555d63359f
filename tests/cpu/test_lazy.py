"""Kernels called through the table of entry points (kjcore/cpu/lazy.py): a run that has to
ask Python for one (``ST_COMPILE_REQUEST``) ends exactly as a run that finds it compiled:
same statuses, steps, registers, memory, trace and breakpoint stops."""
import numpy as np
import pytest

from kjcore.cpu import CPU, Status, lazy
from kjcore.cpu.isa import F_BCD, F_BITS, F_FAR, F_FPU, F_GRP3, F_IO

# 32-bit code at 0x1000 touching many families: each is asked for when first needed
PROGRAM32 = bytes.fromhex(
    "b819000000"        # mov eax, 0x19           (mov)
    "0428"              # add al, 0x28
    "27"                # daa                     (bcd)
    "0fbcc8"            # bsf ecx, eax            (bits)
    "be00200000"        # mov esi, 0x2000
    "bf00300000"        # mov edi, 0x3000
    "b905000000"        # mov ecx, 5
    "f3a4"              # rep movsb               (string: five steps)
    "9c"                # pushf                   (stack)
    "f7d8"              # neg eax                 (grp3)
    "0f90c3"            # seto bl                 (cond)
    "d3c0"              # rol eax, cl             (shift)
    "f6f3"              # div bl                  (muldiv: #DE, through the IDT)
    "f4")               # hlt
HANDLER = bytes.fromhex("83042402" "cf")   # add dword [esp], 2; iret: skip the 2-byte div
IDT, HANDLER_AT, GDT = 0x4000, 0x5000, 0x6000
FLAT = (0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)   # null, ring-0 code 0x08, data 0x10

# real-mode code: the 16-bit fast path and the families it leaves to the decoder
PROGRAM16 = bytes.fromhex(
    "b90400"            # mov cx, 4
    "40"                # inc ax                  (loop body)
    "e2fd"              # loop -3
    "37"                # aaa                     (bcd)
    "f4")               # hlt


def cpu32():
    ram = np.zeros(1 << 16, np.uint8)
    ram[0x1000:0x1000 + len(PROGRAM32)] = np.frombuffer(PROGRAM32, np.uint8)
    ram[0x2000:0x2005] = np.frombuffer(b"hello", np.uint8)
    ram[HANDLER_AT:HANDLER_AT + len(HANDLER)] = np.frombuffer(HANDLER, np.uint8)
    gate = (HANDLER_AT & 0xFFFF) | 8 << 16 | (0x8E00 | (HANDLER_AT >> 16) << 16) << 32
    ram[IDT:IDT + 8] = np.frombuffer(gate.to_bytes(8, "little"), np.uint8)
    for i, d in enumerate(FLAT):
        ram[GDT + 8 * i:GDT + 8 * i + 8] = np.frombuffer(d.to_bytes(8, "little"), np.uint8)
    cpu = CPU(ram)
    cpu.gdtr.base, cpu.gdtr.limit = GDT, 8 * len(FLAT) - 1
    cpu.idtr.base, cpu.idtr.limit = IDT, 0xFF
    cpu.eip, cpu.esp = 0x1000, 0x8000
    return cpu


def cpu16():
    ram = np.zeros(1 << 21, np.uint8)
    cpu = CPU(ram)
    cpu.reset()
    ram[0x10100:0x10100 + len(PROGRAM16)] = np.frombuffer(PROGRAM16, np.uint8)
    cpu.load_segment("cs", 0x1000, 0x10000, 0xFFFF, 0x93)
    cpu.eip = 0x100
    return cpu


def outcome(make, budgets, breakpoints=(), forget=False):
    """Run ``make()``'s CPU in runs of the given budgets; with ``forget`` every entry of the
    table is emptied before each run, so each run asks for what it needs."""
    cpu = make()
    cpu.breakpoints = set(breakpoints)
    statuses = []
    for budget in budgets:
        if forget:
            lazy._entry[:] = 0
        statuses.append((cpu.run(budget), cpu.steps))
    state = cpu.get_state()
    return statuses, state.tobytes(), cpu.ram.tobytes(), cpu.trace(64)


@pytest.mark.parametrize("make", [cpu32, cpu16], ids=["32-bit", "16-bit"])
@pytest.mark.parametrize("budgets", [[100], [1] * 30, [3, 7, 2, 50]])
@pytest.mark.parametrize("breakpoints", [(), (0x1007, 0x101A, 0x1024, 0x10103)])
def test_asking_for_kernels_changes_nothing(make, budgets, breakpoints):
    for slot in lazy.KERNELS:
        lazy.compile_entry(slot)                 # the reference run finds everything compiled
    want = outcome(make, budgets, breakpoints)
    got = outcome(make, budgets, breakpoints, forget=True)
    assert got == want
    assert want[0][-1][0] in (Status.HLT, Status.STEP_LIMIT, Status.BREAK)


def test_requests_fill_only_what_the_guest_needs():
    lazy._entry[:] = 0
    cpu = cpu32()
    assert cpu.run(100) == Status.HLT
    need = set(lazy.compiled())
    assert {lazy.DECODE, lazy.RAISE, F_BCD, F_BITS, F_GRP3} <= need
    assert not need & {F_FPU, F_IO, F_FAR, lazy.RUN16}
    assert all(lazy._entry[k] for k in need)
