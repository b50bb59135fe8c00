#!/usr/bin/env bash
# The test command of the README: install what is missing, build everything, run the whole CTest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
AFFINAGE_TEST_PACKAGES=1 bash scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
