// safetensors reading (mmap, every header field bound-checked) and atomic writing (temp file, fsync, rename).
#include "io/safetensors.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include "base/error.h"
#include "base/files.h"

namespace affinage {

namespace {

// The reference implementation (huggingface/safetensors) refuses headers above 100 MB; a header that
// large is either hostile or broken, and we would otherwise allocate whatever the file claims.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeRow {
  const char* name;
  at::ScalarType type;
  size_t size;
};
const DtypeRow kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeRow* find_dtype(const std::string& s) {
  for (auto& row : kDtypes)
    if (s == row.name) return &row;
  return nullptr;
}

std::string errno_text() { return std::strerror(errno); }

// a * b, or nullopt when it overflows uint64.
std::optional<uint64_t> mul_checked(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

}  // namespace

at::ScalarType scalar_type_from_safetensors(const std::string& s, const std::string& where) {
  if (auto* row = find_dtype(s)) return row->type;
  fail(where, ": unknown safetensors dtype '", s, "' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

std::string safetensors_dtype_name(at::ScalarType t) {
  for (auto& row : kDtypes)
    if (row.type == t) return row.name;
  fail("tensors of dtype ", c10::toString(t),
       " cannot be stored in safetensors by affinage "
       "(supported: float64/32/16, bfloat16, int64/32/16/8, uint8, bool); convert it first");
}

size_t safetensors_dtype_size(const std::string& s) {
  if (auto* row = find_dtype(s)) return row->size;
  fail("unknown safetensors dtype '", s, "'");
}

// ---------------------------------------------------------------------------------------------- reading

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("cannot open safetensors file '", path, "': ", errno_text());
  // From here on a throw skips the destructor, so release what we hold before rethrowing.
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) fail("cannot stat '", path, "': ", errno_text());
    if (!S_ISREG(st.st_mode)) fail("'", path, "' is not a regular file (expected a .safetensors file)");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ < 8) fail(path, ": file is ", size_, " bytes, too short for a safetensors header (truncated?)");
    map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      fail("cannot mmap '", path, "': ", errno_text());
    }
    const auto* bytes = static_cast<const unsigned char*>(map_);

    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian regardless of host
    if (n > kMaxHeaderBytes)
      fail(path, ": header length ", n, " exceeds the ", kMaxHeaderBytes,
           "-byte limit (corrupt or not a safetensors file)");
    if (n > size_ - 8)
      fail(path, ": header length ", n, " is larger than the ", size_ - 8,
           " bytes after the length field (truncated file?)");
    data_start_ = 8 + static_cast<size_t>(n);
    const uint64_t data_size = size_ - data_start_;

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                                     reinterpret_cast<const char*>(bytes + data_start_));
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": header is not valid JSON (", e.what(), ")");
    }
    if (!header.is_object()) fail(path, ": header must be a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const auto& v = it.value();
      if (name == "__metadata__") {
        if (v.is_null()) continue;
        if (!v.is_object()) fail(path, ": __metadata__ must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) fail(path, ": __metadata__ key '", m.key(), "' must have a string value");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      std::string where = path + ": tensor '" + name + "'";
      if (!v.is_object()) fail(where, ": header entry must be an object");
      if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where, ": 'dtype' missing or not a string");
      if (!v.contains("shape") || !v["shape"].is_array()) fail(where, ": 'shape' missing or not an array");
      if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
        fail(where, ": 'data_offsets' must be an array [begin, end]");
      TensorInfo info;
      info.name = name;
      info.dtype = v["dtype"].get<std::string>();
      const DtypeRow* row = find_dtype(info.dtype);
      if (!row) scalar_type_from_safetensors(info.dtype, where);  // throws with the list of dtypes
      uint64_t count = 1;
      bool overflow = false;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0))
          fail(where, ": shape entries must be non-negative integers, got ", v["shape"].dump());
        uint64_t dim = d.get<uint64_t>();
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
        auto c = mul_checked(count, dim);
        if (!c) overflow = true;
        else count = *c;
        info.shape.push_back(static_cast<int64_t>(dim));
      }
      auto nbytes = mul_checked(count, row->size);
      if (overflow || !nbytes) fail(where, ": shape ", v["shape"].dump(), " is too large (element count overflows)");
      const auto& off = v["data_offsets"];
      if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        fail(where, ": data_offsets must be non-negative integers, got ", off.dump());
      info.begin = off[0].get<uint64_t>();
      info.end = off[1].get<uint64_t>();
      if (info.begin > info.end) fail(where, ": data_offsets ", off.dump(), " has begin > end");
      if (info.end > data_size)
        fail(where, ": data_offsets ", off.dump(), " run past the data section (", data_size,
             " bytes; truncated file?)");
      if (info.end - info.begin != *nbytes)
        fail(where, ": shape ", v["shape"].dump(), " of ", info.dtype, " needs ", *nbytes,
             " bytes but data_offsets give ", info.end - info.begin);
      tensors_.push_back(std::move(info));
    }
    // File order = order of the data; the header's JSON object order carries no meaning.
    std::stable_sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.name < b.name;
    });
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  } catch (...) {
    if (map_) ::munmap(map_, size_);
    ::close(fd_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

at::Tensor SafetensorsFile::view(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) fail(path_, ": no tensor named '", name, "'");
  at::ScalarType t = scalar_type_from_safetensors(info->dtype, path_);
  auto opts = at::TensorOptions().dtype(t).device(at::kCPU);
  char* p = static_cast<char*>(map_) + data_start_ + info->begin;
  // The format does not promise alignment; kernels may assume it, so a misaligned tensor is copied out
  // (still never written through: the copy is owned).
  size_t esize = safetensors_dtype_size(info->dtype);
  if (reinterpret_cast<uintptr_t>(p) % esize != 0) {
    at::Tensor out = at::empty(info->shape, opts);
    std::memcpy(out.data_ptr(), p, info->end - info->begin);
    return out;
  }
  return at::from_blob(
      p, info->shape, [](void*) {}, opts);
}

at::Tensor SafetensorsFile::load(const std::string& name, std::optional<at::ScalarType> dtype) const {
  at::Tensor v = view(name);
  // .to() returns `v` itself when the dtype already matches; copy=true forces an owned tensor.
  return v.to(dtype.value_or(v.scalar_type()), /*non_blocking=*/false, /*copy=*/true);
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info || info->end == info->begin) return;
  // Whole pages inside the tensor only, so the call leaves the neighbouring tensors alone.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t lo = reinterpret_cast<uintptr_t>(map_) + data_start_ + info->begin;
  uintptr_t hi = reinterpret_cast<uintptr_t>(map_) + data_start_ + info->end;
  lo = (lo + page - 1) / page * page;
  hi = hi / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

// ---------------------------------------------------------------------------------------------- writing

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       std::map<std::string, std::string> metadata) {
  if (!metadata.count("format")) metadata["format"] = "pt";
  // ordered_json keeps the tensors in the order given (nlohmann::json would sort the keys).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (auto& [name, t] : tensors) {
    if (name == "__metadata__") fail(path, ": a tensor cannot be named __metadata__");
    if (header.contains(name)) fail(path, ": tensor '", name, "' given twice");
    if (!t.defined()) fail(path, ": tensor '", name, "' is undefined");
    std::string dt;
    try {
      dt = safetensors_dtype_name(t.scalar_type());
    } catch (const Error& e) {
      fail(path, ": tensor '", name, "': ", e.what());
    }
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dt}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string h = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  h.append((8 - h.size() % 8) % 8, ' ');

  AtomicFile out(path);
  unsigned char len[8];
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(len, 8);
  out.write(h.data(), h.size());
  for (auto& [name, t] : tensors) {
    // One tensor at a time on the CPU, so a GPU model is never copied whole.
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    if (c.numel() > 0) out.write(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  }
  out.commit();
}

}  // namespace affinage
