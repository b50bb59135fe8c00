// LoRA injection and adapter files: PEFT folders both ways, mistral-finetune's lora.safetensors
// (see lora/adapter.h; the folder layout is PEFT's save_pretrained output).
#include "lora/adapter.h"
#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <regex>
#include <set>
#include "base/error.h"
#include "base/files.h"
#include "io/model_folder.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace affinage {

static const std::string kPeftPrefix = "base_model.model.";

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets) {
  if (targets.size() == 1 && targets[0] == "all-linear") return lora_target_names();
  for (auto& t : targets)
    if (std::find(lora_target_names().begin(), lora_target_names().end(), t) == lora_target_names().end())
      fail("LoRA target '", t,
           "' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (or all-linear)");
  return targets;
}

const std::string* match_pattern(const std::vector<std::string>& keys, const std::string& module_name) {
  for (auto& k : keys)
    if (std::regex_match(module_name, std::regex("(.*\\.)?(" + k + ")"))) return &k;
  return nullptr;
}

static std::string short_name(const std::string& module) { return module.substr(module.rfind('.') + 1); }

template <class V>
static std::vector<std::string> keys_of(const std::map<std::string, V>& m) {
  std::vector<std::string> k;
  for (auto& [a, b] : m) k.push_back(a);
  return k;
}

int64_t module_rank(const LoraSettings& s, const std::string& module) {
  auto keys = keys_of(s.rank_pattern);  // match_pattern points into it
  auto* k = match_pattern(keys, module);
  return k ? s.rank_pattern.at(*k) : s.r;
}

double module_scale(const LoraSettings& s, const std::string& module, int64_t r) {
  auto keys = keys_of(s.alpha_pattern);
  auto* k = match_pattern(keys, module);
  const double alpha = k ? s.alpha_pattern.at(*k) : s.alpha;
  return s.rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
}

std::vector<std::string> inject_lora(CausalLMImpl& model, const LoraSettings& cfg, uint64_t seed,
                                     torch::ScalarType dtype) {
  auto targets = expand_lora_targets(cfg.targets);
  std::set<std::string> want(targets.begin(), targets.end());
  torch::manual_seed(seed);  // the Kaiming draws of lora_A
  std::vector<std::string> done;
  for (auto& [name, lin] : model.linears()) {
    if (name == "lm_head" || !want.count(short_name(name))) continue;
    const int64_t r = module_rank(cfg, name);
    lin->attach_lora(r, module_scale(cfg, name, r), cfg.dropout, dtype);
    done.push_back(name);
  }
  if (done.empty()) fail("LoRA: no module of the model matches the targets");
  return done;
}

nlohmann::json AdapterInfo::to_peft_config() const {
  nlohmann::json rp = nlohmann::json::object(), ap = nlohmann::json::object();
  for (auto& [k, v] : lora.rank_pattern) rp[k] = v;
  for (auto& [k, v] : lora.alpha_pattern) ap[k] = v;
  nlohmann::json mts = nullptr;
  if (!modules_to_save.empty()) {
    mts = nlohmann::json::array();
    for (auto& p : modules_to_save) {
      auto mod = p.size() > 7 && p.substr(p.size() - 7) == ".weight" ? p.substr(0, p.size() - 7) : p;
      mts.push_back(mod);
    }
  }
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"base_model_name_or_path", base_model},
          {"r", lora.r},
          {"lora_alpha", lora.alpha},
          {"lora_dropout", lora.dropout},
          {"target_modules", lora.targets},
          {"bias", "none"},
          {"use_rslora", lora.rslora},
          {"use_dora", false},
          {"init_lora_weights", true},
          {"fan_in_fan_out", false},
          {"modules_to_save", mts},
          {"rank_pattern", rp},
          {"alpha_pattern", ap},
          {"inference_mode", true},
          {"revision", nullptr},
          {"layers_to_transform", nullptr},
          {"layers_pattern", nullptr}};
}

void save_peft_adapter(CausalLMImpl& model, const AdapterInfo& info, const std::string& dir,
                       const std::map<std::string, at::Tensor>& extra) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, lin] : model.linears()) {
    if (!lin->has_lora()) continue;
    tensors.emplace_back(kPeftPrefix + name + ".lora_A.weight", lin->lora_A->weight.detach().to(torch::kFloat32));
    tensors.emplace_back(kPeftPrefix + name + ".lora_B.weight", lin->lora_B->weight.detach().to(torch::kFloat32));
  }
  for (auto& [name, t] : extra) tensors.emplace_back(kPeftPrefix + name, t.detach().to(torch::kFloat32));
  StagingDir out(dir, Existing::Replace);  // a checkpoint's or a run's adapter folder is ours to replace
  write_safetensors(out.file("adapter_model.safetensors"), tensors);
  write_file_atomic(out.file("adapter_config.json"), info.to_peft_config().dump(2) + "\n");
  out.commit();
}

// Module name → LoraLinear, for attaching loaded weights.
static std::map<std::string, LoraLinear> linear_map(CausalLMImpl& model) {
  std::map<std::string, LoraLinear> m;
  for (auto& [name, lin] : model.linears()) m.emplace(name, lin);
  return m;
}

// Attaches adapters from (module → {A, B}) with scale parameters, checking shapes against the model.
static void attach_loaded(CausalLMImpl& model, const std::map<std::string, std::pair<at::Tensor, at::Tensor>>& ab,
                          const AdapterInfo& info, const std::string& where) {
  auto lins = linear_map(model);
  torch::NoGradGuard ng;
  for (auto& [module, pair] : ab) {
    auto& [A, B] = pair;
    auto it = lins.find(module);
    if (it == lins.end()) fail(where, ": adapter tensor for module '", module, "' which the base model does not have");
    if (!A.defined() || !B.defined()) fail(where, ": module '", module, "' has only one of lora_A / lora_B");
    auto& lin = it->second;
    int64_t r = A.size(0);
    if (A.dim() != 2 || B.dim() != 2 || A.size(1) != lin->in_features || B.size(0) != lin->out_features ||
        B.size(1) != r)
      fail(where, ": LoRA shapes of '", module, "' do not fit the base layer [", lin->out_features, ", ",
           lin->in_features, "] (is this adapter for another base model?)");
    lin->attach_lora(r, module_scale(info.lora, module, r), info.lora.dropout, torch::kFloat32);
    lin->lora_A->weight.copy_(A);
    lin->lora_B->weight.copy_(B);
  }
}

AdapterInfo read_peft_config(const std::string& dir) {
  std::string cfg_path = dir + "/adapter_config.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    fail(cfg_path, ": not valid JSON (", e.what(), ")");
  }
  auto where = cfg_path;
  auto get = [&](const char* key, auto dflt) {
    using T = decltype(dflt);
    if (!j.contains(key) || j[key].is_null()) return dflt;
    try {
      return j[key].template get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(where, ": key '", key, "' has the wrong type (", j[key].dump(), ")");
    }
  };
  if (get("peft_type", std::string("LORA")) != "LORA")
    fail(where, ": peft_type '", j["peft_type"].get<std::string>(), "' is not supported (only LORA)");
  if (get("use_dora", false)) fail(where, ": use_dora is true; DoRA adapters are not supported");
  if (get("bias", std::string("none")) != "none")
    fail(where, ": bias '", j["bias"].dump(), "' is not supported (only \"none\")");
  if (get("fan_in_fan_out", false))
    fail(where, ": fan_in_fan_out is true (GPT-2 Conv1D layout); not supported for Llama/Mistral");
  static const std::set<std::string> known = {"peft_type",
                                              "task_type",
                                              "base_model_name_or_path",
                                              "r",
                                              "lora_alpha",
                                              "lora_dropout",
                                              "target_modules",
                                              "bias",
                                              "use_rslora",
                                              "use_dora",
                                              "init_lora_weights",
                                              "fan_in_fan_out",
                                              "modules_to_save",
                                              "rank_pattern",
                                              "alpha_pattern",
                                              "inference_mode",
                                              "revision",
                                              "layers_to_transform",
                                              "layers_pattern",
                                              "auto_mapping"};
  for (auto& [k, v] : j.items())
    if (!known.count(k)) std::cerr << "note: " << where << ": ignoring key '" << k << "'\n";
  AdapterInfo info;
  LoraSettings& l = info.lora;
  l.r = get("r", int64_t(8));
  l.alpha = get("lora_alpha", double(8));
  l.dropout = get("lora_dropout", 0.0);
  l.rslora = get("use_rslora", false);
  info.base_model = get("base_model_name_or_path", std::string());
  l.targets.clear();
  if (j.contains("target_modules") && j["target_modules"].is_array())
    l.targets = j["target_modules"].get<std::vector<std::string>>();
  else if (j.contains("target_modules") && j["target_modules"].is_string())
    l.targets = {j["target_modules"].get<std::string>()};
  l.rank_pattern = get("rank_pattern", std::map<std::string, int64_t>());
  l.alpha_pattern = get("alpha_pattern", std::map<std::string, double>());
  return info;
}

AdapterInfo load_peft_adapter(CausalLMImpl& model, const std::string& dir) {
  AdapterInfo info = read_peft_config(dir);
  std::string wpath = dir + "/adapter_model.safetensors";
  if (!fs::exists(wpath))
    fail(dir,
         ": no adapter_model.safetensors (adapter_model.bin pickles are not read; re-save with safe_serialization)");
  SafetensorsFile f(wpath);
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> ab;
  auto params = model.named_parameters();
  torch::NoGradGuard ng;
  for (auto& t : f.tensors()) {
    std::string n = t.name;
    if (n.rfind(kPeftPrefix, 0) != 0) fail(wpath, ": tensor '", n, "' does not start with '", kPeftPrefix, "'");
    n = n.substr(kPeftPrefix.size());
    // adapters saved with an adapter name inside ("...lora_A.default.weight") load too
    for (auto tag : {".lora_A.", ".lora_B."}) {
      auto pos = n.find(tag);
      if (pos == std::string::npos) continue;
      std::string module = n.substr(0, pos);
      bool isA = std::string(tag) == ".lora_A.";
      (isA ? ab[module].first : ab[module].second) = f.load(t.name, torch::kFloat32);
      n.clear();
      break;
    }
    if (n.empty()) continue;
    // a fully trained module (modules_to_save): copied over the base weight
    auto* p = params.find(n);
    if (!p) fail(wpath, ": tensor '", t.name, "' names no LoRA weight and no parameter of the model");
    auto v = f.load(t.name);
    if (v.sizes() != p->sizes()) fail(wpath, ": tensor '", t.name, "' has the wrong shape for the base model");
    p->set_data(v.to(torch::kFloat32).to(p->device()));
    info.modules_to_save.push_back(n);
  }
  attach_loaded(model, ab, info, wpath);
  return info;
}

AdapterInfo load_mistral_lora(CausalLMImpl& model, const std::string& path) {
  SafetensorsFile f(path);
  const auto& c = model.config();
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> ab;
  std::set<std::string> shorts;
  for (auto& t : f.tensors()) {
    auto pos = t.name.find(".lora_");
    if (pos == std::string::npos)
      fail(path, ": tensor '", t.name, "' is not a LoRA weight (expected '<module>.lora_A.weight')");
    std::string hf = mistral_to_hf_name(t.name.substr(0, pos) + ".weight");
    std::string module = hf.substr(0, hf.size() - 7);
    bool isA = t.name.compare(pos, 8, ".lora_A.") == 0;
    auto w = f.load(t.name, torch::kFloat32);
    // lora_B of wq/wk produces rows in the interleaved RoPE order: permute like the base weight.
    if (!isA && module.size() > 7 && module.substr(module.size() - 7) == ".q_proj")
      w = permute_interleaved_to_rotate_half(w, c.num_attention_heads);
    if (!isA && module.size() > 7 && module.substr(module.size() - 7) == ".k_proj")
      w = permute_interleaved_to_rotate_half(w, c.num_key_value_heads);
    (isA ? ab[module].first : ab[module].second) = w;
    shorts.insert(short_name(module));
  }
  if (ab.empty()) fail(path, ": no LoRA tensors found");
  AdapterInfo info;
  info.lora.r = ab.begin()->second.first.defined() ? ab.begin()->second.first.size(0) : 0;
  info.lora.alpha = 2.0 * double(info.lora.r);  // mistral-finetune's fixed scale 2.0
  info.lora.targets.assign(shorts.begin(), shorts.end());
  for (auto& [m, p] : ab)
    if (p.first.defined() && p.first.size(0) != info.lora.r)
      fail(path, ": LoRA ranks differ between modules; not a mistral-finetune file");
  attach_loaded(model, ab, info, path);
  return info;
}

AdapterInfo load_adapter(CausalLMImpl& model, const std::string& path) {
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "adapter_config.json")) return load_peft_adapter(model, path);
    if (fs::exists(fs::path(path) / "lora.safetensors")) return load_mistral_lora(model, path + "/lora.safetensors");
    fail(path,
         ": neither a PEFT adapter folder (adapter_config.json) nor a mistral-finetune folder (lora.safetensors)");
  }
  if (fs::exists(path) && path.size() > 12 && path.substr(path.size() - 12) == ".safetensors")
    return load_mistral_lora(model, path);
  fail(path, ": no such adapter (give a PEFT folder or a mistral-finetune lora.safetensors)");
}

}  // namespace affinage
