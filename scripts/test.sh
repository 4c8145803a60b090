#!/usr/bin/env bash
# Sets up, checks the committed pipeline spec, then runs both test tiers: unit tests and
# the kfp.local pipeline runs (marker `pipeline`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
