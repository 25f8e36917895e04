"""Export a LoRA design to HF PEFT's adapter format (``adapter_config.json`` + ``adapter_model.safetensors``).

A design exports when every site is LoRA in the paper's sense — linear form, parallel insertion, ``add``
or fixed ``scaled`` composition — on whole projection matrices. Each of our taps becomes a PEFT LoRA
module with ``lora_alpha = s · r`` (PEFT scales by alpha / r); per-module ranks and alphas go into
``rank_pattern`` / ``alpha_pattern``; the task head goes into ``modules_to_save``. Then
``peft.PeftModel.from_pretrained(base, path)`` reproduces our outputs.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig
from safetensors.torch import save_file
from torch import nn

from peft_space.errors import DesignError
from peft_space.inject import head_modules
from peft_space.layers import Insertion, Scaled

WEIGHTS = "adapter_model.safetensors"
LORA_ONLY = "a LoRA design: linear form, parallel insertion, add or fixed scaled composition on whole projections"


def _check(model: nn.Module) -> None:
    design = getattr(model, "peft_design", None)
    if design is None:
        raise DesignError("model", None, "a model with a design applied by peft_space.apply")
    for site, mod in design.sites.items():
        rep = mod.choice("representation")
        lora = (
            mod["form"] == "linear" and mod["insertion"] == "parallel" and not mod.get("learn_scale")
            and mod["composition"] in ("add", "scaled") and all(x == h for x, h in rep.taps) and not rep.inside_attention
        )
        if not lora:
            raise DesignError(f"design.{site}", dict(mod), LORA_ONLY)


def export_peft(model: nn.Module, path: str | Path) -> Path:
    """Write the applied LoRA design of ``model`` as a PEFT adapter directory."""
    _check(model)
    tensors, ranks, alphas = {}, {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, Insertion):
            continue
        if module.out_slice is not None:
            raise DesignError("design", model.peft_design.id, LORA_ONLY + " (PEFT cannot adapt part of a fused q|k|v)")
        target = name.rsplit(".", 1)[0]
        rank = module.delta.down.out_features
        scale = float(module.composition.scale) if isinstance(module.composition, Scaled) else 1.0
        ranks[target], alphas[target] = rank, scale * rank
        tensors[f"base_model.model.{target}.lora_A.weight"] = module.delta.down.weight.detach().contiguous()
        tensors[f"base_model.model.{target}.lora_B.weight"] = module.delta.up.weight.detach().contiguous()
    heads = [n for n, m in model.named_children() if m in head_modules(model)]
    for head in heads:
        for key, tensor in model.get_submodule(head).state_dict().items():
            tensors[f"base_model.model.{head}.{key}"] = tensor.detach().contiguous()
    r, alpha = next(iter(ranks.values())), next(iter(alphas.values()))
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=sorted(ranks),
        rank_pattern={k: v for k, v in ranks.items() if v != r}, alpha_pattern={k: v for k, v in alphas.items() if v != alpha},
        modules_to_save=heads or None,
    )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file(tensors, str(out / WEIGHTS))
    return out
