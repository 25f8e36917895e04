"""What a search found, read from its Optuna study: the front, its hypervolume, what mattered, where MAM ranks.

Only completed trials (full budget; Optuna's ``COMPLETE``) take part; stopped (by ASHA; Optuna's ``PRUNED``) and
failed trials are counted but never on the front.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from search import variance
from search.pareto import front, hypervolume
from search.schema import OUTCOMES, Attrs, Status


@dataclass
class Row:
    trial: int
    design: str  # the preset's name, or a short label of the design (``label``)
    budget: float  # % of the pretrained model
    metric: float  # final (completed) or last reported before ASHA stopped it (stopped)
    on_front: bool
    design_json: str = ""
    status: Status = Status.COMPLETED  # or Status.STOPPED
    step: int = 0  # optimiser steps reached
    ray_trial_id: str = ""
    metric_se: float | None = None  # standard error of ``metric`` over the validation examples
    test: float | None = None  # the metric on the test split (reported, never selected on)
    test_se: float | None = None
    within_noise_of: int | None = None  # a front trial this dominated row cannot be told apart from
    train: dict[str, Any] = field(default_factory=dict)  # the hyper-parameters sampled for it


@dataclass
class Summary:
    metric: str
    higher_is_better: bool
    rows: list[Row]  # every full-budget trial, front first then by budget
    stopped: list[Row]  # ASHA-stopped trials at the step they reached (plotted, never on the front)
    counts: dict[Status, int]  # trials by outcome
    reference: tuple[float, float]  # (worst metric, largest budget) the hypervolume is measured from
    hypervolume: float
    importance: dict[str, float] = field(default_factory=dict)  # design dimension or hyper-parameter -> importance
    mam: str = ""  # where MAM ranks
    importance_method: str = ""  # how ``importance`` was measured (``IMPORTANCE_METHODS``)

    @property
    def front(self) -> list[Row]:
        return [row for row in self.rows if row.on_front]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def summarise(study: optuna.Study, metric: str, higher_is_better: bool, reference: tuple[float, float],
              confirmed: dict[int, float] | None = None) -> Summary:
    """The study's front and hypervolume; ``confirmed`` (trial number -> median over its seeds) replaces a
    trial's single-seed metric before the front and the hypervolume are computed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = 1.0 if higher_is_better else -1.0
    metrics = [(confirmed or {}).get(t.number, t.values[0]) for t in complete]
    points = [(sign * m, t.values[1]) for m, t in zip(metrics, complete)]
    on_front = set(front(points))
    rows = [_row(t, m, i in on_front, Status.COMPLETED) for i, (m, t) in enumerate(zip(metrics, complete))]
    _mark_noise(rows, sign)
    rows.sort(key=lambda r: (not r.on_front, r.budget, -sign * r.metric))
    stopped = [_row(t, t.user_attrs[Attrs.LAST_METRIC], False, Status.STOPPED)
               for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if Attrs.LAST_METRIC in t.user_attrs]
    area = hypervolume(points, (sign * reference[0], reference[1]))
    shares, method = importance(study, complete)
    return Summary(metric, higher_is_better, rows, stopped, _counts(study.trials), reference, area, shares,
                   _mam(rows, points, sign), method)


NOISE = 2.0  # differences within this many standard errors (of the difference) are read as noise


def _mark_noise(rows: list[Row], sign: float) -> None:
    """Off-front rows whose metric is within noise of a front row that dominates them are marked with that row's
    trial: the data cannot tell them apart, so they are not silently ranked below it."""
    for row in rows:
        if row.on_front or row.metric_se is None:
            continue
        for best in (r for r in rows if r.on_front and r.budget <= row.budget and r.metric_se is not None):
            gap = sign * (best.metric - row.metric)
            if gap <= NOISE * (best.metric_se**2 + row.metric_se**2) ** 0.5:
                row.within_noise_of = best.trial
                break


def _row(t: FrozenTrial, metric: float, on_front: bool, status: Status) -> Row:
    attrs = t.user_attrs
    design = attrs.get(Attrs.DESIGN, "")
    return Row(t.number, attrs.get(Attrs.PRESET) or (label(design) if design else attrs.get(Attrs.DESIGN_ID, "")),
               attrs[Attrs.BUDGET], metric, on_front, design, status, attrs.get(Attrs.STEP, 0),
               attrs.get(Attrs.RAY_TRIAL_ID, ""), attrs.get(Attrs.METRIC_SE), attrs.get(Attrs.TEST),
               attrs.get(Attrs.TEST_SE), train=dict(attrs.get(Attrs.TRAIN) or {}))


def _with_se(value: float | None, se: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def _counts(trials: list[FrozenTrial]) -> dict[Status, int]:
    """Trials by outcome; designs rejected for the budget cap are ``infeasible``, not ``failed``."""
    def outcome(t: FrozenTrial) -> Status:
        if Attrs.INFEASIBLE in t.user_attrs:
            return Status.INFEASIBLE
        return OUTCOMES.get(t.state.name, Status.RUNNING)

    counts = dict.fromkeys(Status, 0)
    for t in trials:
        counts[outcome(t)] += 1
    return counts


IMPORTANCE_METHODS = {"exact": "exact decomposition of a complete grid's variance (search.variance)",
                      "fanova": "Optuna's fANOVA over the parameters every trial has"}


def importance(study: optuna.Study, complete: list[FrozenTrial]) -> tuple[dict[str, float], str]:
    """What matters for the metric, and how it was measured: on a complete grid (every configuration with the same
    seeds) the exact variance decomposition — design, each sampled hyper-parameter, their interactions, the
    seeds — else fANOVA's importance of each parameter, summed over sites and narrowed names
    (``attn.representation[head]`` counts for ``representation``); empty with fewer than two complete trials."""
    rows = pd.DataFrame([{"design": t.user_attrs.get(Attrs.DESIGN_ID), variance.SEED: t.user_attrs.get(Attrs.SEED),
                          **(t.user_attrs.get(Attrs.TRAIN) or {}), "metric": t.values[0]} for t in complete])
    factors = ["design", *(c for c in rows.columns if c not in ("design", variance.SEED, "metric"))]
    if Attrs.CASE in (complete[0].user_attrs if complete else {}) and variance.complete(rows, factors):
        return variance.decompose(rows, factors, "metric"), IMPORTANCE_METHODS["exact"]
    return _fanova(study, complete), IMPORTANCE_METHODS["fanova"]


def _fanova(study: optuna.Study, complete: list[FrozenTrial]) -> dict[str, float]:
    if len(complete) < 2 or len({json.dumps(t.params, sort_keys=True) for t in complete}) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():  # few trials per regime is the normal case in a small search
            warnings.simplefilter("ignore")
            by_param = optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t: t.values[0])
    except (RuntimeError, ValueError):  # e.g. no parameter varied among the complete trials
        return {}
    by_dimension: dict[str, float] = {}
    for name, value in by_param.items():
        dimension = name.split(".", 1)[-1].split("[", 1)[0]  # train.lr counts as lr
        by_dimension[dimension] = by_dimension.get(dimension, 0.0) + value
    return dict(sorted(by_dimension.items(), key=lambda kv: -kv[1]))


def _mam(rows: list[Row], points: list[tuple[float, float]], sign: float) -> str:
    mam = next((r for r in rows if r.design == "mam"), None)
    if mam is None:
        return "MAM was not trained to full budget in this search"
    if mam.on_front:
        return f"MAM is on the front ({mam.metric:.4f} at {mam.budget:.3f}%)"
    better = sum(1 for m, b in points if m >= sign * mam.metric and b <= mam.budget and (m, b) != (sign * mam.metric, mam.budget))
    return f"MAM is dominated by {better} design(s) ({mam.metric:.4f} at {mam.budget:.3f}%)"


def label(design_json: str) -> str:
    """A design in a few words, for a plot point or a table row: each modified site as the paper's method it is a
    size of (``pa_ffn:57``, ``bitfit(attn)``), else by its form, insertion, representation, composition and
    bottleneck (``ffn: relu sequential ffn_w1 scaled r57``); ``head only`` where no site is modified."""
    from peft_space import Design

    design = Design.from_json(design_json)
    parts = [_site_label(site, Design({site: mod}).to_dict()) for site, mod in design.sites.items()]
    return " + ".join(parts) or "head only"


def _site_label(site: str, flat: dict[str, Any]) -> str:
    from peft_space import PRESETS, Design

    size = flat.get(f"{site}.bottleneck")
    unsized = {k: v for k, v in flat.items() if k != f"{site}.bottleneck"}
    for name, declared in sorted(PRESETS.items(), key=lambda item: len(item[1].sites)):  # one-site presets first
        part = declared.sites.get(site)
        if part is not None and {k: v for k, v in Design({site: part}).to_dict().items()
                                 if k != f"{site}.bottleneck"} == unsized:
            where = f"({site})" if len(declared.sites) > 1 else ""
            return name + where + (f":{size}" if size is not None else "")
    words = [str(flat[f"{site}.{dim}"]) for dim in ("form", "insertion", "representation", "composition")
             if f"{site}.{dim}" in flat]
    return f"{site}: " + " ".join(words) + (f" r{size}" if size is not None else "")


def describe(design_json: str) -> str:
    """A design in one line, site by site: ``ffn: form=relu insertion=parallel ... scale=4 bottleneck=32``."""
    from peft_space import Design

    sites: dict[str, list[str]] = {}
    for key, value in Design.from_json(design_json).to_dict().items():
        site, dim = key.split(".", 1)
        shown = f"{dim}={value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else (
            dim if value is True else "" if value is False else f"{dim}={value}")
        sites.setdefault(site, []).append(shown)
    return "; ".join(f"{site}: " + " ".join(v for v in values if v) for site, values in sites.items()) or "task head only"


def hyperparameters(train: dict[str, Any]) -> str:
    """Sampled hyper-parameters in a few words: ``lr=0.0003 batch_size=16``."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in train.items())


def _cells(row: Row, name: str, searched: bool) -> tuple[str, ...]:
    hyper = (hyperparameters(row.train),) if searched else ()
    return (str(row.trial), name, *hyper, f"{row.budget:.4f}", _with_se(row.metric, row.metric_se),
            _with_se(row.test, row.test_se))


def render(summary: Summary, title: str) -> Any:
    """A rich renderable: the front table, then the counts, hypervolume, importance and MAM's rank."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"{title}: Pareto front ({summary.metric} {'↑' if summary.higher_is_better else '↓'}, budget ↓)",
                  caption="± one standard error over the evaluation examples; the front is chosen on validation, "
                          "test is reported only")
    numbers = ("trial", "budget %", f"validation {summary.metric}", f"test {summary.metric}")
    tied = [r for r in summary.rows if r.within_noise_of is not None]
    searched = any(row.train for row in summary.front + tied)  # a column of the sampled hyper-parameters
    for column in ("trial", "design", *(("hyper-parameters",) if searched else ()), *numbers[1:]):
        table.add_column(column, justify="right" if column in numbers else "left", overflow="fold")
    for row in summary.front:
        table.add_row(*_cells(row, row.design, searched))
    if tied:
        table.add_section()
    for row in tied:
        table.add_row(*_cells(row, f"{row.design} (≈ trial {row.within_noise_of}: within noise)", searched))
    designs = [f"trial {row.trial}: {describe(row.design_json)}" for row in summary.front + tied]
    counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items() if v)
    ref_metric, ref_budget = summary.reference
    lines = [f"trials: {counts}",
             f"hypervolume: {summary.hypervolume:.4f} (reference: {summary.metric} {ref_metric}, budget {ref_budget}%)",
             summary.mam]
    if summary.importance:
        lines.append("importance for the metric: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.importance.items())
                     + f" ({summary.importance_method})")
    return Group(table, *designs, *lines)
