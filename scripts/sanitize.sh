#!/usr/bin/env bash
# The parsers under AddressSanitizer and UndefinedBehaviorSanitizer: builds the tests into build-sanitize/ with
# -fsanitize=address,undefined and runs the suites that read files a user hands us (safetensors, recipes, JSONL
# rows of every format, tokenizers, chats). Any report fails the run. Leak reports are off: LibTorch keeps
# process-lifetime allocations that LeakSanitizer would list. Extra arguments go to ctest (e.g. -V).
set -euo pipefail
cd "$(dirname "$0")/.."
AFFINAGE_TEST_PACKAGES=1 bash scripts/setup.sh
B=build-sanitize
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
[ -f $B/build.ninja ] || cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_EXE_LINKER_FLAGS="$FLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$FLAGS" >/dev/null
TARGETS=(test_safetensors test_recipe test_sft_data test_preference_data test_tokenizer test_chat)
cmake --build $B -j "$(nproc)" --target affinage "${TARGETS[@]}"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir $B --output-on-failure -j "$(nproc)" -R '^(Safetensors|Recipe|Sft[A-Za-z]*|PreferenceData|Tokenizer|Chat)\.' "$@"
