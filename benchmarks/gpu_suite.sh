#!/usr/bin/env bash
# The GPU measurements in one command; every figure goes to one Markdown file.
#
#   bash benchmarks/gpu_suite.sh [OUT.md]          # a machine with an NVIDIA GPU (sized for one H200, ~6 min estimated)
#   bash benchmarks/gpu_suite.sh --tiny [OUT.md]   # tiny models on any machine, CPU too (~3 min here): does it run?
#
# OUT.md: default benchmarks/results/gpu_suite.md (gpu_suite_tiny.md with --tiny); each part is appended as soon as it
# is measured, so a run cut short keeps what it has. Environment: SECTIONS (default "bart llama sdpa": run them in
# two calls if one command's time is limited), ROUNDS (2), STEPS (10), WARMUP (3), PYTHON (.venv/bin/python).
# What is measured: benchmarks/step_time.py's docstring, "GPU mode".
#
# Not run here — the real search to run on the GPU next, MiniLM on the full SST-2 training set (67,349 sentences),
# 32 trials, with trials packed four to the GPU and then one GPU per trial; compare wall clock, trials per hour
# (`peft-search pareto NAME`, MLflow's train_seconds) and GPU use (`nvidia-smi dmon -s u` beside it):
#
#   for share in 0.25 1; do
#     at_once=$([ "$share" = 1 ] && echo 1 || echo 4)
#     .venv/bin/peft-search run --name "sst2-full-gpu$share" --trials 32 --concurrency "$at_once" \
#       --set resources.gpu=$share --set resources.cpu=4 --set train.threads=4 --set train.base_dtype=bf16 \
#       --set train.train_examples=0 --set train.eval_examples=0 --set train.batch_size=32 --set train.micro_batch=32 \
#       --set train.eval_every=100 --set asha.grace_period=100 --set asha.max_steps=2700
#   done
set -euo pipefail
cd "$(dirname "$0")/.."

tiny=""
if [ "${1:-}" = "--tiny" ]; then
    tiny="--tiny"
    shift
fi
out=${1:-benchmarks/results/gpu_suite${tiny:+_tiny}.md}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$(dirname "$out")"
[ -n "$tiny" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >&2 || true

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # every model is built from a config: nothing to download
# shellcheck disable=SC2086  # $SECTIONS is a list of words
"$python" benchmarks/step_time.py --gpu $tiny --out "$out" --sections ${SECTIONS:-bart llama sdpa} \
    --rounds "${ROUNDS:-2}" --steps "${STEPS:-10}" --warmup "${WARMUP:-3}"
echo "gpu_suite: figures appended to $out" >&2
