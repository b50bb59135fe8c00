// `affinage inspect`: model folder, safetensors file and adapter folder, checked against numbers derived
// independently from config.json and the files' own headers; a missing path fails with a clear message.
#include <filesystem>
#include <fstream>
#include "base/files.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using affinage::test::run_cli;

namespace {

const std::string kStories = affinage::test::repo_path("models/stories260K");

json parse_stdout(const affinage::test::CmdResult& r) {
  EXPECT_EQ(r.code, 0) << r.err;
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON object: " << e.what() << "\n" << r.out;
    return json::object();
  }
}

}  // namespace

TEST(CliInspect, ModelFolderMatchesConfigJson) {
  json cfg = json::parse(affinage::read_file(kStories + "/config.json"));
  json j = parse_stdout(run_cli("inspect '" + kStories + "' --json"));
  EXPECT_EQ(j["kind"], "model");
  EXPECT_EQ(j["format"], "hf");
  EXPECT_EQ(j["architecture"], cfg["architectures"][0]);
  for (const char* k : {"num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                        "intermediate_size", "vocab_size", "tie_word_embeddings", "torch_dtype", "rope_theta"})
    EXPECT_EQ(j[k], cfg[k]) << k;
  EXPECT_TRUE(j["sliding_window"].is_null());
  // Parameters from config.json alone: embeddings + per layer (2 norms + q,k,v,o + gate,up,down) + final norm;
  // the head is tied so it adds nothing.
  int64_t h = cfg["hidden_size"], I = cfg["intermediate_size"], V = cfg["vocab_size"], L = cfg["num_hidden_layers"];
  int64_t q = int64_t(cfg["num_attention_heads"]) * int64_t(cfg["head_dim"]);
  int64_t kv = int64_t(cfg["num_key_value_heads"]) * int64_t(cfg["head_dim"]);
  int64_t expected = V * h + L * (2 * h + h * q + 2 * h * kv + q * h + 3 * h * I) + h;
  EXPECT_EQ(j["parameter_count"].get<int64_t>(), expected);
  EXPECT_EQ(j["tensor_count"], L * 9 + 2);
  EXPECT_EQ(j["file_count"], 1);

  auto text = run_cli("inspect '" + kStories + "'");
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("LlamaForCausalLM"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(std::to_string(expected)), std::string::npos) << text.out;
}

TEST(CliInspect, SafetensorsFileListsTensors) {
  const std::string path = kStories + "/model.safetensors";
  json j = parse_stdout(run_cli("inspect '" + path + "' --json"));
  EXPECT_EQ(j["kind"], "safetensors");
  EXPECT_EQ(j["metadata"]["format"], "pt");
  // Bytes of data = file size - 8 - header length, read straight from the file.
  std::ifstream f(path, std::ios::binary);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  EXPECT_EQ(j["total_bytes"].get<uint64_t>(), fs::file_size(path) - 8 - n);
  EXPECT_EQ(j["tensor_count"], 47);
  EXPECT_EQ(j["tensors"].size(), 47u);
  bool found = false;
  for (auto& t : j["tensors"])
    if (t["name"] == "model.layers.0.self_attn.k_proj.weight") {
      found = true;
      EXPECT_EQ(t["dtype"], "F32");
      EXPECT_EQ(t["shape"], json({32, 64}));
    }
  EXPECT_TRUE(found);
}

TEST(CliInspect, AdapterFolder) {
  std::string dir = affinage::test::temp_dir("inspect_adapter");
  json cfg = {{"peft_type", "LORA"},
              {"r", 4},
              {"lora_alpha", 8},
              {"use_rslora", true},
              {"target_modules", {"q_proj", "v_proj"}},
              {"rank_pattern", {{"v_proj", 2}}},
              {"alpha_pattern", json::object()},
              {"base_model_name_or_path", "stories260K"}};
  affinage::write_file_atomic(dir + "/adapter_config.json", cfg.dump());
  std::vector<std::pair<std::string, at::Tensor>> ts;
  const std::string p = "base_model.model.model.layers.0.self_attn.";
  ts.emplace_back(p + "q_proj.lora_A.weight", at::zeros({4, 64}));
  ts.emplace_back(p + "q_proj.lora_B.weight", at::zeros({64, 4}));
  ts.emplace_back(p + "v_proj.lora_A.weight", at::zeros({2, 64}));
  ts.emplace_back(p + "v_proj.lora_B.weight", at::zeros({32, 2}));
  affinage::write_safetensors(dir + "/adapter_model.safetensors", ts);
  json j = parse_stdout(run_cli("inspect '" + dir + "' --json"));
  EXPECT_EQ(j["kind"], "adapter");
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_EQ(j["use_rslora"], true);
  EXPECT_EQ(j["target_modules"], json({"q_proj", "v_proj"}));
  EXPECT_EQ(j["rank_pattern"], json({{"v_proj", 2}}));
  EXPECT_FALSE(j.contains("alpha_pattern")) << "empty patterns are left out";
  EXPECT_EQ(j["base_model_name_or_path"], "stories260K");
  EXPECT_EQ(j["tensor_count"], 4);
  EXPECT_EQ(j["parameter_count"], 4 * 64 + 64 * 4 + 2 * 64 + 32 * 2);
  fs::remove_all(dir);
}

TEST(CliInspect, MissingPathFailsAndNamesIt) {
  auto r = run_cli("inspect /nonexistent/affinage_no_such_model --json");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("/nonexistent/affinage_no_such_model"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  auto none = run_cli("inspect");
  EXPECT_NE(none.code, 0);
  EXPECT_NE(none.err.find("path"), std::string::npos) << none.err;
  auto help = run_cli("inspect --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--json"), std::string::npos);
}
