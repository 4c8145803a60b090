#!/bin/sh
# Cuts from the image's venv what nothing uses at run time, then proves the imports still work.
#   sh images/prune.sh VENV           in the Dockerfile's deps stage, after the locked install
#   sh images/prune.sh --check VENV   `pip check`, less the distributions removed below
# What it removes, largest first (sizes from TF 2.16.2 / Beam 2.60 / Feast 0.40 here):
#   debug symbols of shared libraries    ~420 MB  strip --strip-unneeded (the dynamic symbol
#                                                  tables stay; libtensorflow_cc 965 -> 792 MB)
#   tensorflow/include, pyarrow/include  ~430 MB  C++ headers for building custom ops
#   google-cloud-aiplatform, google-genai ~180 MB  Vertex AI clients Beam's [gcp] extra brings
#                                                  for RunInference; nothing here calls them
#   mypy (mypyc)                          ~80 MB  a type checker, via Feast's SQLAlchemy[mypy]
#   tests/ folders and *_test.py          ~100 MB  the packages' own test suites
#   libclang                              ~60 MB  TensorFlow's build-time tool; not imported
#   tensorboard-data-server, feast/ui     ~40 MB  servers of `tensorboard` and `feast ui`
#   *.pyi, *.pyx, *.pxd, *.pxi            ~10 MB  type stubs and Cython sources
# It keeps the .pyc files: with a read-only root file system nothing can write them, and
# compiling at every start costs about 6 s per process (each pipeline step is one).
set -eu

# Whole distributions, uninstalled (so `pip list` tells the truth); their dependants'
# metadata still names them, which --check forgives.
PRUNED_DISTS="google-cloud-aiplatform google-genai mypy libclang tensorboard-data-server"

if [ "${1:-}" = --check ]; then
  venv=$2
  # shellcheck disable=SC2086 # a list of names
  pattern=$(printf '%s\n' $PRUNED_DISTS | sed 's/.*/ requires &[,; ]/' | paste -sd'|' -)
  report=$("$venv/bin/pip" check 2>&1 || true)
  left=$(printf '%s\n' "$report" | grep -v -i -E "$pattern" | grep -v -i '^No broken requirements' || true)
  if [ -n "$left" ]; then
    printf '%s\n' "$left" >&2
    exit 1
  fi
  echo "pip check: only the distributions pruned on purpose are missing ($PRUNED_DISTS)"
  exit 0
fi

venv=$1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
before=$(du -sm "$venv" | cut -f1)

# shellcheck disable=SC2086 # a list of names
"$venv/bin/pip" uninstall --yes --quiet $PRUNED_DISTS

rm -rf "$site/tensorflow/include" "$site/pyarrow/include" "$site/feast/ui/build"
# Test suites: folders named tests (one is a stray top-level package) and *_test.py modules.
find "$site" -depth -type d -name tests -exec rm -rf {} +
find "$site" -type f \( -name '*_test.py' -o -name '*_test.cpython-*.pyc' \) -delete
find "$site" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete
find "$site" -type f \( -name '*.a' -o -name '*.la' \) -delete
# Debug and local symbols only: what the dynamic linker and dlsym read stays.
if command -v strip >/dev/null; then
  find "$venv" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) -print0 \
    | xargs -0 -r -n 32 strip --strip-unneeded
else
  echo "prune.sh: no strip here (binutils): shared libraries keep their symbols" >&2
fi

echo "prune.sh: venv $before MB -> $(du -sm "$venv" | cut -f1) MB"

# What the image runs must still import (a pipeline step imports all of these).
"$venv/bin/python" - <<'EOF'
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import apache_beam, feast, kfp, kfp.local, kubernetes, ml_metadata, pandas, pyarrow, s3fs, tfx_bsl
import apache_beam.io.aws.clients.s3.boto3_client  # Beam's S3 file system (boto3)
import tensorflow as tf
import tensorflow_data_validation as tfdv
import keras
assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0
print("prune.sh: imports ok (tensorflow", tf.__version__ + ", tfdv", tfdv.__version__ + ", kfp", kfp.__version__ + ")")
EOF
