# Two entry points for a fresh machine: `make demo` runs the main job on the embedded default,
# `make test` runs the whole test suite. Both create and fill .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean system-deps pool-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,workflow,test]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local
	@echo "trained model: results/toy/run/model.keras; metrics: results/toy/run/metrics.json;" \
		"plots: results/toy/run/plots/ (dataset: results/toy/dataset/manifest.json)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/mypy
	$(BIN)/snakemake --lint --profile profiles/local

test: lint system-deps
	$(BIN)/python -m pytest

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/ps.py
	$(BIN)/python benchmarks/stage.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/staleness.py
	$(BIN)/python benchmarks/submit.py
	$(BIN)/python benchmarks/pack.py

# Debian's XRootD server and client: the staging tests start a real server, the benchmark
# compares with xrdcp. Installed with apt as root (or through sudo); a no-op once present.
XROOTD_PACKAGES := xrootd-server xrootd-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@if command -v xrootd >/dev/null 2>&1 && command -v xrdcp >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(XROOTD_PACKAGES) with apt-get"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(XROOTD_PACKAGES) >/dev/null; \
	else \
		echo "warning: no apt-get; install $(XROOTD_PACKAGES) by hand for the staging tests" >&2; \
	fi

# debootstrap builds the HTCondor test pool's chroot (tests/pool/pool.sh); a no-op once present.
system-deps: pool-deps
pool-deps:
	@if command -v debootstrap >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "installing debootstrap with apt-get"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			debootstrap >/dev/null; \
	else \
		echo "warning: no apt-get; install debootstrap by hand for the HTCondor pool tests" >&2; \
	fi

clean:
	rm -rf $(VENV) .snakemake results data logs .bench
