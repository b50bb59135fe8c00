// The model card of a published folder (see app/model_card.h).
#include "app/model_card.h"
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <sstream>

using json = nlohmann::json;

namespace affinage {

namespace {

std::string yaml_str(const std::string& s) { return json(s).dump(); }  // a JSON string is a YAML double-quoted scalar

std::string num(double v) {
  char buf[64];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.5g", v);
  return buf;
}

std::string cell(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_number()) return num(v.get<double>());
  if (v.is_string()) return v.get<std::string>().empty() ? "\"\"" : v.get<std::string>();
  return "`" + v.dump() + "`";
}

bool present(const json& j) { return j.is_object() && !j.empty(); }

// "a.b.c" -> value for every leaf of `j`, skipping keys in `skip` (dotted paths) and empty objects/arrays.
void flatten(const json& j, const std::string& prefix, const std::set<std::string>& skip,
             std::vector<std::pair<std::string, json>>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (skip.count(key)) continue;
    if (it->is_object()) {
      flatten(*it, key, skip, out);
      continue;
    }
    if ((it->is_array() && it->empty()) || (it->is_string() && it->get<std::string>().empty())) continue;
    out.emplace_back(key, *it);
  }
}

void usage_section(std::ostringstream& md, const CardInputs& in) {
  const std::string base =
      in.base_model.empty() ? (in.base_model_local.empty() ? "BASE_MODEL" : in.base_model_local) : in.base_model;
  md << "## How to use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n";
  if (in.adapter) {
    md << "from peft import PeftModel\n\n"
       << "base = AutoModelForCausalLM.from_pretrained(" << yaml_str(base) << ", torch_dtype=\"auto\")\n"
       << "tokenizer = AutoTokenizer.from_pretrained(" << yaml_str(base) << ")\n"
       << "model = PeftModel.from_pretrained(base, " << yaml_str(in.name) << ")\n"
       << "# or fold the adapter into the weights: model = model.merge_and_unload()\n";
  } else {
    md << "\nmodel = AutoModelForCausalLM.from_pretrained(" << yaml_str(in.name) << ", torch_dtype=\"auto\")\n"
       << "tokenizer = AutoTokenizer.from_pretrained(" << yaml_str(in.name) << ")\n";
  }
  md << "\ninputs = tokenizer(\"Once upon a time\", return_tensors=\"pt\")\n"
     << "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))\n```\n\n";
  if (in.adapter)
    md << "With affinage: `affinage generate --model BASE_DIR --adapter THIS_DIR --prompt \"Once upon a time\"`.\n\n";
  else md << "With affinage: `affinage generate --model THIS_DIR --prompt \"Once upon a time\"`.\n\n";
}

void data_section(std::ostringstream& md, const CardInputs& in) {
  md << "### Data\n\n";
  auto sources = recipe_data_sources(in.recipe);
  if (sources.empty()) {
    md << "No data files recorded (no run found).\n\n";
  } else {
    md << "| role | file | format | weight |\n|---|---|---|---|\n";
    for (auto& [role, s] : sources)
      md << "| " << role << " | `" << s["path"].get<std::string>() << "` | " << cell(s.value("format", json())) << " | "
         << cell(s.value("weight", json())) << " |\n";
    md << "\nSHA-256 of each file: `provenance.json`.\n\n";
  }
  if (present(in.data_stats)) {
    std::vector<std::string> splits, keys;
    std::set<std::string> seen;
    for (auto it = in.data_stats.begin(); it != in.data_stats.end(); ++it) {
      if (!it->is_object()) continue;
      if (it.key() == "train") splits.insert(splits.begin(), it.key());  // train first, then eval and the rest
      else splits.push_back(it.key());
      for (auto k = it->begin(); k != it->end(); ++k)
        if (k->is_number() && seen.insert(k.key()).second) keys.push_back(k.key());
    }
    md << "|";
    for (auto& s : splits) md << " | " << s;
    md << " |\n|---|";
    for (size_t i = 0; i < splits.size(); ++i) md << "---|";
    md << "\n";
    for (auto& k : keys) {
      md << "| " << k;
      for (auto& s : splits) md << " | " << cell(in.data_stats[s].value(k, json()));
      md << " |\n";
    }
    md << "\n";
  }
}

void eval_section(std::ostringstream& md, const CardInputs& in) {
  md << "### Evaluation\n\n";
  const json before = in.summary ? json(in.summary->initial_eval) : json();
  const json after = in.summary ? json(in.summary->eval) : json();
  if (!present(before) && !present(after)) {
    md << "No held-out evaluation recorded.\n\n";
    return;
  }
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const json* j : {&after, &before})
    if (j->is_object())
      for (auto it = j->begin(); it != j->end(); ++it)
        if (it->is_number() && seen.insert(it.key()).second) keys.push_back(it.key());
  md << "Held-out set of the run; \"before\" is the base model (step 0).\n\n"
     << "| metric | before training | after training |\n|---|---|---|\n";
  auto val = [](const json& j, const std::string& k) { return j.is_object() && j.contains(k) ? j[k] : json(); };
  for (auto& k : keys) {
    md << "| " << k << " | " << cell(val(before, k)) << " | " << cell(val(after, k)) << " |\n";
    if (k.size() >= 4 && k.compare(k.size() - 4, 4, "loss") == 0) {
      auto ppl = [&](const json& v) { return v.is_number() ? json(std::exp(v.get<double>())) : json(); };
      md << "| " << k.substr(0, k.size() - 4) << "perplexity | " << cell(ppl(val(before, k))) << " | "
         << cell(ppl(val(after, k))) << " |\n";
    }
  }
  md << "\n";
  // The recipe's eval.tasks (eval/tasks.h): one table per task file.
  const json tasks = in.summary ? in.summary->tasks : json();
  const json tb = val(tasks, "before"), ta = val(tasks, "after");
  if (!ta.is_object()) return;
  for (auto it = ta.begin(); it != ta.end(); ++it) {
    md << "Task `" << it.key() << "` (" << it->value("task", std::string("?")) << ", "
       << cell(it->value("rows", json()))
       << " rows):\n\n| metric | before training | after training |\n|---|---|---|\n";
    for (auto m = it->begin(); m != it->end(); ++m)
      if (m->is_number_float())
        md << "| " << m.key() << " | " << cell(val(val(tb, it.key()), m.key())) << " | " << cell(*m) << " |\n";
    md << "\n";
  }
}

}  // namespace

std::vector<std::pair<std::string, json>> recipe_data_sources(const json& recipe) {
  std::vector<std::pair<std::string, json>> out;
  std::function<void(const json&, const std::string&)> walk = [&](const json& j, const std::string& where) {
    if (j.is_object() && j.contains("path") && j["path"].is_string()) {
      out.emplace_back(where, j);
      return;
    }
    if (j.is_array())
      for (size_t i = 0; i < j.size(); ++i) walk(j[i], where + "[" + std::to_string(i) + "]");
    if (!j.is_object()) return;
    if (j.contains("train")) walk(j["train"], where.empty() ? "train" : where + ".train");
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.key() != "train") walk(*it, where.empty() ? it.key() : where + "." + it.key());
  };
  if (recipe.is_object() && recipe.contains("data")) walk(recipe["data"], "");
  return out;
}

std::string render_model_card(const CardInputs& in) {
  std::ostringstream md;
  const std::string stage = in.recipe.is_object() ? in.recipe.value("stage", std::string()) : std::string();
  // --- front matter
  md << "---\n";
  if (!in.base_model.empty()) md << "base_model: " << yaml_str(in.base_model) << "\n";
  md << "library_name: " << (in.adapter ? "peft" : "transformers") << "\n";
  md << "license: " << yaml_str(in.license) << "\n";
  md << "pipeline_tag: text-generation\n";
  md << "tags:\n- affinage\n";
  for (auto& t : in.tags) md << "- " << yaml_str(t) << "\n";
  if (!in.datasets.empty()) {
    md << "datasets:\n";
    for (auto& d : in.datasets) md << "- " << yaml_str(d) << "\n";
  }
  md << "---\n\n";

  // --- body
  md << "# " << in.name << "\n\n";
  std::string base = in.base_model.empty() ? in.base_model_local : in.base_model;
  if (in.adapter)
    md << "A LoRA adapter (PEFT format) for `" << (base.empty() ? "an unrecorded base model" : base) << "`";
  else if (present(in.merge))
    md << "`" << (base.empty() ? "A base model" : base) << "` with LoRA adapter(s) merged into its weights";
  else md << "A causal language model";
  md << ", made with affinage " << in.version;
  if (!stage.empty()) md << " (stage: " << stage << ")";
  md << ".\n\n";
  usage_section(md, in);

  if (present(in.merge)) {
    const json& m = in.merge;
    md << "## Merge\n\n`W' = W + combine(w_i · scale_i · B_i @ A_i)` in fp32, cast to "
       << cell(m.value("dtype", json())) << "; method **" << cell(m.value("method", json())) << "**";
    if (m.contains("density")) md << ", density " << cell(m["density"]);
    if (m.contains("seed")) md << ", seed " << cell(m["seed"]);
    md << ".\n\n| adapter | weight |\n|---|---|\n";
    for (auto& a : m.value("adapters", json::array()))
      md << "| `" << cell(a.value("path", json())) << "` | " << cell(a.value("weight", json())) << " |\n";
    md << "\n";
  }

  md << "## Training\n\n";
  if (!in.recipe.is_object()) {
    md << "No training run was found next to these files, so the recipe, data and evaluation are not recorded "
          "here.\n\n";
  } else {
    if (present(in.merge))
      md << "The run that trained the merged adapter"
         << (in.merge.value("adapters", json::array()).size() > 1 ? " listed first" : "")
         << "; its evaluation is of base + adapter before merging.\n\n";
    md << "| | |\n|---|---|\n| recipe | `" << in.recipe.value("name", std::string()) << "` |\n| stage | " << stage
       << " |\n| base model | `" << in.recipe.value("model", std::string()) << "` |\n";
    if (in.summary) md << "| optimizer steps | " << in.summary->steps << " |\n";
    md << "| toolkit | affinage " << in.version << " |\n\n";
    md << "### Hyperparameters\n\n| key | value |\n|---|---|\n";
    std::vector<std::pair<std::string, json>> hp;
    flatten(in.recipe, "",
            {"name", "model", "output_dir", "device", "threads", "log_every", "data.train", "data.eval", "checkpoint",
             "stage"},
            hp);
    for (auto& [k, v] : hp) md << "| " << k << " | " << cell(v) << " |\n";
    md << "\n";
    data_section(md, in);
    eval_section(md, in);
    md << "### Recipe\n\n<details><summary>recipe.json: the resolved recipe, every key</summary>\n\n```json\n"
       << in.recipe.dump(2) << "\n```\n\n</details>\n\n";
  }
  md << "## Provenance\n\n`provenance.json` holds the SHA-256 of every published file, of the base model's weights, "
     << "of the training data files and of the recipe, with the affinage version that made them.\n";
  return md.str();
}

}  // namespace affinage
