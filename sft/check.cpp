// The SFT stage's data check (see sft/check.h): the same functions build_sft_data is made of, so the
// statistics equal training's (tests/test_data_check.cpp holds them equal).
#include "sft/check.h"
#include <algorithm>
#include <cstdio>
#include "base/strings.h"
#include "datasets/mixture.h"
#include "datasets/sft_data.h"
#include "text/chat.h"

namespace affinage {

static ShownSample show_sft(const Sample& s, const Tokenizer& tok, const DataConfig& cfg) {
  std::vector<Sample> one{s};
  DataStats st;
  truncate_samples(one, cfg.seq_len, cfg.truncation, st);
  ShownSample out;
  out.file = s.file, out.line = s.line;
  const Sample& shown = one.empty() ? s : one[0];
  if (one.empty())
    out.note = static_cast<int64_t>(s.ids.size()) > cfg.seq_len && cfg.truncation == Truncation::Drop
                   ? "dropped: longer than data.seq_len " + std::to_string(cfg.seq_len) + " (truncation \"drop\")"
                   : "dropped: no trained token left";
  else if (st.truncated)
    out.note = "cut: the last " + std::to_string(st.truncated_tokens) + " tokens (data.seq_len " +
               std::to_string(cfg.seq_len) + ")";
  out.tokens = one.empty() ? 0 : static_cast<int64_t>(shown.ids.size());
  out.trained = one.empty() ? 0 : std::count(shown.trainable.begin(), shown.trainable.end(), uint8_t{1});
  out.parts.push_back({"text", mark_tokens(tok, shown.ids, shown.trainable)});
  return out;
}

static std::string percent(double num, double den) {
  char b[32];
  if (den <= 0) return "-";
  std::snprintf(b, sizeof b, "%.1f%%", 100.0 * num / den);
  return b;
}

static std::vector<std::string> sft_table(const StageReport& r, const DataStats (&st)[2]) {
  char line[256];
  std::vector<std::string> t;
  std::snprintf(line, sizeof line, "  %-6s %8s %11s %11s %6s %20s %20s %8s %6s", "split", "rows", "tokens", "trained",
                "share", "cut rows (tokens)", "dropped (tokens)", "rows", "fill");
  t.push_back(line);
  const SplitReport* sp[2] = {&r.train, &r.eval};
  for (int k = 0; k < 2; ++k) {
    const DataStats& d = st[k];
    std::snprintf(line, sizeof line, "  %-6s %8s %11s %11s %6s %20s %20s %8s %6s", k ? "eval" : "train",
                  group_digits(d.rows).c_str(), group_digits(d.tokens).c_str(), group_digits(d.trained_tokens).c_str(),
                  percent(d.trained_tokens, d.tokens).c_str(),
                  (group_digits(d.truncated) + " (" + group_digits(sp[k]->cut_tokens) + ")").c_str(),
                  (group_digits(d.dropped) + " (" + group_digits(sp[k]->dropped_tokens) + ")").c_str(),
                  group_digits(d.packed_rows).c_str(), d.packed_rows ? percent(d.packing_efficiency, 1).c_str() : "-");
    t.push_back(line);
  }
  t.push_back(std::string("  (rows: ") + (r.packing ? "packed training rows" : "one sample a row, padded") +
              "; fill: real tokens / (rows x data.seq_len))");
  return t;
}

void check_sft_data(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep) {
  const DataConfig& cfg = r.data;
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  rep.chat_format = chat_format_name(chat);
  auto files = load_data_files<Sample>(
      cfg, [&](const DataSource& s) { return load_sft_file(s, tok, chat, cfg.columns); }, rep);
  if (!rep.errors.empty()) return;
  auto [train, eval] = mix_sources<Sample>(cfg, r.seed, [&](const DataSource& s) {
    return files.at({s.path, s.format});
  });
  for (size_t i = 0; i < train.size() && static_cast<int64_t>(i) < o.show; ++i)
    rep.samples.push_back(show_sft(train[i], tok, cfg));
  DataStats stats[2];
  SplitReport* splits[2] = {&rep.train, &rep.eval};
  std::vector<Sample>* samples[2] = {&train, &eval};
  for (int k = 0; k < 2; ++k) {
    SplitReport& sp = *splits[k];
    for (const Sample& s : *samples[k]) {
      sp.tokens_before += s.ids.size();
      sp.longest.note(s.ids.size(), s.file, s.line);
    }
    // build_sft_data: truncate, rows; an empty training set is an error before the eval set is built.
    truncate_samples(*samples[k], cfg.seq_len, cfg.truncation, stats[k]);
    std::vector<Row> rows = make_rows(*samples[k], cfg.seq_len, cfg.packing, stats[k]);
    sp.cut_tokens = stats[k].truncated_tokens;
    sp.dropped_tokens = sp.tokens_before - stats[k].tokens - stats[k].truncated_tokens;
    if (k == 0 && rows.empty())
      fail("data: no training sample left after truncation (", stats[k].dropped, " dropped of ", stats[k].rows,
           "); raise data.seq_len, use truncation \"right\", or check that rows have something to train on");
    for (const Row& row : rows)
      sp.cost.push_back(
          {cfg.seq_len, 1, std::count_if(row.doc_ids.begin(), row.doc_ids.end(), [](int64_t d) { return d >= 0; })});
    sp.stats = stats[k].to_json();
    sp.extra["trained_share"] = stats[k].tokens > 0 ? double(stats[k].trained_tokens) / double(stats[k].tokens) : 0.0;
  }
  rep.table = sft_table(rep, stats);
  rep.has_stats = true;
}

}  // namespace affinage
