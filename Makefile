# The README's two set-up commands. Both create .venv on first use and install stpred into it.
# TORCH pins the PyTorch release: on a machine without a GPU pip takes the CPU build (no CUDA packages).
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" on a CPU-only
# machine whose package index would otherwise give the CUDA build.
PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.stpred-installed
PYTEST_ARGS ?=

.PHONY: quickstart test lint bench gpu-check zoo clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(PIP_ARGS) "$(TORCH)" -e ".[dev,serve]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/stpred-train experiment=quickstart

# Headless Chromium and its driver for the browser test of stpred-serve (tests/test_serve_browser.py), from Debian's
# packages when they are missing (as root, like CI); nothing is downloaded from anywhere else.
CHROMEDRIVER := /usr/bin/chromedriver
$(CHROMEDRIVER):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

# STPRED_DATA (the folder of small real files) may be relative; unset, the tests use ../shared/data when it exists.
test: $(STAMP) $(CHROMEDRIVER)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --timeout=900 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/stpred-bench kernels --out docs/bench

# On a machine with one CUDA GPU: the kernel and model tests on CUDA, then the kernel, model and generation tables
# written into docs/benchmarks.md with the device named (about 8 minutes).
gpu-check: $(STAMP)
	$(BIN)/stpred-bench gpu --doc docs/benchmarks.md

# Retrain the shipped demo checkpoints (stpred/zoo/*.ckpt and zoo.json: scores, persistence, commands) with fixed
# seeds, on the CPU. STPRED_DATA is the folder of shared data (mnist/, navier_stokes/, weather/, video/).
zoo: $(STAMP)
	STPRED_DATA=$${STPRED_DATA:-../shared/data} $(BIN)/stpred-zoo train

clean:
	rm -rf $(VENV) runs build *.egg-info
