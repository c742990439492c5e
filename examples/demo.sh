#!/usr/bin/env bash
# The demo: every stage of cxrkit on the sample data in examples/, into demo-out/ (prints its time at the end;
# docs/index.md "What the demo does" has a measurement). BIN=... runs other copies of the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN=${BIN:-.venv/bin}
OUT=${OUT:-demo-out}
S=$OUT/shards
rm -rf "$OUT"; mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s)

step "1. MIMIC-CXR reports -> shards/mimic-cxr (sections, sentences, labels, split, views, images)"
$BIN/cxrprep reports examples/mimic --out "$S" --size 256 --workers 2

step "2. Templates: check both files, preview one class"
$BIN/cxrprep templates check prompts/default.yaml prompts/eval.yaml
# CXR-CLIP's own sets are kept verbatim ("Pneumothorax" vs "No Pneumothorax", no full stop): syntax only
$BIN/cxrprep templates check prompts/cxr-clip.yaml --no-lint
$BIN/cxrprep templates preview prompts/default.yaml --class Cardiomegaly --limit 3

step "3. CheXpert 5x200-style evaluation set (seeded; 1 per class on this tiny sample)"
$BIN/cxrprep chexpert-5x200 examples/chexpert/train.csv --image-root examples/chexpert --out "$S" --per-class 1 --size 256

step "4. CheXpert + ChestX-ray14 labels -> prompt reports (5x200 patients excluded from training)"
$BIN/cxrprep prompts examples/chexpert/train.csv --image-root examples/chexpert --templates prompts/default.yaml \
  --out "$S" --size 256 --exclude-patients "$S/chexpert-5x200/patients.txt" --max-failed 1
$BIN/cxrprep prompts examples/nih/Data_Entry_2017_v2020.csv --image-root examples/nih/images --out "$S" --size 256

step "5. DICOM folder as one-image studies (real CR and DX fixtures)"
$BIN/cxrprep images tests/data/dicom --out "$S" --dataset dicom-demo --size 256

step "5b. CXR-CLIP's external benchmarks straight from their released files (samples in examples/benchmarks)"
B=$OUT/bench   # a separate shard root: benchmarks are never training data
E=examples/benchmarks
$BIN/cxrprep rsna $E/rsna/stage_2_train_labels.csv --out "$B" --size 256
$BIN/cxrprep siim $E/siim/train-rle.csv --out "$B" --size 256
$BIN/cxrprep vindr $E/vindr/annotations/image_labels_train.csv --out "$B" --size 256
# one sample XML is broken and one has no text: both become rejects with reasons
$BIN/cxrprep openi $E/openi/ecgen-radiology --image-root $E/openi/NLMCXR_png --out "$B" --size 256 --max-failed 2

step "6. Back-translation with a tiny local Marian pair (random weights: demonstrates the pipeline, not quality)"
$BIN/python examples/make_tiny_marian.py --out "$OUT/tiny-marian"
$BIN/cxrprep augment "$S/mimic-cxr" --backtranslate it --forward-model "$OUT/tiny-marian/en-it" \
  --backward-model "$OUT/tiny-marian/it-en" --cache-dir "$OUT/bt-cache"

step "7. Inspect the shards (counts, labels, samples, contact sheet)"
$BIN/cxrprep inspect "$S/mimic-cxr" --sheet "$OUT/mimic-cxr-contact-sheet.png" --verify
$BIN/cxrprep inspect "$S/chexpert" --sheet "$OUT/chexpert-contact-sheet.png" --samples 1

step "8. Train the tiny preset (CXR-CLIP loss) on every dataset"
$BIN/cxrtrain run "$S" --config examples/train_tiny.yaml --out "$OUT/runs/tiny"

step "9. Zero-shot evaluation and retrieval on the test split, beside an untrained model of the same architecture"
# the CheXpert prompt shards have train rows only: eval refuses them (exit 2) rather than score training rows
$BIN/cxrtrain eval "$OUT/runs/tiny" "$S/chexpert" --out "$OUT/eval-refused" \
  || echo "(refused as expected: name --split train|all to score training rows on purpose)"
$BIN/cxrtrain eval "$OUT/runs/tiny" "$S/mimic-cxr" "$S/chexpert-5x200" "$S/chestx-ray14" "$B/openi" "$B/rsna-pneumonia" \
  --prompts prompts/eval.yaml --out "$OUT/eval" --bootstrap 200 --baseline untrained
step "9a. Prompt files compared on the same images (paired bootstrap CIs, forest plot); embeddings saved for re-scoring"
$BIN/cxrtrain eval "$OUT/runs/tiny" "$S/mimic-cxr" "$S/chexpert-5x200" --prompts eval --prompts gloria --prompts cxr-clip --split all --out "$OUT/eval-prompts" --bootstrap 200 --save-embeddings

step "9b. CXR-CLIP benchmark suite (zero-shot, 10%/100% linear probes, retrieval; missing benchmarks listed)"
$BIN/cxrtrain bench-suite "$OUT/runs/tiny" "$B" --out "$OUT/suite" --bootstrap 200

step "9c. Published models: import a random-weight checkpoint of each format (original layouts), score two side by side"
# no real weights can be downloaded here: docs/import.md lists the published files and what they report
$BIN/python examples/make_random_checkpoints.py --out "$OUT/published"
$BIN/cxrtrain import cxr-clip "$OUT/published/cxr-clip/r50_m.tar" --out "$OUT/runs/cxr-clip-r50" \
  --text-encoder "$OUT/published/cxr-clip/bert" --overwrite
$BIN/cxrtrain import chexzero "$OUT/published/chexzero/best_64_5e-05_original_22000_0.864.pt" \
  --out "$OUT/runs/chexzero" --overwrite
$BIN/cxrtrain import open-clip "$OUT/published/open-clip" --out "$OUT/runs/open-clip" --overwrite
$BIN/cxrtrain bench-suite --model "$OUT/runs/chexzero" --model "$OUT/runs/cxr-clip-r50" "$B" \
  --out "$OUT/side-by-side" --bootstrap 200 --no-probe

step "10. Few-shot (linear probe + partial fine-tuning) on ChestX-ray14"
$BIN/cxrtrain fewshot "$OUT/runs/tiny" "$S/chestx-ray14" --shots 1,2 --seeds 2 --epochs 5 --fractions 10%,100% \
  --out "$OUT/fewshot"

step "11. Export to Hugging Face directories"
$BIN/cxrtrain export "$OUT/runs/tiny" --out "$OUT/export"

step "12. Look at one training batch, then the learning canary (visible synthetic findings; true vs shuffled labels)"
$BIN/cxrtrain batch "$S/chestx-ray14" --config examples/train_tiny.yaml --out "$OUT/batch" --n 6
$BIN/python examples/canary/canary.py --out "$OUT/canary"   # prints both runs' AUROCs; --strict fails the step

echo
echo "demo finished in $(( $(date +%s) - t0 )) s. Outputs under $OUT/: shards/, runs/tiny/ (loss.png), eval/ (metrics.md, roc_*.png), suite/suite.md, fewshot/, export/"
