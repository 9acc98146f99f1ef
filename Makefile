# Every target creates or updates .venv itself, so each works on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export S4SWEEP_HOME ?= $(CURDIR)/runs

.PHONY: install demo test test-fast bench bench-rev lint clean image tracking

# the project image's tag: <s4sweep version>-ray<Ray pin>, as cluster/ names it
IMAGE ?= s4sweep:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)-ray$(shell sed -n 's/^ray==//p' constraints.txt)

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
	$(VENV)/bin/s4sweep report smoke --format md,csv,html,png

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/colour_baseline.py
	$(PY) bench/trainer_step.py
	$(PY) bench/sweep_overhead.py
	$(PY) bench/report.py
	$(PY) bench/trial_startup.py
	$(PY) bench/losses.py
	$(PY) bench/data.py
	$(PY) bench/storage.py
	$(PY) bench/tiny_quality.py --bf16
	$(PY) bench/learnability.py

# before/after in one run: REV's tree (a temporary git worktree) and this one, measured in turns (bench/revisions.py)
bench-rev: $(STAMP)
	@test -n "$(REV)" || { echo "usage: make bench-rev REV=<git revision, e.g. eb2c007>" >&2; exit 2; }
	$(PY) bench/report.py --rev $(REV)
	$(PY) bench/trial_startup.py --rev $(REV)

lint: $(STAMP)
	$(VENV)/bin/ruff check orchestrator trainers search_spaces tests bench

# docker/README.md: one image for the Ray head and workers; the team tracking stack (PostgreSQL + mlflow server)
image:
	docker build -f docker/Dockerfile -t $(IMAGE) .

tracking:
	docker compose -f docker/compose.yaml up -d --build

clean:
	rm -rf $(VENV) runs .pytest_cache
