// affinage run: a recipe file → a training run (its stage, or each of its stages in order), with --set
// overrides and --resume; data-parallel under torchrun/srun or with --nproc K (core/distributed.h).
#include <filesystem>
#include <iostream>
#include "cli/commands.h"
#include "core/distributed.h"
#include "core/error.h"
#include "core/recipe.h"
#include "core/runtime.h"
#include "core/report.h"
#include "core/safetensors.h"
#include "core/publish.h"
#include "dpo/dpo.h"
#include "lora/merge.h"
#include "sft/sft.h"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace affinage::cli {

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

// One stage: its resolved recipe, the run, summary.json (whose presence marks the stage as finished).
static void run_stage(const Recipe& r, bool resume) {
  const bool main = world().main();  // the other data-parallel ranks only train
  fs::create_directories(r.output_dir);
  if (main) write_file_atomic(r.output_dir + "/recipe.json", recipe_to_json(r).dump(2) + "\n");
  TrainSummary s;
  nlohmann::json data, tasks;
  if (r.stage == "sft") {
    auto res = run_sft(r, resume);
    s = res.summary, data = res.data_stats, tasks = res.tasks;
  } else if (r.stage == "dpo") {
    auto res = run_dpo(r, resume);
    s = res.summary, data = res.data_stats, tasks = res.tasks;
  } else {
    fail("recipe ", r.source_path, ": stage '", r.stage, "' is not available in this build (sft, dpo)");
  }
  if (!main) return;
  nlohmann::json summary = {{"stage", r.stage}, {"steps", s.steps}, {"final", s.last}, {"eval", s.eval},
                            {"initial_eval", s.initial_eval}, {"data", data}, {"tasks", tasks}};
  write_file_atomic(r.output_dir + "/summary.json", summary.dump(2) + "\n");
  write_report(r.output_dir);
  std::cout << "done: " << r.name << " (" << r.stage << "), " << s.steps << " steps; adapter in " << r.output_dir
            << "/adapter\n";
}

// The recipe's steps after training, from the last stage's resolved keys, into the top-level output_dir
// (derived folders: rebuilt when the run is repeated or resumed).
static void after_training(const Recipe& top, const Recipe& last) {
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
    po.out_dir = published, po.name = last.publish.name, po.license = last.publish.license, po.run_dir = last.output_dir;
    auto pr = publish(po);
    for (auto& n : pr.notes) std::cerr << "note: " << n << "\n";
    std::cout << "published: " << pr.out_dir << "\n  upload with: " << pr.upload_command << "\n";
  }
}

int cmd_run(const Args& args) {
  std::string path;
  std::vector<std::string> sets;
  bool resume = false;
  int nproc = 0;
  po::options_description opts("run options");
  opts.add_options()
      ("recipe", po::value(&path)->required(), "recipe file (JSON, comments allowed)")
      ("set", po::value(&sets)->composing(), "override a key: --set lora.r=16 (repeatable)")
      ("resume", po::bool_switch(&resume), "continue from the newest checkpoint in the output folder; in a "
                                           "multi-stage recipe, finished stages are skipped")
      ("nproc", po::value(&nproc), "train data-parallel on K local processes (Gloo on CPU, NCCL on GPUs; the "
                                   "same result as one process). Several machines: torchrun or srun, see docs/distributed.md");
  po::positional_options_description pos;
  pos.add("recipe", 1);
  po::variables_map vm;
  if (parse_args(args, "usage: affinage run RECIPE [--set key=value ...] [--resume] [--nproc K]", opts, vm, &pos)) return 0;
  Recipe r = load_recipe(path, sets);
  std::vector<Recipe> stages = expand_stages(r);  // every stage validated before anything runs
  if (nproc > 0) {
    Args child{path};
    for (auto& s : sets) child.push_back("--set"), child.push_back(s);
    if (resume) child.push_back("--resume");
    return launch_local_ranks(nproc, child);
  }
  read_world_from_env();
  init_process_group(pick_device(r.device));
  QuietUnlessMain quiet;
  const bool main = world().main();
  if (stages.size() == 1) {
    run_stage(stages[0], resume);
    if (main) after_training(r, stages[0]);
    return 0;
  }
  fs::create_directories(r.output_dir);
  if (main) write_file_atomic(r.output_dir + "/recipe.json", recipe_to_json(r).dump(2) + "\n");
  bool resuming = resume;
  for (size_t k = 0; k < stages.size(); ++k) {
    const Recipe& s = stages[k];
    if (resuming && fs::exists(s.output_dir + "/summary.json") && fs::exists(s.output_dir + "/adapter")) {
      std::cerr << "stage " << k + 1 << "/" << stages.size() << " (" << s.stage << ") already finished in "
                << s.output_dir << "; skipped\n";
      continue;
    }
    std::cerr << "stage " << k + 1 << "/" << stages.size() << ": " << s.stage << " -> " << s.output_dir << "\n";
    run_stage(s, resuming && fs::exists(s.output_dir + "/checkpoints"));
    resuming = false;  // the stages after the one resumed start fresh
  }
  if (main) after_training(r, stages.back());
  return 0;
}

}  // namespace affinage::cli
