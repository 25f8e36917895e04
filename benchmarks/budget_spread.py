"""Does spreading proposals across budget levels help? An experiment on the tabular benchmark.

    python -m benchmarks.budget_spread                        # slack 0..4, 20 repetitions, 30 FTE
    python -m benchmarks.budget_spread --methods random/none+confirm --slack 2

A design's budget is exact before it trains, so a searcher can steer proposals along the budget axis without
training anything. Here: budgets fall into factor-2 levels (0.25–0.5%, 0.5–1%, ...; the head alone is a level of
its own); a sampled design whose level already holds more than ``slack`` trials over the emptiest level seen so
far is set aside (told to Optuna as failed, never trained) and the next one is asked for, at most 30 times per
trial. Each method is replayed exactly as `benchmarks/search_quality.py` replays it (same table, seeds, rungs,
step accounting and scoring) with and without the spread, and the median (inter-quartile range) of the hypervolume
fraction is printed at 5, 10, 20 and 30 FTE.
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import math
import statistics
import warnings
from typing import Any

import optuna

from benchmarks import search_quality as sq  # the replay this experiment shares
from search.searcher import DesignSearcher

TRIES = 30  # proposals per trial before the spread gives up and trains what it drew


def level(budget: float) -> int:
    """The factor-2 budget level of a design (the head alone, budget 0, is its own level)."""
    return -99 if budget <= 0 else math.floor(math.log2(budget))


class SpreadSearcher(DesignSearcher):
    """A ``DesignSearcher`` that sets aside designs from budget levels ``slack`` trials ahead of the emptiest."""

    def __init__(self, *args: Any, slack: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slack, self.counts, self.seen = slack, collections.Counter(), set()

    def suggest(self, trial_id: str) -> Any:
        for _ in range(TRIES - 1):
            config = super().suggest(trial_id)
            if not isinstance(config, dict) or self._take(config["budget"]):
                return config
            self.trials.pop(trial_id)
            self._reject(self._live.pop(trial_id), f"spread: budget level {level(config['budget'])} is ahead")
        config = super().suggest(trial_id)  # the spread gives up: the last draw is trained
        if isinstance(config, dict):
            self._take(config["budget"], force=True)
        return config

    def _take(self, budget: float, force: bool = False) -> bool:
        here = level(budget)
        self.seen.add(here)
        if force or self.counts[here] <= min(self.counts[k] for k in self.seen) + self.slack:
            self.counts[here] += 1
            return True
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="random/none+confirm,random/asha:loss+confirm,random/pareto_asha:loss+confirm")
    parser.add_argument("--slack", default="0,1,2,3,4", help="comma-separated slacks to try")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=30.0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    from search import conclude, tabular
    from search.spec import load

    everything = tabular.load(sq.TABLE)
    table = everything[~everything["reference"].astype(bool)]
    spec = load(sq.SPEC)
    max_t = int(table["step"].max())
    reference = (conclude.reference(spec)[0], float(table["budget_pct"].max()) * 1.1)  # as search_quality's
    true_hv = tabular.scored_hypervolume(table, list(tabular.true_front(table)["design_id"]), reference)
    print("| method | spread slack | HV @5 FTE | HV @10 FTE | HV @20 FTE | HV @30 FTE |\n|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        sampler, scheduler_kind, confirm = sq.parse_method(method)
        for slack in [None, *map(int, args.slack.split(","))]:
            searcher = DesignSearcher if slack is None else functools.partial(SpreadSearcher, slack=slack)
            histories = [sq.replay(table, spec, sampler, scheduler_kind, rep, int(args.budget * max_t), 4, confirm,
                                   searcher=searcher) for rep in range(args.reps)]
            cells = []
            for fte in (5, 10, 20, int(args.budget)):
                values = [sq.fraction_at(h, fte * max_t, table, reference, true_hv) for h in histories]
                q1, _, q3 = statistics.quantiles(values, n=4)
                cells.append(f"{statistics.median(values):.3f} ({q1:.3f}–{q3:.3f})")
            print(f"| {method} | {'none' if slack is None else slack} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
