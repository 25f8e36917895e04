"""The soak benchmark at CI size: two replayed searches share a real PostgreSQL server (Debian's package, started
on 127.0.0.1 with its own data directory) and the test cluster while each driver is SIGKILLed and resumed and the
worker node is SIGKILLed and restarted. ``python -m benchmarks.soak`` runs the 500-trial soak."""

import pytest

from benchmarks.soak import soak
from peft_search.testing import Cluster


def test_two_searches_sharing_postgresql_lose_and_duplicate_nothing_through_driver_and_node_kills(tmp_path, cluster):
    report = soak(tmp_path, trials=20, driver_kills=1, node_kills=1, searches=2, postgres=True, cluster=cluster)
    assert (report["driver_kills"], report["node_kills"]) == (2, 1), report
    assert report["finished"] == 40 and report["mlflow_records"] == 40, report  # a trial Ray gave up on is retried
    zero = ("optuna_duplicates", "mlflow_duplicates", "lost", "records_not_in_optuna", "left_running",
            "records_without_params", "wrong_histories", "wrong_final_metrics")
    assert {key: report[key] for key in zero} == dict.fromkeys(zero, 0), report
    assert report["front_is_the_tables"], report
    # Two drivers (an Optuna and an MLflow pool each) and the soak's reads hold 11: a connection kept per trial or per read
    # would run into PostgreSQL's 100 (the soak's polling once did, leaving each read's pool to the garbage collector).
    assert report["most_connections"] <= 20, report
    # The password is where it belongs and nowhere else: not in a saved spec, a log, Ray's state or a record.
    assert report["password_seen_in"] == [str(tmp_path / "postgres" / "pgpass")], report


def test_a_cluster_whose_head_exits_says_why_at_once_and_leaves_the_other_cluster_alone(tmp_path, cluster):
    import ray

    # Ray's socket paths under the temp folder must fit in 107 bytes: this head exits as it starts.
    failed = Cluster(tmp_path, cpus=1, temp_dir=tmp_path / ("x" * 100))
    with pytest.raises(RuntimeError, match=r"(?s)did not reach 1 nodes \(a node exited\).*AF_UNIX path length"):
        failed.start()
    failed.stop()
    # This process still drives the shared cluster (stopping the failed one once shut the driver down).
    assert ray.is_initialized() and sum(node["Alive"] for node in ray.nodes()) >= 2


def test_a_soak_in_which_no_trial_finishes_fails_with_the_drivers_log(tmp_path, monkeypatch):
    """A hung driver (Ray's restored ConcurrencyLimiter once kept a resumed search from asking for trials) fails the
    soak after STALL_MINUTES without a finished trial, instead of running to CI's limit."""
    from benchmarks import soak as soaking

    log = open(tmp_path / "drivers.log", "a")
    log.write("the last thing a driver said\n")
    now = 1000.0
    monkeypatch.setattr(soaking.time, "time", lambda: now)
    progress = soaking._stalled((3, now), 4, log)  # a trial finished: the clock restarts
    assert progress == (4, now)
    now += soaking.STALL_MINUTES * 60
    assert soaking._stalled(progress, 4, log) == progress  # not yet
    now += 1
    with pytest.raises(RuntimeError, match=r"(?s)no trial finished in 10 minutes \(4 so far\).*the last thing a driver"):
        soaking._stalled(progress, 4, log)
    log.close()
