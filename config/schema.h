// Field-table machinery behind config/recipe_file.cpp (internal): a Table<S> lists one Field per key of struct S,
// and the generic code here reads, checks, writes and walks those tables, so each key is declared once.
#pragma once
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>
#include "base/error.h"
#include "config/recipe.h"

namespace affinage::recipe_schema {

using json = nlohmann::json;

// Context of one parse: the error prefix ("recipe runs/a.json") and the root table, so an unknown key can
// be matched against keys of other sections ("lr" at the top level -> "optim.lr").
struct Section;
struct Ctx {
  std::string where;
  const Section* root = nullptr;
  bool partial = false;  // a multi-stage recipe's top level: required keys may come from the stages
};

// How `--set` walks through a key: into a nested table, an array of tables, an optional table (all three
// accept a path-string shorthand), an array of scalars, a map of scalars, or not at all (a scalar).
enum class Nav { Leaf, Object, ObjectArray, OptObject, List, Map };

struct FieldBase {
  std::string key, type, doc;
  std::string allowed;  // allowed values or range, as documentation text
  bool required = false;
  Nav nav = Nav::Leaf;
  const Section* child = nullptr;
};

// The type-erased view of a table: what the docs and the `--set` walker need.
struct Section {
  virtual ~Section() = default;
  virtual std::vector<const FieldBase*> fields() const = 0;
  virtual json defaults() const = 0;  // every key written from a default-constructed struct
  const FieldBase* find(const std::string& key) const {
    for (auto* f : fields())
      if (f->key == key) return f;
    return nullptr;
  }
};

template <class S>
struct Field : FieldBase {
  std::function<void(S&, const json&, const std::string& path, const Ctx&)> read;
  std::function<json(const S&)> write;
};

template <class S>
struct Table;
template <class S>
json write_table(const Table<S>& t, const S& s);

template <class S>
struct Table : Section {
  std::vector<Field<S>> list;
  std::function<void(const S&, const std::string& path, const Ctx&)> check;  // cross-key rules, after reading
  std::vector<const FieldBase*> fields() const override {
    std::vector<const FieldBase*> v;
    for (auto& f : list) v.push_back(&f);
    return v;
  }
  json defaults() const override { return write_table(*this, S{}); }
};

// ---- errors and helpers (config/recipe_file.cpp) ----
inline std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}
std::string describe(const json& j);  // "string \"abc\"", "number 3.5", "an array", ...
[[noreturn]] void type_error(const Ctx& c, const std::string& path, const std::string& expected, const json& found);
// "unknown key 'lora.rnak' (did you mean 'lora.r'?); keys allowed in 'lora': r, alpha, ..."
std::string unknown_key_text(const Section& sec, const std::string& prefix, const std::string& key,
                             const Section* root);
std::string closest(const std::string& word, const std::vector<std::string>& candidates);  // "" when none is close
std::string number_text(double v);

// A numeric range that both checks values and documents itself (">= 1", "> 0", "[0, 1)").
struct Range {
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
  bool ok(double v) const { return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi); }
  bool bounded() const {
    return lo > -std::numeric_limits<double>::infinity() || hi < std::numeric_limits<double>::infinity();
  }
  std::string text() const;
};
inline Range ge(double x) {
  Range r;
  r.lo = x;
  return r;
}
inline Range gt(double x) {
  Range r;
  r.lo = x;
  r.lo_open = true;
  return r;
}
inline Range between(double lo, double hi, bool hi_open) {
  Range r;
  r.lo = lo;
  r.hi = hi;
  r.hi_open = hi_open;
  return r;
}

int64_t get_int(const json& j, const std::string& path, const Ctx& c);
double get_num(const json& j, const std::string& path, const Ctx& c);
std::string get_str(const json& j, const std::string& path, const Ctx& c);
bool get_bool(const json& j, const std::string& path, const Ctx& c);
void check_range(double v, const Range& r, const std::string& path, const Ctx& c, const json& found);
// Enumerated strings: an entry "cuda:N" admits "cuda:" followed by digits.
void check_allowed(const std::string& v, const std::vector<std::string>& allowed, const std::string& path,
                   const Ctx& c);
std::string allowed_text(const std::vector<std::string>& allowed);  // "`sft`, `dpo`"

// ---- generic read / write of a table ----
template <class S>
void read_table(const Table<S>& t, S& s, const json& j, const std::string& path, const Ctx& c) {
  if (!j.is_object()) type_error(c, path.empty() ? "(top level)" : path, "an object", j);
  for (auto& [k, v] : j.items())
    if (!t.find(k)) fail("recipe ", c.where, ": ", unknown_key_text(t, path, k, c.root));
  for (auto& f : t.list) {
    std::string p = join_key(path, f.key);
    auto it = j.find(f.key);
    if (it != j.end()) {
      f.read(s, *it, p, c);
    } else if (f.nav == Nav::Object) {
      f.read(s, json::object(), p, c);  // a missing section still reports its own missing required keys
    } else if (f.required && !c.partial) {
      fail("recipe ", c.where, ": missing required key '", p, "' (", f.doc, ")");
    }
  }
  if (t.check) t.check(s, path, c);
}

template <class S>
json write_table(const Table<S>& t, const S& s) {
  json j = json::object();
  for (auto& f : t.list) j[f.key] = f.write(s);
  return j;
}

// ---- field builders: one line per key in the tables ----
template <class F>
F required(F f) {
  f.required = true;
  return f;
}

template <class S>
Field<S> str_field(const char* key, std::string S::*m, const char* doc, std::vector<std::string> allowed = {}) {
  Field<S> f;
  f.key = key, f.type = "string", f.doc = doc, f.allowed = allowed_text(allowed);
  f.read = [m, allowed](S& s, const json& j, const std::string& p, const Ctx& c) {
    s.*m = get_str(j, p, c);
    if (!allowed.empty()) check_allowed(s.*m, allowed, p, c);
  };
  f.write = [m](const S& s) { return json(s.*m); };
  return f;
}

// A choice among names, stored as the enum E (config/recipe.h) and spelled as enum_names<E>() says.
template <class S, class E>
Field<S> enum_field(const char* key, E S::*m, const char* doc) {
  std::vector<std::string> names;
  for (auto& en : enum_names<E>()) names.push_back(en.second);
  Field<S> f;
  f.key = key, f.type = "string", f.doc = doc, f.allowed = allowed_text(names);
  f.read = [m, names](S& s, const json& j, const std::string& p, const Ctx& c) {
    const std::string v = get_str(j, p, c);
    check_allowed(v, names, p, c);
    for (auto& [e, n] : enum_names<E>())
      if (n == v) s.*m = e;
  };
  f.write = [m](const S& s) { return json(name_of(s.*m)); };
  return f;
}

template <class S>
Field<S> int_field(const char* key, int64_t S::*m, const char* doc, Range range = {}) {
  Field<S> f;
  f.key = key, f.type = "integer", f.doc = doc, f.allowed = range.text();
  f.read = [m, range](S& s, const json& j, const std::string& p, const Ctx& c) {
    s.*m = get_int(j, p, c);
    check_range(double(s.*m), range, p, c, j);
  };
  f.write = [m](const S& s) { return json(s.*m); };
  return f;
}

template <class S>
Field<S> num_field(const char* key, double S::*m, const char* doc, Range range = {}) {
  Field<S> f;
  f.key = key, f.type = "number", f.doc = doc, f.allowed = range.text();
  f.read = [m, range](S& s, const json& j, const std::string& p, const Ctx& c) {
    s.*m = get_num(j, p, c);
    check_range(s.*m, range, p, c, j);
  };
  f.write = [m](const S& s) { return json(s.*m); };
  return f;
}

template <class S>
Field<S> bool_field(const char* key, bool S::*m, const char* doc) {
  Field<S> f;
  f.key = key, f.type = "boolean", f.doc = doc;
  f.read = [m](S& s, const json& j, const std::string& p, const Ctx& c) { s.*m = get_bool(j, p, c); };
  f.write = [m](const S& s) { return json(s.*m); };
  return f;
}

template <class S>
Field<S> strings_field(const char* key, std::vector<std::string> S::*m, const char* doc) {
  Field<S> f;
  f.key = key, f.type = "array of strings", f.doc = doc, f.nav = Nav::List;
  f.read = [m](S& s, const json& j, const std::string& p, const Ctx& c) {
    if (!j.is_array()) type_error(c, p, "an array of strings", j);
    (s.*m).clear();
    for (size_t i = 0; i < j.size(); ++i) (s.*m).push_back(get_str(j[i], p + "." + std::to_string(i), c));
  };
  f.write = [m](const S& s) { return json(s.*m); };
  return f;
}

// A string -> V map (V: std::string, int64_t or double); map keys are free-form, values checked.
template <class S, class V>
Field<S> map_field(const char* key, std::map<std::string, V> S::*m, const char* doc, Range range = {}) {
  Field<S> f;
  const char* vt = std::is_same<V, std::string>::value ? "string"
                   : std::is_same<V, int64_t>::value   ? "integer"
                                                       : "number";
  f.key = key, f.type = std::string("object (string to ") + vt + ")", f.doc = doc, f.allowed = range.text(),
  f.nav = Nav::Map;
  f.read = [m, range](S& s, const json& j, const std::string& p, const Ctx& c) {
    if (!j.is_object()) type_error(c, p, "an object", j);
    (s.*m).clear();
    for (auto& [k, v] : j.items()) {
      std::string kp = p + "." + k;
      if constexpr (std::is_same<V, std::string>::value) {
        (s.*m)[k] = get_str(v, kp, c);
      } else if constexpr (std::is_same<V, int64_t>::value) {
        (s.*m)[k] = get_int(v, kp, c);
        check_range(double((s.*m)[k]), range, kp, c, v);
      } else {
        (s.*m)[k] = get_num(v, kp, c);
        check_range((s.*m)[k], range, kp, c, v);
      }
    }
  };
  f.write = [m](const S& s) { return json(s.*m); };
  return f;
}

template <class S, class C>
Field<S> table_field(const char* key, C S::*m, const Table<C>& t, const char* doc) {
  Field<S> f;
  f.key = key, f.type = "object", f.doc = doc, f.nav = Nav::Object, f.child = &t;
  f.read = [m, &t](S& s, const json& j, const std::string& p, const Ctx& c) { read_table(t, s.*m, j, p, c); };
  f.write = [m, &t](const S& s) { return write_table(t, s.*m); };
  return f;
}

}  // namespace affinage::recipe_schema
