// Dumps our logits for given token ids, with and without a PEFT adapter, to a safetensors file: the C++ half
// of the Hugging Face parity check (bench/peft_compare.py loads the same folder + adapter with transformers +
// peft and compares). Tensors: "input_ids" [1, T] int64, "logits" [1, T, V] fp32 (base + adapter),
// "logits_base" [1, T, V] fp32 (adapter disabled).
// Usage: build/bench_logits MODEL_DIR ADAPTER_DIR OUT.safetensors [ids=1,2,3,...] [dtype=f32] [device=cpu]
#include <torch/torch.h>
#include <iostream>
#include <sstream>
#include "base/error.h"
#include "base/runtime.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/loader.h"

using namespace affinage;

int main(int argc, char** argv) {
  affinage::prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
  try {
    if (argc < 4)
      fail("usage: bench_logits MODEL_DIR ADAPTER_DIR OUT.safetensors [ids=1,2,...] [dtype=f32] [device=cpu]");
    std::string ids_s = "1,403,407,261,378,425,274,268,363,275,379,267,301,270,313,386,262,1,272,265,404,278,260,271";
    std::string dtype = "f32", device = "cpu";
    for (int i = 4; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("ids=", 0) == 0) ids_s = a.substr(4);
      else if (a.rfind("dtype=", 0) == 0) dtype = a.substr(6);
      else if (a.rfind("device=", 0) == 0) device = a.substr(7);
      else fail("unknown argument '", a, "'");
    }
    std::vector<int64_t> ids;
    std::stringstream ss(ids_s);
    for (std::string t; std::getline(ss, t, ',');) ids.push_back(std::stoll(t));
    set_threads(0);
    auto dev = pick_device(device);
    auto m = load_model(argv[1], parse_dtype(dtype), dev);
    load_adapter(*m, argv[2]);
    m->eval();
    torch::NoGradGuard ng;
    auto x = torch::tensor(ids, torch::kLong).unsqueeze(0).to(dev);
    auto with = m->forward(x).to(torch::kFloat32);
    m->set_adapters_enabled(false);
    auto base = m->forward(x).to(torch::kFloat32);
    write_safetensors(argv[3], {{"input_ids", x}, {"logits", with}, {"logits_base", base}});
    std::printf("bench_logits: %zu tokens, vocab %ld, max |adapter effect| %.4g -> %s\n", ids.size(),
                (long)with.size(-1), (with - base).abs().max().item<double>(), argv[3]);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_logits: " << e.what() << "\n";
    return 1;
  }
}
