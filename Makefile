# Tollgate: `make serve` runs the platform on its embedded default, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
export DJANGO_SETTINGS_MODULE := apps.platform.settings

.PHONY: install serve worker beat test lint format bench migrate cluster-up cluster-down cluster-test cluster-load

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

# Embedded default: SQLite and in-process Redis stand-ins unless DATABASE_URL/REDIS_URL are set,
# served by one process (the stand-ins are per process). A real deployment (both set) runs one
# web process per core (WEB_WORKERS overrides), their Prometheus metrics aggregated through
# prometheus_client's multiprocess mode in PROMETHEUS_MULTIPROC_DIR (emptied at start).
WEB_WORKERS ?= $(if $(and $(DATABASE_URL),$(REDIS_URL)),$(shell nproc 2>/dev/null || echo 1),1)
PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/var/prometheus
serve: migrate
	DEMO_UPSTREAM=1 $(BIN)/python manage.py demo_setup --port $(PORT)
	rm -rf "$(PROMETHEUS_MULTIPROC_DIR)" && mkdir -p "$(PROMETHEUS_MULTIPROC_DIR)"
	$(if $(filter-out 1,$(WEB_WORKERS)),PROMETHEUS_MULTIPROC_DIR="$(PROMETHEUS_MULTIPROC_DIR)") \
	DEMO_UPSTREAM=1 $(BIN)/uvicorn apps.platform.asgi:application --host $(HOST) --port $(PORT) \
		--loop uvloop --http httptools --no-access-log --workers $(WEB_WORKERS)

# One node: the worker runs the beat schedule too (-B), so `make worker` alone ingests the
# usage stream and builds the reports. With several workers, run exactly one `make beat`
# and start the workers with `make worker BEAT=0`. Beat's schedule state lives in var/.
BEAT ?= 1
worker: install
	mkdir -p var
	$(BIN)/celery -A apps.platform.celery_app worker --loglevel=INFO \
		$(if $(filter 1,$(BEAT)),-B -s var/celerybeat-schedule)

beat: install
	mkdir -p var
	$(BIN)/celery -A apps.platform.celery_app beat --loglevel=INFO -s var/celerybeat-schedule

# The suite runs against the local PostgreSQL and Redis, in TEST_WORKERS parallel processes
# (pytest-xdist; each file on one worker). Worker gwN has its own test database and uses the
# Redis database N below TEST_REDIS_URL's.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/tollgate
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_WORKERS ?= 2
# The official JS SDKs for their tests (pinned in tests/js/package-lock.json, no install
# scripts run); without npm those tests are skipped.
tests/js/node_modules/.package-lock.json: tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/js --ignore-scripts --no-audit --no-fund --loglevel=error \
		|| echo "JS SDKs not installed: their tests will be skipped"; \
	else echo "npm not found: the JS SDK tests will be skipped"; fi

test: install tests/js/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(BIN)/python bench/gateway_bench.py

# Many hosts on one machine (root: Linux network namespaces on a bridge): 3 gateway hosts,
# Redis (CLUSTER_REDIS=cluster: a 3+3 Redis Cluster), PostgreSQL, 2 workers, beat and the
# upstreams, each its own IP (bench/cluster/cluster.py). cluster-test brings it up, runs
# bench/cluster's suite against it and tears it down whatever the outcome.
CLUSTER_REDIS ?= single
cluster-up: install
	$(BIN)/python bench/cluster/cluster.py up --redis $(CLUSTER_REDIS)

cluster-down:
	$(BIN)/python bench/cluster/cluster.py down

cluster-test: install
	$(BIN)/python bench/cluster/cluster.py up --redis $(CLUSTER_REDIS) || { $(BIN)/python bench/cluster/cluster.py down; exit 1; }
	$(BIN)/pytest -p no:django -p no:warnings bench/cluster $(PYTEST_ARGS); rc=$$?; \
		$(BIN)/python bench/cluster/cluster.py down; exit $$rc

cluster-load: install
	$(BIN)/python bench/cluster/cluster.py up --redis $(CLUSTER_REDIS) || { $(BIN)/python bench/cluster/cluster.py down; exit 1; }
	$(BIN)/python bench/cluster/load.py $(LOAD_ARGS); rc=$$?; \
		$(BIN)/python bench/cluster/cluster.py down; exit $$rc
