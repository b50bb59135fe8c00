// Merging PEFT adapters into base weights, one tensor at a time (see lora/merge.h).
#include "lora/merge.h"
#include <malloc.h>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include "base/error.h"
#include "base/files.h"
#include "base/runtime.h"
#include "base/strings.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "lora/adapter.h"

namespace fs = std::filesystem;

namespace affinage {

namespace {

const std::string kPeftPrefix = "base_model.model.";

// One PEFT folder, indexed by the base tensor each of its tensors changes. Tensors are read when needed.
struct Adapter {
  std::string dir, wpath;
  double weight = 1.0;
  AdapterInfo info;
  std::unique_ptr<SafetensorsFile> file;
  struct Lora {
    std::string a, b;
    double scale = 0;
  };
  std::map<std::string, Lora> lora;         // "<module>.weight" -> its lora_A / lora_B tensor names, scale
  std::map<std::string, std::string> full;  // base tensor name -> stored name (modules_to_save)
};

Adapter open_adapter(const AdapterInput& in, const WeightSource& base) {
  Adapter ad;
  ad.dir = in.dir;
  ad.weight = in.weight;
  std::error_code ec;
  if (!fs::is_directory(in.dir, ec)) fail("adapter folder '", in.dir, "' does not exist or is not a folder");
  if (!fs::exists(fs::path(in.dir) / "adapter_config.json")) {
    if (fs::exists(fs::path(in.dir) / "lora.safetensors"))
      fail("'", in.dir, "' is a mistral-finetune adapter (lora.safetensors); merge reads PEFT folders only");
    fail("'", in.dir, "' has no adapter_config.json; give a PEFT adapter folder (e.g. a run's adapter/)");
  }
  ad.info = read_peft_config(in.dir);
  ad.wpath = in.dir + "/adapter_model.safetensors";
  if (!fs::exists(ad.wpath))
    fail(in.dir,
         ": no adapter_model.safetensors (adapter_model.bin pickles are not read; re-save with safe_serialization)");
  ad.file = std::make_unique<SafetensorsFile>(ad.wpath);
  std::map<std::string, std::pair<const TensorInfo*, const TensorInfo*>> ab;  // module -> (A, B)
  for (auto& t : ad.file->tensors()) {
    if (t.name.rfind(kPeftPrefix, 0) != 0)
      fail(ad.wpath, ": tensor '", t.name, "' does not start with '", kPeftPrefix, "'");
    std::string n = t.name.substr(kPeftPrefix.size());
    if (n.find(".lora_embedding_") != std::string::npos || n.find(".lora_magnitude_vector") != std::string::npos)
      fail(ad.wpath, ": tensor '", t.name, "' is an embedding-LoRA or DoRA weight, which merge does not support");
    // adapters saved with an adapter name inside ("...lora_A.default.weight") merge too
    auto pa = n.find(".lora_A."), pb = n.find(".lora_B.");
    if (pa != std::string::npos) {
      ab[n.substr(0, pa)].first = &t;
      continue;
    }
    if (pb != std::string::npos) {
      ab[n.substr(0, pb)].second = &t;
      continue;
    }
    if (!base.has(n))
      fail(ad.wpath, ": tensor '", t.name, "' (modules_to_save) replaces '", n, "', which the base model in '",
           base.dir(), "' does not have (tied embeddings, or an adapter for another model?)");
    if (t.shape != base.shape(n))
      fail(ad.wpath, ": tensor '", t.name, "' has another shape than '", n, "' of the base model");
    ad.full[n] = t.name;
  }
  for (auto& [module, p] : ab) {
    if (!p.first || !p.second) fail(ad.wpath, ": module '", module, "' has only one of lora_A / lora_B");
    const std::string target = module + ".weight";
    if (!base.has(target))
      fail(ad.wpath, ": LoRA weights for module '", module, "', but the base model in '", base.dir(),
           "' has no tensor '", target, "' (is this adapter for another base model?)");
    auto w = base.shape(target);
    auto& A = p.first->shape;
    auto& B = p.second->shape;
    if (w.size() != 2 || A.size() != 2 || B.size() != 2 || A[1] != w[1] || B[0] != w[0] || B[1] != A[0])
      fail(ad.wpath, ": LoRA shapes of '", module, "' (A [", A.size() == 2 ? A[0] : -1, ", ", A.size() == 2 ? A[1] : -1,
           "]) do not fit the base tensor '", target, "' [", w.size() == 2 ? w[0] : -1, ", ", w.size() == 2 ? w[1] : -1,
           "] (is this adapter for another base model?)");
    const int64_t want_r = module_rank(ad.info.lora, module);
    if (A[0] != want_r)
      fail(ad.wpath, ": module '", module, "' has rank ", A[0], " but adapter_config.json says ", want_r,
           want_r != ad.info.lora.r ? " (rank_pattern)" : " (r)", "; fix the config so PEFT can load it too");
    ad.lora[target] = {p.first->name, p.second->name, module_scale(ad.info.lora, module, A[0])};
  }
  if (ad.lora.empty() && ad.full.empty()) fail(ad.wpath, ": no LoRA or modules_to_save tensors");
  return ad;
}

bool is_float_dtype(const std::string& st) { return st == "F32" || st == "F16" || st == "BF16" || st == "F64"; }

// A safetensors file written front to back: the header (every name, shape, dtype) first, then each tensor's
// bytes in header order, so only one tensor is in memory at a time. Lives in a staging folder, so a
// half-written file never appears under a final name.
class StreamingSafetensors {
 public:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    at::ScalarType dtype;
  };
  StreamingSafetensors(const std::string& path, std::vector<Entry> entries)
      : path_(path), entries_(std::move(entries)) {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    h["__metadata__"] = {{"format", "pt"}};
    uint64_t off = 0;
    for (auto& e : entries_) {
      uint64_t n = at::elementSize(e.dtype);
      for (auto d : e.shape) n *= uint64_t(d);
      h[e.name] = {{"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {off, off + n}}};
      off += n;
    }
    std::string s = h.dump();
    s.append((8 - s.size() % 8) % 8, ' ');
    f_ = std::fopen(path.c_str(), "wb");
    if (!f_) fail("cannot create '", path, "'");
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(s.size()) >> (8 * i));
    write(len, 8);
    write(s.data(), s.size());
  }
  ~StreamingSafetensors() {
    if (f_) std::fclose(f_);
  }
  void put(const std::string& name, const at::Tensor& t) {
    if (next_ >= entries_.size() || entries_[next_].name != name || t.scalar_type() != entries_[next_].dtype ||
        t.sizes().vec() != entries_[next_].shape)
      fail(path_, ": internal: tensor '", name, "' out of the planned order, shape or dtype");
    auto c = t.contiguous();
    write(c.data_ptr(), size_t(c.numel()) * c.element_size());
    ++next_;
  }
  void finish() {
    if (next_ != entries_.size()) fail(path_, ": internal: ", entries_.size() - next_, " planned tensors not written");
    if (std::fflush(f_) != 0 || ::fsync(fileno(f_)) != 0) fail("cannot flush '", path_, "' (disk full?)");
    std::fclose(f_);
    f_ = nullptr;
  }

 private:
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) fail("cannot write '", path_, "' (disk full?)");
  }
  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  FILE* f_ = nullptr;
};

void copy_if_present(const fs::path& from_dir, const std::string& name, const StagingDir& out,
                     const std::string& as = "") {
  fs::path p = from_dir / name;
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) copy_file_sha256(p.string(), out.file(as.empty() ? name : as));
}

}  // namespace

uint64_t parse_byte_size(const std::string& s, const std::string& what) {
  static const std::vector<std::pair<std::string, double>> units = {
      {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0},
      {"kb", 1e3},     {"mb", 1e6},        {"gb", 1e9},           {"tb", 1e12},
      {"b", 1.0}};
  const std::string low = lower(s);
  std::string num = s;
  double mult = 1.0;
  for (auto& [u, m] : units)
    if (ends_with(low, u)) {
      num = s.substr(0, s.size() - u.size());
      mult = m;
      break;
    }
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(num, &used);
  } catch (...) {}
  if (num.empty() || used != num.size() || !(v * mult >= 1.0) || !std::isfinite(v))
    fail(what, " '", s, "' is not a size; write e.g. 5GB, 500MB, 2GiB or a byte count");
  return static_cast<uint64_t>(v * mult);
}

MergeSummary merge_adapters(const MergeOptions& o) {
  if (o.adapters.empty()) fail("merge: give at least one adapter");
  if (o.format != "hf" && o.format != "mistral") fail("merge: format '", o.format, "' is not hf or mistral");
  if (merge_method_uses_density(o.combine.method) && !(o.combine.density > 0.0 && o.combine.density <= 1.0))
    fail("merge: density must be in (0, 1] for ", merge_method_name(o.combine.method), ", got ", o.combine.density);
#ifdef __GLIBC__
  // glibc raises its mmap threshold as big blocks are freed (up to 32 MB), after which tensor-sized blocks
  // come from the heap and stay there: a merge of a 234 MB model then grows by ~170 MB instead of ~50 MB.
  // A fixed threshold (process-wide) gives every block over 1 MB back to the system when it is freed.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  WeightSource src(o.model_dir);
  const ModelConfig& cfg = src.config();
  std::vector<Adapter> ads;
  for (auto& in : o.adapters) ads.push_back(open_adapter(in, src));
  std::vector<double> weights;
  for (auto& a : ads) weights.push_back(a.weight);
  for (auto& name : src.names()) {
    int replacing = 0;
    for (auto& a : ads) replacing += int(a.full.count(name));
    if (replacing > 1) fail("merge: several adapters replace '", name, "' (modules_to_save); merge them one at a time");
  }
  const at::ScalarType out_dt = o.dtype ? *o.dtype : parse_dtype(cfg.torch_dtype);
  const bool mistral = o.format == "mistral";

  // What gets written, in order: (HF name in the source, name in the output).
  std::vector<std::pair<std::string, std::string>> plan;
  for (auto& name : src.names()) {
    if (!mistral) {
      plan.emplace_back(name, name);
      continue;
    }
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // a buffer, not a weight
    if (name == "lm_head.weight" && cfg.tie_word_embeddings) continue;    // "output" is written from the embedding
    plan.emplace_back(name, hf_to_mistral_name(name));
    if (name == "model.embed_tokens.weight" && cfg.tie_word_embeddings)
      plan.emplace_back(name, "output.weight");  // params.json cannot say "tied": store the head
  }

  StagingDir out(o.out_dir);
  std::unique_ptr<ShardedWriter> hf;
  std::unique_ptr<StreamingSafetensors> cons;
  auto out_dtype_of = [&](const std::string& name) {
    return is_float_dtype(src.dtype_name(name)) ? out_dt : scalar_type_from_safetensors(src.dtype_name(name), name);
  };
  if (mistral) {
    std::vector<StreamingSafetensors::Entry> entries;
    for (auto& [from, to] : plan) entries.push_back({to, src.shape(from), out_dtype_of(from)});
    cons = std::make_unique<StreamingSafetensors>(out.file("consolidated.safetensors"), std::move(entries));
  } else {
    hf = std::make_unique<ShardedWriter>(out.path(), o.shard_bytes);
  }

  MergeSummary sum;
  sum.dtype = out_dt;
  torch::NoGradGuard ng;
  at::Tensor last;  // kept one step only when the next entry writes the same tensor again (tied head)
  for (size_t i = 0; i < plan.size(); ++i) {
    const auto& [name, out_name] = plan[i];
    bool same_as_previous = i > 0 && plan[i - 1].first == name;
    at::Tensor w;
    if (same_as_previous) {
      w = last;
    } else {
      bool floating = is_float_dtype(src.dtype_name(name));
      std::vector<at::Tensor> deltas(ads.size());
      bool any = false;
      for (size_t k = 0; k < ads.size(); ++k) {
        auto it = ads[k].lora.find(name);
        if (it == ads[k].lora.end()) continue;
        auto A = ads[k].file->load(it->second.a, at::kFloat), B = ads[k].file->load(it->second.b, at::kFloat);
        deltas[k] = at::matmul(B, A) * it->second.scale;
        any = true;
      }
      std::optional<at::ScalarType> read_dt;
      if (floating) read_dt = any ? at::kFloat : out_dt;
      const Adapter* repl = nullptr;
      for (auto& a : ads)
        if (a.full.count(name)) repl = &a;
      if (repl) {
        w = repl->file->load(repl->full.at(name), read_dt);
        repl->file->release(repl->full.at(name));
        ++sum.replaced;
      } else {
        w = src.load(name, read_dt);
        src.release(name);
      }
      if (any) {
        w.add_(combine_deltas(deltas, weights, o.combine, name));
        w = w.to(out_dt);
        ++sum.lora_modules;
      }
    }
    last = i + 1 < plan.size() && plan[i + 1].first == name ? w : at::Tensor();
    if (mistral) {
      bool q = name.find(".self_attn.q_proj.") != std::string::npos,
           k = name.find(".self_attn.k_proj.") != std::string::npos;
      at::Tensor m = w;
      if (q || k) m = permute_rotate_half_to_interleaved(w, q ? cfg.num_attention_heads : cfg.num_key_value_heads);
      cons->put(out_name, m);
    } else {
      hf->add(out_name, w);
    }
    sum.bytes += uint64_t(w.numel()) * w.element_size();
    ++sum.tensors;
    if (o.progress) o.progress(i + 1, plan.size());
  }
  if (mistral) cons->finish();
  else hf->finish();

  // The files around the weights.
  const fs::path base(o.model_dir);
  ModelConfig oc = cfg;
  oc.torch_dtype = hf_dtype_name(out_dt);
  if (mistral) {
    write_file_atomic(out.file("params.json"), oc.to_mistral_params().dump(2) + "\n");
  } else {
    write_file_atomic(out.file("config.json"), oc.to_hf_json().dump(2) + "\n");
    if (fs::exists(base / "generation_config.json")) {
      copy_if_present(base, "generation_config.json", out);
    } else {
      nlohmann::json g = {
          {"_from_model_config", true}, {"bos_token_id", cfg.bos_token_id}, {"eos_token_id", cfg.eos_token_id}};
      write_file_atomic(out.file("generation_config.json"), g.dump(2) + "\n");
    }
  }
  for (auto* f : {"tokenizer.model", "tokenizer.model.v1", "tokenizer.model.v2", "tokenizer.model.v3", "tekken.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "LICENSE",
                  "LICENSE.txt", "LICENSE.md", "NOTICE", "USE_POLICY.md"})
    copy_if_present(base, f, out);
  // A Mistral folder's tokenizer.model.vN is what transformers looks for as tokenizer.model.
  if (!mistral && !fs::exists(base / "tokenizer.model"))
    for (auto* v : {"tokenizer.model.v3", "tokenizer.model.v2", "tokenizer.model.v1"})
      if (fs::exists(base / v)) {
        copy_if_present(base, v, out, "tokenizer.model");
        break;
      }

  nlohmann::json rec = {
      {"affinage_version", AFFINAGE_VERSION}, {"base_model", fs::absolute(base).lexically_normal().string()},
      {"base_format", src.format()},          {"method", merge_method_name(o.combine.method)},
      {"dtype", dtype_short_name(out_dt)},    {"format", o.format}};
  if (merge_method_uses_density(o.combine.method)) rec["density"] = o.combine.density;
  if (o.combine.method == MergeMethod::DareLinear || o.combine.method == MergeMethod::DareTies)
    rec["seed"] = o.combine.seed;
  rec["adapters"] = nlohmann::json::array();
  for (auto& a : ads)
    rec["adapters"].push_back({{"path", fs::absolute(a.dir).lexically_normal().string()},
                               {"weight", a.weight},
                               {"base_model_name_or_path", a.info.base_model}});
  write_file_atomic(out.file("affinage_merge.json"), rec.dump(2) + "\n");

  for (auto& e : fs::directory_iterator(out.path())) sum.files.push_back(e.path().filename().string());
  std::sort(sum.files.begin(), sum.files.end());
  out.commit();
  return sum;
}

}  // namespace affinage
