# TaskOverflow: one command per task. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed-dev

RUN_STAMP := $(VENV)/.installed-runtime

# `make run` with neither variable set is the zero-setup single process (SQLite, in-memory
# broker). The service targets default to the machine's Postgres and Redis instead.
LOCAL_DATABASE_URL := postgresql://postgres@127.0.0.1:5432/taskoverflow
LOCAL_BROKER_URL   := redis://127.0.0.1:6379/0
SERVICES_ENV = DATABASE_URL=$${DATABASE_URL:-$(LOCAL_DATABASE_URL)} BROKER_URL=$${BROKER_URL:-$(LOCAL_BROKER_URL)}
PORT         ?= 6400
PROCESSES    ?= 1
THREADS      ?= 4

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# checkov gets its own environment: it pins a fork of python-hcl2 that clashes with ours.
CHECKOV_VENV := .venv-checkov

# What running needs: the runtime pins only (quick on a fresh machine).
$(RUN_STAMP): requirements/runtime.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --quiet --python $(PY) -r requirements/runtime.txt
	$(BIN)/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $(RUN_STAMP)

$(STAMP): requirements/dev.txt requirements/runtime.txt requirements/checkov.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --quiet --python $(PY) -r requirements/dev.txt
	$(BIN)/uv pip install --quiet --python $(PY) --no-deps -e .
	@test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(BIN)/uv pip install --quiet --python $(CHECKOV_VENV)/bin/python -r requirements/checkov.txt
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the pinned dependencies (runtime + dev)

.PHONY: lock
lock: $(STAMP) ## Re-pin requirements/*.txt from pyproject.toml (no index URLs recorded)
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --no-header -q -o requirements/runtime.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev -c requirements/runtime.txt --python-version 3.11 --no-header -q -o requirements/dev.txt
	echo "checkov==3.3.30" | $(BIN)/uv pip compile - --python-version 3.11 --no-header -q -o requirements/checkov.txt

.PHONY: run
run: $(RUN_STAMP) ## Run TaskOverflow on http://127.0.0.1:6400/ (zero setup unless DATABASE_URL/BROKER_URL are set)
ifeq ($(origin DATABASE_URL)$(origin BROKER_URL),undefinedundefined)
	PORT=$(PORT) $(PY) ops/dev/standalone.py
else
	PORT=$(PORT) PROCESSES=$(PROCESSES) THREADS=$(THREADS) VENV=$(VENV) ops/dev/run.sh
endif

.PHONY: run-services
run-services: $(RUN_STAMP) ## Run API + worker processes on the local Postgres and Redis (or DATABASE_URL/BROKER_URL)
	$(SERVICES_ENV) PORT=$(PORT) PROCESSES=$(PROCESSES) THREADS=$(THREADS) VENV=$(VENV) ops/dev/run.sh

.PHONY: db
db: $(RUN_STAMP) ## Create the database named by DATABASE_URL if it does not exist
	$(SERVICES_ENV) $(PY) ops/dev/create_database.py

.PHONY: migrate
migrate: db ## Apply migrations (alembic upgrade head)
	$(SERVICES_ENV) $(BIN)/alembic upgrade head

.PHONY: api
api: $(RUN_STAMP) ## Run only the API (uvicorn) on $(PORT)
	$(SERVICES_ENV) exec $(BIN)/uvicorn --factory api.app:create_app_from_env --host 127.0.0.1 --port $(PORT) --no-access-log --no-proxy-headers

.PHONY: worker
worker: $(RUN_STAMP) ## Run only a worker: make worker PROCESSES=2 THREADS=8
	$(SERVICES_ENV) WORKER_PROCESSES=$(PROCESSES) DRAMATIQ_THREADS=$(THREADS) exec $(PY) -m workers

# A local SQS-compatible server (moto) for running on SQS; see README "Running on SQS".
SQS_PORT         ?= 5000
SQS_ENDPOINT_URL ?= http://127.0.0.1:$(SQS_PORT)
LOCAL_AWS := AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1

.PHONY: sqs-server
sqs-server: $(STAMP) ## Run a local SQS-compatible server (moto) on 127.0.0.1:$(SQS_PORT), foreground
	exec $(BIN)/moto_server -H 127.0.0.1 -p $(SQS_PORT)

.PHONY: sqs-queues
sqs-queues: $(STAMP) ## Create the job queue + DLQ (redrive policy) on the local SQS server
	$(LOCAL_AWS) SQS_ENDPOINT_URL=$(SQS_ENDPOINT_URL) $(PY) ops/dev/create_sqs_queues.py

.PHONY: run-sqs
run-sqs: $(STAMP) ## Like `run-services`, but jobs travel over the local SQS server (start `make sqs-server` first)
	$(LOCAL_AWS) DATABASE_URL=$${DATABASE_URL:-$(LOCAL_DATABASE_URL)} BROKER_URL=sqs:// SQS_ENDPOINT_URL=$(SQS_ENDPOINT_URL) \
		PORT=$(PORT) PROCESSES=$(PROCESSES) THREADS=$(THREADS) VENV=$(VENV) ops/dev/run.sh

.PHONY: demo-queues
demo-queues: $(STAMP) ## Create the practical's csse6400_prac and csse6400_prac.fifo on the local SQS server
	$(LOCAL_AWS) $(BIN)/queue-demo-queues --endpoint-url $(SQS_ENDPOINT_URL)

.PHONY: test
test: $(STAMP) ## Run every test (unit, integration, end-to-end) on the machine's Postgres and Redis, or private ones if they are not running
	$(BIN)/pytest

.PHONY: test-unit
test-unit: $(STAMP) ## Run only the unit tests (no services needed)
	$(BIN)/pytest tests/unit

.PHONY: lint
lint: $(STAMP) ## ruff (lint and format check) and the import-direction contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

.PHONY: format
format: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: typecheck
typecheck: $(STAMP) ## mypy over api, workers and models
	$(BIN)/mypy

.PHONY: terraform-check
terraform-check: $(STAMP) ## ops/terraform run by Terraform with its AWS provider against moto (fmt, validate, plans, apply, destroy), checkov, and the ties to the code
	cd ops && ../$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml --quiet
	$(BIN)/pytest -q tests/deployment/test_terraform_provider.py tests/deployment/test_terraform.py tests/deployment/test_first_apply.py

.PHONY: chaos
chaos: $(STAMP) ## Full chaos runs (Redis 1,500 jobs, SQS 1,000), faults aimed at running jobs; figures in docs/RELIABILITY.md
	$(PY) -m tests.chaos.harness --broker redis --jobs 1500 --kills 15 --sigterms 3 --outage-s 10 --threads 12 --todos 30000
	$(PY) -m tests.chaos.harness --broker sqs --jobs 1000 --kills 8 --sigterms 2 --threads 12 --todos 30000

.PHONY: flood
flood: $(STAMP) ## One client floods for 60 s while another keeps its pace: limits hold, its p95 within 2x of quiet (docs/RELIABILITY.md)
	$(PY) -m tests.load.flood --quiet-s 30 --flood-s 60

.PHONY: aws-parity
aws-parity: $(STAMP) ## terraform apply ops/terraform against moto, then run the task definitions it registered under podman (TLS Postgres): migrate, serve, job, password rotation, SIGTERM
	$(PY) -m tests.deployment.parity.harness

.PHONY: compose-check
compose-check: $(STAMP) ## Bring compose.yaml up with podman-compose (third-party images built locally), scale workers, run a job, tear down
	$(BIN)/pytest -v -p no:cacheprovider tests/deployment/test_compose.py

.PHONY: images-smoke
images-smoke: ## Build both images with podman and run them: migrate, API, 2 workers, a job, SIGTERM
	ops/images/smoke.sh

.PHONY: retention
retention: $(STAMP) ## 50 jobs/s for 10 minutes with 30 s results and 60 s records: the jobs table must level off
	$(PY) ops/bench/retention.py $(RETENTION_ARGS)

.PHONY: bench
bench: $(STAMP) ## P1-P11 for ours (~25 min), growth plots into docs/; beside the seed design with BENCH_ARGS="--seed DIR" or SEED_BENCH=DIR (also --record, --only, --p8-todos, --p9-max, --p11-s)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	$(PY) ops/bench/compare.py $(BENCH_ARGS)
