// Shared test helpers: fixture paths, temporary folders, tensor comparison that names the worst element,
// and running the CLI binary.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include "base/error.h"
#include "text/tokenizer.h"

namespace affinage::test {

std::string data_path(const std::string& rel);  // tests/data/<rel>
std::string repo_path(const std::string& rel);  // <repo>/<rel>, e.g. "models/stories260K"
std::string temp_dir(const std::string& tag);   // fresh empty folder under the system temp dir
// One scratch folder per test process (removed at exit), and a file written into it: returns its path.
const std::string& scratch_dir();
std::string write_scratch(const std::string& name, const std::string& content);

// Passes when |a - b| <= atol + rtol*|b| everywhere (both cast to fp64); on failure reports the worst
// element's index and values. Shapes must match.
::testing::AssertionResult tensors_close(const at::Tensor& a, const at::Tensor& b, double atol, double rtol = 0.0);

struct CmdResult {
  int code;
  std::string out;
  std::string err;
};
// Runs build/affinage with `args` (shell-quoted by the caller), capturing stdout and stderr.
CmdResult run_cli(const std::string& args);

// The tokenizers the tests use, loaded once per process.
std::shared_ptr<Tokenizer> mistral_v1_tokenizer();  // tests/data/tokenizers/mistral_v1
std::shared_ptr<Tokenizer> mistral_v3_tokenizer();  // tests/data/tokenizers/mistral_v3
std::shared_ptr<Tokenizer> stories_tokenizer();     // models/stories260K/tokenizer.model

// The message of the affinage::Error that fn() throws, or "(no error)".
std::string error_of(const std::function<void()>& fn);

// Expects fn() to throw affinage::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an affinage::Error";
  } catch (const affinage::Error& e) {
    for (auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  }
}

}  // namespace affinage::test
