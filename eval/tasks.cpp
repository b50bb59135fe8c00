// Generation, multiple-choice and preference task metrics (contract in eval/tasks.h).
#include "eval/tasks.h"
#include <algorithm>
#include <iostream>
#include <regex>
#include "base/error.h"
#include "base/strings.h"
#include "datasets/jsonl.h"
#include "datasets/preference_data.h"
#include "datasets/row_batch.h"
#include "datasets/word_stories.h"
#include "eval/perplexity.h"
#include "text/chat.h"

namespace affinage {
namespace {

std::vector<int> prompt_ids(const nlohmann::json& p, const Tokenizer& tok, const std::string& where) {
  if (p.is_string()) {
    std::vector<int> ids{tok.bos_id()};
    for (int t : tok.encode(p.get<std::string>())) ids.push_back(t);
    return ids;
  }
  try {
    return render_chat(tok, parse_messages(p, "prompt", where), detect_chat_format(tok), true).ids;
  } catch (const Error& e) {
    fail(e.what());
  }
}

nlohmann::json generation_task(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, const TaskOptions& o) {
  struct Item {
    std::vector<int> prompt;
    std::vector<std::string> refs;
  };
  std::vector<Item> items;
  read_jsonl(file, "the task file", [&](const nlohmann::json& row, int64_t line) {
    const std::string where = file + ":" + std::to_string(line);
    if (!row.is_object() || !row.contains("prompt")) fail(where, ": field 'prompt': missing");
    Item it;
    it.prompt = prompt_ids(row["prompt"], tok, where);
    nlohmann::json refs = row.contains("references") ? row["references"] : row.value("reference", nlohmann::json());
    if (refs.is_string()) refs = nlohmann::json::array({refs});
    if (!refs.is_array() || refs.empty()) fail(where, ": field 'reference': give a string or 'references': [strings]");
    for (size_t i = 0; i < refs.size(); ++i) {
      if (!refs[i].is_string()) fail(where, ": field 'references[", i, "]': must be a string");
      it.refs.push_back(refs[i].get<std::string>());
    }
    items.push_back(std::move(it));
  });
  if (items.empty()) fail(file, ": no rows");
  std::vector<const Item*> flat;  // each prompt `samples` times; row i of the whole run samples with seed + i
  for (auto& it : items)
    for (int64_t k = 0; k < o.samples; ++k) flat.push_back(&it);
  double exact = 0, contains = 0, word = 0, extracted = 0;
  nlohmann::json examples = nlohmann::json::array();
  for (size_t s = 0; s < flat.size(); s += o.batch) {
    std::vector<std::vector<int>> prompts;
    for (size_t i = s; i < std::min(flat.size(), s + o.batch); ++i) prompts.push_back(flat[i]->prompt);
    SamplingOptions so;
    so.max_new_tokens = o.max_new_tokens, so.temperature = o.temperature, so.seed = o.seed + s,
    so.eos_id = tok.eos_id();
    auto gen = generate(m, prompts, so);
    for (size_t i = 0; i < gen.size(); ++i) {
      const Item& it = *flat[s + i];
      std::string out = decode_continuation(tok, it.prompt, gen[i], so.eos_id);
      auto any = [&](auto pred) { return std::any_of(it.refs.begin(), it.refs.end(), pred); };
      exact += any([&](const std::string& r) { return answer_exact(out, r); });
      contains += any([&](const std::string& r) { return answer_contains(out, r); });
      word += any([&](const std::string& r) { return uses_word(out, r); });
      if (!o.extract.empty()) {
        std::string a = extract_answer(out, o.extract);
        extracted += any([&](const std::string& r) { return !a.empty() && answer_exact(a, r); });
      }
      if (examples.size() < 3) examples.push_back({{"output", out}, {"references", it.refs}});
    }
  }
  const double n = flat.size();
  nlohmann::json r = {{"task", "generation"},     {"rows", items.size()},     {"samples", flat.size()},
                      {"exact_match", exact / n}, {"contains", contains / n}, {"word_match", word / n},
                      {"examples", examples}};
  if (!o.extract.empty()) r["extracted_match"] = extracted / n;
  return r;
}

// Scores prompt/continuation pairs in batches: summed log-probs and token counts.
std::pair<std::vector<double>, std::vector<double>> score(CausalLMImpl& m,
                                                          const std::vector<const std::vector<int>*>& prompts,
                                                          const std::vector<const std::vector<int>*>& conts,
                                                          int64_t batch) {
  at::NoGradGuard ng;
  std::vector<double> sums, lens;
  const auto dev = m.head_weight().device();
  for (size_t s = 0; s < prompts.size(); s += batch) {
    size_t e = std::min(prompts.size(), s + batch);
    std::vector<const std::vector<int>*> p(prompts.begin() + s, prompts.begin() + e),
        c(conts.begin() + s, conts.begin() + e);
    auto [sum, cnt] = continuation_logprobs(m, continuation_batch(p, c, dev).first);
    auto sc = sum.to(at::kCPU, at::kDouble), cc = cnt.to(at::kCPU, at::kDouble);
    for (int64_t i = 0; i < sc.size(0); ++i) sums.push_back(sc[i].item<double>()), lens.push_back(cc[i].item<double>());
  }
  return {sums, lens};
}

nlohmann::json choice_task(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, const TaskOptions& o) {
  struct Item {
    std::vector<int> prompt;
    std::vector<std::vector<int>> conts;
    std::vector<double> bytes;
    int64_t answer;
  };
  std::vector<Item> items;
  read_jsonl(file, "the task file", [&](const nlohmann::json& row, int64_t line) {
    const std::string where = file + ":" + std::to_string(line);
    const std::string& prompt = get_string(row, "prompt", "prompt", where, true);
    auto ch = row.find("choices");
    if (ch == row.end() || !ch->is_array() || ch->size() < 2)
      fail(where, ": field 'choices': give an array of at least two strings");
    Item it;
    std::vector<int> body = prompt.empty() ? std::vector<int>{} : tok.encode(prompt);
    it.prompt = {tok.bos_id()};
    it.prompt.insert(it.prompt.end(), body.begin(), body.end());
    // lm-evaluation-harness joins prompt and choice with " " unless the prompt already ends in whitespace
    const std::string delim = prompt.empty() || std::isspace(static_cast<unsigned char>(prompt.back())) ? "" : " ";
    std::vector<std::string> texts;
    for (size_t i = 0; i < ch->size(); ++i) {
      if (!(*ch)[i].is_string()) fail(where, ": field 'choices[", i, "]': must be a string");
      texts.push_back((*ch)[i].get<std::string>());
      std::string c = delim + texts.back();
      it.conts.push_back(completion_ids(tok, prompt, c, body));
      it.bytes.push_back(static_cast<double>(c.size()));
    }
    auto a = row.find("answer");
    if (a == row.end()) fail(where, ": field 'answer': missing; give the index of the right choice or its text");
    if (a->is_number_integer()) it.answer = a->get<int64_t>();
    else if (a->is_string()) it.answer = std::find(texts.begin(), texts.end(), a->get<std::string>()) - texts.begin();
    else fail(where, ": field 'answer': must be an index or one of the choices");
    if (it.answer < 0 || it.answer >= (int64_t)texts.size())
      fail(where, ": field 'answer': ", a->dump(), " is not one of the ", texts.size(), " choices");
    items.push_back(std::move(it));
  });
  std::vector<const std::vector<int>*> p, c;
  for (auto& it : items)
    for (auto& x : it.conts) p.push_back(&it.prompt), c.push_back(&x);
  auto [sums, lens] = score(m, p, c, o.batch);
  double acc = 0, acc_norm = 0;
  size_t k = 0;
  for (auto& it : items) {
    size_t best = 0, best_norm = 0;
    for (size_t j = 0; j < it.conts.size(); ++j) {
      if (sums[k + j] > sums[k + best]) best = j;
      if (sums[k + j] / it.bytes[j] > sums[k + best_norm] / it.bytes[best_norm]) best_norm = j;
    }
    acc += best == (size_t)it.answer, acc_norm += best_norm == (size_t)it.answer;
    k += it.conts.size();
  }
  return {
      {"task", "choice"}, {"rows", items.size()}, {"acc", acc / items.size()}, {"acc_norm", acc_norm / items.size()}};
}

nlohmann::json preference_task(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, const TaskOptions& o) {
  auto pairs = load_preference_file({file, "auto", 1.0}, tok, detect_chat_format(tok), {});
  std::vector<const std::vector<int>*> p, c;
  for (auto& x : pairs)
    p.push_back(&x.prompt), c.push_back(&x.chosen), p.push_back(&x.prompt), c.push_back(&x.rejected);
  auto [sums, lens] = score(m, p, c, 2 * o.batch);
  double acc = 0, acc_tok = 0, margin = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    double sc = sums[2 * i], sr = sums[2 * i + 1];
    acc += sc > sr, acc_tok += sc / lens[2 * i] > sr / lens[2 * i + 1], margin += sc - sr;
  }
  const double n = pairs.size();
  return {{"task", "preference"},
          {"rows", pairs.size()},
          {"accuracy", acc / n},
          {"accuracy_per_token", acc_tok / n},
          {"logp_margin", margin / n}};
}

}  // namespace

bool answer_exact(const std::string& output, const std::string& reference) { return trim(output) == trim(reference); }

bool answer_contains(const std::string& output, const std::string& reference) {
  const std::string r = lower(trim(reference));
  return !r.empty() && lower(output).find(r) != std::string::npos;
}

std::string extract_answer(const std::string& output, const std::string& pattern) {
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("--extract: '", pattern, "' is not a valid regular expression (", e.what(), ")");
  }
  std::smatch mt;
  if (!std::regex_search(output, mt, re)) return "";
  return mt.size() > 1 && mt[1].matched ? mt[1].str() : mt[0].str();
}

std::string detect_task_type(const std::string& file) {
  const nlohmann::json row = first_jsonl_row(file, "the task file").first;
  if (row.contains("choices")) return "choice";
  if (row.contains("chosen") || row.contains("rejected")) return "preference";
  if (row.contains("reference") || row.contains("references")) return "generation";
  return "loss";
}

nlohmann::json evaluate_task(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, const TaskOptions& o) {
  const std::string type = o.type == "auto" ? detect_task_type(file) : o.type;
  if (o.batch < 1 || o.samples < 1) fail("eval: --batch and --samples must be >= 1");
  at::NoGradGuard ng;
  nlohmann::json r;
  if (type == "generation") r = generation_task(m, tok, file, o);
  else if (type == "choice") r = choice_task(m, tok, file, o);
  else if (type == "preference") r = preference_task(m, tok, file, o);
  else if (type == "loss") r = evaluate_loss(m, tok, file, o.seq_len, o.batch, "auto").to_json(), r["task"] = "loss";
  else fail("eval: unknown task type '", type, "'; use auto, generation, choice, preference or loss");
  r["file"] = file;
  return r;
}

nlohmann::json run_eval_tasks(const std::vector<EvalTask>& tasks, CausalLMImpl& m, const Tokenizer& tok, int64_t batch,
                              const std::string& label) {
  nlohmann::json out = nlohmann::json::object();
  if (tasks.empty()) return out;
  const bool was_training = m.is_training();
  m.eval();
  for (const EvalTask& t : tasks) {
    TaskOptions o;
    o.type = t.type, o.batch = std::max<int64_t>(batch, 1), o.max_new_tokens = t.max_new_tokens, o.samples = t.samples;
    o.temperature = t.temperature, o.extract = t.extract;
    nlohmann::json r = evaluate_task(m, tok, t.path, o);
    r.erase("examples");
    std::cerr << "task " << t.path << " (" << label << "):";
    for (auto& [k, v] : r.items())
      if (v.is_number_float()) std::cerr << "  " << k << " " << v.get<double>();
    std::cerr << "\n";
    out[t.path] = r;
  }
  m.train(was_training);
  return out;
}

}  // namespace affinage
