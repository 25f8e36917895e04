"""Sites: where in a model a modification may go. A design holds at most one modification per site.

A site picks sub-layers of every transformer layer: the FFN, or attention of one or more *kinds*
(``encoder`` self-attention, ``decoder`` self-attention, ``cross``-attention). ``attn`` means every
attention sub-layer of the model, as the paper's "attn" rows do; ``enc_attn``, ``dec_attn`` and
``cross_attn`` let a design (or a search) treat the three kinds of an encoder-decoder separately.
Two sites of one design may not cover the same sub-layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft_space.registry import Registry

ATTENTION_KINDS = ("encoder", "decoder", "cross")


@dataclass(frozen=True)
class Site:
    name: str
    sublayer: str  # "attn", "ffn" or "input"
    kinds: tuple[str, ...] = ()  # attention kinds covered (attn sites only)
    help: str = ""

    def covers(self, sublayer: str, kind: str | None) -> bool:
        return sublayer == self.sublayer and (sublayer != "attn" or kind in self.kinds)

    def overlaps(self, other: "Site") -> bool:
        return self.sublayer == other.sublayer and (self.sublayer != "attn" or bool(set(self.kinds) & set(other.kinds)))


SITES: Registry[Site] = Registry("site")


def register_site(site: Site) -> Site:
    return SITES.add(site.name, site)


register_site(Site("attn", "attn", ATTENTION_KINDS, "every attention sub-layer"))
register_site(Site("enc_attn", "attn", ("encoder",), "encoder self-attention"))
register_site(Site("dec_attn", "attn", ("decoder",), "decoder self-attention (all attention of a decoder-only model)"))
register_site(Site("cross_attn", "attn", ("cross",), "decoder cross-attention"))
register_site(Site("ffn", "ffn", (), "every feed-forward sub-layer"))
register_site(Site("input", "input", (), "the (encoder's) input embeddings"))
