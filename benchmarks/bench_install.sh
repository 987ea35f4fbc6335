#!/usr/bin/env bash
# Set-up time of `make install`: uv (cold and warm cache) vs the pip fallback, side by side
# in one run on fresh clones of this checkout. Needs the package registry; takes ~5 min.
#   bash benchmarks/bench_install.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
timed() {  # label, command...: wall seconds of a fresh install
  rm -rf .venv
  local start end
  start=$(date +%s.%N); "${@:2}" >/dev/null; end=$(date +%s.%N)
  printf "| %s | %s |\n" "$1" "$(python3 -c "print(f'{$end - $start:.1f}')")"
  .venv/bin/python -c "import torch, attnedit" || { echo "install of '$1' is broken"; exit 1; }
}
echo "| install | wall s |"
echo "|---|---:|"
timed "uv, cold cache" env UV_CACHE_DIR="$work/uv-cache" make install
timed "uv, warm cache" env UV_CACHE_DIR="$work/uv-cache" make install
timed "pip (make install-pip)" make install-pip
