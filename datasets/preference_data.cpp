// Preference pairs: JSONL rows → prompt ids + chosen/rejected continuations (contract in
// datasets/preference_data.h).
#include "datasets/preference_data.h"
#include <algorithm>
#include "base/error.h"
#include "datasets/jsonl.h"
#include "datasets/mixture.h"

namespace affinage {
namespace {

bool same_message(const Message& a, const Message& b) { return a.role == b.role && a.content == b.content; }

// Text pair: the prompt's ids once, each response as its continuation, then EOS.
PreferencePair text_pair(const std::string& prompt, const std::string& chosen, const std::string& rejected,
                         const Tokenizer& tok) {
  PreferencePair p;
  std::vector<int> body = prompt.empty() ? std::vector<int>{} : tok.encode(prompt);
  p.prompt.push_back(tok.bos_id());
  p.prompt.insert(p.prompt.end(), body.begin(), body.end());
  for (auto [text, out] : {std::pair{&chosen, &p.chosen}, std::pair{&rejected, &p.rejected}}) {
    *out = prompt.empty() ? tok.encode(*text) : completion_ids(tok, prompt, *text, body);
    out->push_back(tok.eos_id());
  }
  return p;
}

std::vector<int> render(const Tokenizer& tok, const std::vector<Message>& m, ChatFormat chat, bool gen,
                        const std::string& field, const std::string& where) {
  try {
    return render_chat(tok, m, chat, gen).ids;
  } catch (const Error& e) {
    fail(where, ": field '", field, "': ", e.what());
  }
}

// Conversational pair: prompt rendered with a generation prompt; a response is what the full conversation
// adds after it. The Mistral templates append assistant text as its own encode call, so the full rendering
// always starts with the prompt's ids; a template that did not would be caught here rather than train on a
// shifted boundary.
PreferencePair chat_pair(const std::vector<Message>& prompt, const std::vector<Message>& chosen,
                         const std::vector<Message>& rejected, const Tokenizer& tok, ChatFormat chat,
                         const std::string& where) {
  PreferencePair p;
  p.prompt = render(tok, prompt, chat, true, "prompt", where);
  for (auto [resp, out, name] :
       {std::tuple{&chosen, &p.chosen, "chosen"}, std::tuple{&rejected, &p.rejected, "rejected"}}) {
    if (resp->empty() || resp->front().role != "assistant")
      fail(where, ": field '", name, "': must start with an assistant message (the answer to the prompt)");
    std::vector<Message> all = prompt;
    all.insert(all.end(), resp->begin(), resp->end());
    std::vector<int> full = render(tok, all, chat, false, name, where);
    if (full.size() <= p.prompt.size() || !std::equal(p.prompt.begin(), p.prompt.end(), full.begin()))
      fail(where, ": field '", name, "': the chat template does not continue the prompt's token ids; this ",
           "template cannot be used for preference pairs");
    out->assign(full.begin() + p.prompt.size(), full.end());
  }
  return p;
}

// Implicit prompt for texts: the shared prefix, moved back to a word boundary so each response starts at
// a space (as TRL's extract_prompt does), which also keeps multi-byte characters whole.
PreferencePair implicit_text_pair(const std::string& c, const std::string& r, const Tokenizer& tok) {
  size_t k = 0;
  while (k < c.size() && k < r.size() && c[k] == r[k]) ++k;
  while (k > 0 && c[k - 1] != ' ') --k;  // back to just after the last shared space...
  if (k > 0) --k;                        // ...and give that space to the responses
  return text_pair(c.substr(0, k), c.substr(k), r.substr(k), tok);
}

}  // namespace

nlohmann::json PreferenceStats::to_json() const {
  return {{"pairs", pairs},
          {"prompt_tokens", prompt_tokens},
          {"chosen_tokens", chosen_tokens},
          {"rejected_tokens", rejected_tokens},
          {"truncated_prompts", truncated_prompts},
          {"truncated_responses", truncated_responses},
          {"dropped", dropped}};
}

PreferencePair render_preference_row(const nlohmann::json& row_in, const Tokenizer& tok, ChatFormat chat,
                                     const std::map<std::string, std::string>& columns, const std::string& file,
                                     int64_t line) {
  const std::string where = file + ":" + std::to_string(line);
  if (!row_in.is_object()) fail(where, ": a row must be a JSON object, got ", json_type_name(row_in));
  if (tok.bos_id() < 0 || tok.eos_id() < 0)
    fail("tokenizer ", tok.path(), " has no BOS or EOS piece; preference pairs need both");
  const nlohmann::json row = apply_columns(row_in, columns);
  for (const char* k : {"chosen", "rejected"})
    if (!row.contains(k))
      fail(where, ": field '", k, "': missing; a preference row needs \"chosen\" and \"rejected\" (and usually ",
           "\"prompt\"); map other names with data.columns, e.g. {\"chosen\": \"response_j\", \"rejected\": "
           "\"response_k\"}");
  const nlohmann::json &jc = row["chosen"], &jr = row["rejected"];
  auto as_messages = [&](const nlohmann::json& v, const char* field) {
    if (v.is_string()) {
      if (v.get_ref<const std::string&>().empty()) fail(where, ": field '", field, "': empty");
      return std::vector<Message>{{"assistant", v.get<std::string>(), 1.0}};
    }
    return parse_messages(v, field, where);
  };
  PreferencePair p;
  if (row.contains("prompt")) {
    const nlohmann::json& jp = row["prompt"];
    if (jp.is_string()) {
      const std::string& c = get_string(row, "chosen", "chosen", where, false);
      const std::string& r = get_string(row, "rejected", "rejected", where, false);
      p = text_pair(jp.get<std::string>(), c, r, tok);
    } else {
      p = chat_pair(parse_messages(jp, "prompt", where), as_messages(jc, "chosen"), as_messages(jr, "rejected"), tok,
                    chat, where);
    }
  } else if (jc.is_string() && jr.is_string()) {
    if (jc.get_ref<const std::string&>().empty() || jr.get_ref<const std::string&>().empty())
      fail(where, ": field '", jc.get_ref<const std::string&>().empty() ? "chosen" : "rejected", "': empty");
    p = implicit_text_pair(jc.get<std::string>(), jr.get<std::string>(), tok);
  } else {
    // Implicit conversational prompt: the messages both conversations share, ending on a user turn.
    std::vector<Message> c = parse_messages(jc, "chosen", where), r = parse_messages(jr, "rejected", where);
    size_t k = 0;
    while (k < c.size() && k < r.size() && same_message(c[k], r[k])) ++k;
    while (k > 0 && c[k - 1].role != "user") --k;
    if (k == 0)
      fail(where, ": fields 'chosen'/'rejected': no \"prompt\" and the two conversations share no user turn; ",
           "give the prompt explicitly");
    std::vector<Message> prompt(c.begin(), c.begin() + k);
    p = chat_pair(prompt, {c.begin() + k, c.end()}, {r.begin() + k, r.end()}, tok, chat, where);
  }
  p.file = file;
  p.line = line;
  return p;
}

std::vector<PreferencePair> load_preference_file(const DataSource& src, const Tokenizer& tok, ChatFormat chat,
                                                 const std::map<std::string, std::string>& columns) {
  if (src.format != "auto" && src.format != "preference")
    fail(src.path, ": format '", src.format, "' cannot train a preference stage; use \"preference\" or \"auto\"");
  std::vector<PreferencePair> out;
  read_jsonl(src.path, "data.train / data.eval", [&](const nlohmann::json& row, int64_t line) {
    out.push_back(render_preference_row(row, tok, chat, columns, src.path, line));
  });
  if (out.empty()) fail(src.path, ": no rows (the file is empty or has only blank lines)");
  return out;
}

void truncate_pairs(std::vector<PreferencePair>& pairs, int64_t max_len, int64_t max_prompt_len, Truncation policy,
                    PreferenceStats& st) {
  if (max_prompt_len < 1 || max_prompt_len >= max_len)
    fail("dpo.max_prompt_len: ", max_prompt_len, " must be at least 1 and below data.seq_len ", max_len);
  std::vector<PreferencePair> kept;
  for (PreferencePair& p : pairs) {
    ++st.pairs;
    if (p.chosen == p.rejected) {
      ++st.dropped;
      continue;
    }
    int64_t P = p.prompt.size(), longest = std::max(p.chosen.size(), p.rejected.size());
    if (P + longest > max_len) {
      if (policy == Truncation::Drop) {
        ++st.dropped;
        continue;
      }
      int64_t keep = std::max(std::min(P, max_prompt_len), max_len - longest);
      if (keep < P) {
        p.prompt.erase(p.prompt.begin() + 1, p.prompt.begin() + 1 + (P - keep));  // BOS stays first
        ++st.truncated_prompts;
        P = keep;
      }
      for (auto* r : {&p.chosen, &p.rejected})
        if (P + (int64_t)r->size() > max_len) r->resize(max_len - P), ++st.truncated_responses;
    }
    st.prompt_tokens += p.prompt.size();
    st.chosen_tokens += p.chosen.size();
    st.rejected_tokens += p.rejected.size();
    kept.push_back(std::move(p));
  }
  pairs = std::move(kept);
}

PreferenceData build_preference_data(const DataConfig& cfg, int64_t max_prompt_len, const Tokenizer& tok,
                                     uint64_t seed) {
  const ChatFormat chat = chat_format_from_name(cfg.chat_format, tok);
  auto [train, eval] = mix_sources<PreferencePair>(
      cfg, seed, [&](const DataSource& s) { return load_preference_file(s, tok, chat, cfg.columns); });
  PreferenceData out;
  truncate_pairs(train, cfg.seq_len, max_prompt_len, cfg.truncation, out.train_stats);
  truncate_pairs(eval, cfg.seq_len, max_prompt_len, cfg.truncation, out.eval_stats);
  if (train.empty())
    fail("data: no preference pair left (", out.train_stats.dropped, " dropped of ", out.train_stats.pairs,
         "); raise data.seq_len or use truncation \"right\"");
  out.train = std::move(train);
  out.eval = std::move(eval);
  return out;
}

}  // namespace affinage
