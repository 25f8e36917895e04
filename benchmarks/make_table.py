"""The tabular benchmark's grid: ``peft-search tabulate`` on the shipped spec, or (``--gpu``) the same grid larger.

    python -m benchmarks.make_table                       # = peft-search tabulate benchmarks/tabular/sst2_minilm.yaml
    python -m benchmarks.make_table --gpu                 # the same grid larger, on a GPU: sst2_minilm_gpu.csv

``--gpu`` sizes the grid for one GPU (``GPU`` below): the whole SST-2 training set, 2 seeds, rungs 27, 81,
243 and 729 steps of batch 32, bf16 frozen weights, 8 trials packed onto the GPU; its own stores (runs-gpu/).
Interrupted, it resumes where it stopped: run the same command again (``search.tabulate``).
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
TABLE_TRAIN = {"eval_batch": 256, "eval_every": 27, "test_examples": 0, "threads": 2}  # with gpu_search's GPU sizing


SPEC = HERE / "sst2_minilm.yaml"
FULL_LR = 5e-5  # full fine-tuning's reference rows: a PEFT learning rate is far too high for it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the grid at GPU size (see above)")
    parser.add_argument("--export-only", action="store_true", help="only read the records back into the table")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from search.tabulate import build

    out = SPEC.with_name(SPEC.stem + ("_gpu" if args.gpu else "") + ".csv")
    start = time.perf_counter()
    table = build(table_spec(SPEC, gpu=args.gpu), out, full_lrs=[FULL_LR], export_only=args.export_only)
    print(f"{out}: {len(table)} rows, {table['design_id'].nunique()} designs, {table['seed'].nunique()} seeds "
          f"({time.perf_counter() - start:.0f} s)")


def table_spec(path: str | Path, *, gpu: bool) -> Any:
    """The grid's spec, validated; at GPU size with ``gpu``."""
    from benchmarks.gpu_search import GPU_TRAIN
    from search.spec import parse, read

    data = read(path)
    if gpu:
        data |= {**GPU, "train": {**data["train"], **GPU_TRAIN, **TABLE_TRAIN}}
    return parse(data)


if __name__ == "__main__":
    main()
