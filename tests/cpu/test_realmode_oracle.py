"""kjcore's CPU in real mode against Unicorn in 16-bit mode, one instruction at a time.

The cases of cpu_oracle.py generated for 16-bit code (0x66/0x67 select 32 bits, segment
overrides) run with real-mode segments (base = selector << 4) on both emulators, plus the
segment loads and far transfers real mode allows without descriptor tables; selectors and
bases are compared too.  QEMU (inside Unicorn) checks no segment limits, so a case where
kjcore raises the 386's limit fault (#GP/#SS) and Unicorn does not is skipped (the limit
rules are scenario tests in test_realmode.py).  The default run executes a few thousand
cases; ``-m slow`` runs KJCORE_REALMODE_CASES of them (default 50 000).
"""
import os

import pytest
from cpu_oracle import REAL_EXTRA, run_batch, user_opcodes

OPS = user_opcodes() + list(REAL_EXTRA)


def _report(fails):
    return "\n".join([f"{len(fails)} mismatches"] + [f"{c!r}: {d}" for c, d in fails[:10]])


@pytest.mark.parametrize("part", range(4))
def test_real_mode_against_unicorn(part):
    ops = OPS[part::4]
    n, fails = run_batch(11 + part, ops, 12, code16=True)
    assert n > 0.75 * 12 * len(ops)
    assert not fails, _report(fails)


@pytest.mark.slow
def test_real_mode_long_campaign():
    cases = int(os.environ.get("KJCORE_REALMODE_CASES", "50000"))
    per_op = int(cases * 1.2) // len(OPS) + 1          # ~5% are limit faults QEMU cannot judge
    n, fails = run_batch(2000, OPS, per_op, code16=True)
    print(f"real-mode oracle: {n} cases compared")
    assert not fails, _report(fails)
    assert n >= cases
