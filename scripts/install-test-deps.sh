#!/usr/bin/env bash
# Debian packages the test suite needs (run as root): a real Prometheus and
# promtool, ip/tc for network namespaces, ethtool for the lab's veth links,
# tmux and chromium for the console tests (top in a terminal, the live page),
# gcc/g++/make for the addon (node-gyp) and the test helpers built with cc.
set -euo pipefail
pkgs=(prometheus iproute2 ethtool python3 procps tmux chromium gcc g++ make)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Prometheus is started by the tests themselves, never as a service.
systemctl disable --now prometheus >/dev/null 2>&1 || true
