// Loading a model for inference (see app/inference.h).
#include "app/inference.h"
#include "base/runtime.h"
#include "lora/adapter.h"
#include "model/loader.h"
#include "train/prepare.h"

namespace affinage {

LoadedModel load_for_inference(const InferenceOptions& o) {
  set_threads(o.threads);
  LoadedModel lm;
  std::optional<c10::ScalarType> dt;
  if (!o.dtype.empty()) dt = parse_dtype(o.dtype);
  lm.tokenizer = Tokenizer::load(find_tokenizer(o.model));
  lm.model = load_model(o.model, dt, pick_device(o.device));
  set_blas_threads_for_width(lm.model->config().hidden_size);
  if (!o.adapter.empty()) load_adapter(*lm.model, o.adapter);
  lm.model->eval();
  return lm;
}

}  // namespace affinage
