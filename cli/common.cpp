// Options shared by the inference commands (see cli/common.h).
#include "cli/common.h"

namespace po = boost::program_options;

namespace affinage::cli {

void add_inference_options(po::options_description& opts, InferenceOptions& o) {
  opts.add_options()("model", po::value(&o.model)->required(), "model folder (Hugging Face or Mistral consolidated)")(
      "adapter", po::value(&o.adapter), "LoRA adapter: PEFT folder or mistral-finetune lora.safetensors")(
      "device", po::value(&o.device)->default_value("auto"), "auto | cpu | cuda | cuda:N")(
      "dtype", po::value(&o.dtype), "bf16 | f16 | f32 (default: the checkpoint's)")(
      "threads", po::value(&o.threads)->default_value(0), "CPU threads (0 = all cores)");
}

}  // namespace affinage::cli
