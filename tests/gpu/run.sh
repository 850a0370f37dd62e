#!/bin/sh
# The GPU-machine check of the CUDA backend (issue 5). Builds mgpu in
# Release with the CUDA plugin, runs the correctness checks, then measures:
#   1. host -> device bandwidth: our pinned copy against cudaMemcpy;
#   2. linear TFLOP/s at FLUX shapes (bf16 and Q8_0 weights) against cuBLAS;
#   3. a tiny FLUX.1 forward on cuda:0 against the CPU and across
#      placements (resident, RAM, disk), then FLUX.1-dev full-size synthetic
#      step times at 1024x1024 resident and streamed (Q8_0, BF16), and fp8
#      weights on bf16 against fp8 tensor cores (--gemm fp8).
# Prints a short table last; writes logs and details under $OUT when set
# (else under the build folder). Meant to finish in well under 8 minutes on
# an H100.
#   tests/gpu/run.sh [BUILD_DIR]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build/gpu-release}
out=${OUT:-$build/gpu-results}
mkdir -p "$out"
summary=$out/summary.md
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
t_start=$(date +%s)

echo "== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current \
    --format=csv 2>&1 | tee "$out/nvidia-smi.txt" || true

echo "== build (Release, CUDA plugin)"
nproc=$(nproc 2>/dev/null || echo 8)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMGPU_CUDA=ON -DMGPU_BENCH=OFF \
    >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
grep 'mgpu: CUDA plugin' "$out/configure.log" || true
cmake --build "$build" -j"$nproc" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
if [ ! -f "$build/libmgpu-cuda.so" ]; then
    echo "run.sh: the CUDA plugin was not built (see $out/configure.log)" >&2
    exit 1
fi
t_built=$(date +%s)

echo "== correctness"
status=0
# The cross-backend op test (every op on cuda:0 against the CPU backend and a
# double reference) and the plugin's host-logic tests; then the whole suite.
MGPU_CUDA_PLUGIN=$build/libmgpu-cuda.so "$build/tests/test_backend_cross" >"$out/test_backend_cross.log" 2>&1 \
    && cross=pass || { cross=FAIL; status=1; }
grep -E 'SKIPPED|FAILED|ERROR|LINE|skipped' "$out/test_backend_cross.log" || true
if grep -q 'no CUDA device' "$out/test_backend_cross.log"; then
    cross="SKIPPED (no CUDA device seen)"
    status=1
fi
ctest --test-dir "$build" --output-on-failure -j"$nproc" >"$out/ctest.log" 2>&1 \
    && suite=pass || { suite=FAIL; status=1; }
tail -3 "$out/ctest.log"
"$build/tests/probe_check" >"$out/probe_check.log" 2>&1 || true

echo "== bandwidth and GEMM"
bench=ok
"$build/tests/bench_cuda" --details "$out/bench_cuda_details.txt" >"$out/bench_cuda.md" 2>"$out/bench_cuda.err" \
    || { bench=FAIL; status=1; cat "$out/bench_cuda.err"; }

echo "== FLUX.1 forward on cuda:0: against the CPU, and across placements"
# A tiny synthetic FLUX.1-dev: the CPU (f32) output is the reference; every
# GPU placement must give the same bits as the resident GPU run, and that
# must be close to the CPU's (bf16 GEMM on the GPU: 2e-2 of the scale).
work=${TMPDIR:-/tmp}/mgpu-gpu-check
mkdir -p "$work"
"$build/mgpu-synth" --arch flux-dev --scale tiny --format gguf --dtype Q8_0 --seed 5 -o "$work/tiny.gguf"
"$build/mgpu-synth" --arch flux-dev --inputs 2x16x16x24 -o "$work/tiny-in.safetensors"
tiny() { # NAME EXTRA...
    name=$1
    shift
    "$build/mgpu" forward --model "$work/tiny.gguf" --inputs "$work/tiny-in.safetensors" \
        -o "$work/tiny-$name.safetensors" --set num_heads=2 "$@" >"$out/tiny-$name.log" 2>&1
}
placements="fail"
if tiny cpu --compute cpu --gemm f32 && tiny gpu --compute cuda:0 &&
    tiny gpu-ram50 --compute cuda:0 --alloc 'cuda:0,50%;cpu,*' &&
    tiny gpu-ram100 --compute cuda:0 --alloc 'cuda:0,0b;cpu,*' &&
    tiny gpu-disk --compute cuda:0 --alloc 'cuda:0,40%;disk,*'; then
    placements="pass"
    for p in gpu-ram50 gpu-ram100 gpu-disk; do
        "$build/tests/compare_out" "$work/tiny-$p.safetensors" "$work/tiny-gpu.safetensors" \
            >>"$out/tiny-compare.log" 2>&1 || placements="FAIL ($p differs from resident)"
    done
    "$build/tests/compare_out" "$work/tiny-gpu.safetensors" "$work/tiny-cpu.safetensors" 2e-2 \
        >>"$out/tiny-compare.log" 2>&1 && vs_cpu=pass || vs_cpu="FAIL"
    vs_cpu="$vs_cpu: $(tail -1 "$out/tiny-compare.log")"
else
    vs_cpu="not compared: a run failed (see $out/tiny-*.log)"
    grep -h '^mgpu:' "$out"/tiny-*.log | head -5
fi
[ "$placements" = pass ] || status=1
case $vs_cpu in pass*) ;; *) status=1 ;; esac

echo "== FLUX.1-dev step time on cuda:0"
# Full-size synthetic weights at 1024x1024 (a 128x128 latent: 4096 image +
# 512 text tokens), Q8_0 and BF16, resident / 50% / 100% streamed from RAM
# (pinned copies of the RAM tier, made at load: counted in the time to
# start, not in the step).
flux=""
for dtype in Q8_0 BF16 F8_E4M3; do
    format=gguf
    [ $dtype = F8_E4M3 ] && format=safetensors # GGUF has no fp8 type
    model=$work/flux1-dev-$dtype.$format
    inputs=$work/flux-inputs-1024.safetensors
    "$build/mgpu-synth" --arch flux-dev --scale full --format $format --dtype $dtype --sparse -o "$model"
    "$build/mgpu-synth" --arch flux-dev --scale full --inputs 1x128x128x512 -o "$inputs"
    runs="resident|auto| ram-50|auto|cuda:0,50%;cpu,* ram-100|auto|cuda:0,0b;cpu,*"
    # fp8 weights: bf16 tensor cores (auto) against fp8 tensor cores, resident
    [ $dtype = F8_E4M3 ] && runs="resident|auto| resident|fp8|"
    for run in $runs; do
        name=${run%%|*}
        rest=${run#*|}
        gemm=${rest%%|*}
        alloc=${rest#*|}
        log=$out/flux-$dtype-$name-$gemm.log
        if timeout 120 "$build/mgpu" forward --model "$model" --inputs "$inputs" \
                -o "$work/out.safetensors" --compute cuda:0 --alloc "$alloc" --repeat 2 \
                --gemm $gemm >"$log" 2>&1; then
            pass2=$(sed -n 's/^mgpu: pass 2: \([0-9.]*\) s$/\1/p' "$log")
            stats=$(grep '^mgpu: forward' "$log" | sed 's/^mgpu: //' | head -1)
            flux="$flux
| $dtype | $name | $gemm | $pass2 | $stats |"
        else
            flux="$flux
| $dtype | $name | $gemm | FAILED (see $log) | $(grep '^mgpu:' "$log" | tail -1) |"
            status=1
        fi
    done
    rm -f "$model"
done
rm -rf "$work"

t_end=$(date +%s)
echo
say "## mgpu CUDA backend on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
say ""
say "| check | result |"
say "| --- | --- |"
say "| build (Release) | $((t_built - t_start)) s |"
say "| test_backend_cross (every op vs CPU) | $cross |"
say "| ctest (whole suite) | $suite |"
say "| bench_cuda | $bench |"
say "| tiny FLUX on cuda:0, placements bit-identical | $placements |"
say "| tiny FLUX on cuda:0 against the CPU | $vs_cpu |"
say "| total time | $((t_end - t_start)) s |"
say ""
cat "$out/bench_cuda.md" | tee -a "$summary"
say ""
say "FLUX.1-dev (synthetic, full size), 1024x1024, seconds per step (pass 2):"
say "| weights | placement | GEMM | s/step | executor summary |"
say "| --- | --- | --- | ---: | --- |"
say "$flux"
exit $status
