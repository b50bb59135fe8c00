// safetensors: round trips of every dtype, the on-disk layout checked by hand, hostile headers, atomic writes.
#include <cstring>
#include <filesystem>
#include <fstream>
#include "base/error.h"
#include "base/files.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace affinage;
using affinage::test::tensors_close;
using json = nlohmann::json;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A safetensors file assembled byte by byte: u64 little-endian length, header text, data.
void write_raw(const std::string& path, uint64_t n, const std::string& header, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << data;
}
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  write_raw(path, header.size(), header, data);
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Expects an affinage::Error whose message contains `needle` (the file name, at least).
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  std::string dir = test::temp_dir("st_dtypes"), path = dir + "/all.safetensors";
  // Values chosen to be exact in every dtype they are stored in (small integers, halves, negatives).
  auto base = at::tensor({0.0, 1.0, -2.0, 3.5, -0.25, 100.0}, at::kDouble).reshape({2, 3});
  std::vector<std::pair<std::string, at::ScalarType>> kinds = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}};
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (auto& [n, t] : kinds) ts.emplace_back("f." + n, base.to(t));
  auto ints = at::tensor({0, 1, -2, 3, -100, 127}, at::kLong).reshape({3, 2});
  for (auto t : {at::kLong, at::kInt, at::kShort, at::kChar})
    ts.emplace_back(std::string("i.") + c10::toString(t), ints.to(t));
  ts.emplace_back("u8", at::tensor({0, 1, 2, 255}, at::kLong).to(at::kByte));
  ts.emplace_back("bool", at::tensor({1, 0, 0, 1, 1}, at::kLong).to(at::kBool));
  ts.emplace_back("scalar", at::tensor(7.0, at::kFloat).reshape({}));
  ts.emplace_back("empty", at::zeros({0, 4}, at::kFloat));
  ts.emplace_back("strided", base.to(at::kFloat).t());  // non-contiguous input must be written row-major
  write_safetensors(path, ts);

  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), ts.size());
  const std::map<at::ScalarType, std::string> names = {
      {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kBFloat16, "BF16"}, {at::kLong, "I64"},
      {at::kInt, "I32"},    {at::kShort, "I16"}, {at::kChar, "I8"},  {at::kByte, "U8"},       {at::kBool, "BOOL"}};
  for (auto& [name, t] : ts) {
    const TensorInfo* info = f.find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->dtype, names.at(t.scalar_type())) << name;
    EXPECT_EQ(info->shape, t.sizes().vec()) << name;
    at::Tensor back = f.load(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(tensors_close(back, t, 0.0)) << name;
  }
  // Cast on load: F16 values read as F32 exactly.
  EXPECT_TRUE(tensors_close(f.load("f.F16", at::kFloat), base, 0.0));
  EXPECT_EQ(f.load("f.F16", at::kFloat).scalar_type(), at::kFloat);
  fs::remove_all(dir);
}

TEST(Safetensors, OnDiskLayoutMatchesTheFormatByHand) {
  std::string dir = test::temp_dir("st_layout"), path = dir + "/x.safetensors";
  write_safetensors(path, {{"b", at::tensor({1.0f, 2.0f}, at::kFloat)}, {"a", at::tensor({-1}, at::kShort)}});
  std::string bytes = slurp(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  ASSERT_EQ(n % 8, 0u) << "header must be padded to 8 bytes";
  std::string header = bytes.substr(8, n);
  size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << "padding must be spaces";
  EXPECT_LT(n - close - 1, 8u) << "no more padding than needed";
  json h = json::parse(header);
  EXPECT_EQ(h["__metadata__"]["format"], "pt");
  EXPECT_EQ(h["b"]["dtype"], "F32");
  EXPECT_EQ(h["b"]["data_offsets"], json({0, 8}));
  EXPECT_EQ(h["a"]["dtype"], "I16");
  EXPECT_EQ(h["a"]["data_offsets"], json({8, 10}));
  EXPECT_EQ(header.find("\"b\"") < header.find("\"a\""), true) << "tensors must keep the order given";
  // IEEE-754 little-endian: 1.0f = 00 00 80 3f, 2.0f = 00 00 00 40; int16 -1 = ff ff.
  const unsigned char want[] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40, 0xff, 0xff};
  ASSERT_EQ(bytes.size(), 8 + n + sizeof want);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, want, sizeof want), 0);
  fs::remove_all(dir);
}

TEST(Safetensors, MetadataIsKept) {
  std::string dir = test::temp_dir("st_meta");
  write_safetensors(dir + "/a.safetensors", {{"x", at::ones({2})}}, {{"recipe", "sft"}, {"step", "12"}});
  SafetensorsFile a(dir + "/a.safetensors");
  EXPECT_EQ(a.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"recipe", "sft"}, {"step", "12"}}));
  write_safetensors(dir + "/b.safetensors", {{"x", at::ones({2})}}, {{"format", "mlx"}});
  EXPECT_EQ(SafetensorsFile(dir + "/b.safetensors").metadata().at("format"), "mlx");
  // A file without __metadata__ (allowed by the format) reads with empty metadata.
  write_raw(dir + "/c.safetensors", R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "z");
  SafetensorsFile c(dir + "/c.safetensors");
  EXPECT_TRUE(c.metadata().empty());
  EXPECT_EQ(c.load("x").item<uint8_t>(), static_cast<uint8_t>('z'));
  fs::remove_all(dir);
}

TEST(Safetensors, ViewIsZeroCopyAndLoadIsOwned) {
  std::string dir = test::temp_dir("st_view"), path = dir + "/v.safetensors";
  auto t = at::arange(12, at::kFloat).reshape({3, 4});
  write_safetensors(path, {{"t", t}});
  SafetensorsFile f(path);
  at::Tensor v1 = f.view("t"), v2 = f.view("t"), l = f.load("t");
  EXPECT_EQ(v1.data_ptr(), v2.data_ptr()) << "views must point into the one mapping";
  EXPECT_NE(l.data_ptr(), v1.data_ptr()) << "load() must copy";
  EXPECT_TRUE(tensors_close(v1, t, 0.0));
  l.add_(1);  // writable, and the file's bytes are untouched
  EXPECT_TRUE(tensors_close(f.view("t"), t, 0.0));
  EXPECT_EQ(f.find("missing"), nullptr);
  expect_error([&] { f.view("missing"); }, "missing");
  fs::remove_all(dir);
}

TEST(Safetensors, HostileFilesGiveErrorsNotCrashes) {
  std::string dir = test::temp_dir("st_hostile");
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\0');
  int k = 0;
  // Each file must fail for its own reason: the message names the file and contains `reason`.
  auto check = [&](const std::function<void(const std::string&)>& make, const std::string& why,
                   const std::string& reason) {
    std::string p = dir + "/bad" + std::to_string(k++) + ".safetensors";
    make(p);
    SCOPED_TRACE(why);
    expect_error([&] { SafetensorsFile f(p); }, p);
    expect_error([&] { SafetensorsFile f(p); }, reason);
  };
  // Sanity: the well-formed version of these files loads.
  write_raw(dir + "/good.safetensors", "{" + ok_entry + "}", data8);
  EXPECT_NO_THROW(SafetensorsFile(dir + "/good.safetensors"));

  check([](auto& p) { std::ofstream(p, std::ios::binary) << "abc"; }, "shorter than the length field", "too short");
  check([](auto& p) { std::ofstream(p, std::ios::binary); }, "empty file", "too short");
  check([&](auto& p) { write_raw(p, 1000, "{" + ok_entry + "}", data8); }, "header length past the end",
        "is larger than");
  check([&](auto& p) { write_raw(p, 1ull << 62, "{}", ""); }, "absurd header length", "limit");
  check([&](auto& p) { write_raw(p, "{" + ok_entry, data8); }, "JSON cut short", "not valid JSON");
  check([&](auto& p) { write_raw(p, "[1,2]", ""); }, "header not an object", "must be a JSON object");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", data8); },
        "offsets past the end of the data", "run past the data section");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8); },
        "shape x dtype != byte span", "needs 12 bytes");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F8_E9M9","shape":[2],"data_offsets":[0,2]}})", data8); },
        "unknown dtype", "unknown safetensors dtype");
  check(
      [&](auto& p) {
        write_raw(p, R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", data8);
      },
      "shape product overflows 64 bits", "overflows");
  check(
      [&](auto& p) {
        write_raw(p, R"({"t":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", data8);
      },
      "element count fits but bytes overflow", "overflows");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8); },
        "negative dimension", "non-negative");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data8); },
        "begin > end", "begin > end");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data8); },
        "one offset only", "[begin, end]");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data8); },
        "negative offset", "non-negative");
  check([&](auto& p) { write_raw(p, R"({"t":{"shape":[2],"data_offsets":[0,8]}})", data8); }, "no dtype",
        "'dtype' missing");
  check([&](auto& p) { write_raw(p, R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", data8); },
        "fractional dimension", "non-negative integers");
  check([&](auto& p) { write_raw(p, R"({"__metadata__":{"step":3},)" + ok_entry + "}", data8); },
        "metadata value not a string", "string value");
  // The real fixture cut in half: header intact, data truncated.
  check(
      [&](auto& p) {
        std::string full = slurp(test::repo_path("models/stories260K/model.safetensors"));
        std::ofstream(p, std::ios::binary) << full.substr(0, full.size() / 2);
      },
      "truncated real checkpoint", "run past the data section");
  expect_error([&] { SafetensorsFile f(dir + "/does_not_exist.safetensors"); }, "does_not_exist.safetensors");
  fs::remove_all(dir);
}

TEST(Safetensors, AtomicWriteLeavesNoTempFiles) {
  std::string dir = test::temp_dir("st_atomic");
  write_safetensors(dir + "/m.safetensors", {{"x", at::ones({4})}});
  EXPECT_EQ(listing(dir), std::vector<std::string>{"m.safetensors"});

  // Overwriting replaces the old file whole.
  write_safetensors(dir + "/m.safetensors", {{"y", at::zeros({2}, at::kInt)}});
  SafetensorsFile f(dir + "/m.safetensors");
  EXPECT_EQ(f.find("x"), nullptr);
  EXPECT_NE(f.find("y"), nullptr);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"m.safetensors"});

  // A dtype the format lacks: an Error naming the tensor; neither the final nor a temp file appears.
  auto c = at::ones({2}, at::kComplexFloat);
  expect_error([&] { write_safetensors(dir + "/bad.safetensors", {{"ok", at::ones({2})}, {"cplx", c}}); }, "cplx");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"m.safetensors"});

  // A failure after the data is written (the final name is taken by a folder, so the rename fails):
  // the temp file must be removed and the folder left as it was.
  fs::create_directories(dir + "/taken.safetensors/inside");
  EXPECT_THROW(write_safetensors(dir + "/taken.safetensors", {{"x", at::ones({1000})}}), Error);
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"m.safetensors", "taken.safetensors"}));
  EXPECT_TRUE(fs::is_directory(dir + "/taken.safetensors/inside"));

  // Duplicate names are refused before anything is written.
  EXPECT_THROW(write_safetensors(dir + "/dup.safetensors", {{"x", at::ones({1})}, {"x", at::ones({1})}}), Error);
  EXPECT_FALSE(fs::exists(dir + "/dup.safetensors"));
  fs::remove_all(dir);
}

TEST(Safetensors, WriteFileAtomicAndReadFile) {
  std::string dir = test::temp_dir("st_file");
  std::string text = std::string("line one\n") + '\0' + "binary\xff tail";
  write_file_atomic(dir + "/a.txt", text);
  EXPECT_EQ(read_file(dir + "/a.txt"), text);
  write_file_atomic(dir + "/a.txt", "short");
  EXPECT_EQ(read_file(dir + "/a.txt"), "short");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"a.txt"});
  expect_error([&] { read_file(dir + "/nope.json"); }, "nope.json");
  expect_error([&] { write_file_atomic(dir + "/no_such_folder/x.json", "{}"); }, "no_such_folder");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"a.txt"});
  fs::remove_all(dir);
}

TEST(Safetensors, Stories260KFixtureLoads) {
  const std::string path = test::repo_path("models/stories260K/model.safetensors");
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  // Shapes from config.json: vocab 512, hidden 64, 8 heads x 8, 4 KV heads x 8, intermediate 172, 5 layers, tied.
  EXPECT_EQ(f.tensors().size(), 5u * 9 + 2);
  ASSERT_NE(f.find("model.embed_tokens.weight"), nullptr);
  EXPECT_EQ(f.find("model.embed_tokens.weight")->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(f.find("model.layers.0.self_attn.q_proj.weight")->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(f.find("model.layers.0.self_attn.k_proj.weight")->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(f.find("model.layers.4.mlp.down_proj.weight")->shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(f.find("model.norm.weight")->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(f.find("lm_head.weight"), nullptr);

  // A second, plain reader: parse the header by hand and read the floats at the stated offsets.
  std::string bytes = slurp(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  json h = json::parse(bytes.substr(8, n));
  for (const char* name :
       {"model.layers.0.self_attn.k_proj.weight", "model.norm.weight", "model.embed_tokens.weight"}) {
    uint64_t b = h[name]["data_offsets"][0], e = h[name]["data_offsets"][1];
    std::vector<float> ref((e - b) / 4);
    std::memcpy(ref.data(), bytes.data() + 8 + n + b, e - b);
    at::Tensor want = at::from_blob(ref.data(), {static_cast<int64_t>(ref.size())}, at::kFloat).clone();
    EXPECT_TRUE(tensors_close(f.view(name).flatten(), want, 0.0)) << name;
    EXPECT_TRUE(tensors_close(f.load(name).flatten(), want, 0.0)) << name;
    EXPECT_GT(want.abs().sum().item<double>(), 0.0) << name << " should hold real weights";
  }
}
