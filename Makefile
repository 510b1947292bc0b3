# trainkit — the two commands that work on a fresh machine:
#   make demo   set up .venv-local/, build the tiny model, run the smoke pipeline on CPU
#   make test   install the test tools, then run pytest, bats and lint
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv-local
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
VENV_STAMP := $(VENV)/.trainkit-deps
TINY_MODEL := models/tiny-chat/config.json
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help setup demo test lint pytest bats test-tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV_STAMP): requirements-local.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

$(TINY_MODEL): $(VENV_STAMP) scripts/make_tiny_model.py data/sample/train.jsonl data/sample/validation.jsonl
	$(PY) scripts/make_tiny_model.py

setup: $(VENV_STAMP) $(TINY_MODEL) ## create .venv-local/ and build the tiny model (idempotent)

# The whole pipeline as a user runs it, on configs/smoke.yaml: setup -> preflight -> tmux
# launch -> training -> checkpoints -> status. A run still alive in outputs/smoke is left alone
# (train.sh refuses to start a second one); a finished or dead one is trained again from scratch.
DEMO_SESSION ?= trainkit-demo
demo: setup ## set up, launch the smoke run in tmux, wait for it and show its status
	scripts/setup.sh --platform cpu --yes
	@PYTHONPATH=. $(PY) -m trainkit.runctl lock-info --output-dir outputs/smoke pid --live >/dev/null 2>&1 || rm -rf outputs/smoke
	scripts/train.sh --platform cpu --session $(DEMO_SESSION) --watch-steps 5
	scripts/check_training_status.sh --config configs/smoke.yaml --session $(DEMO_SESSION) --wait --timeout 900

test-tools: ## install tmux, bats (+ support/assert/file) and shellcheck when missing
	scripts/install_test_tools.sh

lint: $(VENV_STAMP) ## ruff and shellcheck
	$(VENV)/bin/ruff check .
	shellcheck -x scripts/*.sh scripts/lib/*.sh tests/bats/*.bash tests/bats/stubs/* .ci/run

pytest: setup
	$(VENV)/bin/pytest -q tests

bats: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bats tests/bats

test: test-tools setup lint pytest bats ## everything CI runs

clean: ## remove run outputs (keeps the venv and the tiny model)
	rm -rf outputs
