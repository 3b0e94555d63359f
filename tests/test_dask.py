"""Jump campaigns on a Dask cluster (the optional ``[dask]`` extra; skipped without it).

A ``dask.distributed.LocalCluster`` of two single-threaded worker processes stands in for a
real cluster: ``client.get_executor()`` is what a campaign takes either way (docs/scaling.rst).
"""
import pytest

from kjcore.fuzz import jump_campaign
from kjcore.fuzz.jumps import _unit_task

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_campaign_on_a_local_cluster_matches_the_in_process_run(client):
    seen = []
    result = jump_campaign(120, seed=11, units=4, executor=client.get_executor(),
                           progress=lambda done, total, r: seen.append(done))
    assert result.ok and result.stats["round trips"] >= 120
    assert sorted(seen) == [1, 2, 3, 4]
    assert result.stats == jump_campaign(120, seed=11, units=4).stats
    # the units ran on the workers, not here
    assert len(client.scheduler_info()["workers"]) == 2


def test_a_failing_unit_comes_back_as_text(client):
    # a negative seed makes run_unit raise on the worker
    fut = client.submit(_unit_task, -1, 0, 2, pure=False)
    unit, stats, failure = fut.result()
    assert unit == 0 and not stats and "ValueError" in failure
