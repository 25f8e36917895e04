"""The training recipe's parts that a searched hyper-parameter changes: exact batch sizes, weight-decay groups, what a
classification head reads (``pooling``). Tiny random models; no training run."""

from __future__ import annotations

import pytest
import torch

import peft_space
import trainers
from models import batch, tiny
from peft_space import FieldError
from trainers import TrainConfig
from trainers.loop import Run, decay_groups
from trainers.models import set_pooling


def _examples(n: int) -> list[dict]:
    return [{"input_ids": [1] * (3 + i % 5), "labels": i % 2} for i in range(n)]


@pytest.mark.parametrize("batch_size, micro_batch", [(20, 16), (8, 16), (32, 16), (7, 3), (1, 4)])
def test_a_step_trains_exactly_batch_size_sentences_and_a_pass_sees_each_once(batch_size, micro_batch):
    run = Run(trainers.TASKS["sst2"], TrainConfig(batch_size=batch_size, micro_batch=micro_batch), None, seed=0)
    examples = _examples(50)
    steps = run.optimiser_batches(examples)
    groups = [next(steps) for _ in range(50)]  # 50 steps: several passes when batches are small
    assert all(sum(map(len, group)) == batch_size for group in groups)
    assert all(len(chunk) <= micro_batch for group in groups for chunk in group)
    seen = [id(e) for group in groups for chunk in group for e in chunk][: len(examples)]
    assert len(set(seen)) == len(examples)  # the first pass: every example once, none dropped at a split


def _learned_scale_and_gate() -> peft_space.Design:
    return peft_space.Design.from_dict({**peft_space.preset("lora_attn", bottleneck=4, learn_scale=True).to_dict(),
                                        **peft_space.preset("gated_pa_ffn", bottleneck=4).to_dict()})


def test_weight_decay_spares_biases_layer_norms_and_learned_scales():
    model = tiny("bert")
    peft_space.apply(model, _learned_scale_and_gate())
    named = {p: n for n, p in model.named_parameters() if p.requires_grad or n.startswith("classifier")}
    decayed, spared = decay_groups(list(named), weight_decay=0.05)
    assert decayed["weight_decay"] == 0.05 and spared["weight_decay"] == 0.0
    spared_names = {named[p] for p in spared["params"]}
    decayed_names = {named[p] for p in decayed["params"]}
    assert spared_names and all(p.ndim < 2 for p in spared["params"])
    assert any("bias" in n for n in spared_names) and any(n.endswith("composition.scale") for n in spared_names)
    assert any(n.endswith("composition.w") for n in spared_names)  # the gate of gated composition
    assert "classifier.bias" in spared_names and "classifier.weight" in decayed_names
    assert any("lora" in n or "down" in n for n in decayed_names) and all(p.ndim >= 2 for p in decayed["params"])
    assert spared_names.isdisjoint(decayed_names) and spared_names | decayed_names == set(named.values())


def _mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_mean_pooling_feeds_the_head_the_mean_of_the_unpadded_tokens_and_cls_is_the_checkpoints_head(arch):
    model, inputs = tiny(arch), batch(arch)
    inputs.pop("labels")
    with torch.no_grad():
        original, tokens = model(**inputs).logits, model.base_model(**inputs).last_hidden_state
        set_pooling(model, "mean")
        pooled, hidden = model(**inputs).logits, model.base_model(**inputs).last_hidden_state
        set_pooling(model, "cls")
        again = model(**inputs).logits
        head = model.classifier(model.bert.pooler(hidden)) if arch == "bert" else model.classifier(hidden)
    assert torch.equal(again, original) and not torch.allclose(pooled, original)
    assert torch.allclose(hidden[:, 0], _mean(tokens, inputs["attention_mask"]), atol=1e-6)
    assert torch.equal(hidden[:, 1:], tokens[:, 1:])  # only what the head reads changes
    assert torch.allclose(pooled, head, atol=1e-6)


def test_mean_pooling_ignores_padding():
    model, inputs = tiny("bert"), batch("bert")
    inputs.pop("labels")
    short = {k: v[1:, :5] for k, v in inputs.items()}  # row 1 without its two padding tokens
    set_pooling(model, "mean")
    with torch.no_grad():
        padded, unpadded = model(**inputs).logits[1], model(**short).logits[0]
    assert torch.allclose(padded, unpadded, atol=1e-5)


def test_pooling_is_a_recorded_hyperparameter_with_the_old_behaviour_for_old_runs():
    declared = {h.name: h for h in trainers.hyperparameters()}["pooling"]
    assert declared.allowed == "one of 'cls', 'mean'" and declared.unrecorded == "cls"
    with pytest.raises(FieldError, match="pooling"):
        trainers.resolve(trainers.TASKS["sst2"], {"pooling": "max"})
    with pytest.raises(FieldError, match="'cls' for"):
        set_pooling(torch.nn.Linear(2, 2), "mean")


def test_a_run_recorded_before_pooling_existed_is_reproduced_with_the_cls_head_it_had():
    from types import SimpleNamespace

    from search.reproduce import recorded_inputs

    params = {"task": "sst2", "model": "minilm", "seed": "3", "data": "/data", "lr": "0.001", "batch_size": "16"}
    old = SimpleNamespace(data=SimpleNamespace(params=params), info=SimpleNamespace(run_id="r"))
    new = SimpleNamespace(data=SimpleNamespace(params={**params, "pooling": "mean"}), info=SimpleNamespace(run_id="r"))
    assert recorded_inputs(old)["pooling"] == "cls" and recorded_inputs(new)["pooling"] == "mean"
    assert recorded_inputs(old)["lr"] == 0.001 and recorded_inputs(old)["batch_size"] == 16  # typed, as trained
    assert TrainConfig().pooling == "mean"
