# The two commands a newcomer needs: `make demo` and `make test`. Every target sets itself up.
SHELL := /bin/bash
export RETAIL_ML_HOME ?= $(CURDIR)/.retail_ml
export DAGSTER_HOME ?= $(RETAIL_ML_HOME)/dagster
# glibc hands large freed blocks back to the kernel; re-faulting them dominated the feature
# engine's time on our 2-core VMs (see benchmarks/README.md). Keep them in the process.
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
# One "planned" event per asset for a run over a partition range, not one per partition
# (ml_assets/instance.py says why and what it costs).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS ?= true
export BENTOML_HOME ?= $(RETAIL_ML_HOME)/bentoml
export BENTOML_DO_NOT_TRACK ?= true
export MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
VENV := .venv
RUN := $(VENV)/bin/python -m
UV := $(shell command -v uv 2>/dev/null || echo $(VENV)/bin/uv)

.PHONY: setup demo dev serve mlflow test lint bench fuzz soak loop bento-export clean

$(VENV)/.synced: pyproject.toml uv.lock
	@test -d $(VENV) || python3 -m venv $(VENV)
	@command -v uv >/dev/null 2>&1 || test -x $(VENV)/bin/uv || $(VENV)/bin/pip install -q uv
	$(UV) sync --frozen
	@touch $@

setup: $(VENV)/.synced

demo: setup
	$(VENV)/bin/retail-ml demo

# The laptop instance's settings (deploy/dagster.local.yaml), unless DAGSTER_HOME has its own.
INSTANCE := $(DAGSTER_HOME)/dagster.yaml
$(INSTANCE):
	@mkdir -p $(DAGSTER_HOME) && cp deploy/dagster.local.yaml $@

# A taken port stops a server target with one line naming it and a free one to pass as PORT=,
# before anything starts (the servers' own errors are tracebacks from deep in their startup).
port_free = @$(VENV)/bin/retail-ml port-free $(1) --hint "make $@"

dev: setup $(INSTANCE)
	$(call port_free,$(or $(PORT),3000))
	@echo '{"url": "http://127.0.0.1:$(or $(PORT),3000)"}' > $(DAGSTER_HOME)/webserver.json
	$(VENV)/bin/dagster dev -w workspace.yaml --port $(or $(PORT),3000)

# The latest Bento that `demand_forecaster_bento` built (make demo first). PORT=... moves it.
serve: setup
	$(call port_free,$(or $(PORT),3001))
	$(VENV)/bin/bentoml serve demand_forecaster:latest --port $(or $(PORT),3001)

# The Bento that `make demo` built around the champion, as one file (the CI workflow's artifact;
# `bentoml import` loads it elsewhere, `bentoml containerize` makes an image where Docker runs).
bento-export: setup
	$(VENV)/bin/bentoml export demand_forecaster:latest $(or $(OUT),demand_forecaster.bento)

# A UI for one person: one web worker (MLflow's default four each import MLflow, which took
# minutes to answer on a busy 2-core machine) and no job runner (MLflow 3's huey consumers for
# GenAI jobs: 10 processes and 2 GB RSS measured, against 2 and 0.6 GB without), no AI gateway,
# no telemetry. MLflow 3.17 opens any experiment in its GenAI view (traces, token usage) unless
# the link asks for model training: the link printed to the experiment does.
mlflow: setup
	$(call port_free,$(or $(PORT),5000))
	@echo "MLflow UI: $$($(VENV)/bin/retail-ml mlflow-url $(or $(PORT),5000))"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_ENABLE_AI_GATEWAY=false MLFLOW_DISABLE_TELEMETRY=true \
		$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(RETAIL_ML_HOME)/mlflow/mlflow.db \
		--port $(or $(PORT),5000) --workers 1

# The browser tests (tests/e2e/test_browser.py) drive the system Chromium (Debian package);
# without it they fail, naming it.
test: setup
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && \
		$$SUDO apt-get install -y -q chromium; } || echo "chromium not installed: the browser tests will fail"; }
	$(RUN) pytest -q

lint: setup
	$(VENV)/bin/ruff check .

# The serving benchmark drives its servers with wrk (Debian package); without it, it falls back
# to its own Python load generator, which saturates sooner.
bench: setup
	@command -v wrk >/dev/null || ! command -v apt-get >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q wrk || { $$SUDO apt-get update -q && \
		$$SUDO apt-get install -y -q wrk; } || echo "wrk not installed: using the fallback"; }
	$(RUN) benchmarks.run

# Property-based fuzzing of a running server (make serve) from its /docs.json; exits 1 on any
# server error, traceback or undocumented answer.
fuzz: setup
	$(RUN) benchmarks.fuzz_api --url $(or $(URL),http://127.0.0.1:3001) --examples $(or $(EXAMPLES),300)

# 10 minutes at 200 requests/s on its own server (port 3002) while the champion pointer moves
# twice: no failed request, both swaps seen, flat RSS (make demo first).
soak: setup
	$(RUN) benchmarks.soak --duration $(or $(DURATION),600)

# The README's monitoring walk-through, driven and timed: dagster dev and bentoml serve on
# RETAIL_ML_HOME (after make demo), two normal weeks, then six weeks of doubled demand.
loop: setup $(INSTANCE)
	$(RUN) benchmarks.loop_walkthrough

clean:
	rm -rf $(RETAIL_ML_HOME)
