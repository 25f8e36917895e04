"""Generation with a decoder-only language model (GPT-2, LLaMA, Qwen, Mistral, Gemma): the target continues the prompt.

A training example is one sequence, ``prompt + target + EOS``:

- the prompt is the task's format string over its input columns (``Task.prompt``; empty: the input columns, each
  followed by a blank line), or that text as the user turn of the tokenizer's chat template with the assistant turn
  opened (``Task.chat_template``); it starts with BOS once, where the tokenizer has one (a template that writes BOS
  itself is not given a second);
- the target is its text's tokens, cut to ``max_target_length - 1``, then EOS: the model learns to stop;
- a prompt longer than ``max_source_length`` loses tokens from the end of its longest input column, re-rendered
  until it fits: never from the template's own text, never from the target;
- the labels are -100 over the prompt and the padding, chosen by position: a pad token that is EOS (a tokenizer
  without one is given its EOS as pad) never hides the target's EOS; the logits at position t are scored against the
  label at t + 1 (shifted once, here; the model is not given labels).

Training batches are padded on the right; generation batches hold the prompts alone, padded on the left, so that
every row's next token comes right after its prompt and the KV cache (prefix tuning's included) serves the batch.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from peft_space import FieldError
from trainers.data import example_field
from trainers.tasks import Task


def set_pad_token(tokenizer: Any) -> None:
    """A tokenizer without a pad token pads with EOS (labels are masked by position, so the target's EOS is still
    learned); adding a new token would resize the frozen embeddings and add an untrained row to them."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise FieldError("model", tokenizer.name_or_path, "a tokenizer with a pad or an EOS token (batches are "
                                                              "padded with it)")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # training batches; generation pads its prompts on the left itself


class _Columns(string.Formatter):
    """``str.format`` whose fields are whole column names: ``{translation.en}`` is the nested field
    ``translation.en`` (``example_field``), not the attribute ``en`` of a column ``translation``."""

    def get_field(self, field_name: str, args: Any, kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        return kwargs[field_name], field_name


COLUMNS = _Columns()


class Prompter:
    """Token ids of a task's examples for a decoder-only model, within the run's length limits."""

    def __init__(self, task: Task, tokenizer: Any, max_source: int, max_target: int,
                 positions: int | None = None) -> None:
        """``positions``: how many a model with learned absolute positions has (GPT-2's ``n_positions``)."""
        self.task, self.tokenizer, self.max_source, self.max_target = task, tokenizer, max_source, max_target
        if positions is not None and max_source + max_target > positions:  # a longer sequence fails inside the model
            raise FieldError("max_source_length", max_source, f"at most {positions - max_target} with "
                                                              f"max_target_length {max_target} (the model has "
                                                              f"{positions} positions)")
        if tokenizer.eos_token_id is None:
            raise FieldError("model", tokenizer.name_or_path, "a tokenizer with an EOS token (targets end with it)")
        if task.chat_template and not getattr(tokenizer, "chat_template", None):
            raise FieldError("chat_template", True, f"false for {tokenizer.name_or_path} (its tokenizer has no chat "
                                                    "template)")

    def example(self, row: Mapping[str, Any]) -> dict[str, Any]:
        prompt = self.prompt({name: str(example_field(row, name)) for name in self.task.inputs})
        if not prompt:  # the first target token would have nothing to be predicted from
            raise FieldError("prompt", self.task.prompt, "a format string that renders to at least one token")
        reference = example_field(row, self.task.target)
        target = self.tokenizer(reference, add_special_tokens=False)["input_ids"][: self.max_target - 1]
        target.append(self.tokenizer.eos_token_id)
        return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target, "prompt": prompt,
                "reference": reference}

    def prompt(self, columns: dict[str, str]) -> list[int]:
        """The prompt's ids, its longest input column cut (by whole tokens, from its end) until they fit."""
        counts = {name: len(self._tokens(text)) for name, text in columns.items()}
        columns = {name: self._cut(text, min(counts[name], self.max_source)) for name, text in columns.items()}
        ids = self.render(columns)
        while len(ids) > self.max_source:
            name = max(columns, key=lambda n: len(self._tokens(columns[n])))
            keep = len(self._tokens(columns[name])) - max(1, len(ids) - self.max_source)
            if not columns[name]:  # the template alone is too long
                raise FieldError("max_source_length", self.max_source,
                                 f"at least {len(ids)} for task {self.task.name} (its prompt without input text)")
            columns[name] = self._cut(columns[name], max(0, keep))
            ids = self.render(columns)
        return ids

    def render(self, columns: dict[str, str]) -> list[int]:
        try:
            text = (COLUMNS.format(self.task.prompt, **columns) if self.task.prompt
                    else "".join(f"{column}\n\n" for column in columns.values()))  # each column, then a blank line
        except (KeyError, IndexError) as err:
            raise FieldError("prompt", self.task.prompt, f"a format string over the input columns "
                                                         f"{', '.join(self.task.inputs)} (unknown: {err})") from None
        if self.task.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ids if bos is None or ids[:1] == [bos] else [bos, *ids]

    def _tokens(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def _cut(self, text: str, keep: int) -> str:
        """``text`` up to the end of its ``keep``-th token."""
        offsets = self._tokens(text)
        return text if keep >= len(offsets) else text[: offsets[keep - 1][1]] if keep else ""


def collate(examples: list[dict[str, Any]], pad: int) -> dict[str, torch.Tensor]:
    """Prompt + target sequences padded on the right; labels -100 on the prompt and the padding."""
    width = max(len(e["input_ids"]) for e in examples)
    rows = [(e["input_ids"], e["labels"], width - len(e["input_ids"])) for e in examples]
    return {"input_ids": torch.tensor([ids + [pad] * n for ids, _, n in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * n for ids, _, n in rows]),
            "labels": torch.tensor([labels + [-100] * n for _, labels, n in rows])}


def prompts(examples: list[dict[str, Any]], pad: int) -> dict[str, torch.Tensor]:
    """The prompts alone, padded on the left: a batch for ``generate``."""
    width = max(len(e["prompt"]) for e in examples)
    return {"input_ids": torch.tensor([[pad] * (width - len(e["prompt"])) + e["prompt"] for e in examples]),
            "attention_mask": torch.tensor([[0] * (width - len(e["prompt"])) + [1] * len(e["prompt"])
                                            for e in examples])}


def loss(model: nn.Module, batch: dict[str, torch.Tensor], smoothing: float,
         autocast: Callable[[], Any]) -> torch.Tensor:
    """Mean cross-entropy of the target tokens: the logits at t against the label at t + 1."""
    with autocast():  # no KV cache: nothing is generated after this pass
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logits = logits.float()
    labels = batch["labels"][:, 1:]
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=-100, label_smoothing=smoothing)
