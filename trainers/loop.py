"""Train one design on one task and evaluate it.

``train(task, design, ...)`` is the whole trainer: it knows nothing of Ray, Optuna or MLflow. Progress
goes to ``report(step, metrics)`` after each evaluation; a callback that returns ``True`` stops the run
(that is how ASHA stops a trial). A NaN or infinite loss ends the run with ``status=Status.FAILED`` and the
reason, never an exception in the caller's face.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

import peft_space
from peft_space import DESIGN_FILE
from trainers import causal
from trainers.config import TrainConfig, resolve
from trainers.data import example_field, load_splits
from trainers.defaults import DEFAULT_MODEL, FULL
from trainers.metrics import PREDICTED_SHARE, normalise
from trainers.models import DTYPES, Base, cast_frozen, load_base, prepare, set_checkpointing, set_pooling
from trainers.status import Status
from trainers.tasks import TASKS, Task

Report = Callable[[int, dict[str, float]], bool | None]


@dataclass
class Result:
    status: Status  # COMPLETED, STOPPED (by the callback) or FAILED
    step: int  # optimiser steps taken
    validation: dict[str, float]  # the last validation metrics
    test: dict[str, float]  # final metrics on the test split (never the data selected on, where the task has both)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    budget: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # everything needed to reproduce the run
    error: str | None = None
    train_seconds: float = 0.0
    examples_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Diverged(RuntimeError):
    pass


def task_by_name(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    return TASKS[name]


LENGTH_GROUP = 50  # micro-batches sorted together by ``group_by_length`` (transformers' mega-batch size)


def train(
    task: str | Task,
    design: peft_space.Design | None,
    *,
    model: str = DEFAULT_MODEL,
    seed: int = 0,
    data_dir: str | None = None,
    report: Report | None = None,
    progress: bool = True,
    save_dir: str | Path | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> Result:
    """Train ``design`` on ``task`` from ``model`` with the task's recipe and ``overrides`` (see ``TrainConfig``).

    ``design=None`` is full fine-tuning (every parameter trains; the base weights are restored afterwards
    by the next call). ``save_dir``: where a completed run writes its trained modification (``peft_space.save``).
    ``on_start`` receives the resolved configuration (hyper-parameters, data source, threads, versions) before
    the first step, so that a run stopped early is still reproducible."""
    task = task_by_name(task)
    config = resolve(task, overrides)
    if config.threads:
        torch.set_num_threads(config.threads)
    splits = load_splits(task, data_dir)
    base = load_base(model, task.kind, task.num_labels)
    run = Run(task, config, base, seed)
    run.model = prepare(base, design, seed).to(run.device)
    budget = _budget(base, design)
    resolved = {"task": task.name, "model": model, "model_path": base.path, "seed": seed, "data": splits.source,
                **{f"split.{name}": what for name, what in splits.described.items()},
                "design": design.to_dict() if design else {}, "design_id": design.id if design else FULL,
                **asdict(config), "device": str(run.device), "threads": torch.get_num_threads(),
                "uncased_metrics": base.uncased and not task.is_classification, **versions()}
    if on_start is not None:
        on_start(resolved)
    result = run.fit(splits.data, report, progress, resolved, budget)
    if save_dir is not None and design is not None and result.status == Status.COMPLETED:
        peft_space.save(run.model, save_dir)
    return result


def evaluate(task: str | Task, weights: str | Path, *, model: str = DEFAULT_MODEL, data_dir: str | None = None,
             **overrides: Any) -> dict[str, float]:
    """Validation metrics of a trained modification saved by ``peft_space.save`` (or ``train(save_dir=...)``)."""
    task = task_by_name(task)
    config = resolve(task, overrides)
    splits = load_splits(task, data_dir)
    base = load_base(model, task.kind, task.num_labels)
    run = Run(task, config, base, 0)
    design = peft_space.Design.from_json((Path(weights) / DESIGN_FILE).read_text())
    run.model = prepare(base, design, 0).to(run.device)
    peft_space.load(run.model, weights)
    return run.validate(run.encode_for_eval(splits.data["validation"], config.eval_examples))


def _budget(base: Base, design: peft_space.Design | None) -> dict[str, float]:
    """The budget of the design just prepared; full fine-tuning tunes every pretrained parameter (100%)."""
    budget = peft_space.count_budget(base.model, design or peft_space.Design({}))
    if design is None:
        budget = type(budget)(budget.pretrained, budget.pretrained, budget.pretrained, budget.head)
    new = sum(base.model.get_parameter(n).numel() for n in base.new_params)
    return {**asdict(budget), "pct_analytic": budget.pct_analytic, "pct_actual": budget.pct_actual, "new": new}


def versions() -> dict[str, str]:
    names = ("peft-search", "torch", "transformers", "datasets", "rouge-score", "sacrebleu")
    found = {}
    for name in names:
        try:
            found[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[f"version.{name}"] = "absent"
    return found


class Run:
    """The state of one training run: model, data, optimiser and the evaluation routines."""

    def __init__(self, task: Task, config: TrainConfig, base: Base, seed: int) -> None:
        self.task, self.config, self.base, self.seed = task, config, base, seed
        # Under Ray, CUDA_VISIBLE_DEVICES names only the GPU assigned to the trial (shared when it asks for a
        # fraction), so "cuda" is that GPU; search/trainable.py hides every GPU from a trial given none.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = config.precision
        if precision == "auto":  # half-precision frozen weights compute in their own dtype
            on_gpu = "bf16" if self.device.type == "cuda" else "fp32"
            precision = config.base_dtype if config.base_dtype != "fp32" else on_gpu
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    @property
    def model(self) -> nn.Module:
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        """The prepared base model with its design, set up for this run's memory options."""
        cast_frozen(model, DTYPES[self.config.base_dtype], self.base.fp32_weights)
        set_checkpointing(model, self.config.gradient_checkpointing)
        if self.task.is_classification:
            set_pooling(model, self.config.pooling)
        self._model = model

    # -- data ------------------------------------------------------------------------------------------
    def encode(self, dataset: Any, limit: int) -> list[dict[str, Any]]:
        rows = dataset.select(range(min(limit, len(dataset)))) if limit else dataset
        tokenizer, c = self.base.tokenizer, self.config
        if self.base.causal:
            prompter = causal.Prompter(self.task, tokenizer, c.max_source_length, c.max_target_length,
                                       getattr(self.base.model.config, "n_positions", None))
            return [prompter.example(row) for row in rows]
        texts = [[example_field(r, name) for r in rows] for name in self.task.inputs]
        encoded = tokenizer(*texts, truncation=True, max_length=c.max_source_length)
        targets = [example_field(r, self.task.target) for r in rows]
        if self.task.is_classification:
            labels = targets
        else:
            labels = tokenizer(targets, truncation=True, max_length=c.max_target_length)["input_ids"]
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
        return [{**{k: encoded[k][i] for k in keys}, "labels": labels[i], "reference": targets[i]} for i in range(len(targets))]

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.base.causal:
            return {k: v.to(self.device) for k, v in causal.collate(examples, self.base.tokenizer.pad_token_id).items()}
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in examples[0]]
        batch = self.base.tokenizer.pad([{k: e[k] for k in keys} for e in examples], return_tensors="pt")
        if self.task.is_classification:
            batch["labels"] = torch.tensor([e["labels"] for e in examples])
        else:
            width = max(len(e["labels"]) for e in examples)
            batch["labels"] = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in examples])
        return {k: v.to(self.device) for k, v in batch.items()}

    def encode_for_eval(self, dataset: Any, limit: int) -> list[dict[str, Any]]:
        """Evaluation examples by length: batches of similar lengths pad little (the metrics ignore order)."""
        return sorted(self.encode(dataset, limit), key=lambda e: len(e["input_ids"]))

    def micro_batches(self, examples: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Endless seeded shuffles of the training set, cut into micro-batches. With ``group_by_length``, as
        transformers' ``LengthGroupedSampler`` does, each run of ``LENGTH_GROUP`` micro-batches of the shuffle is
        sorted by length first: a batch pads to similar lengths, and batches stay random across groups."""
        generator, size = torch.Generator().manual_seed(self.seed), self.config.micro_batch
        while True:
            order = torch.randperm(len(examples), generator=generator).tolist()
            if self.config.group_by_length:
                span = size * LENGTH_GROUP
                order = [j for i in range(0, len(order), span)
                         for j in sorted(order[i : i + span], key=lambda j: -len(examples[j]["input_ids"]))]
            for i in range(0, len(order), size):
                yield [examples[j] for j in order[i : i + size]]

    def optimiser_batches(self, examples: list[dict[str, Any]]) -> Iterator[list[list[dict[str, Any]]]]:
        """Groups of micro-batches that make one optimiser step: exactly ``batch_size`` sentences (a micro-batch that
        would overshoot is split, its rest opening the next step), or at least ``batch_tokens`` tokens."""
        micro, c = self.micro_batches(examples), self.config
        rest: list[dict[str, Any]] = []
        while True:
            group, sentences, tokens = [], 0, 0
            while (tokens < c.batch_tokens) if c.batch_tokens else (sentences < c.batch_size):
                chunk, rest = (rest, []) if rest else (next(micro), [])
                if not c.batch_tokens and sentences + len(chunk) > c.batch_size:
                    chunk, rest = chunk[: c.batch_size - sentences], chunk[c.batch_size - sentences :]
                group.append(chunk)
                sentences += len(chunk)
                tokens += sum(len(e["input_ids"]) + (0 if self.task.is_classification or self.base.causal
                                                      else len(e["labels"])) for e in chunk)
            yield group

    def steps_per_pass(self, examples: list[dict[str, Any]]) -> int:
        """Optimiser steps that one pass over ``examples`` makes, with their real lengths and the run's first
        shuffle (the last step may reach into the next pass); only lengths are read, no tensor is built."""
        steps, seen, batches = 0, 0, self.optimiser_batches(examples)
        while seen < len(examples):
            steps, seen = steps + 1, seen + sum(map(len, next(batches)))
        return steps

    def total_steps(self, examples: list[dict[str, Any]]) -> int:
        """``steps``, else ``epochs`` passes over the training ``examples``."""
        c = self.config
        if c.steps:
            return c.steps
        if not c.batch_tokens:
            return max(1, math.ceil(c.epochs * len(examples) / c.batch_size))
        return max(1, math.ceil(c.epochs * self.steps_per_pass(examples)))

    # -- loss and evaluation ---------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], smoothing: float) -> tuple[torch.Tensor, int]:
        """Mean token (or sentence) cross-entropy and the number of items it averages."""
        if self.base.causal:
            return causal.loss(self.model, batch, smoothing, self._autocast), items(self.task, batch["labels"])
        with self._autocast():
            logits = self.model(**batch).logits.float()
        labels = batch["labels"]
        if self.task.is_classification:
            return nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing), items(self.task, labels)
        flat = logits.reshape(-1, logits.shape[-1])
        loss = nn.functional.cross_entropy(flat, labels.reshape(-1), ignore_index=-100, label_smoothing=smoothing)
        return loss, items(self.task, labels)

    @torch.no_grad()
    def evaluate(self, examples: list[dict[str, Any]], generate: bool) -> dict[str, float]:
        self.model.eval()
        try:
            return self._classify(examples) if self.task.is_classification else self._seq2seq(examples, generate)
        finally:
            self.model.train()

    def _classify(self, examples: list[dict[str, Any]]) -> dict[str, float]:
        predictions, total_loss = [], 0.0
        size = self.config.eval_batch or self.config.micro_batch
        for i in range(0, len(examples), size):
            batch = self.collate(examples[i : i + size])
            with self._autocast():
                logits = self.model(**batch).logits.float()
            total_loss += float(nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
            predictions += logits.argmax(-1).tolist()
        metrics = self.task.metric(predictions, [e["labels"] for e in examples])
        top = max(predictions.count(label) for label in set(predictions)) if predictions else 0
        return {**metrics, "loss": total_loss / len(examples), PREDICTED_SHARE: top / max(1, len(predictions))}

    def _seq2seq(self, examples: list[dict[str, Any]], generate: bool) -> dict[str, float]:
        nll, tokens, predictions = 0.0, 0, []
        size = self.config.eval_batch or self.config.micro_batch
        for i in range(0, len(examples), size):
            batch = self.collate(examples[i : i + size])
            loss, count = self.loss(batch, 0.0)
            nll, tokens = nll + float(loss) * count, tokens + count
            if generate:
                predictions += self.generate(examples[i : i + size], batch)
        metrics = {"perplexity": math.exp(min(nll / max(1, tokens), 50.0))}
        if generate:
            references = [e["reference"] for e in examples]
            if self.base.uncased:
                predictions, references = [normalise(p) for p in predictions], [normalise(r) for r in references]
            metrics |= self.task.metric(predictions, references)
        return metrics

    def generate(self, examples: list[dict[str, Any]], batch: dict[str, torch.Tensor]) -> list[str]:
        """The texts generated for ``examples`` (collated as ``batch``); a decoder-only model continues their
        prompts, padded on the left, and only the new tokens are decoded."""
        c = self.config
        if self.base.causal:
            prompts = causal.prompts(examples, self.base.tokenizer.pad_token_id)
            batch = {k: v.to(self.device) for k, v in prompts.items()}
        with self._autocast():
            out = self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      num_beams=c.num_beams, min_new_tokens=c.min_generate,
                                      max_new_tokens=c.max_generate, do_sample=False)
        new = out[:, batch["input_ids"].shape[1] :] if self.base.causal else out
        return self.base.tokenizer.batch_decode(new, skip_special_tokens=True)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)

    def validate(self, examples: list[dict[str, Any]]) -> dict[str, float]:
        """Validation metrics; generation only where the validation metric needs it (XSum's ROUGE-2)."""
        return self.evaluate(examples, generate=self.task.validation_generates)

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self, splits: dict[str, Any], report: Report | None, show: bool, config: dict, budget: dict) -> Result:
        c = self.config
        for module in self.model.modules():
            if isinstance(module, nn.Dropout):
                module.p = c.dropout
            elif isinstance(getattr(module, "attention_dropout", None), float):  # LLaMA's family: no Dropout modules
                module.attention_dropout = c.dropout
        train_set = self.encode(splits["train"], c.train_examples)
        valid_set = self.encode_for_eval(splits["validation"], c.eval_examples)
        test_set = self.encode_for_eval(splits["test"], c.test_examples or c.eval_examples)
        total = self.total_steps(train_set)
        config |= {"total_steps": total, "train_size": len(train_set), "validation_size": len(valid_set),
                   "test_size": len(test_set)}
        evaluations = eval_steps(total, c.eval_every or max(1, total // 5), c.eval_growth)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(decay_groups(params, c.weight_decay), lr=c.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _linear(total, round(c.warmup_ratio * total)))
        result = Result(Status.COMPLETED, 0, {}, {}, budget=budget, config=config)
        torch.manual_seed(self.seed)  # dropout draws
        self.model.train()
        seen, start = 0, time.perf_counter()
        with _progress(show, total, f"{self.task.name} {config['design_id']}") as bar:
            for step, group in zip(range(1, total + 1), self.optimiser_batches(train_set)):
                try:
                    loss = self._step(group, params, optimiser)
                except Diverged as err:
                    result.status, result.error, result.step = Status.FAILED, f"{err} at step {step}", step
                    break
                schedule.step()
                seen += sum(len(chunk) for chunk in group)
                result.step = step
                bar(step, loss, seen / (time.perf_counter() - start))
                if step in evaluations:
                    result.validation = self.validate(valid_set)
                    result.history.append((step, result.validation))
                    if report is not None and report(step, result.validation) and step < total:
                        result.status = Status.STOPPED
                        break
        result.train_seconds = time.perf_counter() - start
        result.examples_per_second = seen / max(result.train_seconds, 1e-9)
        if result.status == Status.COMPLETED:
            result.test = self.evaluate(test_set, generate=True)
        return result

    def _step(self, group: list[list[dict[str, Any]]], params: list[nn.Parameter], optimiser: Any) -> float:
        """One optimiser step on the mean loss over every item of ``group``. Each micro-batch's backward pass
        follows its forward pass, so one graph is alive at a time and ``micro_batch`` bounds activation memory;
        the items are counted from the labels first, to weight each micro-batch by its share of them."""
        batches = [self.collate(chunk) for chunk in group]
        total = sum(items(self.task, batch["labels"]) for batch in batches)
        value = torch.zeros((), device=self.device)
        for batch in batches:
            loss, count = self.loss(batch, self.config.label_smoothing)
            (loss * (count / total)).backward()
            value += loss.detach() * (count / total)
        if not torch.isfinite(value):  # once per step: a diverged run ends here, its gradients unused
            raise Diverged(f"loss became {value.item()}")
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        return value.item()


def decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: weight decay on the weight matrices (LoRA's and adapters' projections, prefix and
    prompt vectors, the head's weight, full fine-tuning's matrices), none on what is a vector or a number (biases,
    BitFit's shifts, layer norms, gates, learned scales), as transformers' Trainer spares biases and layer norms:
    shrinking those towards 0 is not a simpler model, it is a different one."""
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def items(task: Task, labels: torch.Tensor) -> int:
    """What a loss averages over: sentences (classification) or non-padding target tokens (generation)."""
    return labels.numel() if task.is_classification else int((labels != -100).sum())


def eval_steps(total: int, every: int, growth: float = 1.0) -> set[int]:
    """The steps after which a run evaluates: every ``every`` steps, or at ``every·growth^k`` (the rungs of a
    successive-halving ladder: ``eval_steps(243, 9, 3) == {9, 27, 81, 243}``), and always at the last step."""
    if growth <= 1:
        return set(range(every, total + 1, every)) | {total}
    steps, step = {total}, float(every)
    while step < total:
        steps.add(round(step))
        step *= growth
    return steps


def _linear(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up from 0, then linear decay to 0 (the paper's polynomial schedule of degree 1)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


class _progress:
    """A rich progress bar (step, loss, examples/s), or nothing when switched off."""

    def __init__(self, show: bool, total: int, label: str) -> None:
        self.show, self.total, self.label = show, total, label

    def __enter__(self) -> Callable[[int, float, float], None]:
        if not self.show:
            return lambda *_: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f} · {task.fields[speed]:.1f} ex/s"),
                            TimeRemainingColumn(), transient=False)
        self.bar.__enter__()
        job = self.bar.add_task(self.label, total=self.total, loss=float("nan"), speed=0.0)
        return lambda step, loss, speed: self.bar.update(job, completed=step, loss=loss, speed=speed)

    def __exit__(self, *exc: Any) -> None:
        if self.show:
            self.bar.__exit__(*exc)
