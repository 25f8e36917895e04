"""``apply`` a design to a transformers model and ``remove`` it again.

``apply`` plans every insertion first (so an invalid design leaves the model untouched), then freezes
the pretrained weights, adds the design's modules and leaves trainable only those and the task head.
Three mechanisms, chosen by the representation and the form:

- hooks (``Insertion``): Δh from the input of the x module, composed into the output of the h module;
- inside attention (``HeadInsertion``, ``PrefixEncoder``): through the attention function of
  ``peft_space.attention``, for ``representation="head"`` (prefix tuning, multi-head adapters);
- the input (``PromptEmbedding``): prompt tuning.

Pretrained tensors are never modified, so ``remove`` restores the model exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from peft_space.architectures import Target, architecture_of, find_targets
from peft_space.design import Design, Modification
from peft_space.dimensions import DIMENSIONS
from peft_space.errors import DesignError
from peft_space.layers import Add, Added, BiasShift, Bottleneck, Insertion
from peft_space.paper import REPRESENTATION, Representation
from peft_space.sites import SITES

MODULE_PREFIX = "peft_"


@dataclass
class Tap:
    """A planned insertion: Δh from the input of ``x_module`` into the output of ``h_module``."""

    site: str
    modification: Modification
    target: Target
    x_module: nn.Module
    h_module: nn.Module
    out_slice: slice | None


def _resolve(layer: nn.Module, spec: str) -> tuple[nn.Module, slice | None]:
    path, _, part = spec.partition(":")
    module = layer.get_submodule(path)
    if not part:
        return module, None
    i, n = map(int, part.split("/"))
    size = features(module)[1] // n
    return module, slice(i * size, (i + 1) * size)


def _out_width(layer: nn.Module, spec: str) -> int:
    module, out_slice = _resolve(layer, spec)
    return features(module)[1] if out_slice is None else out_slice.stop - out_slice.start


def features(module: nn.Module) -> tuple[int, int]:
    """(input, output) width of a linear-like or normalisation module."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = module.weight
    if weight.dim() == 2:  # transformers' Conv1D stores (in, out)
        return weight.shape[0], weight.shape[1]
    return weight.shape[0], weight.shape[0]


def _selected(mod: Modification, target: Target) -> bool:
    """Dimensions with a ``select`` hook (e.g. a user's "which layers") decide if a target is modified."""
    return all(dim.select(mod[dim.name], target) for dim in DIMENSIONS.values() if dim.select and dim.name in mod)


def _fits(rep: Representation, target: Target) -> bool:
    return rep.sublayer == target.sublayer and all(target.modules(r) for tap in rep.taps for r in tap)


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
        for target in (t for t in covered if _selected(mod, t)):
            taps.extend(_target_taps(site_name, mod, target, arch))
    return taps


def _target_taps(site: str, mod: Modification, target: Target, arch: str) -> Iterator[Tap]:
    rep = mod.choice("representation")
    if not _fits(rep, target):
        have = [r for r in REPRESENTATION if _fits(REPRESENTATION[r], target)]
        why = "; 'block' needs the layer norm after the FFN's residual, which pre-layer-norm models lack"
        raise DesignError(f"{site}.representation", mod["representation"],
                          f"one {arch} has: " + ", ".join(map(repr, have)) + ("" if target.post_ln else why))
    for x_role, h_role in rep.taps:
        x_specs, h_specs = target.modules(x_role), target.modules(h_role)
        pairs = zip(x_specs, h_specs) if x_role == h_role else [(x_specs[0], h) for h in h_specs]
        for x_spec, h_spec in pairs:
            h_module, out_slice = _resolve(target.module, h_spec)
            if mod.choice("form").kind == "bias" and getattr(h_module, "bias", None) is None:
                raise DesignError(f"{site}.form", mod["form"],
                                  f"a form other than 'bias' (BitFit tunes existing biases): {arch} has no bias "
                                  f"at {h_spec}")
            yield Tap(site, mod, target, _resolve(target.module, x_spec)[0], h_module, out_slice)


def _factory(module: nn.Module) -> dict[str, Any]:
    weight = next(module.parameters())
    return {"device": weight.device, "dtype": weight.dtype}


def _hooked(tap: Tap) -> Insertion:
    mod, factory = tap.modification, _factory(tap.h_module)
    d_out = features(tap.h_module)[1] if tap.out_slice is None else tap.out_slice.stop - tap.out_slice.start
    if mod.choice("form").kind == "bias":
        return Insertion(BiasShift(d_out, **factory), Add(0, dict(mod)), False, tap.out_slice)
    parallel = mod.choice("insertion").parallel
    d_in = features(tap.x_module)[0] if parallel else d_out
    delta = Bottleneck(d_in, d_out, mod["bottleneck"], mod.choice("form").activation, **factory)
    mod.choice("init").apply(delta.down.weight, delta.up.weight)
    composition = mod.choice("composition").build(d_in, dict(mod), **factory)
    return Insertion(delta, composition, parallel, tap.out_slice)


def _head_geometry(tap: Tap) -> tuple[int, int, int, int]:
    """(d_model, heads, kv_heads, head_dim) of the attention module of ``tap``, from its projections."""
    layer, (q_spec,), (k_spec,) = tap.target.module, tap.target.modules("q"), tap.target.modules("k")
    head_dim = getattr(tap.h_module, "head_dim", None) or tap.h_module.attention_head_size
    d_model = features(_resolve(layer, q_spec)[0])[0]
    return d_model, _out_width(layer, q_spec) // head_dim, _out_width(layer, k_spec) // head_dim, head_dim


def _add_inside_attention(model: nn.Module, taps: list[Tap]) -> None:
    from peft_space.attention import HeadInsertion, PrefixEncoder

    groups: dict[tuple[str, str | None], list[Tap]] = {}
    for tap in taps:
        groups.setdefault((tap.site, tap.target.kind), []).append(tap)
    for (site, kind), group in groups.items():
        mod, factory = group[0].modification, _factory(group[0].h_module)
        form, length = mod.choice("form"), mod["bottleneck"]
        d_model, heads, kv_heads, head_dim = _head_geometry(group[0])
        encoder = None
        if form.kind == "prefix":
            encoder = PrefixEncoder(length, d_model, len(group), 2 * kv_heads * head_dim, **factory)
            model.add_module(f"{MODULE_PREFIX}prefix_{site}_{kind}", encoder)
        gated_exactly = form.kind == "prefix" and mod["composition"] == "gated"
        for index, tap in enumerate(group):
            composition = None if gated_exactly else mod.choice("composition").build((heads, head_dim), dict(mod), **factory)
            head = HeadInsertion(form, composition, length, heads, kv_heads, head_dim, encoder, index, **factory)
            if form.kind == "bottleneck":
                mod.choice("init").apply(head.down, head.up)
            tap.h_module.add_module(f"{MODULE_PREFIX}head", head)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The task head(s) of the model, e.g. ``classifier``: trainable, and outside the budget."""
    names = {h for arch in architecture_of(model) for h in arch.heads}
    return [m for n, m in model.named_children() if n in names]


def added_modules(model: nn.Module) -> list[Added]:
    return [m for m in model.modules() if isinstance(m, Added)]


def apply(model: nn.Module, design: Design) -> nn.Module:
    """Insert ``design`` into ``model`` (in place; also returned). Only added modules and the head train."""
    if getattr(model, "peft_design", None) is not None:
        raise DesignError("model", model.peft_design.id, "a model without a design: call peft_space.remove first")
    taps = plan(model, design)
    model._peft_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    model._peft_heads = [{k: v.clone() for k, v in head.state_dict().items()} for head in head_modules(model)]
    model.requires_grad_(False)
    for head in head_modules(model):
        head.requires_grad_(True)
    inside = [t for t in taps if t.modification.choice("representation").inside_attention]
    if inside:
        _add_inside_attention(model, inside)
        model._peft_attn = model.config._attn_implementation
        model.set_attn_implementation("peft_space")
    for i, tap in enumerate(t for t in taps if t not in inside):
        if tap.modification.choice("form").kind == "prompt":
            from peft_space.prompt import PromptEmbedding

            prompt = PromptEmbedding(tap.modification["bottleneck"], model.get_input_embeddings(), **_factory(model))
            model.add_module(f"{MODULE_PREFIX}prompt", prompt)
            prompt.hook(model)
            continue
        insertion = _hooked(tap)
        tap.h_module.add_module(f"{MODULE_PREFIX}{tap.site}_{i}", insertion)
        insertion.hook(tap.x_module, tap.h_module)
    model.peft_design = design
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo ``apply``: drop every added module and hook, restore the head and ``requires_grad``.

    Save a trained modification (``peft_space.save``) before removing it: the head is reset too, so a
    worker can apply trial after trial to one pristine base model.
    """
    if getattr(model, "peft_design", None) is None:
        raise DesignError("model", None, "a model with a design applied by peft_space.apply")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Added):
                if hasattr(child, "unhook"):
                    child.unhook()
                delattr(module, name)
    if hasattr(model, "_peft_attn"):
        model.set_attn_implementation(model._peft_attn)
        del model._peft_attn
    for name, param in model.named_parameters():
        param.requires_grad_(model._peft_requires_grad[name])
    for head, state in zip(head_modules(model), model._peft_heads):
        head.load_state_dict(state)
    del model._peft_requires_grad, model._peft_heads, model.peft_design
    return model
