"""Training-step time and peak memory of every preset against full fine-tuning and HF PEFT, side by side.

    .venv/bin/python -m benchmarks.step_time                 # both models, their presets, 3 rounds
    .venv/bin/python -m benchmarks.step_time --models llama --rounds 5 --presets lora_attn prefix

Models (``--models``; random init from a config, nothing downloaded), each measured at its own size:

- ``bert``: a MiniLM-sized BERT (hidden 384, 6 layers, 12 heads, FFN 1536, vocab 30522) with a 2-way
  classification head; batch 16 × 128 tokens; rows: every preset.
- ``llama``: a LLaMA-family decoder (hidden 512, 8 layers, 8 query heads sharing 2 key/value heads, FFN 1408,
  vocab 8000 so that the layers, not the output layer, hold most of the work, as in a full-size model), causal
  LM loss over every token; batch 2 × 256 tokens; rows: LoRA, prefix, PA (FFN) and MAM.

AdamW; CPU threads as given (default: all cores). Each measurement runs in its own process and times ``--steps``
steps after ``--warmup`` steps; its median step is one sample, in wall time and in the process's CPU time
(``time.process_time``: the time its threads ran, which other jobs on a shared machine disturb far less than the
wall time; with ``--threads 1`` it is the work done). Memory is that process's peak: its max RSS
(``getrusage``), and the training peak = max RSS − the RSS once Python, torch, transformers and peft are imported
and before the model is built (the ~0.4 GB of library code is the same for every configuration and would only
dilute the ratios). Rounds interleave every configuration of every model (full, ours, peft, full, ...), so slow
drift of the machine hits all of them alike. Reported: the median over rounds and the spread (min–max). A
configuration that cannot run (HF PEFT's prefix tuning on BERT, which has no KV cache since transformers 5.24; a
preset the architecture refuses) is skipped from then on, and its row says why.

Preset sizes are the paper's BART-large sizes scaled by hidden/1024, except those compared with HF PEFT,
which use PEFT's common sizes (LoRA q,v r=8; LoRA FFN r=64; prefix l=30; prompt l=30).

GPU mode (``--gpu``; ``benchmarks/gpu_suite.sh`` runs it and writes the figures to one Markdown file):

    .venv/bin/python -m benchmarks.step_time --gpu --out results.md            # an NVIDIA GPU
    .venv/bin/python -m benchmarks.step_time --gpu --tiny                      # tiny sizes, any device: does it run?

- BART-large (random init: d=1024, 12+12 layers, FFN 4096, vocab 50265), batch 8 × (512 source + 128 target
  tokens): full fine-tuning (fp32 weights), MAM, LoRA, prefix and PA at the paper's sizes (the presets) with bf16
  frozen weights (``trainers.models.cast_frozen``: what trains stays fp32), MAM also with gradient checkpointing;
  all under bf16 autocast, AdamW. Tokens/s and peak GPU memory (``torch.cuda.max_memory_allocated`` over the
  timed steps: weights, optimiser state, activations), and the ratios to full fine-tuning.
- A LLaMA-family model of ~1B parameters (LlamaConfig: hidden 2048, 16 layers, 32 heads, FFN 5632, vocab 32000),
  batch 8 × 512 tokens, causal LM: LoRA (q, v, r=16) against full fine-tuning.
- Which SDPA kernel the prefix path gets: ``peft_space``'s attention function prepends the prefix keys and
  values and hands SDPA a materialised mask, which rules out FlashAttention. Per design, the aten SDPA ops a
  step dispatches to, and the step time with SDPA restricted to each backend (or the error it raises); then the
  attention call alone at BART-large's encoder shape, without and with the prefix and its mask.

Each configuration runs in its own process (a failure, e.g. out of memory, becomes a row); ``--tiny`` shrinks
every model, on the CPU rows too, to a few layers of width 64 and runs on the CPU where there is no GPU (peak
memory: max RSS there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"lora_attn": 8, "lora_ffn": 64, "prefix": 30, "prompt_tuning": 30}  # PEFT's common sizes
PEFT = ("lora_attn", "lora_ffn", "prefix", "prompt_tuning")  # the presets HF PEFT has


@dataclass(frozen=True)
class Shape:
    config: dict[str, int]  # the transformers config's sizes
    batch: int
    source: int  # tokens per sequence (the encoder's, for an encoder-decoder)
    target: int = 0  # decoder tokens of an encoder-decoder


def _bert(sizes: dict[str, int]) -> Any:
    import transformers

    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=sizes["d"], num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
        intermediate_size=sizes["ffn"], vocab_size=sizes["vocab"], num_labels=2))


def _bart(sizes: dict[str, int]) -> Any:
    import transformers

    d, layers, ffn, heads, vocab = sizes["d"], sizes["layers"], sizes["ffn"], sizes["heads"], sizes["vocab"]
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        encoder_attention_heads=heads, decoder_attention_heads=heads, vocab_size=vocab, max_position_embeddings=1024))


def _llama(sizes: dict[str, int]) -> Any:
    import transformers

    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=sizes["d"], num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
        num_key_value_heads=sizes.get("kv_heads", sizes["heads"]), intermediate_size=sizes["ffn"],
        vocab_size=sizes["vocab"], max_position_embeddings=2048))


TINY = {"d": 64, "layers": 2, "ffn": 128, "heads": 4, "vocab": 1000}


def _run_worker(flags: list[str], args: argparse.Namespace) -> dict:
    """A worker in its own process; its failure (e.g. out of memory) comes back as {"error": ...}."""
    command = [sys.executable, __file__, *flags, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--tiny"] if args.tiny else []
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    if out.returncode:
        lines = out.stderr.strip().splitlines() or [f"exit code {out.returncode}"]
        return {"error": lines[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- CPU rows ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuModel:
    title: str
    build: Callable[[dict[str, int]], Any]  # sizes -> a transformers model with a loss
    full: Shape
    tiny: Shape
    task: str  # HF PEFT's task type, and the loss: SEQ_CLS a 2-way head, CAUSAL_LM the next token
    lora_targets: dict[str, Any]  # lora_attn / lora_ffn -> HF PEFT's target_modules for the same matrices
    presets: tuple[str, ...] | None  # the default rows; None: every preset


CPU_MODELS = {
    "bert": CpuModel("MiniLM-sized BERT, sequence classification", _bert,
                     Shape({"d": 384, "layers": 6, "ffn": 1536, "heads": 12, "vocab": 30522}, 16, 128),
                     Shape(TINY, 2, 16), "SEQ_CLS",
                     {"lora_attn": ["query", "value"], "lora_ffn": r".*layer\.\d+\.(intermediate|output)\.dense"},
                     None),
    "llama": CpuModel("LLaMA-family decoder (grouped-query attention), causal LM", _llama,
                      Shape({"d": 512, "layers": 8, "ffn": 1408, "heads": 8, "kv_heads": 2, "vocab": 8000}, 2, 256),
                      Shape({**TINY, "kv_heads": 2}, 2, 16), "CAUSAL_LM",
                      {"lora_attn": ["q_proj", "v_proj"], "lora_ffn": ["gate_proj", "up_proj", "down_proj"]},
                      ("lora_attn", "prefix", "pa_ffn", "mam")),
}


def design(name: str, hidden: int):
    """Preset ``name`` at PEFT's common size where HF PEFT has it, else at the paper's BART-large size × hidden/1024."""
    import peft_space

    sites = peft_space.preset(name).sites
    if name in SIZES:
        return peft_space.preset(name, **{f"{s}.bottleneck": SIZES[name] for s in sites})
    return peft_space.preset(name, **{f"{s}.bottleneck": max(1, round(m["bottleneck"] * hidden / 1024))
                                      for s, m in sites.items() if "bottleneck" in m})


def peft_model(name: str, model, spec: CpuModel):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    configs = {
        "lora_attn": lambda: LoraConfig(r=8, lora_alpha=32, target_modules=spec.lora_targets[name], lora_dropout=0.0),
        "lora_ffn": lambda: LoraConfig(r=64, lora_alpha=256, lora_dropout=0.0, target_modules=spec.lora_targets[name]),
        "prefix": lambda: PrefixTuningConfig(task_type=spec.task, num_virtual_tokens=30, prefix_projection=True,
                                             encoder_hidden_size=800),
        "prompt_tuning": lambda: PromptTuningConfig(task_type=spec.task, num_virtual_tokens=30),
    }
    return get_peft_model(model, configs[name]())


def rss_mb() -> float:
    """Current resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker(model_name: str, name: str, impl: str, steps: int, warmup: int, threads: int, tiny: bool) -> dict:
    """One configuration (impl: full, ours or peft): its median step, peak memory, trainable count, budget."""
    import resource

    import peft  # noqa: F401  (imported by every configuration, so the baseline is the same)
    import torch
    import transformers  # noqa: F401  (likewise)

    import peft_space

    baseline = rss_mb()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = CPU_MODELS[model_name]
    shape = spec.tiny if tiny else spec.full
    model = spec.build(shape.config).train()
    budget = None
    if impl == "ours":
        chosen = design(name, shape.config["d"])
        budget = peft_space.count_budget(peft_space.apply(model, chosen), chosen).pct_analytic
    elif impl == "peft":
        model = peft_model(name, model, spec)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    ids = torch.randint(4, shape.config["vocab"], (shape.batch, shape.source))
    labels = ids if spec.task == "CAUSAL_LM" else torch.randint(0, 2, (shape.batch,))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    times, cpu_times = [], []
    for i in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ms": 1000 * statistics.median(times), "cpu_ms": 1000 * statistics.median(cpu_times), "rss_mb": peak,
            "train_mb": peak - baseline, "trainable": sum(p.numel() for p in parameters), "budget_pct": budget}


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} ({min(samples):.2f}–{max(samples):.2f})"


Run = tuple[str, str, str]  # (model, preset or "full", impl: full / ours / peft)


def cpu_runs(args: argparse.Namespace) -> dict[str, list[Run]]:
    """Per model, its configurations: full fine-tuning, each preset, and HF PEFT's where it has the preset."""
    import peft_space

    runs = {}
    for model in args.models:
        presets = args.presets or CPU_MODELS[model].presets or peft_space.presets()
        runs[model] = [(model, "full", "full"), *((model, p, "ours") for p in presets),
                       *((model, p, "peft") for p in presets if p in PEFT)]
    return runs


def _skipped(result: dict) -> str:
    return "skipped: " + result["error"].replace("|", "/")


def cpu_table(model: str, runs: list[Run], samples: dict[Run, list[dict]], args: argparse.Namespace) -> list[str]:
    """The Markdown table of one model: each preset against full fine-tuning and HF PEFT, or why it was skipped."""
    spec = CPU_MODELS[model]
    shape = spec.tiny if args.tiny else spec.full
    full = samples[(model, "full", "full")]
    head = (f"{spec.title}{' (tiny)' if args.tiny else ''}: {shape.config}, batch {shape.batch}×{shape.source}, "
            f"{args.threads} threads, {args.rounds} rounds × {args.steps} steps")
    if "error" in full[0]:
        return [f"{head}; full fine-tuning failed, nothing to compare with: {full[0]['error']}", ""]
    lines = [f"{head}; full fine-tuning: {summary([s['ms'] for s in full])} ms/step, "
             f"{summary([s['cpu_ms'] for s in full])} CPU ms/step, {summary([s['rss_mb'] for s in full])} MB max RSS, "
             f"{summary([s['train_mb'] for s in full])} MB training peak", "",
             "| preset | budget % (analytic) | ms/step | × full FT time | × full FT CPU time | × full FT training peak "
             "| × full FT max RSS | × HF PEFT time | × HF PEFT CPU time | × HF PEFT training peak |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, name, impl in runs:
        if impl != "ours":
            continue
        ours = samples[(model, name, "ours")]
        if "error" in ours[0]:
            lines.append(f"| {name} | {_skipped(ours[0])} | | | | | | | | |")
            continue
        row = (f"| {name} | {ours[0]['budget_pct']:.2f} | {summary([o['ms'] for o in ours])} "
               f"| {summary([o['ms'] / f['ms'] for o, f in zip(ours, full)])} "
               f"| {summary([o['cpu_ms'] / f['cpu_ms'] for o, f in zip(ours, full)])} "
               f"| {summary([o['train_mb'] / f['train_mb'] for o, f in zip(ours, full)])} "
               f"| {summary([o['rss_mb'] / f['rss_mb'] for o, f in zip(ours, full)])} |")
        theirs = samples.get((model, name, "peft"))
        if theirs is None:
            row += " – | – | – |"
        elif "error" in theirs[0]:
            row += f" {_skipped(theirs[0])} | – | – |"
        else:
            row += (f" {summary([o['ms'] / t['ms'] for o, t in zip(ours, theirs)])} "
                    f"| {summary([o['cpu_ms'] / t['cpu_ms'] for o, t in zip(ours, theirs)])} "
                    f"| {summary([o['train_mb'] / t['train_mb'] for o, t in zip(ours, theirs)])} |")
        lines.append(row)
    return lines + [""]


def cpu_main(args: argparse.Namespace) -> None:
    """Every model's configurations, interleaved over rounds; then one table per model."""
    runs = cpu_runs(args)
    order = [run for model_runs in runs.values() for run in model_runs]
    samples: dict[Run, list[dict]] = {run: [] for run in order}
    for round_ in range(args.rounds):
        for i, run in enumerate(order):
            if samples[run] and "error" in samples[run][0]:
                continue  # it cannot run (a refusal, not noise): its reason stands
            result = _run_worker(["--worker", *run, "--threads", str(args.threads)], args)
            samples[run].append(result)
            done = _skipped(result) if "error" in result else f"{result['ms']:8.1f} ms  {result['rss_mb']:7.0f} MB"
            print(f"round {round_ + 1}/{args.rounds} · {i + 1}/{len(order)} {run[0]:<5} {run[2]:>4} {run[1]:<22} "
                  f"{done}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps({":".join(k): v for k, v in samples.items()}, indent=1))
    for model, model_runs in runs.items():
        emit(["", *cpu_table(model, model_runs, samples, args)], args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(CPU_MODELS), choices=list(CPU_MODELS))
    parser.add_argument("--presets", nargs="*", help="the rows of every model (default: each model's own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "PRESET", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    parser.add_argument("--gpu", action="store_true", help="GPU mode: BART-large and a 1B LLaMA, bf16 (see above)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (runs on a CPU too): does it run?")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS),
                        help="GPU mode: which measurements")
    parser.add_argument("--out", type=Path, help="append the Markdown report to this file too")
    parser.add_argument("--gpu-worker", nargs=3, metavar=("MODEL", "DESIGN", "CHECKPOINTING"), help=argparse.SUPPRESS)
    parser.add_argument("--sdpa-worker", metavar="DESIGN", help=argparse.SUPPRESS)
    parser.add_argument("--attention-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.warmup, args.threads, args.tiny)))
        return
    if args.gpu_worker:
        model, design, checkpointing = args.gpu_worker
        print(json.dumps(gpu_worker(model, design, args.tiny, args.steps, args.warmup, checkpointing == "1")))
        return
    if args.sdpa_worker:
        print(json.dumps(sdpa_worker(args.sdpa_worker, args.tiny)))
        return
    if args.attention_worker:
        print(json.dumps(attention_worker(args.tiny)))
        return
    if args.gpu:
        gpu_main(args)
        return
    cpu_main(args)


# -- GPU mode ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuModel:
    build: Callable[[dict[str, int]], Any]  # sizes -> a transformers model with a loss
    full: Shape
    tiny: Shape
    designs: tuple[str, ...]  # "full" or presets; "+ckpt": with gradient checkpointing
    sizes: dict[str, int]  # preset -> bottleneck, where not the paper's


GPU_MODELS = {
    "bart-large": GpuModel(_bart, Shape({"d": 1024, "layers": 12, "ffn": 4096, "heads": 16, "vocab": 50265},
                                        8, 512, 128),
                           Shape(TINY, 2, 32, 8), ("full", "mam", "lora_attn", "prefix", "pa_ffn", "mam+ckpt"), {}),
    "llama-1b": GpuModel(_llama, Shape({"d": 2048, "layers": 16, "ffn": 5632, "heads": 32, "vocab": 32000}, 8, 512),
                         Shape(TINY, 2, 32), ("full", "lora_attn", "lora_attn+ckpt"), {"lora_attn": 16}),
}
SECTIONS = ("bart", "llama", "sdpa")


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_setup(name: str, design: str, tiny: bool, checkpointing: bool) -> tuple[Any, dict[str, Any], int]:
    """The model of ``name`` on the device, random init, with ``design`` (frozen weights bf16, what trains fp32),
    a batch of random tokens and its token count."""
    import torch

    import peft_space
    from trainers.models import cast_frozen, set_checkpointing

    spec, device = GPU_MODELS[name], _device()
    shape = spec.tiny if tiny else spec.full
    torch.manual_seed(0)
    with device:
        model = spec.build(shape.config)
    if design != "full":
        sites = peft_space.preset(design).sites
        size = {f"{s}.bottleneck": spec.sizes[design] for s in sites} if design in spec.sizes else {}
        peft_space.apply(model, peft_space.preset(design, **size))
        cast_frozen(model, torch.bfloat16)
    set_checkpointing(model, checkpointing)
    vocab = shape.config["vocab"]
    ids = torch.randint(4, vocab, (shape.batch, shape.source), device=device)
    labels = torch.randint(4, vocab, (shape.batch, shape.target), device=device) if shape.target else ids
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return model.train(), inputs, shape.batch * (shape.source + shape.target)


def _timed_steps(model: Any, inputs: dict[str, Any], steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` training steps (forward under bf16 autocast, backward, AdamW) after ``warmup``."""
    import torch

    device = _device()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for i in range(warmup + steps):
        if i == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def gpu_worker(name: str, design: str, tiny: bool, steps: int, warmup: int, checkpointing: bool) -> dict:
    """One configuration: median step time, tokens/s, peak memory (MB), trainable count and the dtypes."""
    import resource

    import torch

    model, inputs, tokens = gpu_setup(name, design, tiny, checkpointing)
    seconds = statistics.median(_timed_steps(model, inputs, steps, warmup))
    if _device().type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = list(model.parameters())

    def dtypes(trainable: bool) -> list[str]:
        return sorted({str(p.dtype).removeprefix("torch.") for p in params if p.requires_grad == trainable})

    return {"ms": 1000 * seconds, "tokens_per_s": tokens / seconds, "peak_mb": peak,
            "trainable": sum(p.numel() for p in params if p.requires_grad), "params": sum(p.numel() for p in params),
            "trainable_dtypes": dtypes(True), "frozen_dtypes": dtypes(False)}


BACKENDS = ("flash", "efficient", "math")


def _backend(label: str) -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    return sdpa_kernel([names[label]]) if label in names else contextlib.nullcontext()


def _sdpa_ops(model: Any, inputs: dict[str, Any]) -> str:
    """The aten SDPA implementations one forward pass dispatches to (what SDPA picked)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.autocast(_device().type, dtype=torch.bfloat16):
        model(**inputs)
    ops = {e.key.removeprefix("aten::") for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")
           or e.key.startswith("aten::_efficient_attention") or e.key.startswith("aten::_flash_attention")}
    return ", ".join(sorted(ops)) or "none"


def _attempt(label: str, measure: Callable[[], float]) -> str:
    """``measure()`` (seconds) with SDPA held to backend ``label``, or why SDPA refused (its warnings say why)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with _backend(label):
                return f"{measure() * 1000:.2f} ms"
        except RuntimeError as err:
            reasons = dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught)
            reasons = reasons or [str(err).splitlines()[0]]
            return "error: " + "; ".join(reasons).replace("|", "/")[:240]


def sdpa_worker(design: str, tiny: bool) -> dict[str, str]:
    """BART-large with ``design``: the SDPA ops a step uses, and the step time with SDPA held to each backend."""
    model, inputs, _ = gpu_setup("bart-large", design, tiny, False)

    def measure() -> float:
        try:
            return statistics.median(_timed_steps(model, inputs, 3, 1))
        finally:
            model.zero_grad(set_to_none=True)

    return {"default": f"{_attempt('default', measure)} ({_sdpa_ops(model, inputs)})",
            **{label: _attempt(label, measure) for label in BACKENDS}}


def attention_worker(tiny: bool) -> dict[str, dict[str, str]]:
    """The attention call alone, forward + backward, at BART-large's encoder shape (8 × 16 heads × 512 × 64, bf16):
    LoRA's (no mask), prefix tuning's (200 prefix keys prepended, a materialised boolean mask as peft_space passes)
    and the prefix without a mask (what a batch without padding could pass)."""
    import torch
    import torch.nn.functional as F

    device = _device()
    batch, heads, length, dim, prefix = (2, 4, 32, 16, 8) if tiny else (8, 16, 512, 64, 200)

    def tensor(keys: int) -> Any:
        return torch.randn(batch, heads, keys, dim, device=device, dtype=torch.bfloat16, requires_grad=True)

    def timer(q: Any, k: Any, v: Any, mask: Any) -> Callable[[], float]:
        def measure() -> float:
            times = []
            for _ in range(13):
                start = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            return statistics.median(times[3:])

        return measure

    q, mask = tensor(length), torch.ones(batch, 1, length, prefix + length, dtype=torch.bool, device=device)
    cases = {"LoRA: no mask": timer(q, tensor(length), tensor(length), None),
             f"prefix l={prefix}: boolean mask": timer(q, tensor(prefix + length), tensor(prefix + length), mask),
             f"prefix l={prefix}: no mask": timer(q, tensor(prefix + length), tensor(prefix + length), None)}
    return {case: {label: _attempt(label, measure) for label in ("default", *BACKENDS)}
            for case, measure in cases.items()}


def _throughput_table(name: str, args: argparse.Namespace) -> list[str]:
    spec = GPU_MODELS[name]
    samples: dict[str, list[dict]] = {design: [] for design in spec.designs}
    for round_ in range(args.rounds):
        for design in spec.designs:
            preset, _, ckpt = design.partition("+")
            samples[design].append(_run_worker(["--gpu-worker", name, preset, "1" if ckpt else "0"], args))
            print(f"round {round_ + 1}/{args.rounds} {name} {design}: {samples[design][-1]}", file=sys.stderr,
                  flush=True)
    shape = spec.tiny if args.tiny else spec.full
    tokens = f"{shape.source} + {shape.target}" if shape.target else f"{shape.source}"
    lines = [f"### {name}{' (tiny)' if args.tiny else ''}: {shape.config}, batch {shape.batch} × ({tokens}) tokens, "
             f"median of {args.rounds} rounds × {args.steps} steps", "",
             "| design | trainable params | trainable / frozen dtypes | ms/step | tokens/s | peak MB | "
             "× full tokens/s | × full peak |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    full = [s for s in samples["full"] if "error" not in s]
    for design, runs in samples.items():
        ok = [s for s in runs if "error" not in s]
        if not ok:
            lines.append(f"| {design} | failed: {runs[0]['error']} | | | | | | |")
            continue
        speed = statistics.median(s["tokens_per_s"] for s in ok)
        peak = statistics.median(s["peak_mb"] for s in ok)
        ratios = " – | – |"
        if full:
            ratios = (f" {speed / statistics.median(s['tokens_per_s'] for s in full):.2f} |"
                      f" {peak / statistics.median(s['peak_mb'] for s in full):.2f} |")
        dtypes = f"{'/'.join(ok[0]['trainable_dtypes'])} / {'/'.join(ok[0]['frozen_dtypes']) or '–'}"
        lines.append(f"| {design} | {ok[0]['trainable']:,} ({100 * ok[0]['trainable'] / ok[0]['params']:.2f}%) | "
                     f"{dtypes} | {statistics.median(s['ms'] for s in ok):.1f} | {speed:,.0f} | {peak:,.0f} |{ratios}")
    if name == "bart-large" and full and samples["mam"] and "error" not in samples["mam"][0]:
        mam = samples["mam"]
        speed = statistics.median(s["tokens_per_s"] for s in mam) / statistics.median(s["tokens_per_s"] for s in full)
        peak = statistics.median(s["peak_mb"] for s in mam) / statistics.median(s["peak_mb"] for s in full)
        met = "met" if speed >= 1.3 and peak <= 0.6 else "NOT met"
        lines += ["", f"Target MAM ≥ 1.3× full fine-tuning's tokens/s at ≤ 0.6× its peak memory: {met} "
                      f"({speed:.2f}×, {peak:.2f}×)."]
    return lines + [""]


def _sdpa_tables(args: argparse.Namespace) -> list[str]:
    lines = ["### SDPA kernels in the prefix path (BART-large, one step; default: the aten ops SDPA dispatched to)", "",
             "| design | default | " + " | ".join(f"only {b}" for b in BACKENDS) + " |", "|---|---|---|---|---|"]
    for design in ("lora_attn", "prefix", "mam"):
        result = _run_worker(["--sdpa-worker", design], args)
        cells = [result.get(k, result.get("error", "")) for k in ("default", *BACKENDS)]
        lines.append(f"| {design} | " + " | ".join(cells) + " |")
    result = _run_worker(["--attention-worker"], args)
    lines += ["", "### The attention call alone (forward + backward, bf16), per SDPA backend", "",
              "| case | default | " + " | ".join(f"only {b}" for b in BACKENDS) + " |", "|---|---|---|---|---|"]
    if "error" in result:
        lines.append(f"| failed: {result['error']} | | | | |")
    for case, cells in result.items() if "error" not in result else ():
        lines.append(f"| {case} | " + " | ".join(cells[k] for k in ("default", *BACKENDS)) + " |")
    return lines + [""]


def gpu_main(args: argparse.Namespace) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no CUDA device)"
    header = [f"## GPU suite{' (tiny)' if args.tiny else ''}: {device}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, {datetime.date.today()}", ""]
    emit(header, args.out)
    for section in args.sections:
        if section == "sdpa":
            emit(_sdpa_tables(args), args.out)
        else:
            emit(_throughput_table("bart-large" if section == "bart" else "llama-1b", args), args.out)


def emit(lines: list[str], out: Path | None) -> None:
    """Print a part of the report, and append it to ``out`` at once (a later failure keeps what was measured)."""
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if out is not None:
        with out.open("a") as file:
            file.write(text)


if __name__ == "__main__":
    main()
