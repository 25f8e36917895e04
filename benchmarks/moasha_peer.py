"""Syne Tune's MOASHA as a peer method on the tabular benchmark, run by Syne Tune's own simulator backend.

    .venv/bin/pip install -e ".[peer]"        # syne-tune 0.16.0 (+ xgboost, statsmodels: ≈ 700 MB); no version
                                              # of the project's own dependencies changes
    .venv/bin/python -m benchmarks.moasha_peer                                  # as shipped
    .venv/bin/python -m benchmarks.moasha_peer --rank-fix --out benchmarks/results/moasha_peer_rankfix.json
    .venv/bin/python -m benchmarks.search_quality   # scores both files beside the project's own methods

Writes per repetition the fields of ``search_quality.Replay`` (``spent``, ``returned``, ``trials``), so the same
code scores it. Runs 20 repetitions in about 1.5 minutes.

Mapping onto Syne Tune. The table (reference rows excluded) becomes a ``BlackboxTabular``: configuration space
``{"design_id": choice(64 ids)}`` (plus a constant), fidelity ``step`` (9, 27, 81), objectives per (design, seed, step):
``valid_error`` (1 - valid_metric; MOASHA has one ``do_minimize`` for every metric, so accuracy is flipped),
``budget_pct``, ``valid_metric`` and ``seconds`` (cumulative, the simulator's ``elapsed_time_attr``). Seeds are
stacked in sorted order and ``UserBlackboxBackend(seed=r % 2)`` pins them, so repetition ``r`` sees table seed
``search.tabular.replica(table, r)`` as our replay does. ``MOASHA(metrics=["valid_error", "budget_pct"],
time_attr="step", grace_period=9, reduction_factor=3, max_t=81)`` with its default ``NonDominatedPriority()``
runs through ``Tuner`` + ``SimulatorCallback`` on ``--concurrency`` simulated workers (Syne Tune's defaults:
tuner loop every 5 simulated seconds, 0.05 s delays; only the tuner's real compute time is kept off the simulated
clock, so runs are reproducible). Its results, in simulated-time order, are then counted as
``search_quality.replay`` counts them: each report adds its step minus the trial's previous one; each trial
reaching step 81 adds a point (spent, Pareto front of the completed trials by the validation metric it saw vs
budget); it stops once ``budget * 81`` steps are spent.

How MOASHA (syne_tune 0.16.0, ``optimizer/schedulers/multiobjective/moasha.py``) differs. It proposes designs
by uniform random sampling of the space (with repetition; no searcher, and it draws from the global NumPy
generator, so ``random_seed`` alone does not seed it: we also call ``np.random.seed(r)``), whereas our replay
pairs the schedulers with an Optuna ``DesignSearcher``. Like Ray's ASHA and our ``ParetoASHAScheduler`` it is
asynchronous and stopping-type (one bracket, rungs 9/27, no pausing or promotion, decisions never revisited;
the first trial at a rung continues), judging a trial the moment it reports at a rung against the points
recorded there, its own included. It ranks a rung by non-dominated sorting with an ε-net inside each front
(``nondominated_sort``): seed = best ``valid_error``, then greedily the member farthest, in *unscaled Euclidean*
distance on (error, budget %), from those picked, and continues a trial iff its 0-based rank / n <= 1/3. Ray's
ASHA instead compares one metric against the (1 - 1/3) percentile of the earlier points; ours keeps the top
⌊n/3⌋ points (whole fronts, the one that only partly fits ordered by an ε-net on log budget only), and lets a
trial through a rung of < 3 points if nothing there dominates it. Caveat, reproduced on 0.16.0:
``Bracket.on_result`` reads the output of ``nondominated_sort`` (an ordering of point indices) as a per-point
rank, so the decision is right only while the whole rung is one front; otherwise it depends on the arrival index
of a point in the worst front, e.g. a newcomer that dominates all three earlier points at its rung is stopped.
``--rank-fix`` swaps in a correct ranking (for comparison only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import syne_tune
from syne_tune import Tuner
from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular
from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
from syne_tune.config_space import choice, randint
from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import compute_epsilon_net, pareto_efficient

from search import tabular
from search.pareto import front

HERE = Path(__file__).parent

OBJECTIVES = ["valid_error", "budget_pct", "valid_metric", "seconds"]


def blackbox(table: pd.DataFrame) -> BlackboxTabular:
    """The table as a Syne Tune blackbox: one categorical (design_id), fidelity step, seeds in sorted order."""
    table = table.assign(valid_error=1.0 - table["valid_metric"])
    ids, seeds, steps = sorted(table["design_id"].unique()), tabular.seeds(table), sorted(table["step"].unique())
    cube = (table.set_index(["design_id", "seed", "step"])[OBJECTIVES]
            .reindex(pd.MultiIndex.from_product([ids, seeds, steps])).to_numpy(float))
    if np.isnan(cube).any():
        raise ValueError("the table is not complete over designs × seeds × steps")
    # A constant second key: with one hyper-parameter, BlackboxTabular's lookup (``.loc[(id,)]`` on a flat index)
    # fails under pandas 3.
    return BlackboxTabular(hyperparameters=pd.DataFrame({"design_id": ids, "table": "tabular"}),
                           configuration_space={"design_id": choice(ids), "table": "tabular"},
                           fidelity_space={"step": randint(1, int(max(steps)))},
                           objectives_evaluations=cube.reshape(len(ids), len(seeds), len(steps), len(OBJECTIVES)),
                           fidelity_values=np.array(steps), objectives_names=OBJECTIVES)


class FixedRanking(MOPriority):
    """``--rank-fix``: per-point ranks of NonDominatedPriority's intended order (fronts, ε-net within each)."""

    def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
        remaining, order = np.arange(len(objectives)), []
        while remaining.size:
            mask = pareto_efficient(objectives[remaining])
            members = remaining[mask]
            order += list(members[np.argsort(compute_epsilon_net(objectives[members], dim=0))])
            remaining = remaining[~mask]
        return np.argsort(order)


class Backend(UserBlackboxBackend):
    """Syne Tune's tabular simulator, except that the tuner's own compute time is not added to simulated time
    (it is ~ms for MOASHA; left in, a busy machine could change which results share a tuner loop)."""

    def _advance_by_outside_time(self) -> None:
        pass


class Recorder(SimulatorCallback):
    """SimulatorCallback that also notes when each trial starts (simulated time) and how far each got."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[int, float] = {}
        self.reached: dict[int, int] = {}

    def on_start_trial(self, trial: Any) -> None:
        self.started[trial.trial_id] = self._time_keeper.time()

    def on_trial_result(self, trial: Any, status: str, result: dict[str, Any], decision: str) -> None:
        super().on_trial_result(trial, status, result, decision)
        self.reached[trial.trial_id] = int(result["step"])


def search(bb: BlackboxTabular, rep: int, budget_steps: int, concurrency: int, rank_fix: bool) -> dict[str, Any]:
    """One MOASHA run, then its history counted as ``search_quality.replay`` counts it."""
    np.random.seed(rep)
    random.seed(rep)
    scheduler = MOASHA(bb.configuration_space, metrics=["valid_error", "budget_pct"], do_minimize=True,
                       time_attr="step", grace_period=9, reduction_factor=3, max_t=81, random_seed=rep,
                       multiobjective_priority=FixedRanking() if rank_fix else None)
    recorder = Recorder()

    def exhausted(status: Any) -> bool:  # steps spent: the furthest step each trial reported, summed
        return sum(recorder.reached.values()) >= budget_steps

    tuner = Tuner(trial_backend=Backend(bb, elapsed_time_attr="seconds", seed=rep % bb.num_seeds),
                  scheduler=scheduler, stop_criterion=exhausted, n_workers=concurrency, sleep_time=0,
                  callbacks=[recorder], results_update_interval=1e9, print_update_interval=1e9, save_tuner=False,
                  tuner_name=f"moasha-peer-{rep}")
    with contextlib.redirect_stdout(io.StringIO()):  # Tuner prints every trial start and stop
        tuner.run()
    results = recorder.dataframe().sort_values("st_tuner_time", kind="stable")
    out: dict[str, Any] = {"seed": rep, "spent": [], "returned": [], "trials": 0}
    spent, reached, done, cutoff = 0, {}, [], float("inf")
    for row in results.itertuples():
        step = int(row.step)
        spent += step - reached.get(row.trial_id, 0)
        reached[row.trial_id] = step
        if step == 81:
            done.append((row.valid_metric, row.budget_pct, row.config_design_id))
            keep = front([(m, b) for m, b, _ in done])
            out["spent"].append(spent)
            out["returned"].append(sorted({done[i][2] for i in keep}))
        if spent >= budget_steps:
            cutoff = row.st_tuner_time
            break
    if spent < budget_steps:
        raise RuntimeError(f"rep {rep}: the tuner stopped after {spent} of {budget_steps} steps")
    out["trials"] = sum(t < cutoff for t in recorder.started.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(HERE / "tabular" / "sst2_minilm.csv"))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=30.0, help="full-training equivalents per search")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rank-fix", action="store_true", help="rank rungs correctly (see the docstring)")
    parser.add_argument("--out", default=str(HERE / "results" / "moasha_peer.json"))
    args = parser.parse_args()
    logging.getLogger("syne_tune").setLevel(logging.ERROR)
    everything = tabular.load(args.table)
    table = everything[~everything["reference"].astype(bool)]
    bb = blackbox(table)
    start, reps = time.perf_counter(), []
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="moasha-peer-") as logs:  # the Tuner writes its logs there
            os.environ["SYNETUNE_FOLDER"] = logs
            reps.append(search(bb, rep, int(args.budget * int(table["step"].max())), args.concurrency, args.rank_fix))
        print(f"rep {rep}: {reps[-1]['trials']} trials, {len(reps[-1]['spent'])} completed, "
              f"front {len(reps[-1]['returned'][-1]) if reps[-1]['returned'] else 0}", flush=True)
    method = "syne-tune/moasha" + ("+rank-fix" if args.rank_fix else "")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"method": method, "syne_tune": syne_tune.__version__, "reps": reps}))
    print(f"{args.out}: {args.reps} reps in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
