// SFT data: reads JSONL rows in four formats, renders them to token ids with trainable flags, truncates,
// splits, weights and packs them into fixed-length rows (the contract is datasets/sft_data.h).
#include "datasets/sft_data.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include "base/error.h"
#include "datasets/jsonl.h"
#include "datasets/mixture.h"
#include "model/loss.h"

namespace affinage {
namespace {

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
  std::vector<Message> messages = parse_messages(*it, "messages", where);
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
  if (!row.is_object()) fail(where, ": a row must be a JSON object, got ", json_type_name(row));
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
  if (!row_in.is_object()) fail(where, ": a row must be a JSON object, got ", json_type_name(row_in));
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
  std::vector<Sample> out;
  read_jsonl(src.path, "data.train / data.eval", [&](const nlohmann::json& row, int64_t line) {
    out.push_back(render_sft_row(row, src.format, tok, chat, columns, src.path, line));
  });
  if (out.empty()) fail(src.path, ": no rows (the file is empty or has only blank lines)");
  return out;
}

// A sample cut by "right" that has nothing left to train counts as dropped only (not also as truncated).
void truncate_samples(std::vector<Sample>& samples, int64_t max_len, Truncation policy, DataStats& stats) {
  if (max_len < 2) fail("data.seq_len: ", max_len, " is too short; a sample needs at least 2 tokens");
  std::vector<Sample> kept;
  kept.reserve(samples.size());
  for (Sample& s : samples) {
    ++stats.rows;
    int64_t cut = 0;
    if (static_cast<int64_t>(s.ids.size()) > max_len) {
      if (policy == Truncation::Drop) {
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
    r.targets.assign(seq_len, kIgnoreIndex);
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

// Mixing (weights, eval split) is datasets/mixture.h; SFT adds truncation and rows.
SftData build_sft_data(const DataConfig& cfg, const Tokenizer& tok, uint64_t seed) {
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  auto [train, eval] =
      mix_sources<Sample>(cfg, seed, [&](const DataSource& s) { return load_sft_file(s, tok, chat, cfg.columns); });
  SftData out;
  out.train_stats = finish(train, cfg, out.train);
  if (out.train.empty())
    fail("data: no training sample left after truncation (", out.train_stats.dropped, " dropped of ",
         out.train_stats.rows, "); raise data.seq_len, use truncation \"right\", or check that rows have ",
         "something to train on");
  out.eval_stats = finish(eval, cfg, out.eval);
  return out;
}

}  // namespace affinage
