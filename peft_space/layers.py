"""The torch modules a design inserts: Δh functions, composition functions and initialisations.

Every module reports ``analytic_params()``: its count under the paper's convention (Appendix B:
weight matrices, biases excluded), computed from its own tensor shapes, so the budget is derived from
what was actually inserted and works on the meta device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Activation = str | Callable[[torch.Tensor], torch.Tensor] | None


class Added(nn.Module):
    """Base of every module a design adds to a model (found by ``apply``, ``remove`` and the budget)."""

    def analytic_params(self) -> int:
        raise NotImplementedError


def activation_fn(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    if activation is None:
        return lambda x: x
    if callable(activation):
        return activation
    return getattr(torch.nn.functional, activation, None) or getattr(torch, activation)


class Bottleneck(nn.Module):
    """Δh = f(x W_down) W_up — adapters (f nonlinear, with biases) and LoRA (f identity, no biases)."""

    def __init__(self, d_in: int, d_out: int, bottleneck: int, activation: Activation, **factory: Any) -> None:
        super().__init__()
        bias = activation is not None
        self.down = nn.Linear(d_in, bottleneck, bias=bias, **factory)
        self.up = nn.Linear(bottleneck, d_out, bias=bias, **factory)
        self.f = activation_fn(activation)
        for linear in (self.down, self.up):
            if bias:
                nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.f(self.down(x)))

    def analytic_params(self) -> int:
        return self.down.weight.numel() + self.up.weight.numel()


class BiasShift(nn.Module):
    """Δh = b: training b is training the modified module's existing bias (BitFit), without touching it."""

    def __init__(self, d_out: int, **factory: Any) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(d_out, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias

    def analytic_params(self) -> int:
        return self.bias.numel()


class Add(nn.Module):
    """h <- h + Δh"""

    def __init__(self, d_gate: int, values: dict[str, Any], **factory: Any) -> None:
        super().__init__()

    def forward(self, h: torch.Tensor, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return h + delta

    def analytic_params(self) -> int:
        return 0


class Scaled(nn.Module):
    """h <- h + s·Δh, s fixed (LoRA, scaled PA) or trainable (``learn_scale``)."""

    def __init__(self, d_gate: int, values: dict[str, Any], **factory: Any) -> None:
        super().__init__()
        scale = torch.tensor(float(values["scale"]), **factory)
        if values.get("learn_scale"):
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def forward(self, h: torch.Tensor, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return h + self.scale * delta

    def analytic_params(self) -> int:
        return self.scale.numel() if isinstance(self.scale, nn.Parameter) else 0


class Gated(nn.Module):
    """h <- (1 - λ(x))·h + λ(x)·Δh with a learned gate λ(x) = σ(x·w): one scalar per position
    (``d_gate`` an int), or per position and head (``d_gate`` = (heads, head_dim))."""

    def __init__(self, d_gate: int | tuple[int, ...], values: dict[str, Any], **factory: Any) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d_gate, **factory))

    def forward(self, h: torch.Tensor, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid((x * self.w).sum(-1, keepdim=True))
        return (1 - gate) * h + gate * delta

    def analytic_params(self) -> int:
        return self.w.numel()


def init_lora(down: torch.Tensor, up: torch.Tensor) -> None:
    """LoRA init (Hu et al.): W_down Kaiming-uniform with a=√5 as nn.Linear and HF peft do, i.e.
    U(±1/√fan_in) with fan_in the last axis; W_up zero, so Δh = 0 at the start."""
    bound = 1 / math.sqrt(down.shape[-1])
    nn.init.uniform_(down, -bound, bound)
    nn.init.zeros_(up)


def init_bert(down: torch.Tensor, up: torch.Tensor) -> None:
    """BERT init (Houlsby adapters): both projections normal(0, 0.02)."""
    nn.init.normal_(down, std=0.02)
    nn.init.normal_(up, std=0.02)


class Insertion(Added):
    """One modification at one tap: Δh from x (parallel) or h (sequential), composed into h.

    It is attached as a child of the module whose output is h and driven by hooks: a pre-hook on the
    x module remembers its input, a forward hook on the h module rewrites its output. ``out_slice``
    restricts h to part of a fused projection (GPT-2's q|k|v).
    """

    def __init__(self, delta: nn.Module, composition: nn.Module, parallel: bool, out_slice: slice | None) -> None:
        super().__init__()
        self.delta = delta
        self.composition = composition
        self.parallel = parallel
        self.out_slice = out_slice
        self._x: torch.Tensor | None = None
        self._handles: list[Any] = []

    def hook(self, x_module: nn.Module, h_module: nn.Module) -> None:
        if self.parallel:
            self._handles.append(x_module.register_forward_pre_hook(self._remember_input))
        self._handles.append(h_module.register_forward_hook(self._modify_output))

    def unhook(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _remember_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._x = args[0]

    def _modify_output(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if self.out_slice is None:
            return self._compose(output)
        s = self.out_slice
        return torch.cat([output[..., : s.start], self._compose(output[..., s]), output[..., s.stop :]], dim=-1)

    def _compose(self, h: torch.Tensor) -> torch.Tensor:
        x, self._x = (self._x, None) if self.parallel else (h, None)
        return self.composition(h, self.delta(x), x)

    def analytic_params(self) -> int:
        return self.delta.analytic_params() + self.composition.analytic_params()
