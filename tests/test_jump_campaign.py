"""Random payload campaign: thousands of kexec jump round trips, each checked byte for byte.

Every round trip runs on two machines in lock step, one per swap engine, in one of three
paging modes of the first kernel, and checks:

* invariant 7 -- at its first instruction the payload finds its pages as it left them, and
  before it exits they hold what the model says (a checkpoint port handler looks at them);
* invariant 8 and SPEC 8 -- :class:`kjcore.testing.payloads.JumpOracle`: every first-kernel
  byte outside the pages the jump may use is unchanged, processor state is restored;
* invariant 9 -- every source page holds what the image left in its destination (the
  payload's model, and untouched passive segments);
* invariants 11 and 12 -- the new start is the payload's return address (jump-back protocol)
  or the word after the swap page (plain ``ret``); the next exec enters there;
* invariant 13 -- both engines leave identical RAM, CPU state and results.

The default run makes 10 000 round trips; ``-m slow`` adds a run ten times as long.
"""
from collections import Counter

import numpy as np
import pytest

import kjcore
from kjcore import KEXEC_PRESERVE_CONTEXT, Segment
from kjcore.testing.payloads import JumpOracle, random_payload

RAM = 1 << 20
RESERVED = 64 << 10
PAGE = 4096
CHECKPOINT_PORT = 0xEA
CONFIGS = (dict(pae=False), dict(pae=True, fix_pae_return=True),
           dict(pae=True, nx=True, fix_pae_return=True))
NOT_ARCHITECTURAL = {"tsc", "steps", "trace_pos", "trace_cnt", "con_len"}


def _random_image(rng):
    """A payload plus 0-2 passive segments (random bytes it never touches)."""
    npages = int(rng.integers(2, 5))
    if rng.random() < 0.25:         # destinations over the first kernel's own memory
        dest = int(rng.integers(0, RESERVED // PAGE)) * PAGE
    else:
        dest = int(rng.integers(RESERVED // PAGE, RAM // PAGE - npages)) * PAGE
    payload = random_payload(rng, dest, npages, n_ops=int(rng.integers(0, 40)),
                             exit=("call", "call", "ret", "mixed")[int(rng.integers(4))],
                             checkpoint_port=CHECKPOINT_PORT)
    taken = set(range(dest // PAGE, dest // PAGE + npages))
    passive = {}
    segments = payload.segments()
    for _ in range(int(rng.integers(0, 3))):
        n = int(rng.integers(0, 3))
        first = int(rng.integers(0, RAM // PAGE - n))
        frames = set(range(first, first + max(n, 1)))
        if frames & taken:
            continue
        taken |= frames
        buf = rng.integers(0, 256, int(rng.integers(0, n * PAGE + 1)), dtype="u1").tobytes()
        segments.append(Segment(buf, first * PAGE, n * PAGE))
        padded = buf + bytes(n * PAGE - len(buf))
        for k in range(n):
            passive[(first + k) * PAGE] = padded[k * PAGE:(k + 1) * PAGE]
    rng.shuffle(segments)
    return payload, segments, passive


class _Checkpoints:
    """Port handler: copies of the payload's pages each time it signals (invariant 7)."""

    def __init__(self, m):
        self.m, self.seen, self.region = m, [], (0, 0)
        m.cpu.on_port(CHECKPOINT_PORT, self)

    def __call__(self, port, size, value):
        lo, hi = self.region
        self.seen.append(self.m.ram[lo:hi].tobytes())


def run_campaign(seed, round_trips):
    """Run at least ``round_trips`` jumps (two per lock-step round); returns statistics."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i, cfg in enumerate(CONFIGS):
        pair = [kjcore.Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine,
                               alloc_seed=seed + i, **cfg) for engine in ("emulated", "native")]
        pairs.append((pair, [_Checkpoints(m) for m in pair]))
    stats = Counter()
    while stats["round trips"] < round_trips:
        pair, checkpoints = pairs[int(rng.integers(len(pairs)))]
        payload, segments, passive = _random_image(rng)
        for m in pair:
            m.kexec_load(payload.entry, segments, KEXEC_PRESERVE_CONTEXT)
        assert np.array_equal(pair[0].ram, pair[1].ram)
        img = pair[0].kexec_image
        oracles = [JumpOracle(m) for m in pair]
        pages = payload.initial_pages()
        region = (payload.dest, payload.dest + payload.size)
        for _ in range(int(rng.integers(1, 25))):
            entered_with = bytes(pages)
            console, returned = payload.run_round(pages, img.control_page, img.swap_page)
            expected = {**passive, **payload.image_pages(pages)}
            for o, c in zip(oracles, checkpoints):
                o.before()
                c.seen, c.region = [], region
            results = [m.kernel_kexec() for m in pair]
            stats["round trips"] += 2
            stats[payload.exit] += 1
            # invariant 13: the engines agree on everything architectural
            assert np.array_equal(pair[0].ram, pair[1].ram), f"seed {seed}: RAM differs"
            a, b = (m.cpu.get_state() for m in pair)
            assert [f for f in a.dtype.names if f not in NOT_ARCHITECTURAL and a[f] != b[f]] == []
            assert (results[0].start, results[0].debugcon, results[0].pages_swapped) == \
                (results[1].start, results[1].debugcon, results[1].pages_swapped)
            assert checkpoints[0].seen == checkpoints[1].seen
            # invariant 7 and the model of the payload
            assert checkpoints[0].seen == [entered_with, bytes(pages)]
            assert results[0].debugcon == console
            # invariants 8, 9, SPEC 8
            oracles[0].check(expected)
            # invariant 11 (and 12: the loop's next exec enters at this start)
            if returned:
                assert results[0].start == oracles[0].expected_ret_start(expected)
                stats["ret"] += 1
                break
            assert results[0].start == img.start == payload.reentry
    return stats


def test_campaign_10000_round_trips():
    stats = run_campaign(seed=2008, round_trips=10_000)
    assert stats["round trips"] >= 10_000
    assert stats["call"] and stats["ret"] and stats["mixed"]


@pytest.mark.slow
def test_campaign_100000_round_trips():
    stats = run_campaign(seed=2627, round_trips=100_000)
    assert stats["round trips"] >= 100_000


@pytest.mark.parametrize("seed", range(3))
def test_payloads_decode_as_intended(seed):
    """The generated bytes mean what the generator thinks (capstone as an independent decoder)."""
    capstone = pytest.importorskip("capstone")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    rng = np.random.default_rng(seed)
    p = random_payload(rng, 0x40000, 3, n_ops=60, exit="mixed", checkpoint_port=CHECKPOINT_PORT)
    code_end = p.reentry + 5 - p.dest
    insns = list(md.disasm(p.image[:code_end], p.dest))
    assert sum(i.size for i in insns) == code_end          # no byte left undecoded
    names = Counter(i.mnemonic for i in insns)
    outs = sum(1 for k, _ in p.ops if k == "out")
    assert names["out"] == outs + 2                         # + the two checkpoints
    assert names["call"] == 1 and names["ret"] == 1
    assert insns[-1].mnemonic == "jmp" and int(insns[-1].op_str, 16) == p.dest
