#!/usr/bin/env bash
# The README's first command: install what is missing, build, and fine-tune the bundled stories260K model
# end to end on a CPU (a few minutes on 2 cores): baseline eval, LoRA SFT run, eval of the adapter, samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh --target affinage
A=build/affinage
M=models/stories260K
EVAL=datasets/data/shakespeare_eval.jsonl
OUT=runs/quickstart
rm -rf "$OUT"

echo "== 1. the base model (a TinyStories model) tells a story from BOS =="
$A generate --model $M --max-new-tokens 60

echo "== 2. its loss on held-out Shakespeare, before fine-tuning =="
before=$($A eval --model $M --data $EVAL --json)
echo "$before"

echo "== 3. LoRA SFT on Shakespeare passages (recipes/stories260k_sft.json) =="
$A run recipes/stories260k_sft.json --set output_dir=$OUT

echo "== 4. the same held-out loss with the adapter =="
after=$($A eval --model $M --adapter $OUT/adapter --data $EVAL --json)
echo "$after"

echo "== 5. what the adapted model writes now =="
$A generate --model $M --adapter $OUT/adapter --prompt "KING" --max-new-tokens 60 --temperature 0.8 --top-p 0.9 --seed 1

loss() { sed -E 's/.*"loss":([0-9.eE+-]+).*/\1/' <<<"$1"; }
ppl() { sed -E 's/.*"perplexity":([0-9.eE+-]+).*/\1/' <<<"$1"; }
echo
echo "held-out Shakespeare         loss    perplexity"
printf "base stories260K            %6.3f   %8.2f\n" "$(loss "$before")" "$(ppl "$before")"
printf "+ LoRA adapter (SFT)        %6.3f   %8.2f\n" "$(loss "$after")" "$(ppl "$after")"
echo "adapter (PEFT folder): $OUT/adapter   metrics: $OUT/metrics.jsonl"
