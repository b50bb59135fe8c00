// Shared test helpers: fixture paths, temporary folders, tensor comparison that names the worst element,
// and running the CLI binary.
#pragma once
#include <string>
#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace affinage::test {

std::string data_path(const std::string& rel);  // tests/data/<rel>
std::string repo_path(const std::string& rel);  // <repo>/<rel>, e.g. "models/stories260K"
std::string temp_dir(const std::string& tag);   // fresh empty folder under the system temp dir

// Passes when |a - b| <= atol + rtol*|b| everywhere (both cast to fp64); on failure reports the worst
// element's index and values. Shapes must match.
::testing::AssertionResult tensors_close(const at::Tensor& a, const at::Tensor& b, double atol, double rtol = 0.0);

struct CmdResult { int code; std::string out; std::string err; };
// Runs build/affinage with `args` (shell-quoted by the caller), capturing stdout and stderr.
CmdResult run_cli(const std::string& args);

}  // namespace affinage::test
