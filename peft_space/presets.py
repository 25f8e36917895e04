"""The paper's methods as points of the space (Table 1, Tables 3–6; sizes as used with BART-large).

``preset(name, **overrides)`` returns a ``Design``. Overrides use plain dimension names for one-site
presets (``bottleneck=512``) and site-namespaced names for any preset (``"ffn.scale": 2.0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peft_space.design import Design
from peft_space.errors import DesignError
from peft_space.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    sites: Mapping[str, Mapping[str, Any]]


PRESETS: Registry[Preset] = Registry("preset")


def register_preset(name: str, help: str, **sites: Mapping[str, Any]) -> Preset:
    Design(sites)  # a preset must be a valid point
    return PRESETS.add(name, Preset(name, help, sites))


def presets() -> list[str]:
    return list(PRESETS)


def preset(name: str, **overrides: Any) -> Design:
    spec = PRESETS[name]
    sites: dict[str, dict[str, Any]] = {site: {} for site in spec.sites}
    for key, value in overrides.items():
        site, dot, dim = key.partition(".")
        if not dot:
            if len(spec.sites) != 1:
                namespaced = ", ".join(f"'{s}.{key}'" for s in spec.sites)
                raise DesignError(key, value, f"site-namespaced keys for multi-site preset {name}: {namespaced}")
            site, dim = next(iter(spec.sites)), key
        sites.setdefault(site, {})[dim] = value
    return Design(sites, defaults=spec.sites)


ADAPTER = {"form": "relu", "insertion": "sequential", "composition": "add", "init": "bert"}
PA = {"form": "relu", "insertion": "parallel", "composition": "add", "init": "bert"}
SCALED_PA = {"form": "relu", "insertion": "parallel", "composition": "scaled", "scale": 4.0, "init": "lora"}
LORA = {"form": "linear", "insertion": "parallel", "composition": "scaled", "scale": 4.0, "init": "lora"}

register_preset(
    "bitfit",
    "BitFit: tune the biases of every attention and FFN projection",
    attn={"form": "bias", "representation": "attn_linears"},
    ffn={"form": "bias", "representation": "ffn_w1_w2"},
)
register_preset("adapter_attn", "sequential adapter at attention", attn={**ADAPTER, "bottleneck": 200})
register_preset("adapter_ffn", "sequential adapter at FFN", ffn={**ADAPTER, "bottleneck": 200})
register_preset(
    "houlsby", "Houlsby adapters: sequential at attention and FFN", attn={**ADAPTER, "bottleneck": 200},
    ffn={**ADAPTER, "bottleneck": 200},
)
register_preset(
    "pfeiffer", "Pfeiffer adapter: after the FFN's add & layer norm",
    ffn={**ADAPTER, "representation": "block", "bottleneck": 600},
)
register_preset("lora_attn", "LoRA on query and value", attn={**LORA, "representation": "query_value", "bottleneck": 200})
register_preset("lora_ffn", "LoRA on FFN W1 and W2", ffn={**LORA, "representation": "ffn_w1_w2", "bottleneck": 102})
register_preset("pa_attn", "parallel adapter at attention", attn={**PA, "bottleneck": 200})
register_preset("pa_ffn", "parallel adapter at FFN", ffn={**PA, "bottleneck": 512})
register_preset("scaled_pa_ffn", "scaled parallel adapter at FFN (s=4, LoRA init)", ffn={**SCALED_PA, "bottleneck": 512})
register_preset(
    "scaled_pa_ffn_learned", "scaled parallel adapter at FFN with a trainable s",
    ffn={**SCALED_PA, "learn_scale": True, "bottleneck": 512},
)
register_preset(
    "gated_pa_ffn", "parallel adapter at FFN with a learned sigmoid gate",
    ffn={**PA, "composition": "gated", "init": "lora", "bottleneck": 512},
)
register_preset(
    "pa_attn_pa_ffn", "PA (attn, r=30) + PA (ffn, r=512)", attn={**PA, "bottleneck": 30}, ffn={**PA, "bottleneck": 512}
)

PREFIX_TUNING = {"form": "softmax", "representation": "head", "composition": "gated"}
register_preset("prefix", "prefix tuning (Li & Liang), exact gate", attn={**PREFIX_TUNING, "bottleneck": 200})
register_preset("prefix_nogate", "prefix tuning without the gate, h + Δh (Table 4)", attn={**PREFIX_TUNING, "composition": "add", "bottleneck": 30})
register_preset("mh_pa_attn", "multi-head parallel adapter (Table 4)", attn={**PA, "representation": "head", "bottleneck": 200})
register_preset("prompt_tuning", "prompt tuning (Lester et al.): l input embeddings", input={"form": "prompt", "bottleneck": 100})
register_preset(
    "prefix_lora_ffn", "prefix tuning (attn, l=30) + LoRA (ffn, r=102)", attn={**PREFIX_TUNING, "bottleneck": 30},
    ffn={**LORA, "representation": "ffn_w1_w2", "bottleneck": 102},
)
register_preset(
    "mam", "MAM adapter: prefix tuning (attn, l=30) + scaled parallel adapter (ffn, r=512, s=4, LoRA init)",
    attn={**PREFIX_TUNING, "bottleneck": 30}, ffn={**SCALED_PA, "bottleneck": 512},
)
