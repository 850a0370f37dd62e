#!/bin/sh
# FLUX.1-dev at full size (synthetic Q8_0 weights, data left as a hole) at
# 256x256 (a 32x32 latent: 256 image + 256 text tokens): seconds per forward
# pass resident, and streamed through simulated links that are fast enough
# to hide the copies. Two passes each; the second is the steady state (the
# first also pays the page faults of mapping 12.7 GB).
#   bench/flux_step.sh BUILD_DIR [WORK_DIR]
set -eu
build=${1:-build/release}
work=${2:-/tmp}
model=$work/bench-flux1-dev-Q8_0.gguf
inputs=$work/bench-flux-inputs-256.safetensors
"$build/mgpu-synth" --arch flux-dev --scale full --format gguf --dtype Q8_0 --sparse -o "$model"
"$build/mgpu-synth" --arch flux-dev --scale full --inputs 1x32x32x256 -o "$inputs"
run() { # NAME DEVICES ALLOC
    log=$work/bench-flux-$1.log
    "$build/mgpu" forward --model "$model" --inputs "$inputs" -o "$work/bench-flux-out.safetensors" \
        --devices "$2" --alloc "$3" --repeat 2 2>"$log"
    pass1=$(sed -n 's/^mgpu: pass 1: \([0-9.]*\) s$/\1/p' "$log")
    pass2=$(sed -n 's/^mgpu: pass 2: \([0-9.]*\) s$/\1/p' "$log")
    summary=$(grep '^mgpu: forward' "$log" | sed 's/^mgpu: //')
    echo "| $1 | \`$3\` | $pass1 | $pass2 | $summary |"
}
echo "| placement | allocation | pass 1 s | pass 2 s | executor summary |"
echo "| --- | --- | ---: | ---: | --- |"
run resident "cpu=23gib" ""
run ram-50-at-64gbps "cuda:0=32gib@64gbps,cpu=23gib" "cuda:0,50%;cpu,*"
run disk-50-at-1.5gbps "cuda:0=32gib@64gbps,cpu=23gib,disk@1.5gbps" "cuda:0,50%;disk,*"
rm -f "$model" "$inputs" "$work/bench-flux-out.safetensors"
