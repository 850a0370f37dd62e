#!/bin/sh
# The README's first command: builds mgpu (Release) and runs the main job on
# the embedded defaults the build generates (no download): a tiny synthetic
# FLUX.1-dev in GGUF Q8_0 to inspect and run one forward pass of, half of it
# streamed through a simulated GPU link, and a full-size one with real
# headers (data left as a hole) to plan over simulated devices.
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
build/release/mgpu-synth --arch flux-dev --inputs 1x16x16x8 -o "$demo/inputs.safetensors"
build/release/mgpu forward --model "$demo/flux1-dev-tiny-Q8_0.gguf" \
    --inputs "$demo/inputs.safetensors" -o "$demo/out.safetensors" --set num_heads=2 \
    --devices "$devices" --alloc 'cuda:0,50%;cpu,*' --repeat 3
build/release/mgpu inspect "$demo/out.safetensors"
