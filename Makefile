# `make run` runs the system on this machine; `make test` checks it. Both build what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov pins versions that clash with pytest's, so it lives in a virtual environment of its own.
CHECKOV_VENV := $(VENV)/checkov
CONSUMERS ?= 3

.PHONY: run test soak bench pods compose-check venv clean

$(BIN)/.installed: requirements-dev.txt requirements-checkov.txt pusher/requirements.txt consumer/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed, $(PYTHON) is %d.%d" % sys.version_info[:2]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

venv: $(BIN)/.installed

# Variables given on make's command line reach the loops' environment, so the timings pass through:
# make run PROCESS_TIME_MAX=1 PUSH_INTERVAL_MAX=0.5
run: venv
	$(BIN)/python scripts/run.py --consumers $(CONSUMERS)

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache

# Not part of `make test`: 20 consumers and a pusher at full speed, then every job accounted for.
SOAK_SECONDS ?= 60
soak: venv
	$(BIN)/python scripts/soak.py --seconds $(SOAK_SECONDS)

# The same run, shorter: throughput and peak connections on this machine.
bench: venv
	$(BIN)/python scripts/soak.py --seconds 20

# Need a Docker engine (on a machine without one, they start ../shared/tools/docker-standin), so they
# are not part of `make test`. compose-check: `docker compose up` with three consumers, then a graceful
# stop. pods: each container run the way its Kubernetes pod spec says.
compose-check: venv
	scripts/compose_check.sh

pods: venv
	$(BIN)/python scripts/pods.py
