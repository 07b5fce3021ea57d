#!/usr/bin/env bash
# Installs what the deployment tests need when it is missing — kubectl (it
# renders the kustomize overlays; Debian's kubernetes-client is enough) and
# nginx (the reverse-proxy config is tested for real) — and prints the
# kubectl to use.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy-env: installing ${missing[*]}" >&2
  $sudo apt-get update -qq >&2
  # install without starting nginx as a system service: tests run their own
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    echo 'exit 101' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  [ -z "$own_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
command -v kubectl
