"""A search over a decoder-only language model, end to end (issue 26, item 6).

A user's own model and data, as a user would bring them: a tiny LLaMA-family checkpoint saved to a folder (random
weights, a byte-level BPE tokenizer with no pad token), a generation task declared in the spec over a local JSON-lines
file (validation and test carved from it), the learning rate searched with the design. The search runs through the
CLI on the shared Ray cluster (Ray Tune + Optuna + MLflow); its front, ``reproduce`` and ``export`` are then read
from fresh CLI processes, as a user would after the search."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

import trainers
from search.reproduce import recorded_inputs
from tests.decoder_fixtures import save_tiny_decoder

CLI = [str(Path(sys.executable).parent / "peft-search")]
NAME = "tiny-llama-copy"
pytestmark = pytest.mark.slow


def copy_task(path: Path, n: int = 240) -> None:
    """A learnable task: repeat a word. Targets follow from the prompt, so a design that learns lowers perplexity."""
    words = "cat dog fox sky house river film plot story sentence".split()
    draw = random.Random(0)
    with path.open("w") as out:
        for _ in range(n):
            word = draw.choice(words)
            out.write(json.dumps({"text": word, "answer": word}) + "\n")


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> dict:
    root = tmp_path_factory.mktemp("decoder-search")
    model = save_tiny_decoder(root / "tiny-llama", "llama")
    copy_task(root / "copy.jsonl")
    spec = {
        "name": NAME,
        "task": {"name": "copy-word", "kind": "generation", "files": {"train": "copy.jsonl"}, "inputs": ["text"],
                 "target": "answer", "prompt": "Repeat: {text}\nAnswer:", "metric": "perplexity",
                 "validation_size": 40, "test_size": 40},
        "model": str(model),
        "sites": ["attn", "ffn"],
        "ranges": {"bottleneck": [1, 16]},
        "points_to_evaluate": ["lora_attn", "prefix"],
        "preset_overrides": {"lora_attn": {"attn.bottleneck": 4}, "prefix": {"attn.bottleneck": 4}},
        "budget_cap": "50%",
        "sampler": "random",
        "asha": {"grace_period": 4, "reduction_factor": 2, "max_steps": 8},
        "trials": 3,
        "concurrency": 2,
        "search_train": {"lr": [1.0e-3, 3.0e-2]},
        "train": {"batch_size": 8, "micro_batch": 8, "eval_every": 4, "max_generate": 4, "threads": 1},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    tracking = f"sqlite:///{root}/mlflow.db"
    out = subprocess.run([*CLI, "run", str(root / "spec.yaml"), "--address", ray_cluster, "--verbose", "0",
                          "--root", str(root), "--storage", f"sqlite:///{root}/optuna.db", "--tracking-uri", tracking],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(NAME).experiment_id
    runs = client.search_runs([experiment], filter_string="tags.ray_trial_id != ''")
    return {"root": root, "tracking": tracking, "client": client, "runs": runs, "stdout": out.stdout}


def front_runs(search: dict) -> list:
    return [r for r in search["runs"] if r.data.tags["pareto"] == "true"]


def test_the_front_is_read_back_with_perplexity_and_the_sampled_learning_rate(search):
    shown = subprocess.run([*CLI, "pareto", NAME, "--root", str(search["root"]), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    summary = json.loads(shown.stdout)
    assert summary["metric"] == "perplexity" and summary["counts"]["completed"] >= 1
    assert summary["hypervolume"] > 0  # lower is better: the reference is the vocabulary's size
    front = [row for row in summary["rows"] if row["on_front"]]
    assert front and all(1e-3 <= row["train"]["lr"] <= 3e-2 for row in front)
    runs = search["runs"]
    assert len(runs) == 3 and {r.data.params["task"] for r in runs} == {"copy-word"}
    assert all(r.data.params["model"] == str(search["root"] / "tiny-llama") for r in runs)


def test_reproduce_in_a_fresh_process_gives_the_recorded_numbers(search):
    run = front_runs(search)[0]
    out = subprocess.run([*CLI, "reproduce", run.info.run_id, "--tracking-uri", search["tracking"]],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    copies = search["client"].search_runs([run.info.experiment_id],
                                          filter_string=f"tags.`peft_search.reproduces` = '{run.info.run_id}'")
    assert len(copies) == 1
    assert copies[0].data.metrics["perplexity"] == pytest.approx(run.data.metrics["perplexity"], rel=1e-6)


def test_export_writes_weights_that_score_the_recorded_perplexity(search, tmp_path):
    run = front_runs(search)[0]
    done = subprocess.run([*CLI, "export", run.info.run_id, str(tmp_path / "out"), "--tracking-uri",
                           search["tracking"]], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    inputs = recorded_inputs(run)
    task, model, data = inputs.pop("task"), inputs.pop("model"), inputs.pop("data_dir")
    inputs.pop("seed")
    scored = trainers.evaluate(task, tmp_path / "out", model=model, data_dir=data, **inputs)
    assert scored["perplexity"] == pytest.approx(run.data.metrics["perplexity"], rel=1e-5)
