// Loading a model for the inference commands (generate, eval, data synth): threads, device, the model in its
// checkpoint dtype (or the one asked for), its tokenizer, an optional adapter, eval mode.
#pragma once
#include <memory>
#include <string>
#include "model/model.h"
#include "text/tokenizer.h"

namespace affinage {

struct InferenceOptions {
  std::string model, adapter, device = "auto", dtype;
  int threads = 0;
};

struct LoadedModel {
  CausalLM model{nullptr};
  std::shared_ptr<Tokenizer> tokenizer;
};

LoadedModel load_for_inference(const InferenceOptions& o);

}  // namespace affinage
