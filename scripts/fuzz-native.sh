#!/usr/bin/env bash
# On-demand libFuzzer run of the native netlink walk (native/netlink_scan.h),
# the only place native code reads kernel bytes; everything else is parsed in
# TypeScript and fuzzed by test/parse/fuzz.test.ts (FUZZ_RUNS=N for longer).
# Needs clang (Debian: apt-get install clang). Usage: scripts/fuzz-native.sh [seconds, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v clang++ >/dev/null || { echo "fuzz-native: clang++ not found; install it with: apt-get install clang" >&2; exit 2; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  native/fuzz/netlink_scan_fuzz.cc -o "$out/netlink_scan_fuzz"
mkdir -p "$out/corpus" native/fuzz/artifacts
# A crashing input is kept in native/fuzz/artifacts/ (git-ignored) to replay: the binary takes it as an argument.
"$out/netlink_scan_fuzz" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 -artifact_prefix=native/fuzz/artifacts/ "$out/corpus"
