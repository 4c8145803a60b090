#!/usr/bin/env bash
# Builds the one image (pipeline components, prediction service, trigger controller) and
# pushes it to the registry you name, with the tag the compiled pipeline expects:
#   bash images/build.sh ghcr.io/you        -> ghcr.io/you/ct-pipeline:<package version>
#   bash images/build.sh --kind             -> builds the default name and loads it into kind
# Needs a Docker engine (not available where this project's CI runs; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c 'import re; print(re.search(r"__version__ = \"(.+)\"", open("components/__init__.py").read()).group(1))')
default=$(python3 -c 'import re; print(re.search(r"IMAGE_REPOSITORY = \"(.+)\"", open("components/image.py").read()).group(1))')
case "${1:-}" in
  "") echo "usage: $0 REGISTRY | --kind" >&2; exit 2 ;;
  --kind)
    docker build -f images/Dockerfile -t "$default:$version" .
    kind load docker-image "$default:$version"
    ;;
  *)
    image="$1/ct-pipeline:$version"
    docker build -f images/Dockerfile -t "$image" .
    docker push "$image"
    if [ "$image" != "$default:$version" ]; then
      echo "pushed $image; the compiled spec names $default:$version: set IMAGE_REPOSITORY in"
      echo "components/image.py to $1/ct-pipeline, run 'ct compile', and set the overlays' images: newName."
    fi
    ;;
esac
