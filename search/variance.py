"""What matters on a complete grid: the exact decomposition of a metric's variance (sums of squares).

On a grid where every design was trained with every combination of the varied hyper-parameters and the same
seeds, the metric's total sum of squares splits exactly into a part per factor (the design, each hyper-parameter),
their interactions (a design wanting its own learning rate) and the seeds (what retraining alone changes):

    SS_total = SS_design + Σ SS_hyper + SS_interactions + SS_seed

Each part is reported as its share of the total. Optuna's fANOVA (``optuna.importance``) estimates the same
shares from a random forest over the parameters *every* trial has; a design dimension that only some designs
have drops out there, and a hyper-parameter every trial samples wins by construction. A search that is not a
complete grid gets fANOVA (``search.report.importance``), and the report says which one it shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

SEED = "seed"
INTERACTIONS = "interactions"  # the design × hyper-parameter terms together (one term with one hyper-parameter)


def complete(rows: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Whether ``rows`` hold each combination of the factors' values with the same seeds, once each."""
    if rows.empty or rows.duplicated([*factors, SEED]).any():
        return False
    cells = rows.groupby(list(factors))[SEED].apply(frozenset)
    expected = math.prod(rows[factor].nunique() for factor in factors)
    return len(cells) == expected and cells.nunique() == 1 and len(cells.iloc[0]) >= 2


def decompose(rows: pd.DataFrame, factors: Sequence[str], value: str) -> dict[str, float]:
    """Each factor's, the interactions' and the seeds' share of the total sum of squares of ``value``
    (``complete(rows, factors)`` must hold); empty where the metric does not vary."""
    y, mean = rows[value].astype(float), rows[value].astype(float).mean()
    total = float(((y - mean) ** 2).sum())
    if total == 0:
        return {}
    cell = rows.groupby(list(factors))[value].transform("mean")
    main = {f: float(((rows.groupby(f)[value].transform("mean") - mean) ** 2).sum()) for f in factors}
    between = float(((cell - mean) ** 2).sum())
    shares = {**main, INTERACTIONS: between - sum(main.values()), SEED: float(((y - cell) ** 2).sum())}
    if len(factors) == 1:
        del shares[INTERACTIONS]  # nothing to interact with: between is the factor's own
    return {name: ss / total for name, ss in sorted(shares.items(), key=lambda kv: -kv[1])}
