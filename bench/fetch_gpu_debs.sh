#!/usr/bin/env bash
# Fetches, here (where Debian's mirror answers), the Debian 12 packages the GPU machine lacks for a build:
# SentencePiece, Boost.Program_options (+ Boost's headers and CMake files), nlohmann/json, GoogleTest and
# pkgconf. bench/gpu_check.sh unpacks them there with `dpkg -x` into a private prefix (never /).
# Usage: bash bench/fetch_gpu_debs.sh [DEST=.debs]     (DEST is git-ignored; the device call carries it)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.debs}
pkgs=(
  libsentencepiece-dev libsentencepiece0
  libboost-program-options-dev libboost-program-options1.74-dev libboost-program-options1.74.0 libboost1.74-dev
  nlohmann-json3-dev
  libgtest-dev
  pkgconf pkgconf-bin libpkgconf3
)
mkdir -p "$dest"
rm -f "$dest"/*.deb
if ! (cd "$dest" && apt-get download "${pkgs[@]}"); then
  echo "apt-get download failed; try 'apt-get update' first" >&2
  exit 1
fi
ls -l "$dest"
du -sh "$dest"
