// `affinage data check` (contract in datasets/check.h): the stage's files read with the training loaders,
// mixed, truncated and packed with the same functions build_sft_data / build_preference_data are made of
// (tests/test_data_check.cpp holds the statistics equal to theirs), then an estimate of the run.
#include "datasets/check.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <ATen/ATen.h>
#include "core/chat.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/prepare.h"
#include "core/runtime.h"
#include "core/trainer.h"
#include "datasets/mixture.h"
#include "dpo/losses.h"

namespace affinage {
namespace {

// What one training item costs: its sequences are padded to the longest `len` of its micro-batch.
struct ItemCost {
  int64_t len = 0, seqs = 1, real = 0;
};

// Every file of the data section read once; every broken file reported, not only the first.
template <class T, class Load>
std::map<std::pair<std::string, std::string>, std::vector<T>> load_all(const DataConfig& cfg, Load load,
                                                                      StageReport& rep) {
  std::map<std::pair<std::string, std::string>, std::vector<T>> out;
  std::map<std::pair<std::string, std::string>, bool> broken;
  auto one = [&](const DataSource& s, const std::string& split) {
    const auto key = std::make_pair(s.path, s.format);
    if (!out.count(key) && !broken.count(key)) {
      try {
        out[key] = load(s);
      } catch (const Error& e) {
        broken[key] = true;
        rep.errors.push_back(e.what());
      }
    }
    rep.files.push_back({s.path, split, out.count(key) ? static_cast<int64_t>(out[key].size()) : -1});
  };
  for (const DataSource& s : cfg.train) one(s, "train");
  if (cfg.eval) one(*cfg.eval, "eval");
  return out;
}

void note_longest(Longest& l, int64_t n, const std::string& file, int64_t line) {
  if (n > l.tokens) l = {n, file, line};
}

// --- SFT ---------------------------------------------------------------------------------------------------

ShownSample show_sft(const Sample& s, const Tokenizer& tok, const DataConfig& cfg) {
  std::vector<Sample> one{s};
  DataStats st;
  truncate_samples(one, cfg.seq_len, cfg.truncation, st);
  ShownSample out{s.file, s.line};
  const Sample& shown = one.empty() ? s : one[0];
  if (one.empty())
    out.note = static_cast<int64_t>(s.ids.size()) > cfg.seq_len && cfg.truncation == "drop"
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

void check_sft(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep,
               std::vector<ItemCost>& train_cost, std::vector<ItemCost>& eval_cost) {
  const DataConfig& cfg = r.data;
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  rep.chat_format = chat_format_name(chat);
  auto files = load_all<Sample>(cfg, [&](const DataSource& s) { return load_sft_file(s, tok, chat, cfg.columns); }, rep);
  if (!rep.errors.empty()) return;
  auto [train, eval] = mix_sources<Sample>(cfg, r.seed, [&](const DataSource& s) { return files.at({s.path, s.format}); });
  for (size_t i = 0; i < train.size() && static_cast<int64_t>(i) < o.show; ++i)
    rep.samples.push_back(show_sft(train[i], tok, cfg));
  std::vector<Row> rows[2];
  std::vector<ItemCost>* costs[2] = {&train_cost, &eval_cost};
  SplitReport* splits[2] = {&rep.train, &rep.eval};
  std::vector<Sample>* samples[2] = {&train, &eval};
  for (int k = 0; k < 2; ++k) {
    SplitReport& sp = *splits[k];
    for (const Sample& s : *samples[k]) {
      sp.tokens_before += s.ids.size();
      note_longest(sp.longest, s.ids.size(), s.file, s.line);
    }
    // build_sft_data: truncate, rows; an empty training set is an error before the eval set is built.
    truncate_samples(*samples[k], cfg.seq_len, cfg.truncation, sp.sft);
    rows[k] = make_rows(*samples[k], cfg.seq_len, cfg.packing, sp.sft);
    sp.cut_tokens = sp.sft.truncated_tokens;
    sp.dropped_tokens = sp.tokens_before - sp.sft.tokens - sp.sft.truncated_tokens;
    if (k == 0 && rows[0].empty())
      fail("data: no training sample left after truncation (", sp.sft.dropped, " dropped of ", sp.sft.rows,
           "); raise data.seq_len, use truncation \"right\", or check that rows have something to train on");
    for (const Row& row : rows[k])
      costs[k]->push_back({cfg.seq_len, 1, std::count_if(row.doc_ids.begin(), row.doc_ids.end(), [](int64_t d) { return d >= 0; })});
  }
  rep.has_stats = true;
}

// --- DPO ---------------------------------------------------------------------------------------------------

ShownSample show_pair(const PreferencePair& p, const Tokenizer& tok, const Recipe& r, int64_t max_prompt) {
  std::vector<PreferencePair> one{p};
  PreferenceStats st;
  truncate_pairs(one, r.data.seq_len, max_prompt, r.data.truncation, st);
  ShownSample out{p.file, p.line};
  const PreferencePair& q = one.empty() ? p : one[0];
  if (one.empty())
    out.note = p.chosen == p.rejected ? "dropped: chosen and rejected are identical"
                                      : "dropped: longer than data.seq_len " + std::to_string(r.data.seq_len) +
                                            " (truncation \"drop\")";
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

void check_dpo(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep,
               std::vector<ItemCost>& train_cost, std::vector<ItemCost>& eval_cost) {
  const DataConfig& cfg = r.data;
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  rep.chat_format = chat_format_name(chat);
  rep.max_prompt_len = effective_max_prompt_len(r);
  auto files = load_all<PreferencePair>(
      cfg, [&](const DataSource& s) { return load_preference_file(s, tok, chat, cfg.columns); }, rep);
  if (!rep.errors.empty()) return;
  auto [train, eval] =
      mix_sources<PreferencePair>(cfg, r.seed, [&](const DataSource& s) { return files.at({s.path, s.format}); });
  for (size_t i = 0; i < train.size() && static_cast<int64_t>(i) < o.show; ++i)
    rep.samples.push_back(show_pair(train[i], tok, r, rep.max_prompt_len));
  std::vector<ItemCost>* costs[2] = {&train_cost, &eval_cost};
  SplitReport* splits[2] = {&rep.train, &rep.eval};
  std::vector<PreferencePair>* pairs[2] = {&train, &eval};
  for (int k = 0; k < 2; ++k) {
    SplitReport& sp = *splits[k];
    for (const PreferencePair& p : *pairs[k]) {
      const int64_t all = p.prompt.size() + p.chosen.size() + p.rejected.size();
      const int64_t longest = p.prompt.size() + std::max(p.chosen.size(), p.rejected.size());
      sp.tokens_before += all;
      note_longest(sp.longest, longest, p.file, p.line);
      const bool identical = p.chosen == p.rejected;  // truncate_pairs' two reasons to drop a pair
      sp.identical += identical;
      if (identical || (cfg.truncation == "drop" && longest > cfg.seq_len)) sp.dropped_tokens += all;
    }
    truncate_pairs(*pairs[k], cfg.seq_len, rep.max_prompt_len, cfg.truncation, sp.dpo);
    sp.cut_tokens = sp.tokens_before - sp.dropped_tokens -
                    (sp.dpo.prompt_tokens + sp.dpo.chosen_tokens + sp.dpo.rejected_tokens);
    if (k == 0 && train.empty())
      fail("data: no preference pair left (", sp.dpo.dropped, " dropped of ", sp.dpo.pairs,
           "); raise data.seq_len or use truncation \"right\"");
    for (const PreferencePair& p : *pairs[k]) {
      const int64_t P = p.prompt.size(), C = p.chosen.size(), R = p.rejected.size();
      costs[k]->push_back({P + std::max(C, R), 2, 2 * P + C + R});
    }
  }
  rep.has_stats = true;
}

// --- the estimate ------------------------------------------------------------------------------------------

// FLOPs of one sequence of T tokens (padding included: the kernels compute it). Matmuls: 2N a token forward,
// and for training 2N more for the input gradients (the frozen base has no weight gradients; LoRA's own are
// left out). Causal attention: QK^T and AV over T/2 keys on average, 2·T·(H·d) a token and layer forward,
// three times that with the backward pass.
struct Flops {
  double n, l, hd;
  double train(double T) const { return T * (4 * n + 6 * l * T * hd); }
  double forward(double T) const { return T * (2 * n + 2 * l * T * hd); }
};

// One pass over `items` in batches of B in order (evaluation, precomputed reference), at most max_batches.
double forward_pass(const std::vector<ItemCost>& items, int64_t B, int64_t max_batches, const Flops& f) {
  double total = 0;
  for (int64_t s = 0, b = 0; s < static_cast<int64_t>(items.size()); s += B, ++b) {
    if (max_batches > 0 && b >= max_batches) break;
    int64_t T = 0, seqs = 0;
    for (int64_t i = s; i < std::min<int64_t>(s + B, items.size()); ++i) T = std::max(T, items[i].len), seqs += items[i].seqs;
    total += seqs * f.forward(T);
  }
  return total;
}

void time_run(const Recipe& r, const ModelConfig& mc, const CheckOptions& o, Estimate& e);

Estimate estimate_run(const Recipe& r, const ModelConfig& mc, const std::vector<ItemCost>& train,
                      const std::vector<ItemCost>& eval, const CheckOptions& o) {
  Estimate e;
  const int64_t n = train.size(), B = r.train.batch_size, A = r.train.grad_accum;
  if (B < 1 || A < 1) fail("train.batch_size and train.grad_accum must be at least 1");
  e.train_items = n;
  e.steps = total_steps(r, n);
  e.items_per_step = B * A;
  e.steps_rule = r.train.max_steps > 0 ? "train.max_steps" : "train.epochs";
  e.epochs = double(e.steps) * B * A / double(n);
  e.matmul_params = mc.matmul_params();
  const Flops f{double(e.matmul_params), double(mc.num_hidden_layers), double(mc.num_attention_heads * mc.head_dim)};
  const bool dpo = r.stage == "dpo", needs_ref = dpo && preference_loss_needs_reference(r.dpo.loss);
  const bool live_ref = needs_ref && !r.dpo.precompute_reference;
  // The micro-batches the loop will run, in its order (core/trainer.cpp: item k = epoch_order(k / n)[k % n]).
  double ref_flops = 0;
  int64_t cached_epoch = -1;
  std::vector<int64_t> order;
  for (int64_t mb = 0; mb < e.steps * A; ++mb) {
    int64_t T = 0, seqs = 0, real = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t k = mb * B + b, epoch = k / n;
      if (epoch != cached_epoch) order = epoch_order(n, r.seed, epoch), cached_epoch = epoch;
      const ItemCost& c = train[order[k % n]];
      T = std::max(T, c.len), seqs += c.seqs, real += c.real;
    }
    e.train_tokens += double(seqs) * T;
    e.train_real_tokens += real;
    e.train_flops += seqs * f.train(T);
    if (live_ref) ref_flops += seqs * f.forward(T);
  }
  const int64_t every = r.eval.every;
  e.evaluations = eval.empty() ? 0 : 1 + (every > 0 ? e.steps / every : 0) + (every <= 0 || e.steps % every ? 1 : 0);
  const double eval_pass = forward_pass(eval, B, r.eval.max_batches, f) * (live_ref ? 2 : 1);
  const double precompute = needs_ref && r.dpo.precompute_reference ? forward_pass(train, B, 0, f) + forward_pass(eval, B, 0, f) : 0;
  e.flops = e.train_flops + ref_flops + e.evaluations * eval_pass + precompute;
  e.notes.push_back("FLOPs: 4N + 6·L·T·(H·d) a trained token (forward and input gradients; the frozen base has no weight "
                    "gradients), 2N + 2·L·T·(H·d) a forward-only token (evaluation" + std::string(needs_ref ? ", DPO reference" : "") +
                    "); N = " + std::to_string(e.matmul_params) + " matmul parameters from config.json, T the padded sequence "
                    "length; LoRA's own matmuls, norms, the optimizer and checkpoints are left out");
  if (!r.eval.tasks.empty())
    e.notes.push_back(std::to_string(r.eval.tasks.size()) + " eval.tasks file(s), scored before and after the stage, "
                      "are not counted (nor checked here)");
  try {
    time_run(r, mc, o, e);
  } catch (const Error& err) {
    e.seconds = -1;
    e.notes.push_back(std::string("no time estimate: ") + err.what() + "; pass --tokens-per-s");
  }
  return e;
}

// Seconds from the FLOPs: the user's tokens/s, or the measured matmul peak x the assumed MFU.
void time_run(const Recipe& r, const ModelConfig& mc, const CheckOptions& o, Estimate& e) {
  const int64_t B = r.train.batch_size;
  if (o.tokens_per_s > 0) {
    // The user's figure counts real (non-padding) training tokens a second, as metrics.jsonl does.
    e.tokens_per_s = o.tokens_per_s;
    e.seconds = e.train_real_tokens / o.tokens_per_s * (e.flops / e.train_flops);
  } else if (o.measure) {
    e.device = pick_device(r.device).str();
    e.dtype = r.dtype;
    set_threads(static_cast<int>(r.threads));
    // A matmul at the model's own shape (a micro-batch of tokens through the MLP), capped on a CPU to keep
    // the measurement short.
    const bool cpu = e.device == "cpu";
    const int64_t m = std::min<int64_t>(B * r.data.seq_len, cpu ? 1024 : 8192);
    const int64_t k = cpu ? std::min<int64_t>(mc.hidden_size, 2048) : mc.hidden_size;
    const int64_t nn = cpu ? std::min<int64_t>(mc.intermediate_size, 2048) : mc.intermediate_size;
    e.shape = "[" + std::to_string(m) + "x" + std::to_string(k) + "]x[" + std::to_string(k) + "x" + std::to_string(nn) + "]";
    e.peak_gflops = measure_matmul_gflops(e.device, r.dtype, m, k, nn);
    e.mfu = o.mfu;
    e.seconds = e.flops / (e.peak_gflops * 1e9 * o.mfu);
    if (mc.hidden_size < 1024)
      e.notes.push_back("hidden size " + std::to_string(mc.hidden_size) + ": at this size per-operation overhead, not "
                        "matmuls, sets the speed and the run can take many times longer; run a few steps and pass "
                        "--tokens-per-s from metrics.jsonl");
  } else {
    e.notes.push_back("no time estimate: the matmul measurement is off; pass --tokens-per-s");
  }
}

}  // namespace

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

double measure_matmul_gflops(const std::string& device, const std::string& dtype, int64_t m, int64_t k, int64_t n) {
  const c10::Device dev = pick_device(device);
  const auto opts = at::TensorOptions().device(dev).dtype(parse_dtype(dtype));
  at::Tensor a = at::randn({m, k}).to(opts), b = at::randn({k, n}).to(opts);
  auto timed = [&] {
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor c = at::matmul(a, b);
    if (dev.is_cuda()) (void)c.sum().item<float>();  // waits for the GPU (a CPU matmul is done when it returns)
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // The first call also starts thread pools and picks kernels: it counts only when one call takes seconds.
  double best = timed(), spent = 0;
  if (best < 1.0) {
    best = 1e30;
    for (int i = 0; i < 50 && (i < 3 || spent < 0.2) && spent < 1.0; ++i) {
      const double t = timed();
      best = std::min(best, t), spent += t;
    }
  }
  return 2.0 * m * k * n / best / 1e9;
}

static nlohmann::json split_json(const SplitReport& s, bool dpo) {
  nlohmann::json j = dpo ? s.dpo.to_json() : s.sft.to_json();
  if (dpo) j["tokens"] = s.dpo.prompt_tokens + s.dpo.chosen_tokens + s.dpo.rejected_tokens;
  else j["trained_share"] = s.sft.tokens > 0 ? double(s.sft.trained_tokens) / double(s.sft.tokens) : 0.0;
  if (dpo) j["identical_dropped"] = s.identical;
  j["tokens_before_truncation"] = s.tokens_before;
  j["dropped_tokens"] = s.dropped_tokens;
  j["cut_tokens"] = s.cut_tokens;
  j["longest"] = {{"tokens", s.longest.tokens}, {"file", s.longest.file}, {"line", s.longest.line}};
  return j;
}

nlohmann::json StageReport::to_json() const {
  nlohmann::json j = {{"name", name}, {"stage", stage}, {"tokenizer", tokenizer}, {"chat_format", chat_format},
                      {"seq_len", seq_len}, {"packing", packing}, {"truncation", truncation},
                      {"ok", errors.empty()}, {"errors", errors}, {"files", nlohmann::json::array()}};
  if (stage == "dpo") j["max_prompt_len"] = max_prompt_len;
  for (const File& f : files) j["files"].push_back({{"path", f.path}, {"split", f.split}, {"rows", f.rows}});
  if (has_stats) j["splits"] = {{"train", split_json(train, stage == "dpo")}, {"eval", split_json(eval, stage == "dpo")}};
  if (estimate) {
    const Estimate& e = *estimate;
    j["estimate"] = {{"steps", e.steps}, {"items_per_step", e.items_per_step}, {"train_items", e.train_items},
                     {"epochs", e.epochs}, {"steps_rule", e.steps_rule}, {"evaluations", e.evaluations}, {"train_tokens", e.train_tokens},
                     {"train_real_tokens", e.train_real_tokens}, {"flops", e.flops}, {"train_flops", e.train_flops},
                     {"matmul_params", e.matmul_params}, {"device", e.device}, {"dtype", e.dtype},
                     {"matmul_shape", e.shape}, {"peak_gflops", e.peak_gflops}, {"mfu", e.mfu},
                     {"tokens_per_s", e.tokens_per_s}, {"notes", e.notes}};
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
    j["samples"].push_back({{"file", s.file}, {"line", s.line}, {"tokens", s.tokens}, {"trained", s.trained},
                            {"note", s.note}, {"parts", parts}});
  }
  return j;
}

StageReport check_stage(const Recipe& r, const CheckOptions& o) {
  StageReport rep;
  rep.name = r.name, rep.stage = r.stage, rep.seq_len = r.data.seq_len, rep.packing = r.data.packing;
  rep.truncation = r.data.truncation;
  std::vector<ItemCost> train_cost, eval_cost;
  try {
    if (r.stage != "sft" && r.stage != "dpo") fail("stage '", r.stage, "': data check knows sft and dpo");
    rep.tokenizer = o.tokenizer.empty() ? find_tokenizer(r.model) : o.tokenizer;
    auto tok = Tokenizer::load(rep.tokenizer);
    if (r.stage == "sft") check_sft(r, *tok, o, rep, train_cost, eval_cost);
    else check_dpo(r, *tok, o, rep, train_cost, eval_cost);
  } catch (const Error& e) {
    rep.errors.push_back(e.what());
    rep.has_stats = false;
  }
  if (!rep.has_stats) {
    rep.no_estimate = "the data has errors";
    return rep;
  }
  if (r.model.empty()) {
    rep.no_estimate = "no model folder (its config.json gives the FLOPs); give a recipe or a model folder as --tokenizer";
    return rep;
  }
  try {
    rep.estimate = estimate_run(r, load_model_config(r.model), train_cost, eval_cost, o);
  } catch (const Error& e) {
    rep.no_estimate = e.what();
  }
  return rep;
}

}  // namespace affinage
