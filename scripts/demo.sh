#!/usr/bin/env bash
# The main job on the bundled data: set up, then `ct demo` (2013 replayed month by month:
# live traffic and feedback to the prediction service, triggers, retraining, canaries).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ct demo "$@"
