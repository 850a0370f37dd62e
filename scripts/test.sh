#!/bin/sh
# The README's second command: builds and runs every test twice, with gcc and
# with clang, both with -Werror under AddressSanitizer + UBSan; the clang
# build also runs short libFuzzer sessions on both file readers.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=$(nproc 2>/dev/null || echo 2)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run() { # run NAME CC EXTRA_CMAKE_ARGS...
    name=$1 cc=$2
    shift 2
    echo "=== $name: configure and build" >&2
    cmake -S . -B "build/$name" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
        -DMGPU_WERROR=ON -DMGPU_SANITIZE=ON "$@" >/dev/null
    cmake --build "build/$name" -j "$jobs" >/dev/null
    echo "=== $name: tests" >&2
    ctest --test-dir "build/$name" -j "$jobs" --output-on-failure
}

run gcc-asan gcc
run clang-asan clang -DMGPU_FUZZ=ON
