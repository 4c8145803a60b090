#!/usr/bin/env bash
# Builds fake-gcs-server (a Cloud Storage JSON API server, github.com/fsouza/fake-gcs-server
# at the version below) from its Go module into .cache/gcs, for the tests that read spans
# from gs:// (tests/support/object_storage.py). Needs Go 1.26+ (the module's go.mod asks for
# it); without it, it says so and those tests skip (in CI they fail). The first build takes about a minute; a second run at
# the same version returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
module=github.com/fsouza/fake-gcs-server@v1.56.1
out=.cache/gcs
if ! command -v go >/dev/null || ! go version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; then
  echo "$0: no Go 1.26 or newer here: the tests on gs:// will be skipped" >&2
  exit 0
fi
if [ -f "$out/.module" ] && [ "$(cat "$out/.module")" = "$module" ]; then
  exit 0
fi
echo "Building fake-gcs-server ($module) into $out (about a minute the first time)..."
rm -rf "$out"
mkdir -p "$out"
GOBIN="$PWD/$out" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0 go install -trimpath "$module"
echo "$module" > "$out/.module"
