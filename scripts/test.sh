#!/usr/bin/env bash
# Sets up, lints (ruff: pycodestyle, pyflakes, import order, line length, formatting), then
# runs both test tiers: unit tests and the kfp.local pipeline runs (marker `pipeline`).
# Beam's Flink and Spark job servers come from Maven Central (scripts/job_servers.sh) for the
# tests on them; Kubernetes' API server and etcd are built from their Go modules
# (scripts/kube.sh) for the tests against a real API server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/job_servers.sh
bash scripts/kube.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
