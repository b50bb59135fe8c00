// What every training stage starts with: threads and device from the recipe, the base model in its dtype,
// the tokenizer, LoRA adapters injected (or continued from a PEFT folder), fully trained modules in fp32,
// and the list of trainable parameters. Also the adapter artifact writer the loop calls.
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "config/recipe.h"
#include "lora/adapter.h"
#include "model/model.h"
#include "text/tokenizer.h"
#include "train/optim.h"

namespace affinage {

struct PreparedModel {
  CausalLM model{nullptr};
  std::shared_ptr<Tokenizer> tokenizer;
  AdapterInfo adapter;  // what save_artifacts writes as adapter_config.json
  std::vector<NamedParam> trainable;
  c10::Device device = c10::Device("cpu");
};

// Finds the tokenizer of a model folder (tokenizer.model, or tokenizer.model.v3 / .v1 in Mistral folders).
std::string find_tokenizer(const std::string& model_dir);

PreparedModel prepare_model(const Recipe& r);
// Writes the PEFT adapter folder (with fully trained modules as modules_to_save) into `dir`.
void save_adapter_artifacts(PreparedModel& pm, const std::string& dir);

}  // namespace affinage
