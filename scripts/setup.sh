#!/usr/bin/env bash
# Installs the Debian packages affinage needs, only those missing (idempotent; silent when all are there).
# AFFINAGE_TEST_PACKAGES=1 (scripts/test.sh sets it) adds what only the tests need.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config ccache libtorch-dev libopenblas0-pthread libsentencepiece-dev
      libboost-program-options-dev nlohmann-json3-dev libgtest-dev libgloo-dev)
[ "${AFFINAGE_TEST_PACKAGES:-0}" = 1 ] && PKGS+=(chromium)  # headless, for the report.html screenshot test
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
