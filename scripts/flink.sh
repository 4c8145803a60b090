#!/usr/bin/env bash
# Copies Beam's Flink job server and its dependencies (tests/support/flink-job-server/pom.xml)
# from Maven Central into .cache/flink, for the tests that run Beam on a real Flink. Needs
# Java 17 and Maven; without them it says so and the tests skip (in CI they fail). A second
# run with an unchanged pom returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
pom=tests/support/flink-job-server/pom.xml
jars=.cache/flink
if ! command -v mvn >/dev/null || ! command -v java >/dev/null; then
  echo "$0: no Maven or Java here: the tests on Flink will be skipped" >&2
  exit 0
fi
wanted=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$jars/.pom" ] && [ "$(cat "$jars/.pom")" = "$wanted" ]; then
  exit 0
fi
echo "Fetching Beam's Flink job server into $jars (about 150 MB the first time)..."
rm -rf "$jars"
mvn --batch-mode --quiet -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$PWD/$jars" -DincludeScope=runtime
echo "$wanted" > "$jars/.pom"
