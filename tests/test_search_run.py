"""Searches on a real two-node Ray cluster: Optuna's trial states under ASHA, the budget cap, the front,
confirmation seeds, MLflow records, resume after Ctrl-C, and the command line (``--smoke`` trains MiniLM)."""

import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search import runner
from search.spec import parse, saved_spec

CLI = [str(Path(sys.executable).parent / "peft-search")]
# A search written by the layout before search/ was split (commit 29fef4c): a synthetic search of 8 trials
# (pareto_asha, TPE, confirm_seeds 1) whose driver was SIGKILLed after 4 had ended; its saved spec's delay cut to
# 0.25 s per report. The MLflow store is left out: its artifact location was an absolute path.
OLD_STATE = Path(__file__).parent / "data" / "search-state-29fef4c.tar.gz"


def synthetic(tmp_path, address, **changes):
    """A search with the synthetic trainer: the whole stack, seconds per trial."""
    return {"name": "syn", "trainer": "synthetic", "synthetic_delay": 0.2, "trials": 8, "concurrency": 2,
            "points_to_evaluate": ["lora_attn", "mam"], "preset_overrides": {"lora_attn": {"attn.bottleneck": 4}},
            "budget_cap": 2, "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 8},
            "train": {"eval_every": 2}, "root": str(tmp_path), "storage": f"sqlite:///{tmp_path}/optuna.db",
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "ray_address": address, **changes}


def trained(study):
    """Trials that were handed to Ray (not the designs rejected for the budget cap)."""
    return [t for t in study.trials if "infeasible" not in t.user_attrs]


def child_runs(spec):
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.name).experiment_id
    return client.search_runs([experiment], filter_string="tags.ray_trial_id != ''", max_results=1000)


def test_a_search_on_two_nodes_prunes_stopped_trials_and_keeps_them_off_the_front(tmp_path, ray_cluster, monkeypatch):
    spec = parse(synthetic(tmp_path, ray_cluster, confirm_seeds=2))
    engines = []  # each SQLAlchemy engine holds a pool of connections: on PostgreSQL, server connections
    create_engine = sqlalchemy.engine.create_engine
    monkeypatch.setattr(sqlalchemy.engine, "create_engine", lambda url, **kw: engines.append(str(url)) or
                        create_engine(url, **kw))
    summary = runner.run(spec, verbose=0)
    assert engines.count(spec.storage) == 1  # one Optuna storage for the whole driver
    study = optuna.load_study(study_name="syn", storage=spec.storage)

    # the budget cap: MAM at the paper's sizes (11% of MiniLM) is rejected before training, and not counted
    mam = next(t for t in study.trials if t.user_attrs.get("preset") == "mam")
    assert mam.state == TrialState.FAIL and "over the cap" in mam.user_attrs["infeasible"]
    runs = trained(study)
    assert len(runs) == spec.trials and all(t.user_attrs["budget"] <= spec.budget_cap for t in runs)

    # ASHA-stopped trials are PRUNED with the step they reached; COMPLETE ones ran all 8 steps
    pruned = [t for t in runs if t.state == TrialState.PRUNED]
    complete = [t for t in runs if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == spec.trials
    assert all(t.user_attrs["step"] < 8 and "stopped by ASHA" in t.user_attrs["stopped"] for t in pruned)
    assert all(t.user_attrs["step"] == 8 for t in complete)
    assert any(t.user_attrs["step"] == 2 for t in pruned)  # stopped at the first rung
    front = {row.trial for row in summary.front}
    assert front and front <= {t.number for t in complete} and not front & {t.number for t in pruned}
    assert summary.hypervolume > 0 and summary.counts["stopped"] == len(pruned)

    # MLflow: one child run per trial, plus the confirmations; trials ran on both nodes
    records = child_runs(spec)
    search_runs = [r for r in records if r.data.tags["confirmation"] == "false"]
    assert len(search_runs) == spec.trials == len({r.data.tags["ray_trial_id"] for r in search_runs})
    assert len({r.data.tags["node_id"] for r in records}) == 2
    assert {r.data.tags["pareto"] for r in search_runs if int(r.data.tags["optuna_trial"]) in front} == {"true"}
    assert all("attn.form" in r.data.params and "budget" in r.data.params for r in search_runs)
    stopped = [r for r in search_runs if r.data.tags["status"] == "stopped"]
    assert len(stopped) == len(pruned) and all(r.data.tags["fidelity"].startswith("stopped by ASHA") for r in stopped)

    # confirmation: each front design re-trained with 2 more seeds; the front reports the median of 3
    confirmations = [r for r in records if r.data.tags["confirmation"] == "true"]
    assert len(confirmations) == 2 * len(front)
    for row in summary.front:
        seeds = [r.data.metrics["accuracy"] for r in confirmations if r.data.tags["optuna_trial"] == str(row.trial)]
        original = study.trials[row.trial].values[0]
        assert sorted(r.data.params["seed"] for r in confirmations if r.data.tags["optuna_trial"] == str(row.trial)) == ["1", "2"]
        assert row.metric == pytest.approx(statistics.median([original, *seeds]))


def test_a_search_started_by_the_old_layout_resumes(tmp_path, ray_cluster, monkeypatch):
    """Ray pickled the searcher (with its Space and its sampler factory ``search.runner.make_sampler``), the trial
    folder namer, the Recorder and the scheduler by module path into the search's experiment state."""
    with tarfile.open(OLD_STATE) as archive:
        archive.extractall(tmp_path, filter="data")
    state = (tmp_path / "peft-search" / "ray" / "old-layout" / "tuner.pkl").read_bytes()
    assert all(path in state for path in (b"search.runner", b"search.space", b"search.records", b"search.searcher"))
    monkeypatch.chdir(tmp_path)  # the saved spec's stores are relative paths
    spec = saved_spec("peft-search", "old-layout")
    ended = [t for t in optuna.load_study(study_name="old-layout", storage=spec.storage).trials
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    summary = runner.run(spec, resume=True, verbose=0)
    study = optuna.load_study(study_name="old-layout", storage=spec.storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ended) == 4 and len(finished) == 8 and {t.number for t in ended} <= {t.number for t in finished}
    assert summary.front and summary.hypervolume > 0
    runs = child_runs(spec)  # the journal the killed driver left is replayed: its trials are recorded too
    trials = {r.data.tags["ray_trial_id"]: r.data.tags["status"] for r in runs if r.data.tags["confirmation"] == "false"}
    assert {t for t, status in trials.items() if status in ("completed", "stopped")} == {
        t.user_attrs["ray_trial_id"] for t in finished}
    assert set(trials.values()) <= {"completed", "stopped", "failed"}  # the killed ones failed, none left running
    assert len([r for r in runs if r.data.tags["confirmation"] == "true"]) == len(summary.front)


def test_ctrl_c_then_resume_loses_and_duplicates_nothing(tmp_path, ray_cluster):
    spec = parse(synthetic(tmp_path, ray_cluster, name="resumed", synthetic_delay=0.3, trials=6))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps(spec.to_dict()))
    driver = subprocess.Popen([*CLI, "run", str(spec_file), "--verbose", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while len(_finished(spec)) < 2:
        assert time.time() < deadline and driver.poll() is None, driver.stdout.read() if driver.poll() else "slow"
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=120)
    interrupted = len(_finished(spec))
    assert 2 <= interrupted < spec.trials

    out = subprocess.run([*CLI, "resume", "resumed", "--root", str(tmp_path), "--verbose", "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    finished = _finished(spec)
    assert len(finished) == spec.trials
    assert len({t.user_attrs["ray_trial_id"] for t in finished}) == spec.trials  # each trial told once
    records = child_runs(spec)
    assert len(records) == spec.trials == len({r.data.tags["ray_trial_id"] for r in records})
    assert {r.info.status for r in records} == {"FINISHED"}
    assert "Pareto front" in out.stdout


def _finished(spec):
    try:
        study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    except KeyError:  # not created yet
        return []
    return [t for t in trained(study) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_a_registered_dimension_reaches_the_space_the_help_and_the_records(tmp_path, ray_cluster):
    env = {**os.environ, "PEFT_SEARCH_PLUGINS": "extension_layers",
           "PYTHONPATH": str(Path(__file__).parent), "COLUMNS": "200"}
    shown = subprocess.run([*CLI, "run", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert "layers" in shown.stdout and "which layers receive the modification" in shown.stdout
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps(synthetic(tmp_path, ray_cluster, name="layers", plugins=["extension_layers"],
                                              trials=3, points_to_evaluate=[], synthetic_delay=0)))
    out = subprocess.run([*CLI, "run", str(spec_file), "--verbose", "0"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = optuna.load_study(study_name="layers", storage=f"sqlite:///{tmp_path}/optuna.db")
    sampled = {name for t in study.trials for name in t.params}
    assert {"attn.layers", "ffn.layers"} & sampled
    records = child_runs(parse({**synthetic(tmp_path, ray_cluster), "name": "layers"}))
    assert any(r.data.params.get("attn.layers") or r.data.params.get("ffn.layers") for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "trials: 0 is not allowed; allowed: an integer in [1, 1,000,000]"),
    (["--sampler", "cmaes"], "sampler: 'cmaes' is not allowed; allowed: one of tpe, nsga2, random, gp"),
    (["--set", "asha.max_steps=zero"], "asha.max_steps: 'zero' is not allowed"),
    (["--set", "values.form=[tanh]"], "values.form: 'tanh' is not allowed"),
    (["--set", "nonsense"], "--set: 'nonsense' is not allowed; allowed: KEY=VALUE"),
    (["--trainer", "synthetic", "--address", "127.0.0.1:9", "--root", "{tmp}"],
     "ray_address: '127.0.0.1:9' is not allowed; allowed: the host:port of a running Ray head"),
])
def test_bad_run_flags_are_one_line_each_and_exit_2(args, message, tmp_path):
    args = [a.format(tmp=tmp_path) for a in args]
    out = subprocess.run([*CLI, "run", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_resume_or_pareto_of_an_unknown_search_names_the_known_ones(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "first.yaml").write_text("name: first\n")
    for command in ("resume", "pareto"):
        out = subprocess.run([*CLI, command, "nope", "--root", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and f"NAME: 'nope' is not allowed; allowed: a search started under {tmp_path}: first" in out.stderr
