// TensorBoard event files (tfevents) without TensorFlow or a protobuf library: TFRecord framing with masked
// CRC32C around hand-encoded `Event` protobufs that carry scalar summaries, so `tensorboard --logdir` shows a run.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace affinage {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// TFRecord's masked form: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

// One TFRecord: uint64 length (little endian), masked CRC of those 8 bytes, the data, masked CRC of the data.
std::string tfrecord_frame(const std::string& data);
// A serialized tensorflow.Event with wall_time, step and a Summary of one simple_value.
std::string scalar_event(const std::string& tag, float value, int64_t step, double wall_time);

// An events file `events.out.tfevents.<unix time>.<hostname>` in `dir` (a ".N" suffix is added when that name
// is taken). The first record is the file_version event "brain.Event:2"; every record is flushed as written.
class EventWriter {
 public:
  explicit EventWriter(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;
  const std::string& path() const { return path_; }
  void add_scalar(const std::string& tag, float value, int64_t step, double wall_time = -1);  // -1: now
  // One metrics.jsonl line as scalars at its "step", tagged like Hugging Face's Trainer: "eval_x" -> "eval/x",
  // anything else -> "train/x" (e.g. train/loss, train/rewards/chosen, eval/loss). Non-numbers are skipped.
  void add_metrics(const nlohmann::json& line, double wall_time = -1);

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::FILE* f_ = nullptr;
};

// The TensorBoard mirror of a run's metrics.jsonl: removes the folder's earlier events files, opens a new one
// and replays the lines metrics.jsonl holds now (none for a fresh run, the kept steps after a resume), so the
// events never disagree with metrics.jsonl.
class RunEvents {
 public:
  explicit RunEvents(const std::string& output_dir);
  void write(const nlohmann::json& line) { w_.add_metrics(line); }

 private:
  static std::string prepare(const std::string& output_dir);
  EventWriter w_;
};

}  // namespace affinage
