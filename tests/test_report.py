"""The end report from a study: the front and hypervolume recomputed from confirmed medians, and designs within
noise of the front marked instead of silently ranked below it."""

import optuna
import pytest

from search.report import summarise


def study_of(points):
    """A two-objective study with COMPLETE trials (accuracy, budget) and their standard errors."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, budget, se in points:
        study.add_trial(optuna.trial.create_trial(values=[accuracy, budget], user_attrs={
            "budget": budget, "design_id": f"d{budget}", "metric_se": se, "step": 10}))
    return study


def test_confirmed_medians_recompute_the_front_and_the_hypervolume():
    study = study_of([(0.80, 0.1, 0.01), (0.86, 0.5, 0.01), (0.85, 1.0, 0.01)])
    before = summarise(study, "accuracy", True, (0.5, 2.0))
    assert {r.trial for r in before.front} == {0, 1}
    # trial 1's single seed was lucky: its median over seeds is 0.84, below trial 2's 0.85
    after = summarise(study, "accuracy", True, (0.5, 2.0), confirmed={1: 0.84, 0: 0.80})
    assert {r.trial for r in after.front} == {0, 1, 2}
    assert next(r for r in after.rows if r.trial == 1).metric == 0.84
    expected = (0.5 - 0.1) * 0.30 + (1.0 - 0.5) * 0.34 + (2.0 - 1.0) * 0.35
    assert after.hypervolume == pytest.approx(expected) and after.hypervolume != pytest.approx(before.hypervolume)
    # and a confirmed median can take a design off the front
    worse = summarise(study, "accuracy", True, (0.5, 2.0), confirmed={0: 0.79, 1: 0.70})
    assert 1 not in {r.trial for r in worse.front}


def test_designs_within_noise_of_the_front_are_marked():
    study = study_of([(0.85, 0.5, 0.01), (0.84, 1.0, 0.01), (0.70, 2.0, 0.01)])
    rows = {r.trial: r for r in summarise(study, "accuracy", True, (0.5, 3.0)).rows}
    assert rows[0].on_front and rows[0].within_noise_of is None
    assert rows[1].within_noise_of == 0  # 1 point below with a 1.4-point standard error of the difference
    assert rows[2].within_noise_of is None  # 15 points below: really worse
