"""peft_space: the design space of parameter-efficient fine-tuning as code (He et al., 2022).

The public API (kept stable; trainers, search, dashboards and users import only this)::

    import peft_space
    peft_space.presets()                                   # names of the paper's methods
    d = peft_space.preset("pa_ffn", bottleneck=512)        # a Design
    d = peft_space.Design.from_dict(d.to_dict())           # flat, site-namespaced keys
    model = peft_space.apply(model, d); peft_space.remove(model)
    b = peft_space.count_budget(model, d)                  # .analytic .actual .pct_analytic .pct_actual
    peft_space.save(model, path); peft_space.load(model, path)

Declarations (``Design``, dimensions, sites, presets) import without torch, so a search spec can be
validated before the heavy imports; ``apply``, ``remove``, ``count_budget``, ``save`` and ``load``
import torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from peft_space.architectures import ARCHITECTURES, Architecture, register_architecture
from peft_space.design import DESIGN_FILE, Design, Modification
from peft_space.dimensions import (
    DIMENSIONS,
    Boolean,
    Categorical,
    Choice,
    Dimension,
    Float,
    Integer,
    dimension,
    register_dimension,
)
from peft_space.errors import DesignError, FieldError, Rule, rule
from peft_space.paper import Composition, Form, FormKind, Init, InsertionForm, Representation
from peft_space.presets import PRESETS, preset, presets, register_preset
from peft_space.registry import Registry
from peft_space.sites import SITES, Site, register_site

_LAZY = {
    "apply": "peft_space.inject",
    "remove": "peft_space.inject",
    "count_budget": "peft_space.budget",
    "Budget": "peft_space.budget",
    "save": "peft_space.io",
    "load": "peft_space.io",
    "drop_reparameterization": "peft_space.attention",
    "export_peft": "peft_space.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'peft_space' has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES", "Architecture", "Boolean", "Budget", "Categorical", "Choice", "Composition", "DESIGN_FILE", "DIMENSIONS",
    "Design", "DesignError", "Dimension", "FieldError", "Float", "Form", "FormKind", "Init", "InsertionForm", "Integer", "Modification", "PRESETS",
    "Registry", "Representation", "Rule", "SITES", "Site", "apply", "count_budget", "dimension", "drop_reparameterization", "export_peft", "load", "preset", "presets",
    "register_architecture", "register_dimension", "register_preset", "register_site", "remove", "rule", "save",
]
