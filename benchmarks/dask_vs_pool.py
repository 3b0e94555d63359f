"""A jump campaign on a Dask LocalCluster vs a ProcessPoolExecutor on the same cores.

    python benchmarks/dask_vs_pool.py [ROUND_TRIPS] [UNITS] [REPEATS]

Both get warm workers first (one campaign each, not timed: worker start-up, imports and the
Numba cache load are paid once per worker), then the two alternate ``REPEATS`` times on fresh
seeds (alternating evens out the load of a shared machine); the line printed last is the
ratio of the median times, process pool / Dask (>= 0.8 is the goal of docs/scaling.rst).
The CPU time the workers spend (user + system, from ``psutil``) is reported too: on a shared
machine it is steadier than wall time.  Every Dask campaign's counters are checked against the
in-process run of the same seed.
"""
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from kjcore.fuzz import jump_campaign


def _cpu(pids):
    import psutil  # comes with dask[distributed], like the cluster itself
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


def _timed(executor, pids, round_trips, units, seed):
    t, c = time.perf_counter(), _cpu(pids)
    result = jump_campaign(round_trips, seed=seed, units=units, executor=executor)
    assert result.ok, result.failures
    return time.perf_counter() - t, _cpu(pids) - c, result


def main(round_trips=4000, units=8, repeats=3):
    from dask.distributed import Client, LocalCluster
    workers = 2
    times = {"pool": [], "dask": []}
    cpu = {"pool": [], "dask": []}
    with ProcessPoolExecutor(workers) as pool, \
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cl, \
            Client(cl) as client:
        dask = client.get_executor()
        pids = {"dask": list(client.run(os.getpid).values())}
        _timed(pool, [], round_trips, units, seed=0)              # warm the workers
        pids["pool"] = [p.pid for p in pool._processes.values()]
        _timed(dask, pids["dask"], round_trips, units, seed=0)
        for k in range(1, repeats + 1):
            for name, executor in (("pool", pool), ("dask", dask)):
                dt, dc, result = _timed(executor, pids[name], round_trips, units, seed=k)
                times[name].append(dt)
                cpu[name].append(dc)
                print(f"seed {k} {name}: {dt:.2f} s, workers' CPU {dc:.2f} s, "
                      f"{result.stats['round trips']} round trips", flush=True)
                if name == "dask":
                    serial = jump_campaign(round_trips, seed=k, units=units)
                    assert result.stats == serial.stats, "Dask and in-process runs differ"
    pool_s, dask_s = statistics.median(times["pool"]), statistics.median(times["dask"])
    print(f"median: ProcessPoolExecutor({workers}) {pool_s:.2f} s, Dask LocalCluster "
          f"({workers} workers x 1 thread) {dask_s:.2f} s; pool/dask = {pool_s / dask_s:.2f}; "
          f"workers' CPU time pool/dask = "
          f"{statistics.median(cpu['pool']) / statistics.median(cpu['dask']):.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
