"""Shared timing helper: best-of-N wall time of a callable, for baselines measured in-run."""
import time


def best_of(fn, repeat=5):
    """Smallest wall time of ``repeat`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(benchmark, name, **ratios):
    """Attach ratios to the benchmark record and print them (pytest -s shows them)."""
    for key, value in ratios.items():
        benchmark.extra_info[key] = round(value, 3)
    print(f"\n{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in ratios.items()))
