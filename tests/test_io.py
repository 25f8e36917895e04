"""Save, load and export: a trained modification comes back with identical outputs; bad files fail clearly."""

import pytest
import torch
from peft import PeftModel

import peft_space
from peft_space import DesignError
from models import batch, logits, tiny

NOT_APPLICABLE = {("mbart", "pfeiffer"), ("gpt2", "pfeiffer"), ("llama", "pfeiffer"), ("llama", "bitfit")}


def small(name: str) -> peft_space.Design:
    sites = peft_space.preset(name).sites
    return peft_space.preset(name, **{f"{s}.bottleneck": 3 for s, m in sites.items() if "bottleneck" in m},
                             **{f"{s}.init": "bert" for s, m in sites.items() if "init" in m})


def train(model, inputs, steps: int = 2) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("arch", ["bert", "bart", "llama"])
def test_every_preset_saves_and_loads_onto_a_fresh_model_with_identical_outputs(arch, tmp_path):
    for name in peft_space.presets():
        if (arch, name) in NOT_APPLICABLE:
            continue
        model, inputs = tiny(arch), batch(arch)
        peft_space.apply(model, small(name))
        train(model, inputs)
        expected = logits(model, inputs)
        peft_space.save(model, tmp_path / name)
        fresh = peft_space.load(tiny(arch), tmp_path / name)
        assert fresh.peft_design == model.peft_design
        torch.testing.assert_close(logits(fresh, inputs), expected, rtol=0, atol=1e-6, msg=name)
        if arch == "bart":
            kwargs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], num_beams=3,
                          max_new_tokens=5, do_sample=False)
            with torch.no_grad():
                assert torch.equal(model.generate(**kwargs), fresh.generate(**kwargs)), name


def test_saved_files_are_design_json_and_safetensors_only(tmp_path):
    model = peft_space.apply(tiny("bert"), small("mam"))
    peft_space.save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design.json", "modification.safetensors"]
    assert peft_space.Design.from_json((tmp_path / "design.json").read_text()) == model.peft_design


def test_corrupted_or_mismatched_weights_fail_clearly(tmp_path):
    model = peft_space.apply(tiny("bert"), small("pa_ffn"))
    peft_space.save(model, tmp_path / "ok")
    (tmp_path / "ok" / "modification.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DesignError, match="modification.safetensors: 'unreadable' is not allowed; allowed: a safetensors file"):
        peft_space.load(tiny("bert"), tmp_path / "ok")

    peft_space.save(model, tmp_path / "other")
    other = peft_space.apply(tiny("bert"), peft_space.preset("pa_ffn", bottleneck=5))
    with pytest.raises(DesignError, match="the design applied to this model"):
        peft_space.load(other, tmp_path / "other")
    (tmp_path / "other" / "design.json").write_text(peft_space.preset("pa_ffn", bottleneck=5).to_json())
    with pytest.raises(DesignError, match="tensors matching design"):
        peft_space.load(tiny("bert"), tmp_path / "other")
    with pytest.raises(DesignError, match="a directory written by peft_space.save"):
        peft_space.load(tiny("bert"), tmp_path / "missing")


@pytest.mark.parametrize(
    "arch, design",
    [
        ("bert", peft_space.Design({"attn": {"form": "linear", "representation": "query_value", "composition": "scaled",
                                             "scale": 2.0, "bottleneck": 3},
                                    "ffn": {"form": "linear", "representation": "ffn_w1_w2", "bottleneck": 5}})),
        ("bart", peft_space.preset("lora_attn", bottleneck=4)),
        ("llama", peft_space.preset("lora_ffn", bottleneck=2)),
    ],
)
def test_lora_exports_to_hf_peft_with_identical_outputs(arch, design, tmp_path):
    model, inputs = tiny(arch), batch(arch)
    peft_space.apply(model, design)
    train(model, inputs)  # non-zero up-projections and head
    peft_space.export_peft(model, tmp_path)
    loaded = PeftModel.from_pretrained(tiny(arch), str(tmp_path))
    torch.testing.assert_close(logits(loaded, inputs), logits(model, inputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch, name, why", [("bert", "pa_ffn", "a LoRA design"), ("gpt2", "lora_attn", "fused q|k|v")])
def test_non_lora_designs_do_not_export(arch, name, why, tmp_path):
    model = peft_space.apply(tiny(arch), small(name))
    with pytest.raises(DesignError, match=why):
        peft_space.export_peft(model, tmp_path)
