"""The Pareto front of task metric (higher is better) against tuned-parameter budget (lower is better).

Only trials that ran to their full budget belong here: an ASHA-stopped trial's metric is a partial one.
"""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(metric, budget) ``a`` dominates ``b``: no worse in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, by increasing budget."""
    keep = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(keep, key=lambda i: (points[i][1], -points[i][0]))


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` within ``reference`` = (worst metric, largest budget) of interest.

    Along the front sorted by budget the metric rises, so between one front point's budget and the next
    the best metric reachable is that point's: the area is a sum of such strips up to the reference budget.
    Points no better than the reference in either objective add nothing.
    """
    ref_metric, ref_budget = reference
    useful = sorted((p for p in (points[i] for i in front(points)) if p[0] > ref_metric and p[1] < ref_budget),
                    key=lambda p: p[1])
    edges = [budget for _, budget in useful[1:]] + [ref_budget]
    return sum((edge - budget) * (metric - ref_metric) for (metric, budget), edge in zip(useful, edges))
