// TensorBoard event files (see io/tfevents.h). Field numbers from tensorflow/core/util/event.proto and
// summary.proto: Event{1 wall_time double, 2 step int64, 3 file_version string, 5 summary Summary},
// Summary{1 repeated Value}, Value{1 tag string, 2 simple_value float}.
#include "io/tfevents.h"
#include <unistd.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include "base/error.h"

namespace fs = std::filesystem;

namespace affinage {

static const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return t;
}

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  const auto& t = crc32c_table();
  auto p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// --- little-endian and protobuf wire-format pieces
static void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
static void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}
static void put_key(std::string& s, int field, int wire_type) { put_varint(s, (uint64_t(field) << 3) | wire_type); }
static void put_bytes(std::string& s, int field, const std::string& b) {
  put_key(s, field, 2);
  put_varint(s, b.size());
  s += b;
}
static void put_double(std::string& s, int field, double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  put_key(s, field, 1);
  put_le(s, u, 8);
}
static void put_float(std::string& s, int field, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  put_key(s, field, 5);
  put_le(s, u, 4);
}
static std::string event_head(int64_t step, double wall_time) {
  std::string e;
  put_double(e, 1, wall_time);
  put_key(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));  // int64: two's complement as a 10-byte varint when negative
  return e;
}

std::string tfrecord_frame(const std::string& data) {
  std::string len;
  put_le(len, data.size(), 8);
  std::string r = len;
  put_le(r, masked_crc32c(len.data(), len.size()), 4);
  r += data;
  put_le(r, masked_crc32c(data.data(), data.size()), 4);
  return r;
}

std::string scalar_event(const std::string& tag, float value, int64_t step, double wall_time) {
  std::string v, summary, e = event_head(step, wall_time);
  put_bytes(v, 1, tag);
  put_float(v, 2, value);
  put_bytes(summary, 1, v);
  put_bytes(e, 5, summary);
  return e;
}

static double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

EventWriter::EventWriter(const std::string& dir) {
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = 0;
  double t = now_s();
  std::string base = dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(t)) + "." + host;
  path_ = base;
  for (int k = 1; fs::exists(path_); ++k) path_ = base + "." + std::to_string(k);
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_)
    fail("cannot create TensorBoard events file '", path_, "': ", std::strerror(errno), " (is ", dir, " writable?)");
  std::string e = event_head(0, t);
  put_bytes(e, 3, "brain.Event:2");
  write_record(e);
}

EventWriter::~EventWriter() {
  if (f_) std::fclose(f_);
}

void EventWriter::write_record(const std::string& data) {
  std::string r = tfrecord_frame(data);
  if (std::fwrite(r.data(), 1, r.size(), f_) != r.size() || std::fflush(f_) != 0)
    fail("writing TensorBoard events file '", path_, "' failed: ", std::strerror(errno));
}

void EventWriter::add_scalar(const std::string& tag, float value, int64_t step, double wall_time) {
  write_record(scalar_event(tag, value, step, wall_time < 0 ? now_s() : wall_time));
}

void EventWriter::add_metrics(const nlohmann::json& line, double wall_time) {
  if (!line.is_object() || !line.contains("step") || !line["step"].is_number()) return;
  int64_t step = line["step"].get<int64_t>();
  double t = wall_time < 0 ? now_s() : wall_time;
  for (auto& [k, v] : line.items()) {
    if (k == "step" || !v.is_number()) continue;
    std::string tag = k.rfind("eval_", 0) == 0 ? "eval/" + k.substr(5) : "train/" + k;
    add_scalar(tag, v.get<float>(), step, t);
  }
}

std::string RunEvents::prepare(const std::string& output_dir) {
  fs::create_directories(output_dir);
  for (auto& e : fs::directory_iterator(output_dir))
    if (e.is_regular_file() && e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) fs::remove(e.path());
  return output_dir;
}

RunEvents::RunEvents(const std::string& output_dir) : w_(prepare(output_dir)) {
  std::ifstream in(output_dir + "/metrics.jsonl");
  std::string s;
  while (std::getline(in, s)) {
    auto line = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
    if (!line.is_discarded()) w_.add_metrics(line);
  }
}

}  // namespace affinage
