"""Modifications inside multi-head attention: prefix tuning and multi-head adapters (He et al. §3.1, §3.3).

One mechanism serves every architecture: an attention function registered in transformers'
``AttentionInterface`` under the name ``"peft_space"``. Models call it with the attention module in
hand and the per-head query, key and value (after rotary embeddings, with the KV cache already
updated), so it can

- prepend a layer's prefix vectors P_k, P_v to the keys and values (Eq. 5) — which *is* the gated form
  (1-λ(x))·h + λ(x)·softmax(x W_q P_kᵀ) P_v of Eq. 7–9 with the exact λ, and
- add a per-head Δh to the head outputs (multi-head adapters, or an ungated/scaled prefix),

then delegate to transformers' own SDPA attention — or, where the module soft-caps its attention logits
(Gemma 2), which SDPA cannot do, to the module's own eager attention, exactly. A matching mask function is
registered too: without one, transformers hands a custom attention function no padding mask and padded
tokens are silently attended. Ours always materialises the mask (no is-causal shortcut; sliding windows
included), so prefix columns can be prepended to it. Prefix vectors have no position: every token attends
them, inside a sliding window or not (HF PEFT's prefix, passed as KV-cache entries, falls out of the window).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from peft_space.layers import Added, activation_fn

NAME = "peft_space"
REPARAM_HIDDEN = 800  # Li & Liang's reparameterisation width


def _mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    kwargs.update(allow_is_causal_skip=False, allow_is_bidirectional_skip=False)
    return sdpa_mask(*args, **kwargs)


def _heads(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """Attention of the heads: SDPA, or the module's own eager function where it soft-caps the logits."""
    if kwargs.get("softcap") is None:
        return sdpa_attention_forward(module, query, key, value, mask, **kwargs)
    eager = sys.modules[type(module).__module__].eager_attention_forward
    if mask is not None and mask.dtype == torch.bool:  # eager functions add the mask to the logits
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(query.dtype).min)
    return eager(module, query, key, value, mask, **kwargs)


def _attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, **kwargs: Any
) -> tuple[torch.Tensor, Any]:
    insertion: HeadInsertion | None = getattr(module, "peft_head", None)
    if insertion is None:
        return _heads(module, query, key, value, mask, **kwargs)
    return insertion.attend(module, query, key, value, mask, **kwargs)


AttentionInterface.register(NAME, _attention)
AttentionMaskInterface.register(NAME, _mask)


class PrefixEncoder(Added):
    """Li & Liang's reparameterisation, shared by the layers of one attention kind:
    embedding (l × d) -> Linear(d, 800) -> tanh -> Linear(800, layers · 2 · d_kv).

    Each layer computes only its own rows of the last projection. It exists for training only, so
    its parameters count in the actual budget but not in the paper's analytic one (2·l·d per layer).
    """

    def __init__(self, length: int, d_model: int, n_layers: int, width: int, **factory: Any) -> None:
        super().__init__()
        self.width = width
        self.embedding = nn.Parameter(torch.empty(length, d_model, **factory))
        self.hidden = nn.Linear(d_model, REPARAM_HIDDEN, **factory)
        self.out = nn.Linear(REPARAM_HIDDEN, n_layers * width, **factory)
        nn.init.normal_(self.embedding)

    def layer(self, index: int) -> torch.Tensor:
        rows = slice(index * self.width, (index + 1) * self.width)
        return nn.functional.linear(torch.tanh(self.hidden(self.embedding)), self.out.weight[rows], self.out.bias[rows])

    def analytic_params(self) -> int:
        return 0


class HeadInsertion(Added):
    """A modification of the head outputs of one attention module.

    ``form="softmax"`` is prefix tuning: l key/value vectors per key/value head, from a shared
    ``PrefixEncoder`` while training or as plain tensors after ``freeze_prefix``. With the gated
    composition they are concatenated to the keys and values (the exact λ); otherwise
    Δh = softmax(q P_kᵀ · scaling) P_v is composed with the head outputs (``prefix_nogate`` is add).

    Other forms are multi-head adapters: Δh_i = f(q_i P_k^(i)ᵀ) P_v^(i) per query head, with the
    frozen query projection, r vectors of d_h per head in P_k and P_v (2·r·d per sub-layer).
    """

    def __init__(
        self,
        form: Any,
        composition: nn.Module | None,
        length: int,
        heads: int,
        kv_heads: int,
        head_dim: int,
        encoder: PrefixEncoder | None = None,
        index: int = 0,
        **factory: Any,
    ) -> None:
        super().__init__()
        self.prefix_form = form.kind == "prefix"
        self.f = activation_fn(form.activation)
        self.composition = composition
        self.heads, self.kv_heads, self.length, self.head_dim = heads, kv_heads, length, head_dim
        self.register_parameter("prefix", None)
        self.index = index
        object.__setattr__(self, "encoder", encoder)  # shared, owned by the model: not a child
        if not self.prefix_form:
            self.down = nn.Parameter(torch.empty(heads, length, head_dim, **factory))  # P_k
            self.up = nn.Parameter(torch.empty(heads, length, head_dim, **factory))  # P_v

    # -- prefix vectors ------------------------------------------------------------------------------
    def prefix_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """P_k, P_v of this layer, each (kv_heads, l, d_h)."""
        kv = self.prefix if self.prefix is not None else self.encoder.layer(self.index)
        kv = kv.view(self.length, 2, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)
        return kv[0], kv[1]

    def freeze_prefix(self) -> None:
        """Replace the reparameterisation by the prefix vectors it produces now (after training)."""
        if self.prefix_form and self.prefix is None:
            self.prefix = nn.Parameter(self.encoder.layer(self.index).detach().clone())
            object.__setattr__(self, "encoder", None)

    # -- the attention call --------------------------------------------------------------------------
    def attend(self, module: nn.Module, query, key, value, mask, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        if self.prefix_form and self.composition is None:
            return _heads(module, query, *self._prepend(key, value, mask), **kwargs)
        out, weights = _heads(module, query, key, value, mask, **kwargs)
        q = query.transpose(1, 2)  # (batch, positions, heads, d_h), as ``out``
        return self.composition(out, self._delta(q, kwargs.get("scaling"), kwargs.get("softcap")), q), weights

    def _prepend(self, key, value, mask):
        p_k, p_v = (p.unsqueeze(0).expand(key.shape[0], -1, -1, -1).to(key.dtype) for p in self.prefix_kv())
        if mask is not None:
            visible = torch.ones(*mask.shape[:-1], self.length, dtype=mask.dtype, device=mask.device)
            if mask.dtype != torch.bool:  # additive float mask: 0 means attend
                visible = torch.zeros_like(visible)
            mask = torch.cat([visible, mask], dim=-1)
        return torch.cat([p_k, key], dim=2), torch.cat([p_v, value], dim=2), mask

    def _delta(self, q: torch.Tensor, scaling: float | None, softcap: float | None) -> torch.Tensor:
        if self.prefix_form:
            p_k, p_v = (p.repeat_interleave(self.heads // self.kv_heads, dim=0) for p in self.prefix_kv())
            scores = torch.einsum("bnhd,hld->bnhl", q, p_k) * (scaling or 1 / math.sqrt(self.head_dim))
            if softcap is not None:  # the prefix logits are capped as the module caps its own
                scores = softcap * torch.tanh(scores / softcap)
            return torch.einsum("bnhl,hld->bnhd", scores.softmax(-1), p_v)
        return torch.einsum("bnhl,hld->bnhd", self.f(torch.einsum("bnhd,hld->bnhl", q, self.down)), self.up)

    def analytic_params(self) -> int:
        if self.prefix_form:
            return 2 * self.length * self.kv_heads * self.head_dim
        extra = self.composition.analytic_params() if self.composition is not None else 0
        return self.down.numel() + self.up.numel() + extra


def drop_reparameterization(model: nn.Module) -> nn.Module:
    """After training: keep each layer's prefix vectors as plain tensors and drop the reparameterising
    MLPs. Outputs do not change; the trainable count falls to the paper's 2·l·d per attention sub-layer."""
    for module in model.modules():
        if isinstance(module, HeadInsertion):
            module.freeze_prefix()
    for name, child in list(model.named_children()):
        if isinstance(child, PrefixEncoder):
            delattr(model, name)
    return model
