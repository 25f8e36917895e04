"""The paper's design space (He et al., Table 1 and §3.2) declared as dimensions.

Each value below is a small declaration; its behaviour (the torch modules) lives in
``peft_space.layers`` and is looked up lazily, so this module stays importable without torch.

======================  =====================================================================
dimension               paper
======================  =====================================================================
``form``                functional form: ``linear`` (LoRA), ``relu``/``gelu`` (adapters),
                        ``softmax`` over prefix vectors (prefix tuning), ``prompt`` (prompt
                        tuning, at the ``input`` site), ``bias`` (BitFit: a learned shift of
                        existing biases)
``insertion``           ``sequential`` (input h) or ``parallel`` (input x, the sub-layer input)
``representation``      modified representation: ``head`` (attention head outputs), ``attn`` /
                        ``ffn`` sub-layer output, ``block`` (after the FFN's add & layer norm,
                        Pfeiffer), ``query``, ``key``, ``value``, ``query_value`` (LoRA),
                        ``attn_linears``, ``ffn_w1``, ``ffn_w2``, ``ffn_w1_w2``, ``embeddings``
``composition``         ``add``, ``scaled`` (h + s·Δh), ``gated`` ((1-λ)h + λΔh: prefix
                        tuning's exact λ(x) for softmax, λ = σ(x·w) for other forms)
``scale``               s of the scaled composition; ``learn_scale`` makes it trainable
``bottleneck``          r (or l for prefix and prompt forms)
``init``                ``lora`` (Kaiming-uniform down, zero up) or ``bert`` (normal(0, 0.02))
======================  =====================================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from peft_space.dimensions import Boolean, Categorical, Choice, Float, Integer, Values, register_dimension
from peft_space.errors import DesignError
from peft_space.sites import SITES


def lazy(module: str, name: str) -> Callable[..., Any]:
    """A callable that imports ``module.name`` on first use (keeps torch out of spec validation)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = f"{module}.{name}"
    return call


FormKind = Literal["bottleneck", "prefix", "prompt", "bias"]  # how a functional form is built (``Form``)


@dataclass(frozen=True)
class Form(Choice):
    """Functional form of Δh. ``kind`` says how it is built:

    - ``bottleneck``: f(x W_down) W_up with ``activation`` f (a ``torch`` function name, a callable, or
      ``None`` for linear); inserted by hooks, or per head inside attention (``representation="head"``);
    - ``prefix``: softmax(x W_q P_kᵀ) P_v over l prefix vectors, inside attention (prefix tuning);
    - ``prompt``: l input embeddings prepended to the (encoder's) input (prompt tuning);
    - ``bias``: a learned shift of the existing biases (BitFit).
    """

    activation: str | Callable[[Any], Any] | None = None
    kind: FormKind = "bottleneck"

    def __post_init__(self) -> None:  # a user's form of another kind would be built as none of them, silently
        if self.kind not in get_args(FormKind):
            kinds = ", ".join(map(repr, get_args(FormKind)))
            raise DesignError(f"form {self.name!r} kind", self.kind, f"one of {kinds}")

    @property
    def sized(self) -> bool:  # has a bottleneck size r or l
        return self.kind != "bias"

    @property
    def composed(self) -> bool:  # has an insertion form and a composition function
        return self.kind in ("bottleneck", "prefix")


@dataclass(frozen=True)
class InsertionForm(Choice):
    parallel: bool = True


@dataclass(frozen=True)
class Representation(Choice):
    """Which hidden state is modified. ``taps`` are (x role, h role) pairs of the architecture table:
    Δh is computed from the *input* of the x module (parallel) and added to the *output* of the h module."""

    sublayer: str = "attn"
    taps: tuple[tuple[str, str], ...] = ()
    inside_attention: bool = False  # modifies head outputs through the attention function


@dataclass(frozen=True)
class Composition(Choice):
    """How Δh joins h. ``build(d_in, values)`` returns the module computing ``(h, Δh, x) -> h'``."""

    build: Callable[..., Any] | None = None


@dataclass(frozen=True)
class Init(Choice):
    """``apply(delta_module)`` initialises the projections of a freshly built Δh module."""

    apply: Callable[..., Any] | None = None


def _form(values: Values) -> Form:
    return FORM[values["form"]]


def _sublayer(values: Values) -> str:
    return SITES[values["site"]].sublayer


def _form_fits_site(form: Form, values: Values) -> str | None:
    sublayer = _sublayer(values)
    if (form.kind == "prompt") != (sublayer == "input"):
        return "'prompt' at the input site, any other form elsewhere"
    if form.kind == "prefix" and sublayer != "attn":
        return "'softmax' only at attention sites (prefix vectors extend the keys and values)"
    return None


def _representation_fits(rep: Representation, values: Values) -> str | None:
    sublayer, form = _sublayer(values), _form(values)
    if rep.sublayer != sublayer:
        return f"a {sublayer} representation at site {values['site']!r}: " + ", ".join(
            repr(k) for k in REPRESENTATION if REPRESENTATION[k].sublayer == sublayer
        )
    if form.kind == "prefix" and not rep.inside_attention:
        return "'head' for the softmax form (prefix vectors modify the head outputs)"
    if rep.inside_attention and not form.composed:
        return f"another representation: 'head' takes bottleneck and softmax forms, not {form.name!r}"
    if rep.inside_attention and values.get("insertion") == "sequential":
        return "another representation: 'head' takes parallel insertion only (Δh from x W_q)"
    return None


def _insertion_fits(insertion: InsertionForm, values: Values) -> str | None:
    if _form(values).kind == "prefix" and not insertion.parallel:
        return "'parallel' for the softmax form (prefix tuning computes Δh from x)"
    return None


FORM: Categorical[Form] = Categorical(
    "form",
    help="functional form of the modification Δh",
    default=lambda values: "prompt" if _sublayer(values) == "input" else "relu",
    check=_form_fits_site,
    optional=True,
)
INSERTION: Categorical[InsertionForm] = Categorical(
    "insertion",
    help="sequential (Δh from h) or parallel (Δh from the sub-layer input x)",
    default="parallel",
    active=lambda values: _form(values).composed,
    active_doc="for bottleneck and softmax forms",
    check=_insertion_fits,
)
REPRESENTATION: Categorical[Representation] = Categorical(
    "representation",
    help="the hidden state that is modified",
    default=lambda values: next(k for k in REPRESENTATION if REPRESENTATION[k].sublayer == _sublayer(values)),
    check=_representation_fits,
)
COMPOSITION: Categorical[Composition] = Categorical(
    "composition",
    help="how Δh is composed with h",
    default=lambda values: "gated" if _form(values).kind == "prefix" else "add",
    active=lambda values: _form(values).composed,
    active_doc="for bottleneck and softmax forms",
)
SCALE = Float(
    "scale",
    help="s in h + s·Δh (the initial value if learn_scale)",
    low=0.01,
    high=100.0,
    log=True,
    search=(0.5, 8.0),
    default=4.0,
    active=lambda values: values.get("composition") == "scaled",
    active_doc="with composition='scaled'",
)
LEARN_SCALE = Boolean(
    "learn_scale",
    help="train s as a parameter",
    default=False,
    active=lambda values: values.get("composition") == "scaled",
    active_doc="with composition='scaled'",
)
BOTTLENECK = Integer(
    "bottleneck",
    help="bottleneck size r (l for prefix-like forms)",
    low=1,
    high=65536,
    log=True,
    search=(1, 512),
    default=64,
    active=lambda values: _form(values).sized,
    active_doc="for forms with a size",
)
INIT: Categorical[Init] = Categorical(
    "init",
    help="initialisation of the projections",
    default="lora",
    active=lambda values: _form(values).kind == "bottleneck",
    active_doc="for bottleneck forms",
)

for _dimension in (FORM, INSERTION, REPRESENTATION, COMPOSITION, SCALE, LEARN_SCALE, BOTTLENECK, INIT):
    register_dimension(_dimension)

FORM.register(Form("linear", "x W_down W_up (LoRA)", activation=None))
FORM.register(Form("relu", "ReLU(x W_down) W_up (adapters)", activation="relu"))
FORM.register(Form("gelu", "GELU(x W_down) W_up", activation="gelu"))
FORM.register(Form("softmax", "softmax(x W_q P_kᵀ) P_v over l prefix vectors (prefix tuning)", kind="prefix"))
FORM.register(Form("prompt", "l input embeddings prepended to the input (prompt tuning)", kind="prompt"))
FORM.register(Form("bias", "a learned shift of the existing biases (BitFit)", kind="bias"))

INSERTION.register(InsertionForm("sequential", "h <- h + Δh(h)", parallel=False))
INSERTION.register(InsertionForm("parallel", "h <- h + Δh(x)", parallel=True))

ATTN, FFN = "attn", "ffn"
for _rep in (
    Representation("embeddings", "the input embeddings (prompt tuning)", "input", (("embed", "embed"),)),
    Representation("attn", "attention sub-layer output", ATTN, (("q", "out"),)),
    Representation("head", "attention head outputs (multi-head)", ATTN, (("heads", "heads"),), inside_attention=True),
    Representation("query", "query projection", ATTN, (("q", "q"),)),
    Representation("key", "key projection", ATTN, (("k", "k"),)),
    Representation("value", "value projection", ATTN, (("v", "v"),)),
    Representation("query_value", "query and value projections (LoRA)", ATTN, (("q", "q"), ("v", "v"))),
    Representation("attn_linears", "every attention projection q, k, v, o", ATTN, tuple((r, r) for r in "qkvo")),
    Representation("ffn", "FFN sub-layer output", FFN, (("w1", "out"),)),
    Representation("block", "block output after the FFN's add & layer norm (Pfeiffer)", FFN, (("w1", "block"),)),
    Representation("ffn_w1", "FFN W1", FFN, (("w1", "w1"),)),
    Representation("ffn_w2", "FFN W2", FFN, (("w2", "w2"),)),
    Representation("ffn_w1_w2", "FFN W1 and W2", FFN, (("w1", "w1"), ("w2", "w2"))),
):
    REPRESENTATION.register(_rep)

COMPOSITION.register(Composition("add", "h + Δh", build=lazy("peft_space.layers", "Add")))
COMPOSITION.register(Composition("scaled", "h + s·Δh", build=lazy("peft_space.layers", "Scaled")))
COMPOSITION.register(
    Composition("gated", "(1-λ)h + λΔh: prefix tuning's exact λ(x) for softmax, σ(x·w) otherwise",
                build=lazy("peft_space.layers", "Gated"))
)

INIT.register(Init("lora", "Kaiming-uniform down, zero up", apply=lazy("peft_space.layers", "init_lora")))
INIT.register(Init("bert", "normal(0, 0.02) down and up", apply=lazy("peft_space.layers", "init_bert")))
