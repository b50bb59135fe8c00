// Atomic files and staging folders renamed into place, whole-file reads, copies, SHA-256 (see base/files.h).
#include "base/files.h"
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>
#include "base/error.h"

namespace fs = std::filesystem;

namespace affinage {

static std::string errno_text() { return std::strerror(errno); }

// ------------------------------------------------------------------------------------------------ files

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    fail("cannot create '", tmp_, "' (to write '", path, "'): ", errno_text(),
         "; check that the folder exists and is writable");
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; loop until everything is out.
    ssize_t w = ::write(fd_, p, std::min<size_t>(n, 1u << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("writing '", tmp_, "' failed: ", errno_text(), errno == ENOSPC ? " (the disk is full)" : "");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail("fsync of '", tmp_, "' failed: ", errno_text());
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("closing '", tmp_, "' failed: ", errno_text());
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename '", tmp_, "' to '", path_, "': ", errno_text());
  committed_ = true;
  // Make the rename itself durable; failure here only weakens crash safety, so it is not an error.
  std::string dir = path_.find('/') == std::string::npos ? "." : path_.substr(0, path_.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) ::fsync(dfd), ::close(dfd);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFile out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot read '", path, "': ", errno_text());
  std::string s;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::string msg = errno_text();
      ::close(fd);
      fail("reading '", path, "' failed: ", msg);
    }
    if (r == 0) break;
    s.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return s;
}

std::string executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

// ------------------------------------------------------------------------------------------------ staging

StagingDir::StagingDir(const std::string& final_dir, Existing existing) : existing_(existing) {
  if (final_dir.empty()) fail("output folder name is empty");
  fs::path f = fs::absolute(fs::path(final_dir)).lexically_normal();
  if (f.filename().empty()) f = f.parent_path();  // "out/" -> "out"
  std::error_code ec;
  if (existing == Existing::Refuse && fs::exists(f, ec)) {
    if (!fs::is_directory(f, ec))
      fail("output '", final_dir, "' exists and is not a folder; choose another output path");
    if (!fs::is_empty(f, ec))
      fail("output folder '", final_dir, "' already exists and is not empty; remove it or choose another output path");
  }
  fs::create_directories(f.parent_path(), ec);
  if (!fs::is_directory(f.parent_path(), ec)) fail("cannot create the parent folder of '", final_dir, "'");
  final_ = f.string();
  tmp_ = (f.parent_path() / ("." + f.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  fs::remove_all(tmp_, ec);
  if (!fs::create_directory(tmp_, ec)) fail("cannot create the staging folder '", tmp_, "': ", ec.message());
}

StagingDir::~StagingDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void StagingDir::commit() {
  if (committed_) fail("StagingDir::commit called twice for '", final_, "'");
  std::error_code ec;
  if (existing_ == Existing::Replace && fs::exists(final_, ec)) {
    // The old folder is moved aside first, so there is never a moment without a complete one under some name.
    const fs::path f(final_);
    const std::string old =
        (f.parent_path() / ("." + f.filename().string() + ".old." + std::to_string(::getpid()))).string();
    fs::remove_all(old, ec);
    fs::rename(final_, old, ec);
    if (ec) fail("cannot move '", final_, "' aside to replace it: ", ec.message());
    fs::rename(tmp_, final_, ec);
    if (ec)
      fail("cannot rename '", tmp_, "' to '", final_, "': ", ec.message(), "; the previous folder is in '", old, "'");
    fs::remove_all(old, ec);
    committed_ = true;
    return;
  }
  if (fs::exists(final_, ec)) {
    // Checked empty at the start; someone may have written into it since: then leave both for the user.
    if (!fs::is_empty(final_, ec) || !fs::remove(final_, ec))
      fail("output folder '", final_, "' was filled while writing; the result is left in '", tmp_, "'");
  }
  fs::rename(tmp_, final_, ec);
  if (ec) fail("cannot rename '", tmp_, "' to '", final_, "': ", ec.message());
  committed_ = true;
}

// ------------------------------------------------------------------------------------------------ SHA-256

namespace {
const uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
}  // namespace

Sha256::Sha256() : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::block(const unsigned char* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a;
  h_[1] += b;
  h_[2] += c;
  h_[3] += d;
  h_[4] += e;
  h_[5] += f;
  h_[6] += g;
  h_[7] += h;
}

void Sha256::update(const void* data, size_t n) {
  auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (buf_len_ > 0) {
    size_t take = std::min(n, 64 - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    n -= take;
    if (buf_len_ < 64) return;
    block(buf_);
    buf_len_ = 0;
  }
  for (; n >= 64; p += 64, n -= 64) block(p);
  std::memcpy(buf_, p, n);
  buf_len_ = n;
}

std::string Sha256::hex() {
  uint64_t bits = total_ * 8;
  unsigned char pad[72] = {0x80};
  size_t padlen = (buf_len_ < 56 ? 56 : 120) - buf_len_;
  for (int i = 0; i < 8; ++i) pad[padlen + i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
  update(pad, padlen + 8);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint32_t v : h_)
    for (int s = 28; s >= 0; s -= 4) out += digits[(v >> s) & 0xf];
  return out;
}

// ------------------------------------------------------------------------------------------------ files

namespace {
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads `from` in large blocks, feeding the hash and, when `to` is given, a new file.
std::string pass(const std::string& from, const std::string* to) {
  Fd in;
  in.fd = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in.fd < 0) fail("cannot read '", from, "': ", std::strerror(errno));
  Fd out;
  if (to) {
    out.fd = ::open(to->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out.fd < 0) fail("cannot create '", *to, "': ", std::strerror(errno));
  }
  Sha256 h;
  std::vector<char> buf(8 << 20);
  for (;;) {
    ssize_t n = ::read(in.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot read '", from, "': ", std::strerror(errno));
    if (n == 0) break;
    h.update(buf.data(), size_t(n));
    for (ssize_t done = 0; to && done < n;) {
      ssize_t w = ::write(out.fd, buf.data() + done, size_t(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail("cannot write '", *to, "': ", std::strerror(errno), " (disk full?)");
      done += w;
    }
  }
  if (to && ::fsync(out.fd) != 0) fail("cannot flush '", *to, "': ", std::strerror(errno));
  return h.hex();
}
}  // namespace

std::string sha256_file(const std::string& path) { return pass(path, nullptr); }

std::string copy_file_sha256(const std::string& from, const std::string& to) { return pass(from, &to); }

}  // namespace affinage
