// Options shared by the inference commands (generate, eval, data synth): model folder, adapter, device, dtype,
// threads (loading itself is app/inference.h).
#pragma once
#include <boost/program_options.hpp>
#include "app/inference.h"

namespace affinage::cli {

void add_inference_options(boost::program_options::options_description& opts, InferenceOptions& o);

}  // namespace affinage::cli
