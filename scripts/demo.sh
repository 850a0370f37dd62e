#!/bin/sh
# The README's first command: builds mgpu (Release) and runs the main job on
# the embedded defaults the build generates (no download): a tiny synthetic
# FLUX.1-dev in GGUF Q8_0 to inspect, and a full-size one with real headers
# (data left as a hole) to plan over simulated devices.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMGPU_TESTS=OFF >/dev/null
cmake --build build/release -j "$jobs" >/dev/null
demo=build/release/demo
devices='cuda:0=12gib@25gbps,cuda:1=8gib@6.8gbps,cpu=32gib'
set -x
build/release/mgpu inspect "$demo/flux1-dev-tiny-Q8_0.gguf"
build/release/mgpu devices --devices "$devices"
build/release/mgpu plan "$demo/flux1-dev-Q8_0-headers-only.gguf" --devices "$devices" \
    --alloc '#cuda:0;6.0;cuda:1,cpu' --reserve 2gb
