"""Training-step time and peak memory of every preset against full fine-tuning and HF PEFT, side by side.

    .venv/bin/python benchmarks/step_time.py                 # all presets, 3 rounds
    .venv/bin/python benchmarks/step_time.py --rounds 5 --presets lora_attn prefix

Model: a MiniLM-sized BERT (hidden 384, 6 layers, 12 heads, FFN 1536; random init from its config) with a
2-way classification head; batch 16 × 128 tokens; AdamW; CPU threads as given (default: all cores).

Each measurement runs in its own process and times ``--steps`` steps after ``--warmup`` steps; its median
step is one sample. Memory is that process's peak: its max RSS (``getrusage``), and the training peak =
max RSS − the RSS once Python, torch, transformers and peft are imported and before the model is built
(the ~0.4 GB of library code is the same for every configuration and would only dilute the ratios).
Rounds interleave every configuration (full, ours, peft, full, ...), so slow drift of the machine hits
all of them alike. Reported: the median over rounds and the spread (min–max).

Preset sizes are the paper's BART-large sizes scaled by 384/1024, except those compared with HF PEFT,
which use PEFT's common sizes (LoRA q,v r=8; LoRA FFN r=64; prefix l=30; prompt l=30).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"lora_attn": 8, "lora_ffn": 64, "prefix": 30, "prompt_tuning": 30}
PEFT = ("lora_attn", "lora_ffn", "prefix", "prompt_tuning")
BATCH, LENGTH = 16, 128


def design(name: str):
    import peft_space

    sites = peft_space.preset(name).sites
    if name in SIZES:
        return peft_space.preset(name, **{f"{s}.bottleneck": SIZES[name] for s in sites})
    return peft_space.preset(name, **{f"{s}.bottleneck": max(1, round(m["bottleneck"] * 384 / 1024))
                                      for s, m in sites.items() if "bottleneck" in m})


def peft_model(name: str, model):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    configs = {
        "lora_attn": lambda: LoraConfig(r=8, lora_alpha=32, target_modules=["query", "value"], lora_dropout=0.0),
        "lora_ffn": lambda: LoraConfig(r=64, lora_alpha=256, lora_dropout=0.0,
                                       target_modules=r".*layer\.\d+\.(intermediate|output)\.dense"),
        "prefix": lambda: PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=30, prefix_projection=True,
                                             encoder_hidden_size=800),
        "prompt_tuning": lambda: PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=30),
    }
    return get_peft_model(model, configs[name]())


def rss_mb() -> float:
    """Current resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker(name: str, impl: str, steps: int, warmup: int, threads: int) -> dict:
    import resource

    import peft  # noqa: F401  (imported by every configuration, so the baseline is the same)
    import torch
    import transformers

    import peft_space

    baseline = rss_mb()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                     intermediate_size=1536, vocab_size=30522, num_labels=2)
    model = transformers.BertForSequenceClassification(config).train()
    budget = None
    if impl == "ours":
        budget = peft_space.count_budget(peft_space.apply(model, design(name)), model.peft_design).pct_analytic
    elif impl == "peft":
        model = peft_model(name, model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    ids = torch.randint(1000, 30000, (BATCH, LENGTH))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (BATCH,))}
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ms": 1000 * statistics.median(times), "rss_mb": peak, "train_mb": peak - baseline,
            "trainable": sum(p.numel() for p in parameters), "budget_pct": budget}


def measure(name: str, impl: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", name, impl, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} ({min(samples):.2f}–{max(samples):.2f})"


def main() -> None:
    import peft_space

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=peft_space.presets())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.warmup, args.threads)))
        return

    runs = [("full", "full")] + [(p, "ours") for p in args.presets] + [(p, "peft") for p in args.presets if p in PEFT]
    samples: dict[tuple[str, str], list[dict]] = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for i, run in enumerate(runs):
            samples[run].append(measure(*run, args))
            print(f"round {round_ + 1}/{args.rounds} · {i + 1}/{len(runs)} {run[1]:>4} {run[0]:<22} "
                  f"{samples[run][-1]['ms']:8.1f} ms  {samples[run][-1]['rss_mb']:7.0f} MB", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps({f"{k[1]}:{k[0]}": v for k, v in samples.items()}, indent=1))

    full = samples[("full", "full")]
    print(f"\nMiniLM-sized BERT, batch {BATCH}×{LENGTH}, {args.threads} threads, {args.rounds} rounds × {args.steps} steps; "
          f"full fine-tuning: {summary([s['ms'] for s in full])} ms/step, {summary([s['rss_mb'] for s in full])} MB max RSS, "
          f"{summary([s['train_mb'] for s in full])} MB training peak")
    print("\n| preset | budget % (analytic) | ms/step | × full FT time | × full FT training peak | × full FT max RSS "
          "| × HF PEFT time | × HF PEFT training peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.presets:
        ours = samples[(name, "ours")]
        time_ratio = [o["ms"] / f["ms"] for o, f in zip(ours, full)]
        train_ratio = [o["train_mb"] / f["train_mb"] for o, f in zip(ours, full)]
        rss_ratio = [o["rss_mb"] / f["rss_mb"] for o, f in zip(ours, full)]
        row = (f"| {name} | {ours[0]['budget_pct']:.2f} | {summary([o['ms'] for o in ours])} | {summary(time_ratio)} "
               f"| {summary(train_ratio)} | {summary(rss_ratio)} |")
        if (name, "peft") in samples:
            theirs = samples[(name, "peft")]
            row += (f" {summary([o['ms'] / t['ms'] for o, t in zip(ours, theirs)])} "
                    f"| {summary([o['train_mb'] / t['train_mb'] for o, t in zip(ours, theirs)])} |")
        else:
            row += " – | – |"
        print(row)


if __name__ == "__main__":
    main()
