// TensorBoard event files: CRC32C against published vectors, and files read back by a plain reader written here
// (TFRecord frames, CRCs, protobuf fields) rather than by the writer's own code; a real run's events match
// its metrics.jsonl.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include "base/files.h"
#include "io/safetensors.h"
#include "io/tfevents.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using affinage::test::repo_path;

namespace {

// --- an independent reader: the spec, step by step
struct Scalar {
  std::string tag;
  float value;
  int64_t step;
  double wall_time;
};
struct Events {
  std::string file_version;
  std::vector<Scalar> scalars;
  int records = 0;
};

uint32_t crc32c_bitwise(const unsigned char* p, size_t n) {  // no table: the definition itself
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
  }
  return ~c;
}
uint32_t unmask(uint32_t m) {
  uint32_t r = m - 0xa282ead8u;
  return (r >> 17) | (r << 15);
}
uint64_t le(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
struct Pb {  // protobuf wire-format cursor
  const unsigned char *p, *end;
  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int s = 0; p < end; s += 7) {
      unsigned char b = *p++;
      v |= uint64_t(b & 0x7f) << s;
      if (!(b & 0x80)) return v;
    }
    ADD_FAILURE() << "truncated varint";
    return v;
  }
  std::string bytes() {
    uint64_t n = varint();
    if (n > uint64_t(end - p)) {
      ADD_FAILURE() << "length past the end";
      n = end - p;
    }
    std::string s(reinterpret_cast<const char*>(p), n);
    p += n;
    return s;
  }
  uint64_t fixed(int n) {
    uint64_t v = le(p, n);
    p += n;
    return v;
  }
};
Pb pb(const std::string& s) {
  return {reinterpret_cast<const unsigned char*>(s.data()),
          reinterpret_cast<const unsigned char*>(s.data()) + s.size()};
}

Events read_events(const std::string& path) {
  Events out;
  std::string b = affinage::read_file(path);
  auto u = reinterpret_cast<const unsigned char*>(b.data());
  size_t i = 0;
  while (i < b.size()) {
    if (b.size() - i < 12) {
      ADD_FAILURE() << "truncated frame header at byte " << i;
      break;
    }
    uint64_t len = le(u + i, 8);
    EXPECT_EQ(unmask(uint32_t(le(u + i + 8, 4))), crc32c_bitwise(u + i, 8)) << "length CRC at byte " << i;
    if (b.size() - i - 12 < len + 4) {
      ADD_FAILURE() << "truncated record at byte " << i;
      break;
    }
    EXPECT_EQ(unmask(uint32_t(le(u + i + 12 + len, 4))), crc32c_bitwise(u + i + 12, len)) << "data CRC at " << i;
    std::string data = b.substr(i + 12, len);
    i += 12 + len + 4;
    ++out.records;
    double wall = 0;
    int64_t step = 0;
    std::vector<std::pair<std::string, float>> values;
    for (Pb e = pb(data); !e.done();) {
      uint64_t key = e.varint();
      int field = int(key >> 3), wt = int(key & 7);
      if (field == 1 && wt == 1) {
        uint64_t x = e.fixed(8);
        std::memcpy(&wall, &x, 8);
      } else if (field == 2 && wt == 0) step = int64_t(e.varint());
      else if (field == 3 && wt == 2) out.file_version = e.bytes();
      else if (field == 5 && wt == 2) {
        std::string summary = e.bytes();
        for (Pb s = pb(summary); !s.done();) {
          EXPECT_EQ(s.varint(), (1u << 3) | 2) << "Summary holds only values";
          std::string value = s.bytes();
          std::string tag;
          float f = NAN;
          for (Pb v = pb(value); !v.done();) {
            uint64_t k = v.varint();
            if (k == ((1 << 3) | 2)) tag = v.bytes();
            else if (k == ((2 << 3) | 5)) {
              uint32_t x = uint32_t(v.fixed(4));
              std::memcpy(&f, &x, 4);
            } else {
              ADD_FAILURE() << "unexpected Value field key " << k;
              return out;
            }
          }
          values.push_back({tag, f});
        }
      } else {
        ADD_FAILURE() << "unexpected Event field key " << key;
        return out;
      }
    }
    for (auto& [tag, f] : values) out.scalars.push_back({tag, f, step, wall});
  }
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> v;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) v.push_back(e.path().string());
  return v;
}

}  // namespace

TEST(TfEvents, Crc32cMatchesPublishedVectors) {
  const std::string digits = "123456789";
  EXPECT_EQ(affinage::crc32c(digits.data(), digits.size()), 0xE3069283u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xff, ascending, descending.
  unsigned char buf[32];
  std::memset(buf, 0, 32);
  EXPECT_EQ(affinage::crc32c(buf, 32), 0x8A9136AAu);
  std::memset(buf, 0xff, 32);
  EXPECT_EQ(affinage::crc32c(buf, 32), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = uint8_t(i);
  EXPECT_EQ(affinage::crc32c(buf, 32), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = uint8_t(31 - i);
  EXPECT_EQ(affinage::crc32c(buf, 32), 0x113FDB5Cu);
  EXPECT_EQ(affinage::crc32c(nullptr, 0), 0u);
  // Continuing a CRC over a split buffer gives the whole buffer's CRC.
  EXPECT_EQ(affinage::crc32c(digits.data() + 4, 5, affinage::crc32c(digits.data(), 4)), 0xE3069283u);
  // The mask, worked by hand from its definition for "123456789".
  uint32_t c = 0xE3069283u;
  EXPECT_EQ(affinage::masked_crc32c(digits.data(), digits.size()), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TfEvents, WrittenFileParsesBackWithAPlainReader) {
  auto dir = affinage::test::temp_dir("tfevents");
  std::string path;
  {
    affinage::EventWriter w(dir);
    path = w.path();
    w.add_scalar("train/loss", 2.5f, 1, 1700000000.25);
    w.add_scalar("a tag/with ünïcode", -1e-8f, 1234567890123LL, 1700000001.0);
    w.add_metrics({{"step", 7},
                   {"loss", 1.25},
                   {"lr", 3e-4},
                   {"eval_loss", 1.5},
                   {"rewards/chosen", -0.5},
                   {"eval_rewards/margins", 0.75},
                   {"note", "skipped"}},
                  1700000002.0);
  }
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(dir));
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u) << path;
  auto ev = read_events(path);
  EXPECT_EQ(ev.file_version, "brain.Event:2");
  EXPECT_EQ(ev.records, 1 + 2 + 5);
  ASSERT_EQ(ev.scalars.size(), 7u);
  EXPECT_EQ(ev.scalars[0].tag, "train/loss");
  EXPECT_EQ(ev.scalars[0].value, 2.5f);
  EXPECT_EQ(ev.scalars[0].step, 1);
  EXPECT_EQ(ev.scalars[0].wall_time, 1700000000.25);
  EXPECT_EQ(ev.scalars[1].tag, "a tag/with ünïcode");
  EXPECT_EQ(ev.scalars[1].value, -1e-8f);
  EXPECT_EQ(ev.scalars[1].step, 1234567890123LL);
  std::map<std::string, float> m;
  for (size_t i = 2; i < ev.scalars.size(); ++i) {
    m[ev.scalars[i].tag] = ev.scalars[i].value;
    EXPECT_EQ(ev.scalars[i].step, 7);
  }
  std::map<std::string, float> want = {{"train/loss", 1.25f},
                                       {"train/lr", 3e-4f},
                                       {"eval/loss", 1.5f},
                                       {"train/rewards/chosen", -0.5f},
                                       {"eval/rewards/margins", 0.75f}};
  EXPECT_EQ(m, want);
  // A second writer in the same second gets its own file.
  affinage::EventWriter w2(dir);
  EXPECT_NE(w2.path(), path);
  // A flipped bit is caught by the reader (so the CRC checks above can fail).
  std::string bytes = affinage::read_file(path);
  bytes[bytes.size() - 6] ^= 1;
  affinage::write_file_atomic(dir + "/corrupt", bytes);
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter rep(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    read_events(dir + "/corrupt");
  }
  EXPECT_GE(failures.size(), 1);
  fs::remove_all(dir);
}

TEST(TfEvents, RunEventsReplacesOldFilesAndReplaysMetrics) {
  auto dir = affinage::test::temp_dir("tfevents_run");
  affinage::write_file_atomic(dir + "/events.out.tfevents.1.old", "stale");
  affinage::write_file_atomic(dir + "/metrics.jsonl", "{\"step\":0,\"eval_loss\":5.0}\n{\"step\":10,\"loss\":4.0}\n");
  {
    affinage::RunEvents events(dir);
    events.write({{"step", 20}, {"loss", 3.0}});
  }
  auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u);
  auto ev = read_events(files[0]);
  ASSERT_EQ(ev.scalars.size(), 3u);
  EXPECT_EQ(ev.scalars[0].tag, "eval/loss");
  EXPECT_EQ(ev.scalars[0].step, 0);
  EXPECT_EQ(ev.scalars[1].tag, "train/loss");
  EXPECT_EQ(ev.scalars[1].step, 10);
  EXPECT_EQ(ev.scalars[2].value, 3.0f);
  EXPECT_EQ(ev.scalars[2].step, 20);
  fs::remove_all(dir);
}

TEST(TfEvents, ARealRunWritesEveryMetricsLineAsScalars) {
  auto root = affinage::test::temp_dir("tfevents_real");
  std::string dir = root + "/run";
  auto r = affinage::test::run_cli(
      "run '" + repo_path("recipes/stories260k_sft.json") + "' --set 'output_dir=" + dir + "' --set 'model=" +
      repo_path("models/stories260K") + "' --set 'data.train=" + repo_path("datasets/data/shakespeare_train.jsonl") +
      "' --set 'data.eval=" + repo_path("datasets/data/shakespeare_eval.jsonl") +
      "' --set train.max_steps=3 --set log_every=1 --set train.batch_size=2 --set data.seq_len=64"
      " --set eval.max_batches=1 --set checkpoint.every=0 --set threads=1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u);
  auto ev = read_events(files[0]);
  std::map<std::pair<std::string, int64_t>, float> got;
  for (auto& s : ev.scalars) got[{s.tag, s.step}] = s.value;
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  size_t want = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    int64_t step = j["step"];
    for (auto& [k, v] : j.items()) {
      if (k == "step") continue;
      std::string tag = k.rfind("eval_", 0) == 0 ? "eval/" + k.substr(5) : "train/" + k;
      ++want;
      ASSERT_TRUE(got.count(std::make_pair(tag, step))) << tag << " at step " << step;
      EXPECT_EQ(got.at(std::make_pair(tag, step)), v.get<float>()) << tag << " at step " << step;
    }
  }
  EXPECT_EQ(ev.scalars.size(), want);
  EXPECT_TRUE(got.count({"train/loss", 3}) && got.count({"train/lr", 1}) && got.count({"eval/loss", 0}));
  fs::remove_all(root);
}
