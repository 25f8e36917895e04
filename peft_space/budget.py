"""Tuned-parameter budget: the paper's analytic count and the actual trainable count.

- ``analytic``: Appendix B's convention (weight matrices only, biases excluded; prefix tuning counted
  after its reparameterisation is dropped), summed over the modules actually inserted, from their
  shapes. For BART-large it reproduces Tables 5, 11 and 12.
- ``actual``: every trainable parameter of the modification (biases, gates and a learned scale included).
- ``pretrained``: the model's own parameters, task head excluded; the percentages divide by it.
- ``head``: trainable task-head parameters, reported separately and excluded from both counts.

Everything is read off shapes, so a model built on the meta device gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peft_space.design import Design
from peft_space.errors import DesignError
from peft_space.inject import added_modules, apply, head_modules, remove


@dataclass(frozen=True)
class Budget:
    analytic: int
    actual: int
    pretrained: int
    head: int

    @property
    def pct_analytic(self) -> float:
        return 100.0 * self.analytic / self.pretrained

    @property
    def pct_actual(self) -> float:
        return 100.0 * self.actual / self.pretrained


def count_budget(model: nn.Module, design: Design) -> Budget:
    """The budget of ``design`` on ``model``; applies it temporarily if the model carries none."""
    current = getattr(model, "peft_design", None)
    if current is None:
        apply(model, design)
        try:
            return _count(model)
        finally:
            remove(model)
    if current != design:
        raise DesignError("design", design.id, f"the design applied to this model ({current.id})")
    return _count(model)


def _count(model: nn.Module) -> Budget:
    inserted = added_modules(model)
    added = {id(p) for m in inserted for p in m.parameters()}
    head = {id(p): p for m in head_modules(model) for p in m.parameters()}
    pretrained = sum(p.numel() for p in model.parameters() if id(p) not in added and id(p) not in head)
    return Budget(
        analytic=sum(m.analytic_params() for m in inserted),
        actual=sum(p.numel() for m in inserted for p in m.parameters() if p.requires_grad),
        pretrained=pretrained,
        head=sum(p.numel() for p in head.values() if p.requires_grad),
    )
