#!/usr/bin/env bash
# The main job on the bundled data: set up, then `ct demo` (three monthly spans of 2013
# flights arrive in turn; the pipeline trains, compares, pushes, and stops on the corrupted one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ct demo "$@"
