"""Tasks declared as data (issue 26, item 3): a spec's ``task:`` mapping or ``peft-search train --task FILE.yaml``,
from CSV, JSON lines or Parquet files; carved splits; every bad declaration named; the record round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

import trainers
from peft_space import FieldError
from search import spec as specs
from search.assemble import constants, params
from search.reproduce import recorded_inputs
from search.schema import Params
from search.trial_config import read
from trainers.data import load_splits
from trainers.metrics import exact_match, macro_f1

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["good", "great", "fine", "bad", "awful", "poor"]


@pytest.fixture(autouse=True)
def own_tasks():
    """The tasks a test declares are gone after it: other tests read the registry (``validation_metrics``)."""
    with trainers.TASKS.scratch():
        yield
    trainers.declared._register.cache_clear()  # its cache would hand back a task no longer registered


def reviews(n: int = 60, ids: bool = False) -> pd.DataFrame:
    """Sentences whose label is in their words: label names (or, ``ids``, their ids) in the label column, a numeric
    input column among them."""
    labels = [int(i % 6 < 3) for i in range(n)]
    return pd.DataFrame({"id": range(n), "text": [f"a {WORDS[i % 6]} film number {i}" for i in range(n)],
                         "stars": list(range(n)), "label": labels if ids else [["neg", "pos"][i] for i in labels]})


def write(frame: pd.DataFrame, path: Path) -> Path:
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[path.suffix]()
    return path


def classification(folder: Path, suffix: str = ".csv", **more) -> dict:
    write(reviews(), folder / f"train{suffix}")
    return {"kind": "classification", "files": {"train": str(folder / f"train{suffix}")}, "inputs": ["text"],
            "label": "label", "labels": ["neg", "pos"], **more}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_declared_task_reads_its_file_labels_by_name_and_carves_missing_splits(tmp_path, suffix):
    declaration = classification(tmp_path, suffix, inputs=["text", "stars"], validation_size=12, test_size=0.1)
    if suffix == ".parquet":  # a label column of ids works as one of names
        write(reviews(ids=True), tmp_path / "train.parquet")
    task = trainers.register_declared(trainers.parse_declaration(declaration).to_dict())
    assert (task.kind, task.num_labels, task.validation_metric, task.higher_is_better) == ("classification", 2,
                                                                                           "accuracy", True)
    splits = load_splits(task)
    assert {k: len(v) for k, v in splits.data.items()} == {"train": 42, "validation": 12, "test": 6}
    rows = [row for split in splits.data.values() for row in split]
    assert all(row["label"] == (1 if row["text"].split()[1] in WORDS[:3] else 0) for row in rows)  # names -> ids
    assert all(row["stars"] == str(row["id"]) for row in rows)  # a numeric input column reads as text
    assert splits.source == str(tmp_path) and splits.described["test"] == "6 examples carved from train (seed 0)"


def test_carved_splits_are_disjoint_seeded_and_cover_train(tmp_path):
    only_train = classification(tmp_path, ".jsonl", name="carve-both", validation_size=0.2, test_size=30)
    write(reviews(200), tmp_path / "train.jsonl")
    write(reviews(30), tmp_path / "validation.jsonl")
    ids = {}
    for _ in range(2):
        splits = load_splits(trainers.register_declared(trainers.parse_declaration(only_train).to_dict()))
        ids.setdefault("first", {k: list(v["id"]) for k, v in splits.data.items()})
        ids["again"] = {k: list(v["id"]) for k, v in splits.data.items()}
    first = ids["first"]
    assert first == ids["again"]  # seeded: the same slices every time
    assert (len(first["validation"]), len(first["test"])) == (40, 30)
    assert not set(first["validation"]) & set(first["test"]) and not set(first["train"]) & set(first["test"])
    assert sorted(first["train"] + first["validation"] + first["test"]) == list(range(200))
    # with a validation file, only test is carved from train; the given validation selects
    given = {**only_train, "name": "carve-test", "files": {**only_train["files"],
                                                           "validation": str(tmp_path / "validation.jsonl")}}
    splits = load_splits(trainers.register_declared(trainers.parse_declaration(given).to_dict()))
    assert {k: len(v) for k, v in splits.data.items()} == {"train": 170, "validation": 30, "test": 30}
    assert splits.described["validation"] == "validation"


def test_a_spec_declares_its_task_with_paths_from_its_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    declaration = classification(data, metric="macro_f1")
    declaration["files"] = {"train": "data/train.csv"}  # relative: from the spec's folder, not the working one
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({"name": "mine", "task": declaration}))
    spec = specs.load(tmp_path / "search.yaml")
    assert spec.task["files"] == {"train": str(data / "train.csv")} and spec.task["name"].startswith("declared-")
    assert (spec.task_def.validation_metric, spec.mode) == ("macro_f1", "max")
    assert specs.parse(spec.to_dict()) == spec
    # a worker gets the declaration in the trial's constants and registers it
    config = {**constants(spec), "design": None, "budget": 0.0}
    assert read(config).task == spec.task_def.name
    # `peft-search fields` lists the declaration's fields
    assert "task.labels: []  # classification: the label names" in specs.describe()


def test_a_generation_declaration_for_a_decoder_only_model_builds_its_task(tmp_path):
    write(pd.DataFrame({"question": ["2+2?", "3+3?", "1+1?"] * 10, "answer": [4, 6, 2] * 10}),
          tmp_path / "qa.jsonl")
    declared = trainers.parse_declaration({
        "kind": "generation", "files": {"train": str(tmp_path / "qa.jsonl")}, "inputs": ["question"],
        "target": "answer", "prompt": "Question: {question}\nAnswer:", "chat_template": True, "metric": "exact_match"})
    task = trainers.register_declared(declared.to_dict())
    assert (task.kind, task.target, task.prompt, task.chat_template) == ("generation", "answer",
                                                                         "Question: {question}\nAnswer:", True)
    assert task.validation_generates and task.higher_is_better and task.num_labels == 0
    assert load_splits(task).data["train"][0]["answer"] in ("4", "6", "2")  # a numeric target reads as text
    perplexity = trainers.parse_declaration({**declared.to_dict(), "name": "", "metric": "perplexity"})
    assert not trainers.task_of(perplexity.to_dict()).higher_is_better


def test_a_hub_declaration_loads_through_datasets_and_its_columns_are_checked_when_it_loads(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # a local folder stands in for the hub
    write(reviews(), tmp_path / "train.csv")
    write(reviews(10), tmp_path / "test.csv")
    hub = {"kind": "classification", "hub": str(tmp_path), "hub_splits": {"train": "train", "test": "test"},
           "inputs": ["text"], "label": "label", "labels": ["neg", "pos"], "validation_size": 6}
    splits = load_splits(trainers.register_declared(trainers.parse_declaration(hub).to_dict()))
    assert {k: len(v) for k, v in splits.data.items()} == {"train": 54, "validation": 6, "test": 10}
    assert splits.source.startswith("hub:") and set(splits.data["test"]["label"]) == {0, 1}
    wrong = trainers.register_declared(trainers.parse_declaration({**hub, "inputs": ["review"]}).to_dict())
    with pytest.raises(FieldError, match=r"task.inputs: 'review' is not allowed; allowed: a column of the (train|test) "
                                         r"data: id, text, stars, label"):
        load_splits(wrong)


BAD = [  # (change to a good declaration, a line of the message)
    ({"colour": "blue"}, "task.colour: 'colour' is not allowed; allowed: declaration fields kind, name, files"),
    ({"inputs": ["txt"]}, "task.inputs: 'txt' is not allowed; allowed: a column of {train}: id, text, stars, label"),
    ({"label": "rating"}, "task.label: 'rating' is not allowed; allowed: a column of {train}: id, text, stars, label"),
    ({"labels": ["neg", "positive"]}, "task.labels: ['pos'] is not allowed; allowed: labels of {train}'s column "
                                      "'label' among the label names neg, positive (or their ids 0 to 1)"),
    ({"metric": "bleu"}, "task.metric: 'bleu' is not allowed; allowed: a metric of a classification task: accuracy, "
                         "macro_f1"),
    ({"metric": "f1"}, "task.metric: 'f1' is not allowed; allowed: one of accuracy, macro_f1, exact_match"),
    ({"files": {"train": "{folder}/absent.csv"}}, "task.files.train: '{folder}/absent.csv' is not allowed; allowed: an "
                                         "existing file"),
    ({"files": {"validation": "{train}"}}, "task.files: {'validation': '{train}'} is not allowed; allowed: a "
                                             "mapping with a train split"),
    ({"target": "text"}, "task.target: 'text' is not allowed; allowed: nothing for a classification task"),
    ({"name": "sst2"}, "task.name: 'sst2' is not allowed; allowed: a name no other task has (sst2, mnli"),
    ({"kind": "regression"}, "task.kind: 'regression' is not allowed; allowed: classification or generation"),
    ({"validation_size": 0}, "task.validation_size: 0 is not allowed; allowed: a number of examples (≥ 1)"),
]


def test_a_declaration_longer_than_mlflow_records_whole_is_refused(tmp_path):
    """Every run records the declaration as one MLflow param (6,000 characters at most); a cut one could not be read
    back by reproduce or export."""
    names = ["neg", "pos", *(f"unused label {i}" for i in range(400))]
    with pytest.raises(specs.SpecError, match=r"task: 'a declaration of [\d,]+ characters as JSON' is not allowed; allowed: "
                                         r"at most 6,000 \(MLflow's limit"):
        specs.parse({"task": classification(tmp_path, labels=names)})
    specs.parse({"task": classification(tmp_path, labels=names[:200])})  # 4,000-odd characters: kept

@pytest.mark.parametrize("change, message", BAD, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(BAD)])
def test_each_bad_declaration_is_named(tmp_path, change, message):
    def placed(text: str) -> str:
        return text.replace("{train}", str(tmp_path / "train.csv")).replace("{folder}", str(tmp_path))

    files = {split: placed(path) for split, path in change.get("files", {}).items()}
    declaration = {**classification(tmp_path), **change, **({"files": files} if files else {})}
    with pytest.raises(specs.SpecError) as raised:
        specs.parse({"task": declaration})
    expected = placed(message)
    assert any(line.startswith(expected) for line in str(raised.value).splitlines()), str(raised.value)


def test_peft_search_train_takes_a_declaration_and_refuses_a_bad_one_exit_2_nothing_written(tmp_path):
    good = classification(tmp_path)
    (tmp_path / "good.yaml").write_text(yaml.safe_dump({**good, "files": {"train": "train.csv"}}))
    bad = {**good, "inputs": ["txt"], "metric": "rouge2", "labels": ["neg", "positive"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    before = sorted(tmp_path.rglob("*"))
    out = subprocess.run([str(ROOT / ".venv/bin/peft-search"), "train", "--task", str(tmp_path / "bad.yaml"),
                          "--design", "lora_attn"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 3
    assert all(line.startswith("peft-search: error: task.") for line in lines)
    assert {line.split(": ")[2] for line in lines} == {"task.inputs", "task.metric", "task.labels"}
    assert sorted(tmp_path.rglob("*")) == before
    # the good one trains through trainers.train: a few steps on the shipped MiniLM
    task = trainers.task_of(trainers.load_declaration(tmp_path / "good.yaml"))
    result = trainers.train(task, trainers_design(), steps=3, train_examples=24, eval_examples=6, batch_size=8,
                            micro_batch=8, progress=False, threads=1)
    assert result.status == trainers.Status.COMPLETED and "accuracy" in result.test
    assert result.config["task"] == task.name and result.config["data"] == str(tmp_path)


def trainers_design():
    import peft_space

    return peft_space.preset("lora_attn", **{"attn.bottleneck": 4})


def test_a_record_keeps_the_declaration_and_a_new_process_trains_the_same_task_or_names_a_changed_file(tmp_path):
    declaration = trainers.parse_declaration(classification(tmp_path, ".parquet", metric="macro_f1")).to_dict()
    spec = specs.parse({"task": declaration})
    recorded = {k: str(v) for k, v in params(spec).items()}  # MLflow params are text
    assert json.loads(recorded[Params.DATA_SHA256])["train"] == trainers.data_hashes(declaration)["train"]
    recorded |= {"model": "m", Params.SEED: "0", "data": str(tmp_path)}
    script = textwrap.dedent(f"""
        import json, sys
        from types import SimpleNamespace
        from dataclasses import asdict
        from search.reproduce import recorded_inputs
        import trainers
        run = SimpleNamespace(data=SimpleNamespace(params=json.loads(sys.argv[1])), info=SimpleNamespace(run_id="r"))
        task = trainers.TASKS[recorded_inputs(run)["task"]]
        print(json.dumps({{k: v for k, v in asdict(task).items() if k != "metric"}}, default=list))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(recorded)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    here = {k: v for k, v in vars(spec.task_def).items() if k != "metric"}
    assert json.loads(out.stdout) == json.loads(json.dumps(here, default=list))
    # a data file changed since the run: named, not silently used
    write(reviews(61), tmp_path / "train.parquet")
    run = SimpleNamespace(data=SimpleNamespace(params=recorded), info=SimpleNamespace(run_id="r"))
    with pytest.raises(trainers.DeclarationError, match=r"task.files.train: '.*train.parquet' is not allowed; allowed: "
                                                        r"the file the run trained on \(sha256 [0-9a-f]{12}…; now"):
        recorded_inputs(run)


def test_a_resumed_search_refuses_a_declared_file_changed_since_it_started(tmp_path, monkeypatch):
    from search import runner

    spec = specs.parse({"task": classification(tmp_path), "name": "changing", "root": str(tmp_path),
                        "storage": f"sqlite:///{tmp_path}/optuna.db", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"})
    runner.set_target(spec)  # what the search's start records in its study

    def connect(address: str | None) -> None:
        raise RuntimeError("reached the cluster")

    monkeypatch.setattr(runner, "connect", connect)
    with pytest.raises(RuntimeError, match="reached the cluster"):  # the same file: the resume goes on
        runner.run(spec, resume=True)
    write(reviews(61), tmp_path / "train.csv")
    with pytest.raises(trainers.DeclarationError, match=r"task.files.train: .*the file the run trained on \(sha256"):
        runner.run(spec, resume=True)
    assert not spec.saved_path.exists()  # refused before anything is written

def test_macro_f1_and_exact_match():
    # classes 0 (P 2/3, R 1) and 1 (P 1, R 1/2): F1 0.8 and 2/3; a majority guess has accuracy 0.75 but F1 0.43
    assert macro_f1([0, 0, 0, 1], [0, 0, 1, 1])["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1([0, 0, 0, 0], [0, 0, 0, 1])["macro_f1"] == pytest.approx((6 / 7 + 0) / 2)
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1]) == {"macro_f1": 1.0, "macro_f1_se": 0.0}
    scored = exact_match([" Paris ", "the  red car", "Rome"], ["Paris", "the red car", "Roma"])
    assert scored["exact_match"] == pytest.approx(2 / 3) and scored["exact_match_se"] > 0
    with pytest.raises(FieldError):
        trainers.task_of("no-such-task")
