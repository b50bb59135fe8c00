// safetensors files: memory-mapped, bounds-checked reading; atomic writing (temp file + rename).
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace affinage {

// dtype strings of the format: "F64","F32","F16","BF16","I64","I32","I16","I8","U8","BOOL".
at::ScalarType scalar_type_from_safetensors(const std::string& s, const std::string& where);
std::string safetensors_dtype_name(at::ScalarType t);  // throws for types the format lacks
size_t safetensors_dtype_size(const std::string& s);

struct TensorInfo {
  std::string name;
  std::string dtype;  // as in the header, e.g. "BF16"
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the start of the data section
};

class SafetensorsFile {
 public:
  // Maps the file and validates the whole header against the file size: header length, JSON, every
  // dtype, shape x dtype size == end - begin, offsets inside the data section. Errors name the file and tensor.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }               // in file order
  const TensorInfo* find(const std::string& name) const;                            // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"

  // Zero-copy CPU tensor over the mapping (read-only memory: never write to it). Valid while this object lives.
  at::Tensor view(const std::string& name) const;
  // An owned CPU tensor, cast to `dtype` when given (one tensor at a time: no second copy of the model).
  at::Tensor load(const std::string& name, std::optional<at::ScalarType> dtype = std::nullopt) const;
  // Drops the pages of tensor `name` from this process's memory (madvise DONTNEED; the file is unchanged and
  // a later read, also through a live view(), faults them back in). Streaming passes (merge) call it after
  // load() so the mapped file does not accumulate in resident memory.
  void release(const std::string& name) const;

 private:
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t size_ = 0;
  size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any device/dtype the format has; made contiguous and moved to CPU one at a time) to
// `path` atomically. metadata gets "format":"pt" unless it says otherwise.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       std::map<std::string, std::string> metadata = {});

}  // namespace affinage
