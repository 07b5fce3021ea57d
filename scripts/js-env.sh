#!/usr/bin/env bash
# Prints the node_modules directory that holds what the JS SDK's own tests
# use — TypeScript (for `tsc --noEmit` on the typed example) and `ws` (the
# fake server of the unit tests) — installing them (outside the clone, at
# the pinned versions) when missing. Safe to run several at once.
set -euo pipefail
typescript=5.9.3
ws=8.18.3
dir=${HERALD_CACHE_DIR:-$HOME/.cache/herald}/js
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if ! command -v node >/dev/null 2>&1; then
  echo "js-env: installing nodejs npm" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >&2
fi
has() { # package version
  [ -f "$dir/node_modules/$1/package.json" ] &&
    grep -q "\"version\": \"$2\"" "$dir/node_modules/$1/package.json"
}
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if ! has typescript "$typescript" || ! has ws "$ws"; then
  (cd "$dir" && npm install --silent --no-audit --no-fund --save-exact \
    "typescript@$typescript" "ws@$ws" >&2)
fi
echo "$dir/node_modules"
