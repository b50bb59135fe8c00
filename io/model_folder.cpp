// Model folders: config discovery, weight reading under HF names (HF single/sharded, Mistral consolidated),
// sharded HF writing, and the Mistral <-> HF name and RoPE row-order mapping.
#include "io/model_folder.h"
#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>
#include "base/error.h"
#include "base/files.h"

namespace fs = std::filesystem;

namespace affinage {

namespace {

nlohmann::json read_json(const std::string& path) {
  std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// The Mistral <-> HF module table, "{i}" standing for the layer index. The parameter suffix
// (".weight", ".lora_A.weight", ".lora_B.weight") is carried over unchanged.
const std::vector<std::pair<std::string, std::string>> kNameTable = {
    {"tok_embeddings", "model.embed_tokens"},
    {"norm", "model.norm"},
    {"output", "lm_head"},
    {"layers.{i}.attention.wq", "model.layers.{i}.self_attn.q_proj"},
    {"layers.{i}.attention.wk", "model.layers.{i}.self_attn.k_proj"},
    {"layers.{i}.attention.wv", "model.layers.{i}.self_attn.v_proj"},
    {"layers.{i}.attention.wo", "model.layers.{i}.self_attn.o_proj"},
    {"layers.{i}.attention_norm", "model.layers.{i}.input_layernorm"},
    {"layers.{i}.ffn_norm", "model.layers.{i}.post_attention_layernorm"},
    {"layers.{i}.feed_forward.w1", "model.layers.{i}.mlp.gate_proj"},
    {"layers.{i}.feed_forward.w2", "model.layers.{i}.mlp.down_proj"},
    {"layers.{i}.feed_forward.w3", "model.layers.{i}.mlp.up_proj"},
};

// "layers.{i}.ffn_norm" -> ^layers\.(\d+)\.ffn_norm(suffix)$
std::regex template_regex(const std::string& t) {
  std::string r = "^";
  for (size_t i = 0; i < t.size(); ++i) {
    if (t.compare(i, 3, "{i}") == 0) {
      r += "(\\d+)";
      i += 2;
    } else if (t[i] == '.') r += "\\.";
    else r += t[i];
  }
  return std::regex(r + "(\\.weight|\\.lora_A\\.weight|\\.lora_B\\.weight)$");
}

// Maps `name` from the `from` column of kNameTable to the other column; nullopt when no row matches.
std::optional<std::string> map_name(const std::string& name, bool from_mistral) {
  static const auto compiled = [] {
    std::vector<std::pair<std::regex, std::regex>> c;  // (mistral, hf)
    for (auto& [m, h] : kNameTable) c.emplace_back(template_regex(m), template_regex(h));
    return c;
  }();
  std::smatch m;
  for (size_t r = 0; r < kNameTable.size(); ++r) {
    if (!std::regex_match(name, m, from_mistral ? compiled[r].first : compiled[r].second)) continue;
    std::string out = from_mistral ? kNameTable[r].second : kNameTable[r].first;
    size_t at = out.find("{i}");
    if (at != std::string::npos) out.replace(at, 3, m[1].str());
    return out + m[m.size() - 1].str();
  }
  return std::nullopt;
}

at::Tensor permute_rows(const at::Tensor& w, int64_t n_heads, bool to_rotate_half) {
  if (w.dim() != 2) fail("RoPE row permutation expects a 2-D weight, got shape ", w.sizes());
  if (n_heads <= 0 || w.size(0) % n_heads != 0 || (w.size(0) / n_heads) % 2 != 0)
    fail("RoPE row permutation: ", w.size(0), " rows do not split into ", n_heads, " heads of even size");
  const int64_t hd = w.size(0) / n_heads, cols = w.size(1);
  // Interleaved stores each rotation pair (x_2i, x_2i+1) side by side; rotate-half stores (x_i, x_i+hd/2).
  at::Tensor v = to_rotate_half ? w.reshape({n_heads, hd / 2, 2, cols}) : w.reshape({n_heads, 2, hd / 2, cols});
  return v.transpose(1, 2).reshape({n_heads * hd, cols}).contiguous();
}

}  // namespace

// ------------------------------------------------------------------------------------------------ names

std::string hf_to_mistral_name(const std::string& hf_name) {
  if (auto m = map_name(hf_name, false)) return *m;
  fail("tensor '", hf_name, "' has no Mistral consolidated name (only Llama/Mistral decoder weights map)");
}

std::string mistral_to_hf_name(const std::string& m_name) {
  if (auto m = map_name(m_name, true)) return *m;
  fail("tensor '", m_name, "' is not a known Mistral consolidated weight name");
}

at::Tensor permute_rotate_half_to_interleaved(const at::Tensor& w, int64_t n_heads) {
  return permute_rows(w, n_heads, false);
}

at::Tensor permute_interleaved_to_rotate_half(const at::Tensor& w, int64_t n_heads) {
  return permute_rows(w, n_heads, true);
}

// ------------------------------------------------------------------------------------------------ reading

ModelConfig load_model_config(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("model folder '", dir, "' does not exist or is not a folder");
  fs::path hf = fs::path(dir) / "config.json", mi = fs::path(dir) / "params.json";
  if (is_file(hf)) return ModelConfig::from_hf_json(read_json(hf.string()), hf.string());
  if (is_file(mi)) return ModelConfig::from_mistral_params(read_json(mi.string()), mi.string());
  fail("'", dir, "' has neither config.json (Hugging Face) nor params.json (Mistral); point to a model folder");
}

WeightSource::WeightSource(const std::string& dir) : dir_(dir) {
  config_ = load_model_config(dir);
  const fs::path d(dir);
  if (is_file(d / "model.safetensors.index.json")) {
    format_ = "hf-sharded";
    const std::string ipath = (d / "model.safetensors.index.json").string();
    nlohmann::json idx = read_json(ipath);
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail(ipath, ": missing the 'weight_map' object");
    std::map<std::string, size_t> opened;  // shard file name -> index in files_ (each shard mapped once)
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(ipath, ": weight_map entry '", it.key(), "' must be a file name");
      std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard[0] == '/' || shard.find("..") != std::string::npos)
        fail(ipath, ": weight_map entry '", it.key(), "' names '", shard, "', which is not a file inside the folder");
      auto f = opened.find(shard);
      if (f == opened.end()) {
        fs::path sp = d / shard;
        if (!is_file(sp))
          fail(ipath, ": tensor '", it.key(), "' is mapped to '", shard, "', which is missing from ", dir);
        files_.push_back(std::make_unique<SafetensorsFile>(sp.string()));
        f = opened.emplace(shard, files_.size() - 1).first;
      }
      if (!files_[f->second]->find(it.key()))
        fail(ipath, ": tensor '", it.key(), "' is mapped to '", shard, "' but that file does not contain it");
      entries_[it.key()] = Entry{f->second, it.key()};
    }
  } else if (is_file(d / "model.safetensors")) {
    format_ = "hf";
    files_.push_back(std::make_unique<SafetensorsFile>((d / "model.safetensors").string()));
    for (auto& t : files_[0]->tensors()) entries_[t.name] = Entry{0, t.name};
  } else if (is_file(d / "consolidated.safetensors")) {
    format_ = "mistral";
    files_.push_back(std::make_unique<SafetensorsFile>((d / "consolidated.safetensors").string()));
    for (auto& t : files_[0]->tensors()) {
      std::string hf;
      try {
        hf = mistral_to_hf_name(t.name);
      } catch (const Error& e) {
        fail(files_[0]->path(), ": ", e.what());
      }
      Entry e{0, t.name};
      // Mistral stores q/k rows for interleaved RoPE; our model (like HF) rotates halves. LoRA B carries
      // the output rows too, so it gets the same permutation; LoRA A (input side) does not.
      bool q = hf.find(".self_attn.q_proj.") != std::string::npos,
           k = hf.find(".self_attn.k_proj.") != std::string::npos;
      if ((q || k) && hf.find(".lora_A.") == std::string::npos) {
        e.permute_rope_rows = true;
        e.heads = q ? config_.num_attention_heads : config_.num_key_value_heads;
      }
      if (entries_.count(hf)) fail(files_[0]->path(), ": two tensors map to '", hf, "'");
      entries_[hf] = e;
    }
    // params.json has no dtype; report what the file stores so tools show "bfloat16", not the default.
    if (!is_file(d / "config.json") && !files_[0]->tensors().empty()) {
      std::string dt = files_[0]->tensors()[0].dtype;
      config_.torch_dtype = dt == "BF16" ? "bfloat16" : dt == "F16" ? "float16" : "float32";
    }
  } else if (is_file(d / "consolidated.00.pth") || is_file(d / "pytorch_model.bin")) {
    fail("'", dir,
         "' holds PyTorch pickle weights (.pth/.bin), which affinage does not read; convert them to "
         "safetensors first");
  } else {
    fail("'", dir,
         "' has no weights: expected model.safetensors, model.safetensors.index.json (+ shards) or "
         "consolidated.safetensors");
  }
}

std::vector<std::string> WeightSource::names() const {
  std::vector<std::string> out;
  for (auto& [name, e] : entries_) out.push_back(name);
  return out;  // std::map iteration order: already sorted
}

bool WeightSource::has(const std::string& hf_name) const { return entries_.count(hf_name) > 0; }

at::Tensor WeightSource::load(const std::string& hf_name, std::optional<at::ScalarType> dtype) const {
  auto it = entries_.find(hf_name);
  if (it == entries_.end()) fail("model folder '", dir_, "' (", format_, ") has no tensor '", hf_name, "'");
  const Entry& e = it->second;
  const SafetensorsFile& f = *files_[e.file];
  if (!e.permute_rope_rows) return f.load(e.stored_name, dtype);
  // Permute an owned copy: a reshape of the mapping could otherwise come back as a view of read-only memory.
  try {
    return permute_interleaved_to_rotate_half(f.load(e.stored_name, dtype), e.heads);
  } catch (const Error& err) {
    fail(f.path(), ": tensor '", e.stored_name, "': ", err.what());
  }
}

void WeightSource::release(const std::string& hf_name) const {
  auto it = entries_.find(hf_name);
  if (it != entries_.end()) files_[it->second.file]->release(it->second.stored_name);
}

std::vector<int64_t> WeightSource::shape(const std::string& hf_name) const {
  auto it = entries_.find(hf_name);
  if (it == entries_.end()) fail("model folder '", dir_, "' has no tensor '", hf_name, "'");
  return files_[it->second.file]->find(it->second.stored_name)->shape;
}

std::string WeightSource::dtype_name(const std::string& hf_name) const {
  auto it = entries_.find(hf_name);
  if (it == entries_.end()) fail("model folder '", dir_, "' has no tensor '", hf_name, "'");
  return files_[it->second.file]->find(it->second.stored_name)->dtype;
}

// ------------------------------------------------------------------------------------------------ writing

struct ShardedWriter::Impl {
  fs::path dir;
  uint64_t max_bytes;
  std::vector<std::pair<std::string, at::Tensor>> pending;
  uint64_t pending_bytes = 0, total_bytes = 0;
  std::vector<std::string> partials;                  // written shards under temporary names, in order
  std::vector<std::vector<std::string>> shard_names;  // tensor names of each written shard
  std::set<std::string> seen;
  bool finished = false;

  std::string partial_name(size_t i) const {
    // Not a name any loader looks for; the pid keeps two writers in one folder apart.
    return (dir / (".partial-shard-" + std::to_string(i) + "." + std::to_string(::getpid()) + ".safetensors")).string();
  }
  void flush() {
    if (pending.empty()) return;
    std::string p = partial_name(partials.size());
    partials.push_back(p);  // pushed first so the destructor removes it even if the write half-failed
    std::vector<std::string> names;
    for (auto& [n, t] : pending) names.push_back(n);
    write_safetensors(p, pending);
    shard_names.push_back(std::move(names));
    pending.clear();
    pending_bytes = 0;
  }
};

ShardedWriter::ShardedWriter(const std::string& dir, uint64_t max_shard_bytes) : impl_(new Impl) {
  if (max_shard_bytes == 0) fail("ShardedWriter: max_shard_bytes must be positive");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir, ec)) fail("cannot create output folder '", dir, "'");
  impl_->dir = dir;
  impl_->max_bytes = max_shard_bytes;
}

ShardedWriter::~ShardedWriter() {
  if (impl_ && !impl_->finished)
    for (auto& p : impl_->partials) std::remove(p.c_str());
}

void ShardedWriter::add(const std::string& name, const at::Tensor& t) {
  Impl& s = *impl_;
  if (s.finished) fail("ShardedWriter: add('", name, "') after finish()");
  if (!t.defined()) fail("ShardedWriter: tensor '", name, "' is undefined");
  if (!s.seen.insert(name).second) fail("ShardedWriter: tensor '", name, "' added twice");
  try {
    safetensors_dtype_name(t.scalar_type());  // fail now, not when the shard is written
  } catch (const Error& e) {
    fail("ShardedWriter: tensor '", name, "': ", e.what());
  }
  // CPU now, so a GPU model is not held twice on the device; a CPU tensor is kept by reference,
  // so the caller must not change it before finish().
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
  // A tensor larger than a shard gets a shard of its own rather than an error.
  if (!s.pending.empty() && s.pending_bytes + nbytes > s.max_bytes) s.flush();
  s.pending.emplace_back(name, c);
  s.pending_bytes += nbytes;
  s.total_bytes += nbytes;
}

void ShardedWriter::finish() {
  Impl& s = *impl_;
  if (s.finished) fail("ShardedWriter: finish() called twice");
  const fs::path single = s.dir / "model.safetensors", index = s.dir / "model.safetensors.index.json";
  // A stale checkpoint of the other layout would shadow this one (transformers prefers model.safetensors),
  // so files under the names this writer owns are removed before the new ones appear.
  auto remove_stale = [&](bool keep_single) {
    std::error_code ec;
    if (!keep_single) fs::remove(single, ec);
    fs::remove(index, ec);
    static const std::regex shard_re("^model-\\d{5}-of-\\d{5}\\.safetensors$");
    std::vector<fs::path> old;
    for (auto& e : fs::directory_iterator(s.dir, ec))
      if (std::regex_match(e.path().filename().string(), shard_re)) old.push_back(e.path());
    for (auto& p : old) fs::remove(p, ec);
  };
  if (s.partials.empty()) {
    // Everything fits one shard: written straight to its final name (atomically, replacing any old one).
    write_safetensors(single.string(), s.pending);
    s.pending.clear();
    s.finished = true;
    remove_stale(/*keep_single=*/true);
    return;
  }
  s.flush();
  const size_t n = s.partials.size();
  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<std::string> finals;
  for (size_t i = 0; i < n; ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    finals.push_back(buf);
    for (auto& t : s.shard_names[i]) weight_map[t] = buf;
  }
  remove_stale(/*keep_single=*/false);
  for (size_t i = 0; i < n; ++i) {
    std::string to = (s.dir / finals[i]).string();
    if (std::rename(s.partials[i].c_str(), to.c_str()) != 0) {
      // Take back the shards already renamed: half a checkpoint under final names is worse than none.
      for (size_t j = 0; j < i; ++j) std::remove((s.dir / finals[j]).string().c_str());
      fail("cannot rename '", s.partials[i], "' to '", to, "'");
    }
  }
  s.finished = true;  // the partial names are gone now; the index is the last file to appear
  nlohmann::json idx = {{"metadata", {{"total_size", s.total_bytes}}}, {"weight_map", weight_map}};
  write_file_atomic(index.string(), idx.dump(2) + "\n");
}

}  // namespace affinage
