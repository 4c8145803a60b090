#!/usr/bin/env bash
# Creates .venv in the project and installs the pinned stack and the project itself: the
# direct pins (images/constraints.txt) and the full set the image installs, derived from them
# (images/requirements.lock), so the tests run on the packages the containers run. A second
# run with unchanged pins returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (TensorFlow Data Validation 1.16 has no wheel for " + sys.version.split()[0] + ")"'

stamp=.venv/.installed
wanted=$(cat setup.cfg pyproject.toml images/constraints.txt images/requirements.lock | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
echo "Installing the pinned stack into .venv (TensorFlow, TFDV, kfp, ML Metadata; a few minutes the first time)..."
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c images/constraints.txt -c images/requirements.lock \
  -e '.[test]'
echo "$wanted" > "$stamp"
