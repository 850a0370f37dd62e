#!/bin/sh
# Text to image at full size (synthetic FLUX.1-dev Q8_0, CLIP-L F16, T5-XXL
# Q8_0 and VAE F32, data left as holes) at a small resolution: seconds per
# stage and what each stage's compute device held against its plan, for the
# CPU with everything resident and for a simulated GPU with half the
# diffusion model in RAM, T5 on disk and the VAE on a donor.
#   bench/t2i_stages.sh BUILD_DIR [WORK_DIR] [SIZE] [STEPS]
set -eu
build=${1:-build/release}
work=${2:-/tmp}
size=${3:-256}
steps=${4:-2}
synth=$build/mgpu-synth
"$synth" --arch flux-dev --scale full --format gguf --dtype Q8_0 --sparse -o "$work/b-flux.gguf"
"$synth" --arch clip-l --scale full --format safetensors --dtype F16 --sparse -o "$work/b-clip.safetensors"
"$synth" --arch t5-xxl --scale full --format gguf --dtype Q8_0 --sparse -o "$work/b-t5.gguf"
"$synth" --arch vae-flux --scale full --format safetensors --dtype F32 --sparse -o "$work/b-vae.safetensors"
"$build/mgpu-synth-tokenizer" --kind clip --format json -o "$work/b-clip-tokenizer.json"
"$build/mgpu-synth-tokenizer" --kind t5 --format spiece -o "$work/b-spiece.model"
run() { # NAME DEVICES EXTRA...
    name=$1 devices=$2
    shift 2
    echo "### $name ($devices $*)"
    "$build/mgpu" generate --model "$work/b-flux.gguf" --clip "$work/b-clip.safetensors" \
        --t5 "$work/b-t5.gguf" --vae "$work/b-vae.safetensors" \
        --clip-tokenizer "$work/b-clip-tokenizer.json" --t5-tokenizer "$work/b-spiece.model" \
        --prompt "a lighthouse on a cliff at dusk" --width "$size" --height "$size" \
        --steps "$steps" --devices "$devices" -o "$work/b-out.png" "$@" 2>&1 >/dev/null |
        grep -v 'sampling \[' || true
}
run resident "cpu=23gib,disk@1.5gbps"
run streamed "cuda:0=12gib@25gbps,cuda:1=4gib@16gbps,cpu=23gib,disk@1.5gbps" --compute cuda:0 \
    --alloc 'cuda:0,50%;cpu,*' --t5-alloc 'cuda:0,0b;disk,*' --vae-alloc 'cuda:0,0b;cuda:1,*'
rm -f "$work"/b-flux.gguf "$work"/b-clip.safetensors "$work"/b-t5.gguf "$work"/b-vae.safetensors \
    "$work"/b-clip-tokenizer.json "$work"/b-spiece.model "$work"/b-out.png
