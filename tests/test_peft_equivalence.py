"""Our LoRA is HF PEFT's LoRA: same weights in, same outputs out (with a non-zero up-projection)."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

import peft_space
from peft_space.layers import Insertion
from models import batch, logits, tiny

R, ALPHA = 4, 8


@pytest.mark.parametrize(
    "arch, preset, targets",
    [
        ("bert", "lora_attn", ["query", "value"]),
        ("bart", "lora_attn", ["q_proj", "v_proj"]),
        ("llama", "lora_attn", ["q_proj", "v_proj"]),
        ("llama", "lora_ffn", ["gate_proj", "up_proj", "down_proj"]),
        ("bert", "lora_ffn", r".*layer\.\d+\.(intermediate|output)\.dense"),  # a regex: not attention.output
    ],
)
def test_our_lora_equals_hf_peft_lora(arch, preset, targets):
    base, inputs = tiny(arch), batch(arch)
    ours = peft_space.apply(copy.deepcopy(base), peft_space.preset(preset, bottleneck=R, scale=ALPHA / R))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0,
                                                             target_modules=targets))
    torch.manual_seed(1)
    copied = 0
    for name, module in ours.named_modules():
        if not isinstance(module, Insertion):
            continue
        module.delta.up.weight.data.normal_(std=0.1)  # non-zero, or the comparison is vacuous
        wrapped = theirs.base_model.model.get_submodule(name.rsplit(".", 1)[0])
        wrapped.lora_A["default"].weight.data.copy_(module.delta.down.weight)
        wrapped.lora_B["default"].weight.data.copy_(module.delta.up.weight)
        copied += 1
    assert copied == sum(1 for m in theirs.modules() if hasattr(m, "lora_A")) > 0
    ours_out, theirs_out = logits(ours, inputs), logits(theirs, inputs)
    assert not torch.allclose(ours_out, logits(base, inputs), atol=1e-4)
    torch.testing.assert_close(ours_out, theirs_out, rtol=1e-5, atol=1e-6)
