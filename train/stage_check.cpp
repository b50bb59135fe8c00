// The shared pieces of the stages' data checks (see train/stage_check.h).
#include "train/stage_check.h"

namespace affinage {

std::vector<MarkedSpan> mark_tokens(const Tokenizer& tok, const std::vector<int>& ids,
                                    const std::vector<uint8_t>& trainable, size_t from) {
  if (trainable.size() != ids.size()) fail("mark_tokens: ", ids.size(), " ids but ", trainable.size(), " flags");
  std::vector<MarkedSpan> out;
  auto add = [&](std::string text, bool trained, bool control) {
    if (text.empty()) return;
    if (!out.empty() && !control && !out.back().control && out.back().trained == trained) out.back().text += text;
    else out.push_back({std::move(text), trained, control});
  };
  // Text is decoded from the last control token on, so each run keeps the spaces it has in the whole.
  std::vector<int> ctx;
  std::string ctx_text;
  for (size_t i = 0; i < ids.size();) {
    const bool trained = trainable[i] != 0;
    if (tok.is_control(ids[i])) {
      if (i >= from) add(tok.id_to_piece(ids[i]), trained, true);
      ctx.clear(), ctx_text.clear();
      ++i;
      continue;
    }
    size_t j = i;
    while (j < ids.size() && !tok.is_control(ids[j]) && (trainable[j] != 0) == trained && (j < from) == (i < from)) ++j;
    ctx.insert(ctx.end(), ids.begin() + i, ids.begin() + j);
    std::string full = tok.decode(ctx);
    std::string text = full.rfind(ctx_text, 0) == 0 ? full.substr(ctx_text.size())
                                                    : tok.decode(std::vector<int>(ids.begin() + i, ids.begin() + j));
    ctx_text = std::move(full);
    if (i >= from) add(std::move(text), trained, false);
    i = j;
  }
  return out;
}

static nlohmann::json split_json(const SplitReport& s) {
  nlohmann::json j = s.stats;
  j.update(s.extra);
  j["tokens_before_truncation"] = s.tokens_before;
  j["dropped_tokens"] = s.dropped_tokens;
  j["cut_tokens"] = s.cut_tokens;
  j["longest"] = {{"tokens", s.longest.tokens}, {"file", s.longest.file}, {"line", s.longest.line}};
  return j;
}

nlohmann::json StageReport::to_json() const {
  nlohmann::json j = {{"name", name},
                      {"stage", stage},
                      {"tokenizer", tokenizer},
                      {"chat_format", chat_format},
                      {"seq_len", seq_len},
                      {"packing", packing},
                      {"truncation", name_of(truncation)},
                      {"ok", errors.empty()},
                      {"errors", errors},
                      {"files", nlohmann::json::array()}};
  j.update(extra);
  for (const File& f : files) j["files"].push_back({{"path", f.path}, {"split", f.split}, {"rows", f.rows}});
  if (has_stats) j["splits"] = {{"train", split_json(train)}, {"eval", split_json(eval)}};
  if (estimate) {
    const Estimate& e = *estimate;
    j["estimate"] = {{"steps", e.steps},
                     {"items_per_step", e.items_per_step},
                     {"train_items", e.train_items},
                     {"epochs", e.epochs},
                     {"steps_rule", e.steps_rule},
                     {"evaluations", e.evaluations},
                     {"train_tokens", e.train_tokens},
                     {"train_real_tokens", e.train_real_tokens},
                     {"flops", e.flops},
                     {"train_flops", e.train_flops},
                     {"matmul_params", e.matmul_params},
                     {"device", e.device},
                     {"dtype", e.dtype},
                     {"matmul_shape", e.shape},
                     {"peak_gflops", e.peak_gflops},
                     {"mfu", e.mfu},
                     {"tokens_per_s", e.tokens_per_s},
                     {"notes", e.notes}};
    j["estimate"]["seconds"] = e.seconds >= 0 ? nlohmann::json(e.seconds) : nlohmann::json(nullptr);
  } else {
    j["estimate"] = nullptr;
    j["no_estimate"] = no_estimate;
  }
  j["samples"] = nlohmann::json::array();
  for (const ShownSample& s : samples) {
    nlohmann::json parts = nlohmann::json::array();
    for (const auto& [name, spans] : s.parts) {
      nlohmann::json a = nlohmann::json::array();
      for (const MarkedSpan& m : spans) a.push_back({{"text", m.text}, {"trained", m.trained}, {"control", m.control}});
      parts.push_back({{"name", name}, {"spans", a}});
    }
    j["samples"].push_back({{"file", s.file},
                            {"line", s.line},
                            {"tokens", s.tokens},
                            {"trained", s.trained},
                            {"note", s.note},
                            {"parts", parts}});
  }
  return j;
}

}  // namespace affinage
