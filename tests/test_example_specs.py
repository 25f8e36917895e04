"""The example specs users copy (search/specs/): each parses, and its space builds offline.

The decoder-only example names a hub model (Qwen/Qwen2.5-0.5B). No weights can be had here, and none are needed to
build a search space: a design's budget is counted on the model's skeleton, made from its ``config.json``. The test
puts the shipped ``config.json`` where a user's machine keeps a downloaded model, a hub cache, and runs with the hub
off, as a cluster without internet would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "search" / "specs"
QWEN = "Qwen/Qwen2.5-0.5B"
QWEN_CONFIG = ROOT / "tests" / "data" / "hub" / "Qwen2.5-0.5B" / "config.json"

# Loads each spec, builds its space, counts the budget of each of its paper methods and of designs the sampler draws,
# and prints what it found as JSON, a line per spec: in a subprocess, because the hub's cache folder is read at import
# time (one for both specs: the imports are most of its time).
PROBE = """
import json, sys
import optuna
from search import space as S
from search.assemble import budget_function
from search.spec import load
import peft_space

for path in sys.argv[1:]:
    spec = load(path)
    space, budget = spec.space(), budget_function(spec)
    points = {name: budget(peft_space.preset(name, **dict(spec.preset_overrides.get(name, {}))))
              for name in spec.points_to_evaluate}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn, refused = [], []
    while len(drawn) < 5:  # as the searcher does, a design the model cannot take is refused and another drawn
        trial = study.ask()
        S.suggest_train(trial, space)
        try:
            drawn.append(budget(S.suggest(trial, space)))
        except peft_space.DesignError as err:
            refused.append(str(err))
        study.tell(trial, 0.0)
    lrs = [t.params["train.lr"] for t in study.trials]
    task = spec.task_def
    print(json.dumps({"spec": path, "task": task.name, "kind": task.kind, "metric": task.validation_metric,
                      "points": points, "drawn": drawn, "refused": refused, "lrs": lrs, "cap": spec.budget_cap,
                      "gpu": spec.resources["gpu"], "train": dict(spec.train)}))
"""


def hub_cache(root: Path) -> Path:
    """A hub cache holding only Qwen2.5-0.5B's config.json, laid out as huggingface_hub downloads it."""
    repo = root / ("models--" + QWEN.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(QWEN_CONFIG, snapshot / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return root


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """What the probe found for each example spec, by file name, with the hub off and Qwen's config in its cache."""
    cache = hub_cache(tmp_path_factory.mktemp("hub"))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    specs = [str(SPECS / name) for name in ("qwen-xsum.yaml", "reviews-csv.yaml")]
    out = subprocess.run([sys.executable, "-c", PROBE, *specs], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"spec"')]
    return {Path(line["spec"]).name: line for line in lines}


def test_the_decoder_only_example_builds_its_space_offline(found):
    qwen = found["qwen-xsum.yaml"]
    assert (qwen["task"], qwen["kind"], qwen["metric"]) == ("xsum-prompted", "generation", "rouge2")
    assert qwen["gpu"] == 0.25 and qwen["train"]["base_dtype"] == "bf16"
    # budgets in % of the 494M-parameter language model: LoRA r=16 on q and v of 24 layers is 0.22%
    assert qwen["points"]["lora_attn"] == pytest.approx(100 * 24 * 16 * (896 + 896 + 896 + 128) / 494_032_768,
                                                        rel=1e-3)
    assert all(0 < pct <= qwen["cap"] for pct in qwen["points"].values())
    assert all(pct > 0 for pct in qwen["drawn"]) and all(1e-5 <= lr <= 3e-3 for lr in qwen["lrs"])
    assert all("qwen2 has no bias" in why for why in qwen["refused"])  # BitFit where Qwen2 has no biases (FFN)


def test_the_local_csv_example_builds_its_space_and_its_task_reads_the_file(found):
    csv = found["reviews-csv.yaml"]
    assert (csv["task"], csv["kind"], csv["metric"]) == ("reviews", "classification", "macro_f1")
    assert all(0 < pct <= csv["cap"] for pct in csv["points"].values())
    assert len(set(csv["lrs"])) >= 5 and all(1e-4 <= lr <= 1e-2 for lr in csv["lrs"])


def test_every_shipped_spec_is_tested_here():
    tested = {"default.yaml", "qwen-xsum.yaml", "reviews-csv.yaml"}  # default.yaml: tests/test_search_spec.py
    assert {path.name for path in SPECS.glob("*.yaml")} == tested


def test_the_shipped_config_is_the_models():
    config = json.loads(QWEN_CONFIG.read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"],
            config["vocab_size"], config["tie_word_embeddings"]) == ("qwen2", 896, 24, 2, 151936, True)
