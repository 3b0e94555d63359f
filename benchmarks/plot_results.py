"""Draw pytest-benchmark results: ``python benchmarks/plot_results.py RESULTS.json OUT.png``.

Make the results with ``pytest benchmarks --benchmark-enable --benchmark-json RESULTS.json``
(or ``kjcore bench -- --benchmark-json RESULTS.json``); the picture shows each benchmark's
mean time per round with its standard deviation (:func:`kjcore.plot.benchmark_figure`).
"""
import json
import sys

from kjcore.plot import benchmark_figure, check_target, save_figure


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    results, out = argv
    check_target(out)
    with open(results) as f:
        save_figure(benchmark_figure(json.load(f)), out)
    print(f"drawn to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
