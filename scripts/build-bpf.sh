#!/usr/bin/env bash
# Rebuilds the trace mode's BPF object and its libbpf skeleton from
# native/bpf/trace.bpf.c (needs clang and bpftool). Both outputs are checked
# in, so installing the package needs neither: only libbpf (libbpf-dev) to
# build the loader into the addon. Run after editing native/bpf/*.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(uname -m)
case "$arch" in x86_64) target=x86 ;; aarch64) target=arm64 ;; *) target=$arch ;; esac
clang -g -O2 -target bpf -D__TARGET_ARCH_"$target" \
  -I/usr/include/"$arch"-linux-gnu -Inative/bpf \
  -c native/bpf/trace.bpf.c -o native/bpf/trace.bpf.o
# Debug info is kept (BTF is needed for CO-RE); DWARF is not.
llvm-strip -g native/bpf/trace.bpf.o 2>/dev/null || true
bpftool gen skeleton native/bpf/trace.bpf.o name trace_bpf > native/bpf/trace.skel.h
echo "built native/bpf/trace.bpf.o and native/bpf/trace.skel.h"
