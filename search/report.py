"""What a search found, read from its Optuna study: the front, its hypervolume, what mattered, where MAM ranks.

Only ``COMPLETE`` trials (full budget) take part; pruned (ASHA-stopped) and failed trials are counted but
never on the front.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto import front, hypervolume


@dataclass
class Row:
    trial: int
    design: str  # the preset's name, or the design id
    budget: float  # % of the pretrained model
    metric: float
    on_front: bool
    design_json: str = ""


@dataclass
class Summary:
    metric: str
    higher_is_better: bool
    rows: list[Row]  # every full-budget trial, front first then by budget
    counts: dict[str, int]  # complete, pruned, failed, infeasible, running
    reference: tuple[float, float]  # (worst metric, largest budget) the hypervolume is measured from
    hypervolume: float
    importance: dict[str, float] = field(default_factory=dict)  # design dimension -> importance for the metric
    mam: str = ""  # where MAM ranks

    @property
    def front(self) -> list[Row]:
        return [row for row in self.rows if row.on_front]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def summarise(study: optuna.Study, metric: str, higher_is_better: bool, reference: tuple[float, float]) -> Summary:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = 1.0 if higher_is_better else -1.0
    points = [(sign * t.values[0], t.values[1]) for t in complete]
    on_front = set(front(points))
    rows = [Row(t.number, t.user_attrs.get("preset") or t.user_attrs.get("design_id", ""), t.values[1], t.values[0],
                i in on_front, t.user_attrs.get("design", "")) for i, t in enumerate(complete)]
    rows.sort(key=lambda r: (not r.on_front, r.budget, -sign * r.metric))
    area = hypervolume(points, (sign * reference[0], reference[1]))
    return Summary(metric, higher_is_better, rows, _counts(study.trials), reference, area,
                   importance(study, complete), _mam(rows, points, sign))


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    infeasible = sum(1 for t in trials if "infeasible" in t.user_attrs)
    counts = {"complete": 0, "pruned": 0, "failed": -infeasible, "running": 0, "infeasible": infeasible}
    for t in trials:
        key = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(t.state, "running")
        counts[key] += 1
    return counts


def importance(study: optuna.Study, complete: list[FrozenTrial]) -> dict[str, float]:
    """fANOVA importance of each design dimension for the task metric, summed over sites and narrowed names
    (``attn.representation[head]`` counts for ``representation``); empty with fewer than two complete trials."""
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
        dimension = name.split(".", 1)[-1].split("[", 1)[0]
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


def render(summary: Summary, title: str) -> Any:
    """A rich renderable: the front table, then the counts, hypervolume, importance and MAM's rank."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"{title}: Pareto front ({summary.metric} {'↑' if summary.higher_is_better else '↓'}, budget ↓)")
    for column in ("trial", "design", "budget %", summary.metric):
        table.add_column(column, justify="right" if column != "design" else "left")
    for row in summary.front:
        table.add_row(str(row.trial), row.design, f"{row.budget:.4f}", f"{row.metric:.4f}")
    counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items() if v)
    ref_metric, ref_budget = summary.reference
    lines = [f"trials: {counts}",
             f"hypervolume: {summary.hypervolume:.4f} (reference: {summary.metric} {ref_metric}, budget {ref_budget}%)",
             summary.mam]
    if summary.importance:
        lines.append("importance for the metric: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.importance.items()))
    return Group(table, *lines)
