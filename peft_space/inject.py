"""``apply`` a design to a transformers model and ``remove`` it again.

``apply`` plans every insertion first (so an invalid design leaves the model untouched), then freezes
the pretrained weights, attaches one ``Insertion`` per tap and leaves trainable only the insertions
and the task head. Pretrained tensors are never modified, so ``remove`` restores the model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from peft_space.architectures import Target, architecture_of, find_targets
from peft_space.design import Design, Modification
from peft_space.dimensions import DIMENSIONS
from peft_space.errors import DesignError
from peft_space.layers import Add, BiasShift, Bottleneck, Insertion
from peft_space.sites import SITES
from peft_space.space import REPRESENTATION, Representation

PREFIX = "peft_"


@dataclass
class Tap:
    """A planned insertion: Δh from the input of ``x_module`` into the output of ``h_module``."""

    site: str
    index: int
    modification: Modification
    x_module: nn.Module
    h_module: nn.Module
    out_slice: slice | None


def _resolve(layer: nn.Module, spec: str) -> tuple[nn.Module, slice | None]:
    path, _, part = spec.partition(":")
    module = layer.get_submodule(path)
    if not part:
        return module, None
    i, n = map(int, part.split("/"))
    size = _features(module)[1] // n
    return module, slice(i * size, (i + 1) * size)


def _features(module: nn.Module) -> tuple[int, int]:
    """(input, output) width of a linear-like or normalisation module."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = module.weight
    if weight.dim() == 2:  # transformers' Conv1D stores (in, out)
        return weight.shape[0], weight.shape[1]
    return weight.shape[0], weight.shape[0]


def _selected(mod: Modification, target: Target) -> bool:
    """Dimensions with a ``select`` hook (e.g. a user's "which layers") decide if a target is modified."""
    return all(dim.select(mod[dim.name], target) for dim in DIMENSIONS if dim.select and dim.name in mod)


def plan(model: nn.Module, design: Design) -> list[Tap]:
    """Check ``design`` against ``model`` and list the taps to insert; raises ``DesignError``."""
    targets = find_targets(model)
    arch = "+".join(a.name for a in architecture_of(model))
    taps: list[Tap] = []
    for site_name, mod in design.sites.items():
        site = SITES[site_name]
        covered = [t for t in targets if site.covers(t.sublayer, t.kind)]
        if not covered:
            present = [s for s, si in SITES.items() if any(si.covers(t.sublayer, t.kind) for t in targets)]
            raise DesignError("site", site_name, f"sites {arch} has: " + ", ".join(map(repr, present)))
        rep = mod.choice("representation")
        for target in (t for t in covered if _selected(mod, t)):
            for x_role, h_role in rep.taps:
                taps.extend(_target_taps(site_name, mod, target, x_role, h_role, arch, len(taps)))
    return taps


def _fits(rep: Representation, target: Target) -> bool:
    return rep.sublayer == target.sublayer and all(target.modules(r) for tap in rep.taps for r in tap)


def _target_taps(site: str, mod: Modification, target: Target, x_role: str, h_role: str, arch: str, start: int) -> list[Tap]:
    x_specs, h_specs = target.modules(x_role), target.modules(h_role)
    if not x_specs or not h_specs:
        have = [r for r in REPRESENTATION if _fits(REPRESENTATION[r], target)]
        why = "; 'block' needs the layer norm after the FFN's residual, which pre-layer-norm models lack" if not target.post_ln else ""
        raise DesignError(f"{site}.representation", mod["representation"], f"one {arch} has: " + ", ".join(map(repr, have)) + why)
    pairs = zip(x_specs, h_specs) if x_role == h_role else [(x_specs[0], h) for h in h_specs]
    taps = []
    for x_spec, h_spec in pairs:
        h_module, out_slice = _resolve(target.module, h_spec)
        if mod.choice("form").needs_bias and getattr(h_module, "bias", None) is None:
            raise DesignError(f"{site}.form", mod["form"], f"a form other than 'bias' (BitFit): {arch} has no bias at {h_spec}")
        x_module = _resolve(target.module, x_spec)[0]
        taps.append(Tap(site, start + len(taps), mod, x_module, h_module, out_slice))
    return taps


def _build(tap: Tap) -> Insertion:
    mod = tap.modification
    weight = tap.h_module.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    d_out = _features(tap.h_module)[1] if tap.out_slice is None else tap.out_slice.stop - tap.out_slice.start
    if not mod.choice("form").bottleneck:
        return Insertion(BiasShift(d_out, **factory), Add(0, dict(mod)), False, tap.out_slice)
    parallel = mod.choice("insertion").parallel
    d_in = _features(tap.x_module)[0] if parallel else d_out
    delta = Bottleneck(d_in, d_out, mod["bottleneck"], mod.choice("form").activation, **factory)
    mod.choice("init").apply(delta)
    composition = mod.choice("composition").build(d_in, dict(mod), **factory)
    return Insertion(delta, composition, parallel, tap.out_slice)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The task head(s) of the model, e.g. ``classifier``: trainable, and outside the budget."""
    names = {h for arch in architecture_of(model) for h in arch.heads}
    return [m for n, m in model.named_children() if n in names]


def insertions(model: nn.Module) -> list[Insertion]:
    return [m for m in model.modules() if isinstance(m, Insertion)]


def apply(model: nn.Module, design: Design) -> nn.Module:
    """Insert ``design`` into ``model`` (in place; also returned). Only insertions and head train."""
    if getattr(model, "peft_design", None) is not None:
        raise DesignError("model", model.peft_design.id, "a model without a design: call peft_space.remove first")
    taps = plan(model, design)
    model._peft_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model._peft_heads = [{k: v.clone() for k, v in head.state_dict().items()} for head in head_modules(model)]
    model.requires_grad_(False)
    for head in head_modules(model):
        head.requires_grad_(True)
    for tap in taps:
        insertion = _build(tap)
        tap.h_module.add_module(f"{PREFIX}{tap.site}_{tap.index}", insertion)
        insertion.hook(tap.x_module, tap.h_module)
    model.peft_design = design
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo ``apply``: drop every insertion and hook, restore the head and ``requires_grad`` as they were.

    Save a trained modification (``peft_space.save``) before removing it: the head is reset too, so a
    worker can apply trial after trial to one pristine base model.
    """
    if getattr(model, "peft_design", None) is None:
        raise DesignError("model", None, "a model with a design applied by peft_space.apply")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Insertion):
                child.unhook()
                delattr(module, name)
    for name, param in model.named_parameters():
        param.requires_grad_(model._peft_requires_grad[name])
    for head, state in zip(head_modules(model), model._peft_heads):
        head.load_state_dict(state)
    del model._peft_requires_grad, model._peft_heads
    del model.peft_design
    return model
