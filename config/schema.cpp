// Field-table machinery (see config/schema.h): value checks, error text and the near-key suggestions
// that make a typo in a recipe cheap to fix.
#include "config/schema.h"
#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace affinage {
namespace recipe_schema {

// ---------------------------------------------------------------- value helpers and error text

std::string number_text(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(int64_t(v));
  return json(v).dump();
}

std::string Range::text() const {
  bool has_lo = lo > -std::numeric_limits<double>::infinity(), has_hi = hi < std::numeric_limits<double>::infinity();
  if (has_lo && has_hi)
    return std::string(lo_open ? "(" : "[") + number_text(lo) + ", " + number_text(hi) + (hi_open ? ")" : "]");
  if (has_lo) return std::string(lo_open ? "> " : ">= ") + number_text(lo);
  if (has_hi) return std::string(hi_open ? "< " : "<= ") + number_text(hi);
  return "";
}

std::string describe(const json& j) {
  switch (j.type()) {
    case json::value_t::string: {
      std::string s = j.get<std::string>();
      if (s.size() > 40) s = s.substr(0, 37) + "...";
      return "string " + json(s).dump();
    }
    case json::value_t::boolean:
      return std::string("boolean ") + (j.get<bool>() ? "true" : "false");
    case json::value_t::null:
      return "null";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "number " + j.dump();
  }
}

void type_error(const Ctx& c, const std::string& path, const std::string& expected, const json& found) {
  fail("recipe ", c.where, ": key '", path, "' must be ", expected, ", found ", describe(found));
}

int64_t get_int(const json& j, const std::string& path, const Ctx& c) {
  if (j.is_number_integer() && !j.is_number_unsigned()) return j.get<int64_t>();
  if (j.is_number_unsigned()) {
    if (j.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      type_error(c, path, "an integer that fits in 64 bits", j);
    return int64_t(j.get<uint64_t>());
  }
  if (j.is_number_float()) {
    double d = j.get<double>();  // 3.0 is an integer written the float way; 3.5 is not
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) return int64_t(d);
    type_error(c, path, "an integer (a whole number)", j);
  }
  type_error(c, path, "an integer", j);
}

double get_num(const json& j, const std::string& path, const Ctx& c) {
  if (!j.is_number()) type_error(c, path, "a number", j);
  return j.get<double>();
}

std::string get_str(const json& j, const std::string& path, const Ctx& c) {
  if (!j.is_string()) type_error(c, path, "a string", j);
  return j.get<std::string>();
}

bool get_bool(const json& j, const std::string& path, const Ctx& c) {
  if (!j.is_boolean()) type_error(c, path, "a boolean (true or false)", j);
  return j.get<bool>();
}

void check_range(double v, const Range& r, const std::string& path, const Ctx& c, const json& found) {
  if (!r.ok(v)) {
    std::string t = r.text();
    bool interval = !t.empty() && (t[0] == '[' || t[0] == '(');
    fail("recipe ", c.where, ": key '", path, "' must be ", interval ? "in " : "", t, ", found ", found.dump());
  }
}

static bool allowed_match(const std::string& v, const std::string& a) {
  if (a.size() > 2 && a.compare(a.size() - 2, 2, ":N") == 0) {  // "cuda:N": the prefix, then digits
    std::string prefix = a.substr(0, a.size() - 1);
    return v.size() > prefix.size() && v.compare(0, prefix.size(), prefix) == 0 &&
           std::all_of(v.begin() + prefix.size(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  }
  return v == a;
}

std::string allowed_text(const std::vector<std::string>& allowed) {
  std::string s;
  for (auto& a : allowed) s += (s.empty() ? "" : ", ") + ("`" + a + "`");
  return s;
}

void check_allowed(const std::string& v, const std::vector<std::string>& allowed, const std::string& path,
                   const Ctx& c) {
  for (auto& a : allowed)
    if (allowed_match(v, a)) return;
  std::string list;
  for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  std::string near = closest(v, allowed);
  fail("recipe ", c.where, ": key '", path, "' must be one of ", list, "; found ", json(v).dump(),
       near.empty() ? "" : " (did you mean '" + near + "'?)");
}

// Optimal-string-alignment distance (a swap of neighbours costs 1), case-insensitive.
static size_t edit_distance(const std::string& a0, const std::string& b0) {
  std::string a = a0, b = b0;
  for (auto* s : {&a, &b}) std::transform(s->begin(), s->end(), s->begin(), ::tolower);
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// Close enough to suggest: about one edit per three characters of the candidate, at least one.
static bool is_close(const std::string& word, const std::string& cand, size_t* dist) {
  *dist = edit_distance(word, cand);
  return *dist <= std::max<size_t>(1, cand.size() / 3);
}

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX, d;
  for (auto& c : candidates)
    if (is_close(word, c, &d) && d < best_d) best = c, best_d = d;
  return best;
}

// Names people bring from PEFT / transformers, mapped to ours; used only for suggestions.
static const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> m = {{"rank", "r"},
                                                       {"lora_r", "r"},
                                                       {"lora_alpha", "alpha"},
                                                       {"lora_dropout", "dropout"},
                                                       {"target_modules", "targets"},
                                                       {"use_rslora", "rslora"},
                                                       {"learning_rate", "lr"},
                                                       {"adam_beta1", "beta1"},
                                                       {"adam_beta2", "beta2"},
                                                       {"adam_epsilon", "eps"},
                                                       {"max_grad_norm", "grad_clip"},
                                                       {"gradient_accumulation_steps", "grad_accum"},
                                                       {"per_device_train_batch_size", "batch_size"},
                                                       {"num_train_epochs", "epochs"},
                                                       {"max_seq_length", "seq_len"},
                                                       {"max_length", "seq_len"},
                                                       {"warmup", "warmup_steps"},
                                                       {"lr_scheduler_type", "type"},
                                                       {"gradient_checkpointing", "activation_checkpointing"},
                                                       {"save_steps", "every"},
                                                       {"save_total_limit", "keep"},
                                                       {"eval_steps", "every"},
                                                       {"logging_steps", "log_every"},
                                                       {"model_name_or_path", "model"},
                                                       {"scheduler", "schedule"},
                                                       {"optimizer", "optim"},
                                                       {"training", "train"}};
  return m;
}

static void collect_paths(const Section& sec, const std::string& prefix, std::vector<std::string>& out,
                          std::set<const Section*>& seen) {
  if (!seen.insert(&sec).second) return;
  for (auto* f : sec.fields()) {
    std::string p = join_key(prefix, f->key);
    out.push_back(p);
    if (f->child) collect_paths(*f->child, f->nav == Nav::ObjectArray ? p + ".N" : p, out, seen);
  }
}

static std::string leaf(const std::string& path) {
  auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::string unknown_key_text(const Section& sec, const std::string& prefix, const std::string& key,
                             const Section* root) {
  std::vector<std::string> names, cands;
  for (auto* f : sec.fields()) names.push_back(f->key);
  // 1) a near key of this section, directly or through a familiar alias ("rnak" ~ "rank" -> "r")
  std::string best;
  size_t best_d = SIZE_MAX, d;
  for (auto& n : names)
    if (is_close(key, n, &d) && d < best_d) best = n, best_d = d;
  for (auto& [alias, target] : aliases())
    if (std::count(names.begin(), names.end(), target) && is_close(key, alias, &d) && d < best_d)
      best = target, best_d = d;
  std::vector<std::string> hints;
  if (!best.empty()) hints.push_back(join_key(prefix, best));
  // 2) otherwise the same key in another section ("lr" at the top level -> "optim.lr")
  if (hints.empty() && root) {
    std::vector<std::string> paths;
    std::set<const Section*> seen;
    collect_paths(*root, "", paths, seen);
    auto a = aliases().find(key);
    std::string want = a == aliases().end() ? key : a->second;
    for (auto& p : paths)
      if (leaf(p) == want && p != join_key(prefix, want)) hints.push_back(p);
  }
  std::ostringstream os;
  os << "unknown key '" << join_key(prefix, key) << "'";
  if (!hints.empty()) {
    os << " (did you mean ";
    for (size_t i = 0; i < hints.size() && i < 3; ++i) os << (i ? " or " : "") << "'" << hints[i] << "'";
    os << "?)";
  }
  os << "; keys allowed " << (prefix.empty() ? std::string("at the top level") : "in '" + prefix + "'") << ": ";
  for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << names[i];
  os << " (see docs/recipes.md)";
  return os.str();
}

}  // namespace recipe_schema

}  // namespace affinage
