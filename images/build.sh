#!/usr/bin/env bash
# Builds the one image (pipeline components, prediction service, trigger controller) with the
# tag the compiled pipeline expects (components/image.py: PIPELINE_IMAGE, i.e.
# IMAGE_REPOSITORY:<code version>, which follows the code's content):
#   bash images/build.sh ghcr.io/you   -> builds and pushes ghcr.io/you/ct-pipeline:<code version>
#                                         and its Beam worker, ...:<code version>-beam
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
# The reference the code itself names (stdlib only; no bytecode written into the tree).
pipeline_image() {  # [IMAGE]: as the code in IMAGE says, else as the code here says
  local code='from components.image import PIPELINE_IMAGE; print(PIPELINE_IMAGE)'
  if [ $# -gt 0 ]; then
    docker run --rm --network none --entrypoint python "$1" -c "$code" 2>/dev/null
  else
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=. python3 -c "$code"
  fi
}
expected=$(pipeline_image)
default=${expected%:*}
version=${expected##*:}

mode=${1:-}
[ $# -gt 0 ] && shift
build_args=()
[ -n "${BASE:-}" ] && build_args+=(--build-arg "BASE=$BASE")
# A proxy the host uses is the build's too (Docker knows these build arguments).
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && build_args+=(--build-arg "$v=${!v}")
done

build() {  # build IMAGE [docker build options...]; IMAGE's tag is then the built code's version,
  # and IMAGE-beam (the Dockerfile's beam-worker target: the same layers, Beam's boot as the
  # entrypoint) is the image Beam's runners start as workers (components/image.py).
  local image=$1; shift
  docker build -f images/Dockerfile "${build_args[@]}" "$@" -t "$image" . >&2
  docker build -f images/Dockerfile "${build_args[@]}" "$@" --target beam-worker -t "$image-beam" . >&2
  # The code may have changed while the context was read: the image's own code decides.
  local inside
  inside=$(pipeline_image "$image")
  if [ -n "$inside" ] && [ "${inside##*:}" != "${image##*:}" ]; then
    echo "$0: the built code says ${inside##*:}, this tree ${image##*:} (the code changed during the" >&2
    echo "build, or a source file is not packaged): tagging what was built as ${inside##*:}" >&2
    for suffix in "" -beam; do
      docker tag "$image$suffix" "${image%:*}:${inside##*:}$suffix"
      docker rmi "$image$suffix" >/dev/null
    done
    image="${image%:*}:${inside##*:}"
  fi
  if [ "$(pipeline_image "$image-beam")" != "$(pipeline_image "$image")" ]; then
    echo "$0: $image-beam was built from other code than $image (the code changed between the two builds): build again" >&2
    exit 1
  fi
  built=$image
}

case "$mode" in
  ""|-h|--help) echo "usage: $0 REGISTRY | --kind | --local  [docker build options]" >&2; exit 2 ;;
  --local)
    if [ -z "${BASE:-}" ]; then
      base=$(bash images/base.sh | tail -n1)
      build_args+=(--build-arg "BASE=$base")
    fi
    build "$default:$version" "$@"
    echo "$built"
    ;;
  --kind)
    build "$default:$version" "$@"
    kind load docker-image "$built" "$built-beam" >&2
    echo "$built"
    ;;
  -*) echo "$0: unknown mode $mode" >&2; exit 2 ;;
  *)
    build "$mode/ct-pipeline:$version" "$@"
    docker push "$built" >&2
    docker push "$built-beam" >&2
    if [ "${built%:*}" != "$default" ]; then
      echo "pushed $built; the compiled spec names $default:${built##*:}: set IMAGE_REPOSITORY in" >&2
      echo "components/image.py to $mode/ct-pipeline, run 'ct compile', and set the overlays' images: newName." >&2
    fi
    echo "$built"
    ;;
esac
