// Folder-level file helpers for commands that write whole folders (merge, publish): a staging folder built
// beside its destination and renamed into place, file copies, and SHA-256 digests of files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace affinage {

// A folder written under a temporary name next to `final_dir` (".<name>.tmp.<pid>") and renamed into place by
// commit(), so readers never see half a folder. `final_dir` must not exist or be an empty folder (an error
// naming it otherwise: we never delete a folder we did not make). Destroyed uncommitted, it removes itself.
class StagingDir {
 public:
  explicit StagingDir(const std::string& final_dir);
  ~StagingDir();
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  const std::string& path() const { return tmp_; }
  std::string file(const std::string& name) const { return tmp_ + "/" + name; }
  void commit();

 private:
  std::string final_, tmp_;
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

}  // namespace affinage
