// What a safetensors file, a model folder or a PEFT adapter folder holds (see app/inspect.h).
#include "app/inspect.h"
#include <filesystem>
#include <iomanip>
#include <set>
#include <sstream>
#include "base/error.h"
#include "base/files.h"
#include "io/model_folder.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;  // keeps the fields in the order a reader expects

namespace affinage {
namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

ojson inspect_safetensors(const std::string& path) {
  SafetensorsFile f(path);
  ojson tensors = ojson::array();
  int64_t params = 0;
  uint64_t bytes = 0;
  for (auto& t : f.tensors()) {
    tensors.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
    params += numel_of(t.shape);
    bytes += t.end - t.begin;
  }
  return {{"kind", "safetensors"},     {"path", path},
          {"metadata", f.metadata()},  {"tensor_count", f.tensors().size()},
          {"parameter_count", params}, {"total_bytes", bytes},
          {"tensors", tensors}};
}

ojson inspect_model(const std::string& dir) {
  WeightSource ws(dir);
  const ModelConfig& c = ws.config();
  int64_t params = 0;
  for (auto& n : ws.names()) params += numel_of(ws.shape(n));
  // WeightSource keeps its files private; count them the way it found them.
  size_t files = 1;
  if (ws.format() == "hf-sharded") {
    ojson idx = ojson::parse(read_file((fs::path(dir) / "model.safetensors.index.json").string()));
    std::set<std::string> shards;
    for (auto& [k, v] : idx["weight_map"].items()) shards.insert(v.get<std::string>());
    files = shards.size();
  }
  return {{"kind", "model"},
          {"path", dir},
          {"architecture", c.architecture},
          {"model_type", c.model_type},
          {"format", ws.format()},
          {"num_hidden_layers", c.num_hidden_layers},
          {"hidden_size", c.hidden_size},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"head_dim", c.head_dim},
          {"intermediate_size", c.intermediate_size},
          {"vocab_size", c.vocab_size},
          {"sliding_window", c.sliding_window ? ojson(*c.sliding_window) : ojson(nullptr)},
          {"rope_theta", c.rope_theta},
          {"rms_norm_eps", c.rms_norm_eps},
          {"max_position_embeddings", c.max_position_embeddings},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"torch_dtype", c.torch_dtype},
          {"parameter_count", params},
          {"tensor_count", ws.names().size()},
          {"file_count", files}};
}

ojson inspect_adapter(const std::string& dir) {
  const std::string cpath = (fs::path(dir) / "adapter_config.json").string();
  ojson cfg;
  try {
    cfg = ojson::parse(read_file(cpath));
  } catch (const ojson::exception& e) {
    fail(cpath, ": not valid JSON (", e.what(), ")");
  }
  if (!cfg.is_object()) fail(cpath, ": expected a JSON object");
  auto field = [&](const char* k) { return cfg.contains(k) ? cfg[k] : ojson(nullptr); };
  ojson out = {{"kind", "adapter"},
               {"path", dir},
               {"peft_type", field("peft_type")},
               {"r", field("r")},
               {"lora_alpha", field("lora_alpha")},
               {"use_rslora", cfg.value("use_rslora", false)},
               {"target_modules", field("target_modules")},
               {"base_model_name_or_path", field("base_model_name_or_path")}};
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (cfg.contains(k) && cfg[k].is_object() && !cfg[k].empty()) out[k] = cfg[k];
  const fs::path wpath = fs::path(dir) / "adapter_model.safetensors";
  std::error_code ec;
  if (!fs::is_regular_file(wpath, ec)) fail("adapter folder '", dir, "' has no adapter_model.safetensors");
  SafetensorsFile f(wpath.string());
  int64_t params = 0;
  for (auto& t : f.tensors()) params += numel_of(t.shape);
  out["tensor_count"] = f.tensors().size();
  out["parameter_count"] = params;
  return out;
}

}  // namespace

std::string format_inspect(const ojson& j) {
  std::ostringstream out;
  const std::string kind = j["kind"];
  auto row = [&out](const std::string& k, const ojson& v) {
    out << "  " << std::left << std::setw(24) << k << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  };
  out << j["path"].get<std::string>() << " (" << kind << ")\n";
  if (kind == "safetensors") {
    for (auto& [k, v] : j["metadata"].items()) row("metadata." + k, v);
    row("tensors", j["tensor_count"]);
    row("parameters", j["parameter_count"]);
    row("bytes", j["total_bytes"]);
    for (auto& t : j["tensors"])
      out << "    " << t["name"].get<std::string>() << "  " << t["dtype"].get<std::string>() << "  "
          << shape_str(t["shape"].get<std::vector<int64_t>>()) << "\n";
    return out.str();
  }
  for (auto& [k, v] : j.items())
    if (k != "kind" && k != "path") row(k, v);
  return out.str();
}

ojson inspect_path(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path d(path);
    if (fs::exists(d / "adapter_config.json", ec)) return inspect_adapter(path);
    if (fs::exists(d / "config.json", ec) || fs::exists(d / "params.json", ec)) return inspect_model(path);
    fail("'", path,
         "' is neither a model folder (config.json or params.json) nor an adapter folder "
         "(adapter_config.json)");
  }
  if (fs::exists(path, ec)) return inspect_safetensors(path);
  fail("'", path, "' does not exist");
}

}  // namespace affinage
