#!/bin/sh
# Makes sure the Debian packages mgpu needs are installed: installs them with
# apt-get when run as root, otherwise prints the exact command and fails.
#   scripts/deps.sh build   what building needs
#   scripts/deps.sh test    what building and testing need (adds clang, cmocka)
set -eu

packages="build-essential cmake pkg-config libjansson-dev libopenblas-dev libpng-dev libdnnl-dev"
if [ "${1:-build}" = test ]; then
    packages="$packages libcmocka-dev clang libclang-rt-dev"
fi

missing=""
for p in $packages; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    echo "mgpu: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "mgpu: missing Debian packages:$missing" >&2
    echo "mgpu: install them with: sudo apt-get install -y$missing" >&2
    exit 1
fi
