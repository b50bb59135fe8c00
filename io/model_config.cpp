// Model architecture parsing: Hugging Face config.json and Mistral params.json, strictly, and back.
#include "io/model_config.h"
#include <algorithm>
#include "base/error.h"

namespace affinage {

namespace {

using json = nlohmann::json;

const char* kSupportedArchs = "LlamaForCausalLM, MistralForCausalLM";

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

int64_t get_int(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) fail(where, ": required key '", key, "' is missing");
  if (!j[key].is_number_integer()) fail(where, ": key '", key, "' must be an integer, got ", j[key].dump());
  return j[key].get<int64_t>();
}

int64_t get_int_or(const json& j, const char* key, int64_t dflt, const std::string& where) {
  return present(j, key) ? get_int(j, key, where) : dflt;
}

int64_t get_positive(const json& j, const char* key, const std::string& where) {
  int64_t v = get_int(j, key, where);
  if (v <= 0) fail(where, ": key '", key, "' must be positive, got ", v);
  return v;
}

double get_double_or(const json& j, const char* key, double dflt, const std::string& where) {
  if (!present(j, key)) return dflt;
  if (!j[key].is_number()) fail(where, ": key '", key, "' must be a number, got ", j[key].dump());
  return j[key].get<double>();
}

bool get_bool_or(const json& j, const char* key, bool dflt, const std::string& where) {
  if (!present(j, key)) return dflt;
  if (!j[key].is_boolean()) fail(where, ": key '", key, "' must be true or false, got ", j[key].dump());
  return j[key].get<bool>();
}

// bos/eos may be a list in newer configs (several stop tokens); the first one is the one we emit.
int64_t get_token_id(const json& j, const char* key, int64_t dflt, const std::string& where) {
  if (!present(j, key)) return dflt;
  const json& v = j[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  fail(where, ": key '", key, "' must be an integer token id, got ", v.dump());
}

std::optional<int64_t> get_window(const json& j, const char* key, const std::string& where) {
  if (!present(j, key)) return std::nullopt;
  int64_t w = get_int(j, key, where);
  if (w <= 0) fail(where, ": key '", key, "' must be a positive integer or null, got ", w);
  return w;
}

// Cross-field checks shared by both formats: the attention shapes must divide evenly.
void check_shapes(const ModelConfig& c, const std::string& where) {
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    fail(where, ": num_attention_heads (", c.num_attention_heads, ") must be a multiple of num_key_value_heads (",
         c.num_key_value_heads, ")");
  if (c.head_dim <= 0 || c.head_dim % 2 != 0)
    fail(where, ": head_dim must be a positive even number for RoPE, got ", c.head_dim);
  if (c.rms_norm_eps <= 0) fail(where, ": rms_norm_eps must be positive, got ", c.rms_norm_eps);
  if (c.rope_theta <= 0) fail(where, ": rope_theta must be positive, got ", c.rope_theta);
}

}  // namespace

ModelConfig ModelConfig::from_hf_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected a JSON object");
  ModelConfig c;
  c.raw = j;

  if (!j.contains("architectures") || !j["architectures"].is_array())
    fail(where, ": 'architectures' must be a list naming the model class; supported: ", kSupportedArchs);
  std::string found;
  for (const auto& a : j["architectures"]) {
    if (!a.is_string()) fail(where, ": 'architectures' entries must be strings, got ", a.dump());
    std::string s = a.get<std::string>();
    if (found.empty() && (s == "LlamaForCausalLM" || s == "MistralForCausalLM")) found = s;
  }
  if (found.empty())
    fail(where, ": unsupported architecture ", j["architectures"].dump(), "; affinage supports ", kSupportedArchs);
  c.architecture = found;

  if (present(j, "model_type")) {
    if (!j["model_type"].is_string()) fail(where, ": key 'model_type' must be a string");
    c.model_type = j["model_type"].get<std::string>();
    if (c.model_type != "llama" && c.model_type != "mistral")
      fail(where, ": model_type '", c.model_type, "' is not supported (expected \"llama\" or \"mistral\")");
  } else {
    c.model_type = found == "MistralForCausalLM" ? "mistral" : "llama";
  }

  c.vocab_size = get_positive(j, "vocab_size", where);
  c.hidden_size = get_positive(j, "hidden_size", where);
  c.intermediate_size = get_positive(j, "intermediate_size", where);
  c.num_hidden_layers = get_positive(j, "num_hidden_layers", where);
  c.num_attention_heads = get_positive(j, "num_attention_heads", where);
  c.num_key_value_heads = get_int_or(j, "num_key_value_heads", c.num_attention_heads, where);
  if (present(j, "head_dim")) {
    c.head_dim = get_int(j, "head_dim", where);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail(where, ": hidden_size (", c.hidden_size, ") is not divisible by num_attention_heads (",
           c.num_attention_heads, "); give 'head_dim' explicitly");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.rope_theta = get_double_or(j, "rope_theta", 10000.0, where);
  c.rms_norm_eps = get_double_or(j, "rms_norm_eps", 1e-6, where);
  c.sliding_window = get_window(j, "sliding_window", where);
  c.max_position_embeddings = get_int_or(j, "max_position_embeddings", c.max_position_embeddings, where);
  c.tie_word_embeddings = get_bool_or(j, "tie_word_embeddings", false, where);
  c.bos_token_id = get_token_id(j, "bos_token_id", 1, where);
  c.eos_token_id = get_token_id(j, "eos_token_id", 2, where);

  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  const char* dkey = present(j, "torch_dtype") ? "torch_dtype" : present(j, "dtype") ? "dtype" : nullptr;
  if (dkey) {
    if (!j[dkey].is_string()) fail(where, ": key '", dkey, "' must be a string, got ", j[dkey].dump());
    c.torch_dtype = j[dkey].get<std::string>();
    if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16")
      fail(where, ": key '", dkey, "' is \"", c.torch_dtype, "\"; expected \"float32\", \"bfloat16\" or \"float16\"");
  }

  // Features the model code does not implement: refuse rather than silently compute something else.
  if (present(j, "rope_scaling"))
    fail(where, ": 'rope_scaling' ", j["rope_scaling"].dump(),
         " is not supported (only plain RoPE); "
         "use a checkpoint without rope scaling");
  if (get_bool_or(j, "attention_bias", false, where))
    fail(where, ": 'attention_bias': true is not supported (Llama/Mistral projections have no bias)");
  if (get_bool_or(j, "mlp_bias", false, where))
    fail(where, ": 'mlp_bias': true is not supported (Llama/Mistral MLPs have no bias)");
  if (present(j, "hidden_act") && j["hidden_act"] != "silu")
    fail(where, ": 'hidden_act' ", j["hidden_act"].dump(), " is not supported (only \"silu\")");

  check_shapes(c, where);
  return c;
}

ModelConfig ModelConfig::from_mistral_params(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected a JSON object");
  if (present(j, "moe")) fail(where, ": mixture-of-experts models ('moe' key) are not supported");
  ModelConfig c;
  c.raw = j;
  c.architecture = "MistralForCausalLM";
  c.model_type = "mistral";
  c.hidden_size = get_positive(j, "dim", where);
  c.num_hidden_layers = get_positive(j, "n_layers", where);
  c.intermediate_size = get_positive(j, "hidden_dim", where);
  c.num_attention_heads = get_positive(j, "n_heads", where);
  c.num_key_value_heads = get_int_or(j, "n_kv_heads", c.num_attention_heads, where);
  c.head_dim = present(j, "head_dim") ? get_int(j, "head_dim", where) : c.hidden_size / c.num_attention_heads;
  c.vocab_size = get_positive(j, "vocab_size", where);
  c.rms_norm_eps = get_double_or(j, "norm_eps", 1e-5, where);
  c.rope_theta = get_double_or(j, "rope_theta", 10000.0, where);
  c.sliding_window = get_window(j, "sliding_window", where);
  // mistral-inference's small models say "tied_embeddings"; the 7B models omit it (untied head).
  c.tie_word_embeddings = get_bool_or(j, "tied_embeddings", false, where);
  // params.json has no context length; Mistral's published HF configs say 32768.
  c.max_position_embeddings = get_int_or(j, "max_seq_len", 32768, where);
  check_shapes(c, where);
  return c;
}

json ModelConfig::to_hf_json() const {
  // Only carry over a raw config.json; a params.json's keys mean nothing to transformers.
  json j = raw.is_object() && raw.contains("architectures") ? raw : json::object();
  j["architectures"] = json::array({architecture});
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (sliding_window) j["sliding_window"] = *sliding_window;
  else if (model_type == "mistral" || j.contains("sliding_window")) j["sliding_window"] = nullptr;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = torch_dtype;
  if (j.contains("dtype")) j["dtype"] = torch_dtype;
  if (!j.contains("hidden_act")) j["hidden_act"] = "silu";
  return j;
}

json ModelConfig::to_mistral_params() const {
  json j = {{"dim", hidden_size},
            {"n_layers", num_hidden_layers},
            {"head_dim", head_dim},
            {"hidden_dim", intermediate_size},
            {"n_heads", num_attention_heads},
            {"n_kv_heads", num_key_value_heads},
            {"norm_eps", rms_norm_eps},
            {"vocab_size", vocab_size},
            {"rope_theta", rope_theta}};
  if (sliding_window) j["sliding_window"] = *sliding_window;
  // Only written when true so the 7B-style file stays exactly what Mistral publishes.
  if (tie_word_embeddings) j["tied_embeddings"] = true;
  return j;
}

int64_t ModelConfig::layer_matmul_params() const {
  const int64_t q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  const int64_t attn = hidden_size * q + 2 * hidden_size * kv + q * hidden_size;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  return num_hidden_layers * (attn + mlp);
}

int64_t ModelConfig::head_matmul_params() const { return vocab_size * hidden_size; }

double ModelConfig::attention_flops_per_token(int64_t T) const {
  return 2.0 * double(num_hidden_layers) * double(T) * double(num_attention_heads * head_dim);
}

double ModelConfig::forward_flops(int64_t T) const {
  return double(T) * (2.0 * double(matmul_params()) + attention_flops_per_token(T));
}

double ModelConfig::train_flops(int64_t T) const {
  return double(T) * (4.0 * double(matmul_params()) + 3.0 * attention_flops_per_token(T));
}

}  // namespace affinage
