#!/usr/bin/env bash
# The GPU measurements in one command; every figure goes to one Markdown file.
#
#   bash benchmarks/gpu_suite.sh [OUT.md]          # a machine with an NVIDIA GPU (sized for one H200: below)
#   bash benchmarks/gpu_suite.sh --tiny [OUT.md]   # tiny sizes on any machine, CPU too (~4 min here): does it run?
#
# OUT.md: default benchmarks/results/gpu_suite.md (gpu_suite_tiny.md with --tiny); each part is appended as soon as it
# is measured, so a run cut short keeps what it has, and a search arm already in OUT.md is not run again.
# Sections (SECTIONS, default all five; run them in several calls where one command's time is limited):
#   bart llama sdpa   python -m benchmarks.step_time --gpu: BART-large and a 1B LLaMA, bf16 step time and memory, the SDPA
#                     kernel of prefix tuning (H200: ≈6 min, estimated); they import only torch, transformers,
#                     peft and this repository (no Ray, Optuna, MLflow or datasets), so PYTHON=python3 of a plain
#                     PyTorch image runs them with the repository on PYTHONPATH
#   search            python -m benchmarks.gpu_search: MiniLM on the full SST-2 training set, 32 trials, ASHA, packed four
#                     to the GPU then one per GPU: wall time, GPU use, per worker torch.cuda.memory_allocated after
#                     each trial is released (flat when a reused worker comes back to its baseline), the front
#                     (≈5–10 min per arm, estimated; PACKING="4" or "1" runs one arm)
#   table             python -m benchmarks.make_table --gpu: the tabular benchmark's grid larger (full training set,
#                     2 seeds, 729 steps) → benchmarks/tabular/sst2_minilm_gpu.csv (≈15 min, estimated;
#                     resumable: the same command again trains what is missing)
# Environment: SECTIONS, PACKING, ROUNDS (2), STEPS (10), WARMUP (3), PYTHON (.venv/bin/python); the search and the
# table read SST-2 from $PEFT_SEARCH_DATA (or shared/data beside the repository) and use the shipped MiniLM.
set -euo pipefail
cd "$(dirname "$0")/.."

tiny=""
if [ "${1:-}" = "--tiny" ]; then
    tiny="--tiny"
    shift
fi
out=${1:-benchmarks/results/gpu_suite${tiny:+_tiny}.md}
python=${PYTHON:-.venv/bin/python}
step_sections=()
run_search="" run_table=""
for section in ${SECTIONS:-bart llama sdpa search table}; do
    case $section in
        bart|llama|sdpa) step_sections+=("$section") ;;
        search) run_search=1 ;;
        table) run_table=1 ;;
        *) echo "gpu_suite: SECTIONS: unknown section '$section'; allowed: bart llama sdpa search table" >&2; exit 2 ;;
    esac
done
mkdir -p "$(dirname "$out")"
[ -n "$tiny" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >&2 || true

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1  # models from configs or shipped: no download
if [ ${#step_sections[@]} -gt 0 ]; then
    "$python" -m benchmarks.step_time --gpu $tiny --out "$out" --sections "${step_sections[@]}" \
        --rounds "${ROUNDS:-2}" --steps "${STEPS:-10}" --warmup "${WARMUP:-3}"
fi
if [ -n "$run_search" ]; then
    # shellcheck disable=SC2086  # $PACKING is a list of words
    "$python" -m benchmarks.gpu_search $tiny --out "$out" ${PACKING:+--packing $PACKING}
fi
if [ -n "$run_table" ]; then
    if [ -n "$tiny" ]; then
        echo "gpu_suite: table: no tiny size (the CPU table is python -m benchmarks.make_table without --gpu)" >&2
    else
        start=$(date +%s)
        summary=$("$python" -m benchmarks.make_table --gpu | tail -1)
        printf '## Tabular benchmark at GPU size\n\n`python -m benchmarks.make_table --gpu`: %s; this call %d min\n\n' \
            "$summary" $(( ($(date +%s) - start) / 60 )) | tee -a "$out"
    fi
fi
echo "gpu_suite: figures appended to $out" >&2
