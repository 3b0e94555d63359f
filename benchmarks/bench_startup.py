"""Cold and warm start to the first completed jump (SPEC §18: cold <= 15 s and ``import kjcore``
<= 0.5 s; §13: warm <= 1 s).

Each figure comes from a fresh interpreter (``python -c``) with its own ``NUMBA_CACHE_DIR``:
*cold* starts from an empty cache directory (every kernel the first jump needs is compiled),
*warm* reuses the directory the cold run filled.  The child times, in order: ``import kjcore``,
building a 64 MiB machine and loading a 4 MiB preserve-context image whose entry is ``ret``,
and the first ``kernel_kexec()`` (the round trip).  ``process`` is the wall time of the whole
child as seen from outside (interpreter start-up included).

Run: ``pytest benchmarks/bench_startup.py --benchmark-enable -s -o addopts="" -p no:cacheprovider``
or as a script: ``python benchmarks/bench_startup.py [--warm-runs N] [--engine native]``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import pytest
from _timing import report

COLD_TARGET_S = 15.0
IMPORT_TARGET_S = 0.5
WARM_TARGET_S = 1.0

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import kjcore
t1 = time.perf_counter()
MiB = 1 << 20
m = kjcore.Machine(64 * MiB, engine=sys.argv[1])
entry = 16 * MiB
m.kexec_load(entry, [kjcore.Segment(b"\xc3", entry, 4 * MiB)], kjcore.KEXEC_PRESERVE_CONTEXT)
t2 = time.perf_counter()
c2 = time.process_time()
r = m.kernel_kexec()
t3 = time.perf_counter()
c3 = time.process_time()
assert r.pages_swapped == 2 * (4 * MiB // 4096), r
print(json.dumps({"import": t1 - t0, "machine_load": t2 - t1, "first_jump": t3 - t2,
                  "in_process": t3 - t0, "first_jump_cpu": c3 - c2, "steps": r.steps}))
"""


def start(cache_dir, engine="emulated"):
    """Run the child once with ``NUMBA_CACHE_DIR=cache_dir``; its timings (seconds)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, engine], check=True,
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process"] = wall
    # CPU seconds of the child and its compile helper: what the other work sharing the cores
    # does not change much, unlike the wall time
    res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


def best(runs):
    """Per-field minimum over warm runs (best-of-N: other work shares the 2 cores)."""
    return {k: min(r[k] for r in runs) for k in runs[0]}


def describe(name, res, target):
    return (f"{name}: process {res['process']:.3f} s (target <= {target:g} s: "
            f"{'met' if res['process'] <= target else 'MISSED'}) = import {res['import']:.3f} s"
            f" ({'met' if res['import'] <= IMPORT_TARGET_S else 'MISSED'} <= {IMPORT_TARGET_S:g})"
            f" + machine/load {res['machine_load']:.3f} s + first jump {res['first_jump']:.3f} s"
            f" ({res['first_jump_cpu']:.3f} s CPU)"
            f" (+ interpreter {res['process'] - res['in_process']:.3f} s);"
            f" {res['cpu']:.1f} CPU s in all, load average {os.getloadavg()[0]:.2f}")


@pytest.fixture(scope="module")
def cache_dir():
    with tempfile.TemporaryDirectory(prefix="kjcore-nbc-") as d:
        yield d


def test_cold_start(benchmark, cache_dir):
    assert not os.listdir(cache_dir)
    res = benchmark.pedantic(start, args=(cache_dir,), rounds=1, iterations=1)
    print("\n" + describe("cold", res, COLD_TARGET_S))
    report(benchmark, "cold start", process_s=res["process"], import_s=res["import"],
           first_jump_s=res["first_jump"], first_jump_cpu_s=res["first_jump_cpu"],
           vs_target=COLD_TARGET_S / res["process"])


def test_warm_start(benchmark, cache_dir):
    if not os.listdir(cache_dir):
        start(cache_dir)                        # run alone: fill the cache first
    runs = []
    benchmark.pedantic(lambda: runs.append(start(cache_dir)), rounds=5, iterations=1)
    res = best(runs)
    print("\n" + describe("warm (best of 5)", res, WARM_TARGET_S))
    report(benchmark, "warm start", process_s=res["process"], import_s=res["import"],
           first_jump_s=res["first_jump"], first_jump_cpu_s=res["first_jump_cpu"],
           vs_target=WARM_TARGET_S / res["process"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm-runs", type=int, default=5)
    ap.add_argument("--engine", default="emulated", choices=("emulated", "native"))
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"engine={args.engine}, load average {load:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="kjcore-nbc-") as d:
        print(describe("cold", start(d, args.engine), COLD_TARGET_S), flush=True)
        runs = [start(d, args.engine) for _ in range(args.warm_runs)]
        print(describe(f"warm (best of {args.warm_runs})", best(runs), WARM_TARGET_S))


if __name__ == "__main__":
    main()
