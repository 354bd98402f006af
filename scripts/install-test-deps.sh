#!/usr/bin/env bash
# Debian packages the test suite needs (run as root): a real Prometheus and
# promtool, ip/tc for network namespaces, ethtool for the lab's veth links,
# tmux and chromium for the console tests (top in a terminal, the live page),
# gcc/g++/make for the addon (node-gyp) and the test helpers built with cc,
# nginx (a real server for trace and attach), and for the trace mode's BPF
# loader libbpf-dev and pkg-config (clang, llvm and bpftool rebuild the BPF
# object and inspect what is loaded).
#
# It leaves the machine alone: it only installs what is missing, and never
# starts, stops, disables or reconfigures a service. Packages whose
# installation would start a service (prometheus, nginx) are installed with
# service start-up denied for the duration (policy-rc.d), and the tests run
# their own instances on ports of their own.
set -euo pipefail
pkgs=(prometheus iproute2 ethtool python3 procps tmux chromium gcc g++ make nginx-light
  libbpf-dev pkg-config clang llvm bpftool libelf-dev zlib1g-dev systemd)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  ours=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# tcp-chronograph install-test-deps: no service starts while installing\nexit 101\n' > "$policy"
    chmod +x "$policy"
    ours=1
  fi
  trap '[ "$ours" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
