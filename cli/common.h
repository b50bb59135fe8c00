// Options and loading shared by the inference commands (generate, eval): model folder, adapter, device,
// dtype, threads.
#pragma once
#include <memory>
#include <string>
#include <boost/program_options.hpp>
#include "core/model.h"
#include "core/tokenizer.h"

namespace affinage::cli {

struct InferenceOptions {
  std::string model, adapter, device = "auto", dtype;
  int threads = 0;
};
void add_inference_options(boost::program_options::options_description& opts, InferenceOptions& o);

struct LoadedModel {
  CausalLM model{nullptr};
  std::shared_ptr<Tokenizer> tokenizer;
};
// Threads, device, model (checkpoint dtype unless --dtype), tokenizer, optional adapter; eval mode.
LoadedModel load_for_inference(const InferenceOptions& o);

}  // namespace affinage::cli
