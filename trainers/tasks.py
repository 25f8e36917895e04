"""The paper's four tasks (§4.1, Appendix A) and a registry for more.

A ``Task`` says where its data lives (hub name and local files with the same schema), how an example
becomes model input, which metrics it reports, and its training recipe (Table 8). A user adds a task
with ``register_task(Task(...))``; the trainer needs no change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from peft_space import Registry
from trainers.metrics import WITHOUT_GENERATION, accuracy, bleu, rouge

Metric = Callable[[list[Any], list[Any]], dict[str, float]]
# A label per input, or a target text generated from the input: by the checkpoint's encoder-decoder (BART, T5,
# BERT2BERT from an encoder) or by a decoder-only language model continuing the prompt (GPT-2, LLaMA, Qwen, ...).
TaskKind = Literal["classification", "generation"]


@dataclass(frozen=True)
class Task:
    name: str
    kind: TaskKind
    hub: tuple[str, str | None]  # datasets.load_dataset(path, name)
    hub_splits: Mapping[str, str]  # our split name -> the hub's
    files: Mapping[str, str]  # split -> file under the data directory (json lines, or tsv)
    inputs: tuple[str, ...]  # text fields (one or a pair for classification; the source for generation)
    target: str  # label field, or the target text field ("translation.ro" reads a nested field)
    metric: Metric  # computed on the test split (and on validation for classification)
    validation_metric: str  # the metric ASHA and reports watch
    higher_is_better: bool
    recipe: Mapping[str, Any] = field(default_factory=dict)  # overrides of TrainConfig's defaults
    num_labels: int = 0
    help: str = ""
    # Tasks whose test labels are not public (GLUE): this many training examples, a fixed seeded slice, become
    # the validation split the search selects on, and the public dev set becomes the reported test split. Data
    # without a validation (or test) split: that split is carved from train instead. A size below 1 is a share of train.
    carved_validation: int | float = 0
    carved_test: int | float = 0
    # Label names, a label's id its position: a label column holding these names is read as their ids
    labels: tuple[str, ...] = ()
    # Decoder-only generation: the prompt the target continues. A ``str.format`` string over the input columns
    # ("Summarise: {document}\nSummary:"); empty: the input columns joined by a blank line. ``chat_template``: the
    # tokenizer's chat template instead (user turn = the prompt, assistant turn = the target).
    prompt: str = ""
    chat_template: bool = False

    @property
    def is_classification(self) -> bool:
        """A label per input (a sequence classifier), else a target text (an encoder-decoder)."""
        return self.kind == "classification"

    @property
    def loss_metric(self) -> str:
        """The loss every evaluation reports on the validation split: mean cross-entropy per sentence, or per token
        as perplexity for generation."""
        return "loss" if self.is_classification else "perplexity"

    @property
    def chance_metric(self) -> float:
        """The validation metric of a model that learned nothing, the hypervolume's reference: a uniform guess's
        accuracy for classification, 0 for generation (the ROUGE or BLEU of no overlap). Not a perplexity's: that
        depends on the model (a uniform guess over its vocabulary scores the vocabulary's size)."""
        return 1.0 / self.num_labels if self.is_classification else 0.0

    @property
    def validation_generates(self) -> bool:
        """Whether validating needs generated text (XSum's ROUGE-2), not only scores of the given targets."""
        return self.validation_metric not in WITHOUT_GENERATION


TASKS: Registry[Task] = Registry("task", "add one with trainers.register_task")


def register_task(task: Task) -> Task:
    return TASKS.add(task.name, task)


def validation_metrics() -> list[str]:
    """The metric each registered task selects on, once each (for readers of records that lack their metric)."""
    return list(dict.fromkeys(task.validation_metric for task in TASKS.values()))


CLASSIFICATION = {"lr": 1e-4, "batch_size": 32, "label_smoothing": 0.0, "max_grad_norm": 1.0, "weight_decay": 0.1,
                  "warmup_ratio": 0.06, "max_source_length": 512, "epochs": 10}
GENERATION = {"lr": 5e-5, "label_smoothing": 0.1, "weight_decay": 0.01, "warmup_ratio": 0.0}

register_task(Task(
    "sst2", "classification", ("glue", "sst2"), {"train": "train", "validation": "validation"},
    {"train": "sst2/train.tsv", "validation": "sst2/validation.tsv"}, ("sentence",), "label", accuracy, "accuracy",
    True, CLASSIFICATION, num_labels=2, carved_validation=2000,
    help="SST-2 sentiment (GLUE), accuracy; validation: 2,000 sentences carved from train, test: the dev set",
))
register_task(Task(
    "mnli", "classification", ("glue", "mnli"), {"train": "train", "validation": "validation_matched"},
    {"train": "mnli/train.jsonl", "validation": "mnli/validation.jsonl"}, ("premise", "hypothesis"), "label", accuracy,
    "accuracy", True, CLASSIFICATION, num_labels=3, carved_validation=1000,
    help="MNLI entailment (GLUE), accuracy; validation: 1,000 pairs carved from train, test: the matched dev set",
))
register_task(Task(
    "xsum", "generation", ("EdinburghNLP/xsum", None), {"train": "train", "validation": "validation", "test": "test"},
    {"train": "xsum/train.jsonl", "validation": "xsum/validation.jsonl", "test": "xsum/test.jsonl"}, ("document",),
    "summary", rouge, "rouge2", True,
    {**GENERATION, "batch_size": 64, "max_grad_norm": 0.1, "max_source_length": 512, "max_target_length": 128,
     "num_beams": 5, "min_generate": 10, "max_generate": 60, "steps": 100_000},
    help="XSum summarisation, ROUGE-1/2/L (rouge-score, stemming); validation ROUGE-2",
))
register_task(Task(
    "wmt16_en_ro", "generation", ("wmt16", "ro-en"), {"train": "train", "validation": "validation", "test": "test"},
    {"train": "wmt16_en_ro/train.jsonl", "validation": "wmt16_en_ro/validation.jsonl", "test": "wmt16_en_ro/test.jsonl"},
    ("translation.en",), "translation.ro", bleu, "perplexity", False,
    {**GENERATION, "batch_tokens": 16_384, "max_grad_norm": 1.0, "max_source_length": 150, "max_target_length": 150,
     "num_beams": 6, "min_generate": 1, "max_generate": 200, "steps": 50_000},
    help="WMT16 English→Romanian translation, BLEU (sacrebleu); validation perplexity",
))
