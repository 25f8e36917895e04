"""The tabular benchmark: honest splits, the table's true front, the evaluation ladder, and replaying a table
through the real search (``peft-search run`` with the tabular trainer on the two-node Ray cluster)."""

import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

import trainers
from search import tabular
from search.assemble import grid_cases
from search.schema import configuration_id
from search.space import Space, grid, menu_label, params_of, suggest
from search.spec import SpecError, load, parse
from trainers.data import load_splits
from trainers.loop import eval_steps
from trainers.metrics import accuracy, bleu

CLI = [str(Path(sys.executable).parent / "peft-search")]
TABLE = Path(__file__).parents[1] / "benchmarks" / "tabular" / "sst2_minilm"
MENUS = {"attn": {"lora_attn": {"bottleneck": [2, 4, 8]}, "prefix": {"bottleneck": [2, 4]}},
         "ffn": {"pa_ffn": {"bottleneck": [4, 8, 16, 32]}}}


@pytest.mark.parametrize("name", ["sst2", "mnli"])
def test_selection_and_reporting_never_share_data(name):
    task = trainers.TASKS[name]
    splits = load_splits(task)
    text = lambda split: {tuple(row[f] for f in task.inputs) for row in splits.data[split]}  # noqa: E731
    validation, test = text("validation"), text("test")
    assert len(splits.data["validation"]) == task.carved_validation
    assert not validation & test  # the search selects on validation and reports on test
    assert len(splits.data["test"]) == {"sst2": 872, "mnli": 1000}[name]  # the public dev set
    assert len(splits.data["train"]) + task.carved_validation == {"sst2": 67349, "mnli": 8999}[name]
    assert "carved from train" in splits.described["validation"] and "dev set" in splits.described["test"]
    assert load_splits(task).data["validation"]["idx" if name == "mnli" else "sentence"] == \
        splits.data["validation"]["idx" if name == "mnli" else "sentence"]  # a fixed slice


def test_metrics_carry_their_standard_error():
    hits = accuracy([1, 1, 0, 1], [1, 0, 0, 1])
    assert hits["accuracy"] == 0.75 and hits["accuracy_se"] == pytest.approx(0.5 / math.sqrt(4))  # sd / √n
    scores = bleu(["the cat sat on the mat", "a dog", "hello there world"], ["the cat sat on a mat", "a dog", "hi there"])
    assert scores["bleu_se"] > 0


def test_evaluation_ladder():
    assert eval_steps(135, 15, 3) == {15, 45, 135}
    assert eval_steps(10, 4) == {4, 8, 10}


def hand_made():
    """Five designs, two seeds: a (0.1%, 0.80), b (0.5%, 0.85), c (1%, 0.84: dominated by b), d (2%, 0.90),
    e (3%, 0.89: dominated by d), and full fine-tuning (100%, 0.95) as a reference row."""
    rows = []
    for design, budget, test in (("a", 0.1, 0.80), ("b", 0.5, 0.85), ("c", 1.0, 0.84), ("d", 2.0, 0.90),
                                 ("e", 3.0, 0.89), ("full", 100.0, 0.95)):
        for seed, noise in ((0, -0.01), (1, 0.01)):
            for step in (15, 45):
                last = step == 45
                rows.append({"design_id": design, "name": design, "seed": seed, "step": step, "budget_pct": budget,
                             "valid_metric": test + noise, "valid_metric_se": 0.01, "valid_loss": 1 - test,
                             "test_metric": test + noise if last else None, "test_metric_se": 0.01 if last else None,
                             "seconds": step, "reference": design == "full"})
    return pd.DataFrame(rows)


def test_true_front_of_a_hand_made_table():
    table = hand_made()
    front = tabular.true_front(table)
    assert list(front["design_id"]) == ["a", "b", "d"]  # c and e dominated, full fine-tuning is a reference
    assert list(front["test_metric"]) == pytest.approx([0.80, 0.85, 0.90])  # seed means at the last step
    # strips from each front budget to the next, above 0.5 accuracy, up to a 4% reference budget
    expected = (0.5 - 0.1) * 0.30 + (2.0 - 0.5) * 0.35 + (4.0 - 2.0) * 0.40
    assert tabular.scored_hypervolume(table, ["a", "b", "c", "d", "e"], (0.5, 4.0)) == pytest.approx(expected)
    assert tabular.scored_hypervolume(table, ["c", "e"], (0.5, 4.0)) < expected
    assert tabular.curve(table, "b", 3)["seed"].unique().tolist() == [1]  # replay seeds cycle over the table's


def test_menus_make_a_finite_space_every_design_reachable():
    space = Space(("attn", "ffn"), menus=MENUS)
    designs = grid(space)
    assert len(designs) == 6 * 5 and len({d.id for d in designs}) == 30
    from optuna.trial import FixedTrial

    assert all(suggest(FixedTrial(params_of(d, space)), space) == d for d in designs)
    assert {menu_label(d, space) for d in designs} >= {"head only", "lora_attn:8 + pa_ffn:32", "prefix:2"}


def test_grid_and_scheduler_choices_are_validated():
    with pytest.raises(SpecError) as err:
        parse({"sampler": "grid", "scheduler": "hyperband", "menus": {"attn": {"pa_ffn": {}}}, "trainer": "tabular"})
    lines = str(err.value).splitlines()
    assert any(line.startswith("scheduler: 'hyperband'") and "asha, pareto_asha, none" in line for line in lines)
    assert any(line.startswith("menus.attn: 'pa_ffn'") and "lora_attn" in line for line in lines)
    assert any(line.startswith("sampler: 'grid'") and "none for" in line for line in lines)
    assert any(line.startswith("table: None") for line in lines)


@pytest.fixture
def small_table(tmp_path):
    """A table for the 30 designs of ``MENUS``: budgets as the searcher computes them, made-up curves."""
    space = Space(("attn", "ffn"), menus=MENUS)
    rows = []
    for i, design in enumerate(grid(space)):
        budget = trainers.budget_pct("minilm", "classification", 2, design)
        for seed in (0, 1):
            for step in (2, 4, 8):
                metric = 0.5 + 0.04 * math.log1p(budget * 10) + 0.01 * seed + 0.001 * i + step / 400
                rows.append({"design_id": design.id, "name": menu_label(design, space), "seed": seed, "step": step,
                             "budget_pct": budget, "valid_metric": metric, "valid_metric_se": 0.01,
                             "valid_loss": 1 - metric, "test_metric": metric - 0.01 if step == 8 else None,
                             "test_metric_se": 0.01 if step == 8 else None, "seconds": step * 0.1, "reference": False})
    path = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_the_shipped_table_holds_every_design_its_space_can_propose():
    spec, table = load(TABLE.with_suffix(".yaml")), tabular.load(TABLE.with_suffix(".csv"))
    designs = {design.id for design in grid(spec.space())}
    searchable = table[~table["reference"].astype(bool)]
    assert set(searchable["design_id"]) == designs and len(designs) >= 64
    steps = searchable.groupby(["design_id", "seed"])["step"].apply(frozenset)
    assert set(steps) == {frozenset({9, 27, 81})} and (searchable.groupby("design_id")["seed"].nunique() >= 2).all()
    assert searchable.loc[searchable["step"] == 81, "test_metric"].notna().all()
    sizes = [len(varied["bottleneck"]) for menu in spec.menus.values() for varied in menu.values() if "bottleneck" in varied]
    assert min(sizes) >= 2  # every method with a bottleneck at two sizes or more
    budgets = searchable.loc[searchable["budget_pct"] > 0, "budget_pct"]
    assert budgets.min() <= 0.05 and budgets.max() >= 4.5  # ~0.05% to ~5% of MiniLM
    assert set(table.loc[table["reference"].astype(bool), "design_id"]) == {"full"}


def test_replay_through_the_cli_records_the_tables_numbers(tmp_path, small_table, ray_cluster):
    spec = {"name": "replay", "trainer": "tabular", "table": str(small_table), "sites": ["attn", "ffn"],
            "menus": MENUS, "sampler": "tpe", "scheduler": "none", "trials": 12, "concurrency": 2, "seed": 3,
            "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 8}, "root": str(tmp_path),
            "storage": f"sqlite:///{tmp_path}/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([*CLI, "run", str(tmp_path / "spec.yaml"), "--address", ray_cluster, "--verbose", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = tabular.load(small_table)
    client = MlflowClient(spec["tracking_uri"])
    experiment = client.get_experiment_by_name("replay").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.ray_trial_id != ''", max_results=100)
    assert len(runs) == 12 and all(r.data.tags["status"] == "completed" for r in runs)
    for run in runs:
        curve = tabular.curve(table, run.data.tags["design_id"], int(run.data.params["seed"]))
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "accuracy")}
        assert history == dict(zip(curve["step"], curve["valid_metric"]))  # exactly the table's rows, seed 3 → 1
        assert run.data.metrics["test_accuracy"] == pytest.approx(curve["test_metric"].iloc[-1])
        assert float(run.data.params["budget"]) == pytest.approx(curve["budget_pct"].iloc[0])
    assert "Pareto front" in done.stdout


def test_a_killed_table_generation_resumes_every_design_and_seed_once(tmp_path, ray_cluster):
    """The table's grid (every design × seeds, no early stopping) survives its driver being killed."""
    spec = {"name": "grid", "trainer": "synthetic", "synthetic_delay": 0.3, "sites": ["attn", "ffn"],
            "menus": {"attn": {"lora_attn": {"bottleneck": [4, 16]}}, "ffn": {"pa_ffn": {"bottleneck": [16]}}},
            "sampler": "grid", "seeds": 2, "scheduler": "none", "concurrency": 2, "ray_address": ray_cluster,
            "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 4}, "train": {"eval_every": 2},
            "root": str(tmp_path), "storage": f"sqlite:///{tmp_path}/optuna.db",
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    driver = subprocess.Popen([*CLI, "run", str(tmp_path / "spec.yaml"), "--verbose", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(_completed(spec)) < 3:
        assert time.time() < deadline and driver.poll() is None
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    resumed = subprocess.run([*CLI, "resume", "grid", "--root", str(tmp_path), "--verbose", "0"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    cases = [(tuple(sorted(t.params.items())), t.user_attrs["seed"]) for t in _completed(spec)]
    assert len(cases) == 3 * 2 * 2 and len(set(cases)) == len(cases)  # 6 designs × 2 seeds, each once


def test_a_grown_grid_trains_only_what_the_table_lacks(tmp_path, ray_cluster):
    """``peft-search tabulate``, then a value added to a menu: the next build trains the new designs' cases and
    nothing twice; each table holds its own spec's designs."""
    spec = {"name": "grow", "trainer": "synthetic", "sites": ["attn", "ffn"], "sampler": "grid", "seeds": 2,
            "menus": {"attn": {"lora_attn": {"bottleneck": [4]}}, "ffn": {"pa_ffn": {"bottleneck": [16]}}},
            "scheduler": "none", "concurrency": 1, "ray_address": ray_cluster, "train": {"eval_every": 2},
            "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 4}, "root": str(tmp_path),
            "storage": f"sqlite:///{tmp_path}/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    grown = {**spec, "menus": {**spec["menus"], "attn": {"lora_attn": {"bottleneck": [4, 16]}}}}
    for name, data in (("small", spec), ("grown", grown)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))

    def tabulate(name: str, *flags: str) -> str:
        out = subprocess.run([*CLI, "tabulate", str(tmp_path / f"{name}.yaml"), "--full-lr", "1e-4", "--verbose", "0",
                              *flags], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    assert f"{tmp_path / 'small.csv'}: " in tabulate("small")
    before = _runs(parse(spec))
    tabulate("grown")
    after = _runs(parse(grown))
    cases = [case for case, _ in after]
    assert len(cases) == len(set(cases)) == 3 * 2 * 2 + 2  # 6 designs × 2 seeds and full fine-tuning's 2, each once
    assert set(before) <= set(after)  # what was trained stays, run for run
    expected = {(design.id, seed) for design in grid(parse(grown).space()) for seed in (0, 1)} | {("full", 0), ("full", 1)}
    assert set(cases) == expected
    tabulate("small", "--export-only")
    small = {design.id for design in grid(parse(spec).space())} | {"full"}
    assert set(tabular.load(tmp_path / "small.csv")["design_id"]) == small  # the grown designs stay out of it
    assert set(tabular.load(tmp_path / "grown.csv")["design_id"]) == {d for d, _ in expected}


def _runs(spec) -> list[tuple[tuple[str, int], str]]:
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.name).experiment_id
    runs = client.search_runs([experiment], filter_string="tags.status = 'completed'", max_results=1000)
    return [((r.data.tags["design_id"], int(r.data.params["seed"])), r.info.run_id) for r in runs
            if "ray_trial_id" in r.data.tags]


def _completed(spec: dict) -> list:
    try:
        study = optuna.load_study(study_name=spec["name"], storage=spec["storage"])
    except KeyError:
        return []
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


LRS = (1e-3, 3e-3)


@pytest.fixture
def joint_table(tmp_path):
    """A table over (design, lr) for four designs of ``MENUS``: each design's best rate differs."""
    space = Space(("attn", "ffn"), menus=MENUS)
    rows = []
    for i, design in enumerate(grid(space)[:4]):
        budget = trainers.budget_pct("minilm", "classification", 2, design)
        for lr, seed, step in itertools.product(LRS, (0, 1), (2, 4, 8)):
            metric = 0.6 + 0.02 * i + (0.1 if (i % 2 == 0) == (lr == LRS[0]) else 0.0) + 0.01 * seed + step / 400
            rows.append({"design_id": design.id, "config_id": configuration_id(design.id, {"lr": lr}), "lr": lr,
                         "name": menu_label(design, space), "seed": seed, "step": step, "budget_pct": budget,
                         "valid_metric": metric, "valid_metric_se": 0.01, "valid_loss": 1 - metric,
                         "test_metric": metric - 0.01 if step == 8 else None,
                         "test_metric_se": 0.01 if step == 8 else None, "seconds": step * 0.1, "reference": False})
    path = tmp_path / "joint.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, [menu_label(d, space) for d in grid(space)[:4]]


def test_a_joint_table_keys_configurations_and_its_front_is_over_design_and_lr(joint_table):
    table = tabular.load(joint_table[0])
    assert tabular.hyperparameter_columns(table) == ["lr"]
    final = tabular.final(table)
    assert len(final) == 4 * 2 and set(final["lr"]) == set(LRS) and (final["seeds"] == 2).all()
    front = tabular.true_front(table)
    assert front["config_id"].is_unique and set(front["config_id"]) <= set(final["config_id"])
    assert tabular.lookup(table, table["design_id"].iloc[0], {"lr": 0.003, "dropout": 0.1}).endswith("@lr=0.003")


def test_a_replayed_joint_search_records_the_tables_numbers_and_confirms_the_configuration(tmp_path, joint_table,
                                                                                          ray_cluster):
    path, names = joint_table
    spec = {"name": "joint", "trainer": "tabular", "table": str(path), "sites": ["attn", "ffn"], "menus": MENUS,
            "sampler": "grid", "designs": names, "seeds": 2, "search_train": {"lr": {"values": list(LRS)}},
            "scheduler": "none", "concurrency": 2, "seed": 3, "confirm_seeds": 1,
            "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 8}, "root": str(tmp_path),
            "storage": f"sqlite:///{tmp_path}/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([*CLI, "run", str(tmp_path / "spec.yaml"), "--address", ray_cluster, "--verbose", "0"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = tabular.load(path)
    client = MlflowClient(spec["tracking_uri"])
    experiment = client.get_experiment_by_name("joint").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.ray_trial_id != ''", max_results=100)
    trials = [r for r in runs if r.data.tags["confirmation"] == "false"]
    assert len(trials) == 16 and {(r.data.tags["design_id"], float(r.data.params["lr"]), r.data.params["seed"])
                                  for r in trials} == set(itertools.product(table["design_id"], LRS, ("3", "4")))
    for run in runs:
        assert "train.lr" not in run.data.params
        config = configuration_id(run.data.tags["design_id"], {"lr": float(run.data.params["lr"])})
        curve = tabular.curve(table, config, int(run.data.params["seed"]))
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "accuracy")}
        assert history == dict(zip(curve["step"], curve["valid_metric"]))
    by_id = {r.info.run_id: r for r in runs}
    confirmations = [r for r in runs if r.data.tags["confirmation"] == "true"]
    assert confirmations and all(by_id[c.data.tags["peft_search.confirms"]].data.params["lr"] == c.data.params["lr"]
                                 for c in confirmations)
    study = optuna.load_study(study_name="joint", storage=spec["storage"])
    assert all(t.params["train.lr"] == t.user_attrs["train"]["lr"] for t in study.trials)
    assert "hyper-parameters" in done.stdout and "lr=0.001" in done.stdout
    assert "exact decomposition" in done.stdout  # a complete grid: design, lr, their interaction, seeds


def test_a_fixed_learning_rate_replays_its_own_rows_of_a_joint_table(tmp_path, joint_table, ray_cluster):
    path, names = joint_table
    spec = {"name": "fixed", "trainer": "tabular", "table": str(path), "sites": ["attn", "ffn"], "menus": MENUS,
            "sampler": "grid", "designs": names[:2], "seeds": 1, "train": {"lr": LRS[1]}, "scheduler": "none",
            "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 8}, "root": str(tmp_path),
            "ray_address": ray_cluster, "storage": f"sqlite:///{tmp_path}/optuna.db",
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    from search import runner

    runner.run(parse(spec), verbose=0)
    table = tabular.load(path)
    client = MlflowClient(spec["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("fixed").experiment_id], "tags.ray_trial_id != ''")
    assert len(runs) == 2
    for run in runs:
        curve = tabular.curve(table, configuration_id(run.data.tags["design_id"], {"lr": LRS[1]}), 0)
        assert run.data.metrics["accuracy"] == pytest.approx(curve["valid_metric"].iloc[-1])


def test_a_joint_grid_holds_every_case_at_every_rung_and_resumes_from_the_csv_alone(tmp_path, ray_cluster):
    """``peft-search tabulate`` over designs × learning rates; then, as on a fresh clone (no stores, the CSV with
    some cases missing), a rerun trains exactly the missing cases."""
    spec = {"name": "joint-grid", "trainer": "synthetic", "sites": ["attn", "ffn"], "sampler": "grid", "seeds": 2,
            "menus": {"attn": {"lora_attn": {"bottleneck": [4]}}, "ffn": {"pa_ffn": {"bottleneck": [16]}}},
            "designs": ["head only", "lora_attn:4 + pa_ffn:16", "pa_ffn:16"],
            "search_train": {"lr": {"values": list(LRS)}}, "scheduler": "none", "concurrency": 2,
            "ray_address": ray_cluster, "train": {"eval_every": 2},
            "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 4}, "root": str(tmp_path / "stores"),
            "storage": f"sqlite:///{tmp_path}/stores/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/stores/mlflow.db"}
    (tmp_path / "stores").mkdir()
    (tmp_path / "joint.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "joint.csv"

    def tabulate() -> None:
        done = subprocess.run([*CLI, "tabulate", str(tmp_path / "joint.yaml"), "--full-lr", "1e-4", "--full-lr", "2e-4",
                               "--verbose", "0"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    tabulate()
    table = tabular.load(out)
    expected = {(configuration_id(d, {"lr": lr}), s) for d in {r for r in table["design_id"] if r != "full"}
                for lr in LRS for s in (0, 1)} | {(f"full@lr={lr:g}", s) for lr in (1e-4, 2e-4) for s in (0, 1)}
    assert len(expected) == 3 * 2 * 2 + 4
    rungs = table.groupby(["config_id", "seed"])["step"].apply(frozenset)
    assert set(rungs.index) == expected and set(rungs) == {frozenset({2, 4})}
    dropped = sorted(expected)[::3]
    shutil.rmtree(tmp_path / "stores")  # a fresh clone: the committed CSV only
    (tmp_path / "stores").mkdir()
    keep = [(c, s) not in dropped for c, s in zip(table["config_id"], table["seed"])]
    table[keep].to_csv(out, index=False)
    tabulate()
    client = MlflowClient(spec["tracking_uri"])
    retrained = [(configuration_id(r.data.tags["design_id"], {"lr": float(r.data.params["lr"])}),
                  int(r.data.params["seed"])) for r in client.search_runs(
                     [client.get_experiment_by_name("joint-grid").experiment_id], "tags.ray_trial_id != ''")]
    assert sorted(retrained) == dropped  # only what the CSV lacked, once each
    again = tabular.read(out)
    assert set(again.groupby(["config_id", "seed"])["step"].apply(frozenset).index) == expected


JOINT = Path(__file__).parents[1] / "benchmarks" / "tabular" / "sst2_minilm_lr"


def test_the_joint_table_holds_every_configuration_at_every_rung_and_nearly_every_design_leaves_chance():
    from benchmarks import joint_table

    spec, table = load(JOINT.with_suffix(".yaml")), tabular.load(JOINT.with_suffix(".csv"))
    cases = {(configuration_id(d.id, train), seed) for d, train, seed in grid_cases(spec)}
    references = {(configuration_id("full", {"lr": lr}), s) for lr in (2e-5, 5e-5, 1e-4) for s in (0, 1)}
    rungs = table.groupby(["config_id", "seed"])["step"].apply(frozenset)
    assert set(rungs.index) == cases | references and set(rungs) == {frozenset({9, 27, 81})}
    assert len(cases) == 25 * 4 * 2 and table.loc[table["step"] == 81, "test_metric"].notna().all()
    assert table.loc[table["step"] == 81, "test_predicted_share"].between(0.5, 1.0).all()
    final, runs = tabular.final(table), joint_table.runs(table)
    best = joint_table.best_lr(final[~final["reference"].astype(bool)])
    chosen = runs[runs["config_id"].isin(best["config_id"])]
    assert len(chosen) == 50 and chosen["at_chance"].mean() <= 0.05  # issue 25: at most 5% at chance
