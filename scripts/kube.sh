#!/usr/bin/env bash
# Builds Kubernetes' API server (k8s.io/kubernetes 1.34.2) and etcd (3.6.4, the release that
# Kubernetes pins) from their Go modules (tests/support/kube-binaries/) into .cache/kube, for
# the tests that talk to a real API server (tests/support/kube.py). Needs Go 1.24+; without it, it
# says so and those tests skip (in CI they fail). The first build takes a few minutes; a
# second run with unchanged modules returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
modules=tests/support/kube-binaries
out=.cache/kube
if ! command -v go >/dev/null || ! go version | grep -Eq 'go1\.(2[4-9]|[3-9][0-9])'; then
  echo "$0: no Go 1.24 or newer here: the tests against a Kubernetes API server will be skipped" >&2
  exit 0
fi
wanted=$(cat "$modules"/*/go.mod "$modules"/*/go.sum "$modules"/*/*.go | sha256sum | cut -d' ' -f1)
if [ -f "$out/.modules" ] && [ "$(cat "$out/.modules")" = "$wanted" ]; then
  exit 0
fi
echo "Building kube-apiserver and etcd from their Go modules into $out (a few minutes the first time)..."
rm -rf "$out"
mkdir -p "$out"
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0
(cd "$modules/apiserver" && go build -trimpath -o "$OLDPWD/$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
(cd "$modules/etcd" && go build -trimpath -o "$OLDPWD/$out/etcd" .)
echo "$wanted" > "$out/.modules"
