#!/usr/bin/env bash
# The demo: every stage of cxrkit on the sample data in examples/, into demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN=.venv/bin
OUT=${OUT:-demo-out}
rm -rf "$OUT"; mkdir -p "$OUT"
$BIN/cxrprep --version
