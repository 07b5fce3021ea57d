#!/usr/bin/env bash
# The one command that runs Herald's tests: starts what they need (NATS,
# PostgreSQL, the Python test clients, Chromium + playwright-core,
# TypeScript and ws for the JS SDK's own tests, kubectl
# and nginx for the deployment files), then runs every test, unit to
# end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/herald/target}
scripts/services.sh
HERALD_TEST_PYTHON=$(scripts/python-env.sh)
HERALD_TEST_NODE_MODULES=$(scripts/browser-env.sh)
HERALD_TEST_JS_MODULES=$(scripts/js-env.sh)
HERALD_TEST_KUBECTL=$(scripts/deploy-env.sh)
export HERALD_TEST_PYTHON HERALD_TEST_NODE_MODULES HERALD_TEST_JS_MODULES HERALD_TEST_KUBECTL

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
