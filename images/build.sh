#!/usr/bin/env bash
# Builds the one image (pipeline components, prediction service, trigger controller) with the
# tag the compiled pipeline expects (components/image.py: IMAGE_REPOSITORY:<package version>):
#   bash images/build.sh ghcr.io/you   -> builds and pushes ghcr.io/you/ct-pipeline:<version>
#   bash images/build.sh --kind        -> builds the default name and loads it into kind
#   bash images/build.sh --local       -> builds the default name on a machine that reaches
#                                         package registries but no container registry: the
#                                         base is made from Debian's packages (images/base.sh)
# Options after the mode go to `docker build` (e.g. --no-cache, --build-arg CODE_CHANGED=1).
# BASE=<image> overrides the base in every mode (default: python:3.11.7-slim-bookworm; with
# --local: the image images/base.sh makes). The last line printed is the image reference.
# Needs a Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c 'import re; print(re.search(r"__version__ = \"(.+)\"", open("components/__init__.py").read()).group(1))')
default=$(python3 -c 'import re; print(re.search(r"IMAGE_REPOSITORY = \"(.+)\"", open("components/image.py").read()).group(1))')

mode=${1:-}
[ $# -gt 0 ] && shift
build_args=()
[ -n "${BASE:-}" ] && build_args+=(--build-arg "BASE=$BASE")
# A proxy the host uses is the build's too (Docker knows these build arguments).
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && build_args+=(--build-arg "$v=${!v}")
done

build() {  # build IMAGE [docker build options...]
  local image=$1; shift
  docker build -f images/Dockerfile "${build_args[@]}" "$@" -t "$image" . >&2
}

case "$mode" in
  ""|-h|--help) echo "usage: $0 REGISTRY | --kind | --local  [docker build options]" >&2; exit 2 ;;
  --local)
    if [ -z "${BASE:-}" ]; then
      base=$(bash images/base.sh | tail -n1)
      build_args+=(--build-arg "BASE=$base")
    fi
    image="$default:$version"
    build "$image" "$@"
    echo "$image"
    ;;
  --kind)
    image="$default:$version"
    build "$image" "$@"
    kind load docker-image "$image" >&2
    echo "$image"
    ;;
  -*) echo "$0: unknown mode $mode" >&2; exit 2 ;;
  *)
    image="$mode/ct-pipeline:$version"
    build "$image" "$@"
    docker push "$image" >&2
    if [ "$image" != "$default:$version" ]; then
      echo "pushed $image; the compiled spec names $default:$version: set IMAGE_REPOSITORY in" >&2
      echo "components/image.py to $mode/ct-pipeline, run 'ct compile', and set the overlays' images: newName." >&2
    fi
    echo "$image"
    ;;
esac
