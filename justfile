# zapq tasks. Run through ./dev (which installs .venv first) or directly with the venv active.
set dotenv-load := false

export ZAPQ_ENV := env_var_or_default("ZAPQ_ENV", "dev")
export ZAPQ_META_GRAPH_URL := env_var_or_default("ZAPQ_META_GRAPH_URL", "http://127.0.0.1:18080")

default:
    @just --list

# Create/upgrade the database.
migrate:
    zapq migrate

# Migrate, start the system, send a signed webhook, show it processed, stop cleanly.
demo:
    zapq demo

# Every process of the system locally, reloading on code changes (docker compose when an engine runs).
up:
    #!/usr/bin/env bash
    set -euo pipefail
    if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        exec docker compose --profile fakes up --build
    fi
    zapq migrate
    exec honcho -f deploy/Procfile.dev start

# The whole test suite (real Redis and Postgres) on two pytest-xdist workers (ZAPQ_TEST_WORKERS; 0 = one
# process; the fault tests run one after another on one of them), then lint and type checks.
test *ARGS:
    pytest -n "${ZAPQ_TEST_WORKERS:-2}" --dist loadgroup {{ARGS}}
    just lint

# Lint, format check and types.
lint:
    ruff check libs services tests bench
    ruff format --check libs services tests bench
    mypy

# Format the code.
fmt:
    ruff format libs services tests bench
    ruff check --fix libs services tests bench

# Benchmarks with same-run baselines (see bench/README.md).
bench *ARGS:
    python -m bench {{ARGS}}
