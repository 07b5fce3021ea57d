#!/usr/bin/env bash
# Prints the path of a Python that has the test clients installed
# (tests/python/requirements.txt), creating or updating a virtualenv outside
# the clone when needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requirements="$root/tests/python/requirements.txt"
venv=${HERALD_CACHE_DIR:-$HOME/.cache/herald}/venv
stamp="$venv/.requirements"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
    python3 -m venv "$venv" >&2
  fi
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/pip" install -q -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv/bin/python"
