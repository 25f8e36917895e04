"""trainers: real data from shared/data, the shipped MiniLM, the real metric libraries."""

import json
import subprocess
import sys

import pytest
import torch

import peft_space
import trainers
from peft_space import FieldError
from trainers import loop
from trainers.models import prepare
from models import SHARED_DATA
from trainers.metrics import accuracy, bleu, normalise, rouge

SMALL = dict(micro_batch=8, batch_size=8, train_examples=160, eval_examples=48, max_source_length=64, progress=False)

pytestmark = pytest.mark.slow  # real training on the shipped MiniLM and data


def lora(r: int = 4) -> peft_space.Design:
    return peft_space.preset("lora_attn", bottleneck=r, scale=2.0)


def test_same_seed_same_metrics_other_seed_other_metrics():
    kwargs = dict(SMALL, steps=8, eval_every=4, lr=1e-3)
    a = trainers.train("sst2", lora(), seed=3, **kwargs)
    b = trainers.train("sst2", lora(), seed=3, **kwargs)
    c = trainers.train("sst2", lora(), seed=4, **kwargs)
    assert a.status == b.status == c.status == "completed" and a.step == 8
    assert a.history == b.history and a.test == b.test
    assert a.history != c.history
    assert [step for step, _ in a.history] == [4, 8]


def test_result_records_the_resolved_configuration_and_budget():
    result = trainers.train("sst2", lora(), steps=2, seed=0, **SMALL)
    config = result.config
    assert config["task"] == "sst2" and config["design_id"] == lora().id and config["seed"] == 0
    assert config["lr"] == 1e-4 and config["warmup_ratio"] == 0.06 and config["weight_decay"] == 0.1  # Table 8
    assert config["threads"] == torch.get_num_threads() and config["version.torch"] == torch.__version__
    assert config["data"].endswith("shared/data") and config["split.test"].startswith("the public dev set")
    assert config["split.validation"] == "2000 examples carved from train (seed 0)"
    assert peft_space.Design.from_dict(config["design"]) == lora()
    assert result.budget["analytic"] == result.budget["actual"] == 4 * 4 * 384 * 6  # LoRA q, v: 4rd per layer
    assert result.budget["head"] > 0 and 0 < result.budget["pct_actual"] < 1
    assert result.examples_per_second > 0 and result.train_seconds > 0


def test_callback_can_stop_the_run():
    seen = []
    result = trainers.train("sst2", lora(), steps=12, eval_every=4, seed=0,
                            report=lambda step, metrics: seen.append((step, metrics)) or step >= 8, **SMALL)
    assert result.status == "stopped" and result.step == 8
    assert [s for s, _ in seen] == [4, 8] and "accuracy" in seen[0][1]
    assert result.test == {}


def test_nan_loss_ends_the_run_as_failed(monkeypatch):
    real = loop.Run.loss
    calls = []

    def poisoned(self, batch, smoothing):
        loss, count = real(self, batch, smoothing)
        calls.append(1)
        return (loss * float("nan"), count) if len(calls) >= 3 else (loss, count)

    monkeypatch.setattr(loop.Run, "loss", poisoned)
    result = trainers.train("sst2", lora(), steps=10, seed=0, **SMALL)
    assert result.status == "failed" and result.error == "loss became nan at step 3"


def test_base_model_is_loaded_once_and_left_untouched():
    base = trainers.load_base("minilm", "classification", 2)
    pretrained = {k: v.clone() for k, v in base.model.state_dict().items() if "classifier" not in k}
    trainers.train("sst2", lora(), steps=3, seed=0, lr=1e-2, **SMALL)
    trainers.train("sst2", None, steps=2, seed=0, lr=1e-3, **SMALL)  # full fine-tuning
    trainers.train("sst2", peft_space.preset("mam", **{"attn.bottleneck": 2, "ffn.bottleneck": 4}), steps=2, **SMALL)
    assert trainers.load_base("minilm", "classification", 2) is base
    assert trainers.load_base.cache_info().currsize >= 1
    peft_space.remove(base.model)
    base.restore()
    assert all(torch.equal(v, pretrained[k]) for k, v in base.model.state_dict().items() if k in pretrained)


def test_the_head_is_redrawn_from_the_trial_seed():
    base = trainers.load_base("minilm", "classification", 2)
    heads = []
    for seed in (5, 5, 6):
        prepare(base, lora(), seed)
        heads.append(base.model.classifier.weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_full_fine_tuning_budget_is_everything():
    result = trainers.train("sst2", None, steps=1, seed=0, **SMALL)
    assert result.config["design_id"] == "full" and result.budget["pct_analytic"] == 100.0


def test_mnli_trains_above_chance():
    result = trainers.train("mnli", peft_space.preset("lora_attn", bottleneck=8), seed=0, steps=60, micro_batch=16,
                            batch_size=16, lr=5e-3, warmup_ratio=0.1, train_examples=1000, eval_examples=200,
                            max_source_length=64, eval_every=10**9, progress=False)
    labels = [json.loads(line)["label"] for line in open(SHARED_DATA / "mnli" / "validation.jsonl")][:200]
    majority = max(labels.count(c) for c in range(3)) / len(labels)
    assert result.status == "completed"
    assert result.test["accuracy"] > majority + 0.05, (result.test, majority)


@pytest.mark.parametrize("task, metric", [("xsum", "rouge2"), ("wmt16_en_ro", "bleu")])
def test_generation_tasks_run_end_to_end_and_training_lowers_perplexity(task, metric):
    kwargs = dict(micro_batch=8, batch_size=8, batch_tokens=0, train_examples=64, eval_examples=8, max_source_length=64,
                  max_target_length=24, num_beams=2, min_generate=1, max_generate=12, progress=False)
    design = peft_space.preset("mam", **{"attn.bottleneck": 4, "ffn.bottleneck": 16})
    untrained = trainers.train(task, design, seed=0, steps=1, lr=1e-12, **kwargs)
    trained = trainers.train(task, design, seed=0, steps=12, lr=3e-3, **kwargs)
    assert trained.status == "completed"
    assert trained.validation["perplexity"] < 0.8 * untrained.validation["perplexity"]
    assert metric in trained.test and "perplexity" in trained.test
    assert trained.budget["new"] > 0  # BERT2BERT's cross-attention and LM-head transform: trained, outside the budget
    assert trained.config["uncased_metrics"] is True


def test_metrics_use_the_real_libraries():
    assert rouge(["the cat sat on the mat"], ["the cat sat on the mat"])["rouge2"] == pytest.approx(100.0)
    assert rouge(["cats sitting"], ["cat sits"])["rouge1"] == pytest.approx(100.0)  # stemming on
    assert bleu(["the cat is on the mat today"], ["the cat is on the mat today"])["bleu"] == pytest.approx(100.0)
    assert normalise("Ştiinţă și Învățământ") == "stiinta si invatamant"


def test_bad_inputs_name_the_field(tmp_path):
    with pytest.raises(FieldError, match="task: 'squad' is not allowed; allowed: one of 'sst2', 'mnli', 'xsum', 'wmt16_en_ro'"):
        trainers.train("squad", lora())
    with pytest.raises(FieldError, match="lr: 'fast' is not allowed; allowed: a float"):
        trainers.train("sst2", lora(), lr="fast")
    with pytest.raises(FieldError, match="learning_rate: 0.1 is not allowed; allowed: hyper-parameters lr, "):
        trainers.train("sst2", lora(), learning_rate=0.1)
    with pytest.raises(FieldError, match=r"data: 'sst2' is not allowed; allowed: files found at .*sst2/train.tsv.*"
                                         r"supply --data-dir DIR holding sst2/train.tsv, sst2/validation.tsv"):
        trainers.train("sst2", lora(), data_dir=str(tmp_path))


def test_a_registered_task_trains_without_touching_the_trainer(tmp_path):
    with trainers.TASKS.scratch():
        _train_a_registered_task(tmp_path)


def _train_a_registered_task(tmp_path):
    (tmp_path / "polarity").mkdir()
    rows = [{"text": t, "y": y} for t, y in [("good", 1), ("bad", 0), ("great", 1), ("awful", 0)] * 8]
    for split in ("train", "validation"):
        (tmp_path / "polarity" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    trainers.register_task(trainers.Task(
        "polarity", "classification", ("user/polarity", None), {}, {"train": "polarity/train.jsonl",
        "validation": "polarity/validation.jsonl"}, ("text",), "y", accuracy, "accuracy", True,
        {"lr": 1e-3, "batch_size": 8, "micro_batch": 8}, num_labels=2))
    result = trainers.train("polarity", lora(), steps=2, data_dir=str(tmp_path), progress=False)
    assert result.status == "completed" and "accuracy" in result.test


def test_cli_trains_and_rejects_bad_input(tmp_path):
    out = tmp_path / "result.json"
    ok = subprocess.run([sys.executable, "-m", "peft_search.cli", "train", "--task", "sst2", "--design", "lora_attn",
                         "--set", "attn.bottleneck=2", "--set", "train_examples=32", "--set", "eval_examples=16",
                         "--set", "micro_batch=8", "--set", "batch_size=8", "--steps", "2", "--no-progress",
                         "--output", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "validation accuracy" in ok.stdout and "budget (analytic)" in ok.stdout and out.is_file()
    bad = subprocess.run([sys.executable, "-m", "peft_search.cli", "train", "--design", "lora_attn", "--set", "attn.rank=2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "attn.rank: 2 is not allowed" in bad.stderr and "Traceback" not in bad.stderr
