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

demo: setup ## train the tiny model on CPU end to end and show its status
	rm -rf outputs/smoke
	$(PY) scripts/validate_environment.py --env cpu
	$(PY) train.py --config configs/smoke.yaml
	@echo; echo "status.json:"; cat outputs/smoke/status.json

test-tools: ## install tmux, bats (+ support/assert/file) and shellcheck when missing
	scripts/install_test_tools.sh

lint: $(VENV_STAMP) ## ruff and shellcheck
	$(VENV)/bin/ruff check .
	shellcheck -x scripts/*.sh scripts/lib/*.sh tests/bats/*.bash .ci/run

pytest: setup
	$(VENV)/bin/pytest -q tests

bats: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bats tests/bats

test: test-tools setup lint pytest bats ## everything CI runs

clean: ## remove run outputs (keeps the venv and the tiny model)
	rm -rf outputs
