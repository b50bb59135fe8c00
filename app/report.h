// report.html for a run folder: one self-contained page (inline CSS and SVG charts, no scripts, no fonts or
// anything else fetched) drawn from metrics.jsonl, recipe.json and summary.json: loss and eval loss, learning
// rate, grad norm, tokens/s, DPO rewards when present, the final metrics and the resolved recipe.
#pragma once
#include <string>

namespace affinage {

// The page for `run_dir` (a folder with metrics.jsonl; recipe.json and summary.json are used when present).
// Errors name the file and line at fault; a multi-stage run's top folder is an error naming its stage folders.
std::string render_report(const std::string& run_dir);

// Writes render_report(run_dir) to <run_dir>/report.html atomically and returns that path.
std::string write_report(const std::string& run_dir);

}  // namespace affinage
