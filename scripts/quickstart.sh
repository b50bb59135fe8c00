#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run a whole post-training pipeline on the
# bundled stories260K model on a CPU (a few minutes on 2 cores, no network):
#   1. data from the model itself: stories for "Topic: <word>" prompts, kept when they use the word (SFT) and
#      paired with the same story with the word swapped (DPO)      (affinage data synth)
#   2. SFT with LoRA, then DPO on the SFT adapter, in one run      (recipes/quickstart.json)
#   3. base vs. SFT vs. SFT+DPO on 8 held-out words never trained on: share of stories that use the word asked for
#   4. merge the adapter into the weights and publish a folder with its model card
# QS_PER_WORD, QS_STEPS and QS_SAMPLES shorten it, QS_OUT moves it, QS_NO_BUILD=1 skips the build (the test
# runs it that way: tests/test_quickstart.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${QS_NO_BUILD:-0}" = 1 ] || bash scripts/build.sh --target affinage
export OPENBLAS_NUM_THREADS=1   # on tiny models OpenBLAS's own threads fight LibTorch's (bench/RESULTS.md)
A=build/affinage
M=models/stories260K
OUT=${QS_OUT:-runs/quickstart}
PER_WORD=${QS_PER_WORD:-96}
STEPS=${QS_STEPS:-40}
SAMPLES=${QS_SAMPLES:-16}
WORDS=dog,cat,ball,tree,cake,bird,fish,park,car,boat,sun,flower,toy,box,hat,bear
HELDOUT=datasets/data/quickstart_heldout_words.jsonl
rm -rf "$OUT"

echo "== 1. data from the model itself: $PER_WORD stories per word for 16 words, checked for the word =="
$A data synth --model $M --words $WORDS --per-word "$PER_WORD" --rejected swapped --seed 1 --out $OUT/data

echo "== 2. SFT then DPO on the SFT adapter (recipes/quickstart.json) =="
$A run recipes/quickstart.json --set output_dir=$OUT/train --set stages.0.data.train=$OUT/data/sft.jsonl \
  --set stages.1.data.train=$OUT/data/prefs.jsonl --set stages.0.train.max_steps="$STEPS" --set stages.1.train.max_steps="$STEPS"

echo "== 3. held-out words (cow, duck, frog, moon, rock, shoe, star, kite): $SAMPLES sampled stories each =="
$A eval --model $M --data $HELDOUT --compare base $OUT/train/1-sft/adapter $OUT/train/2-dpo/adapter \
  --samples "$SAMPLES" --temperature 1 --max-new-tokens 96 --batch 64 --seed 7 --json > $OUT/heldout_eval.json
share() { sed -E 's/.*"word_match":([0-9.eE+-]+).*/\1/' <<<"$(sed -n "$1p" <(tr '}' '\n' < $OUT/heldout_eval.json | grep word_match))"; }

echo "== 4. merge the SFT+DPO adapter into the weights and publish it =="
$A merge --model $M --adapter $OUT/train/2-dpo/adapter --out $OUT/merged
$A publish --model $OUT/merged --run $OUT/train/2-dpo --out $OUT/publish --name affinage/stories260k-word-stories --license mit

echo
echo "stories that use the word asked for, on 8 held-out words ($SAMPLES samples each, temperature 1):"
printf "  base stories260K        %5.1f%%\n" "$(awk "BEGIN{print 100*$(share 1)}")"
printf "  + SFT adapter           %5.1f%%\n" "$(awk "BEGIN{print 100*$(share 2)}")"
printf "  + SFT + DPO adapter     %5.1f%%\n" "$(awk "BEGIN{print 100*$(share 3)}")"
echo "adapter: $OUT/train/2-dpo/adapter   merged model: $OUT/merged   Hub-ready folder: $OUT/publish"
echo "run reports: $OUT/train/1-sft/report.html, $OUT/train/2-dpo/report.html"
