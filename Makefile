# The README's two commands: `make demo` and `make test`. Each creates .venv when
# missing, installs landprior (editable) with its pinned dependencies, then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.landprior-installed
CORES ?= all

.PHONY: demo test lint install lock clean-results

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The main job: the whole land-cover pipeline on the embedded synthetic cities.
# Outputs: results/<city>/<tile>_landcover.tif, results/metrics.csv, results/report.md
# (+ results/report.html). Interrupted runs resume where they stopped.
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores $(CORES) --rerun-incomplete \
		--configfile pipelines/config/demo.yaml
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores 1 --configfile pipelines/config/demo.yaml \
		--report results/report.html
	@echo "Done: results/report.md, results/report.html, maps in results/<city>/"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# Refresh requirements.lock from the current environment (torch stays pinned in pyproject).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^torch==' > requirements.lock

clean-results:
	rm -rf results .snakemake
