"""Generate the tabular benchmark: every design of a finite spec's grid, trained for real, exported as one CSV.

    python benchmarks/make_table.py                       # benchmarks/tabular/sst2_minilm.{yaml -> csv}
    python benchmarks/make_table.py SPEC --out TABLE.csv  # your own grid (menus at every site, sampler: grid)

It runs the spec with `peft-search`'s own machinery (Ray Tune, the Optuna searcher enqueuing every (design,
seed), the real trainer, MLflow records), then full fine-tuning as reference rows (its own learning rate:
the grid's is far too high for it), then reads every completed trial back from MLflow into the table
(`search.tabular`). Interrupted, it resumes where it stopped: run the same command again. Values added to the
spec's menus later are trained on the next run, and only they.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HERE = Path(__file__).parent / "tabular"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(HERE / "sst2_minilm.yaml"))
    parser.add_argument("--out", default=None, help="the table (default: the spec's name .csv beside it)")
    parser.add_argument("--full-lr", type=float, default=5e-5, help="learning rate of the full fine-tuning rows")
    parser.add_argument("--export-only", action="store_true", help="only read the records back into the table")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from search import tabular
    from search.space import grid, menu_label
    from search.spec import load

    spec = load(args.spec)
    out = Path(args.out or Path(args.spec).with_suffix(".csv"))
    start = time.perf_counter()
    if not args.export_only:
        tabular.generate(spec, full_lr=args.full_lr)
    names = {design.id: menu_label(design, spec.space()) for design in grid(spec.space())} | {"full": "full fine-tuning"}
    table = tabular.export(spec.tracking_uri, spec.name, spec.task_def.validation_metric, names, out)
    print(f"{out}: {len(table)} rows, {table['design_id'].nunique()} designs, {table['seed'].nunique()} seeds "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
