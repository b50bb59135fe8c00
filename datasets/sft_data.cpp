// SFT data: reads JSONL rows in four formats, renders them to token ids with trainable flags, truncates,
// splits, weights and packs them into fixed-length rows (the contract is datasets/sft_data.h).
#include "datasets/sft_data.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include "core/error.h"

namespace affinage {
namespace {

std::string type_name(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// A required string field; `what` names it in the error ("messages[2].content").
const std::string& get_string(const nlohmann::json& obj, const std::string& key, const std::string& what,
                              const std::string& where, bool allow_empty) {
  auto it = obj.find(key);
  if (it == obj.end()) fail(where, ": field '", what, "': missing");
  if (!it->is_string()) fail(where, ": field '", what, "': must be a string, got ", type_name(*it));
  const std::string& s = it->get_ref<const std::string&>();
  if (!allow_empty && s.empty()) fail(where, ": field '", what, "': empty; remove the row or give it text");
  return s;
}

// Renames the file's column names to the canonical ones ({"prompt":"question"}: "question" becomes "prompt").
nlohmann::json apply_columns(const nlohmann::json& row, const std::map<std::string, std::string>& columns) {
  if (columns.empty()) return row;
  nlohmann::json out = row;
  for (const auto& [canonical, name] : columns) {
    if (canonical == name || !row.contains(name)) continue;
    out[canonical] = row[name];
    out.erase(name);
  }
  return out;
}

Sample render_text(const nlohmann::json& row, const Tokenizer& tok, const std::string& where) {
  const std::string& text = get_string(row, "text", "text", where, false);
  Sample s;
  s.ids.push_back(tok.bos_id());
  std::vector<int> body = tok.encode(text);
  s.ids.insert(s.ids.end(), body.begin(), body.end());
  s.ids.push_back(tok.eos_id());
  s.trainable.assign(s.ids.size(), 1);
  s.trainable[0] = 0;
  return s;
}

Sample render_messages(const nlohmann::json& row, const Tokenizer& tok, ChatFormat chat, const std::string& where) {
  auto it = row.find("messages");
  if (it == row.end()) fail(where, ": field 'messages': missing");
  if (!it->is_array()) fail(where, ": field 'messages': must be an array of {\"role\", \"content\"}, got ", type_name(*it));
  if (it->empty()) fail(where, ": field 'messages': empty; a conversation needs a user and an assistant message");
  std::vector<Message> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& m = (*it)[i];
    const std::string base = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(where, ": field '", base, "': must be an object {\"role\", \"content\"}, got ", type_name(m));
    Message msg;
    msg.role = get_string(m, "role", base + ".role", where, false);
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      fail(where, ": field '", base, ".role': unknown role '", msg.role,
           "'; use \"system\", \"user\" or \"assistant\"");
    // Multimodal / tool-call content (arrays, null) is not supported: say so rather than train on a dump.
    msg.content = get_string(m, "content", base + ".content", where, true);
    if (auto w = m.find("weight"); w != m.end()) {
      if (!w->is_number() || (w->get<double>() != 0.0 && w->get<double>() != 1.0))
        fail(where, ": field '", base, ".weight': must be 0 (not trained) or 1 (trained), got ", w->dump());
      msg.weight = w->get<double>();
    }
    messages.push_back(std::move(msg));
  }
  RenderedChat r;
  try {
    r = render_chat(tok, messages, chat);
  } catch (const Error& e) {
    fail(where, ": field 'messages': ", e.what());
  }
  Sample s;
  s.ids = std::move(r.ids);
  s.trainable = std::move(r.trainable);
  return s;
}

// SentencePiece adds a dummy "▁" to every encode call, so sp(prompt) + sp(completion) is not how the joined
// text tokenizes. Like TRL's SFTTrainer (it tokenizes prompt and prompt+completion and masks by the length of
// the prompt's ids), we tokenize the whole text once and take the completion as what follows the prompt's ids.
// When the boundary merges (sp(prompt + completion) does not start with sp(prompt): "Hel" + "lo", or a prompt
// ending in a space), TRL would silently put the mask in the wrong place. We keep sp(prompt) (what generation
// sees) and append the completion tokenized without the dummy prefix: sp("\n" + completion) minus the ids of
// sp("\n"), so the ids still decode to exactly prompt + completion. If the newline merges with the completion
// (tokenizers with "\n\n" pieces), we drop a bare leading "▁" piece instead, or keep sp(completion) as it is.
std::vector<int> completion_ids(const Tokenizer& tok, const std::string& prompt, const std::string& completion,
                                const std::vector<int>& prompt_ids) {
  std::vector<int> full = tok.encode(prompt + completion);
  if (full.size() >= prompt_ids.size() && std::equal(prompt_ids.begin(), prompt_ids.end(), full.begin()))
    return std::vector<int>(full.begin() + prompt_ids.size(), full.end());
  const std::vector<int> sentinel = tok.encode("\n");
  const std::vector<int> joined = tok.encode("\n" + completion);
  if (!sentinel.empty() && joined.size() > sentinel.size() &&
      std::equal(sentinel.begin(), sentinel.end(), joined.begin()))
    return std::vector<int>(joined.begin() + sentinel.size(), joined.end());
  std::vector<int> c = tok.encode(completion);
  if (!c.empty() && tok.id_to_piece(c[0]) == "\xE2\x96\x81") c.erase(c.begin());
  return c;
}

Sample render_prompt_completion(const std::string& prompt, const std::string& completion, const Tokenizer& tok) {
  Sample s;
  s.ids.push_back(tok.bos_id());
  std::vector<int> p = prompt.empty() ? std::vector<int>{} : tok.encode(prompt);
  std::vector<int> c = completion_ids(tok, prompt, completion, p);
  s.ids.insert(s.ids.end(), p.begin(), p.end());
  s.ids.insert(s.ids.end(), c.begin(), c.end());
  s.ids.push_back(tok.eos_id());
  s.trainable.assign(s.ids.size(), 0);
  std::fill(s.trainable.begin() + 1 + p.size(), s.trainable.end(), 1);
  return s;
}

// Fisher-Yates with our own index draw: std::shuffle and std::uniform_int_distribution differ between
// standard libraries, and a seed must give the same split everywhere.
std::vector<size_t> seeded_permutation(size_t n, std::mt19937_64& rng) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[rng() % i]);
  return idx;
}

// weight w keeps round(w * n) samples: whole copies for the integer part, a seeded subset (in file order) for
// the rest.
std::vector<Sample> apply_weight(const std::vector<Sample>& samples, double w, std::mt19937_64& rng) {
  const size_t n = samples.size();
  const size_t keep = static_cast<size_t>(std::llround(w * static_cast<double>(n)));
  std::vector<Sample> out;
  if (n == 0) return out;
  out.reserve(keep);
  for (size_t c = 0; c < keep / n; ++c) out.insert(out.end(), samples.begin(), samples.end());
  const size_t rest = keep % n;
  if (rest > 0) {
    std::vector<size_t> pick = seeded_permutation(n, rng);
    pick.resize(rest);
    std::sort(pick.begin(), pick.end());
    for (size_t i : pick) out.push_back(samples[i]);
  }
  return out;
}

DataStats finish(std::vector<Sample>& samples, const DataConfig& cfg, std::vector<Row>& rows) {
  DataStats st;
  truncate_samples(samples, cfg.seq_len, cfg.truncation, st);
  rows = make_rows(samples, cfg.seq_len, cfg.packing, st);
  return st;
}

}  // namespace

nlohmann::json DataStats::to_json() const {
  return {{"rows", rows},
          {"tokens", tokens},
          {"trained_tokens", trained_tokens},
          {"truncated", truncated},
          {"truncated_tokens", truncated_tokens},
          {"dropped", dropped},
          {"packed_rows", packed_rows},
          {"packing_efficiency", packing_efficiency}};
}

// The most specific format wins: alpaca files often also carry a pre-rendered "text" column (torchtune's
// alpaca does), and training on the instruction/output split is what such a file is for.
std::string detect_format(const nlohmann::json& row, const std::string& where) {
  if (!row.is_object()) fail(where, ": a row must be a JSON object, got ", type_name(row));
  auto has = [&](const char* k) { return row.contains(k); };
  if (has("messages")) return "messages";
  if (has("chosen") || has("rejected")) return "preference";
  if (has("instruction") || has("output")) return "alpaca";
  if (has("prompt") || has("completion")) return "prompt_completion";
  if (has("text")) return "text";
  std::string keys;
  for (auto it = row.begin(); it != row.end(); ++it) keys += (keys.empty() ? "" : ", ") + ("'" + it.key() + "'");
  fail(where, ": no known format in keys {", keys, "}; expected \"text\", \"messages\", \"prompt\"+\"completion\", ",
       "\"instruction\"+\"output\" (alpaca) or \"prompt\"+\"chosen\"+\"rejected\"; map other names with data.columns, ",
       "e.g. {\"prompt\": \"question\", \"completion\": \"answer\"}");
}

Sample render_sft_row(const nlohmann::json& row_in, const std::string& format, const Tokenizer& tok, ChatFormat chat,
                      const std::map<std::string, std::string>& columns, const std::string& file, int64_t line) {
  const std::string where = file + ":" + std::to_string(line);
  if (!row_in.is_object()) fail(where, ": a row must be a JSON object, got ", type_name(row_in));
  if (tok.bos_id() < 0 || tok.eos_id() < 0)
    fail("tokenizer ", tok.path(), " has no BOS or EOS piece (bos ", tok.bos_id(), ", eos ", tok.eos_id(),
         "); SFT samples need both");
  const nlohmann::json row = apply_columns(row_in, columns);
  const std::string fmt = format == "auto" ? detect_format(row, where) : format;
  Sample s;
  if (fmt == "text") {
    s = render_text(row, tok, where);
  } else if (fmt == "messages") {
    s = render_messages(row, tok, chat, where);
  } else if (fmt == "prompt_completion") {
    const std::string& p = get_string(row, "prompt", "prompt", where, true);
    const std::string& c = get_string(row, "completion", "completion", where, false);
    s = render_prompt_completion(p, c, tok);
  } else if (fmt == "alpaca") {
    std::string prompt = get_string(row, "instruction", "instruction", where, false);
    if (auto in = row.find("input"); in != row.end() && !in->is_null()) {
      const std::string& input = get_string(row, "input", "input", where, true);
      if (!input.empty()) prompt += "\n\n" + input;
    }
    const std::string& output = get_string(row, "output", "output", where, false);
    s = render_prompt_completion(prompt, output, tok);
  } else if (fmt == "preference") {
    fail(where, ": a preference row (prompt/chosen/rejected) cannot train with stage \"sft\"; use stage \"dpo\", ",
         "or give SFT rows (\"text\", \"messages\", \"prompt\"+\"completion\")");
  } else {
    fail(where, ": unknown data format '", fmt,
         "'; use \"auto\", \"text\", \"messages\", \"prompt_completion\" or \"alpaca\"");
  }
  s.file = file;
  s.line = line;
  return s;
}

std::vector<Sample> load_sft_file(const DataSource& src, const Tokenizer& tok, ChatFormat chat,
                                  const std::map<std::string, std::string>& columns) {
  std::ifstream in(src.path, std::ios::binary);
  if (!in)
    fail(src.path, ": cannot open the data file (relative paths resolve against the current directory; ",
         "check data.train / data.eval)");
  // Every broken line is reported (up to a limit), so one run shows what to fix in the whole file.
  constexpr size_t kMaxErrors = 20;
  std::vector<std::string> errors;
  size_t n_errors = 0;
  std::vector<Sample> out;
  std::string text;
  int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (line == 1 && text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // a UTF-8 byte-order mark
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      nlohmann::json row;
      try {
        row = nlohmann::json::parse(text);
      } catch (const nlohmann::json::exception& e) {
        fail(src.path, ":", line, ": not valid JSON (", e.what(), ")");
      }
      out.push_back(render_sft_row(row, src.format, tok, chat, columns, src.path, line));
    } catch (const Error& e) {
      if (++n_errors <= kMaxErrors) errors.push_back(e.what());
    }
  }
  if (n_errors == 1) throw Error(errors[0]);
  if (n_errors > 1) {
    std::ostringstream os;
    os << src.path << ": " << n_errors << " lines cannot be used; fix them and run again:";
    for (const auto& e : errors) os << "\n  " << e;
    if (n_errors > errors.size()) os << "\n  ... and " << n_errors - errors.size() << " more";
    throw Error(os.str());
  }
  if (out.empty()) fail(src.path, ": no rows (the file is empty or has only blank lines)");
  return out;
}

// A sample cut by "right" that has nothing left to train counts as dropped only (not also as truncated).
void truncate_samples(std::vector<Sample>& samples, int64_t max_len, const std::string& policy, DataStats& stats) {
  if (policy != "right" && policy != "drop")
    fail("data.truncation: unknown policy '", policy, "'; use \"right\" or \"drop\"");
  if (max_len < 2) fail("data.seq_len: ", max_len, " is too short; a sample needs at least 2 tokens");
  std::vector<Sample> kept;
  kept.reserve(samples.size());
  for (Sample& s : samples) {
    ++stats.rows;
    int64_t cut = 0;
    if (static_cast<int64_t>(s.ids.size()) > max_len) {
      if (policy == "drop") {
        ++stats.dropped;
        continue;
      }
      cut = static_cast<int64_t>(s.ids.size()) - max_len;
      s.ids.resize(max_len);
      s.trainable.resize(max_len);
    }
    const int64_t trained = std::count(s.trainable.begin(), s.trainable.end(), uint8_t{1});
    if (trained == 0) {
      ++stats.dropped;
      continue;
    }
    if (cut > 0) {
      ++stats.truncated;
      stats.truncated_tokens += cut;
    }
    stats.tokens += static_cast<int64_t>(s.ids.size());
    stats.trained_tokens += trained;
    kept.push_back(std::move(s));
  }
  samples = std::move(kept);
}

// doc_ids number the documents within their row (0, 1, ...): only equality matters for the attention mask.
std::vector<Row> make_rows(const std::vector<Sample>& samples, int64_t seq_len, bool packing, DataStats& stats) {
  if (seq_len < 2) fail("data.seq_len: ", seq_len, " is too short; a row needs at least 2 tokens");
  std::vector<Row> rows;
  int64_t used = 0;  // tokens placed in the current (last) row
  int64_t doc = 0;   // documents in the current row
  int64_t real_tokens = 0;
  auto new_row = [&] {
    Row r;
    r.input_ids.assign(seq_len, 0);
    r.targets.assign(seq_len, -100);
    r.position_ids.assign(seq_len, 0);
    r.doc_ids.assign(seq_len, -1);
    rows.push_back(std::move(r));
    used = 0;
    doc = 0;
  };
  for (const Sample& s : samples) {
    const int64_t n = static_cast<int64_t>(s.ids.size());
    if (n > seq_len)
      fail(s.file, ":", s.line, ": sample of ", n, " tokens is longer than data.seq_len ", seq_len,
           "; truncate samples before building rows");
    if (s.trainable.size() != s.ids.size())
      fail(s.file, ":", s.line, ": sample has ", n, " ids but ", s.trainable.size(), " trainable flags");
    if (n == 0) continue;
    if (rows.empty() || !packing || used + n > seq_len) new_row();
    Row& r = rows.back();
    for (int64_t t = 0; t < n; ++t) {
      r.input_ids[used + t] = s.ids[t];
      r.position_ids[used + t] = t;
      r.doc_ids[used + t] = doc;
      if (t + 1 < n && s.trainable[t + 1]) r.targets[used + t] = s.ids[t + 1];
    }
    used += n;
    ++doc;
    real_tokens += n;
  }
  stats.packed_rows = static_cast<int64_t>(rows.size());
  stats.packing_efficiency =
      rows.empty() ? 0.0 : static_cast<double>(real_tokens) / (static_cast<double>(rows.size()) * seq_len);
  return rows;
}

// One generator drives every random choice, in a fixed order (eval split, then each file's weight subset),
// so a seed fixes the whole data set.
SftData build_sft_data(const DataConfig& cfg, const Tokenizer& tok, uint64_t seed) {
  if (cfg.train.empty()) fail("data.train: no training files; give at least one {\"path\": ...}");
  if (cfg.eval && cfg.eval_split > 0)
    fail("data.eval and data.eval_split are both set; hold out either a file or a share of the training rows");
  if (!(cfg.eval_split >= 0 && cfg.eval_split < 1))
    fail("data.eval_split: ", cfg.eval_split, " must be in [0, 1)");
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  std::mt19937_64 rng(seed);

  std::vector<std::vector<Sample>> files;
  size_t total = 0;
  for (size_t i = 0; i < cfg.train.size(); ++i) {
    const DataSource& src = cfg.train[i];
    if (!(src.weight > 0) || !std::isfinite(src.weight))
      fail("data.train[", i, "].weight: ", src.weight, " for ", src.path, " must be a positive number");
    files.push_back(load_sft_file(src, tok, chat, cfg.columns));
    total += files.back().size();
  }

  SftData out;
  std::vector<Sample> eval;
  if (cfg.eval) {
    eval = load_sft_file(*cfg.eval, tok, chat, cfg.columns);
  } else if (cfg.eval_split > 0) {
    // Held out before weighting, so no repeated copy of an eval sample is trained on. At least one sample.
    size_t n_eval = std::max<size_t>(1, static_cast<size_t>(std::llround(cfg.eval_split * total)));
    if (n_eval >= total)
      fail("data.eval_split: ", cfg.eval_split, " of ", total, " training samples leaves nothing to train on");
    std::vector<size_t> perm = seeded_permutation(total, rng);
    std::vector<uint8_t> held(total, 0);
    for (size_t k = 0; k < n_eval; ++k) held[perm[k]] = 1;
    size_t g = 0;
    for (auto& f : files) {
      std::vector<Sample> kept;
      for (Sample& s : f) (held[g++] ? eval : kept).push_back(std::move(s));
      f = std::move(kept);
    }
  }

  std::vector<Sample> train;
  for (size_t i = 0; i < files.size(); ++i) {
    std::vector<Sample> w = apply_weight(files[i], cfg.train[i].weight, rng);
    train.insert(train.end(), std::make_move_iterator(w.begin()), std::make_move_iterator(w.end()));
  }

  out.train_stats = finish(train, cfg, out.train);
  if (out.train.empty())
    fail("data: no training sample left after truncation (", out.train_stats.dropped, " dropped of ",
         out.train_stats.rows, "); raise data.seq_len, use truncation \"right\", or check that rows have ",
         "something to train on");
  out.eval_stats = finish(eval, cfg, out.eval);
  return out;
}

}  // namespace affinage
