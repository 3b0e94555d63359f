"""Random payload campaign: thousands of kexec jump round trips, each checked byte for byte.

Every round trip runs on two machines in lock step, one per swap engine, in one of three
paging modes of the first kernel, and checks:

* invariant 7 -- at its first instruction the payload finds its pages as it left them, and
  before it exits they hold what the model says (a checkpoint port handler looks at them);
* invariant 8 and SPEC 8 -- :class:`kjcore.fuzz.oracle.JumpOracle`: every first-kernel
  byte outside the pages the jump may use is unchanged, processor state is restored;
* invariant 9 -- every source page holds what the image left in its destination (the
  payload's model, and untouched passive segments);
* invariants 11 and 12 -- the new start is the payload's return address (jump-back protocol)
  or the word after the swap page (plain ``ret``); the next exec enters there;
* invariant 13 -- both engines leave identical RAM, CPU state and results.

The default run makes 10 000 round trips; ``-m slow`` adds a run ten times as long.
"""
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import kjcore
from kjcore.fuzz import jump_campaign, run_unit
from kjcore.fuzz.jumps import CHECKPOINT_PORT
from kjcore.fuzz.oracle import JumpOracle
from kjcore.fuzz.payloads import random_payload


def run_campaign(seed, round_trips):
    """One unit of kjcore.fuzz's campaign, raising at the first violated invariant."""
    return run_unit(seed, 0, round_trips)


def test_campaign_10000_round_trips():
    stats = run_campaign(seed=2008, round_trips=10_000)
    assert stats["round trips"] >= 10_000
    assert stats["call"] and stats["ret"] and stats["mixed"]


@pytest.mark.slow
def test_campaign_100000_round_trips():
    stats = run_campaign(seed=2627, round_trips=100_000)
    assert stats["round trips"] >= 100_000


def test_campaign_api_with_an_executor_and_progress():
    seen = []
    with ThreadPoolExecutor(2) as ex:
        result = jump_campaign(60, seed=5, units=3, executor=ex,
                               progress=lambda done, total, r: seen.append((done, total)))
    assert result.ok and result.stats["round trips"] >= 60
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]
    again = jump_campaign(60, seed=5, units=3)
    assert again.stats == result.stats                  # reproducible from the seed


def test_campaign_on_its_own_pool_matches_the_serial_run():
    result = jump_campaign(60, seed=5, units=3, workers=2)
    assert result.ok and result.stats == jump_campaign(60, seed=5, units=3).stats
    assert not multiprocessing.active_children()        # the pool is shut down


def test_ctrl_c_cancels_the_units_submitted_to_a_callers_executor():
    submitted = []

    class Recording(ThreadPoolExecutor):
        def submit(self, *args):
            submitted.append(super().submit(*args))
            return submitted[-1]

    def interrupt(done, total, result):
        raise KeyboardInterrupt

    with Recording(1) as ex:
        with pytest.raises(KeyboardInterrupt):
            jump_campaign(100, seed=5, units=10, executor=ex, progress=interrupt)
        # one unit finished, at most one had started: the other eight never run
        assert sum(f.cancelled() for f in submitted) >= 8
        assert ex.submit(int, 7).result() == 7          # the caller's executor stays usable


def _process_group(pgid):
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue                                    # not a process, or it just ended
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_ctrl_c_stops_kjcore_fuzz_jumps_and_its_workers():
    # Ctrl-C in a terminal sends SIGINT to the whole foreground process group.
    root = Path(kjcore.__file__).parent.parent
    # the `kjcore` console script, wherever [project.scripts] points it
    module, func = re.search(r'^kjcore = "([\w.]+):(\w+)"$',
                             (root / "pyproject.toml").read_text(), re.M).groups()
    command = f"import sys; from {module} import {func}; sys.exit({func}())"
    proc = subprocess.Popen([sys.executable, "-c", command, "fuzz", "--jumps", "1000000",
                             "--workers", "2", "--no-progress"],
                            env=dict(os.environ, PYTHONPATH=str(root)), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_process_group(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)                             # the parent and its two workers
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)                                 # the workers are running units
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert err == "kjcore: interrupted\n" and out == ""
    assert elapsed < 3.0, f"took {elapsed:.1f} s to stop"   # ~0.8 s on two busy cores
    assert _process_group(proc.pid) == []               # no worker left behind


def test_campaign_reports_a_violation_instead_of_stopping(monkeypatch):
    def broken_check(self, image_pages=None):
        raise AssertionError("invariant 8: injected")
    monkeypatch.setattr(JumpOracle, "check", broken_check)
    result = jump_campaign(20, seed=1, units=2)
    assert not result.ok and len(result.failures) == 2
    assert "invariant 8: injected" in result.failures[0][2]


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
