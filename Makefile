# Every target creates or updates .venv itself, so each works on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export S4SWEEP_HOME ?= $(CURDIR)/runs

.PHONY: install demo test test-fast bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	@# constraints.txt pins torch/torchvision (and ray/mlflow/optuna): no extra may swap them
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip check
	$(PY) -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1'), torch.__version__"
	touch $(STAMP)

install: $(STAMP)

# the embedded default: the smoke sweep on generated data, private local Ray, embedded MLflow, then the table
demo: $(STAMP)
	$(VENV)/bin/s4sweep sweep --dry-run
	$(VENV)/bin/s4sweep sweep

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/colour_baseline.py
	$(PY) bench/trainer_step.py
	$(PY) bench/sweep_overhead.py
	$(PY) bench/losses.py

lint: $(STAMP)
	$(VENV)/bin/ruff check orchestrator trainers search_spaces tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
