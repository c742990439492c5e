# Two commands matter: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean
install:
	@bash scripts/install.sh

demo: install
	@bash examples/demo.sh

test: install
	$(PY) -m pytest tests

clean:
	rm -rf demo-out .pytest_cache
