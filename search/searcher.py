"""Optuna as Ray Tune's searcher, with what Ray's ``OptunaSearch`` does not do for us.

1. **Budget cap.** A sampled design over the cap (or one the architecture cannot take) is never trained: it
   is told to Optuna as ``FAIL`` with the reason in the ``infeasible`` user attribute (``search.schema.Attrs``), and the next design is
   asked for. Ray's ``num_samples`` therefore counts trained designs only.
2. **ASHA-stopped trials are pruned, not complete.** Ray hands a trial stopped by the scheduler to the searcher
   exactly like a finished one. A trial whose last result did not reach ``total_steps`` is told ``PRUNED``
   (the step and metric it reached are kept as user attributes: multi-objective studies take no intermediate
   values), so the Pareto front only ever holds full-budget trials.
3. **The Optuna storage is the source of truth.** Every tell goes to the SQLAlchemy (or journal) storage at
   once; the searcher's own checkpoint holds only the Ray-trial → Optuna trial map. On
   restore, Optuna trials left ``RUNNING`` by a dead driver are marked ``FAIL``; a Ray trial that re-runs
   after the restore and finishes is added as a new trial with the same parameters, so every finished trial
   is in the study exactly once. The number of designs to train is the study's ``trials`` attribute, and the
   searcher (not Ray's ``num_samples``) ends the search when it is reached: trials a killed driver finished
   after Ray's last checkpoint still count.
4. **Concurrency is limited here, not by Ray's ``ConcurrencyLimiter``.** The limiter's count of live trials is
   restored from the driver's checkpoint, and a trial Ray finished after that checkpoint stays in it for good: a
   resumed search then never asks again and hangs. The searcher counts the trials it asked and was not yet told of
   (none on restore) and those Ray re-runs after a restore, from their first report. It ends the search
   (``FINISHED``, which Ray takes as final) only once none runs: one that fails may still have to be asked again.
5. **A trial Ray gave up on is asked again, once.** The trainers report their own failures (divergence, out of
   memory, a broken plugin) as a failed result; an error reaches the searcher only when Ray could not run the
   trial (its node or worker died and ``max_failures`` retries did not get it through: Ray Tune takes a second
   failure event of the dead actor as final). Such a trial (one Ray re-runs after a restore too) stays FAIL, does not
   count towards the target, and its design is enqueued again as a new trial (``retry_of``); a retry that errors
   too is not retried.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from peft_space import Design, DesignError
from search.schema import Attrs, Status
from search.space import Space, params_of, suggest, suggest_train, train_params
from search.stores import open_study
from search.trial_config import suggestion
from trainers import SE

log = logging.getLogger(__name__)

BUDGET = Attrs.BUDGET  # the second objective: analytic % of the pretrained model, head excluded
MAX_REJECTIONS = 1000  # consecutive infeasible designs before the cap is declared unreachable


class DesignSearcher(Searcher):
    """Asks Optuna for designs of ``space`` and tells it (metric, budget) for each finished trial."""

    max_concurrent = 0  # trials at once (Ray's max_concurrent_trials, via set_max_concurrency); 0: no limit

    def __init__(self, space: Space, *, metric: str, mode: str, budget_of: Callable[[Design], float],
                 cap: float, study_name: str, storage: str | optuna.storages.BaseStorage, sampler: Callable[[int], optuna.samplers.BaseSampler],
                 seed: int = 0, points: Mapping[str, Design] | None = None,
                 cases: Sequence[tuple[Design, dict[str, Any], int]] = ()) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space, self.budget_of, self.cap = space, budget_of, cap
        self.study_name, self.storage, self.sampler, self.seed = study_name, storage, sampler, seed
        self.trials: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self._live: dict[str, optuna.Trial] = {}  # trials asked by this driver and not yet told
        self._rerunning: set[str] = set()  # trials asked before a restore that Ray re-runs (seen reporting)
        self._study: optuna.Study | None = None
        self.cases = list(cases)  # a grid's (design, hyper-parameters, seed), enqueued one at a time (_enqueue_case)
        if not self.study.trials:  # a new study: the paper's methods first
            for name, design in (points or {}).items():
                self.study.enqueue_trial(params_of(design, space), user_attrs={Attrs.PRESET: name})
        self._fail_interrupted()  # a study a dead driver left behind (before Ray saved any state)

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = open_study(self.study_name, self.storage, self.mode, self.sampler(self.seed))
        return self._study

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles the searcher: the study re-opens from its storage
        return {**self.__dict__, "_study": None, "_live": {}, "_rerunning": set()}

    # -- Ray's Searcher interface --------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        running = len(self._live) + len(self._rerunning)
        if len(self._handed_out()) >= self.study.user_attrs.get(Attrs.TARGET, float("inf")):
            # FINISHED ends Ray's search for good: not while a trial runs that may fail and be asked again
            return None if running else Searcher.FINISHED
        if 0 < self.max_concurrent <= running:
            return None  # Ray asks again when a trial ends
        for _ in range(MAX_REJECTIONS):
            self._enqueue_case()
            self._reseed()
            trial = self.study.ask()
            design, train = suggest(trial, self.space), suggest_train(trial, self.space)
            try:
                budget = self.budget_of(design)
            except DesignError as err:
                self._reject(trial, str(err))
                continue
            if budget > self.cap:
                self._reject(trial, f"budget {budget:.4f}% is over the cap {self.cap}%")
                continue
            for key, value in {Attrs.DESIGN_ID: design.id, Attrs.DESIGN: design.to_json(), Attrs.BUDGET: budget,
                               Attrs.TRAIN: train, Attrs.RAY_TRIAL_ID: trial_id}.items():
                trial.set_user_attr(key, value)
            self.trials[trial_id], self._live[trial_id] = trial.number, trial
            return suggestion(design, budget, optuna_trial=trial.number, preset=trial.user_attrs.get(Attrs.PRESET, ""),
                              seed=trial.user_attrs.get(Attrs.SEED), train=train)  # a grid case's seed
        raise DesignError("budget_cap", self.cap, f"a cap some design of the space meets ({MAX_REJECTIONS} sampled "
                                                   "designs in a row were over it or did not fit the model)")

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True  # the limit is ours: Ray's ConcurrencyLimiter passes every call through

    def _enqueue_case(self) -> None:
        """Enqueue the first case that is neither done, under way nor waiting. A case whose trial a dead driver
        interrupted is open again unless Ray re-runs that trial: every (design, seed) is trained exactly once."""
        if not self.cases:
            return
        rerun = set(self.trials.values())
        covered = {t.user_attrs[Attrs.CASE] for t in self.study.get_trials(deepcopy=False) if Attrs.CASE in t.user_attrs
                   and (Attrs.INTERRUPTED not in t.user_attrs or t.number in rerun or Attrs.RERUN_OF in t.user_attrs)}
        k = next((k for k in range(len(self.cases)) if k not in covered), None)
        if k is not None:
            case = self.cases[k]  # (design, seed) in a searcher pickled before cases carried hyper-parameters
            design, train, seed = case if len(case) == 3 else (case[0], {}, case[1])
            params = {**params_of(design, self.space), **train_params(train, self.space)}
            self.study.enqueue_trial(params, user_attrs={Attrs.SEED: seed, Attrs.CASE: k})

    def _reseed(self) -> None:
        """A fresh sampler seeded by the count of the study's trials asked so far (those a dead driver left
        unfinished aside): the designs drawn depend only on the seed and the study, not on this process's history, so
        a resumed search draws what the uninterrupted one would have. Enqueued trials not yet asked do not count:
        the paper's methods are enqueued together, and each samples what it leaves open (its learning rate) with a
        seed of its own."""
        asked = sum(1 for t in self.study.get_trials(deepcopy=False)
                    if Attrs.INTERRUPTED not in t.user_attrs and t.state != TrialState.WAITING)
        self.study.sampler = self.sampler(self.seed + asked)

    def _handed_out(self) -> set[str]:
        """Ray trials that count towards the target: those that finished (a dead driver's included) and those
        this driver runs or will re-run. A trial interrupted with a dead driver and unknown to Ray does not count."""
        finished = {t.user_attrs[Attrs.RAY_TRIAL_ID] for t in self.study.get_trials(deepcopy=False)
                    if Attrs.RAY_TRIAL_ID in t.user_attrs and t.state != TrialState.RUNNING
                    and Attrs.INTERRUPTED not in t.user_attrs and Attrs.RETRIED not in t.user_attrs}
        return finished | set(self.trials)

    def _reject(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(Attrs.INFEASIBLE, reason)
        self.study.tell(trial, state=TrialState.FAIL)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.trials and trial_id not in self._live:
            self._rerunning.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._rerunning.discard(trial_id)
        number = self.trials.get(trial_id)
        if number is None:
            return
        state, values, attrs = outcome(result, error, self.metric)
        live = self._live.pop(trial_id, None)
        if live is not None:
            for key, value in attrs.items():
                live.set_user_attr(key, value)
            if error and Attrs.RETRY_OF not in live.user_attrs:
                live.set_user_attr(Attrs.RETRIED, True)
                self._retry(live, trial_id)
            self.study.tell(live, values, state=state)
            return
        frozen = self.study.trials[number]  # asked before a restore: failed then, or already told
        if frozen.user_attrs.get(Attrs.INTERRUPTED) and not any(
                t.user_attrs.get(Attrs.RERUN_OF) == number for t in self.study.trials):
            # failed when the driver died, re-run by Ray after the restore: recorded once, as a new trial; if Ray
            # gave up on the re-run (its node died), asked again like a live trial
            retry = error and Attrs.RETRY_OF not in frozen.user_attrs
            attrs |= {Attrs.RERUN_OF: number, **({Attrs.RETRIED: True} if retry else {})}
            self.study.add_trial(optuna.trial.create_trial(
                state=state, values=values, params=frozen.params, distributions=frozen.distributions,
                user_attrs={**frozen.user_attrs, **attrs}))
            if retry:
                self._retry(frozen, trial_id)

    def _retry(self, trial: optuna.Trial | optuna.trial.FrozenTrial, trial_id: str) -> None:
        """Take a trial Ray gave up on (marked ``RETRIED``) off the target's count and enqueue its design again."""
        self.trials.pop(trial_id)  # the retry takes its place
        kept = {k: v for k, v in trial.user_attrs.items() if k in (Attrs.PRESET, Attrs.SEED, Attrs.CASE)}
        self.study.enqueue_trial(trial.params, user_attrs={**kept, Attrs.RETRY_OF: trial.number})

    # -- checkpointing (Ray calls these with its experiment state) -----------------------------------------
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump({"trials": self.trials}, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        self.trials, self._study, self._live, self._rerunning = state["trials"], None, {}, set()
        self._fail_interrupted()

    def _fail_interrupted(self) -> None:
        """Trials left RUNNING by a driver that stopped are failed, with the reason; Ray re-runs them."""
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            live = optuna.Trial(self.study, frozen._trial_id)  # noqa: SLF001 - Optuna has no public by-number handle
            live.set_user_attr(Attrs.INTERRUPTED, "the search driver stopped while this trial ran")
            self.study.tell(live, state=TrialState.FAIL)


def outcome(result: dict[str, Any] | None, error: bool, metric: str) -> tuple[TrialState, list[float] | None, dict]:
    """How a Ray trial's last result reads to Optuna: complete at full budget, pruned if stopped early, else failed."""
    if error or not result or result.get("status") == Status.FAILED or metric not in result:
        return TrialState.FAIL, None, {Attrs.ERROR: (result or {}).get("error") or "the trial raised (see Ray's log)"}
    step, total = int(result.get("step", 0)), int(result.get("total_steps", 0))
    attrs = {Attrs.STEP: step, Attrs.LAST_METRIC: float(result[metric])}
    for key, attr in ((metric + SE, Attrs.METRIC_SE), (f"test_{metric}", Attrs.TEST), (f"test_{metric}{SE}", Attrs.TEST_SE)):
        if key in result:  # standard errors, and the test split's metric (reported, never selected on)
            attrs[attr] = float(result[key])
    if step < total:
        return TrialState.PRUNED, None, {**attrs, Attrs.STOPPED: f"stopped by ASHA at step {step} of {total}"}
    return TrialState.COMPLETE, [float(result[metric]), float(result[BUDGET])], attrs
