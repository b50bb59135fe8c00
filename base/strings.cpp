// Small text helpers (see base/strings.h).
#include "base/strings.h"
#include <cctype>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace affinage {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> split_list(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string w; std::getline(ss, w, sep);)
    if (!(w = trim(w)).empty()) out.push_back(w);
  return out;
}

std::string format_duration(double s) {
  char b[48];
  const auto t = static_cast<long long>(s + 0.5);
  if (s < 120) std::snprintf(b, sizeof b, "%.1f s", s);
  else if (t < 3600) std::snprintf(b, sizeof b, "%lldm%02llds", t / 60, t % 60);
  else if (t < 172800) std::snprintf(b, sizeof b, "%lldh%02lldm", t / 3600, t % 3600 / 60);
  else std::snprintf(b, sizeof b, "%.1f days", s / 86400);
  return b;
}

std::string group_digits(double v) {
  std::string s = std::to_string(static_cast<long long>(std::llround(v)));
  for (int i = static_cast<int>(s.size()) - 3; i > (s[0] == '-' ? 1 : 0); i -= 3) s.insert(i, ",");
  return s;
}

}  // namespace affinage
