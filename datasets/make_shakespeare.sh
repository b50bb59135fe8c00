#!/bin/sh
# Regenerates datasets/data/shakespeare_{train,eval}.jsonl from tinyshakespeare.txt (karpathy/char-rnn):
# {"text"} rows of roughly 300-600 characters, cut on blank lines (speech boundaries).
# Train: the first ~76 KB of the text. Eval: ~15 KB starting at the first blank line after byte 1,000,000
# (disjoint from train). Usage: datasets/make_shakespeare.sh path/to/tinyshakespeare.txt
# (https://github.com/karpathy/char-rnn/blob/master/data/tinyshakespeare/input.txt, MIT)
set -eu
src=${1:?give the path of tinyshakespeare.txt (karpathy/char-rnn)}
out=$(dirname "$0")/data
mkdir -p "$out"

# passages START_BYTE MAX_BYTES: prints JSONL passages built from the paragraphs that begin at or after
# START_BYTE, until MAX_BYTES of passage text have been written.
passages() {
  awk -v start="$1" -v budget="$2" '
    function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); gsub(/\n/, "\\n", s); return s }
    function emit() {
      if (cur == "" || done) return
      printf "{\"text\": \"%s\"}\n", esc(cur); written += length(cur); cur = ""
      if (written >= budget) done = 1
    }
    function add(p) {
      if (length(cur) >= 200 && length(cur) + 2 + length(p) > 600) emit()
      cur = (cur == "") ? p : cur "\n\n" p
      if (length(cur) >= 300) emit()
    }
    BEGIN { RS = ""; pos = 0 }   # paragraph mode: one record per blank-line separated block
    { if (pos >= start && !done) add($0); pos += length($0) + 2 }
    END { if (!done) emit() }
  ' "$src"
}

passages 0 76000 > "$out/shakespeare_train.jsonl"
passages 1000000 15000 > "$out/shakespeare_eval.jsonl"
wc -lc "$out/shakespeare_train.jsonl" "$out/shakespeare_eval.jsonl"
