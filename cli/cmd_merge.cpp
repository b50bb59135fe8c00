// affinage merge: fold one or more PEFT LoRA adapters into a base model and write a new model folder.
#include <cmath>
#include <iostream>
#include "base/error.h"
#include "base/runtime.h"
#include "cli/commands.h"
#include "lora/merge.h"

namespace po = boost::program_options;

namespace affinage::cli {

// "DIR" or "DIR:WEIGHT" (the part after the last ':' taken as the weight only when it is a number).
static AdapterInput parse_adapter_arg(const std::string& s) {
  AdapterInput a{s, 1.0};
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return a;
  std::string w = s.substr(colon + 1);
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(w, &used);
  } catch (...) {
    return a;
  }
  if (used != w.size()) return a;
  if (!std::isfinite(v)) fail("--adapter '", s, "': the weight must be a finite number");
  return {s.substr(0, colon), v};
}

int cmd_merge(const Args& args) {
  std::string model, out, method = "linear", dtype, shard = "5GB", format = "hf";
  std::vector<std::string> adapters;
  double density = -1;
  uint64_t seed = 0;
  int threads = 0;
  po::options_description opts("merge options");
  opts.add_options()("model", po::value(&model)->required(),
                     "base model folder (Hugging Face or Mistral consolidated)")(
      "adapter", po::value(&adapters)->required()->composing(),
      "PEFT adapter folder, optionally DIR:WEIGHT (default weight 1); repeat for several adapters")(
      "out", po::value(&out)->required(), "output folder (must not exist, or be empty)")(
      "method", po::value(&method)->default_value("linear"), "linear | ties | dare_linear | dare_ties")(
      "density", po::value(&density), "share of each delta kept, in (0, 1]; required by ties, dare_linear, dare_ties")(
      "seed", po::value(&seed)->default_value(0), "seed of DARE's random drops")(
      "dtype", po::value(&dtype), "bf16 | f16 | f32 (default: the base model's)")(
      "shard-size", po::value(&shard)->default_value("5GB"),
      "max bytes per safetensors shard (hf format): 5GB, 500MB, 2GiB")(
      "format", po::value(&format)->default_value("hf"),
      "hf (config.json + sharded safetensors) | mistral (consolidated)")(
      "threads", po::value(&threads)->default_value(0), "CPU threads (0 = all cores)");
  po::variables_map vm;
  const std::string usage =
      "usage: affinage merge --model DIR --adapter DIR[:WEIGHT] [--adapter DIR2[:WEIGHT2] ...] --out DIR\n"
      "                      [--method linear|ties|dare_linear|dare_ties] [--density D] [--seed S]\n"
      "                      [--dtype bf16|f16|f32] [--shard-size 5GB] [--format hf|mistral]\n\n"
      "W' = W + combine(w_i * scale_i * B_i @ A_i), computed in fp32 and cast to --dtype; one tensor at a time.";
  if (parse_args(args, usage, opts, vm)) return 0;

  MergeOptions o;
  o.model_dir = model;
  o.out_dir = out;
  for (auto& a : adapters) o.adapters.push_back(parse_adapter_arg(a));
  try {
    o.combine.method = parse_merge_method(method);
  } catch (const Error& e) {
    fail("--method: ", e.what());
  }
  bool uses_density = merge_method_uses_density(o.combine.method);
  if (uses_density && !vm.count("density"))
    fail("--method ", method, " needs --density (share of each delta kept, e.g. 0.5)");
  if (!uses_density && vm.count("density"))
    fail("--density applies to ties, dare_linear and dare_ties, not to ", method);
  if (uses_density && !(density > 0 && density <= 1)) fail("--density must be in (0, 1], got ", density);
  if (uses_density) o.combine.density = density;
  o.combine.seed = seed;
  if (!dtype.empty()) {
    try {
      o.dtype = parse_dtype(dtype);
    } catch (const Error& e) {
      fail("--dtype: ", e.what());
    }
  }
  o.shard_bytes = parse_byte_size(shard, "--shard-size");
  if (format != "hf" && format != "mistral") fail("--format '", format, "' is not hf or mistral");
  o.format = format;
  set_threads(threads);
  size_t last_pct = 0;
  o.progress = [&](size_t done, size_t total) {
    size_t pct = done * 100 / total;
    if (pct / 10 != last_pct / 10 || done == total)
      std::cerr << "\rmerging: " << done << "/" << total << " tensors" << std::flush;
    last_pct = pct;
  };
  auto s = merge_adapters(o);
  std::cerr << "\n";
  std::cout << "merged " << o.adapters.size() << " adapter(s) with " << merge_method_name(o.combine.method) << " into "
            << s.tensors << " tensors (" << s.lora_modules << " changed by LoRA, " << s.replaced
            << " replaced by modules_to_save), " << dtype_short_name(s.dtype) << ", " << double(s.bytes) / 1e6
            << " MB\nwritten to " << out << ":";
  for (auto& f : s.files) std::cout << " " << f;
  std::cout << "\n";
  return 0;
}

}  // namespace affinage::cli
