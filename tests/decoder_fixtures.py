"""Tiny decoder-only language models saved as a user's hub checkpoint would be (issue 26): random weights, a
byte-level BPE tokenizer trained here, loaded back through ``from_pretrained`` on the folder.

The tokenizer is the kind decoder-only checkpoints ship (LLaMA, Qwen, GPT-2): byte-level BPE, a BOS token the
tokenizer itself prepends, an EOS token, *no pad token*, and a chat template. A WordPiece tokenizer (MiniLM's) would
hide the pad / EOS / BOS handling that the causal-LM path has to get right.

    tokenizer = byte_bpe_tokenizer()
    path = save_tiny_decoder(tmp_path / "llama")                  # or family="gpt2", hidden_size=48, ...
    trainers.train(task, design, model=str(path), ...)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers as T

BOS, EOS, USER, ASSISTANT = "<s>", "</s>", "<|user|>", "<|assistant|>"
# in the vocabulary as in Qwen's: transformers' Qwen2Tokenizer (which AutoTokenizer picks for a qwen2 config)
# makes it the pad token, so that family loads with a pad token and the others without one
QWEN_PAD = "<|endoftext|>"
VOCAB = 384  # 256 byte symbols, the special tokens, ~120 merges
# user turn, then the assistant turn closed by EOS; BOS once, by the template (the tokenizer adds it to plain text)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "\n{{ message['content'] }}\n"
    "{% else %}" + ASSISTANT + "\n{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "\n{% endif %}"
)
CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "summarise the story in one short sentence please",
    "a quick brown fox jumps over the lazy dog near the river bank",
    "translate english to french: the house is blue and the sky is grey",
    "positive negative neutral review of the film was great, the plot was dull",
    "numbers one two three four five six seven eight nine ten",
    "Answer: yes. Answer: no. Question: is it raining today?",
]


@functools.lru_cache(maxsize=1)
def _trained() -> str:
    """The tokenizer trained once per process (the same merges every time: the corpus and trainer are fixed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[BOS, EOS, USER, ASSISTANT, QWEN_PAD],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    bos = tokenizer.token_to_id(BOS)
    # as LLaMA's tokenizer does: BOS before every text (the chat template writes its own; not to be doubled)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                             special_tokens=[(BOS, bos)])
    return tokenizer.to_str()


def byte_bpe_tokenizer() -> T.PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer with BOS and EOS, no pad token, and a user / assistant chat template."""
    from tokenizers import Tokenizer

    tokenizer = T.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_trained()), bos_token=BOS,
                                          eos_token=EOS, additional_special_tokens=[USER, ASSISTANT])
    tokenizer.chat_template = CHAT_TEMPLATE
    assert tokenizer.pad_token is None
    return tokenizer


def _llama(**kw: Any) -> T.PretrainedConfig:
    return T.LlamaConfig(**{"num_key_value_heads": 2, **kw})


def _gpt2(hidden_size: int, num_hidden_layers: int, num_attention_heads: int, intermediate_size: int,
          max_position_embeddings: int, **kw: Any) -> T.PretrainedConfig:
    return T.GPT2Config(n_embd=hidden_size, n_layer=num_hidden_layers, n_head=num_attention_heads,
                        n_inner=intermediate_size, n_positions=max_position_embeddings, **kw)


def _qwen2(**kw: Any) -> T.PretrainedConfig:
    return T.Qwen2Config(**{"num_key_value_heads": 2, **kw})


def _qwen3(**kw: Any) -> T.PretrainedConfig:
    return T.Qwen3Config(**{"num_key_value_heads": 2, "head_dim": kw["hidden_size"] // kw["num_attention_heads"], **kw})


def _mistral(**kw: Any) -> T.PretrainedConfig:
    return T.MistralConfig(**{"num_key_value_heads": 2, "sliding_window": 16, **kw})


def _gemma2(**kw: Any) -> T.PretrainedConfig:
    return T.Gemma2Config(**{"num_key_value_heads": 2, "head_dim": kw["hidden_size"] // kw["num_attention_heads"],
                             "sliding_window": 16, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                             **kw})


# family -> its config from the common sizes (plus any family-specific keyword); one line adds a family
FAMILIES: dict[str, Callable[..., T.PretrainedConfig]] = {
    "llama": _llama, "gpt2": _gpt2, "qwen2": _qwen2, "qwen3": _qwen3, "mistral": _mistral, "gemma2": _gemma2,
}
SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 256}


def tiny_decoder_config(family: str = "llama", **config: Any) -> T.PretrainedConfig:
    """The config of a tiny ``family`` model over ``byte_bpe_tokenizer``'s vocabulary (its BOS / EOS ids, no pad)."""
    tokenizer = byte_bpe_tokenizer()
    return FAMILIES[family](**{**SIZES, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                               "eos_token_id": tokenizer.eos_token_id, **config})


def save_tiny_decoder(directory: str | Path, family: str = "llama", seed: int = 0, **config: Any) -> Path:
    """Write a tiny random-init ``family`` causal LM (``config`` overrides its sizes) and the tokenizer into
    ``directory``, as a hub checkpoint is laid out; the same ``seed`` writes the same weights."""
    directory = Path(directory)
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(tiny_decoder_config(family, **config))
    model.save_pretrained(directory)
    byte_bpe_tokenizer().save_pretrained(directory)
    return directory
