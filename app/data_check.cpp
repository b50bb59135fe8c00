// `affinage data check` (contract in app/data_check.h): the stage's own check (app/stages.h) reads and measures
// the data; here the run is estimated from it (steps, FLOPs, time) and the reports are written out.
#include "app/data_check.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include "app/stages.h"
#include "base/error.h"
#include "base/runtime.h"
#include "base/strings.h"
#include "io/model_config.h"
#include "io/model_folder.h"
#include "text/tokenizer.h"
#include "train/loop.h"
#include "train/prepare.h"

namespace affinage {
namespace {

// --- the estimate ------------------------------------------------------------------------------------------

// One pass over `items` in batches of B in order (evaluation, precomputed reference), at most max_batches.
double forward_pass(const std::vector<ItemCost>& items, int64_t B, int64_t max_batches, const ModelConfig& mc) {
  double total = 0;
  for (int64_t s = 0, b = 0; s < static_cast<int64_t>(items.size()); s += B, ++b) {
    if (max_batches > 0 && b >= max_batches) break;
    int64_t T = 0, seqs = 0;
    for (int64_t i = s; i < std::min<int64_t>(s + B, items.size()); ++i)
      T = std::max(T, items[i].len), seqs += items[i].seqs;
    total += seqs * mc.forward_flops(T);
  }
  return total;
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
    e.shape =
        "[" + std::to_string(m) + "x" + std::to_string(k) + "]x[" + std::to_string(k) + "x" + std::to_string(nn) + "]";
    e.peak_gflops = matmul_gflops(pick_device(r.device), parse_dtype(r.dtype), m, k, nn);
    e.mfu = o.mfu;
    e.seconds = e.flops / (e.peak_gflops * 1e9 * o.mfu);
    if (mc.hidden_size < 1024)
      e.notes.push_back("hidden size " + std::to_string(mc.hidden_size) +
                        ": at this size per-operation overhead, not "
                        "matmuls, sets the speed and the run can take many times longer; run a few steps and pass "
                        "--tokens-per-s from metrics.jsonl");
  } else {
    e.notes.push_back("no time estimate: the matmul measurement is off; pass --tokens-per-s");
  }
}

Estimate estimate_run(const Recipe& r, const ModelConfig& mc, const StageReport& rep, const CheckOptions& o) {
  const std::vector<ItemCost>& train = rep.train.cost;
  Estimate e;
  const int64_t n = train.size(), B = r.train.batch_size, A = r.train.grad_accum;
  if (B < 1 || A < 1) fail("train.batch_size and train.grad_accum must be at least 1");
  e.train_items = n;
  e.steps = total_steps(r, n);
  e.items_per_step = B * A;
  e.steps_rule = r.train.max_steps > 0 ? "train.max_steps" : "train.epochs";
  e.epochs = double(e.steps) * B * A / double(n);
  e.matmul_params = mc.matmul_params();
  // The micro-batches the loop will run, in its order (train/loop.cpp: item k = epoch_order(k / n)[k % n]).
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
    e.train_flops += seqs * mc.train_flops(T);
    ref_flops += rep.reference_forwards * seqs * mc.forward_flops(T);
  }
  const int64_t every = r.eval.every;
  const std::vector<ItemCost>& eval = rep.eval.cost;
  e.evaluations = eval.empty() ? 0 : 1 + (every > 0 ? e.steps / every : 0) + (every <= 0 || e.steps % every ? 1 : 0);
  const double eval_pass = forward_pass(eval, B, r.eval.max_batches, mc) * (1 + rep.reference_forwards);
  const double precompute =
      rep.precomputed_reference ? forward_pass(train, B, 0, mc) + forward_pass(eval, B, 0, mc) : 0;
  e.flops = e.train_flops + ref_flops + e.evaluations * eval_pass + precompute;
  const bool reference = rep.reference_forwards > 0 || rep.precomputed_reference;
  e.notes.push_back(
      "FLOPs: 4N + 6·L·T·(H·d) a trained token (forward and input gradients; the frozen base has no weight "
      "gradients), 2N + 2·L·T·(H·d) a forward-only token (evaluation" +
      std::string(reference ? ", reference model" : "") + "); N = " + std::to_string(e.matmul_params) +
      " matmul parameters from config.json, T the padded sequence "
      "length; LoRA's own matmuls, norms, the optimizer and checkpoints are left out");
  if (!r.eval.tasks.empty())
    e.notes.push_back(std::to_string(r.eval.tasks.size()) +
                      " eval.tasks file(s), scored before and after the stage, "
                      "are not counted (nor checked here)");
  try {
    time_run(r, mc, o, e);
  } catch (const Error& err) {
    e.seconds = -1;
    e.notes.push_back(std::string("no time estimate: ") + err.what() + "; pass --tokens-per-s");
  }
  return e;
}

// --- the text report ---------------------------------------------------------------------------------------

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string indent(const std::string& text, const std::string& pad) {
  std::string out = pad;
  for (char c : text) out += c == '\n' ? "\n" + pad : std::string(1, c);
  return out;
}

// Words filled into lines of at most `width` bytes; the first line starts with `first`, the others with `rest`.
std::string wrap(const std::string& text, const std::string& first, const std::string& rest, size_t width) {
  std::string out = first, word;
  size_t col = first.size();
  std::stringstream ss(text);
  for (bool start = true; ss >> word; start = false) {
    if (!start && col + 1 + word.size() > width) out += "\n" + rest, col = rest.size();
    else if (!start) out += " ", ++col;
    out += word, col += word.size();
  }
  return out;
}

// Trained text between ⟦ ⟧, or in color: trained green, control tokens cyan (bold green when trained).
std::string render(const std::vector<MarkedSpan>& spans, bool color) {
  std::string out;
  bool open = false;
  for (const MarkedSpan& s : spans) {
    if (color) {
      const char* c = s.trained ? (s.control ? "\033[1;32m" : "\033[32m") : (s.control ? "\033[36m" : "");
      out += *c ? c + s.text + "\033[0m" : s.text;
      continue;
    }
    if (s.trained != open) out += s.trained ? "\u27e6" : "\u27e7", open = s.trained;
    out += s.text;
  }
  if (open) out += "\u27e7";
  return out;
}

void print_estimate(std::ostringstream& os, const StageReport& r, const Estimate& e) {
  auto items = [&](int64_t n) { return group_digits(n) + " " + r.item + (n == 1 ? "" : "s"); };
  os << "  estimate: " << group_digits(e.steps) << " optimizer steps (from " << e.steps_rule << "; "
     << items(e.items_per_step) << " a step = " << fmt("%.2f", e.epochs) << " epochs of " << items(e.train_items)
     << ")\n";
  os << "    training computes " << group_digits(e.train_tokens) << " tokens (" << group_digits(e.train_real_tokens)
     << " without padding)" << (e.evaluations ? ", plus " + group_digits(e.evaluations) + " held-out evaluations" : "")
     << "; " << fmt("%.3g", e.flops) << " FLOP in all\n";
  if (e.seconds >= 0 && e.tokens_per_s > 0)
    os << "    time ~ " << format_duration(e.seconds) << " at the given " << group_digits(e.tokens_per_s)
       << " training tokens/s\n";
  else if (e.seconds >= 0)
    os << "    time ~ " << format_duration(e.seconds) << " at " << fmt("%.1f", e.peak_gflops * e.mfu)
       << " GFLOP/s = " << e.device << " " << e.dtype << " matmul " << e.shape << " measured here at "
       << fmt("%.1f", e.peak_gflops) << " GFLOP/s x assumed MFU " << fmt("%.2f", e.mfu) << "\n";
  os << "    this is an estimate, not a measurement:\n";
  for (const auto& n : e.notes) os << wrap("- " + n, "    ", "      ", 110) << "\n";
}

void print_stage(std::ostringstream& os, const StageReport& r, size_t k, size_t n, bool color) {
  os << (k ? "\n" : "") << "stage " << (n > 1 ? std::to_string(k + 1) + "/" + std::to_string(n) + ": " : "") << r.stage
     << " \"" << r.name << "\" - tokenizer " << (r.tokenizer.empty() ? "(none)" : r.tokenizer)
     << (r.chat_format.empty() ? "" : ", chat format " + r.chat_format) << "\n";
  os << "  data.seq_len " << group_digits(r.seq_len) << ", packing " << (r.packing ? "on" : "off") << ", truncation "
     << name_of(r.truncation) << r.settings_note << "\n";
  for (const auto& f : r.files) {
    char line[512];
    std::snprintf(line, sizeof line, "  %-5s %s: %s\n", f.split.c_str(), f.path.c_str(),
                  f.rows < 0 ? "BROKEN" : (group_digits(f.rows) + " rows, all valid").c_str());
    os << line;
  }
  if (!r.errors.empty()) {
    os << "  errors (fix them and run again):\n";
    for (const auto& e : r.errors) os << indent(e, "    ") << "\n";
    return;
  }
  for (const auto& line : r.table) os << line << "\n";
  for (auto [name, s] : {std::pair{"train", &r.train}, std::pair{"eval", &r.eval}}) {
    if (s->longest.tokens == 0) continue;
    os << "  longest " << name << " sample: " << group_digits(s->longest.tokens) << " tokens at " << s->longest.file
       << ":" << s->longest.line
       << (s->longest.tokens > r.seq_len ? " - over data.seq_len " + group_digits(r.seq_len) : "") << "\n";
  }
  if (r.estimate) print_estimate(os, r, *r.estimate);
  else os << "  estimate: none (" << r.no_estimate << ")\n";
  for (size_t i = 0; i < r.samples.size(); ++i) {
    const ShownSample& s = r.samples[i];
    if (i == 0)
      os << (color
                 ? "  legend: plain = context (not trained), \033[32mgreen = trained\033[0m, \033[36m<control>\033[0m "
                   "(\033[1;32mbold green\033[0m when trained)\n"
                 : "  legend: trained tokens between \u27e6 \u27e7; the rest is context, not trained\n");
    os << "  sample " << i + 1 << ": " << s.file << ":" << s.line << ", " << group_digits(s.tokens) << " tokens, "
       << group_digits(s.trained) << " trained" << (s.note.empty() ? "" : "; " + s.note) << "\n";
    for (const auto& [name, spans] : s.parts) {
      if (s.parts.size() > 1) os << "    " << name << ":\n";
      os << indent(render(spans, color), s.parts.size() > 1 ? "      " : "    ") << "\n";
    }
  }
}

bool all_ok(const std::vector<StageReport>& reports) {
  for (const auto& r : reports)
    if (!r.errors.empty()) return false;
  return true;
}

}  // namespace

StageReport check_stage(const Recipe& r, const CheckOptions& o) {
  StageReport rep;
  rep.name = r.name, rep.stage = name_of(r.stage), rep.seq_len = r.data.seq_len, rep.packing = r.data.packing;
  rep.truncation = r.data.truncation;
  try {
    const StageDef& def = stage_def(r.stage);
    rep.tokenizer = o.tokenizer.empty() ? find_tokenizer(r.model) : o.tokenizer;
    auto tok = Tokenizer::load(rep.tokenizer);
    def.check_data(r, *tok, o, rep);
  } catch (const Error& e) {
    rep.errors.push_back(e.what());
    rep.has_stats = false;
  }
  if (!rep.has_stats) {
    rep.no_estimate = "the data has errors";
    return rep;
  }
  if (r.model.empty()) {
    rep.no_estimate =
        "no model folder (its config.json gives the FLOPs); give a recipe or a model folder as --tokenizer";
    return rep;
  }
  try {
    rep.estimate = estimate_run(r, load_model_config(r.model), rep, o);
  } catch (const Error& e) {
    rep.no_estimate = e.what();
  }
  return rep;
}

std::string format_data_check(const std::vector<StageReport>& reports, const std::string& source, bool color) {
  std::ostringstream os;
  os << "data check: " << source << "\n\n";
  for (size_t k = 0; k < reports.size(); ++k) print_stage(os, reports[k], k, reports.size(), color);
  os << (all_ok(reports) ? "\nok: every row of every file is valid\n"
                         : "\nerrors: listed above; fix them and run again (exit code 1)\n");
  return os.str();
}

std::string data_check_json(const std::vector<StageReport>& reports, const std::string& source) {
  nlohmann::json j = {{"source", source}, {"ok", all_ok(reports)}, {"stages", nlohmann::json::array()}};
  for (const auto& r : reports) j["stages"].push_back(r.to_json());
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace affinage
