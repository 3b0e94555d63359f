"""kjcore's CPU against Unicorn, instruction by instruction (see cpu_oracle.py).

Every opcode of the user-level families is run with random registers, flags
and memory; all general registers, EIP, the defined flags, the data memory
and the exception vector must agree.  The default run executes ~25 000 cases;
``-m slow`` runs the long campaign (set KJCORE_ORACLE_CASES to scale it).
"""
import os
import zlib

import pytest
from cpu_oracle import run_batch, user_opcodes

from kjcore.cpu.isa import FAMILY_NAMES, FAST_0F, FAST_CLASS, OP_FAMILY

OPS = user_opcodes()
FAMILIES = sorted({FAMILY_NAMES[OP_FAMILY[op]] for op in OPS})


def _ops(family):
    return [op for op in OPS if FAMILY_NAMES[OP_FAMILY[op]] == family]


def _report(fails):
    lines = [f"{len(fails)} mismatches"]
    for case, diffs in fails[:10]:
        lines.append(f"{case!r}: {diffs}")
    return "\n".join(lines)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_against_unicorn(family):
    ops = _ops(family)
    per_op = max(40, 2400 // len(ops))
    n, fails = run_batch(zlib.crc32(family.encode()), ops, per_op)
    assert n > 0.9 * per_op * len(ops)
    assert not fails, _report(fails)


def _fast(op):
    return FAST_0F[op & 0xFF] if op >> 8 else FAST_CLASS[op] != 0


@pytest.mark.parametrize("family", sorted({FAMILY_NAMES[OP_FAMILY[op]] for op in OPS
                                           if _fast(op)}))
def test_fast_path_against_unicorn(family):
    """The opcodes the fast path has (``isa``'s fast column), each case started with the
    fetch cache primed so the step loop tries the fast path first."""
    ops = [op for op in _ops(family) if _fast(op)]
    per_op = max(60, 2400 // len(ops))
    n, fails = run_batch(zlib.crc32(family.encode()) ^ 0xFA57, ops, per_op, fast=True)
    assert n > 0.9 * per_op * len(ops)
    assert not fails, _report(fails)


def test_every_family_is_covered():
    # Every family the decoder knows has oracle tests here or a scenario test.
    scenario = {"ud", "io", "far", "sys", "fpu"}
    assert set(FAMILY_NAMES) - set(FAMILIES) <= scenario


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_long_campaign(seed):
    per_op = int(os.environ.get("KJCORE_ORACLE_CASES", "500000")) // len(OPS) // 8 + 1
    n, fails = run_batch(1000 + seed, OPS, per_op)
    assert not fails, _report(fails)
