#!/usr/bin/env bash
# Prints the node_modules directory that holds playwright-core, installing
# Debian's chromium and the npm package (outside the clone) when missing.
# Playwright never downloads a browser here: it drives /usr/bin/chromium.
set -euo pipefail
version=1.65.1
dir=${HERALD_CACHE_DIR:-$HOME/.cache/herald}/node
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "browser-env: installing ${missing[*]}" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
if [ ! -f "$dir/node_modules/playwright-core/package.json" ] ||
   ! grep -q "\"version\": \"$version\"" "$dir/node_modules/playwright-core/package.json"; then
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund "playwright-core@$version" >&2)
fi
echo "$dir/node_modules"
