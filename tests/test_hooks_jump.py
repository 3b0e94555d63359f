"""Breakpoints and hooks inside ``kernel_kexec`` (SPEC §16): they stay active during the jump,
next to the routine's own stops, and a jump watched by them ends as an unwatched one."""
import numpy as np
import pytest
from jump_world import CALL_BACK, DEST, asm, load, machine, out_e9

from kjcore.cpu import Stopped
from kjcore.machine_kexec import JumpResult

PAYLOAD = asm(out_e9("A"), out_e9("B"), CALL_BACK)
#: linear (= physical: the payload runs with paging off) addresses of its instructions
PAYLOAD_STEPS = [DEST, DEST + 2, DEST + 4, DEST + 6, DEST + 8, DEST + 11]


def test_user_breakpoint_stops_the_jump_at_the_payload():
    m = machine()
    load(m, PAYLOAD)
    m.cpu.breakpoints = {DEST + 4}
    with pytest.raises(Stopped, match="breakpoint or hook stopped the jump"):
        m.kernel_kexec()
    assert m.state == "image" and m.cpu.eip == DEST + 4
    assert m.cpu.breakpoints == {DEST + 4}


@pytest.mark.parametrize("engine", ["emulated", "native"])
def test_hooks_watch_a_jump_that_ends_as_an_unwatched_one(engine):
    plain, m = machine(engine=engine), machine(engine=engine)
    for x in (plain, m):
        load(x, PAYLOAD)
    expected = plain.kernel_kexec()
    ran, writes = [], []
    m.cpu.hook_code(lambda c, a: ran.append(a), DEST, DEST + 0xFFF)
    m.cpu.hook_mem(lambda c, kind, a, n, v: writes.append(a), "write", DEST, DEST + 0xFFF,
                   physical=True)
    result = m.kernel_kexec()
    assert isinstance(result, JumpResult) and result.debugcon == expected.debugcon == b"AB"
    assert result.steps == expected.steps
    assert np.array_equal(m.ram, plain.ram)
    assert ran == PAYLOAD_STEPS
    # the swap in and the swap back both rewrite the destination page, word by word
    assert len(writes) == 2 * 4096 // 4 and min(writes) == DEST


def test_a_hook_can_stop_the_jump():
    m = machine()
    load(m, PAYLOAD)
    m.cpu.hook_code(lambda c, a: c.stop(), DEST + 8, DEST + 8)
    with pytest.raises(Stopped):
        m.kernel_kexec()
    assert m.state == "image" and m.cpu.eip == DEST + 8 and m.debugcon.endswith(b"AB")
