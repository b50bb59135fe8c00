// One exception type for the library: what went wrong, where (file, line, key, tensor), what to do.
// Library code throws; each CLI command catches once at the top and prints the message on stderr.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace affinage {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// fail("file.json: key 'x' must be a number") -> throws Error with the pieces streamed together.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}

}  // namespace affinage
