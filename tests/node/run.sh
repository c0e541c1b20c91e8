#!/usr/bin/env bash
# Runs the kafkajs test suite against the shardlog binary:
#
#   SHARDLOG_BIN=target/release/shardlog tests/node/run.sh [test files...]
#
# Installs kafkajs (pinned in package-lock.json) into tests/node/node_modules whenever the
# lock file changes, then runs the tests with Node's built-in runner and exits with its code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp="$here/node_modules/.lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "run.sh: installing kafkajs into $here/node_modules" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
fi
cd "$here"
if [[ $# -eq 0 ]]; then
    set -- ./*.test.js
fi
exec node --test --test-concurrency=1 "$@"
