"""Generate the tabular benchmark: every design of a finite spec's grid, trained for real, exported as one CSV.

    python benchmarks/make_table.py                       # benchmarks/tabular/sst2_minilm.{yaml -> csv}
    python benchmarks/make_table.py SPEC --out TABLE.csv  # your own grid (menus at every site, sampler: grid)
    python benchmarks/make_table.py --gpu                 # the same grid larger, on a GPU: sst2_minilm_gpu.csv

It runs the spec with `peft-search`'s own machinery (Ray Tune, the Optuna searcher enqueuing every (design,
seed), the real trainer, MLflow records), then full fine-tuning as reference rows (its own learning rate:
the grid's is far too high for it), then reads every completed trial back from MLflow into the table
(`search.tabular`). Interrupted, it resumes where it stopped: run the same command again. Values added to the
spec's menus later are trained on the next run, and only they.

``--gpu`` sizes the same grid for one GPU (``GPU`` below): the whole SST-2 training set, 2 seeds, rungs 27, 81,
243 and 729 steps of batch 32, bf16 frozen weights, 8 trials packed onto the GPU; its own stores (runs-gpu/).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "tabular"
GPU = {"name": "table-sst2-minilm-gpu", "seeds": 2, "asha": {"grace_period": 27, "reduction_factor": 3, "max_steps": 729},
       "concurrency": 8, "resources": {"cpu": 2, "gpu": 0.125}, "root": "benchmarks/tabular/runs-gpu",
       "storage": "sqlite:///benchmarks/tabular/runs-gpu/optuna.db",
       "tracking_uri": "sqlite:///benchmarks/tabular/runs-gpu/mlflow.db"}
GPU_TRAIN = {"eval_batch": 256, "eval_every": 27, "test_examples": 0, "threads": 2}  # and gpu_search's GPU sizing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(HERE / "sst2_minilm.yaml"))
    parser.add_argument("--out", default=None, help="the table (default: the spec's name .csv beside it)")
    parser.add_argument("--full-lr", type=float, default=5e-5, help="learning rate of the full fine-tuning rows")
    parser.add_argument("--export-only", action="store_true", help="only read the records back into the table")
    parser.add_argument("--gpu", action="store_true", help="the grid at GPU size (see above)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from search import tabular
    from search.space import grid, menu_label

    spec = table_spec(args.spec, gpu=args.gpu)
    out = Path(args.out or Path(args.spec).with_name(Path(args.spec).stem + ("_gpu" if args.gpu else "") + ".csv"))
    start = time.perf_counter()
    if not args.export_only:
        tabular.generate(spec, full_lr=args.full_lr)
    names = {design.id: menu_label(design, spec.space()) for design in grid(spec.space())} | {"full": "full fine-tuning"}
    table = tabular.export(spec.tracking_uri, spec.name, spec.task_def.validation_metric, names, out)
    print(f"{out}: {len(table)} rows, {table['design_id'].nunique()} designs, {table['seed'].nunique()} seeds "
          f"({time.perf_counter() - start:.0f} s)")


def table_spec(path: str | Path, *, gpu: bool) -> Any:
    """The grid's spec, validated; at GPU size with ``gpu``."""
    from gpu_search import GPU_TRAIN as GPU_SIZE
    from search.spec import parse, read

    data = read(path)
    if gpu:
        data |= {**GPU, "train": {**data["train"], **GPU_SIZE, **GPU_TRAIN}}
    return parse(data)


if __name__ == "__main__":
    main()
