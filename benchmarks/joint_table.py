"""What the joint ground truth says: each design at its best learning rate (chosen on validation) against lr 1e-3,
who leaves chance, the true front over (design, lr), the paper's methods at ~0.5% budget, and what matters.

    python -m benchmarks.joint_table                      # reads benchmarks/tabular/sst2_minilm_lr.csv
    python -m benchmarks.joint_table --out benchmarks/results/joint_table.md

Every choice is made on the validation split and reported on test: a design's best learning rate is the one with
the highest seed-mean validation accuracy at the last step, and its test accuracy there is the seed mean with the
seeds' range. A run is at chance when ≥ 95% of its test predictions are one class or its test accuracy is within
one standard error of the majority rate (issue 25). The variance decomposition is ``search.variance`` over the
PEFT rows (design, lr, their interaction, seeds); full fine-tuning's rows are references only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.head_ablation import at_chance  # issue 25's definition, in one place
from search import tabular, variance
from trainers import PREDICTED_SHARE

TABLE = Path(__file__).parent / "tabular" / "sst2_minilm_lr.csv"
FIXED_LR = 1e-3  # the first table's single learning rate
FAMILIES = {"MAM": "prefix:.* \\+ scaled_pa_ffn", "LoRA": "^lora_(?:attn|ffn):[0-9]+$", "PA": "^pa_ffn:",
            "prefix": "^prefix:[0-9]+$", "BitFit": "bitfit", "full fine-tuning": "^full fine-tuning$"}
NEAR = 0.5  # % budget: the paper's methods compared near here


def runs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, seed): its last evaluation, with whether it is at chance."""
    last = table[table["step"] == table.groupby(["config_id", "seed"])["step"].transform("max")].copy()
    last["at_chance"] = [at_chance(acc, se, share) for acc, se, share in
                         zip(last["test_metric"], last["test_metric_se"], last[f"test_{PREDICTED_SHARE}"].fillna(0.0))]
    return last


def best_lr(final: pd.DataFrame) -> pd.DataFrame:
    """Per design: the configuration with the highest seed-mean validation metric."""
    return final.loc[final.groupby("design_id")["valid_metric"].idxmax()].set_index("design_id")


def _at(final: pd.DataFrame, lr: float) -> pd.DataFrame:
    return final[(final["lr"] - lr).abs() < 1e-12].set_index("design_id")


def _acc(row: pd.Series) -> str:
    return f"{row['test_metric']:.3f} [{row['test_min']:.3f}, {row['test_max']:.3f}]"


def design_table(final: pd.DataFrame, per_run: pd.DataFrame) -> str:
    best, fixed = best_lr(final), _at(final, FIXED_LR)
    chance = per_run.groupby("config_id")["at_chance"].sum()
    lines = ["| design | budget % | best lr (validation) | test at best lr | at chance (of seeds) | test at lr 1e-3 |",
             "|---|---:|---:|---:|---:|---:|"]
    for design_id, row in best.sort_values(["reference", "budget_pct"]).iterrows():
        at_fixed = _acc(fixed.loc[design_id]) if design_id in fixed.index else "—"
        lines.append(f"| {row['name']} | {row['budget_pct']:.3f} | {row['lr']:g} | {_acc(row)} | "
                     f"{int(chance[row['config_id']])}/{int(row['seeds'])} | {at_fixed} |")
    return "\n".join(lines)


def chance_summary(final: pd.DataFrame, per_run: pd.DataFrame) -> str:
    peft = per_run[~per_run["reference"].astype(bool)]
    chosen = per_run[per_run["config_id"].isin(best_lr(final[~final["reference"].astype(bool)])["config_id"])]
    fixed = peft[(peft["lr"] - FIXED_LR).abs() < 1e-12]
    return (f"runs at chance: {chosen['at_chance'].sum()} of {len(chosen)} (design, best-lr) runs "
            f"({chosen['at_chance'].mean():.1%}); {fixed['at_chance'].sum()} of {len(fixed)} at lr 1e-3 "
            f"({fixed['at_chance'].mean():.1%}); {peft['at_chance'].sum()} of {len(peft)} PEFT runs over every lr")


def front_summary(table: pd.DataFrame) -> str:
    front = tabular.true_front(table)
    lines = ["| on the true front (design, lr) | lr | budget % | test (seed mean) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['lr']:g} | {r['budget_pct']:.3f} | {r['test_metric']:.3f} |"
              for _, r in front.iterrows()]
    mam = front[front["name"].str.contains(FAMILIES["MAM"])]
    verdict = (f"MAM is on the front: {', '.join(f'{n} at lr {lr:g}' for n, lr in zip(mam['name'], mam['lr']))}"
               if len(mam) else "MAM is on no point of the true front")
    return "\n".join(lines) + "\n\n" + verdict


def near_budget(final: pd.DataFrame) -> str:
    """Each method family's design nearest ``NEAR`` % (full fine-tuning as itself), tuned vs at lr 1e-3."""
    best, fixed = best_lr(final), _at(final, FIXED_LR)
    lines = [f"| method (nearest {NEAR}%) | design | budget % | tuned: lr, test | fixed lr 1e-3: test |",
             "|---|---|---:|---|---|"]
    rows = []
    for family, pattern in FAMILIES.items():
        members = best[best["name"].str.contains(pattern)]
        if members.empty:
            continue
        design_id = (members["budget_pct"] - NEAR).abs().idxmin()
        row = members.loc[design_id]
        at_fixed = _acc(fixed.loc[design_id]) if design_id in fixed.index else "— (not trained at 1e-3)"
        rows.append((row["test_metric"], f"| {family} | {row['name']} | {row['budget_pct']:.3f} | "
                                         f"{row['lr']:g}, {_acc(row)} | {at_fixed} |"))
    lines += [line for _, line in sorted(rows, key=lambda r: -r[0])]
    return "\n".join(lines)


def decomposition(per_run: pd.DataFrame) -> str:
    peft = per_run[~per_run["reference"].astype(bool)].rename(columns={"design_id": "design"})
    if not variance.complete(peft, ["design", "lr"]):
        return "the PEFT rows are not a complete grid yet: no decomposition"
    parts = {m: variance.decompose(peft, ["design", "lr"], m) for m in ("valid_metric", "test_metric")}
    lines = ["| part | share of validation variance | share of test variance |", "|---|---:|---:|"]
    lines += [f"| {k} | {parts['valid_metric'][k]:.1%} | {parts['test_metric'].get(k, 0):.1%} |"
              for k in parts["valid_metric"]]
    return "\n".join(lines)


def report(path: Path) -> str:
    table = tabular.load(path)
    final, per_run = tabular.final(table), runs(table)
    configs, seeds = table["config_id"].nunique(), table["seed"].nunique()
    hours = per_run["seconds"].sum() / 3600
    head = (f"{path.name}: {table['design_id'].nunique()} designs, {configs} configurations, {seeds} seeds, "
            f"{len(per_run)} runs, {per_run['step'].max()} steps each; {hours:.2f} h of trial time")
    return "\n\n".join([head, design_table(final, per_run), chance_summary(final, per_run), front_summary(table),
                        near_budget(final), decomposition(per_run)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    text = report(args.table)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
