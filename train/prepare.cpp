// Model preparation shared by every training stage (see train/prepare.h).
#include "train/prepare.h"
#include <filesystem>
#include <set>
#include "base/error.h"
#include "base/runtime.h"
#include "model/loader.h"

namespace fs = std::filesystem;

namespace affinage {

std::string find_tokenizer(const std::string& model_dir) {
  for (auto name : {"tokenizer.model", "tokenizer.model.v3", "tokenizer.model.v1"}) {
    auto p = fs::path(model_dir) / name;
    if (fs::exists(p)) return p.string();
  }
  fail("model folder ", model_dir,
       ": no tokenizer.model (SentencePiece) found; copy the base model's tokenizer.model there");
}

PreparedModel prepare_model(const Recipe& r) {
  set_threads(static_cast<int>(r.threads));
  PreparedModel pm;
  pm.device = pick_device(r.device);
  pm.tokenizer = Tokenizer::load(find_tokenizer(r.model));
  pm.model = load_model(r.model, parse_dtype(r.dtype), pm.device);
  set_blas_threads_for_width(pm.model->config().hidden_size);
  auto& m = *pm.model;
  for (auto& p : m.parameters()) p.set_requires_grad(false);
  if (!r.lora.init_from.empty()) {
    pm.adapter = load_adapter(m, r.lora.init_from);
  } else if (r.lora.enabled) {
    inject_lora(m, r.lora, r.seed);
    pm.adapter.lora = r.lora;  // the settings part of the recipe's lora section
    pm.adapter.lora.targets = expand_lora_targets(r.lora.targets);
  }
  pm.adapter.base_model = r.model;
  // Trainable: every LoRA weight, and the parameters named by train.train_modules, whose base-dtype weight
  // is replaced by an fp32 master copy (layers cast it to the activations' dtype on the fly).
  std::set<std::string> unmatched(r.train.train_modules.begin(), r.train.train_modules.end());
  for (auto& p : m.named_parameters()) {
    const auto& name = p.key();
    bool lora = name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
    bool full = false;
    for (auto& frag : r.train.train_modules)
      if (!lora && name.find(frag) != std::string::npos) full = true, unmatched.erase(frag);
    if (!lora && !full) continue;
    if (full) {
      torch::NoGradGuard ng;
      p.value().set_data(p.value().to(torch::kFloat32));
      pm.adapter.modules_to_save.push_back(name);
    }
    p.value().set_requires_grad(true);
    pm.trainable.push_back({name, p.value(), wants_weight_decay(name, p.value())});
  }
  if (!unmatched.empty())
    fail("recipe ", r.source_path, ": train.train_modules entry '", *unmatched.begin(), "' matches no parameter");
  return pm;
}

void save_adapter_artifacts(PreparedModel& pm, const std::string& dir) {
  std::map<std::string, at::Tensor> extra;
  for (auto& name : pm.adapter.modules_to_save)
    for (auto& p : pm.trainable)
      if (p.name == name) extra[name] = p.param.detach();
  save_peft_adapter(*pm.model, pm.adapter, dir, extra);
}

}  // namespace affinage
