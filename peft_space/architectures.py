"""Where the roles of the unified view live in each transformers architecture.

One entry per architecture; adding one is one ``register_architecture`` call. Paths are relative to
one transformer layer. Roles:

=========  ===================================================================================
``q``      query projection (its input is the attention input x; also the query-side input of
           cross-attention)
``k/v``    key / value projection
``o``      output projection
``w1``     first FFN matrix(es), d -> d_m (its input is the FFN input x)
``w2``     second FFN matrix, d_m -> d
``out``    the sub-layer output h as the residual adds it: o's (attention) or w2's (FFN) output,
           unless a norm follows them (Gemma's sandwich norms: post_attention/feedforward_layernorm)
``block``  the layer norm after the FFN's residual add (post-LN models only: Pfeiffer's position)
=========  ===================================================================================

``"attn.c_attn:1/3"`` names the second third of a fused projection's output (GPT-2's q|k|v).

==========  =================================  ==============================  ==================
arch        attention q, k, v, o                FFN W1 / W2                     layer norm
==========  =================================  ==============================  ==================
bert        attention.self.query/key/value,    intermediate.dense /            post-LN
(roberta)   attention.output.dense              output.dense
bart        self_attn.q/k/v/out_proj,          fc1 / fc2                       post-LN
            encoder_attn.* (cross)
mbart       as bart                            fc1 / fc2                       pre-LN
gpt2        attn.c_attn thirds, attn.c_proj    mlp.c_fc / mlp.c_proj           pre-LN
llama       self_attn.q/k/v/o_proj (GQA)       gate_proj and up_proj (both     pre-LN (RMSNorm)
(mistral,                                      d -> d_m) / down_proj
qwen2,
qwen3)
gemma2      as llama                           as llama                        pre- and post-
(gemma3)                                                                       sub-layer RMSNorms
==========  =================================  ==============================  ==================

For LLaMA's gated FFN, down(act(gate(x)) * up(x)), "W1" means both d -> d_m matrices (gate_proj and
up_proj), so LoRA on W1 adapts both; "W2" is down_proj. ``EncoderDecoderModel`` (BERT2BERT) is composed
from the entries of its encoder and decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from peft_space.registry import Registry

Roles = Mapping[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]
    stacks: Mapping[str, str]  # dotted suffix of a ModuleList of layers -> its self-attention kind
    attention: Mapping[str, Roles]  # "self" / "cross" -> roles q, k, v, o
    ffn: Roles  # roles w1, w2 and (post-LN) block
    post_ln: bool
    heads: tuple[str, ...] = ()  # task-head modules: trainable, outside the budget
    help: str = ""


@dataclass
class Target:
    """One sub-layer of one layer that a site may modify."""

    sublayer: str  # "attn" | "ffn"
    kind: str | None  # attention kind: "encoder" | "decoder" | "cross"; None for FFN
    layer: int
    n_layers: int
    path: str  # dotted path of the layer module
    module: Any  # the layer module
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    post_ln: bool = True

    def modules(self, role: str) -> tuple[str, ...]:
        """Module specs for a role; a missing role is a representation this architecture lacks."""
        return self.roles.get(role, ())


ARCHITECTURES: Registry[Architecture] = Registry("model_type", "add one with register_architecture")


def register_architecture(arch: Architecture) -> Architecture:
    for model_type in arch.model_types:
        ARCHITECTURES.add(model_type, arch)
    return arch


def architecture(model_type: str) -> Architecture:
    return ARCHITECTURES[model_type]


def find_targets(model: Any) -> list[Target]:
    """Every attention and FFN sub-layer of ``model`` in module order, then its input."""
    config = model.config
    if config.model_type == "encoder-decoder":
        return _stack_targets(model.encoder, architecture(config.encoder.model_type), "encoder.", "encoder") + (
            _stack_targets(model.decoder, architecture(config.decoder.model_type), "decoder.", "decoder")
        ) + [_input_target(model)]
    return _stack_targets(model, architecture(config.model_type), "", None) + [_input_target(model)]


def architecture_of(model: Any) -> list[Architecture]:
    config = model.config
    if config.model_type == "encoder-decoder":
        return [architecture(config.encoder.model_type), architecture(config.decoder.model_type)]
    return [architecture(config.model_type)]


def _as_roles(roles: Roles) -> dict[str, tuple[str, ...]]:
    return {role: (paths,) if isinstance(paths, str) else tuple(paths) for role, paths in roles.items()}


def _has(layer: Any, spec: str) -> bool:
    try:
        layer.get_submodule(spec.split(":")[0])
        return True
    except AttributeError:
        return False


def _stack_targets(root: Any, arch: Architecture, prefix: str, force_kind: str | None) -> list[Target]:
    targets: list[Target] = []
    for name, module in root.named_modules():
        suffix = next((s for s in arch.stacks if name == s or name.endswith("." + s)), None)
        if suffix is None:
            continue
        self_kind = force_kind or arch.stacks[suffix]
        for i, layer in enumerate(module):
            path = f"{prefix}{name}.{i}"
            for which, roles in arch.attention.items():
                roles = _as_roles(roles)
                if _has(layer, roles["q"][0]):
                    kind = self_kind if which == "self" else which
                    roles = {"out": roles["o"], **roles}
                    targets.append(Target("attn", kind, i, len(module), path, layer, roles, arch.post_ln))
            ffn = _as_roles(arch.ffn)
            targets.append(Target("ffn", None, i, len(module), path, layer, {"out": ffn["w2"], **ffn}, arch.post_ln))
    return targets


def _input_target(model: Any) -> Target:
    """The model's (encoder's) input embeddings: where prompt tuning prepends its vectors."""
    return Target("input", None, 0, 1, "", model, {"embed": ("",)})


def _proj(base: str, names: str, heads: str) -> dict[str, str]:
    """Roles of one attention module: q, k, v, o projections and ``heads``, the module that calls the
    attention function (whose head outputs prefix tuning and multi-head adapters modify)."""
    return {"heads": heads} | {role: f"{base}{name}" for role, name in zip("qkvo", names.split())}


BERT = register_architecture(
    Architecture(
        "bert",
        ("bert", "roberta"),
        stacks={"encoder.layer": "encoder"},
        attention={
            "self": _proj("attention.", "self.query self.key self.value output.dense", "attention.self"),
            "cross": _proj("crossattention.", "self.query self.key self.value output.dense", "crossattention.self"),
        },
        ffn={"w1": "intermediate.dense", "w2": "output.dense", "block": "output.LayerNorm"},
        post_ln=True,
        heads=("classifier", "qa_outputs"),
        help="BERT / RoBERTa encoders; the decoder of a BERT2BERT EncoderDecoderModel",
    )
)
BART = register_architecture(
    Architecture(
        "bart",
        ("bart",),
        stacks={"encoder.layers": "encoder", "decoder.layers": "decoder"},
        attention={
            "self": _proj("self_attn.", "q_proj k_proj v_proj out_proj", "self_attn"),
            "cross": _proj("encoder_attn.", "q_proj k_proj v_proj out_proj", "encoder_attn"),
        },
        ffn={"w1": "fc1", "w2": "fc2", "block": "final_layer_norm"},
        post_ln=True,
        heads=("classification_head", "qa_outputs"),
        help="BART (post-LN encoder-decoder)",
    )
)
register_architecture(
    replace(BART, name="mbart", model_types=("mbart",), ffn={"w1": "fc1", "w2": "fc2"}, post_ln=False, help="mBART (pre-LN)")
)
register_architecture(
    Architecture(
        "gpt2",
        ("gpt2",),
        stacks={"h": "decoder"},
        attention={"self": {"q": "attn.c_attn:0/3", "k": "attn.c_attn:1/3", "v": "attn.c_attn:2/3", "o": "attn.c_proj",
                            "heads": "attn"}},
        ffn={"w1": "mlp.c_fc", "w2": "mlp.c_proj"},
        post_ln=False,
        heads=("score",),
        help="GPT-2 (pre-LN decoder, fused q|k|v Conv1D)",
    )
)
LLAMA = register_architecture(
    Architecture(
        "llama",
        ("llama",),
        stacks={"layers": "decoder"},
        attention={"self": _proj("self_attn.", "q_proj k_proj v_proj o_proj", "self_attn")},
        ffn={"w1": ("mlp.gate_proj", "mlp.up_proj"), "w2": "mlp.down_proj"},
        post_ln=False,
        heads=("score",),
        help="LLaMA family (pre-RMSNorm, no biases, gated FFN, grouped-query attention)",
    )
)
# The same module paths; each family under its own name, so a refusal names the model it refuses.
for _name, _help in (("mistral", "Mistral (LLaMA's layout, sliding-window attention)"),
                     ("qwen2", "Qwen2 / Qwen2.5 (LLaMA's layout, biased q, k, v)"),
                     ("qwen3", "Qwen3 (LLaMA's layout, RMSNorm on queries and keys)")):
    register_architecture(replace(LLAMA, name=_name, model_types=(_name,), help=_help))
# Gemma's sandwich norms: each sub-layer's output is normalised before the residual adds it, so that norm's output is h.
GEMMA2 = register_architecture(
    replace(
        LLAMA, name="gemma2", model_types=("gemma2",),
        attention={"self": {**LLAMA.attention["self"], "out": "post_attention_layernorm"}},
        ffn={**LLAMA.ffn, "out": "post_feedforward_layernorm"},
        help="Gemma 2 (sandwich RMSNorms, attention logit soft-capping, sliding-window layers)",
    )
)
register_architecture(
    replace(GEMMA2, name="gemma3", model_types=("gemma3_text",), help="Gemma 3 text (Gemma 2's layout, q/k norms)")
)
