#!/usr/bin/env bash
# Formats the tree's C++/CUDA sources with .clang-format (clang-format 14, Debian's clang-format package).
# --check: changes nothing, lists the files that differ and exits 1 when there are any.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format: clang-format is missing: apt-get install clang-format" >&2; exit 2; }
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' | grep -v '^tests/data/')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do clang-format --style=file "$f" | cmp -s - "$f" || bad+=("$f"); done
  [ ${#bad[@]} -eq 0 ] && exit 0
  printf 'not formatted (run scripts/format.sh):\n'; printf '  %s\n' "${bad[@]}"; exit 1
fi
clang-format -i --style=file "${files[@]}"
