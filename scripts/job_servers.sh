#!/usr/bin/env bash
# Copies Beam's Flink and Spark job servers and their dependencies (tests/support/job-servers/<runner>/pom.xml)
# from Maven Central into .cache/<runner>, for the tests that run Beam on a real Flink and a
# real Spark. Needs Java 17 and Maven; without them it says so and the tests skip (in CI they
# fail). A second run with unchanged poms returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mvn >/dev/null || ! command -v java >/dev/null; then
  echo "$0: no Maven or Java here: the tests on Flink and Spark will be skipped" >&2
  exit 0
fi
for runner in flink spark; do
  pom=tests/support/job-servers/$runner/pom.xml
  jars=.cache/$runner
  wanted=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ -f "$jars/.pom" ] && [ "$(cat "$jars/.pom")" = "$wanted" ]; then
    continue
  fi
  echo "Fetching Beam's $runner job server into $jars (150-260 MB the first time)..."
  rm -rf "$jars"
  mvn --batch-mode --quiet -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$PWD/$jars" -DincludeScope=runtime
  echo "$wanted" > "$jars/.pom"
done
