# Two commands: `make run` serves the app, `make test` runs the whole suite. Both set everything up first.
# `make test-fast`: the suite without gunicorn, Chromium or subprocess CLIs (pytest -m "not slow"), in seconds;
# `make test-shuffled`: the same in a random order.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
DEPTH_MODEL ?= Intel/dpt-hybrid-midas
WORKERS ?= 1
THREADS ?= 4

# Compiled modules and pytest's rewritten test modules are cached (__pycache__, git-ignored) even where the shell
# sets PYTHONDONTWRITEBYTECODE: without the cache every test run compiles the package and rewrites 68 test modules
# again (3 of the fast tier's 7-10 s of collection here).
unexport PYTHONDONTWRITEBYTECODE

SYSTEM_LIBS := libusb-1.0-0 libgl1 libgomp1
TEST_SYSTEM_LIBS := chromium chromium-driver redis-server ffmpeg blender python3-numpy
# Scaling out (README "Scaling out"): web instances started with JOB_BACKEND=celery, and `make worker` on any machine,
# all with the same REDIS_URL and an OUTPUT_FOLDER on storage every machine sees.
REDIS_URL ?= redis://127.0.0.1:6379/0
REDIS_PORT ?= 6379
CONCURRENCY ?= 1
POOL ?= prefork  # on a GPU: POOL=threads CONCURRENCY=8 BATCH_SIZE=8 (one model copy, batched forwards)
# Prometheus (web/metrics.py): each instance keeps its processes' values in its own folder; a worker serves them
# on WORKER_METRICS_PORT (0: no exporter).
METRICS_DIR ?= /tmp/image-to-3d-metrics-$(PORT)
WORKER_METRICS_PORT ?= 9808
WORKER_METRICS_DIR ?= /tmp/image-to-3d-worker-metrics-$(WORKER_METRICS_PORT)

.PHONY: setup setup-test system-libs run worker redis test test-fast test-shuffled download-model bench bench-memory soak clean

setup: system-libs $(VENV)/.installed

setup-test: setup $(VENV)/.installed-test tests/js/node_modules/.installed
	@sh scripts/system-deps.sh $(TEST_SYSTEM_LIBS)

system-libs:
	@sh scripts/system-deps.sh $(SYSTEM_LIBS)

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	@touch $@

# The Khronos glTF validator checks our .glb files in the tests (node ships with the machine; tests skip without it).
tests/js/node_modules/.installed: tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/js --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: the glTF validation tests will be skipped"; fi

run: setup
	rm -rf "$(METRICS_DIR)" && mkdir -p "$(METRICS_DIR)"
	PROMETHEUS_MULTIPROC_DIR="$(METRICS_DIR)" \
	DEPTH_MODEL="$(DEPTH_MODEL)" WEB_CONCURRENCY=$(WORKERS) $(VENV)/bin/gunicorn --bind "$(HOST):$(PORT)" --workers $(WORKERS) \
		--threads $(THREADS) --timeout 300 --access-logfile - "app:create_app()"

# A conversion worker: takes one job at a time per process (CONCURRENCY processes, each loading the model once) from
# Redis at REDIS_URL. It reads the same variables as the web app (OUTPUT_FOLDER, DEPTH_MODEL, DEVICE, PRECISION, ...).
# It needs only Redis's Python client; the server runs wherever REDIS_URL points (`make redis` for one here).
worker: setup
	rm -rf "$(WORKER_METRICS_DIR)" && mkdir -p "$(WORKER_METRICS_DIR)"
	PROMETHEUS_MULTIPROC_DIR="$(WORKER_METRICS_DIR)" WORKER_METRICS_PORT="$(WORKER_METRICS_PORT)" \
	DEPTH_MODEL="$(DEPTH_MODEL)" REDIS_URL="$(REDIS_URL)" $(PY) -m celery -A web.jobs.celery.worker worker --pool $(POOL) \
		--concurrency $(CONCURRENCY) --prefetch-multiplier 1 --without-gossip --without-mingle --without-heartbeat \
		--queues image-to-3d --loglevel INFO

# A Redis server for trying scale-out on one machine (in memory only: a restart forgets queued jobs, which the web
# tier then queues again once). Production: a managed or supervised Redis.
redis:
	@sh scripts/system-deps.sh redis-server
	redis-server --port $(REDIS_PORT) --bind $(HOST) --save "" --appendonly no

test: setup-test
	$(PY) -m pytest

# Two processes (pytest-xdist), one a core: collection (torch, transformers) and the tests run on both at once. Each
# process has its own session fixtures and temporary folders; the tier passes shuffled (make test-shuffled), so no
# test leans on another having run first.
test-fast: setup-test
	$(PY) -m pytest -p xdist -n 2 -m "not slow"

# The fast tier in a random order (pytest-randomly prints its seed; `--randomly-seed=N` repeats an order). CI keeps
# the file order: a shuffled order is a hunt for tests that lean on each other, run here, not a lottery in CI.
test-shuffled: setup-test
	$(PY) -m pytest -p randomly -m "not slow" $(PYTEST_ARGS)

download-model: setup
	$(PY) -m converter.download "$(DEPTH_MODEL)"

# Run by hand, never part of `make test`: ours vs the tutorial route on a 12 MP and a 1 MP photo (bench/RESULTS.md).
# BENCH_ARGS=--quick: 1 MP only; also --precision, --throughput, --models all.
bench: setup
	$(PY) bench/bench.py $(BENCH_ARGS)

bench-memory: setup  # each job's peak memory against converter.memory's estimate (bench/RESULTS.md)
	$(PY) bench/memory.py $(BENCH_ARGS)

# Run by hand, never part of `make test`: two web instances, two Celery workers and Redis on this machine for 30
# minutes at 80 % of their measured capacity, a worker killed and Redis restarted, goals printed PASS/FAIL
# (bench/soak.py; bench/RESULTS.md). SOAK_ARGS="--minutes 10", "--model /path/to/model", "--rate 1.5", "--report x.json".
soak: setup $(VENV)/.installed-test
	@sh scripts/system-deps.sh redis-server
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
