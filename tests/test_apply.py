"""Applying designs to every architecture: identity at init, training touches exactly the design, exact removal."""

import pytest
import torch

import peft_space
from peft_space import DesignError
from peft_space.layers import Insertion
from models import ARCHS, batch, logits, tiny

NOT_APPLICABLE = {
    ("mbart", "pfeiffer"): "pre-layer-norm",
    ("gpt2", "pfeiffer"): "pre-layer-norm",
    ("llama", "pfeiffer"): "pre-layer-norm",
    ("llama", "bitfit"): "llama has no bias",
}
CASES = [(a, p) for a in ARCHS for p in peft_space.presets() if (a, p) not in NOT_APPLICABLE]


def with_init(name: str, init: str) -> peft_space.Design:
    design = peft_space.preset(name)
    return peft_space.preset(name, **{f"{s}.init": init for s, mod in design.sites.items() if "init" in mod})


def identity_at_init(design: peft_space.Design) -> bool:
    """Δh = 0 at start (LoRA init, BitFit) and an add/scaled composition: the output must not move."""
    return all(mod.choice("form").kind in ("bottleneck", "bias") and mod.get("composition") != "gated"
               for mod in design.sites.values())


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or not torch.allclose(a, b, atol=1e-7)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch, name", NOT_APPLICABLE)
def test_preset_that_cannot_apply_says_why(arch, name):
    model = tiny(arch)
    before = snapshot(model)
    with pytest.raises(DesignError, match=NOT_APPLICABLE[(arch, name)]):
        peft_space.apply(model, peft_space.preset(name))
    assert not hasattr(model, "peft_design")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("arch, name", CASES)
def test_lora_init_is_identity_and_nonzero_init_changes_output(arch, name):
    model, inputs = tiny(arch), batch(arch)
    reference = logits(model, inputs)
    design = with_init(name, "lora")
    peft_space.apply(model, design)
    if identity_at_init(design):
        assert torch.equal(logits(model, inputs), reference)
    else:  # prefixes and prompts are attended from the start; a sigmoid gate starts at λ = 1/2
        assert differs(logits(model, inputs), reference)
    peft_space.remove(model)
    if name != "bitfit":  # a bias shift starts at zero whatever the init
        peft_space.apply(model, with_init(name, "bert"))
        assert differs(logits(model, inputs), reference)


@pytest.mark.parametrize("arch, name", CASES)
def test_training_changes_exactly_the_design_and_head_then_remove_restores(arch, name):
    model, inputs = tiny(arch), batch(arch)
    original = snapshot(model)
    original_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    reference = logits(model, inputs)

    peft_space.apply(model, with_init(name, "bert"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    added = {n for n, _ in model.named_parameters() if ".peft_" in f".{n}"}
    head = trainable - added
    assert added and added <= trainable
    assert all(n.split(".")[0] in ("classifier", "classification_head", "score") for n in head)

    before = snapshot(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**inputs).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = model(**inputs).loss.item()
    assert final < losses[0], (losses, final)
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed == trainable, (sorted(changed ^ trainable))[:5]

    peft_space.remove(model)
    assert model.state_dict().keys() == original.keys()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == original_grad
    assert not any(isinstance(m, Insertion) for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(logits(model, inputs), reference)


def test_apply_twice_and_remove_without_design_are_errors():
    model = tiny("bert")
    with pytest.raises(DesignError, match="a model with a design applied"):
        peft_space.remove(model)
    peft_space.apply(model, peft_space.preset("pa_ffn", bottleneck=4))
    with pytest.raises(DesignError, match="call peft_space.remove first"):
        peft_space.apply(model, peft_space.preset("lora_attn"))


@pytest.mark.parametrize(
    "arch, sites, message",
    [
        ("bert", {"cross_attn": {}}, "site: 'cross_attn' is not allowed; allowed: sites bert has: 'attn', 'enc_attn', 'ffn'"),
        ("gpt2", {"enc_attn": {}}, "sites gpt2 has: 'attn', 'dec_attn', 'ffn'"),
        ("bart", {"enc_attn": {"bottleneck": 2}, "cross_attn": {"form": "linear", "representation": "key"}}, None),
    ],
)
def test_sites_follow_the_attention_kinds_of_the_model(arch, sites, message):
    model = tiny(arch)
    design = peft_space.Design(sites)
    if message:
        with pytest.raises(DesignError, match=message.replace("(", r"\(")):
            peft_space.apply(model, design)
        return
    peft_space.apply(model, design)
    names = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1].startswith("peft_")]
    assert names and all(".encoder.layers." in n and ".self_attn." in n or ".encoder_attn.k_proj." in n for n in names)
    assert not any(".decoder.layers." in n and ".self_attn." in n for n in names)


def test_bart_encoder_decoder_attention_kinds_each_get_their_own_modules():
    model = tiny("bart")
    peft_space.apply(model, peft_space.preset("pa_attn", bottleneck=2))
    parents = sorted({n.rsplit(".", 2)[0].split(".layers.")[0] + "/" + n.split(".")[4] for n, m in model.named_modules()
                      if isinstance(m, Insertion)})
    assert parents == ["model.decoder/encoder_attn", "model.decoder/self_attn", "model.encoder/self_attn"]


def test_gpt2_fused_qkv_lora_modifies_only_its_slices():
    model = tiny("gpt2")
    peft_space.apply(model, peft_space.preset("lora_attn", bottleneck=2, init="bert"))
    c_attn = model.transformer.h[0].attn.c_attn
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        plain = torch.addmm(c_attn.bias, x.view(-1, 32), c_attn.weight).view(1, 3, 96)
        hooked = c_attn(x)
    assert torch.equal(hooked[..., 32:64], plain[..., 32:64])  # key untouched
    assert not torch.allclose(hooked[..., :32], plain[..., :32]) and not torch.allclose(hooked[..., 64:], plain[..., 64:])
