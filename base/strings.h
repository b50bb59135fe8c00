// Small text helpers shared across the tree: case folding, trimming, splitting, durations and counts for people.
#pragma once
#include <string>
#include <vector>

namespace affinage {

std::string lower(std::string s);        // ASCII letters only
std::string trim(const std::string& s);  // spaces, tabs, CR and LF at both ends
bool ends_with(const std::string& s, const std::string& suffix);
// "a, b,,c" -> {"a", "b", "c"}: split on `sep`, entries trimmed, empty ones dropped.
std::vector<std::string> split_list(const std::string& s, char sep = ',');
// Seconds for people: "42.3 s", "4m05s", "2h07m", "3.5 days".
std::string format_duration(double seconds);
// 1234567 -> "1,234,567" (rounded to an integer).
std::string group_digits(double v);

}  // namespace affinage
