// `affinage data check`: a recipe's data (or one file) validated row by row with the training loaders, its
// statistics, an estimate of steps and time, and samples with their trained tokens marked (datasets/check.h).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include "cli/commands.h"
#include "core/error.h"
#include "core/recipe.h"
#include "datasets/check.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace affinage::cli {
namespace {

const char* kUsage =
    "usage: affinage data check RECIPE [--set key=value ...] [--show N] [--json]\n"
    "       affinage data check --data FILE.jsonl --tokenizer T [--format F] [--stage sft|dpo] [--seq-len N]\n"
    "                           [--packing] [--columns k=v,...] [--show N] [--json]\n\n"
    "Reads every row of every data file (train and eval; each stage of a multi-stage recipe) with the loaders\n"
    "training uses and lists every broken line with file:line and field. Then per split: rows, tokens, trained\n"
    "tokens and their share, cut and dropped rows, packing fill (sft) or prompt/chosen/rejected tokens (dpo),\n"
    "the longest sample; the optimizer steps and an estimate of the time (FLOPs from the model's config.json\n"
    "over a matmul measured here x an assumed MFU, or over --tokens-per-s). --show N renders N training\n"
    "samples with the trained tokens between \u27e6 \u27e7 (in color on a terminal). Exit code 1 when a row is broken.\n"
    "T is a tokenizer.model or a model folder (a folder also gives the time estimate).";

std::string group(double v) {  // 1234567 -> "1,234,567"
  std::string s = std::to_string(static_cast<long long>(std::llround(v)));
  for (int i = static_cast<int>(s.size()) - 3; i > (s[0] == '-' ? 1 : 0); i -= 3) s.insert(i, ",");
  return s;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string duration(double s) {
  if (s < 90) return fmt("%.0f s", s);
  if (s < 5400) return fmt("%.0f min", s / 60);
  if (s < 172800) return fmt("%.1f h", s / 3600);
  return fmt("%.1f days", s / 86400);
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

std::map<std::string, std::string> parse_columns(const std::string& s) {
  std::map<std::string, std::string> out;
  std::stringstream ss(s);
  for (std::string kv; std::getline(ss, kv, ',');) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
      fail("--columns: '", kv, "' is not canonical=name; e.g. --columns prompt=question,completion=answer");
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
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

void print_split_table(const StageReport& r) {
  const bool dpo = r.stage == "dpo";
  if (!dpo)
    std::printf("  %-6s %8s %11s %11s %6s %20s %20s %8s %6s\n", "split", "rows", "tokens", "trained", "share",
                "cut rows (tokens)", "dropped (tokens)", "rows", "fill");
  else
    std::printf("  %-6s %8s %11s %11s %11s %12s %14s %20s\n", "split", "pairs", "prompt", "chosen", "rejected",
                "cut prompts", "cut responses", "dropped (tokens)");
  for (auto [name, s] : {std::pair{"train", &r.train}, std::pair{"eval", &r.eval}}) {
    if (!dpo) {
      const DataStats& d = s->sft;
      std::printf("  %-6s %8s %11s %11s %6s %20s %20s %8s %6s\n", name, group(d.rows).c_str(), group(d.tokens).c_str(),
                  group(d.trained_tokens).c_str(), d.tokens ? fmt("%.1f%%", 100.0 * d.trained_tokens / d.tokens).c_str() : "-",
                  (group(d.truncated) + " (" + group(s->cut_tokens) + ")").c_str(),
                  (group(d.dropped) + " (" + group(s->dropped_tokens) + ")").c_str(), group(d.packed_rows).c_str(),
                  d.packed_rows ? fmt("%.1f%%", 100.0 * d.packing_efficiency).c_str() : "-");
    } else {
      const PreferenceStats& d = s->dpo;
      std::printf("  %-6s %8s %11s %11s %11s %12s %14s %20s\n", name, group(d.pairs).c_str(),
                  group(d.prompt_tokens).c_str(), group(d.chosen_tokens).c_str(), group(d.rejected_tokens).c_str(),
                  group(d.truncated_prompts).c_str(), group(d.truncated_responses).c_str(),
                  (group(d.dropped) + " (" + group(s->dropped_tokens) + ")").c_str());
    }
  }
  if (!dpo)
    std::printf("  (rows: %s; fill: real tokens / (rows x data.seq_len))\n",
                r.packing ? "packed training rows" : "one sample a row, padded");
  else if (r.train.identical || r.eval.identical)
    std::printf("  (%s dropped pairs have identical chosen and rejected)\n", group(r.train.identical + r.eval.identical).c_str());
  for (auto [name, s] : {std::pair{"train", &r.train}, std::pair{"eval", &r.eval}}) {
    if (s->longest.tokens == 0) continue;
    std::printf("  longest %s sample: %s tokens%s at %s:%lld%s\n", name, group(s->longest.tokens).c_str(),
                dpo ? " (prompt + the longer response)" : "", s->longest.file.c_str(), (long long)s->longest.line,
                s->longest.tokens > r.seq_len ? (" - over data.seq_len " + group(r.seq_len)).c_str() : "");
  }
}

void print_estimate(const StageReport& r, const Estimate& e) {
  auto items = [&](int64_t n) { return group(n) + (r.stage == "dpo" ? " pair" : " row") + (n == 1 ? "" : "s"); };
  std::printf("  estimate: %s optimizer steps (from %s; %s a step = %s epochs of %s)\n", group(e.steps).c_str(),
              e.steps_rule.c_str(), items(e.items_per_step).c_str(), fmt("%.2f", e.epochs).c_str(),
              items(e.train_items).c_str());
  std::printf("    training computes %s tokens (%s without padding)%s; %s FLOP in all\n", group(e.train_tokens).c_str(),
              group(e.train_real_tokens).c_str(),
              e.evaluations ? (", plus " + group(e.evaluations) + " held-out evaluations").c_str() : "",
              fmt("%.3g", e.flops).c_str());
  if (e.seconds >= 0 && e.tokens_per_s > 0)
    std::printf("    time ~ %s at the given %s training tokens/s\n", duration(e.seconds).c_str(), group(e.tokens_per_s).c_str());
  else if (e.seconds >= 0)
    std::printf("    time ~ %s at %s GFLOP/s = %s %s matmul %s measured here at %s GFLOP/s x assumed MFU %s\n",
                duration(e.seconds).c_str(), fmt("%.1f", e.peak_gflops * e.mfu).c_str(), e.device.c_str(),
                e.dtype.c_str(), e.shape.c_str(), fmt("%.1f", e.peak_gflops).c_str(), fmt("%.2f", e.mfu).c_str());
  std::printf("    this is an estimate, not a measurement:\n");
  for (const auto& n : e.notes) std::printf("%s\n", wrap("- " + n, "    ", "      ", 110).c_str());
}

void print_stage(const StageReport& r, size_t k, size_t n, bool color) {
  std::printf("%sstage %s%s \"%s\" - tokenizer %s%s\n", k ? "\n" : "",
              n > 1 ? (std::to_string(k + 1) + "/" + std::to_string(n) + ": ").c_str() : "", r.stage.c_str(), r.name.c_str(),
              r.tokenizer.empty() ? "(none)" : r.tokenizer.c_str(), r.chat_format.empty() ? "" : (", chat format " + r.chat_format).c_str());
  std::printf("  data.seq_len %s, packing %s, truncation %s", group(r.seq_len).c_str(), r.packing ? "on" : "off",
              r.truncation.c_str());
  if (r.stage == "dpo") std::printf(", prompts kept to %s tokens when cut", group(r.max_prompt_len).c_str());
  std::printf("\n");
  for (const auto& f : r.files)
    std::printf("  %-5s %s: %s\n", f.split.c_str(), f.path.c_str(), f.rows < 0 ? "BROKEN" : (group(f.rows) + " rows, all valid").c_str());
  if (!r.errors.empty()) {
    std::printf("  errors (fix them and run again):\n");
    for (const auto& e : r.errors) std::printf("%s\n", indent(e, "    ").c_str());
    return;
  }
  print_split_table(r);
  if (r.estimate) print_estimate(r, *r.estimate);
  else std::printf("  estimate: none (%s)\n", r.no_estimate.c_str());
  for (size_t i = 0; i < r.samples.size(); ++i) {
    const ShownSample& s = r.samples[i];
    if (i == 0)
      std::printf(color ? "  legend: plain = context (not trained), \033[32mgreen = trained\033[0m, \033[36m<control>\033[0m "
                          "(\033[1;32mbold green\033[0m when trained)\n"
                        : "  legend: trained tokens between \u27e6 \u27e7; the rest is context, not trained\n");
    std::printf("  sample %zu: %s:%lld, %s tokens, %s trained%s\n", i + 1, s.file.c_str(), (long long)s.line,
                group(s.tokens).c_str(), group(s.trained).c_str(), s.note.empty() ? "" : ("; " + s.note).c_str());
    for (const auto& [name, spans] : s.parts) {
      if (s.parts.size() > 1) std::printf("    %s:\n", name.c_str());
      std::printf("%s\n", indent(render(spans, color), s.parts.size() > 1 ? "      " : "    ").c_str());
    }
  }
}

}  // namespace

int cmd_data_check(const Args& args) {
  std::string recipe, data, tokenizer, format = "auto", stage = "sft", columns;
  std::vector<std::string> sets;
  int64_t seq_len = 2048;
  bool packing = false, json = false, no_measure = false;
  CheckOptions o;
  po::options_description opts("data check options");
  opts.add_options()
      ("recipe", po::value(&recipe), "recipe file: every stage's data is checked")
      ("set", po::value(&sets)->composing(), "override a recipe key: --set data.seq_len=4096 (repeatable)")
      ("data", po::value(&data), "one JSONL file instead of a recipe")
      ("tokenizer", po::value(&tokenizer), "with --data: a tokenizer.model, or a model folder")
      ("format", po::value(&format)->default_value("auto"), "with --data: auto|text|messages|prompt_completion|alpaca|preference")
      ("stage", po::value(&stage)->default_value("sft"), "with --data: sft|dpo")
      ("seq-len", po::value(&seq_len)->default_value(2048), "with --data: data.seq_len")
      ("packing", po::bool_switch(&packing), "with --data: data.packing")
      ("columns", po::value(&columns), "with --data: column mapping, e.g. prompt=question,completion=answer")
      ("show", po::value(&o.show)->default_value(0), "render N training samples with the trained tokens marked")
      ("json", po::bool_switch(&json), "print the report as JSON")
      ("tokens-per-s", po::value(&o.tokens_per_s)->default_value(0), "training throughput for the time estimate "
       "(e.g. tokens_per_s from a short run's metrics.jsonl) instead of a measured matmul")
      ("mfu", po::value(&o.mfu)->default_value(0.4), "assumed share of the measured matmul peak a run reaches")
      ("no-measure", po::bool_switch(&no_measure), "skip the matmul measurement (no time estimate without --tokens-per-s)");
  po::positional_options_description pos;
  pos.add("recipe", 1);
  po::variables_map vm;
  if (parse_args(args, kUsage, opts, vm, &pos)) return 0;
  o.measure = !no_measure;
  if (o.show < 0) fail("--show must be >= 0");
  if (!(o.mfu > 0 && o.mfu <= 1)) fail("--mfu ", o.mfu, " must be in (0, 1]");
  if (!(o.tokens_per_s >= 0)) fail("--tokens-per-s must be >= 0");

  std::vector<Recipe> stages;
  std::string source;
  if (!recipe.empty()) {
    if (!data.empty() || !tokenizer.empty())
      fail("give either a RECIPE or --data FILE --tokenizer T, not both");
    stages = expand_stages(load_recipe(recipe, sets));
    source = recipe;
  } else {
    if (data.empty()) fail("give a RECIPE or --data FILE --tokenizer T (see affinage data check --help)");
    if (tokenizer.empty()) fail("--data needs --tokenizer: a tokenizer.model or a model folder");
    if (!sets.empty()) fail("--set changes a recipe; with --data use --seq-len, --packing, --format, --columns");
    Recipe r;
    r.name = fs::path(data).filename().string();
    r.stage = stage;
    r.data.train = {DataSource{data, format, 1.0}};
    r.data.seq_len = seq_len;
    r.data.packing = packing;
    if (!columns.empty()) r.data.columns = parse_columns(columns);
    if (fs::is_directory(tokenizer)) r.model = tokenizer;
    else o.tokenizer = tokenizer;
    stages.push_back(r);
    source = data;
  }
  std::vector<StageReport> reports;
  bool ok = true;
  for (const Recipe& r : stages) {
    reports.push_back(check_stage(r, o));
    ok = ok && reports.back().errors.empty();
  }
  if (json) {
    nlohmann::json j = {{"source", source}, {"ok", ok}, {"stages", nlohmann::json::array()}};
    for (const auto& r : reports) j["stages"].push_back(r.to_json());
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    const bool color = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
    std::printf("data check: %s\n\n", source.c_str());
    for (size_t k = 0; k < reports.size(); ++k) print_stage(reports[k], k, reports.size(), color);
    std::printf(ok ? "\nok: every row of every file is valid\n" : "\nerrors: listed above; fix them and run again (exit code 1)\n");
    std::fflush(stdout);
  }
  return ok ? 0 : 1;
}

}  // namespace affinage::cli
