"""Prompt tuning (Lester et al.): l learned embeddings prepended to the input of the model's encoder side.

A forward pre-hook on the model turns ``input_ids`` into ``inputs_embeds`` with the prompt in front and
extends the attention mask (and, for causal LMs, the labels). For encoder-decoders a second hook on the
encoder covers ``generate``, which runs the encoder on its own and then passes the encoder's outputs
with the original mask: that mask is extended to the prompted length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_space.errors import DesignError
from peft_space.layers import Added


class PromptEmbedding(Added):
    def __init__(self, length: int, embeddings: nn.Embedding, **factory: Any) -> None:
        super().__init__()
        # Initialised from randomly drawn vocabulary embeddings, as Lester et al. recommend.
        rows = torch.randint(0, embeddings.weight.shape[0], (length,), device=embeddings.weight.device)
        self.prompt = nn.Parameter(embeddings.weight.detach()[rows].clone().to(**factory))
        self._handles: list[Any] = []

    def analytic_params(self) -> int:
        return self.prompt.numel()

    def hook(self, model: nn.Module) -> None:
        self._handles.append(model.register_forward_pre_hook(self._on_model, with_kwargs=True))
        if model.config.is_encoder_decoder:
            encoder = model.get_encoder()
            self._handles.append(encoder.register_forward_pre_hook(self._on_encoder, with_kwargs=True))

    def unhook(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _on_model(self, model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            kwargs["input_ids"], args = args[0], args[1:]
        if kwargs.get("encoder_outputs") is not None:
            kwargs["attention_mask"] = self._extend_to(kwargs.get("attention_mask"), kwargs["encoder_outputs"][0].shape[1])
            return args, kwargs
        if kwargs.get("cache", kwargs.get("past_key_values")) is not None:  # generate's cache, even while still empty
            raise DesignError("input.form", "prompt", "training and scoring for decoder-only models (no KV-cache generation)")
        self._prepend(model, kwargs)
        labels = kwargs.get("labels")
        if labels is not None and labels.dim() == 2 and not model.config.is_encoder_decoder:  # causal LM targets
            kwargs["labels"] = torch.cat([labels.new_full((labels.shape[0], len(self.prompt)), -100), labels], dim=1)
        return args, kwargs

    def _on_encoder(self, encoder: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            kwargs["input_ids"], args = args[0], args[1:]
        if kwargs.get("input_ids") is not None:  # not yet prompted by the model's hook
            self._prepend(encoder, kwargs)
        return args, kwargs

    def _prepend(self, model: nn.Module, kwargs: dict) -> None:
        embeds = kwargs.pop("inputs_embeds", None)
        if embeds is None:
            embeds = model.get_input_embeddings()(kwargs.pop("input_ids"))
        kwargs["input_ids"] = None
        batch = embeds.shape[0]
        kwargs["inputs_embeds"] = torch.cat([self.prompt.expand(batch, -1, -1).to(embeds.dtype), embeds], dim=1)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        kwargs["attention_mask"] = self._extend_to(mask, embeds.shape[1] + len(self.prompt))
        positions = kwargs.get("position_ids")
        if positions is not None:  # the prompt takes the first positions
            prompt_positions = torch.arange(len(self.prompt), device=positions.device).expand(positions.shape[0], -1)
            kwargs["position_ids"] = torch.cat([prompt_positions, positions + len(self.prompt)], dim=1)
        if kwargs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = torch.cat([kwargs["token_type_ids"][:, :1].expand(-1, len(self.prompt)),
                                                 kwargs["token_type_ids"]], dim=1)

    def _extend_to(self, mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
        if mask is None or mask.shape[1] == length:
            return mask
        return torch.cat([mask.new_ones(mask.shape[0], length - mask.shape[1]), mask], dim=1)
