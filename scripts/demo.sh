#!/bin/sh
# The README's first command: builds mgpu (Release) and runs the main job on
# the embedded default, a tiny synthetic FLUX.1-dev checkpoint in GGUF Q8_0
# that the build generates (no download).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMGPU_TESTS=OFF >/dev/null
cmake --build build/release -j "$jobs" >/dev/null
echo "+ mgpu inspect build/release/demo/flux1-dev-tiny-Q8_0.gguf" >&2
build/release/mgpu inspect build/release/demo/flux1-dev-tiny-Q8_0.gguf
