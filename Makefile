# make demo: the whole pipeline on the embedded sample (CPU). make test: lint, then the test suite.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' || \
	  { echo "error: verl 0.9.1 needs Python 3.10-3.12; run e.g. 'make PYTHON=python3.11 $(MAKECMDGOALS)'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[test,timeseries]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rationanomaly.demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Time series (rationanomaly.timeseries): the synthetic smoke run of both modes (~1 min on 2 CPU cores).
TS_SMOKE := runs/timeseries/smoke
.PHONY: demo-timeseries
demo-timeseries: $(STAMP)
	$(BIN)/python -m rationanomaly.timeseries synth --layout yahoo --output_dir $(TS_SMOKE)/data \
	  --series 20 --seed 0 --min_length 300 --max_length 400 --anomaly_rate 0.03
	for mode in reference fixed; do \
	  $(BIN)/python -m rationanomaly.timeseries train --data $(TS_SMOKE)/data --layout yahoo --mode $$mode \
	    --output_dir $(TS_SMOKE)/$$mode --episodes 30 --updates_per_episode 40 --learning_rate 0.003 \
	    --batch_size 64 --al_budget 30 --lp_budget 20 --vae_epochs 5 --vae_batch_size 256 --replay_init 200 \
	    --seed 0 || exit 1; \
	done
