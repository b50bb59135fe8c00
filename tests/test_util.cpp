// Shared test helpers (see test_util.h).
#include "tests/test_util.h"
#include <sys/wait.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;

namespace affinage::test {

std::string data_path(const std::string& rel) { return std::string(AFFINAGE_TEST_DATA) + "/" + rel; }
std::string repo_path(const std::string& rel) { return std::string(AFFINAGE_REPO_DIR) + "/" + rel; }

std::string temp_dir(const std::string& tag) {
  std::random_device rd;
  fs::path p = fs::temp_directory_path() / ("affinage_test_" + tag + "_" + std::to_string(rd()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

const std::string& scratch_dir() {
  static struct Dir {
    std::string path = temp_dir("scratch");
    ~Dir() { fs::remove_all(path); }
  } dir;
  return dir.path;
}

std::string write_scratch(const std::string& name, const std::string& content) {
  std::string path = scratch_dir() + "/" + name;
  std::ofstream(path) << content;
  return path;
}

::testing::AssertionResult tensors_close(const at::Tensor& a, const at::Tensor& b, double atol, double rtol) {
  if (a.sizes() != b.sizes()) {
    std::ostringstream os;
    os << "shape mismatch: " << a.sizes() << " vs " << b.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  if (a.numel() == 0) return ::testing::AssertionSuccess();
  auto x = a.detach().to(at::kCPU, at::kDouble).contiguous().flatten();
  auto y = b.detach().to(at::kCPU, at::kDouble).contiguous().flatten();
  auto excess = (x - y).abs() - (atol + rtol * y.abs());
  int64_t worst = excess.argmax().item<int64_t>();
  if (excess[worst].item<double>() <= 0 && !at::isnan(x).any().item<bool>() && !at::isnan(y).any().item<bool>())
    return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(10);
  os << "worst element at flat index " << worst << ": " << x[worst].item<double>() << " vs " << y[worst].item<double>()
     << " (|diff| " << std::abs(x[worst].item<double>() - y[worst].item<double>()) << ", atol " << atol << ", rtol "
     << rtol << ")";
  return ::testing::AssertionFailure() << os.str();
}

static std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

CmdResult run_cli(const std::string& args) {
  std::string dir = temp_dir("cli");
  std::string out = dir + "/out", err = dir + "/err";
  std::string cmd = std::string("'") + AFFINAGE_CLI_PATH + "' " + args + " >'" + out + "' 2>'" + err + "'";
  int status = std::system(cmd.c_str());
  CmdResult r{WIFEXITED(status) ? WEXITSTATUS(status) : 128, slurp(out), slurp(err)};
  fs::remove_all(dir);
  return r;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const affinage::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::shared_ptr<Tokenizer> mistral_v1_tokenizer() {
  static auto t = Tokenizer::load(data_path("tokenizers/mistral_v1/tokenizer.model"));
  return t;
}
std::shared_ptr<Tokenizer> mistral_v3_tokenizer() {
  static auto t = Tokenizer::load(data_path("tokenizers/mistral_v3/tokenizer.model"));
  return t;
}
std::shared_ptr<Tokenizer> stories_tokenizer() {
  static auto t = Tokenizer::load(repo_path("models/stories260K/tokenizer.model"));
  return t;
}

}  // namespace affinage::test
