# The two commands: `make run` (embedded platform, no servers) and `make test` (everything,
# with a real Kafka broker and MongoDB-compatible server provisioned locally).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
STACK  := $(PY) -m devtools.localstack
PLATFORM := $(PY) -m devtools.stack
PYTEST_ARGS ?=

.PHONY: help setup run test lint format unit infra-up infra-down infra-status infra-logs \
        stack-up stack-status stack-down stack-logs e2e token bench schemas clean \
        audit constraints

help:
	@echo "make run          the embedded platform with demo data: console http://127.0.0.1:8000/console/"
	@echo "make test         lint + the whole suite against a local Kafka and FerretDB"
	@echo "make unit         unit tests only (no servers)"
	@echo "make audit        pip-audit the pinned dependencies (constraints.txt); part of make test"
	@echo "make constraints  upgrade the dependencies and re-pin them in constraints.txt"
	@echo "make infra-up     start the local Kafka + FerretDB (infra-down, infra-status, infra-logs)"
	@echo "make stack-up     Kafka, FerretDB, a mail sink and every service as its own process"
	@echo "                  (stack-status, stack-logs, stack-down; ports 8001-8004)"
	@echo "make e2e          the end-to-end tests (their own private stack on free ports)"
	@echo "make token SUB=alice ROLE=agent   mint a development bearer token"
	@echo "make bench        outbox throughput benchmark against the local stack"
	@echo "make schemas      regenerate docs/events (JSON Schemas + AsyncAPI) from the contracts"

# A package index can answer badly for a moment (seen: a truncated JSON page that pip cannot
# parse): each install is tried three times before the setup fails.
TRIES = 3
with_retries = for try in $$(seq $(TRIES)); do $(1) && break; test $$try -lt $(TRIES) || exit 1; \
	echo "failed (try $$try of $(TRIES)); trying again in 10 s: $(1)" >&2; sleep 10; done

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call with_retries,$(PY) -m pip install --quiet --upgrade pip)
	$(call with_retries,$(PY) -m pip install --quiet -c constraints.txt -e '.[test]')
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m launcher.embedded --demo

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy shared devtools $(wildcard services/*/domain.py services/*/domain)

# Known vulnerabilities with a fixed version in the pins fail; an unreachable vulnerability
# service is reported as such (nothing audited), and fails with ITSM_AUDIT_STRICT=1.
audit: setup
	$(PY) -m devtools.supply_chain audit

# Upgrade within pyproject's ranges, then pin what was installed (docs/security.md).
constraints:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --upgrade -e '.[test]'
	$(PY) -m devtools.supply_chain constraints

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

unit: setup
	$(PY) -m pytest tests/unit tests/contract $(PYTEST_ARGS)

# Brings the local stack up, runs every test (the end-to-end fault run included), and stops the
# stack again (KEEP_INFRA=1 keeps it).
test: lint audit
	$(STACK) up
	set -a; eval "$$($(STACK) env)"; set +a; \
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ -z "$(KEEP_INFRA)" ]; then $(STACK) down; fi; \
	exit $$status

infra-up: setup
	$(STACK) up

infra-down: setup
	$(STACK) down

infra-status: setup
	$(STACK) status

infra-logs: setup
	$(STACK) logs

# The local distributed platform: every service as its own process (devtools/stack).
stack-up: setup
	$(PLATFORM) up

stack-status: setup
	@$(PLATFORM) status

stack-logs: setup
	$(PLATFORM) logs

stack-down: setup
	$(PLATFORM) down

e2e: setup
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

SUB  ?= alice
ROLE ?= agent
token: setup
	@$(VENV)/bin/itsm-token --sub $(SUB) --role $(ROLE)

bench: setup
	$(STACK) up
	set -a; eval "$$($(STACK) env)"; set +a; \
	$(PY) -m bench.outbox_throughput --events 1000 --writers 16 --batch-size 500 && \
	$(PY) -m bench.incident_api --seconds 4 --concurrency 16 --rate 100 && \
	$(PY) -m bench.notify_delivery --tickets 300 --rate 2 --seconds 30 && \
	$(PY) -m bench.change_conflicts --changes 10000 --checks 20 && \
	$(PY) -m bench.sla_throughput --events 20000 && $(PY) -m bench.sla_recovery --timers 20000

schemas: setup
	$(PY) -m shared.contracts.docs docs/events

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
