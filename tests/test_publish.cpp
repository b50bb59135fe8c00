// Publishing: SHA-256 against FIPS 180-4 vectors; a folder published from a real short run has its files
// byte for byte, a model card filled from the run (front matter, hyperparameters, data, eval) and a
// provenance manifest whose hashes match; a merged model publishes with its merge record; errors.
#include <filesystem>
#include <nlohmann/json.hpp>
#include "app/publish.h"
#include "base/files.h"
#include "io/safetensors.h"
#include "lora/merge.h"
#include "model/loader.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::expect_error;
using affinage::test::repo_path;
namespace fs = std::filesystem;
using json = nlohmann::json;

static bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
#define EXPECT_HAS(text, part) EXPECT_TRUE(has(text, part)) << "'" << (part) << "' not in:\n" << (text)

TEST(Publish, Sha256MatchesStandardVectors) {
  auto hex = [](const std::string& s, size_t chunk) {
    Sha256 h;
    for (size_t i = 0; i < s.size(); i += chunk) h.update(s.data() + i, std::min(chunk, s.size() - i));
    return h.hex();
  };
  EXPECT_EQ(hex("", 1), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex("abc", 1), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two =
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 56 bytes: padding spills a block
  EXPECT_EQ(hex(two, 7), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(hex(million, 4093), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  auto tmp = affinage::test::temp_dir("sha");
  write_file_atomic(tmp + "/a", million);
  EXPECT_EQ(sha256_file(tmp + "/a"), hex(million, 1 << 20));
  EXPECT_EQ(copy_file_sha256(tmp + "/a", tmp + "/b"), hex(million, 64));
  EXPECT_EQ(read_file(tmp + "/b"), million);
  expect_error([&] { copy_file_sha256(tmp + "/a", tmp + "/b"); }, {tmp + "/b"});  // never overwrites
  fs::remove_all(tmp);
}

// One real short SFT run shared by the tests below (about a second on one thread), removed at exit.
struct SharedRun {
  std::string root = affinage::test::temp_dir("publish_run"), dir = root + "/run";
  SharedRun() {
    auto r = affinage::test::run_cli(
        "run '" + repo_path("recipes/stories260k_sft.json") + "' --set 'output_dir=" + dir + "' --set 'model=" +
        repo_path("models/stories260K") + "' --set 'data.train=" + repo_path("datasets/data/shakespeare_train.jsonl") +
        "' --set 'data.eval=" + repo_path("datasets/data/shakespeare_eval.jsonl") +
        "' --set train.max_steps=2 --set train.batch_size=2 --set data.seq_len=64 --set eval.max_batches=1"
        " --set schedule.warmup_steps=0 --set checkpoint.every=0 --set threads=1");
    EXPECT_EQ(r.code, 0) << r.err;
  }
  ~SharedRun() { fs::remove_all(root); }
};
static const std::string& run_dir() {
  static SharedRun run;
  return run.dir;
}

TEST(Publish, AdapterFromARealRunHasFilesCardAndProvenance) {
  const std::string run = run_dir();
  auto tmp = affinage::test::temp_dir("publish_ad");
  auto r = affinage::test::run_cli("publish --adapter '" + run + "/adapter' --out '" + tmp +
                                   "/pub' --name me/stories-shakespeare --license mit");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "huggingface-cli upload me/stories-shakespeare " + tmp + "/pub .");
  EXPECT_HAS(r.err, "--base-model");  // the base is a local folder: the card cannot link it by itself
  const std::string pub = tmp + "/pub";
  for (auto* f : {"adapter_config.json", "adapter_model.safetensors"})
    EXPECT_EQ(sha256_file(pub + "/" + f), sha256_file(run + "/adapter/" + f)) << f;

  // the card: front matter, then sections filled from recipe.json, data_stats.json and summary.json
  const std::string card = read_file(pub + "/README.md");
  EXPECT_EQ(card.rfind("---\n", 0), 0u);
  auto fm = card.substr(0, card.find("\n---\n", 4));
  EXPECT_HAS(fm, "library_name: peft");
  EXPECT_HAS(fm, "license: \"mit\"");
  EXPECT_HAS(fm, "pipeline_tag: text-generation");
  EXPECT_HAS(fm, "tags:\n- affinage\n- \"sft\"\n- \"lora\"");
  EXPECT_FALSE(has(fm, "base_model:"));
  auto summary = json::parse(read_file(run + "/summary.json"));
  auto stats = json::parse(read_file(run + "/data_stats.json"));
  char buf[64];
  std::snprintf(buf, sizeof buf, "| eval_loss | %.5g | %.5g |", summary["initial_eval"]["eval_loss"].get<double>(),
                summary["eval"]["eval_loss"].get<double>());
  EXPECT_HAS(card, buf);
  std::snprintf(buf, sizeof buf, "| eval_perplexity | %.5g |",
                std::exp(summary["initial_eval"]["eval_loss"].get<double>()));
  EXPECT_HAS(card, buf);
  EXPECT_HAS(card, "| rows | " + std::to_string(stats["train"]["rows"].get<int64_t>()) + " | " +
                       std::to_string(stats["eval"]["rows"].get<int64_t>()) + " |");
  EXPECT_HAS(card, "| trained_tokens | " + std::to_string(stats["train"]["trained_tokens"].get<int64_t>()));
  EXPECT_HAS(card, "| lora.r | 8 |");
  EXPECT_HAS(card, "| optim.lr | 0.003 |");
  EXPECT_HAS(card, "| train.max_steps | 2 |");
  EXPECT_HAS(card, "| optimizer steps | 2 |");
  EXPECT_HAS(card, "`" + repo_path("datasets/data/shakespeare_train.jsonl") + "`");
  EXPECT_HAS(card, "PeftModel.from_pretrained(base, \"me/stories-shakespeare\")");
  EXPECT_HAS(card, "\"name\": \"stories260k_sft\"");  // the resolved recipe

  // provenance: the hashes are those of the files named
  auto prov = json::parse(read_file(pub + "/provenance.json"));
  EXPECT_EQ(prov["kind"], "adapter");
  EXPECT_EQ(prov["affinage_version"], AFFINAGE_VERSION);
  EXPECT_EQ(prov["published_files"]["adapter_model.safetensors"],
            sha256_file(run + "/adapter/adapter_model.safetensors"));
  EXPECT_EQ(prov["base_model"]["weights"]["model.safetensors"],
            sha256_file(repo_path("models/stories260K/model.safetensors")));
  ASSERT_EQ(prov["datasets"].size(), 2u);
  EXPECT_EQ(prov["datasets"][0]["role"], "train[0]");
  EXPECT_EQ(prov["datasets"][0]["sha256"], sha256_file(repo_path("datasets/data/shakespeare_train.jsonl")));
  EXPECT_EQ(prov["datasets"][1]["sha256"], sha256_file(repo_path("datasets/data/shakespeare_eval.jsonl")));
  EXPECT_EQ(prov["recipe"]["sha256"], sha256_file(run + "/recipe.json"));
  EXPECT_EQ(prov["run"]["steps"], 2);

  // --base-model: linked in the card and written into the published adapter_config.json (not the run's)
  PublishOptions o;
  o.adapter_dir = run + "/adapter", o.out_dir = tmp + "/pub2", o.base_model = "karpathy/tinyllamas";
  o.datasets = {"someone/shakespeare"};
  auto res = publish(o);
  EXPECT_EQ(res.name, "pub2");
  EXPECT_EQ(json::parse(read_file(tmp + "/pub2/adapter_config.json"))["base_model_name_or_path"],
            "karpathy/tinyllamas");
  EXPECT_EQ(json::parse(read_file(run + "/adapter/adapter_config.json"))["base_model_name_or_path"],
            repo_path("models/stories260K"));
  auto card2 = read_file(tmp + "/pub2/README.md");
  EXPECT_HAS(card2, "base_model: \"karpathy/tinyllamas\"");
  EXPECT_HAS(card2, "license: \"other\"");
  EXPECT_HAS(card2, "datasets:\n- \"someone/shakespeare\"");
  fs::remove_all(tmp);
}

TEST(Publish, MergedModelCarriesItsMergeAndTheAdaptersRun) {
  const std::string run = run_dir();
  auto tmp = affinage::test::temp_dir("publish_model");
  MergeOptions m;
  m.model_dir = repo_path("models/stories260K"), m.adapters = {{run + "/adapter", 1.0}}, m.out_dir = tmp + "/merged";
  merge_adapters(m);
  PublishOptions o;
  o.model_dir = tmp + "/merged", o.out_dir = tmp + "/pub", o.name = "me/stories-merged", o.license = "mit";
  auto res = publish(o);
  for (auto* f : {"model.safetensors", "config.json", "generation_config.json", "tokenizer.model",
                  "tokenizer_config.json", "LICENSE", "affinage_merge.json", "README.md", "provenance.json"})
    EXPECT_TRUE(fs::exists(tmp + "/pub/" + f)) << f;
  EXPECT_EQ(sha256_file(tmp + "/pub/model.safetensors"), sha256_file(tmp + "/merged/model.safetensors"));
  auto card = read_file(tmp + "/pub/README.md");
  EXPECT_HAS(card, "library_name: transformers");
  EXPECT_HAS(card, "- \"merge\"");
  EXPECT_HAS(card, "## Merge");
  EXPECT_HAS(card, "method **linear**");
  EXPECT_HAS(card, "AutoModelForCausalLM.from_pretrained(\"me/stories-merged\"");
  EXPECT_HAS(card, "| eval_loss |");  // found through the merge record: adapter -> its run
  auto prov = json::parse(read_file(tmp + "/pub/provenance.json"));
  EXPECT_EQ(prov["kind"], "model");
  EXPECT_EQ(prov["merged_adapters"][0]["files"]["adapter_model.safetensors"],
            sha256_file(run + "/adapter/adapter_model.safetensors"));
  EXPECT_EQ(prov["base_model"]["weights"]["model.safetensors"],
            sha256_file(repo_path("models/stories260K/model.safetensors")));
  EXPECT_EQ(prov["run"]["path"], fs::absolute(run).lexically_normal().string());
  load_model(tmp + "/pub");  // the published folder is a model folder
  fs::remove_all(tmp);
}

TEST(Publish, WithoutARunAndErrors) {
  auto tmp = affinage::test::temp_dir("publish_err");
  fs::create_directories(tmp + "/ad");
  write_safetensors(tmp + "/ad/adapter_model.safetensors",
                    {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", torch::zeros({2, 64})},
                     {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", torch::zeros({64, 2})}});
  write_file_atomic(tmp + "/ad/adapter_config.json",
                    R"({"peft_type":"LORA","base_model_name_or_path":"mistralai/Mistral-7B-v0.3"})");
  PublishOptions o;
  o.adapter_dir = tmp + "/ad", o.out_dir = tmp + "/pub";
  auto res = publish(o);
  auto card = read_file(tmp + "/pub/README.md");
  EXPECT_HAS(card, "base_model: \"mistralai/Mistral-7B-v0.3\"");  // a Hub id: linked as is
  EXPECT_HAS(card, "No training run was found");
  EXPECT_TRUE(json::parse(read_file(tmp + "/pub/provenance.json"))["recipe"].is_null());
  EXPECT_FALSE(res.notes.empty());

  PublishOptions both = o;
  both.model_dir = repo_path("models/stories260K");
  expect_error([&] { publish(both); }, {"either an adapter folder or a model folder"});
  expect_error([&] { publish(o); }, {tmp + "/pub", "not empty"});
  o.out_dir = tmp + "/pub3";
  o.run_dir = tmp;
  expect_error([&] { publish(o); }, {"--run", "recipe.json"});
  PublishOptions bad;
  bad.adapter_dir = repo_path("models/stories260K"), bad.out_dir = tmp + "/pub4";
  expect_error([&] { publish(bad); }, {"adapter_config.json", "PEFT adapter folder"});
  PublishOptions nomodel;
  nomodel.model_dir = tmp + "/ad", nomodel.out_dir = tmp + "/pub5";
  expect_error([&] { publish(nomodel); }, {"config.json", "Hugging Face model folder"});
  EXPECT_FALSE(fs::exists(tmp + "/pub3"));
  EXPECT_FALSE(fs::exists(tmp + "/pub4"));
  auto r = affinage::test::run_cli("publish --out '" + tmp + "/pub6'");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "--adapter DIR and --model DIR");
  fs::remove_all(tmp);
}
