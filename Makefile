# Two entry points for a fresh machine: `make demo` runs the main job on the embedded default,
# `make test` runs the whole test suite. Both create and fill .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,workflow,test]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local
	@echo "dataset: results/toy/dataset/manifest.json (check it: $(BIN)/gridtrain verify results/toy/dataset)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/mypy
	$(BIN)/snakemake --lint --profile profiles/local

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/convert.py

clean:
	rm -rf $(VENV) .snakemake results data logs .bench
