// `affinage data check`: a recipe's data (or one file) validated row by row with the training loaders, its
// statistics, an estimate of steps and time, and samples with their trained tokens marked (app/data_check.h).
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include "app/data_check.h"
#include "base/error.h"
#include "cli/commands.h"
#include "config/recipe_file.h"

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
    "samples with the trained tokens between \u27e6 \u27e7 (in color on a terminal). Exit code 1 when a row is "
    "broken.\n"
    "T is a tokenizer.model or a model folder (a folder also gives the time estimate).";

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

}  // namespace

int cmd_data_check(const Args& args) {
  std::string recipe, data, tokenizer, format = "auto", stage = "sft", columns;
  std::vector<std::string> sets;
  int64_t seq_len = 2048;
  bool packing = false, json = false, no_measure = false;
  CheckOptions o;
  po::options_description opts("data check options");
  opts.add_options()("recipe", po::value(&recipe), "recipe file: every stage's data is checked")(
      "set", po::value(&sets)->composing(), "override a recipe key: --set data.seq_len=4096 (repeatable)")(
      "data", po::value(&data), "one JSONL file instead of a recipe")(
      "tokenizer", po::value(&tokenizer), "with --data: a tokenizer.model, or a model folder")(
      "format", po::value(&format)->default_value("auto"),
      "with --data: auto|text|messages|prompt_completion|alpaca|preference")(
      "stage", po::value(&stage)->default_value("sft"), "with --data: sft|dpo")(
      "seq-len", po::value(&seq_len)->default_value(2048), "with --data: data.seq_len")(
      "packing", po::bool_switch(&packing), "with --data: data.packing")(
      "columns", po::value(&columns), "with --data: column mapping, e.g. prompt=question,completion=answer")(
      "show", po::value(&o.show)->default_value(0), "render N training samples with the trained tokens marked")(
      "json", po::bool_switch(&json), "print the report as JSON")(
      "tokens-per-s", po::value(&o.tokens_per_s)->default_value(0),
      "training throughput for the time estimate "
      "(e.g. tokens_per_s from a short run's metrics.jsonl) instead of a measured matmul")(
      "mfu", po::value(&o.mfu)->default_value(0.4), "assumed share of the measured matmul peak a run reaches")(
      "no-measure", po::bool_switch(&no_measure),
      "skip the matmul measurement (no time estimate without --tokens-per-s)");
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
    if (!data.empty() || !tokenizer.empty()) fail("give either a RECIPE or --data FILE --tokenizer T, not both");
    stages = expand_stages(load_recipe(recipe, sets));
    source = recipe;
  } else {
    if (data.empty()) fail("give a RECIPE or --data FILE --tokenizer T (see affinage data check --help)");
    if (tokenizer.empty()) fail("--data needs --tokenizer: a tokenizer.model or a model folder");
    if (!sets.empty()) fail("--set changes a recipe; with --data use --seq-len, --packing, --format, --columns");
    Recipe r;
    r.name = fs::path(data).filename().string();
    r.stage = parse_enum<Stage>(stage, "--stage");
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
  const bool color = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
  std::cout << (json ? data_check_json(reports, source) : format_data_check(reports, source, color)) << std::flush;
  return ok ? 0 : 1;
}

}  // namespace affinage::cli
