"""Save and load a trained modification: the design as JSON and its tensors as safetensors.

Only the added modules and the task head are saved; the pretrained model is not. Prefix tuning is
saved in its final form (each layer's P_k, P_v; the reparameterising MLP is dropped). Loading applies
the design to a fresh copy of the base model (if it has none yet) and fills in the tensors; a file
that does not match the design fails with a clear error instead of loading partially. Only
safetensors and JSON are read: nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from peft_space.attention import HeadInsertion, PrefixEncoder, drop_reparameterization
from peft_space.design import DESIGN_FILE, Design
from peft_space.errors import DesignError
from peft_space.inject import MODULE_PREFIX, apply, head_modules

WEIGHTS_FILE = "modification.safetensors"


def _trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a trained modification consists of, with prefixes in their final form."""
    heads = {n for n, m in model.named_children() if m in head_modules(model)}
    encoders = {n for n, m in model.named_children() if isinstance(m, PrefixEncoder)}
    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if (f".{MODULE_PREFIX}" in f".{name}" or name.split(".")[0] in heads) and name.split(".")[0] not in encoders
    }
    for name, module in model.named_modules():
        if isinstance(module, HeadInsertion) and module.prefix_form and module.prefix is None:
            state[f"{name}.prefix"] = module.encoder.layer(module.index)
    return state


def save(model: nn.Module, path: str | Path) -> Path:
    design: Design | None = getattr(model, "peft_design", None)
    if design is None:
        raise DesignError("model", None, "a model with a design applied by peft_space.apply")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / DESIGN_FILE).write_text(design.to_json())
    save_file({k: v.detach().contiguous() for k, v in _trained_state(model).items()}, str(out / WEIGHTS_FILE))
    return out


def load(model: nn.Module, path: str | Path) -> nn.Module:
    src = Path(path)
    for name in (DESIGN_FILE, WEIGHTS_FILE):
        if not (src / name).is_file():
            raise DesignError("path", str(src / name), f"a directory written by peft_space.save ({DESIGN_FILE}, {WEIGHTS_FILE})")
    design = Design.from_json((src / DESIGN_FILE).read_text())
    if getattr(model, "peft_design", None) is None:
        apply(model, design)
    elif model.peft_design != design:
        raise DesignError("design", design.id, f"the design applied to this model ({model.peft_design.id})")
    drop_reparameterization(model)
    try:
        tensors = load_file(str(src / WEIGHTS_FILE))
    except (SafetensorError, OSError) as err:
        raise DesignError(str(src / WEIGHTS_FILE), "unreadable", f"a safetensors file ({err})") from None
    expected = _trained_state(model)
    problems = sorted(set(expected) ^ set(tensors)) or [
        k for k in expected if tuple(expected[k].shape) != tuple(tensors[k].shape)
    ]
    if problems:
        raise DesignError(str(src / WEIGHTS_FILE), problems[:3], f"tensors matching design {design.id}")
    model.load_state_dict(tensors, strict=False)
    return model
