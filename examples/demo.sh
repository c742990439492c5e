#!/usr/bin/env bash
# The demo: every stage of cxrkit on the sample data in examples/, into demo-out/ (about 2-4 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN=.venv/bin
OUT=${OUT:-demo-out}
S=$OUT/shards
rm -rf "$OUT"; mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s)

step "1. MIMIC-CXR reports -> shards/mimic-cxr (sections, sentences, labels, split, views, images)"
$BIN/cxrprep reports examples/mimic --out "$S" --size 256 --workers 2

step "2. Templates: check both files, preview one class"
$BIN/cxrprep templates check prompts/default.yaml prompts/eval.yaml
$BIN/cxrprep templates preview prompts/default.yaml --class Cardiomegaly --limit 3

step "3. CheXpert 5x200-style evaluation set (seeded; 1 per class on this tiny sample)"
$BIN/cxrprep chexpert-5x200 examples/chexpert/train.csv --image-root examples/chexpert --out "$S" --per-class 1 --size 256

step "4. CheXpert + ChestX-ray14 labels -> prompt reports (5x200 patients excluded from training)"
$BIN/cxrprep prompts examples/chexpert/train.csv --image-root examples/chexpert --templates prompts/default.yaml \
  --out "$S" --size 256 --exclude-patients "$S/chexpert-5x200/patients.txt" --max-failed 1
$BIN/cxrprep prompts examples/nih/Data_Entry_2017_v2020.csv --image-root examples/nih/images --out "$S" --size 256

step "5. DICOM folder as one-image studies (real CR and DX fixtures)"
$BIN/cxrprep images tests/data/dicom --out "$S" --dataset dicom-demo --size 256

step "6. Back-translation with a tiny local Marian pair (random weights: demonstrates the pipeline, not quality)"
$BIN/python examples/make_tiny_marian.py --out "$OUT/tiny-marian"
$BIN/cxrprep augment "$S/mimic-cxr" --backtranslate it --forward-model "$OUT/tiny-marian/en-it" \
  --backward-model "$OUT/tiny-marian/it-en" --cache-dir "$OUT/bt-cache"

step "7. Inspect the shards (counts, labels, samples, contact sheet)"
$BIN/cxrprep inspect "$S/mimic-cxr" --sheet "$OUT/mimic-cxr-contact-sheet.png" --verify
$BIN/cxrprep inspect "$S/chexpert" --sheet "$OUT/chexpert-contact-sheet.png" --samples 1

step "8. Train the tiny preset (CXR-CLIP loss) on every dataset"
$BIN/cxrtrain run "$S" --config examples/train_tiny.yaml --out "$OUT/runs/tiny"

step "9. Zero-shot evaluation and retrieval"
$BIN/cxrtrain eval "$OUT/runs/tiny" "$S" --prompts prompts/eval.yaml --out "$OUT/eval" --bootstrap 200

step "10. Few-shot (linear probe + partial fine-tuning) on ChestX-ray14"
$BIN/cxrtrain fewshot "$OUT/runs/tiny" "$S/chestx-ray14" --shots 1,2 --seeds 2 --epochs 5 --out "$OUT/fewshot"

step "11. Export to Hugging Face directories"
$BIN/cxrtrain export "$OUT/runs/tiny" --out "$OUT/export"

step "12. Look at one training batch, then the learning canary (visible synthetic findings; true vs shuffled labels)"
$BIN/cxrtrain batch "$S/chestx-ray14" --config examples/train_tiny.yaml --out "$OUT/batch" --n 6
$BIN/python examples/canary/canary.py --out "$OUT/canary"

echo
echo "demo finished in $(( $(date +%s) - t0 )) s. Outputs under $OUT/: shards/, runs/tiny/ (loss.png), eval/ (metrics.md, roc_*.png), fewshot/, export/"
