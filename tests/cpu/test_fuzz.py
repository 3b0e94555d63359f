"""Robustness: random byte streams on random CPU states.

The guest gets random code, random registers and flags, random segment
caches (limits, types, 16-bit code, unusable selectors), random descriptor
tables and page tables (RAM is random bytes, so every walk reads garbage),
paging/PAE/PSE/NX on or off.  Whatever it does, ``run`` must return a
Status, never raise or hang, and never write outside the RAM array: RAM is
a window into a larger buffer whose guard bytes must stay intact.
"""
import os
import random

import numpy as np
import pytest

from kjcore.cpu import CPU, Status

RAM = 1 << 16
GUARD = 4096


def random_state(cpu, rng):
    s = cpu._s
    for r in range(8):
        s[r] = rng.getrandbits(32)
    cpu.eip = rng.choice((rng.randrange(0, RAM), rng.getrandbits(32)))
    cpu.eflags = (rng.getrandbits(22) & 0x3F7FD5) | 2
    cpu.cr0 = 0x11 | (rng.getrandbits(32) & 0xE005002E if rng.random() < 0.5 else 0)
    cpu.cr3 = rng.getrandbits(32) & ~0xFFF if rng.random() < 0.5 else rng.randrange(0, RAM) & ~0x1F
    cpu.cr4 = rng.getrandbits(11) & 0xB0 if rng.random() < 0.7 else 0
    cpu.efer = 0x800 if rng.random() < 0.3 else 0
    for name in ("es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr"):
        if rng.random() < 0.3:
            attr = rng.getrandbits(12) | (0x10000 if rng.random() < 0.9 else 0)
            limit = rng.choice((0xFFFFFFFF, 0xFFFF, rng.getrandbits(32), rng.getrandbits(12)))
            base = rng.choice((0, rng.getrandbits(32), rng.randrange(0, RAM)))
            cpu.load_segment(name, rng.getrandbits(16), base, limit, attr)
    if rng.random() < 0.5:
        cpu.gdtr.base, cpu.gdtr.limit = rng.randrange(0, RAM), rng.getrandbits(16)
    if rng.random() < 0.5:
        cpu.idtr.base, cpu.idtr.limit = rng.randrange(0, RAM), rng.getrandbits(16)
    cpu.flush_tlb()


def fuzz(seed, streams, steps=64):
    rng = random.Random(seed)
    buf = np.zeros(RAM + 2 * GUARD, np.uint8)
    buf[:GUARD] = 0xA5
    buf[-GUARD:] = 0x5A
    ram = buf[GUARD:GUARD + RAM]
    cpu = CPU(ram, strict_bus=False)
    seen = set()
    for i in range(streams):
        if i % 64 == 0:
            ram[:] = np.frombuffer(rng.randbytes(RAM), np.uint8)
        cpu.reset_flat()
        cpu.strict_bus = rng.random() < 0.2
        cpu.jit_threshold = 1 if rng.random() < 0.5 else 4096   # translation tier on garbage too
        random_state(cpu, rng)
        at = rng.randrange(0, RAM - 16)
        ram[at:at + 16] = np.frombuffer(rng.randbytes(16), np.uint8)
        if rng.random() < 0.7:
            cpu.eip = (at - cpu.cs.base) & 0xFFFFFFFF
        st = cpu.run(steps)
        assert isinstance(st, Status)
        seen.add(st)
        if st == Status.IO:
            cpu.complete_io(rng.getrandbits(32))
            assert isinstance(cpu.run(steps), Status)
    assert (buf[:GUARD] == 0xA5).all() and (buf[-GUARD:] == 0x5A).all()
    return seen


def test_random_streams_default_run():
    seen = fuzz(7, 50_000)
    assert {Status.TRIPLE_FAULT, Status.STEP_LIMIT} <= seen


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_random_streams_long(seed):
    fuzz(100 + seed, int(os.environ.get("KJCORE_FUZZ_STREAMS", "500000")), steps=256)


def test_rep_with_huge_count_yields():
    """REP with ECX = 2**32 - 1 returns within one step budget: one step per element."""
    ram = np.zeros(1 << 16, np.uint8)
    ram[0x1000:0x1002] = (0xF3, 0xAC)                  # rep lodsb
    cpu = CPU(ram)
    cpu.eip, cpu.ecx, cpu.esi = 0x1000, 0xFFFFFFFF, 0
    assert cpu.run(3) == Status.STEP_LIMIT and cpu.steps == 3
    assert cpu.eip == 0x1000 and cpu.ecx == 0xFFFFFFFF - 3 and cpu.esi == 3
