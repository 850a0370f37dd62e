#!/bin/sh
# The README's first command: builds mgpu (Release) and runs the main job on
# the embedded defaults the build generates (no download): text to image with
# a tiny synthetic FLUX.1-dev set (diffusion model, CLIP-L, T5, VAE and their
# tokenizers) spread over simulated devices, then a look at the pieces: the
# model, the devices, and the plan of a full-size FLUX.1-dev (real headers,
# data left as a hole).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMGPU_TESTS=OFF >/dev/null
cmake --build build/release -j "$jobs" >/dev/null
demo=build/release/demo
devices='cuda:0=12gib@25gbps,cuda:1=8gib@6.8gbps,cpu=32gib'
set -x
# Each component on its own placement: half the diffusion model streamed
# from RAM over a simulated 25 GB/s link, T5 read from disk, the VAE on a
# donor GPU.
build/release/mgpu generate --model "$demo/flux1-dev-tiny-Q8_0.gguf" \
    --clip "$demo/clip_l-tiny.safetensors" --t5 "$demo/t5xxl-tiny.safetensors" \
    --vae "$demo/ae-tiny.safetensors" --clip-tokenizer "$demo/clip_tokenizer" \
    --t5-tokenizer "$demo/t5_tokenizer" --set num_heads=2 \
    --devices "$devices,disk@1.5gbps" --compute cuda:0 --alloc 'cuda:0,50%;cpu,*' \
    --t5-alloc 'cuda:0,0b;disk,*' --vae-alloc 'cuda:0,0b;cuda:1,*' \
    --prompt 'a lighthouse on a cliff at dusk' --width 256 --height 256 --steps 8 --seed 42 \
    -o "$demo/lighthouse.png"
build/release/mgpu inspect "$demo/flux1-dev-tiny-Q8_0.gguf"
build/release/mgpu devices --devices "$devices"
build/release/mgpu plan "$demo/flux1-dev-Q8_0-headers-only.gguf" --devices "$devices" \
    --alloc '#cuda:0;6.0;cuda:1,cpu' --reserve 2gb
build/release/mgpu-synth --arch flux-dev --inputs 1x16x16x8 -o "$demo/inputs.safetensors"
build/release/mgpu forward --model "$demo/flux1-dev-tiny-Q8_0.gguf" \
    --inputs "$demo/inputs.safetensors" -o "$demo/out.safetensors" --set num_heads=2 \
    --devices "$devices" --alloc 'cuda:0,50%;cpu,*' --repeat 3
