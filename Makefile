# The README's commands. `make run` and `make test` do all the set-up a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 0.0.0.0
PORT ?= 8080
# `make run-cluster`: this many workers, on the ports after PORT, behind nginx on PORT (their
# RELAY_REDIS_URL: redis://127.0.0.1:6379/0 unless set).
WORKERS ?= 2
# CI also runs the suite against PostgreSQL, less the tests that start relay processes (the Node
# interop tests, the live and multi-worker ones: those relays keep their own SQLite database).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test

# Root installs system packages itself; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM := /usr/bin/chromium
NGINX := /usr/sbin/nginx
REDIS_SERVER := /usr/bin/redis-server

.PHONY: run run-cluster test lint format bench soak chaos clean

$(VENV)/.run-deps: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.run-deps requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The browser tests drive Debian's Chromium (Playwright's own browser download is never used).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# `make run-cluster` (and its test) run Debian's nginx binary as an ordinary process with its own
# configuration under var/cluster/ (deploy/cluster.py), never the system's nginx service.
# The Redis-restart test starts a redis-server of its own (the suite's Redis is the local one).
$(REDIS_SERVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server

$(NGINX):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx

bench/node_modules/.installed: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund
	touch $@

run: $(VENV)/.run-deps
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py serve

# Many Redis-backed workers behind nginx on this machine (README, "Many workers").
run-cluster: $(VENV)/.run-deps $(NGINX)
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) deploy/cluster.py --workers $(WORKERS) --host $(HOST) --port $(PORT) --nginx $(NGINX)

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The interop tests install the npm clients themselves (npm ci, esbuild bundle) when needed.
test: $(VENV)/.dev-deps $(CHROMIUM) $(NGINX) $(REDIS_SERVER) lint
	@TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m tests.services
	$(PY) -m pytest
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -m "not interop and not live" -p no:cacheprovider -q

# The scale-out part needs Redis (127.0.0.1:6379, keys under a prefix of the run's own) and nginx.
bench: $(VENV)/.dev-deps bench/node_modules/.installed $(NGINX)
	$(PY) bench/run.py --scale-out

# Hours of churn and faults leave nothing behind (bench/soak.py; README, "Soak and chaos"):
# SOAK_SECONDS of mixed load against one worker, then two over Redis; `make chaos` against two
# while killing workers, restarting Redis and cutting PostgreSQL off. Each fails if a frame was
# lost or anything still grows once the load stops; series and plots go to bench/results/.
SOAK_SECONDS ?= 60
soak: $(VENV)/.dev-deps
	$(PY) bench/soak.py --duration $(SOAK_SECONDS) --workers 1
	$(PY) bench/soak.py --duration $(SOAK_SECONDS) --workers 2

chaos: $(VENV)/.dev-deps $(REDIS_SERVER)
	$(PY) bench/soak.py --duration $(SOAK_SECONDS) --workers 2 --chaos

clean:
	rm -rf $(VENV) tests/interop/node_modules tests/interop/build bench/node_modules var
