// Builds a CausalLM from a model folder, one tensor at a time (see model/loader.h).
#include "model/loader.h"
#include <set>
#include "base/error.h"
#include "base/runtime.h"
#include "io/model_folder.h"

namespace affinage {

CausalLM load_model(const std::string& dir, std::optional<c10::ScalarType> dtype, c10::Device device) {
  WeightSource src(dir);
  const ModelConfig& cfg = src.config();
  auto dt = dtype ? *dtype : parse_dtype(cfg.torch_dtype);
  CausalLM m(cfg, torch::TensorOptions().dtype(dt).device(device));
  torch::NoGradGuard ng;
  std::set<std::string> used;
  for (auto& p : m->named_parameters()) {
    const std::string& name = p.key();
    if (!src.has(name))
      fail("model folder ", dir, ": tensor '", name, "' is missing from the checkpoint (", src.format(),
           " format); is this a complete ", cfg.architecture, " checkpoint?");
    auto t = src.load(name, dt);
    if (t.sizes() != p.value().sizes()) {
      std::ostringstream os;
      os << t.sizes() << " but config.json implies " << p.value().sizes();
      fail("model folder ", dir, ": tensor '", name, "' has shape ", os.str());
    }
    p.value().copy_(t);
    used.insert(name);
  }
  std::vector<std::string> unknown;
  for (auto& n : src.names()) {
    if (used.count(n) || n.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (n == "lm_head.weight" && cfg.tie_word_embeddings) continue;
    unknown.push_back(n);
  }
  if (!unknown.empty())
    fail("model folder ", dir, ": ", unknown.size(), " tensor(s) this architecture does not have, first '", unknown[0],
         "' (attention/MLP biases and other variants are not supported)");
  m->eval();
  return m;
}

}  // namespace affinage
