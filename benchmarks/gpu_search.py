"""A real search on the GPU: trials packed onto it against one trial per GPU, with wall time, GPU use and the front.

    .venv/bin/python -m benchmarks.gpu_search --out gpu.md            # MiniLM, full SST-2, 32 trials: 4 per GPU, then 1
    .venv/bin/python -m benchmarks.gpu_search --packing 4 --out gpu.md   # one arm (e.g. one arm per device call)
    .venv/bin/python -m benchmarks.gpu_search --tiny                  # the smoke profile on the CPU: does it all run?

Each arm is the embedded default search (`peft-search run`: MiniLM, random designs under a 2% budget, ASHA on
the validation loss, the front confirmed with one more seed) at GPU size: the whole SST-2 training set less the
2,000 sentences carved for validation, the 872 dev sentences as test, batch 32, ASHA rungs 100, 300, 900 and 2,700
steps (evaluations only there), frozen weights in bf16, 4 CPU threads per trial. Arms differ only in packing:
``--packing 4`` gives every trial ``gpu: 0.25`` and runs 4 at once per GPU; ``--packing 1`` one trial per GPU.

Measured per arm, in its own fresh stores (``--root``/packing-K): the driver's wall time (``peft-search run``,
Ray's start included), trials per hour, how the trials ended, the GPU's utilisation and memory sampled every
0.5 s by ``nvidia-smi`` while it ran (median and 10th–90th percentile over the arm), per worker the GPU memory its
tensors hold after each of its trials is released (``torch.cuda.memory_allocated``, each trial's last report; the
resident memory on a CPU), and its front with each point's validation metric (what the search selected on) and test
metric (what it reports). An arm whose section is
already in ``--out`` is skipped, so an interrupted run resumes with the arms it has not measured.
``--tiny``: the project's smoke profile (4 trials of 4 steps on 64 sentences) with no GPU, packing 2 against 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.step_time import emit

BIN = Path(sys.executable).parent
SAMPLE_MS = 500
GPU_TRAIN = {"batch_size": 32, "micro_batch": 32, "train_examples": 0, "eval_examples": 0, "base_dtype": "bf16"}
GPU_ASHA = {"grace_period": 100, "reduction_factor": 3, "max_steps": 2700}
MEMORY = ("cuda_allocated_mb", "memory_rss_mb")  # what a trial's last report says its worker holds once released


def spec(packing: int, *, gpus: int, trials: int, cpus: int, root: Path, tiny: bool, model: str | None) -> dict:
    """The spec of one arm: the embedded default at GPU size (or its smoke profile), ``packing`` trials per GPU."""
    from search import spec as specs

    data = specs.read(specs.DEFAULT)
    if tiny:
        data = specs.smoke(data)
        resources, concurrency = {"cpu": cpus, "gpu": 0}, packing
    else:
        ladder = {"eval_every": GPU_ASHA["grace_period"], "eval_growth": GPU_ASHA["reduction_factor"]}
        data |= {"trials": trials, "asha": GPU_ASHA, "train": {**data["train"], **GPU_TRAIN, **ladder}}
        resources, concurrency = {"cpu": cpus, "gpu": 1 / packing}, packing * gpus
    data["train"] = {**data["train"], "threads": cpus}
    return data | {"name": f"gpu-search-{packing}", "concurrency": concurrency, "resources": resources,
                   "root": str(root), "storage": f"sqlite:///{root}/optuna.db",
                   "tracking_uri": f"sqlite:///{root}/mlflow.db", **({"model": model} if model else {})}


def gpu_use(lines: list[str]) -> dict[str, float]:
    """Median and 10th/90th percentiles of utilisation (%) and the peak memory (MiB) in ``nvidia-smi`` samples
    (``utilization.gpu, memory.used`` per line, one line per GPU; lines it could not read, e.g. ``[N/A]``, skipped)."""
    samples = []
    for line in lines:
        try:
            samples.append(tuple(float(field) for field in line.split(",")))
        except ValueError:
            continue
    if not samples:
        return {}
    utilisation = sorted(use for use, _ in samples)
    deciles = statistics.quantiles(utilisation, n=10) if len(utilisation) > 1 else utilisation * 9
    return {"median": statistics.median(utilisation), "p10": deciles[0], "p90": deciles[-1],
            "memory": max(memory for _, memory in samples), "samples": len(samples)}


def run_arm(data: dict, log: Path) -> tuple[float, dict[str, float]]:
    """Run one arm's search with ``nvidia-smi`` sampling beside it; its wall time and GPU use."""
    root = Path(data["root"])
    shutil.rmtree(root, ignore_errors=True)  # a fresh search: an arm cut short is measured again whole
    root.mkdir(parents=True)
    spec_file = root / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    samples = root / "nvidia-smi.csv"
    sampler = None
    if shutil.which("nvidia-smi"):
        sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                    "--format=csv,noheader,nounits", f"-lms={SAMPLE_MS}"],
                                   stdout=samples.open("w"), stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    try:
        with log.open("w") as out:
            subprocess.run([str(BIN / "peft-search"), "run", str(spec_file), "--verbose", "1"], stdout=out,
                           stderr=subprocess.STDOUT, check=True)
    finally:
        wall = time.perf_counter() - start
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
    return wall, gpu_use(samples.read_text().splitlines() if samples.exists() else [])


def memory_after_trials(root: Path) -> dict[int, list[dict[str, Any]]]:
    """Per worker process (Ray's ``pid``), what it held after each of its trials was released and how the trial
    ended, in the order it ran them: each trial's last result in Ray's experiment folders under the search's
    ``root`` (a trial ASHA stopped reports none)."""
    last = [json.loads(lines[-1]) for path in sorted((root / "ray").glob("*/*/result.json"))
            if (lines := path.read_text().splitlines())]
    workers: dict[int, list[dict[str, Any]]] = {}
    for result in sorted((r for r in last if MEMORY[1] in r), key=lambda r: r["timestamp"]):
        workers.setdefault(result["pid"], []).append({key: result[key] for key in (*MEMORY, "status") if key in result})
    return workers


def memory_lines(workers: dict[int, list[dict[str, Any]]]) -> list[str]:
    """One line per worker: the GPU memory of its tensors after each trial (the resident memory where no GPU ran)."""
    if not workers:
        return ["Memory after each trial: none reported (no trial ran to its end)", ""]
    key = MEMORY[0] if any(MEMORY[0] in t for trials in workers.values() for t in trials) else MEMORY[1]
    what = "GPU memory of torch's tensors" if key == MEMORY[0] else "Resident memory (no GPU)"
    lines = [f"{what} after each trial is released, per worker, in the order it ran them (`{key}`, MiB):", ""]
    lines += [f"- worker {n}: " + ", ".join(f"{t[key]:.1f}" for t in trials)
              for n, trials in enumerate(workers.values(), 1)]
    return [*lines, ""]


def outcome(data: dict) -> tuple[Any, dict[str, int]]:
    """The arm's front read back from MLflow (validation and test metric), and how its trials ended."""
    import dashboards

    trials = dashboards.trials(data["tracking_uri"], data["name"])
    return dashboards.front(trials), trials[~trials.confirmation].status.value_counts().to_dict()


def section(packing: int, data: dict, wall: float, use: dict[str, float], front: Any, ended: dict[str, int],
            memory: dict[int, list[dict[str, Any]]]) -> list[str]:
    trials = sum(ended.values())
    gpu = (f"{use['median']:.0f} ({use['p10']:.0f}–{use['p90']:.0f}) | {use['memory']:.0f}" if use else "– | –")
    lines = [f"### Packing {packing}: `gpu: {data['resources']['gpu']:g}`, {data['concurrency']} at once", "",
             "| wall (min) | trials/h | trials (how they ended) | GPU util. % median (p10–p90) | GPU memory peak (MiB) |",
             "|---|---|---|---|---|",
             f"| {wall / 60:.1f} | {trials / wall * 3600:.0f} | {trials} ({', '.join(f'{n} {s}' for s, n in ended.items())})"
             f" | {gpu} |", "", *memory_lines(memory),
             "Front (validation: selected on; test ± standard error: reported):", "",
             "| budget % | design | validation | test |", "|---|---|---|---|"]
    lines += [f"| {row.budget:.3f} | {row.preset or row.design_id} | {row.metric:.4f} | {row.test:.4f} ± {row.test_se:.4f} |"
              for row in front.sort_values("budget").itertuples()]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packing", type=int, nargs="+", help="trials per GPU, one arm each (default: 4 1; tiny: 2 1)")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=4, help="CPU cores (and torch threads) per trial (tiny: 1)")
    parser.add_argument("--model", help="the base model (default: the spec's, the shipped MiniLM); a path works")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "peft-search-gpu")
    parser.add_argument("--tiny", action="store_true", help="the smoke profile, no GPU (see above)")
    parser.add_argument("--out", type=Path, help="append the Markdown report here too")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    from search import spec as specs

    gpus = torch.cuda.device_count()
    if not gpus and not args.tiny:
        parser.error("no CUDA device: run with --tiny for the CPU profile")
    device = f"{torch.cuda.get_device_name()} × {gpus}" if gpus else "CPU, no GPU"
    done = args.out.read_text() if args.out and args.out.exists() else ""
    arms = {k: spec(k, gpus=gpus, trials=args.trials, cpus=1 if args.tiny else args.cpus,
                    root=args.root / f"packing-{k}", tiny=args.tiny, model=args.model)
            for k in args.packing or ([2, 1] if args.tiny else [4, 1])}
    for data in arms.values():
        specs.parse(data)  # a wrong field fails here, before Ray starts
    if "## A search on the GPU" not in done:
        first = next(iter(arms.values()))
        emit([f"## A search on the GPU{' (tiny)' if args.tiny else ''}: {device}, {datetime.date.today()}", "",
              f"The embedded default spec{' (smoke profile)' if args.tiny else ''} with trials {first['trials']}, "
              f"asha {first['asha']}, train {first['train']}; per arm `peft-search run {args.root}/packing-K/spec.yaml`.",
              ""], args.out)
    walls = {}
    for packing, data in arms.items():
        if f"### Packing {packing}:" in done:
            print(f"packing {packing}: already in {args.out}, skipped", flush=True)
            continue
        print(f"packing {packing}: {data['concurrency']} at once, log {args.root}/packing-{packing}.log", flush=True)
        walls[packing], use = run_arm(data, args.root / f"packing-{packing}.log")
        front, ended = outcome(data)
        memory = memory_after_trials(Path(data["root"]))
        emit(section(packing, data, walls[packing], use, front, ended, memory), args.out)
    if len(walls) > 1:
        slowest = max(walls, key=walls.get)
        emit([f"Wall time against packing {slowest}: " + ", ".join(f"packing {k} {w / walls[slowest]:.2f}×"
                                                                     for k, w in walls.items()), ""], args.out)


if __name__ == "__main__":
    main()
