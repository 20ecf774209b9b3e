# imray: `make run` runs it, `make test` tests it. Both create .venv and install what they need.
#
# On a machine where Ray must not touch the network (see scripts/netns-run), everything that starts
# Ray runs in a loopback-only network namespace: a named one for `run` (so `make status`, `make down`
# and `make shell` reach the same imray), a private one for `test`. NETNS=off runs bare (a laptop).

PYTHON  ?= python3
VENV    ?= .venv
NETNS   ?= imray
PY      := $(VENV)/bin/python
IMRAY   := $(VENV)/bin/imray
STAMP   := $(VENV)/.installed
NETRUN  := scripts/netns-run --name $(NETNS)
PYTEST_ARGS ?=

.PHONY: install clients run up status down shell test unit lint bench bench-real bench-hosts clean
BENCH_ARGS ?=

install: $(STAMP) clients

clients:  ## the TypeScript SDK and the web app (clients/build.sh; quick when nothing changed)
	clients/build.sh

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

run: install  ## start imray in the foreground (Ctrl-C stops it)
	$(NETRUN) $(IMRAY) up

up: install  ## start imray and return
	$(NETRUN) $(IMRAY) up --detach

status: install
	$(NETRUN) $(IMRAY) status

down: install
	$(NETRUN) $(IMRAY) down

shell:  ## a shell inside imray's network namespace (curl, a client, `imray status`)
	$(NETRUN) bash

test: install lint  ## the whole suite on a real 3-node Ray cluster, on the embedded and the real stack
	middleware/install.sh
	$(PY) -m pip install --quiet -r requirements-mysql.txt  # the C driver (built against libmariadb)
	scripts/netns-run scripts/test-stacks $(PYTEST_ARGS)

unit: install  ## the tests that need no Ray cluster
	$(PY) -m pytest -q tests/test_unit_*.py tests/test_cluster_yaml.py

bench: install  ## imray bench on a local 3-node cluster (see README)
	$(PY) -m imray.bench.centrifugo  # the second baseline, built once from the Go module proxy (cached)
	scripts/netns-run $(IMRAY) bench $(BENCH_ARGS)

bench-real: install  ## the same on MariaDB, Redis, S3 and Nacos (installed as for make test)
	middleware/install.sh
	$(PY) -m pip install --quiet -r requirements-mysql.txt
	$(PY) -m imray.bench.centrifugo
	scripts/netns-run scripts/bench-real $(BENCH_ARGS)

bench-hosts: install  ## the same against the multi-host harness's cluster (hosts with addresses of their own)
	middleware/install.sh
	$(PY) -m imray.bench.centrifugo
	scripts/netns-run scripts/multihost --bench $(BENCH_ARGS)

lint: install  ## ruff, then mypy (its settings: pyproject.toml [tool.mypy])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
