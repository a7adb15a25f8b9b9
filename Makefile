# Two entry points for a fresh machine: `make demo` runs the main job on the embedded default,
# `make test` runs the whole test suite. Both create .venv and fill it with exactly what uv.lock
# says (`uv sync --locked`: no newer version is ever resolved on the way), compiled to bytecode
# once: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile TensorFlow's
# sources anew (5 of its 7 s of import here, in the driver and in every worker).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UV := $(BIN)/uv
# The uv that the lock itself names: pip brings it into a new .venv, then the lock keeps it there.
UV_VERSION := $(shell awk '/^name = "uv"$$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' uv.lock)
# What the project's own environment holds (tests/test_lock.py reads this line).
LOCKED_ENV := --extra cpu --extra jax --extra torch --extra workflow --extra export --extra tune --extra serve --extra mlflow --group test --group docs
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# mypy's cache beside the package caches, not in the clone: a fresh clone type-checks in about a
# second where a cold cache takes 20 s here (nearly all of it numpy's and the other packages'
# stubs). mypy re-checks any file whose hash differs, so no clone reads another's stale result.
MYPY_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gridtrain-mypy
export MYPY_CACHE_DIR

.PHONY: demo test test-loaded lint docs lock envs bench clean system-deps pool-deps browser-deps

$(STAMP): pyproject.toml uv.lock
	@[ -x $(UV) ] && [ "$$($(UV) --version | cut -d' ' -f2)" = "$(UV_VERSION)" ] || { \
		$(PYTHON) -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; }
	$(UV) sync --quiet --locked --compile-bytecode --python $(BIN)/python $(LOCKED_ENV)
	touch $@

# Update every pin: resolve pyproject.toml's ranges anew into uv.lock, then regenerate envs/.
# Commit both; nothing else changes a version.
lock: $(STAMP)
	$(UV) lock --upgrade
	$(MAKE) envs

# envs/ files generated from uv.lock (tests/test_lock.py checks that they are current).
ENVS_DIR ?= envs
EXPORT := $(UV) export --frozen --quiet --no-emit-project --no-default-groups --format requirements-txt
envs: $(STAMP)
	$(EXPORT) --extra gpu > $(ENVS_DIR)/requirements-gpu.txt.tmp
	mv $(ENVS_DIR)/requirements-gpu.txt.tmp $(ENVS_DIR)/requirements-gpu.txt
	$(EXPORT) --extra cpu --extra workflow --extra export --extra tune --extra serve > $(ENVS_DIR)/requirements-cpu.txt.tmp
	mv $(ENVS_DIR)/requirements-cpu.txt.tmp $(ENVS_DIR)/requirements-cpu.txt

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local
	@echo "trained model: results/toy/run/model.keras; metrics: results/toy/run/metrics.json;" \
		"plots: results/toy/run/plots/; export (ONNX, SavedModel, frozen graph):" \
		"results/toy/run/export/ (dataset: results/toy/dataset/manifest.json)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks workflow/scripts docs/examples docs/hooks
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts docs/examples docs/hooks
	$(BIN)/mypy
	$(BIN)/snakemake --lint --profile profiles/local

# The documentation site; --strict turns a broken link or a page missing from the nav into an error
# (not with --quiet, which drops the warnings before --strict can count them).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .docs-site

# The suite in parallel (pytest-xdist): most slow tests wait on processes, servers and the pool
# rather than use the CPU. The pool's tests stay in one worker (tests/conftest.py).
TEST_WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup
test: lint docs system-deps
	$(PYTEST)

# The suite with the CPU loaded (two busy processes beside it, as on a shared login node or a
# CI machine with a leftover job): run it before a change to the PS, leases, executors or serve.
# A test that passes only on a quiet machine waits for time instead of for its event.
LOADED_RUNS ?= 1
test-loaded: lint docs system-deps
	@for run in $$(seq $(LOADED_RUNS)); do \
		echo "test-loaded: run $$run of $(LOADED_RUNS)"; \
		$(BIN)/python tests/cpu_load.py --hogs 2 --limit 3600 -- $(PYTEST) || exit 1; \
	done

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/ps.py
	$(BIN)/python benchmarks/stage.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/staleness.py
	$(BIN)/python benchmarks/submit.py
	$(BIN)/python benchmarks/pack.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/train.py --mode floor
	$(BIN)/python benchmarks/ps_capacity.py --quick
	$(BIN)/python benchmarks/ps_strangers.py
	$(BIN)/python benchmarks/wire_codec.py
	$(BIN)/python benchmarks/wan.py --quick
	$(BIN)/python benchmarks/tune.py --quick
	$(BIN)/python benchmarks/taggers.py --toy substructure-matched
	$(BIN)/python benchmarks/taggers_toy.py
	$(BIN)/python benchmarks/gpu.py

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

# Debian's Chromium and its WebDriver: gridtrain serve's browser test drives the system browser
# with Selenium (no browser download at test time); a no-op once present.
CHROMIUM_PACKAGES := chromium chromium-driver
system-deps: browser-deps
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(CHROMIUM_PACKAGES) with apt-get"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(CHROMIUM_PACKAGES) >/dev/null; \
	else \
		echo "warning: no apt-get; install $(CHROMIUM_PACKAGES) by hand for the web page test" >&2; \
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
	rm -rf $(VENV) .snakemake results data logs .bench .docs-site dist
