// A run from a recipe, top to bottom (contract in app/run.h): stages through the stage table, summary.json and
// the report per stage, then the merge and publish steps.
#include "app/run.h"
#include <filesystem>
#include <iostream>
#include "app/publish.h"
#include "app/report.h"
#include "app/run_summary.h"
#include "app/stages.h"
#include "base/distributed.h"
#include "base/error.h"
#include "base/files.h"
#include "base/runtime.h"
#include "config/recipe_file.h"
#include "lora/merge.h"

namespace fs = std::filesystem;

namespace affinage {
namespace {

// Ranks other than 0 print nothing while they train (rank 0 reports for all); an error still reaches the
// terminal, since the stream is restored before main() prints it.
struct QuietUnlessMain {
  struct Null : std::streambuf {
    int overflow(int c) override { return c; }
  } null;
  std::streambuf* err = std::cerr.rdbuf();
  std::streambuf* out = std::cout.rdbuf();
  QuietUnlessMain() {
    if (!world().main()) std::cerr.rdbuf(&null), std::cout.rdbuf(&null);
  }
  ~QuietUnlessMain() { std::cerr.rdbuf(err), std::cout.rdbuf(out); }
};

// One stage: its resolved recipe, the run, summary.json (whose presence marks the stage as finished), the report.
void run_stage(const Recipe& r, bool resume) {
  const bool main = world().main();  // the other data-parallel ranks only train
  fs::create_directories(r.output_dir);
  if (main) write_file_atomic(r.output_dir + "/recipe.json", recipe_to_json(r).dump(2) + "\n");
  StageResult res = stage_def(r.stage).run(r, resume);
  if (!main) return;
  RunSummary s;
  s.stage = name_of(r.stage), s.steps = res.summary.steps, s.final_metrics = res.summary.last;
  s.eval = res.summary.eval, s.initial_eval = res.summary.initial_eval, s.data = res.data_stats, s.tasks = res.tasks;
  write_run_summary(r.output_dir, s);
  write_report(r.output_dir);
  std::cout << "done: " << r.name << " (" << s.stage << "), " << s.steps << " steps; adapter in " << r.output_dir
            << "/adapter\n";
}

// The recipe's steps after training, from the last stage's resolved keys, into the top-level output_dir
// (derived folders: rebuilt when the run is repeated or resumed).
void after_training(const Recipe& top, const Recipe& last) {
  const std::string merged = top.output_dir + "/merged", published = top.output_dir + "/publish";
  if (last.merge.enabled) {
    fs::remove_all(merged);
    MergeOptions mo;
    mo.model_dir = last.model, mo.adapters = {{last.output_dir + "/adapter", 1.0}}, mo.out_dir = merged;
    if (!last.merge.dtype.empty()) mo.dtype = parse_dtype(last.merge.dtype);
    mo.format = last.merge.format;
    auto ms = merge_adapters(mo);
    std::cout << "merged: " << ms.tensors << " tensors (" << ms.lora_modules << " with LoRA) into " << merged << "\n";
  }
  if (last.publish.enabled) {
    fs::remove_all(published);
    PublishOptions po;
    if (last.publish.what == "merged") po.model_dir = merged;
    else po.adapter_dir = last.output_dir + "/adapter";
    po.out_dir = published, po.name = last.publish.name, po.license = last.publish.license,
    po.run_dir = last.output_dir;
    auto pr = publish(po);
    for (auto& n : pr.notes) std::cerr << "note: " << n << "\n";
    std::cout << "published: " << pr.out_dir << "\n  upload with: " << pr.upload_command << "\n";
  }
}

}  // namespace

void run_recipe(const RunOptions& o) {
  Recipe r = load_recipe(o.recipe, o.overrides);
  std::vector<Recipe> stages = expand_stages(r);  // every stage validated before anything runs
  read_world_from_env();
  init_process_group(pick_device(r.device));
  QuietUnlessMain quiet;
  const bool main = world().main();
  if (stages.size() == 1) {
    run_stage(stages[0], o.resume);
    if (main) after_training(r, stages[0]);
    return;
  }
  fs::create_directories(r.output_dir);
  if (main) write_file_atomic(r.output_dir + "/recipe.json", recipe_to_json(r).dump(2) + "\n");
  bool resuming = o.resume;
  for (size_t k = 0; k < stages.size(); ++k) {
    const Recipe& s = stages[k];
    const std::string name = name_of(s.stage);
    if (resuming && fs::exists(s.output_dir + "/summary.json") && fs::exists(s.output_dir + "/adapter")) {
      std::cerr << "stage " << k + 1 << "/" << stages.size() << " (" << name << ") already finished in " << s.output_dir
                << "; skipped\n";
      continue;
    }
    std::cerr << "stage " << k + 1 << "/" << stages.size() << ": " << name << " -> " << s.output_dir << "\n";
    run_stage(s, resuming && fs::exists(s.output_dir + "/checkpoints"));
    resuming = false;  // the stages after the one resumed start fresh
  }
  if (main) after_training(r, stages.back());
}

}  // namespace affinage
