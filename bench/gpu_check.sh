#!/usr/bin/env bash
# The GPU check (issue 7), in one call on the GPU machine (no network; Python torch 2.11 with its LibTorch):
# unpacks the Debian packages the build needs into a private prefix, builds against the Python torch's
# LibTorch for sm_90, runs the CUDA parity tests, the Mistral-7B SFT and DPO benchmarks and the PEFT logit
# comparison (transformers + peft there), tees everything to $OUT/gpu_check.log and ends with a short table.
# Every phase runs under a timeout clipped to what is left of the budget (GPU_CHECK_BUDGET_S, 480 s).
#
# Here, once:  bash bench/fetch_gpu_debs.sh                 # the .debs into .debs/ (git-ignored, ~12 MB)
# There:       device tool `run` with carry [".debs"], timeout_s 600, command:  bash bench/gpu_check.sh
# Dry run here (no GPU, no torch in Python): the unpack, the configure against Debian's LibTorch with every
# other dependency taken from the prefix, and the SentencePiece shim linked from it:
#              bash bench/gpu_check.sh --dry-run
# shellcheck disable=SC2317  # the functions below run through `timeout bash -c NAME` (export -f)
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
[[ ${1:-} == --dry-run ]] && dry=1
out=${OUT:-/tmp/gpu_check_out}
work=/tmp/gpu_check
debs=${DEBS:-.debs}
root=${DEBROOT:-/tmp/debroot}
build=${BUILD_DIR:-$([[ $dry == 1 ]] && echo build-gpucheck-dry || echo build-gpu)}
budget=${GPU_CHECK_BUDGET_S:-480}
mkdir -p "$out" "$work"
if [[ -z ${GPU_CHECK_LOGGED:-} ]]; then  # run again with everything teed to the log, which comes back from $OUT
  GPU_CHECK_LOGGED=1 bash bench/gpu_check.sh "$@" 2>&1 | tee "$out/gpu_check.log"
  exit "${PIPESTATUS[0]}"
fi
rm -f "$work"/*.log
t0=$(date +%s)
summary=()
failed=0

# phase NAME MAX_S CMD...: CMD under a timeout of MAX_S clipped to the budget left; output also in $work/NAME.log.
phase() {
  local name=$1 max=$2
  shift 2
  local left=$((budget - ($(date +%s) - t0) - 10))
  local limit=$((max < left ? max : left))
  if ((limit < 15)); then
    summary+=("$(printf '%-13s %-9s %6s' "$name" skipped -)")
    return 1
  fi
  if [[ $1 == */* && ! -x $1 ]]; then
    summary+=("$(printf '%-13s %-9s %6s' "$name" "not built" -)")
    failed=1
    return 1
  fi
  echo "=== $name (limit ${limit}s) ==="
  local s
  s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$work/$name.log"
  local rc=${PIPESTATUS[0]} st=ok
  if ((rc == 124 || rc == 137)); then st=timeout; elif ((rc != 0)); then st="rc=$rc"; fi
  ((rc == 0)) || failed=1
  summary+=("$(printf '%-13s %-9s %5ss' "$name" "$st" $(($(date +%s) - s)))")
  return "$rc"
}

finish() {
  echo
  echo "=== gpu_check summary ($(($(date +%s) - t0)) s in all) ==="
  printf '%s\n' "${summary[@]}"
  echo "--- figures ---"
  local f
  for f in env configure tests bench_train peft bench_dpo bench_train_unfused; do
    [[ -f $work/$f.log ]] || continue
    echo "[$f]"
    grep -h -E '^(OS|GPU|torch|transformers):|^  [A-Za-z_]+(_DIR|_LIBDIR|_EXECUTABLE):|matmul peak|^  (mistral7b|stories260K)|^bench_logits:|^peft_compare:|^\[  (PASSED|FAILED)  \]|^\[  FAILED' "$work/$f.log"
  done
  [[ -f $work/bench_kernels.log ]] && echo "[bench_kernels]" && tail -n 15 "$work/bench_kernels.log"
  exit $((${1:-0} || failed))
}

# --- 1. the machine
[[ -d /usr/local/cuda/bin ]] && export PATH=/usr/local/cuda/bin:$PATH
py_bin=$(dirname "$(command -v python3)")
export PATH=$PATH:$py_bin  # pip's cmake and ninja live beside the venv's python3
env_report() {
  echo "OS: $(grep -h '^PRETTY_NAME=' /etc/os-release 2>/dev/null | cut -d= -f2 | tr -d '"'), $(nproc) cores"
  command -v nvidia-smi >/dev/null && echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())' 2>&1 | tail -1
  python3 -c 'import transformers, peft; print("transformers", transformers.__version__, "peft", peft.__version__)' 2>&1 | tail -1
  for t in cmake ninja c++ nvcc dpkg; do echo "$t: $(command -v "$t" || echo missing) $("$t" --version 2>/dev/null | head -1)"; done
}
export -f env_report
phase env 30 bash -c env_report

# Trains a 5-step adapter on stories260K with our CLI, dumps our logits, compares with transformers + peft.
peft_check() {
  set -eo pipefail
  rm -rf "$work/peft"
  "$build/affinage" run recipes/stories260k_sft.json --set train.max_steps=5 --set output_dir="$work/peft/run" \
    --set eval.every=0 --set device=cpu | tail -2
  "$build/bench_logits" models/stories260K "$work/peft/run/adapter" "$work/peft/ours.safetensors"
  PYTHONUNBUFFERED=1 python3 bench/peft_compare.py --model models/stories260K --adapter "$work/peft/run/adapter" \
    --ours "$work/peft/ours.safetensors"
}

# --- 2. Debian packages into a private prefix (dpkg -x never touches the machine's own files)
unpack() {
  set -e
  shopt -s nullglob
  local f n=0
  for f in "$debs"/*.deb; do dpkg -x "$f" "$root"; n=$((n + 1)); done
  ((n > 0)) || { echo "no .deb in $debs: run bench/fetch_gpu_debs.sh here and carry it"; return 1; }
  # .pc files name prefix=/usr; point them at the prefix
  sed -i "s#^prefix=/usr\$#prefix=$root/usr#" "$root"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$root"/usr/share/pkgconfig/*.pc 2>/dev/null || true
  echo "unpacked $n packages into $root"
}
rm -rf "$root"
mkdir -p "$root"
export debs root build work
export -f unpack peft_check
phase unpack 60 bash -c unpack || finish 1
lib=$root/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_PATH=$lib/pkgconfig:$root/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# --- 3. configure against the Python torch's LibTorch (Debian's in a dry run)
prefix="$root/usr;$lib/cmake"
if ((dry == 0)); then
  torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || finish 1
  prefix="$torch_cmake;$prefix"
fi
gen=() keep_going=(-- -k)
command -v ninja >/dev/null && gen=(-G Ninja) keep_going=(-- -k 0)
# an existing build folder is reconfigured, not removed (BUILD_DIR may point at one in use)
phase configure 150 cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DPKG_CONFIG_EXECUTABLE="$root/usr/bin/pkgconf" -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 || finish 1
echo "deps from:"
grep -E '^(Boost_DIR|boost_program_options_DIR|GTest_DIR|nlohmann_json_DIR|SPM_LIBDIR|Torch_DIR|PKG_CONFIG_EXECUTABLE)[:=]' \
  "$build/CMakeCache.txt" | sed 's/^/  /' | tee -a "$work/configure.log"

# --- 4. build only what the check runs
targets=(affinage bench_train bench_dpo bench_logits)
[[ -f tests/test_kernels.cpp ]] && targets+=(test_kernels)
[[ -f bench/bench_kernels.cpp ]] && targets+=(bench_kernels)
[[ -f bench/bench_lora.cpp ]] && targets+=(bench_lora)
if ((dry == 1)); then
  phase build 300 cmake --build "$build" -j "$(nproc)" --target affinage_spm || finish 1
  echo "the SentencePiece shim links:"
  ldd "$build/libaffinage_spm.so" | grep -E 'sentencepiece|protobuf' | sed 's/^/  /'
  summary+=("(dry run: configure + affinage_spm only; targets on the GPU: ${targets[*]})")
  finish 0
fi
phase build 330 cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" "${keep_going[@]}" ||
  {
    # Two parts depend on headers a pip LibTorch may ship differently; should one not build, build without it:
    # bench_util.h reads the peak from the CUDA allocator header (without it the benchmarks report the device
    # memory in use), and base/distributed.cpp includes c10d's Gloo/NCCL headers (without them one process
    # still trains, which is all this check needs).
    retry=()
    grep -q 'bench_util\.h' "$work/build.log" && retry+=(-DCMAKE_CXX_FLAGS=-DAFFINAGE_BENCH_NO_CUDA_HEADERS)
    grep -q 'distributed\.cpp' "$work/build.log" && retry+=(-DAFFINAGE_DISTRIBUTED=OFF)
    ((${#retry[@]} > 0)) && cmake "$build" "${retry[@]}" >/dev/null &&
      phase build_retry 300 cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" "${keep_going[@]}"
  }

# --- 5. CUDA parity tests (the kernels' CUDA vs CPU twins)
[[ -f tests/test_kernels.cpp ]] && phase tests 90 "$build/tests/test_kernels" --gtest_color=no

# --- 6. Mistral-7B LoRA SFT: 32 layers, bf16, r16 all-linear, 8 packed rows x 4096 tokens, checkpointing
phase bench_train 150 "$build/bench_train" device=cuda

# --- 7. Hugging Face parity: our adapter loaded by transformers + peft, logits compared with ours
phase peft 120 bash -c peft_check

# --- 8. Mistral-7B DPO: 8 pairs of 1024 prompt + 1024 response tokens, live and precomputed reference
phase bench_dpo 150 "$build/bench_dpo" device=cuda

# --- 9. the kernels' own benchmark, when there is time left
[[ -f bench/bench_kernels.cpp ]] && phase bench_kernels 60 "$build/bench_kernels"

# --- 9b. the LoRA layer without full-size temporaries vs PEFT's formula, bf16 at 7B shapes
[[ -f bench/bench_lora.cpp ]] && phase bench_lora 40 "$build/bench_lora" device=cuda dtype=bf16 tokens=4096 reps=5

# --- 10. the 7B SFT step again with the fused kernels off (AFFINAGE_FUSED_KERNELS=0): their gain, if time is left
phase bench_train_unfused 100 env AFFINAGE_FUSED_KERNELS=0 "$build/bench_train" device=cuda small=0 steps=2
finish 0
