"""Pareto-aware asynchronous successive halving: ASHA that ranks a rung by (task metric, tuned-parameter budget).

Scalar ASHA (Li et al. 2020; Ray's ``ASHAScheduler``) keeps a trial at a rung when its metric is in the top
``1/reduction_factor`` of the metrics recorded there. In a search for the Pareto front of metric against budget
that stops the designs the search is for: a 0.05% design slightly less accurate than a 4% one sits on the front
but falls below the cutoff. This scheduler keeps ASHA's rungs and asynchrony and changes only the ranking.

The rule
--------
Rungs sit at ``grace_period * reduction_factor**k`` (``k = 0, 1, ...``, up to ``max_t``) of ``time_attr``, as
in Ray's ASHA. A trial's first result at or past a rung's milestone (and before the next milestone) is
recorded there as a point (rung metric, budget), and the trial is judged at once against the points recorded
there so far, its own included (n of them); a rung that a trial's reports skip entirely does not judge it.
The decision:

1. Non-dominated sorting: the first front holds the points no other point beats on both objectives (metric by
   ``mode``, budget always lower-is-better); the second front is the first front of what remains; and so on.
2. The top ``⌊n / reduction_factor⌋`` points continue: whole fronts from the first on, the last front that only
   partly fits admitted by the tie-break below.
3. While the rung holds fewer than ``reduction_factor`` points that quota is zero: the top 1/reduction_factor
   is not yet a whole trial. Ray's ASHA then lets the first arrival continue and keeps a later one only if it
   is about as good as the best seen (its percentile cutoff over so few results sits near the top). The
   two-objective reading used here: a trial continues if no point recorded at the rung dominates it. So the
   first arrival at a rung always continues, a cheaper design continues even if less accurate, and a design
   both worse and dearer than one already seen stops at once.

Decisions are never revisited (that is ASHA's asynchrony): a trial stopped early is not brought back when
later arrivals would have ranked it higher, and a promoted trial is not recalled. Points stay recorded when
their trial stops, completes or is removed. A metric of NaN ranks below every other metric.

The tie-break: an ε-net along the log budget axis
-------------------------------------------------
Schmucker et al. 2021 ("Multi-objective Asynchronous Successive Halving") rank a rung by random scalarisation,
by NSGA-II's non-dominated sorting with crowding distance, or by non-dominated sorting with an ε-net (Salinas
et al. 2021; the default of Syne Tune's ``MOASHA``). Here the last admitted front is ordered by an ε-net: its
member with the best metric first, then again and again the member farthest, in log budget, from all those
already picked. Why:

- The budget is exact and known before training; the rung metric is a partial, noisy estimate. On a
  two-objective front ordering by budget is ordering by metric, so spreading along the budget covers the
  front without weighing a percentage of parameters against an accuracy (no scaling between objectives).
- Log scale: PEFT budgets span orders of magnitude (0.05% to 6.5% for this project's presets); halving a
  budget counts as much at 0.1% as at 4%. A 0% budget (the frozen model, task head only) is infinitely far
  below every positive one: it is the cheap end of the axis.
- An ε-net is greedy: each pick accounts for those before it, so k slots go to the two ends of the front and
  then its widest gaps. Crowding distance scores every member once by its two neighbours, so two near twins
  in a sparse stretch can take both slots. Random scalarisation makes decisions that depend on the draw.
- Starting from the best metric means that with one slot left this scheduler keeps what scalar ASHA keeps;
  the second slot goes to the cheapest member of the front.

Example
-------
A rung with reduction factor 3 holds six points (accuracy, budget %)::

    a (0.80, 4.0)   b (0.78, 0.3)   c (0.70, 0.05)   d (0.79, 1.2)   e (0.75, 2.0)   f (0.60, 6.0)

Fronts: {c, b, d, a} (by budget), then {e} (d beats it), then {f}. The quota is ⌊6 / 3⌋ = 2 and the first front
has four members, so the ε-net orders it: a (best accuracy), c (farthest from 4% in log budget), b, d. A trial
ranked a or c continues; arriving as b, d, e or f it stops. Scalar ASHA ranks by accuracy alone (a, d, b, e,
c, f) and stops the 0.05% design c.

>>> from ray import tune
>>> from search.pareto_asha import ParetoASHAScheduler
>>> scheduler = ParetoASHAScheduler(time_attr="step", metric="loss", mode="min", budget_attr="budget",
...                                 max_t=200, grace_period=20, reduction_factor=3)
>>> tune.TuneConfig(scheduler=scheduler)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from search.pareto import dominates

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

Point = tuple[float, float]  # (score: the rung metric signed so that higher is better, budget: lower is better)


class ParetoASHAScheduler(FIFOScheduler):
    """Asynchronous successive halving that keeps the top ``1/reduction_factor`` of each rung by non-dominated
    sorting on (``metric``, ``budget_attr``), ties in the last admitted front spread along the budget axis.

    Args:
        time_attr: The result attribute that measures progress (monotonically increasing), e.g. ``"step"``.
        metric: The task metric compared at the rungs.
        mode: ``"max"`` or ``"min"``: whether a higher or a lower ``metric`` is better.
        budget_attr: The result attribute holding the design's budget; always minimised.
        max_t: The most ``time_attr`` a trial runs.
        grace_period: The first rung's milestone: no trial is stopped before it.
        reduction_factor: About one trial in ``reduction_factor`` continues at each rung.
        stop_last_trials: Stop trials when they reach ``max_t`` (as Ray's ASHA does).
    """

    def __init__(
        self,
        time_attr: str = "step",
        metric: str | None = None,
        mode: str | None = None,
        budget_attr: str = "budget",
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        stop_last_trials: bool = True,
    ):
        if not 0 < grace_period <= max_t:
            raise ValueError(f"grace_period must be in (0, max_t]; got {grace_period} with max_t={max_t}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1; got {reduction_factor}")
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        super().__init__()
        self._time_attr, self._metric, self._mode, self._budget_attr = time_attr, metric, mode, budget_attr
        self._max_t, self._reduction_factor, self._stop_last_trials = max_t, reduction_factor, stop_last_trials
        self._rungs = [(milestone, {}) for milestone in reversed(milestones(grace_period, max_t, reduction_factor))]
        self._num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``tune.TuneConfig`` when they were not given here (as Ray's ASHA)."""
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._mode = mode or self._mode
        self._metric = metric or self._metric or (DEFAULT_METRIC if self._mode else None)
        return True

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        if not self._metric or not self._mode:
            raise ValueError(f"{type(self).__name__} needs a `metric` ({self._metric}) and a `mode` ({self._mode}): "
                             "pass them here or to `tune.TuneConfig()`")

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        point = self._point(result)
        if point is None:  # e.g. a failed trial's last report: nothing to judge
            return TrialScheduler.CONTINUE
        if self._stop_last_trials and result[self._time_attr] >= self._max_t:
            decision = TrialScheduler.STOP
        else:
            decision = self._judge(trial.trial_id, result[self._time_attr], point)
        if decision == TrialScheduler.STOP:
            self._num_stopped += 1
        return decision

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict) -> None:
        """Record a finished trial's last result at its rung, for the trials that reach it later."""
        point = self._point(result)
        if point is not None:
            self._judge(trial.trial_id, result[self._time_attr], point)

    def debug_string(self) -> str:
        rungs = " | ".join(f"{milestone:g}: {len(recorded)} recorded, {_front_size(recorded)} on its front"
                           for milestone, recorded in self._rungs)
        return f"Using ParetoASHA: num_stopped={self._num_stopped}\nRungs ({self._time_attr}): {rungs}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))

    def _point(self, result: dict) -> Point | None:
        """(score, budget) of ``result``, the score signed so that higher is better; None if a part is missing."""
        if any(result.get(key) is None for key in (self._time_attr, self._metric, self._budget_attr)):
            return None
        score = float(result[self._metric]) * (1.0 if self._mode == "max" else -1.0)
        return (-math.inf if math.isnan(score) else score), float(result[self._budget_attr])

    def _judge(self, trial_id: str, t: float, point: Point) -> str:
        """Record ``point`` at the highest rung ``t`` has reached and decide there; once per trial and rung (a
        trial not at a rung yet, or judged at this one already, continues)."""
        recorded = next((recorded for milestone, recorded in self._rungs if t >= milestone), None)
        if recorded is None or trial_id in recorded:
            return TrialScheduler.CONTINUE
        recorded[trial_id] = point
        points = list(recorded.values())  # this trial's is the last
        continues = len(points) - 1 in promoted(points, self._reduction_factor)
        return TrialScheduler.CONTINUE if continues else TrialScheduler.STOP


def milestones(grace_period: float, max_t: float, reduction_factor: float) -> list[float]:
    """The rungs ``grace_period * reduction_factor**k`` up to ``max_t``: Ray's ASHA layout, counted by
    multiplying (Ray's logarithm can drop a rung at ``max_t``, e.g. 1000 for 1 and 10)."""
    rungs = [grace_period]
    while rungs[-1] * reduction_factor <= max_t:
        rungs.append(rungs[-1] * reduction_factor)
    return rungs


def promoted(points: Sequence[Point], reduction_factor: float) -> set[int]:
    """Indices of a rung's ``points`` that continue: the top ``⌊n / reduction_factor⌋`` by front, the last front
    admitted in part in ``spread`` order; while that quota is zero, the whole first front."""
    layers = fronts(points)
    quota = int(len(points) / reduction_factor)
    if quota == 0:
        return set(layers[0])
    chosen: list[int] = []
    for front in layers:
        if len(chosen) == quota:
            break
        chosen += spread(points, front, quota - len(chosen))
    return set(chosen)


def fronts(points: Sequence[Point]) -> list[list[int]]:
    """Non-dominated sorting: indices of ``points`` by front (the Pareto front first), each by increasing budget.

    Points are taken by increasing budget (ties: higher score first), so whatever dominates a point comes before
    it, and each joins the first front that does not dominate it. Within a front a later member has a higher
    budget and a higher score, so the front's last member dominates the point if any member does."""
    layers: list[list[int]] = []
    for i in sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0])):
        k = next((k for k, front in enumerate(layers) if not dominates(points[front[-1]], points[i])), len(layers))
        if k == len(layers):
            layers.append([])
        layers[k].append(i)
    return layers


def spread(points: Sequence[Point], front: Sequence[int], count: int) -> list[int]:
    """The first ``count`` members of ``front`` in ε-net order: the best score first, then again and again the
    member farthest in log budget from all those already picked (ties: the cheaper)."""
    first = max(front, key=lambda i: points[i][0])
    picked = [first]
    gap = {i: _log_gap(points[i][1], points[first][1]) for i in front if i != first}
    while len(picked) < count and gap:
        far = max(gap, key=gap.__getitem__)
        picked.append(far)
        del gap[far]
        gap = {i: min(g, _log_gap(points[i][1], points[far][1])) for i, g in gap.items()}
    return picked


def _front_size(recorded: dict[str, Point]) -> int:
    return len(fronts(list(recorded.values()))[0]) if recorded else 0


def _log_gap(a: float, b: float) -> float:
    """|log a − log b| for budgets; 0% is infinitely far below any positive budget."""
    if a == b:
        return 0.0
    return abs(math.log(a / b)) if min(a, b) > 0 else math.inf
