# Two entry points (see README): `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
RUN_STAMP := $(VENV)/.stamp-run

.PHONY: run test install run-deps system-deps lint bench clean lock k8s docs sbom audit

run: run-deps $(RUN_STAMP)
	$(PY) -m orchestrator.main

test: system-deps install
	bash scripts/test.sh

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh requirements/dev.lock requirements/checkov.lock
	bash scripts/install.sh $(PYTHON) $(VENV)
	touch $@

# `make run` needs the platform and its model only, not the test tools.
$(RUN_STAMP): pyproject.toml scripts/install.sh requirements/image.lock
	bash scripts/install.sh $(PYTHON) $(VENV) run
	touch $@

run-deps:
	bash scripts/system-deps.sh run

system-deps:
	bash scripts/system-deps.sh test

lint: install
	$(VENV)/bin/ruff check soma orchestrator tests bench scripts
	$(VENV)/bin/ruff format --check soma orchestrator tests bench scripts
	$(VENV)/bin/mypy soma orchestrator

bench: install
	$(PY) bench/bench_lifecycle.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Release chores (docs/operations.md): regenerate after changing dependencies, the chart or
# the settings; the test suite fails while any of these is stale.
lock: install
	UV=$(VENV)/bin/uv bash scripts/lock.sh

k8s: install
	$(PY) scripts/render_k8s.py

docs: install
	$(PY) scripts/config_docs.py

# CycloneDX SBOM of what the image installs (requirements/image.lock), and a vulnerability
# audit of the locked sets against PyPI's advisory data (needs network access to PyPI).
sbom: install
	$(VENV)/bin/cyclonedx-py requirements requirements/image.lock --pyproject pyproject.toml \
	  --of JSON --output-reproducible -o sbom.cdx.json

audit: install
	$(VENV)/bin/pip-audit --strict --disable-pip --require-hashes --progress-spinner off \
	  -r requirements/image.lock -r requirements/dev.lock
