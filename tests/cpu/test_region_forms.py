"""Translation-tier forms beyond the random suites: REP MOVSD inside a region (the
relocation routine's page copies), CALL/RET to a function before the loop head, and
breakpoints set outside a compiled region, each run
with the tier on and off (``test_loopjit.run_both``: the same status, state, steps, trace
ring and RAM).
"""
import random

import numpy as np
import pytest
from test_loopjit import ALU_LOOP, CODE, _alu_setup, run_both

from kjcore.cpu import state as S


def test_breakpoints_outside_a_region():
    """A stop elsewhere (far away, and on the HLT the loop falls through to) leaves the
    region compiled and entered; the run stops exactly on the HLT's breakpoint."""
    def setup(cpu):
        _alu_setup(cpu)
        cpu.breakpoints.add(CODE + 0x800)
        cpu.breakpoints.add(CODE + len(ALU_LOOP) - 1)
    cpu = run_both(setup, 10 ** 7)
    assert cpu.compiled_loops and cpu.eip == CODE + len(ALU_LOOP) - 1


# L: mov ecx,1024; rep movsd; dec ebx; jnz L; hlt  (the relocation routine's copies)
PAGE_COPY = bytes.fromhex("b900040000" "f3a5" "4b" "75f6" "f4")


@pytest.mark.parametrize("src, dst, std", [
    (0x4000, 0xA000, False),            # page to page: copied inside the region
    (0x4010, 0xA000, False),            # the source crosses pages: element by element
    (0x4000, 0x4800, False),            # overlapping
    (0x4000, 0xA000, True),             # DF set: downwards, by the interpreter
    (0x4000, CODE - 0x1000, False),     # the last copy overwrites the loop itself
])
@pytest.mark.parametrize("budget", [1, 7, 1030, 2100, 3000, 10 ** 6])
def test_rep_movsd_in_a_region(src, dst, std, budget):
    """REP MOVSD compiled with its loop: each string one trace entry and ECX steps, cut
    by the budget inside a string, with the cases the region leaves to the interpreter."""
    data = np.frombuffer(random.Random(src ^ dst ^ budget).randbytes(0x4000), np.uint8)

    def setup(cpu):
        cpu.ram[CODE:CODE + len(PAGE_COPY)] = np.frombuffer(PAGE_COPY, np.uint8)
        cpu.ram[0x4000:0x8000] = data
        # three pages at most: no slice boundary (4096 steps) inside a string in either run
        cpu.eip, cpu.esi, cpu.edi, cpu.ebx = CODE, src, dst, 3 if dst != CODE - 0x1000 else 2
        if std:
            cpu.eflags |= S.DF
    cpu = run_both(setup, budget, runs=3)
    if budget == 10 ** 6 and dst == 0xA000:
        assert cpu.compiled_loops


# helper: add eax,ecx; ret | start: mov ecx,1000 | head: push ecx; call helper; pop ecx;
# dec ecx; jnz head; hlt   (the callee lies before the loop head, in the same page)
CALL_LOOP = bytes.fromhex("01c8c3" "b9e8030000" "51" "e8f2ffffff" "59" "49" "75f6" "f4")


@pytest.mark.parametrize("budget", [1, 9, 1000, 10 ** 6])
def test_call_and_ret_in_a_region(budget):
    """PUSH, CALL to a function before the loop head, RET to the return site and POP run
    in the region (cut anywhere by the budget) as in the interpreter."""
    def setup(cpu):
        cpu.ram[CODE:CODE + len(CALL_LOOP)] = np.frombuffer(CALL_LOOP, np.uint8)
        cpu.eip, cpu.esp = CODE + 3, 0x9000
    cpu = run_both(setup, budget, runs=2)
    if budget == 10 ** 6:
        assert cpu.compiled_loops and cpu.eax == sum(range(1, 1001))
