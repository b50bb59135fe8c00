// Publishing a folder for the Hugging Face Hub: files, model card, provenance (see app/publish.h).
#include "app/publish.h"
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include "app/model_card.h"
#include "base/error.h"
#include "base/files.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace affinage {

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

json read_json(const fs::path& p) {
  try {
    return json::parse(read_file(p.string()));
  } catch (const json::exception& e) {
    fail(p.string(), ": not valid JSON (", e.what(), ")");
  }
}

json read_json_if(const fs::path& p) { return is_file(p) ? read_json(p) : json(); }

std::string abs_path(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

// The run folder of an adapter: the first of its parent, grandparent and great-grandparent holding recipe.json
// (<run>/adapter, and <run>/checkpoints/step-N/adapter).
std::string find_run(const std::string& adapter_dir) {
  fs::path p = fs::absolute(adapter_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  for (int up = 0; up < 3 && p.has_parent_path() && p != p.root_path(); ++up) {
    p = p.parent_path();
    if (is_file(p / "recipe.json")) return p.string();
  }
  return "";
}

// The weight files of a model folder, as its index or layout names them.
std::vector<std::string> weight_files(const fs::path& dir) {
  if (is_file(dir / "model.safetensors.index.json")) {
    json idx = read_json(dir / "model.safetensors.index.json");
    std::set<std::string> shards;
    for (auto& [t, f] : idx.value("weight_map", json::object()).items())
      if (f.is_string()) shards.insert(f.get<std::string>());
    std::vector<std::string> out = {"model.safetensors.index.json"};
    out.insert(out.end(), shards.begin(), shards.end());
    return out;
  }
  for (auto* f : {"model.safetensors", "consolidated.safetensors"})
    if (is_file(dir / f)) return {f};
  return {};
}

// {file: sha256} of `names` inside `dir`; null when the folder is not there.
json hash_files(const fs::path& dir, const std::vector<std::string>& names) {
  json out = json::object();
  for (auto& n : names) out[n] = sha256_file((dir / n).string());
  return out;
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string shell_quote(const std::string& s) {
  if (std::regex_match(s, std::regex("[A-Za-z0-9_./:@-]+"))) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

const std::vector<std::string> kModelSideFiles = {"config.json",
                                                  "generation_config.json",
                                                  "tokenizer.model",
                                                  "tokenizer.json",
                                                  "tokenizer_config.json",
                                                  "special_tokens_map.json",
                                                  "added_tokens.json",
                                                  "LICENSE",
                                                  "LICENSE.txt",
                                                  "LICENSE.md",
                                                  "NOTICE",
                                                  "USE_POLICY.md",
                                                  "affinage_merge.json"};

}  // namespace

bool looks_like_hub_id(const std::string& s) {
  static const std::regex id("[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?");
  std::error_code ec;
  return std::regex_match(s, id) && s.find("..") == std::string::npos && !fs::exists(s, ec);
}

PublishResult publish(const PublishOptions& o) {
  const bool adapter = !o.adapter_dir.empty();
  if (adapter == !o.model_dir.empty()) fail("publish: give either an adapter folder or a model folder (one of them)");
  const std::string src = adapter ? o.adapter_dir : o.model_dir;
  std::error_code ec;
  if (!fs::is_directory(src, ec)) fail("publish: '", src, "' does not exist or is not a folder");
  const fs::path sp(src);
  PublishResult res;

  // 1. What gets copied.
  std::vector<std::string> files;
  json adapter_cfg, merge;
  if (adapter) {
    for (auto* f : {"adapter_config.json", "adapter_model.safetensors"})
      if (!is_file(sp / f))
        fail(src, ": no ", f,
             is_file(sp / "lora.safetensors") ? " (a mistral-finetune adapter: only PEFT folders are published)"
                                              : " (publish takes a PEFT adapter folder, e.g. a run's adapter/)");
    adapter_cfg = read_json(sp / "adapter_config.json");
    files = {"adapter_config.json", "adapter_model.safetensors"};
  } else {
    if (!is_file(sp / "config.json"))
      fail(src, ": no config.json",
           is_file(sp / "params.json") ? " (a Mistral consolidated folder; merge with --format hf to publish)"
                                       : " (publish takes a Hugging Face model folder)");
    files = weight_files(sp);
    if (files.empty() || files[0] == "consolidated.safetensors")
      fail(src, ": no model.safetensors or model.safetensors.index.json (only safetensors weights are published)");
    for (auto& f : kModelSideFiles)
      if (is_file(sp / f)) files.push_back(f);
    merge = read_json_if(sp / "affinage_merge.json");
  }

  // 2. The run it came from, and the base model.
  std::string run_dir = o.run_dir;
  if (!run_dir.empty() && !is_file(fs::path(run_dir) / "recipe.json"))
    fail("--run '", run_dir, "' has no recipe.json (give the output_dir of an `affinage run`)");
  std::string first_adapter = adapter ? src : "";
  if (merge.is_object() && !merge.value("adapters", json::array()).empty())
    first_adapter = merge["adapters"][0].value("path", std::string());
  if (run_dir.empty() && !first_adapter.empty()) run_dir = find_run(first_adapter);
  const fs::path rp(run_dir);
  json recipe = run_dir.empty() ? json() : read_json(rp / "recipe.json");
  const std::optional<RunSummary> summary = run_dir.empty() ? std::nullopt : read_run_summary(run_dir);
  json data_stats = run_dir.empty() ? json() : read_json_if(rp / "data_stats.json");
  if (run_dir.empty()) res.notes.push_back("no training run found (recipe.json); pass --run RUN_DIR to fill the card");

  std::string base_local, base_id_candidate;
  if (adapter) base_id_candidate = adapter_cfg.value("base_model_name_or_path", std::string());
  if (merge.is_object() && !merge.value("adapters", json::array()).empty())
    base_id_candidate = merge["adapters"][0].value("base_model_name_or_path", std::string());
  if (recipe.is_object()) base_local = recipe.value("model", std::string());
  if (base_local.empty() && merge.is_object()) base_local = merge.value("base_model", std::string());
  if (base_local.empty()) base_local = base_id_candidate;
  std::string base_id = o.base_model;
  if (base_id.empty() && looks_like_hub_id(base_id_candidate)) base_id = base_id_candidate;
  if (base_id.empty() && (adapter || merge.is_object()))
    res.notes.push_back("the base model '" + base_local +
                        "' is a local folder, so the card has no base_model; pass "
                        "--base-model OWNER/NAME (its Hub id) to link it" +
                        std::string(adapter ? " and to let PEFT find it" : ""));

  // 3. The folder: files copied (and hashed), card, provenance.
  StagingDir out(o.out_dir);
  res.out_dir = abs_path(o.out_dir);
  res.name = o.name.empty() ? fs::path(res.out_dir).filename().string() : o.name;
  json published = json::object();
  for (auto& f : files) {
    if (adapter && f == "adapter_config.json" && !o.base_model.empty()) {
      json c = adapter_cfg;
      c["base_model_name_or_path"] = o.base_model;  // what AutoPeftModelForCausalLM loads
      write_file_atomic(out.file(f), c.dump(2) + "\n");
      published[f] = sha256_file(out.file(f));
      continue;
    }
    published[f] = copy_file_sha256((sp / f).string(), out.file(f));
  }

  json prov = {{"format_version", 1},
               {"affinage_version", AFFINAGE_VERSION},
               {"created_utc", now_utc()},
               {"kind", adapter ? "adapter" : "model"},
               {"name", res.name},
               {"source", abs_path(src)},
               {"published_files", published}};
  json base = {{"id", base_id.empty() ? json() : json(base_id)},
               {"path", base_local.empty() ? json() : json(base_local)}};
  if (!base_local.empty() && fs::is_directory(base_local, ec) && !weight_files(base_local).empty())
    base["weights"] = hash_files(base_local, weight_files(base_local));
  else base["weights"] = nullptr, base["note"] = "base model folder not found from here; weights not hashed";
  prov["base_model"] = base;
  if (merge.is_object()) {
    json ads = json::array();
    for (auto& a : merge.value("adapters", json::array())) {
      json e = a;
      std::string p = a.value("path", std::string());
      if (is_file(fs::path(p) / "adapter_model.safetensors"))
        e["files"] = hash_files(p, {"adapter_config.json", "adapter_model.safetensors"});
      else e["files"] = nullptr, e["note"] = "adapter folder not found from here";
      ads.push_back(e);
    }
    prov["merge"] = merge;
    prov["merged_adapters"] = ads;
  }
  json datasets = json::array();
  for (auto& [role, s] : recipe_data_sources(recipe)) {
    std::string p = s["path"].get<std::string>();
    if (is_file(p)) datasets.push_back({{"role", role}, {"path", p}, {"sha256", sha256_file(p)}});
    else
      datasets.push_back(
          {{"role", role}, {"path", p}, {"sha256", nullptr}, {"note", "file not found from the current folder"}});
  }
  prov["datasets"] = datasets;
  prov["recipe"] = run_dir.empty() ? json()
                                   : json{{"path", abs_path((rp / "recipe.json").string())},
                                          {"sha256", sha256_file((rp / "recipe.json").string())}};
  prov["run"] =
      run_dir.empty() ? json() : json{{"path", abs_path(run_dir)}, {"steps", summary ? json(summary->steps) : json()}};
  write_file_atomic(out.file("provenance.json"), prov.dump(2) + "\n");

  CardInputs card;
  card.name = res.name;
  card.adapter = adapter;
  card.base_model = base_id;
  card.base_model_local = base_local;
  card.license = o.license.empty() ? "other" : o.license;
  if (o.license.empty())
    res.notes.push_back("license is 'other'; pass --license (e.g. apache-2.0, mit) matching the base model and data");
  card.datasets = o.datasets;
  if (o.datasets.empty() && !datasets.empty())
    res.notes.push_back(
        "the data files are listed in the card body; pass --dataset OWNER/NAME for Hub datasets in its front matter");
  if (recipe.is_object() && !recipe.value("stage", std::string()).empty())
    card.tags.push_back(recipe["stage"].get<std::string>());
  card.tags.push_back("lora");
  if (merge.is_object()) card.tags.push_back("merge");
  card.recipe = recipe, card.summary = summary, card.data_stats = data_stats, card.merge = merge;
  card.version = AFFINAGE_VERSION;
  write_file_atomic(out.file("README.md"), render_model_card(card));

  for (auto& e : fs::directory_iterator(out.path())) res.files.push_back(e.path().filename().string());
  std::sort(res.files.begin(), res.files.end());
  out.commit();
  res.upload_command = "huggingface-cli upload " + shell_quote(res.name) + " " + shell_quote(res.out_dir) + " .";
  return res;
}

}  // namespace affinage
