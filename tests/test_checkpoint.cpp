// Model folders: config parsing, HF single/sharded and Mistral consolidated reading, sharded writing,
// and the interleaved <-> rotate-half RoPE row permutation checked by hand and against RoPE itself.
#include <cmath>
#include <filesystem>
#include <fstream>
#include "base/error.h"
#include "base/files.h"
#include "io/model_folder.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace affinage;
using affinage::test::tensors_close;
using json = nlohmann::json;

namespace {

const std::string kStories = test::repo_path("models/stories260K");

json stories_config() { return json::parse(read_file(kStories + "/config.json")); }

using affinage::test::error_of;

#define EXPECT_ERROR_HAS(stmt, needle)                                      \
  do {                                                                      \
    std::string msg_ = error_of([&] { stmt; });                             \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: " << msg_; \
  } while (0)

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ config

TEST(Config, ParsesStories260K) {
  ModelConfig c = ModelConfig::from_hf_json(stories_config(), "config.json");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "float32");
  // Per layer: q 64x64 + k,v 2x(32x64) + o 64x64 + gate,up,down 3x(64x172) = 45312; head 512x64.
  EXPECT_EQ(c.matmul_params(), 5 * 45312 + 512 * 64);
}

TEST(Config, DefaultsAndDerivedFields) {
  json j = {{"architectures", {"MistralForCausalLM"}},
            {"vocab_size", 32000},
            {"hidden_size", 4096},
            {"intermediate_size", 14336},
            {"num_hidden_layers", 32},
            {"num_attention_heads", 32},
            {"sliding_window", 4096},
            {"head_dim", nullptr}};
  ModelConfig c = ModelConfig::from_hf_json(j, "m.json");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.head_dim, 128);            // null head_dim -> hidden / heads
  EXPECT_EQ(c.num_key_value_heads, 32);  // absent -> num_attention_heads
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.sliding_window, std::optional<int64_t>(4096));
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.torch_dtype, "float32");
  j.erase("head_dim");
  EXPECT_EQ(ModelConfig::from_hf_json(j, "m.json").head_dim, 128);
}

TEST(Config, ErrorsNameTheFileAndKey) {
  json good = stories_config();
  auto with = [&](const char* k, json v) {
    json j = good;
    j[k] = v;
    return j;
  };
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("architectures", {"GPT2LMHeadModel"}), "/x/config.json"),
                   "/x/config.json");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("architectures", {"GPT2LMHeadModel"}), "/x/config.json"),
                   "LlamaForCausalLM");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("model_type", "gpt2"), "c.json"), "model_type");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("hidden_size", "64"), "c.json"), "hidden_size");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("hidden_size", 64.5), "c.json"), "c.json");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("tie_word_embeddings", 1), "c.json"), "tie_word_embeddings");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("rope_theta", "big"), "c.json"), "rope_theta");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), "c.json"),
                   "rope_scaling");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("num_key_value_heads", 3), "c.json"), "num_key_value_heads");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(with("torch_dtype", "float8"), "c.json"), "torch_dtype");
  json missing = good;
  missing.erase("vocab_size");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(missing, "c.json"), "vocab_size");
  json no_arch = good;
  no_arch.erase("architectures");
  EXPECT_ERROR_HAS(ModelConfig::from_hf_json(no_arch, "c.json"), "architectures");
}

TEST(Config, HfJsonRoundTripKeepsUnknownFields) {
  ModelConfig c = ModelConfig::from_hf_json(stories_config(), "config.json");
  json out = c.to_hf_json();
  EXPECT_EQ(out["initializer_range"], 0.02);  // unknown to us, kept
  EXPECT_EQ(out["architectures"], json({"LlamaForCausalLM"}));
  ModelConfig d = ModelConfig::from_hf_json(out, "rewritten");
  EXPECT_EQ(d.to_hf_json(), out);
  EXPECT_EQ(d.head_dim, 8);
  EXPECT_EQ(d.num_key_value_heads, 4);
  EXPECT_TRUE(d.tie_word_embeddings);
}

TEST(Config, MistralParams) {
  // Mistral-7B-v0.1's params.json as published.
  json p = json::parse(R"({"dim": 4096, "n_layers": 32, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32,
                           "n_kv_heads": 8, "norm_eps": 1e-05, "sliding_window": 4096, "vocab_size": 32000})");
  ModelConfig c = ModelConfig::from_mistral_params(p, "params.json");
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.sliding_window, std::optional<int64_t>(4096));
  EXPECT_FALSE(c.tie_word_embeddings);
  // Back and forth through params.json loses nothing the format holds.
  ModelConfig d = ModelConfig::from_mistral_params(c.to_mistral_params(), "again");
  EXPECT_EQ(d.to_mistral_params(), c.to_mistral_params());
  EXPECT_EQ(c.to_mistral_params()["n_kv_heads"], 8);
  // 7B: 32 x (4096x4096x2 + 4096x1024x2 + 3x4096x14336) + 32000x4096 = 7,110,393,856 (+ embeddings, norms: 7.24B).
  EXPECT_EQ(c.matmul_params(), 7110393856LL);
  json bad = p;
  bad["n_heads"] = "32";
  EXPECT_ERROR_HAS(ModelConfig::from_mistral_params(bad, "/m/params.json"), "n_heads");
  EXPECT_ERROR_HAS(ModelConfig::from_mistral_params(bad, "/m/params.json"), "/m/params.json");
}

TEST(Config, LoadModelConfigFindsTheFileOrSaysWhy) {
  EXPECT_EQ(load_model_config(kStories).hidden_size, 64);
  std::string dir = test::temp_dir("cfg");
  EXPECT_ERROR_HAS(load_model_config(dir), dir);
  EXPECT_ERROR_HAS(load_model_config(dir + "/absent"), "absent");
  write_file_atomic(dir + "/params.json", ModelConfig::from_hf_json(stories_config(), "c").to_mistral_params().dump());
  ModelConfig m = load_model_config(dir);
  EXPECT_EQ(m.architecture, "MistralForCausalLM");
  EXPECT_EQ(m.num_key_value_heads, 4);
  write_file_atomic(dir + "/config.json", "{ broken");
  EXPECT_ERROR_HAS(load_model_config(dir), "config.json");
  fs::remove_all(dir);
}

// ------------------------------------------------------------------------------------------------ names, RoPE

TEST(MistralNames, TableBothWays) {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"tok_embeddings.weight", "model.embed_tokens.weight"},
      {"norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"layers.11.attention.wk.weight", "model.layers.11.self_attn.k_proj.weight"},
      {"layers.2.attention.wv.weight", "model.layers.2.self_attn.v_proj.weight"},
      {"layers.3.attention.wo.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"layers.4.attention_norm.weight", "model.layers.4.input_layernorm.weight"},
      {"layers.5.ffn_norm.weight", "model.layers.5.post_attention_layernorm.weight"},
      {"layers.6.feed_forward.w1.weight", "model.layers.6.mlp.gate_proj.weight"},
      {"layers.7.feed_forward.w2.weight", "model.layers.7.mlp.down_proj.weight"},
      {"layers.31.feed_forward.w3.weight", "model.layers.31.mlp.up_proj.weight"},
      {"layers.1.attention.wq.lora_B.weight", "model.layers.1.self_attn.q_proj.lora_B.weight"},
  };
  for (auto& [m, h] : rows) {
    EXPECT_EQ(mistral_to_hf_name(m), h);
    EXPECT_EQ(hf_to_mistral_name(h), m);
  }
  EXPECT_THROW(mistral_to_hf_name("layers.0.attention.wx.weight"), Error);
  EXPECT_THROW(hf_to_mistral_name("model.layers.0.self_attn.rotary_emb.inv_freq"), Error);
  EXPECT_THROW(hf_to_mistral_name("xmodel.norm.weight"), Error);
}

TEST(RopePermutation, HandWorkedSmallCases) {
  // One head, head_dim 4, one column: interleaved rows [a0, b0, a1, b1] <-> rotate-half rows [a0, a1, b0, b1].
  auto inter = at::tensor({10.0f, 20.0f, 11.0f, 21.0f}).reshape({4, 1});
  auto half = at::tensor({10.0f, 11.0f, 20.0f, 21.0f}).reshape({4, 1});
  EXPECT_TRUE(tensors_close(permute_interleaved_to_rotate_half(inter, 1), half, 0.0));
  EXPECT_TRUE(tensors_close(permute_rotate_half_to_interleaved(half, 1), inter, 0.0));
  // Two heads of 4, two columns: the permutation stays inside each head and moves whole rows.
  auto rows = [](std::vector<int> order) {
    std::vector<float> v;
    for (int r : order) {
      v.push_back(r);
      v.push_back(100 + r);
    }
    return at::tensor(v).reshape({static_cast<int64_t>(order.size()), 2});
  };
  EXPECT_TRUE(tensors_close(permute_interleaved_to_rotate_half(rows({0, 1, 2, 3, 4, 5, 6, 7}), 2),
                            rows({0, 2, 1, 3, 4, 6, 5, 7}), 0.0));
  // head_dim 4 is its own inverse; head_dim 8 tells the two directions apart:
  // interleaved (x0,y0,x1,y1,x2,y2,x3,y3) -> rotate-half (x0,x1,x2,x3,y0,y1,y2,y3).
  EXPECT_TRUE(tensors_close(permute_interleaved_to_rotate_half(rows({0, 1, 2, 3, 4, 5, 6, 7}), 1),
                            rows({0, 2, 4, 6, 1, 3, 5, 7}), 0.0));
  EXPECT_TRUE(tensors_close(permute_rotate_half_to_interleaved(rows({0, 1, 2, 3, 4, 5, 6, 7}), 1),
                            rows({0, 4, 1, 5, 2, 6, 3, 7}), 0.0));
  EXPECT_THROW(permute_interleaved_to_rotate_half(at::zeros({6, 2}), 2), Error);  // head of 3 rows
  EXPECT_THROW(permute_interleaved_to_rotate_half(at::zeros({8}), 2), Error);
}

// The permutation is right iff interleaved RoPE on the Mistral weight and rotate-half RoPE on the HF weight
// give the same attention scores. Both RoPEs are written out here, element by element.
TEST(RopePermutation, InterleavedAndRotateHalfRopeGiveTheSameScores) {
  const int64_t heads = 2, hd = 8, dim = 6, positions = 5;
  at::manual_seed(0);
  at::Tensor wq_hf = at::randn({heads * hd, dim}, at::kDouble), wk_hf = at::randn({heads * hd, dim}, at::kDouble);
  at::Tensor wq_m = permute_rotate_half_to_interleaved(wq_hf, heads),
             wk_m = permute_rotate_half_to_interleaved(wk_hf, heads);
  at::Tensor x = at::randn({positions, dim}, at::kDouble);
  auto rope = [&](at::Tensor q, bool interleaved) {  // q: [positions, heads*hd]
    at::Tensor out = q.clone();
    auto a = q.accessor<double, 2>();
    auto o = out.accessor<double, 2>();
    for (int64_t p = 0; p < positions; ++p)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          double th = p * std::pow(10000.0, -2.0 * i / hd);
          int64_t r0 = h * hd + (interleaved ? 2 * i : i), r1 = h * hd + (interleaved ? 2 * i + 1 : i + hd / 2);
          o[p][r0] = a[p][r0] * std::cos(th) - a[p][r1] * std::sin(th);
          o[p][r1] = a[p][r0] * std::sin(th) + a[p][r1] * std::cos(th);
        }
    return out;
  };
  auto scores = [&](at::Tensor q, at::Tensor k) {  // per-head q.k^T, [heads, positions, positions]
    return at::matmul(q.view({positions, heads, hd}).transpose(0, 1),
                      k.view({positions, heads, hd}).permute({1, 2, 0}));
  };
  at::Tensor s_hf = scores(rope(at::matmul(x, wq_hf.t()), false), rope(at::matmul(x, wk_hf.t()), false));
  at::Tensor s_m = scores(rope(at::matmul(x, wq_m.t()), true), rope(at::matmul(x, wk_m.t()), true));
  EXPECT_TRUE(tensors_close(s_m, s_hf, 1e-10, 1e-10));
  // And the permutation is not the identity (else this test proves nothing).
  EXPECT_FALSE(tensors_close(wq_m, wq_hf, 1e-3));
}

// ------------------------------------------------------------------------------------------------ folders

TEST(WeightSource, ReadsStories260K) {
  WeightSource ws(kStories);
  EXPECT_EQ(ws.format(), "hf");
  EXPECT_EQ(ws.config().hidden_size, 64);
  auto names = ws.names();
  EXPECT_EQ(names.size(), 47u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_TRUE(ws.has("model.layers.4.mlp.up_proj.weight"));
  EXPECT_FALSE(ws.has("lm_head.weight"));  // tied
  EXPECT_EQ(ws.shape("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(ws.dtype_name("model.norm.weight"), "F32");
  SafetensorsFile f(kStories + "/model.safetensors");
  EXPECT_TRUE(tensors_close(ws.load("model.norm.weight"), f.view("model.norm.weight"), 0.0));
  at::Tensor h = ws.load("model.embed_tokens.weight", at::kBFloat16);
  EXPECT_EQ(h.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(tensors_close(h, f.view("model.embed_tokens.weight"), 0.0, 1.0 / 128));  // bf16: 8 bits of mantissa
  EXPECT_ERROR_HAS(ws.load("lm_head.weight"), "lm_head.weight");
}

TEST(ShardedWriter, SmallShardsRoundTripThroughWeightSource) {
  WeightSource src(kStories);
  std::string dir = test::temp_dir("sharded");
  write_file_atomic(dir + "/config.json", src.config().to_hf_json().dump(2));
  uint64_t total = 0;
  {
    ShardedWriter w(dir, 200000);  // ~1 MiB of weights -> several shards
    for (auto& n : src.names()) {
      at::Tensor t = src.load(n);
      total += t.numel() * t.element_size();
      w.add(n, t);
    }
    w.finish();
  }
  auto files = listing(dir);
  size_t shards = 0;
  for (auto& f : files) shards += f.rfind("model-", 0) == 0;
  ASSERT_GE(shards, 3u);
  char first[64];
  std::snprintf(first, sizeof first, "model-00001-of-%05zu.safetensors", shards);
  EXPECT_TRUE(fs::exists(dir + "/" + first)) << first;
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  EXPECT_EQ(files.size(), shards + 2) << "only config.json, the index and the shards";
  json idx = json::parse(read_file(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(idx["weight_map"].size(), src.names().size());
  // No shard exceeds the limit unless it holds a single tensor.
  for (auto& f : files)
    if (f.rfind("model-", 0) == 0) {
      SafetensorsFile s(dir + "/" + f);
      uint64_t bytes = 0;
      for (auto& t : s.tensors()) bytes += t.end - t.begin;
      EXPECT_TRUE(bytes <= 200000 || s.tensors().size() == 1) << f;
    }

  WeightSource back(dir);
  EXPECT_EQ(back.format(), "hf-sharded");
  EXPECT_EQ(back.names(), src.names());
  for (auto& n : src.names()) EXPECT_TRUE(tensors_close(back.load(n), src.load(n), 0.0)) << n;

  // A weight_map entry pointing at a shard that lacks the tensor: the error names both.
  idx["weight_map"]["model.norm.weight"] = first;
  write_file_atomic(dir + "/model.safetensors.index.json", idx.dump());
  std::string msg = error_of([&] { WeightSource bad(dir); });
  EXPECT_NE(msg.find("model.norm.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find(first), std::string::npos) << msg;
  idx["weight_map"]["model.norm.weight"] = "model-09999-of-09999.safetensors";
  write_file_atomic(dir + "/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR_HAS(WeightSource bad(dir), "model-09999-of-09999.safetensors");
  fs::remove_all(dir);
}

TEST(ShardedWriter, LargeLimitWritesOneFileAndReplacesStaleShards) {
  WeightSource src(kStories);
  std::string dir = test::temp_dir("single");
  write_file_atomic(dir + "/config.json", src.config().to_hf_json().dump(2));
  // A stale sharded checkpoint in the folder must not survive next to the new single file.
  write_file_atomic(dir + "/model-00001-of-00002.safetensors", "stale");
  write_file_atomic(dir + "/model.safetensors.index.json", "{}");
  ShardedWriter w(dir);
  for (auto& n : src.names()) w.add(n, src.load(n));
  w.finish();
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"config.json", "model.safetensors"}));
  WeightSource back(dir);
  EXPECT_EQ(back.format(), "hf");
  for (auto& n : src.names()) EXPECT_TRUE(tensors_close(back.load(n), src.load(n), 0.0)) << n;
  fs::remove_all(dir);
}

TEST(ShardedWriter, UnfinishedWriterLeavesNothing) {
  std::string dir = test::temp_dir("unfinished");
  {
    ShardedWriter w(dir, 1000);
    for (int i = 0; i < 5; ++i) w.add("t" + std::to_string(i), at::ones({200}));  // 800 bytes: one shard each
    EXPECT_THROW(w.add("t0", at::ones({1})), Error);                              // duplicate name
    EXPECT_THROW(w.add("c", at::ones({2}, at::kComplexFloat)), Error);            // no safetensors dtype
  }
  EXPECT_TRUE(listing(dir).empty()) << "left behind: " << (listing(dir).empty() ? "" : listing(dir)[0]);
  fs::remove_all(dir);
}

TEST(WeightSource, MistralConsolidatedGivesBackTheHfTensors) {
  WeightSource src(kStories);
  const ModelConfig& c = src.config();
  std::string dir = test::temp_dir("mistral");
  write_file_atomic(dir + "/params.json", c.to_mistral_params().dump(2));
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (auto& n : src.names()) {
    at::Tensor t = src.load(n);
    if (n.find("q_proj") != std::string::npos) t = permute_rotate_half_to_interleaved(t, c.num_attention_heads);
    if (n.find("k_proj") != std::string::npos) t = permute_rotate_half_to_interleaved(t, c.num_key_value_heads);
    ts.emplace_back(hf_to_mistral_name(n), t);
  }
  write_safetensors(dir + "/consolidated.safetensors", ts);

  WeightSource m(dir);
  EXPECT_EQ(m.format(), "mistral");
  EXPECT_EQ(m.config().architecture, "MistralForCausalLM");
  EXPECT_EQ(m.config().num_key_value_heads, 4);
  EXPECT_TRUE(m.config().tie_word_embeddings);
  EXPECT_EQ(m.names(), src.names());
  for (auto& n : src.names()) {
    EXPECT_EQ(m.shape(n), src.shape(n)) << n;
    EXPECT_TRUE(tensors_close(m.load(n), src.load(n), 0.0)) << n;
  }
  EXPECT_EQ(m.load("model.layers.0.self_attn.q_proj.weight", at::kDouble).scalar_type(), at::kDouble);
  // The stored wq really is in the other order (else the check above is vacuous).
  SafetensorsFile raw(dir + "/consolidated.safetensors");
  EXPECT_FALSE(
      tensors_close(raw.view("layers.0.attention.wq.weight"), src.load("model.layers.0.self_attn.q_proj.weight"), 0.0));

  // An unknown tensor in a consolidated file is an error naming it.
  ts.emplace_back("vision_encoder.patch_conv.weight", at::zeros({2}));
  write_safetensors(dir + "/consolidated.safetensors", ts);
  EXPECT_ERROR_HAS(WeightSource bad(dir), "vision_encoder.patch_conv.weight");
  fs::remove_all(dir);
}

TEST(WeightSource, FolderWithoutWeightsSaysWhatItLookedFor) {
  std::string dir = test::temp_dir("noweights");
  write_file_atomic(dir + "/config.json", read_file(kStories + "/config.json"));
  EXPECT_ERROR_HAS(WeightSource ws(dir), "model.safetensors");
  EXPECT_ERROR_HAS(WeightSource ws(dir), dir);
  fs::remove_all(dir);
}
