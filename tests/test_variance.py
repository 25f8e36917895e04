"""The exact variance decomposition of a complete grid (search.variance), against sums of squares by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from search import variance

DESIGN = {"a": 0.0, "b": 0.2, "c": 0.4}
LR = {1e-4: -0.1, 1e-3: 0.1}
WANTS = {("c", 1e-4): 0.05, ("c", 1e-3): -0.05}  # c wants the smaller rate: an interaction
SEED = {0: 0.01, 1: -0.01}


def _grid() -> pd.DataFrame:
    return pd.DataFrame([{"design": d, "lr": lr, "seed": s, "metric": DESIGN[d] + LR[lr] + WANTS.get((d, lr), 0) + SEED[s]}
                         for d, lr, s in itertools.product(DESIGN, LR, SEED)])


def test_shares_are_each_parts_sum_of_squares_over_the_total():
    rows = _grid()
    assert variance.complete(rows, ["design", "lr"])
    shares = variance.decompose(rows, ["design", "lr"], "metric")
    n = len(rows)
    design_ss = 4 * sum((v - np.mean(list(DESIGN.values()))) ** 2 for v in DESIGN.values())  # 4 rows per design
    lr_ss = 6 * 2 * (0.1 - 0.05 / 3) ** 2  # c's offsets move each rate's mean by a third of theirs
    interaction_ss = 2 * (2 * (0.05 - 0.05 / 3) ** 2 + 4 * (0.05 / 3) ** 2)  # per seed: c's two cells, the others' four
    seed_ss = n * 0.01 ** 2
    total = ((rows["metric"] - rows["metric"].mean()) ** 2).sum()
    assert shares["design"] == pytest.approx(design_ss / total)
    assert shares["lr"] == pytest.approx(lr_ss / total)
    assert shares["seed"] == pytest.approx(seed_ss / total)
    assert shares["interactions"] == pytest.approx(interaction_ss / total)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert list(shares) == sorted(shares, key=lambda k: -shares[k])


def test_an_incomplete_or_unbalanced_grid_is_not_decomposed():
    rows = _grid()
    assert not variance.complete(rows.iloc[1:], ["design", "lr"])  # a case missing
    assert not variance.complete(pd.concat([rows, rows.iloc[:1]]), ["design", "lr"])  # a case twice
    assert not variance.complete(rows[rows["seed"] == 0], ["design", "lr"])  # one seed: seeds cannot be told apart
    assert variance.decompose(rows.assign(metric=0.5), ["design", "lr"], "metric") == {}
