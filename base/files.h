// Files written so that nothing is lost: a file or a whole folder is built under a temporary name beside its
// destination and renamed into place (readers never see half of it; a crash leaves no half-written output
// under a real name). Also whole-file reads, file copies, SHA-256 digests and where this executable lives.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace affinage {

// A file being written under `<path>.tmp.<pid>`: renamed onto `path` by commit() (after fsync), removed when
// destroyed uncommitted. Write errors (disk full) are errors naming the file.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically (AtomicFile). For JSON and text outputs.
void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);  // whole file; error names the path

// What StagingDir does with a folder already at its destination.
enum class Existing {
  Refuse,   // only a missing or empty folder may be there (an error naming it otherwise): for user-named outputs
  Replace,  // the old folder is swapped out at commit and removed: for folders affinage owns (checkpoints, adapter)
};

// A folder written under a temporary name next to `final_dir` (".<name>.tmp.<pid>") and renamed into place by
// commit(), so readers never see half a folder. Destroyed uncommitted, it removes itself.
class StagingDir {
 public:
  explicit StagingDir(const std::string& final_dir, Existing existing = Existing::Refuse);
  ~StagingDir();
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  const std::string& path() const { return tmp_; }
  std::string file(const std::string& name) const { return tmp_ + "/" + name; }
  void commit();

 private:
  std::string final_, tmp_;
  Existing existing_;
  bool committed_ = false;
};

// SHA-256 (FIPS 180-4), incremental.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();  // finishes the digest: lowercase hex, 64 characters

 private:
  void block(const unsigned char* p);
  uint32_t h_[8];
  unsigned char buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_file(const std::string& path);  // errors name the file
// Copies `from` to `to` (a new file) in one read pass and returns the SHA-256 of the bytes.
std::string copy_file_sha256(const std::string& from, const std::string& to);

// The folder of the running executable (/proc/self/exe), or "" when it cannot be found.
std::string executable_dir();

}  // namespace affinage
