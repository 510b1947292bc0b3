# trainkit — the two commands that work on a fresh machine:
#   make demo   set up .venv-local/, build the tiny model, run the smoke pipeline on CPU
#   make test   install the test tools, then run pytest, bats and lint
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Python that creates .venv-local/: the first 3.10-3.12 from Homebrew, pyenv or PATH (macOS's python3 is 3.9).
PYTHON ?= $(shell bash -c 'source scripts/lib/platform.sh && tk_find_python' 2>/dev/null || echo python3)
VENV := .venv-local
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
VENV_STAMP := $(VENV)/.trainkit-deps
TINY_MODEL := models/tiny-chat/config.json
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help setup demo bench test lint pytest bats test-tools clean init-config

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV_STAMP): requirements-local.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# One resolver pass for torch and the rest (two took ~17 s longer on a fresh clone).
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) -r requirements-dev.txt
	@touch $@

$(TINY_MODEL): $(VENV_STAMP) scripts/make_tiny_model.py data/sample/train.jsonl data/sample/validation.jsonl
	$(PY) scripts/make_tiny_model.py

setup: $(VENV_STAMP) $(TINY_MODEL) ## create .venv-local/ and build the tiny model (idempotent)

# The whole pipeline as a user runs it, on configs/smoke.yaml: setup -> preflight -> tmux
# launch -> training -> checkpoints -> status. Only the demo's own completed run in outputs/smoke
# is removed; a run still alive is left alone (train.sh refuses to start a second one), and any
# other run there is moved to outputs/smoke.kept-<time> with a WARNING (trainkit/supervise/demo.py).
DEMO_SESSION ?= trainkit-demo
DEMO_OUTPUT := outputs/smoke
demo: setup ## set up, launch the smoke run in tmux, wait for it and show its status
	scripts/setup.sh --platform cpu --yes
	@$(PY) -m trainkit.supervise.demo prepare $(DEMO_OUTPUT)
	scripts/train.sh --platform cpu --session $(DEMO_SESSION) --watch-steps 5
	scripts/check_training_status.sh --config configs/smoke.yaml --session $(DEMO_SESSION) --wait --timeout 900
	@$(PY) -m trainkit.supervise.demo finish $(DEMO_OUTPUT)

# A config sized for this machine: the model and data it trains, a reason on every key.
# An existing configs/mine.yaml is kept and the next free name written (configs/mine-2.yaml); FORCE=1 overwrites.
init-config: setup ## write configs/mine.yaml, sized for this machine (make init-config FORCE=1 overwrites it)
	$(PY) scripts/suggest_config.py --output configs/mine.yaml $(if $(FORCE),--force,--next-free)

# Throughput of trainkit's settings against plain TRL on this machine (tiny model on CPU, the 7B
# architecture with random weights on CUDA); a table on screen, JSON under outputs/bench/.
BENCH_ARGS ?=
bench: setup ## benchmark trainkit vs plain TRL (tokens/s, padding, memory, MFU)
	$(PY) scripts/benchmark.py $(BENCH_ARGS)

test-tools: ## install tmux, bats (+ support/assert/file) and shellcheck when missing
	scripts/install_test_tools.sh

lint: $(VENV_STAMP) ## ruff and shellcheck
	$(VENV)/bin/ruff check .
	shellcheck -x scripts/*.sh scripts/lib/*.sh tests/bats/*.bash tests/bats/stubs/* .ci/run

# Most tests wait on a train.py subprocess (imports, tmux polling) more than they compute: two
# pytest workers keep both cores busy (worksteal: an idle worker takes tests from a busy one, so a
# long file does not end the run alone; 3 workers were slower), and bats runs three files' tests
# at a time (GNU parallel).
# Each tiny-model trainer gets one OpenMP thread: with several side by side on 2 cores, OpenMP's
# spin-waiting threads fight over them (three smoke runs at once: 35 s with 2 threads each, 15 s with 1).
# The longest tests start first (the agent's and the demo's single minute-long tests, then the torchrun
# and tmux files), so that the end of the run is not one long test on one core.
PYTEST_JOBS ?= 2
BATS_JOBS ?= 3
TEST_ENV := OMP_NUM_THREADS=1
BATS_FIRST := tests/bats/agent.bats tests/bats/demo.bats tests/bats/train_multiproc.bats tests/bats/train_tmux.bats
BATS_FILES := $(BATS_FIRST) $(filter-out $(BATS_FIRST),$(sort $(wildcard tests/bats/*.bats)))
pytest: setup
	$(TEST_ENV) $(VENV)/bin/pytest -q -n $(PYTEST_JOBS) --dist worksteal --durations=15 tests

bats: setup
	$(TEST_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bats --jobs $(BATS_JOBS) --timing $(BATS_FILES)

test: test-tools setup lint pytest bats ## everything CI runs

clean: ## remove run outputs (keeps the venv and the tiny model)
	rm -rf outputs
