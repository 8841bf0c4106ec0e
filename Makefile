# Two entry points (see README): `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install

.PHONY: run test install run-deps system-deps lint bench clean

run: run-deps install
	$(PY) -m orchestrator.main

test: system-deps install
	bash scripts/test.sh

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(PYTHON) $(VENV)
	touch $@

run-deps:
	bash scripts/system-deps.sh run

system-deps:
	bash scripts/system-deps.sh test

lint: install
	$(VENV)/bin/ruff check soma orchestrator tests bench
	$(VENV)/bin/ruff format --check soma orchestrator tests bench
	$(VENV)/bin/mypy soma orchestrator

bench: install
	$(PY) bench/bench_lifecycle.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
