"""End-to-end kexec jump campaigns (SPEC §11): random images jumped thousands of times.

A campaign is split into *units*, each reproducible from ``(seed, unit)`` alone: a unit builds
three pairs of machines (2-level, PAE, PAE+NX paging; one machine per swap engine), then
repeatedly loads a random image -- a random physical-mode payload (:mod:`kjcore.fuzz.payloads`)
plus passive segments of random bytes, sometimes over the first kernel's own memory -- and jumps
into it 1-24 times, checking after every round trip:

* invariant 7: at its first instruction the payload finds its pages as it left them;
* invariants 8, 9 and SPEC §8 (:class:`kjcore.fuzz.oracle.JumpOracle`): every first-kernel
  byte outside the pages a jump may use is unchanged, every source page holds what the image
  left, processor state is restored;
* invariants 11/12: the new start is the re-entry point, and the next exec enters there;
* invariant 13: both engines leave identical RAM, CPU state and results.

Units run in this process, on a pool of worker processes the campaign owns (``workers=``), or
on any :class:`concurrent.futures.Executor` (``dask.distributed.Client(...).get_executor()``
for a cluster).  Ctrl-C stops a campaign and its pool within about a second.

>>> from kjcore.fuzz import jump_campaign
>>> result = jump_campaign(40, seed=1, units=2)
>>> result.ok, result.stats["round trips"] >= 40
(True, True)
"""
import signal
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from ..constants import KEXEC_PRESERVE_CONTEXT, PAGE_SIZE
from ..cpu import CPU
from ..cpu.state import WORK_FIELDS
from ..machine import Machine
from ..progress import bar as progress_bar
from ..segment import Segment
from .oracle import JumpOracle
from .payloads import random_payload

RAM = 1 << 20
RESERVED = 64 << 10
CHECKPOINT_PORT = 0xEA
#: the payloads come back with DF = 1, which the faithful routine does not survive (SPEC 7.10)
CONFIGS = (dict(pae=False, fix_peer_df=True),
           dict(pae=True, fix_pae_return=True, fix_peer_df=True),
           dict(pae=True, nx=True, fix_pae_return=True, fix_peer_df=True))
#: CPU state fields that count work done, not architectural state
NOT_ARCHITECTURAL = WORK_FIELDS


@dataclass
class CampaignResult:
    """Outcome of :func:`jump_campaign`: counters and the failing units."""
    stats: Counter = field(default_factory=Counter)
    #: ``(seed, unit, message)`` per failing unit; replay one with :func:`run_unit`
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self):
        return not self.failures


def random_image(rng, ram_size=RAM, reserved=RESERVED):
    """A payload plus 0-2 passive segments; returns ``(payload, segments, passive_pages)``."""
    npages = int(rng.integers(2, 5))
    if rng.random() < 0.25:         # destinations over the first kernel's own memory
        dest = int(rng.integers(0, reserved // PAGE_SIZE)) * PAGE_SIZE
    else:
        dest = int(rng.integers(reserved // PAGE_SIZE, ram_size // PAGE_SIZE - npages)) * PAGE_SIZE
    payload = random_payload(rng, dest, npages, n_ops=int(rng.integers(0, 40)),
                             exit=("call", "call", "ret", "mixed")[int(rng.integers(4))],
                             checkpoint_port=CHECKPOINT_PORT)
    taken = set(range(dest // PAGE_SIZE, dest // PAGE_SIZE + npages))
    passive = {}
    segments = payload.segments()
    for _ in range(int(rng.integers(0, 3))):
        n = int(rng.integers(0, 3))
        first = int(rng.integers(0, ram_size // PAGE_SIZE - n))
        frames = set(range(first, first + max(n, 1)))
        if frames & taken:
            continue
        taken |= frames
        buf = rng.integers(0, 256, int(rng.integers(0, n * PAGE_SIZE + 1)), dtype="u1").tobytes()
        segments.append(Segment(buf, first * PAGE_SIZE, n * PAGE_SIZE))
        padded = buf + bytes(n * PAGE_SIZE - len(buf))
        for k in range(n):
            passive[(first + k) * PAGE_SIZE] = padded[k * PAGE_SIZE:(k + 1) * PAGE_SIZE]
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


def run_unit(seed, unit, round_trips):
    """Run one unit (at least ``round_trips`` jumps); returns its counters.

    Raises ``AssertionError`` naming the invariant at the first violation.
    """
    rng = np.random.default_rng([seed, unit])
    pairs = []
    for i, cfg in enumerate(CONFIGS):
        # No BIOS: payloads land anywhere in the 1 MiB, the read-only ROM included.
        pair = [Machine(ram_size=RAM, kernel_reserved=RESERVED, engine=engine, bios=False,
                        alloc_seed=seed + unit + i, **cfg) for engine in ("emulated", "native")]
        pairs.append((pair, [_Checkpoints(m) for m in pair]))
    stats = Counter()
    same = np.empty(RAM, dtype=bool)        # reused: no RAM-sized temporary per jump
    last = {}                               # machine -> its last oracle (buffers reused)
    while stats["round trips"] < round_trips:
        pair, checkpoints = pairs[int(rng.integers(len(pairs)))]
        payload, segments, passive = random_image(rng)
        for m in pair:
            m.kexec_load(payload.entry, segments, KEXEC_PRESERVE_CONTEXT)
        assert _same(pair[0].ram, pair[1].ram, same), "load: RAM differs between machines"
        img = pair[0].kexec_image
        oracles = [JumpOracle(m, last.get(m)) for m in pair]
        last.update(zip(pair, oracles))
        pages = payload.initial_pages()
        region = (payload.dest, payload.dest + payload.size)
        stats["images"] += 1
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
            assert _same(pair[0].ram, pair[1].ram, same), "invariant 13: RAM differs"
            a, b = (m.cpu.get_state() for m in pair)
            diff = [f for f in a.dtype.names if f not in NOT_ARCHITECTURAL and a[f] != b[f]]
            assert not diff, f"invariant 13: CPU state differs in {diff}"
            assert (results[0].start, results[0].debugcon, results[0].pages_swapped) == \
                (results[1].start, results[1].debugcon, results[1].pages_swapped), \
                "invariant 13: results differ"
            assert checkpoints[0].seen == checkpoints[1].seen, "invariant 13: payload views"
            assert checkpoints[0].seen == [entered_with, bytes(pages)], "invariant 7"
            assert results[0].debugcon == console, "payload model: console output"
            oracles[0].check(expected)
            if returned:
                assert results[0].start == oracles[0].expected_ret_start(expected), \
                    "invariant 11 (plain ret)"
                stats["ret"] += 1
                break
            assert results[0].start == img.start == payload.reentry, "invariant 11/12"
    return stats


def _same(a, b, out):
    """``np.array_equal`` of two RAM arrays without a RAM-sized temporary (see JumpOracle)."""
    return bool(np.equal(a, b, out=out).all())


def _unit_task(seed, unit, round_trips):
    """Executor task: a unit's counters, or its failure as text (exceptions may not pickle)."""
    try:
        return unit, run_unit(seed, unit, round_trips), None
    except Exception:                       # an invariant violation or a crash: report it
        return unit, Counter(), traceback.format_exc(limit=4)


def _interruptible_unit_task(seed, unit, round_trips):
    """Task of :func:`jump_campaign`'s own pool: :func:`_unit_task` with Ctrl-C enabled.

    The pool's workers ignore SIGINT while idle (a ``KeyboardInterrupt`` in a worker's wait
    loop kills it with a traceback); while a unit runs, SIGINT stops it, so that Ctrl-C in a
    terminal, which signals the whole process group, ends every started unit at once.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _unit_task(seed, unit, round_trips)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_on_executor(executor, seed, units, per_unit, collect):
    """Every unit submitted to the caller's ``executor``; on Ctrl-C (or any error) the units
    not started yet are cancelled and the exception propagates (the executor stays open)."""
    futures = [executor.submit(_unit_task, seed, k, per_unit) for k in range(units)]
    try:
        for done, fut in enumerate(as_completed(futures), 1):
            collect(done, fut.result())
    finally:
        for fut in futures:
            fut.cancel()


def _run_on_own_pool(workers, seed, units, per_unit, collect):
    """The units on a pool of ``workers`` processes, shut down however the campaign ends.

    At most one unit per worker is submitted at a time: on Ctrl-C no queued unit is left for
    a worker to start, the started ones stop (see :func:`_interruptible_unit_task`), and the
    pending ones are cancelled, so the pool is gone within about a second.
    """
    # Compile the CPU here first: from a cold cache every worker would compile it for itself.
    CPU(np.zeros(PAGE_SIZE, np.uint8)).run(1)
    pool = ProcessPoolExecutor(workers, initializer=signal.signal,
                               initargs=(signal.SIGINT, signal.SIG_IGN))
    todo = iter(range(units))
    try:
        running = {pool.submit(_interruptible_unit_task, seed, k, per_unit)
                   for k in islice(todo, workers)}
        done = 0
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                done += 1
                collect(done, fut.result())
                running |= {pool.submit(_interruptible_unit_task, seed, k, per_unit)
                            for k in islice(todo, 1)}
    finally:
        pool.shutdown(cancel_futures=True)


def jump_campaign(round_trips, seed, *, units=None, workers=1, executor=None, progress=None):
    """Run at least ``round_trips`` checked kexec jumps, reproducible from ``seed``.

    ``units`` (default: one per 2000 round trips) is how many independent units the work is
    split into.  They run in this process, in order; or on ``workers`` processes of a pool
    the campaign starts and shuts down; or on ``executor``, any
    ``concurrent.futures.Executor`` (not both).  ``progress``: ``True`` for a progress bar on
    stderr (:mod:`kjcore.progress`), or a callable ``progress(done_units, total_units,
    result)``.  Returns a :class:`CampaignResult`.

    Ctrl-C (``KeyboardInterrupt``) propagates after the campaign has cancelled the units it
    has not started and, with ``workers``, stopped its pool: Ctrl-C in a terminal signals the
    workers too and their units stop at once (a SIGINT sent to this process alone lets each
    worker finish its unit first); a caller's ``executor`` stays open, only the campaign's
    own units are cancelled.
    """
    round_trips = int(round_trips)
    if round_trips <= 0:
        raise ValueError("round_trips must be positive")
    workers = int(workers)
    if workers <= 0:
        raise ValueError("workers must be positive")
    if executor is not None and workers != 1:
        raise ValueError("give workers or executor, not both")
    units = int(units or max(1, -(-round_trips // 2000)))
    per_unit = -(-round_trips // units)
    result = CampaignResult()
    t0 = time.perf_counter()
    report = _Bar(units) if progress is True else progress

    def collect(done, outcome):
        unit, stats, failure = outcome
        result.stats.update(stats)
        if failure is not None:
            result.failures.append((seed, unit, failure))
        result.seconds = time.perf_counter() - t0
        if report:
            report(done, units, result)

    try:
        if executor is not None:
            _run_on_executor(executor, seed, units, per_unit, collect)
        elif workers > 1:
            _run_on_own_pool(workers, seed, units, per_unit, collect)
        else:
            for k in range(units):
                collect(k + 1, _unit_task(seed, k, per_unit))
    finally:
        if progress is True:
            report.bar.close()
    return result


class _Bar:
    """``progress=True``: a bar of units on stderr with the round trips, failures and rate."""

    def __init__(self, units):
        self.bar = progress_bar(units, "jump campaign", unit="unit", enabled=True)

    def __call__(self, done, total, result):
        rate = result.stats["round trips"] / max(result.seconds, 1e-9)
        self.bar.set_postfix_str(f"{result.stats['round trips']} round trips, "
                                 f"{len(result.failures)} failing, {rate:.0f} jumps/s",
                                 refresh=False)
        self.bar.update(done - self.bar.n)
