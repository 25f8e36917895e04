"""Search quality on the tabular benchmark: how much of the true front each searcher × scheduler finds, per step.

    python -m benchmarks.search_quality                  # every method, 20 repetitions (≈ minutes on 2 cores)
    python -m benchmarks.search_quality --reps 5 --methods tpe/pareto_asha:loss,random/none,random/none+confirm

Each repetition replays one search against `benchmarks/tabular/sst2_minilm.csv` (its space = the table's grid):
the project's own `DesignSearcher` (Optuna sampler, budget known before training) proposes designs and the real
scheduler objects (Ray's `ASHAScheduler`, `search.pareto_asha.ParetoASHAScheduler`, or none) decide at every
recorded evaluation, as Ray Tune would call them. Trials run `--concurrency` at a time on simulated workers whose
clock is the table's recorded `seconds` (Syne Tune's simulator backend does the same): results arrive in the
order a real cluster would see them, and the steps spent are counted exactly. The search runs until it has spent
`--budget` full-training equivalents (FTE: one configuration — a design and its hyper-parameters — trained to
the last step). `--table`/`--spec` pick the ground truth: the design table (fixed lr 1e-3) or the joint one over
(design, lr), `sst2_minilm_lr`, where a spec with `search_train` searches the learning rate and one without it
replays its fixed `train.lr` rows (the baseline).

What a search **returns** at any moment is the Pareto front of its completed trials by the validation metric it
saw (one table seed, noisy). It is scored with the table's seed-mean **test** metric: the hypervolume of those
designs as a fraction of the true front's (`search.tabular.true_front`). Repetitions differ in the search seed
and the table seed. Output: a markdown table (median and inter-quartile range of the fraction at several
budgets, FTE to reach 90/95/99%, how often each true-front design is returned) and a PNG of HV against steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

HERE = Path(__file__).parent
TABLE = HERE / "tabular" / "sst2_minilm.csv"
SPEC = HERE / "tabular" / "sst2_minilm.yaml"
METRIC = "accuracy"  # the table's task metric (SST-2)
SAMPLERS = ("random", "tpe", "nsga2", "gp")
SCHEDULERS = ("none", "asha:accuracy", "asha:loss", "pareto_asha:accuracy", "pareto_asha:loss")
CONFIRMED = ("random/none+confirm", "tpe/none+confirm", "random/asha:accuracy+confirm", "tpe/asha:accuracy+confirm",
             "random/asha:loss+confirm", "tpe/asha:loss+confirm", "random/pareto_asha:loss+confirm",
             "tpe/pareto_asha:loss+confirm", "random/pareto_asha:accuracy+confirm")  # the front re-trained with one more seed


@dataclass
class Trial:  # what Ray's schedulers read of a trial
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Replay:
    """One search's history: after each completion, the steps spent so far and the designs it would return."""

    spent: list[int] = field(default_factory=list)
    returned: list[list[str]] = field(default_factory=list)
    trials: int = 0


def parse_method(name: str) -> tuple[str, str, int]:
    """"random/asha:loss+confirm" -> ("random", "asha:loss", 1): sampler, scheduler and confirmation seeds."""
    sampler, kind = name.split("/")
    scheduler_kind, marker, seeds = kind.partition("+confirm")
    return sampler, scheduler_kind, int(seeds or 1) if marker else 0


def make_scheduler(spec: Any, kind: str) -> Any:
    """The scheduler a spec with ``scheduler``/``asha_metric`` set from ``kind`` ("asha:loss") would run."""
    from search.assemble import scheduler

    name, _, metric = kind.partition(":")
    return scheduler(dataclasses.replace(spec, scheduler=name, asha_metric=metric or None))


def replay(table: Any, spec: Any, sampler: str, scheduler_kind: str, seed: int, budget_steps: int,
           concurrency: int, confirm: int = 0, searcher: Callable[..., Any] | None = None) -> Replay:
    """Run one search against the table until ``budget_steps`` optimiser steps are spent. With ``confirm`` seeds,
    each point of the history is what ``--confirm-seeds`` would return had the search stopped there: its front's
    designs re-trained with ``confirm`` more seeds (every step of that counted), the front again from the medians.
    ``searcher``: what builds the searcher instead of ``DesignSearcher`` (``benchmarks/budget_spread.py``)."""
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from peft_space import Design
    from search import tabular
    from search.samplers import make_sampler
    from search.searcher import DesignSearcher

    max_t = int(table["step"].max())
    budgets = table.groupby("design_id")["budget_pct"].first().to_dict()
    searcher = (searcher or DesignSearcher)(spec.space(), metric=METRIC, mode="max", budget_of=lambda d: budgets[d.id],
                              cap=100.0, study_name="replay", storage=optuna.storages.InMemoryStorage(),
                              sampler=lambda s: make_sampler(sampler, concurrency, s), seed=seed)
    scheduler = make_scheduler(spec, scheduler_kind)
    scheduler.set_search_properties(None, None)
    clock, events, order, spent = 0.0, [], 0, 0
    curves: dict[str, Any] = {}
    reached: dict[str, int] = {}
    done: list[tuple[float, float, str]] = []  # (validation metric, budget, configuration id) of completed trials
    history = Replay()
    running = 0
    while spent < budget_steps:
        while running < concurrency:
            tid = f"t{order}"
            config = searcher.suggest(tid)
            if config in (None, Searcher.FINISHED):
                break
            design = Design.from_dict(config["design"]).id
            configuration = tabular.lookup(table, design, {**spec.train, **config.get("train", {})})
            curves[tid] = tabular.curve(table, configuration, seed).to_dict("records")
            trial = Trial(tid, {"design": configuration, "budget": config["budget"]})
            scheduler.on_trial_add(None, trial)
            heapq.heappush(events, (clock + curves[tid][0]["seconds"], order, trial, 0))
            reached[tid], order, running = 0, order + 1, running + 1
        if not events:
            break
        clock, _, trial, k = heapq.heappop(events)
        row = curves[trial.trial_id][k]
        spent += int(row["step"]) - reached[trial.trial_id]
        reached[trial.trial_id] = int(row["step"])
        result = {METRIC: row["valid_metric"], "loss": row["valid_loss"], "budget": trial.config["budget"],
                  "step": int(row["step"]), "total_steps": max_t, "status": "running"}
        last = k == len(curves[trial.trial_id]) - 1
        decision = TrialScheduler.CONTINUE if last else scheduler.on_trial_result(None, trial, result)
        if last or decision == TrialScheduler.STOP:
            result["status"] = "completed" if last else "stopped"
            scheduler.on_trial_complete(None, trial, result)
            searcher.on_trial_complete(trial.trial_id, result)
            running -= 1
            if last:
                done.append((row["valid_metric"], trial.config["budget"], trial.config["design"]))
                returned, extra = confirmed_front(table, done, seed, confirm)
                history.spent.append(spent + extra)
                history.returned.append(returned)
        else:
            heapq.heappush(events, (clock + curves[trial.trial_id][k + 1]["seconds"] - row["seconds"], order,
                                    trial, k + 1))
            order += 1
    history.trials = len(curves)
    return history


def confirmed_front(table: Any, done: list[tuple[float, float, str]], seed: int, confirm: int) -> tuple[list[str], int]:
    """The configurations a search returns from its completed trials ``done``, and the steps its confirmation
    costs: none without ``confirm``; else every front configuration re-trained with seeds seed+1..seed+confirm (to the last
    step) and the front recomputed with each one's median validation metric over its seeds (``search.conclude.confirm``)."""
    from search import tabular
    from search.pareto import front

    keep = front([(m, b) for m, b, _ in done])
    if not confirm:
        return sorted({done[i][2] for i in keep}), 0
    metrics = [m for m, _, _ in done]
    for i in keep:
        others = [tabular.curve(table, done[i][2], seed + k).iloc[-1]["valid_metric"] for k in range(1, confirm + 1)]
        metrics[i] = statistics.median([done[i][0], *others])
    again = front([(m, b) for m, (_, b, _) in zip(metrics, done)])
    return sorted({done[i][2] for i in again}), len(keep) * confirm * int(table["step"].max())


def ceiling(table: Any, reference: tuple[float, float], true_hv: float) -> dict[str, float]:
    """What no search that trains each configuration once can beat: every configuration trained (designs ×
    hyper-parameter values FTE), the front by one seed's validation metric (per table seed), and by the median over
    the table's seeds; scored like the searches."""
    from search import tabular
    from search.pareto import front

    last = table[table["step"] == table["step"].max()]
    fraction = {}
    for seed in tabular.seeds(table):
        rows = last[last["seed"] == seed]
        keep = front(list(zip(rows["valid_metric"], rows["budget_pct"])))
        fraction[f"seed {seed}"] = tabular.scored_hypervolume(table, [rows["config_id"].iloc[i] for i in keep],
                                                              reference) / true_hv
    medians = last.groupby("config_id").agg(metric=("valid_metric", "median"), budget=("budget_pct", "first"))
    keep = front(list(zip(medians["metric"], medians["budget"])))
    fraction["median of seeds"] = tabular.scored_hypervolume(table, list(medians.index[keep]), reference) / true_hv
    return fraction


def fraction_at(history: Replay, steps: int, table: Any, reference: tuple[float, float], true_hv: float) -> float:
    from search import tabular

    returned = [r for s, r in zip(history.spent, history.returned) if s <= steps]
    return tabular.scored_hypervolume(table, returned[-1], reference) / true_hv if returned else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--spec", default=str(SPEC))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=30.0, help="full-training equivalents per search")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--methods", default="", help="SAMPLER/SCHEDULER,... (default: every combination)")
    parser.add_argument("--out", default=str(HERE / "results" / "search_quality"),
                        help="PREFIX of the .json/.md/.png written; methods already in PREFIX.json are not run again")
    parser.add_argument("--fixed-lr", type=float, help="replay the methods with this learning rate fixed instead of "
                                                         "searched (a joint table's baseline)")
    parser.add_argument("--baseline", help="PREFIX.json of another run on the same table (the --fixed-lr one): its "
                                           "best method at 10 FTE is drawn dashed in the plot")
    parser.add_argument("--peer", nargs="*", default=[str(p) for p in sorted((HERE / "results").glob("moasha_peer*.json"))],
                        help="search histories of peer methods (benchmarks/moasha_peer.py), scored the same way")
    args = parser.parse_args()
    logging.getLogger("optuna").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's ``group``

    from search import conclude, tabular
    from search.spec import load

    everything = tabular.load(args.table)
    table = everything[~everything["reference"].astype(bool)]
    spec = load(args.spec)
    if args.fixed_lr is not None:
        spec = dataclasses.replace(spec, search_train={}, train={**spec.train, "lr": args.fixed_lr})
    max_t = int(table["step"].max())
    # a search's metric reference (chance), the table's budget range
    reference = (conclude.reference(spec)[0], float(table["budget_pct"].max()) * 1.1)
    truth = tabular.true_front(table)
    true_hv = tabular.scored_hypervolume(table, list(truth["config_id"]), reference)
    methods = args.methods.split(",") if args.methods else [
        f"{s}/{k}" for s in SAMPLERS for k in SCHEDULERS] + list(CONFIRMED)
    grid = np.linspace(1, args.budget, int(args.budget))  # FTE at which the curve is read
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    setting = {"reps": args.reps, "budget": args.budget, "concurrency": args.concurrency, "table": Path(args.table).name,
               **({"fixed_lr": args.fixed_lr} if args.fixed_lr is not None else {})}
    saved = json.loads(Path(f"{out}.json").read_text()) if Path(f"{out}.json").exists() else {}
    results: dict[str, Any] = saved.get("results", {}) if saved.get("setting") == setting else {}  # resumable

    limits = ceiling(table, reference, true_hv)
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None

    def score(name: str, histories: list[Replay], seconds: float) -> None:
        curves = [[fraction_at(h, int(f * max_t), table, reference, true_hv) for f in grid] for h in histories]
        found = [set(h.returned[-1]) if h.returned else set() for h in histories]
        results[name] = {"curves": curves, "trials": [h.trials for h in histories],
                         "found": {d: sum(d in f for f in found) / len(found) for d in truth["config_id"]}}
        print(f"{name:28s} final {statistics.median(c[-1] for c in curves):.3f} "
              f"@10 FTE {statistics.median(at(c, 10) for c in curves):.3f} ({seconds:.0f} s)", flush=True)
        Path(f"{out}.json").write_text(json.dumps({"setting": setting, "grid": list(grid), "true_hv": true_hv,
                                                    "reference": reference, "true_front": truth.to_dict("records"),
                                                    "results": results}, default=float))
        Path(f"{out}.md").write_text(report(results, grid, truth, limits) + "\nCeiling (every design trained to the end, "
                                     "the front chosen on validation, scored on test): "
                                     + ", ".join(f"{k} {v:.3f}" for k, v in limits.items()) + ".\n\n"
                                     + found_table(results, truth) + "\n" + paper_order(everything))
        plot(results, grid, Path(f"{out}.png"), limits["median of seeds"], baseline)

    partial = Path(f"{out}.partial.json")  # repetitions of the method under way (GP: minutes each)
    for name in methods:
        if name in results:
            continue
        start = time.perf_counter()
        done = json.loads(partial.read_text()) if partial.exists() else {}
        histories = [Replay(**h) for h in done.get(name, [])] if done.get("setting") == setting else []
        sampler, scheduler_kind, confirm = parse_method(name)
        for rep in range(len(histories), args.reps):
            histories.append(replay(table, spec, sampler, scheduler_kind, rep, int(args.budget * max_t),
                                    args.concurrency, confirm))
            partial.write_text(json.dumps({"setting": setting, name: [vars(h) for h in histories]}))
        score(name, histories, time.perf_counter() - start)
        partial.unlink(missing_ok=True)
    for path in args.peer:  # Syne Tune's MOASHA, run by benchmarks/moasha_peer.py
        peer = json.loads(Path(path).read_text())
        score(peer["method"], [Replay(r["spent"], r["returned"], r["trials"]) for r in peer["reps"]], 0.0)
    if baseline and results:  # methods all resumed from PREFIX.json: the plot is drawn again with the baseline
        plot(results, grid, Path(f"{out}.png"), limits["median of seeds"], baseline)
    print(Path(f"{out}.md").read_text())


PAPER = {  # He et al. Table 2, SST-2 dev accuracy at ~0.5% of RoBERTa-base; our nearest rows on MiniLM
    "full fine-tuning": ("Full-FT (100%)", 94.6), "bitfit(attn) + bitfit(ffn)": ("BitFit (0.1%)", 93.7),
    "prefix:16": ("Prefix (0.5%)", 94.0), "lora_attn:16": ("LoRA (0.5%)", 94.2),
    "adapter_ffn:16": ("Adapter (0.5%)", 94.2), "pa_ffn:16": ("Adapter (0.5%)", 94.2),
    "prefix:4 + scaled_pa_ffn:16": ("MAM Adapter (0.5%)", 94.2),
}


def paper_order(table: Any) -> str:
    """The paper's Table 2 question on the table: the methods near 0.5%, by seed-mean test accuracy."""
    from search import tabular

    designs = tabular.final(table)
    designs = designs.loc[designs.groupby("design_id")["valid_metric"].idxmax()]  # a design's best lr, on validation
    rows = designs[designs["name"].isin(PAPER)].sort_values("test_metric", ascending=False)
    lines = ["| ours (MiniLM, 81 steps) | budget % | test accuracy, seed mean (min–max) | paper (RoBERTa-base) | paper SST-2 |",
             "|---|---:|---:|---|---:|"]
    for row in rows.itertuples():
        paper, score = PAPER[row.name]
        lines.append(f"| {row.name} | {row.budget_pct:.3f} | {100 * row.test_metric:.1f} ({100 * row.test_min:.1f}–"
                     f"{100 * row.test_max:.1f}) | {paper} | {score} |")
    return "\n".join(lines) + "\n"


def at(curve: list[float], fte: int) -> float:
    """The curve's value after ``fte`` full-training equivalents (the last one if the search spent fewer)."""
    return curve[min(fte, len(curve)) - 1]


def reach(curve: list[float], grid: np.ndarray, level: float) -> str:
    hit = next((f for f, v in zip(grid, curve) if v >= level), None)
    return f"{hit:.0f}" if hit is not None else "–"


def report(results: dict[str, Any], grid: np.ndarray, truth: Any, limits: dict[str, float]) -> str:
    marks = sorted({m for m in (5, 10, 20) if m < grid[-1]} | {int(grid[-1])})
    one_seed = statistics.mean(v for k, v in limits.items() if k.startswith("seed "))  # every configuration once
    head = ("| method | " + " | ".join(f"HV @{m} FTE" for m in marks) + " | FTE to 90% / 95% / 99% (median curve) "
            f"| of the one-seed ceiling ({one_seed:.3f}) @10 / @{marks[-1]} FTE | trials | true-front designs returned |")
    lines = [head, "|" + "---|" * (len(marks) + 5)]
    for name, r in sorted(results.items(), key=lambda kv: -statistics.median(at(c, 10) for c in kv[1]["curves"])):
        curves = np.array(r["curves"])
        cells = []
        for m in marks:
            q1, med, q3 = np.percentile([at(c, m) for c in curves], [25, 50, 75])
            cells.append(f"{med:.3f} ({q1:.3f}–{q3:.3f})")
        median_curve = list(np.median(curves, axis=0))
        reaches = " / ".join(reach(median_curve, grid, level) for level in (0.90, 0.95, 0.99))
        found = statistics.mean(r["found"].values())
        of_ceiling = " / ".join(f"{statistics.median(at(c, m) for c in curves) / one_seed:.1%}" for m in (10, marks[-1]))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {reaches} | {of_ceiling} "
                     f"| {statistics.median(r['trials']):.0f} "
                     f"| {found:.0%} |")
    return "\n".join(lines) + "\n"


def found_table(results: dict[str, Any], truth: Any) -> str:
    """How often each true-front design is among the designs a method returns (share of repetitions)."""
    legend = "; ".join(f"{k} = {row.name}{_at_lr(row)} ({row.budget_pct:.2f}%, {100 * row.test_metric:.1f})"
                       for k, row in enumerate(truth.itertuples(), 1))
    lines = [f"True-front designs (budget, seed-mean test accuracy): {legend}.", "",
             "| method | " + " | ".join(str(k) for k in range(1, len(truth) + 1)) + " |",
             "|---|" + "---:|" * len(truth)]
    for name, r in sorted(results.items()):
        lines.append(f"| {name} | " + " | ".join(f"{100 * r['found'][d]:.0f}" for d in truth["config_id"]) + " |")
    return "\n".join(lines) + "\n"


def _at_lr(row: Any) -> str:
    return f" at lr {row.lr:g}" if hasattr(row, "lr") else ""


def plot(results: dict[str, Any], grid: np.ndarray, path: Path, confirmed_ceiling: float,
         baseline: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    def best(fte: int) -> list[str]:
        return sorted(results, key=lambda n: -statistics.median(at(c, fte) for c in results[n]["curves"]))[:3]

    baselines = [n for n in results if n in ("random/none", "random/asha:accuracy") or n.startswith("syne-tune/")]
    shown: dict[str, list[str]] = {}  # methods with identical curves (NSGA-II's first generation is random) share a line
    for name in dict.fromkeys(best(10) + best(int(grid[-1])) + baselines):
        twin = next((k for k in shown if results[k]["curves"] == results[name]["curves"]), name)
        shown.setdefault(twin, []).append(name)
    for name, twins in shown.items():
        curves = np.array(results[name]["curves"])
        q1, med, q3 = np.percentile(curves, [25, 50, 75], axis=0)
        (line,) = ax.plot(grid, med, label=" = ".join(twins))
        ax.fill_between(grid, q1, q3, alpha=0.15, color=line.get_color())
    if baseline:  # the other run's best method at 10 FTE, e.g. the same searches with the learning rate fixed
        name, other = max(baseline["results"].items(), key=lambda kv: statistics.median(at(c, 10) for c in kv[1]["curves"]))
        fixed = f" (lr {baseline['setting']['fixed_lr']:g} fixed)" if "fixed_lr" in baseline["setting"] else " (baseline)"
        ax.plot(grid, np.median(np.array(other["curves"]), axis=0), color="grey", ls="--", label=name + fixed)
    lowest = min(float(np.median([at(c, 5) for c in results[n]["curves"]])) for n in shown)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.005)  # from 5 FTE on: where the methods differ
    ax.axhline(0.99, color="grey", lw=0.5, ls="--")
    ax.axhline(0.95, color="grey", lw=0.5, ls=":")
    ax.axhline(confirmed_ceiling, color="black", lw=0.8, ls="-.",
               label=f"ceiling: every design, median of its seeds ({confirmed_ceiling:.3f})")
    ax.set_xlabel("optimiser steps spent (full-training equivalents)")
    ax.set_ylabel("hypervolume of the returned front / true front's\n(scored with the table's seed-mean test accuracy)")
    ax.set_title("Search quality on the tabular benchmark (median and inter-quartile band)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
