# Two commands matter: `make demo` and `make test`. Every target sets everything up first.
# `make VENV=/path/to/venv ...` uses another environment (a command-line variable reaches install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test test-fast lint docs clean
install:
	@bash scripts/install.sh

demo: install
	@bash examples/demo.sh

test: install
	$(PY) -m pytest tests

# the fast lane: everything but the end-to-end tests marked slow
test-fast: install
	$(PY) -m pytest tests -m "not slow"

# lint and docs need only ruff / mkdocs: they install when the environment lacks them, never otherwise
lint: | $(VENV)/bin/ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

docs: | $(VENV)/bin/mkdocs
	@d=$$(mktemp -d) && $(VENV)/bin/mkdocs build --strict -q -d "$$d"; rc=$$?; rm -rf "$$d"; \
	  if [ $$rc -eq 0 ]; then echo "docs: mkdocs build --strict passed"; fi; exit $$rc

$(VENV)/bin/ruff $(VENV)/bin/mkdocs:
	@bash scripts/install.sh

clean:
	rm -rf demo-out site .pytest_cache
