"""Cold start: callees-first compile walk and the helper process (kjcore/cpu/warmup.py)."""
import json
import os
import subprocess
import sys
import time

import pytest

from kjcore.cpu import core, warmup


def test_kernels_are_listed_callees_first():
    order, calls = warmup.kernels()
    assert order[-1] is core.run
    position = {k: i for i, k in enumerate(order)}
    for k in order:
        assert all(position[c] < position[k] for c in calls[k]), k
    names = {k.py_func.__name__ for k in order}
    assert {"dispatch", "decode", "decode_traced", "op_mov", "op_string", "read_mem", "walk",
            "raise_exception", "shift_op"} <= names
    # inline kernels are listed too: compiled ahead, not inside core.run
    assert {"fast_exec", "fast_exec_u", "fast_mem"} <= names
    assert {c.py_func.__name__ for c in calls[core.run]} >= {"dispatch", "fast_exec"}
    # called through lazy.py's table, not by run: compiled on their own, those a jump does not
    # always need only when the guest first does
    assert not {"decode_traced", "raise_exception", "run16"} & {
        c.py_func.__name__ for c in calls[core.run]}
    assert not {"run16", "op_fpu", "op_bcd", "op_far"} & names


def _leaves_and_rest():
    order, calls = warmup.kernels()
    return [k for k in order if not calls[k]], [k for k in order if calls[k]]


def test_walk_leaves_claimed_kernels_to_a_live_helper(tmp_path):
    leaves, rest = _leaves_and_rest()
    for k in rest:                                  # the "helper" has claimed all but the leaves
        (tmp_path / warmup._name(k)).touch()
    t = time.monotonic()
    warmup.compile_walk(str(tmp_path), other_alive=lambda: True)
    assert time.monotonic() - t < 60
    for k in leaves:
        assert (tmp_path / (warmup._name(k) + ".done")).exists()
    for k in rest:
        assert not (tmp_path / (warmup._name(k) + ".done")).exists()


def test_walk_takes_over_the_claims_of_a_helper_that_is_gone(tmp_path):
    leaves, rest = _leaves_and_rest()
    for k in leaves[:3] + rest[:3]:
        (tmp_path / warmup._name(k)).touch()
    warmup.compile_walk(str(tmp_path), other_alive=lambda: False)
    for k in leaves + rest:
        assert (tmp_path / (warmup._name(k) + ".done")).exists()


def test_walk_stops_waiting_at_the_deadline(tmp_path):
    order, calls = warmup.kernels()
    # a leaf some listed kernel waits for (one only run calls would simply be left to the
    # live helper, and the walk would return at once)
    leaf = next(k for k in order[:-1] if not calls[k] and any(k in calls[c] for c in order[:-1]))
    (tmp_path / warmup._name(leaf)).touch()         # claimed, never finished
    t = time.monotonic()
    warmup.compile_walk(str(tmp_path), other_alive=lambda: True, deadline=t + 1)
    assert time.monotonic() - t >= 1
    assert (tmp_path / (warmup._name(leaf) + ".done")).exists()


_COLD = r"""
import json, sys
import kjcore
from kjcore.cpu import warmup
MiB = 1 << 20
m = kjcore.Machine(16 * MiB)
m.kexec_load(8 * MiB, [kjcore.Segment(b"\xc3", 8 * MiB, 4096)], kjcore.KEXEC_PRESERVE_CONTEXT)
m.kernel_kexec()
order, _ = warmup.kernels()
loaded = [k.py_func.__name__ for k in order[:-1] if k.stats.cache_hits]
# an inline kernel compiled ahead with the types its parameter names give is the one its
# callers use (else they compile it once more)
extra = [k.py_func.__name__ for k in order if hasattr(k, "inline_args") and len(k.overloads) > 1]
print(json.dumps({"kernels": len(order) - 1, "loaded": loaded, "extra": extra}))
"""


def test_cold_start_loads_what_the_helper_compiled(tmp_path):
    """From an empty cache: the helper's kernels reach this process through the cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True,
                         text=True, timeout=600, check=True).stdout
    result = json.loads(out.splitlines()[-1])
    assert 0 < len(result["loaded"]) < result["kernels"]
    assert result["extra"] == []
    # a warm process afterwards has every kernel in the cache
    check = ("from kjcore.cpu import warmup, core\n"
             "order, _ = warmup.kernels()\n"
             "assert all(warmup._cached(k) for k in order), "
             "[k.py_func.__name__ for k in order if not warmup._cached(k)]\n")
    subprocess.run([sys.executable, "-c", check], env=dict(env, KJCORE_COMPILE_HELPER="0"),
                   timeout=120, check=True)


def test_a_process_that_never_runs_stops_its_helper(tmp_path):
    code = ("import numpy as np\n"
            "from kjcore.cpu import CPU, warmup\n"
            "CPU(np.zeros(4096, np.uint8))\n"
            "proc, claims, _ = warmup._helper\n"
            "print(proc.pid, claims)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("KJCORE_COMPILE_HELPER", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    pid, claims = int(out[0]), out[1]
    assert not os.path.exists(claims)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
