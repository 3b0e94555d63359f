"""check_layouts throughput (SPEC §13: >= 5 million 16-segment layouts per second on 2 cores).

Run: ``pytest benchmarks/bench_fuzz.py --benchmark-enable -s``
"""
import numpy as np
from _timing import best_of, report

from kjcore.fuzz import check_layouts, random_layouts

N = 2_000_000


def test_check_layouts_throughput(benchmark):
    layouts = random_layouts(N, seed=1, ram_size=256 << 20, crashkernel=(64 << 20, 64 << 20))
    layouts["nr_segments"] = 16                     # every layout carries 16 segments
    kw = dict(ram_size=256 << 20, crashkernel=(64 << 20, 64 << 20))
    check_layouts(layouts[:1000], **kw)             # compile outside the timing
    benchmark.pedantic(check_layouts, args=(layouts,), kwargs=kw, rounds=3, iterations=1)
    t = best_of(lambda: check_layouts(layouts, **kw), repeat=3)
    errs = check_layouts(layouts, **kw)
    report(benchmark, "check_layouts", layouts_per_s=N / t,
           ok_fraction=float(np.mean(errs == 0)))
