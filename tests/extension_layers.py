"""A user's own module adding a whole new dimension: which layers get a modification (as AutoPEFT searches).

Nothing in peft_space is edited: the dimension's ``select`` hook filters the insertion points.
"""

from dataclasses import dataclass

from peft_space import Categorical, Choice, register_dimension


@dataclass(frozen=True)
class LayerSet(Choice):
    upper: bool | None = None  # None: every layer


def _keep(value: str, target) -> bool:
    wanted = LAYERS[value].upper
    return wanted is None or (target.layer >= target.n_layers // 2) == wanted


LAYERS = Categorical("layers", help="which layers receive the modification", default="all", select=_keep)
LAYERS.register(LayerSet("all", "every layer"))
LAYERS.register(LayerSet("upper", "the upper half", upper=True))
LAYERS.register(LayerSet("lower", "the lower half", upper=False))
register_dimension(LAYERS)
