// The DPO stage's data check (see dpo/check.h): the same functions build_preference_data is made of, so the
// statistics equal training's (tests/test_data_check.cpp holds them equal).
#include "dpo/check.h"
#include <algorithm>
#include <cstdio>
#include "base/strings.h"
#include "datasets/mixture.h"
#include "datasets/preference_data.h"
#include "dpo/losses.h"
#include "text/chat.h"

namespace affinage {

static ShownSample show_pair(const PreferencePair& p, const Tokenizer& tok, const Recipe& r, int64_t max_prompt) {
  std::vector<PreferencePair> one{p};
  PreferenceStats st;
  truncate_pairs(one, r.data.seq_len, max_prompt, r.data.truncation, st);
  ShownSample out;
  out.file = p.file, out.line = p.line;
  const PreferencePair& q = one.empty() ? p : one[0];
  if (one.empty())
    out.note = p.chosen == p.rejected
                   ? "dropped: chosen and rejected are identical"
                   : "dropped: longer than data.seq_len " + std::to_string(r.data.seq_len) + " (truncation \"drop\")";
  else if (st.truncated_prompts || st.truncated_responses)
    out.note = std::string(st.truncated_prompts ? "prompt cut from the left" : "") +
               (st.truncated_prompts && st.truncated_responses ? ", " : "") +
               (st.truncated_responses ? "responses cut at the end" : "") + " (data.seq_len " +
               std::to_string(r.data.seq_len) + ")";
  out.tokens = one.empty() ? 0 : static_cast<int64_t>(q.prompt.size() + q.chosen.size() + q.rejected.size());
  out.trained = one.empty() ? 0 : static_cast<int64_t>(q.chosen.size() + q.rejected.size());
  out.parts.push_back({"prompt", mark_tokens(tok, q.prompt, std::vector<uint8_t>(q.prompt.size(), 0))});
  for (auto [name, resp] : {std::pair{"chosen", &q.chosen}, std::pair{"rejected", &q.rejected}}) {
    std::vector<int> ids = q.prompt;
    ids.insert(ids.end(), resp->begin(), resp->end());
    std::vector<uint8_t> tr(q.prompt.size(), 0);
    tr.resize(ids.size(), 1);
    out.parts.push_back({name, mark_tokens(tok, ids, tr, q.prompt.size())});
  }
  return out;
}

static std::vector<std::string> dpo_table(const StageReport& r, const PreferenceStats (&st)[2],
                                          const int64_t (&identical)[2]) {
  char line[256];
  std::vector<std::string> t;
  std::snprintf(line, sizeof line, "  %-6s %8s %11s %11s %11s %12s %14s %20s", "split", "pairs", "prompt", "chosen",
                "rejected", "cut prompts", "cut responses", "dropped (tokens)");
  t.push_back(line);
  const SplitReport* sp[2] = {&r.train, &r.eval};
  for (int k = 0; k < 2; ++k) {
    const PreferenceStats& d = st[k];
    std::snprintf(line, sizeof line, "  %-6s %8s %11s %11s %11s %12s %14s %20s", k ? "eval" : "train",
                  group_digits(d.pairs).c_str(), group_digits(d.prompt_tokens).c_str(),
                  group_digits(d.chosen_tokens).c_str(), group_digits(d.rejected_tokens).c_str(),
                  group_digits(d.truncated_prompts).c_str(), group_digits(d.truncated_responses).c_str(),
                  (group_digits(d.dropped) + " (" + group_digits(sp[k]->dropped_tokens) + ")").c_str());
    t.push_back(line);
  }
  if (identical[0] || identical[1])
    t.push_back("  (" + group_digits(identical[0] + identical[1]) +
                " dropped pairs have identical chosen and rejected)");
  return t;
}

void check_dpo_data(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep) {
  const DataConfig& cfg = r.data;
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  const int64_t max_prompt = effective_max_prompt_len(r);
  rep.chat_format = chat_format_name(chat);
  rep.item = "pair";
  rep.settings_note = ", prompts kept to " + group_digits(max_prompt) + " tokens when cut";
  rep.extra["max_prompt_len"] = max_prompt;
  const bool needs_ref = preference_loss_needs_reference(r.dpo.loss);
  rep.reference_forwards = needs_ref && !r.dpo.precompute_reference ? 1 : 0;
  rep.precomputed_reference = needs_ref && r.dpo.precompute_reference;
  auto files = load_data_files<PreferencePair>(
      cfg, [&](const DataSource& s) { return load_preference_file(s, tok, chat, cfg.columns); }, rep);
  if (!rep.errors.empty()) return;
  auto [train, eval] = mix_sources<PreferencePair>(cfg, r.seed, [&](const DataSource& s) {
    return files.at({s.path, s.format});
  });
  for (size_t i = 0; i < train.size() && static_cast<int64_t>(i) < o.show; ++i)
    rep.samples.push_back(show_pair(train[i], tok, r, max_prompt));
  PreferenceStats stats[2];
  int64_t identical[2] = {0, 0};
  SplitReport* splits[2] = {&rep.train, &rep.eval};
  std::vector<PreferencePair>* pairs[2] = {&train, &eval};
  for (int k = 0; k < 2; ++k) {
    SplitReport& sp = *splits[k];
    for (const PreferencePair& p : *pairs[k]) {
      const int64_t all = p.prompt.size() + p.chosen.size() + p.rejected.size();
      const int64_t longest = p.prompt.size() + std::max(p.chosen.size(), p.rejected.size());
      sp.tokens_before += all;
      sp.longest.note(longest, p.file, p.line);
      const bool same = p.chosen == p.rejected;  // truncate_pairs' two reasons to drop a pair
      identical[k] += same;
      if (same || (cfg.truncation == Truncation::Drop && longest > cfg.seq_len)) sp.dropped_tokens += all;
    }
    truncate_pairs(*pairs[k], cfg.seq_len, max_prompt, cfg.truncation, stats[k]);
    const PreferenceStats& d = stats[k];
    sp.cut_tokens = sp.tokens_before - sp.dropped_tokens - (d.prompt_tokens + d.chosen_tokens + d.rejected_tokens);
    if (k == 0 && train.empty())
      fail("data: no preference pair left (", d.dropped, " dropped of ", d.pairs,
           "); raise data.seq_len or use truncation \"right\"");
    for (const PreferencePair& p : *pairs[k]) {
      const int64_t P = p.prompt.size(), C = p.chosen.size(), R = p.rejected.size();
      sp.cost.push_back({P + std::max(C, R), 2, 2 * P + C + R});
    }
    sp.stats = d.to_json();
    sp.extra["tokens"] = d.prompt_tokens + d.chosen_tokens + d.rejected_tokens;
    sp.extra["identical_dropped"] = identical[k];
  }
  rep.table = dpo_table(rep, stats, identical);
  rep.has_stats = true;
}

}  // namespace affinage
