"""Pareto-aware ASHA (``search.pareto_asha``) on hand-made rung results, beside Ray's scalar ASHA fed the same.

No Ray cluster: the schedulers are called as Tune calls them (``on_trial_add`` before a trial's first result,
then ``on_trial_result`` with the flattened result) on stub ``Trial`` objects; they read only ``trial_id``.
Rungs at steps 1, 3 and 9 (grace period 1, reduction factor 3, max_t 9) unless a test says otherwise.
"""

import math

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.pareto_asha import ParetoASHAScheduler, milestones

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
RUNGS = {"time_attr": "step", "max_t": 9, "grace_period": 1, "reduction_factor": 3}


def pareto(metric="acc", mode="max", **options):
    return ParetoASHAScheduler(metric=metric, mode=mode, budget_attr="budget", **{**RUNGS, **options})


def scalar(metric="acc", mode="max"):
    return ASHAScheduler(metric=metric, mode=mode, **RUNGS)


def report(scheduler, results, *, step=1, metric="acc"):
    """Feed ``results`` = [(trial id, metric, budget %), ...] in order, all at ``step``; each trial's decision.
    A trial is added before its first report (step 1), as Tune does."""
    decisions = {}
    for name, value, budget in results:
        trial = Trial("__fake", trial_id=name, stub=True)
        if step == 1:
            scheduler.on_trial_add(None, trial)
        decisions[name] = scheduler.on_trial_result(None, trial, {"step": step, metric: value, "budget": budget})
    return decisions


def last_decision(scheduler, recorded, arrival, **kw):
    """The decision on ``arrival`` once ``recorded`` were reported before it at the same rung."""
    report(scheduler, recorded, **kw)
    return report(scheduler, [arrival], **kw)[arrival[0]]


# Expensive accurate designs, two poor ones, then a cheap design slightly less accurate than the best.
EXPENSIVE = [("e1", 0.90, 2.0), ("e2", 0.89, 2.5), ("e3", 0.895, 3.0), ("d1", 0.50, 4.0), ("d2", 0.60, 3.5)]
CHEAP = ("cheap", 0.85, 0.1)


def test_a_cheap_slightly_worse_design_on_the_front_continues_where_scalar_asha_stops_it():
    # 6 results, quota 2; the front is {cheap, e1} (e1 beats e2, e3, d1, d2 on both objectives).
    assert last_decision(pareto(), EXPENSIVE, CHEAP) == CONTINUE
    # Scalar ASHA: 0.85 is below the 2/3 percentile of the others' accuracies (0.893).
    assert last_decision(scalar(), EXPENSIVE, CHEAP) == STOP


def test_a_dominated_design_stops_where_scalar_asha_continues_it():
    recorded = [("a", 0.90, 1.0), ("b", 0.60, 0.5), ("f1", 0.50, 2.0), ("f2", 0.45, 3.0), ("f3", 0.40, 4.0)]
    dominated = ("x", 0.85, 1.5)  # a is more accurate and cheaper
    # 6 results, quota 2: the front {b, a} fills it.
    assert last_decision(pareto(), recorded, dominated) == STOP
    # Scalar ASHA: the second best accuracy of six is above its cutoff (0.567).
    assert last_decision(scalar(), recorded, dominated) == CONTINUE
    # The same accuracy at a budget nothing beats (it even dominates b) continues: the front is {y, a}.
    assert last_decision(pareto(), recorded, ("y", 0.85, 0.1)) == CONTINUE


def test_before_a_rung_holds_reduction_factor_results_its_first_front_continues():
    rung = pareto()
    assert report(rung, [("first", 0.70, 1.0)]) == {"first": CONTINUE}  # alone at the rung
    # 2 results < 3: no quota yet, so a trial continues if nothing recorded dominates it...
    asha = scalar()
    report(asha, [("first", 0.70, 1.0)])
    assert report(rung, [("cheaper", 0.60, 0.5)]) == {"cheaper": CONTINUE}
    assert report(asha, [("cheaper", 0.60, 0.5)]) == {"cheaper": STOP}  # below the only result seen
    # ...and stops at once if something does.
    assert last_decision(pareto(), [("first", 0.70, 1.0)], ("dearer_worse", 0.65, 1.5)) == STOP


def test_later_arrivals_are_judged_against_what_was_recorded():
    rung = pareto()
    assert report(rung, [("a", 0.70, 1.0), ("b", 0.80, 3.0)]) == {"a": CONTINUE, "b": CONTINUE}
    # Third result, quota 1: the front is {a, b}, headed by b (the most accurate); c (dominated by a) stops.
    assert report(rung, [("c", 0.60, 2.0)]) == {"c": STOP}
    # d beats a, b and c on both objectives; e is dominated by d alone and quota 1 is d's.
    assert report(rung, [("d", 0.85, 0.9), ("e", 0.82, 1.0)]) == {"d": CONTINUE, "e": STOP}
    # Six results, c's counted although c stopped: quota 2, so d and then the best of the second front {e, f}.
    assert report(rung, [("f", 0.84, 2.0)]) == {"f": CONTINUE}
    # A trial is judged once per rung: at rung 3, a's second report is not judged and its first stays recorded.
    assert report(rung, [("a", 0.75, 1.0)], step=3) == {"a": CONTINUE}
    assert report(rung, [("a", 0.10, 1.0)], step=4) == {"a": CONTINUE}
    assert report(rung, [("b", 0.72, 1.5)], step=3) == {"b": STOP}  # dominated by a's 0.75, not by 0.10
    # Decisions stand: d now dominates a at rung 3, but a went on.
    assert report(rung, [("d", 0.80, 0.9)], step=3) == {"d": CONTINUE}


def test_mode_min_ranks_a_loss():
    losses = [(name, round(1 - acc, 3), budget) for name, acc, budget in EXPENSIVE]
    cheap = ("cheap", 0.15, 0.1)
    assert last_decision(pareto("loss", "min"), losses, cheap, metric="loss") == CONTINUE
    assert last_decision(scalar("loss", "min"), losses, cheap, metric="loss") == STOP
    # The highest loss at the highest budget: dominated by all (read as "max" it would head the ranking).
    assert last_decision(pareto("loss", "min"), [*losses, cheap], ("worst", 0.90, 9.0), metric="loss") == STOP


def kept(make, front):
    """Which of ``front`` continue when each is the last to reach the rung (a fresh scheduler each time)."""
    return {i for i, arrival in enumerate(front)
            if last_decision(make(), front[:i] + front[i + 1:], arrival) == CONTINUE}


def test_promotions_from_one_front_spread_along_the_budget_axis():
    # Nine designs on one front: each doubles the budget and gains a point of accuracy. Quota: 3 of 9.
    front = [(f"t{i}", 0.70 + 0.01 * i, 0.01 * 2**i) for i in range(9)]
    # The most accurate, the cheapest and the one halfway between them in log budget.
    assert kept(pareto, front) == {0, 4, 8}
    assert kept(scalar, front) == {6, 7, 8}  # scalar ASHA: the three dearest
    # With one slot (3 of 3), the most accurate takes it, as with scalar ASHA.
    assert kept(pareto, front[::4]) == kept(scalar, front[::4]) == {2}


def test_the_example_of_the_module_docstring():
    rung = [("a", 0.80, 4.0), ("b", 0.78, 0.3), ("c", 0.70, 0.05), ("d", 0.79, 1.2), ("e", 0.75, 2.0),
            ("f", 0.60, 6.0)]
    assert kept(pareto, rung) == {0, 2}  # a and c
    assert 2 not in kept(scalar, rung)


def test_a_zero_budget_is_the_cheap_end_of_the_front():
    # The frozen model (task head only) counts 0%: the far end of the budget axis, not a log(0) error.
    front = [("frozen", 0.60, 0.0), ("b", 0.62, 0.01), ("c", 0.64, 0.02), ("d", 0.66, 0.04), ("e", 0.80, 1.0),
             ("f", 0.82, 2.0)]
    assert last_decision(pareto(), front[1:], front[0]) == CONTINUE  # quota 2: f, then the frozen model
    assert last_decision(pareto(), front[:3] + front[4:], front[3]) == STOP


def test_a_result_without_metric_or_budget_is_not_judged_and_nan_ranks_last():
    rung = pareto()
    trial = Trial("__fake", trial_id="failed", stub=True)
    rung.on_trial_add(None, trial)
    assert rung.on_trial_result(None, trial, {"step": 1, "budget": 1.0, "status": "failed"}) == CONTINUE
    assert rung.on_trial_result(None, trial, {"step": 1, "acc": 0.5}) == CONTINUE
    assert report(rung, [("a", 0.70, 1.0)]) == {"a": CONTINUE}  # the failed reports recorded nothing
    assert report(rung, [("diverged", math.nan, 2.0)]) == {"diverged": STOP}
    with pytest.raises(ValueError, match="metric"):
        ParetoASHAScheduler(**RUNGS).on_trial_add(None, trial)


def test_rungs_max_t_and_completed_trials():
    for grace, max_t, factor in [(20, 200, 3), (1, 9, 3), (25, 225, 3), (2, 4, 2), (1, 10, 2.5)]:
        ray_rungs = ASHAScheduler(max_t=max_t, grace_period=grace, reduction_factor=factor)._brackets[0]._rungs
        assert milestones(grace, max_t, factor) == sorted(milestone for milestone, _ in ray_rungs)
    assert report(pareto(), [("a", 0.99, 0.1)], step=9) == {"a": STOP}  # max_t reached
    rung = pareto(stop_last_trials=False)
    assert report(rung, [("a", 0.90, 1.0)], step=9) == {"a": CONTINUE}
    # A completed trial's last result is recorded at its rung and judges later arrivals there.
    done = Trial("__fake", trial_id="done", stub=True)
    rung.on_trial_complete(None, done, {"step": 9, "acc": 0.95, "budget": 0.5})
    assert report(rung, [("late", 0.92, 0.8)], step=9) == {"late": STOP}  # 3 results, quota 1: "done" heads it


def test_save_and_restore_round_trip_the_rungs(tmp_path):
    original = pareto()
    report(original, [*EXPENSIVE, CHEAP])
    report(original, [("e1", 0.91, 2.0)], step=3)
    original.save(str(tmp_path / "scheduler.pkl"))
    restored = pareto()
    restored.restore(str(tmp_path / "scheduler.pkl"))
    assert restored._rungs == original._rungs
    assert restored.debug_string() == original.debug_string()  # rung counts and num_stopped
    # Decided on the restored rungs: dominated by e1 at rung 1, by e1 (alone at rung 3) at rung 3.
    late = [("x", 0.80, 2.2)]
    assert report(restored, late) == report(original, late) == {"x": STOP}
    assert report(pareto(), late) == {"x": CONTINUE}  # a fresh scheduler would let it through
    assert report(restored, [("e2", 0.85, 2.5)], step=3) == {"e2": STOP}
