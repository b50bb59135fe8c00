// report.html for a run folder (see app/report.h). Charts are plain SVG polylines drawn here; the page holds
// nothing that a browser would fetch, so it opens the same offline, attached to a mail or in a CI artifact.
#include "app/report.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include "app/run_summary.h"
#include "base/error.h"
#include "base/files.h"
#include "base/strings.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace affinage {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string num(double v, int digits = 5) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

std::string px(double v) {  // SVG coordinates: one decimal is plenty
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

using Points = std::vector<std::pair<double, double>>;  // (step, value)

struct Series {
  std::string label, color;
  bool dashed = false;
  Points pts;
};

struct Chart {
  std::string title, note;
  std::vector<Series> series;
};

// Tick spacing of 1, 2 or 5 times a power of ten giving about `n` intervals over `range`.
double nice_step(double range, int n) {
  double raw = range / n, p = std::pow(10.0, std::floor(std::log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

std::string tick_label(double v, double step) {
  v = std::round(v / step) * step;
  if (std::abs(v) < step * 1e-6) v = 0;
  return num(v, 4);
}

std::string svg_chart(const Chart& c) {
  const double W = 560, H = 270, L = 62, R = 14, T = 40, B = 34;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (auto& s : c.series)
    for (auto& [x, y] : s.pts) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  if (x1 <= x0) x0 -= 1, x1 += 1;
  if (y1 <= y0) {
    double d = std::abs(y0) > 0 ? std::abs(y0) * 0.1 : 1;
    y0 -= d, y1 += d;
  }
  double ys = nice_step(y1 - y0, 5), xs = std::max(1.0, nice_step(x1 - x0, 6));
  y0 = std::floor(y0 / ys) * ys, y1 = std::ceil(y1 / ys) * ys;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };

  std::string o = "<figure class=\"chart\"><svg viewBox=\"0 0 560 270\" role=\"img\" aria-label=\"" + esc(c.title) +
                  "\" xmlns=\"http://www.w3.org/2000/svg\">\n<text x=\"" + px(L) + "\" y=\"16\" class=\"title\">" +
                  esc(c.title) + "</text>\n";
  for (double v = y0; v <= y1 + ys * 1e-6; v += ys)
    o += "<line class=\"grid\" x1=\"" + px(L) + "\" x2=\"" + px(W - R) + "\" y1=\"" + px(Y(v)) + "\" y2=\"" + px(Y(v)) +
         "\"/><text class=\"tick\" x=\"" + px(L - 6) + "\" y=\"" + px(Y(v) + 4) + "\" text-anchor=\"end\">" +
         tick_label(v, ys) + "</text>\n";
  for (double v = std::ceil(x0 / xs) * xs; v <= x1 + 1e-9; v += xs)
    o += "<line class=\"grid\" x1=\"" + px(X(v)) + "\" x2=\"" + px(X(v)) + "\" y1=\"" + px(T) + "\" y2=\"" + px(H - B) +
         "\"/><text class=\"tick\" x=\"" + px(X(v)) + "\" y=\"" + px(H - B + 15) + "\" text-anchor=\"middle\">" +
         tick_label(v, xs) + "</text>\n";
  o += "<rect class=\"frame\" x=\"" + px(L) + "\" y=\"" + px(T) + "\" width=\"" + px(W - L - R) + "\" height=\"" +
       px(H - T - B) + "\"/>\n<text class=\"tick\" x=\"" + px(W - R) + "\" y=\"" + px(H - 4) +
       "\" text-anchor=\"end\">step</text>\n";
  double lx = L;
  for (auto& s : c.series) {  // legend, then the lines (dashed: held-out), then markers with native tooltips
    std::string dash = s.dashed ? " stroke-dasharray=\"5 3\"" : "";
    o += "<line x1=\"" + px(lx) + "\" x2=\"" + px(lx + 18) + "\" y1=\"29\" y2=\"29\" stroke=\"" + s.color +
         "\" stroke-width=\"2.5\"" + dash + "/><text class=\"legend\" x=\"" + px(lx + 22) + "\" y=\"33\">" +
         esc(s.label) + "</text>\n";
    lx += 34 + 6.6 * s.label.size();
    std::string pts;
    for (auto& [x, y] : s.pts) pts += px(X(x)) + "," + px(Y(y)) + " ";
    if (s.pts.size() > 1)
      o += "<polyline fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"2\"" + dash + " points=\"" + pts +
           "\"/>\n";
    if (s.pts.size() <= 60)
      for (auto& [x, y] : s.pts)
        o += "<circle cx=\"" + px(X(x)) + "\" cy=\"" + px(Y(y)) + "\" r=\"3\" fill=\"" + s.color + "\"><title>" +
             esc(s.label) + " at step " + num(x, 10) + ": " + num(y, 6) + "</title></circle>\n";
  }
  o += "</svg>";
  if (!c.note.empty()) o += "<figcaption>" + esc(c.note) + "</figcaption>";
  return o + "</figure>\n";
}

std::optional<nlohmann::ordered_json> read_json(const std::string& path) {  // keeps the file's key order
  if (!fs::exists(path)) return std::nullopt;
  try {
    return nlohmann::ordered_json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), "); rerun the stage or delete the file to build the report without it");
  }
}

std::string row(const std::vector<std::string>& cells, const char* tag = "td") {
  std::string o = "<tr>";
  for (auto& c : cells) o += std::string("<") + tag + ">" + c + "</" + tag + ">";
  return o + "</tr>\n";
}

const char* kCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI","DejaVu Sans","Liberation Sans",Arial,sans-serif;margin:0;
  background:#f6f7f9;color:#1f2328;font-size:14px}
main{max-width:1160px;margin:0 auto;padding:20px 20px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px}
.sub{color:#59636e;margin-bottom:16px}.warn{color:#9a3412}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px;margin-top:2px}.card span{color:#59636e;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
figure.chart{background:#fff;border:1px solid #d8dee4;border-radius:8px;margin:0;padding:8px}
figure.chart svg{width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:12px;padding:0 6px 4px}
svg .title{font-size:14px;font-weight:600;fill:#1f2328}svg .tick{font-size:11px;fill:#59636e}
svg .legend{font-size:12px;fill:#1f2328}svg .grid{stroke:#eaeef2;stroke-width:1}
svg .frame{fill:none;stroke:#afb8c1;stroke-width:1}
table{border-collapse:collapse;background:#fff;border:1px solid #d8dee4}
td,th{padding:4px 12px;border-bottom:1px solid #eaeef2;text-align:right;font-variant-numeric:tabular-nums}
td:first-child,th:first-child{text-align:left;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
pre{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:12px;overflow:auto;font-size:12px;
  font-family:ui-monospace,"DejaVu Sans Mono",monospace}
footer{color:#59636e;font-size:12px;margin-top:30px}
)";

const char *kBlue = "#2563eb", *kOrange = "#ea580c", *kGreen = "#16a34a", *kRed = "#dc2626", *kPurple = "#7c3aed";

}  // namespace

std::string render_report(const std::string& run_dir) {
  const std::string mpath = run_dir + "/metrics.jsonl";
  if (!fs::exists(mpath)) {
    std::string stages;
    if (fs::is_directory(run_dir))
      for (auto& e : fs::directory_iterator(run_dir))
        if (fs::exists(e.path() / "metrics.jsonl")) stages += " " + e.path().string();
    if (!stages.empty()) fail(run_dir, " is a multi-stage run: build the report of a stage folder:", stages);
    fail("no metrics.jsonl in '", run_dir, "': name the output_dir of a run");
  }
  // 1. metrics.jsonl -> one series per numeric key
  std::map<std::string, Points> m;
  std::ifstream in(mpath);
  std::string s;
  int64_t n_lines = 0;
  for (int ln = 1; std::getline(in, s); ++ln) {
    if (s.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(s, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number())
      fail(mpath, " line ", ln,
           ": not a metrics line (a JSON object with \"step\"); the run may have been "
           "interrupted mid-write: resume it (affinage run RECIPE --resume) or delete the line");
    ++n_lines;
    double step = j["step"].get<double>();
    for (auto& [k, v] : j.items())
      if (k != "step" && v.is_number()) m[k].push_back({step, v.get<double>()});
  }
  auto recipe = read_json(run_dir + "/recipe.json");
  const std::optional<RunSummary> summary = read_run_summary(run_dir);

  // 2. charts: the fixed ones first, then any other metric with its eval_ twin
  std::set<std::string> used = {"elapsed_s", "tokens", "trained_units"};
  auto series = [&](const std::string& key, const std::string& label, const char* color, bool dashed) {
    used.insert(key);
    return Series{label, color, dashed, m.count(key) ? m[key] : Points{}};
  };
  std::vector<Chart> charts = {
      {"Loss",
       "training loss of each logged step; held-out loss at step 0 and at every eval",
       {series("loss", "train", kBlue, false), series("eval_loss", "eval", kOrange, true)}},
      {"Learning rate", "", {series("lr", "lr", kBlue, false)}},
      {"Gradient norm", "global L2 norm before clipping", {series("grad_norm", "grad norm", kBlue, false)}},
      {"Throughput", "tokens per second of the logged step", {series("tokens_per_s", "tokens/s", kBlue, false)}},
      {"Rewards (train)",
       "DPO implicit rewards: beta * (policy - reference) log-prob",
       {series("rewards/chosen", "chosen", kGreen, false), series("rewards/rejected", "rejected", kRed, false),
        series("rewards/margins", "margins", kBlue, false)}},
      {"Rewards (eval)",
       "on the held-out pairs",
       {series("eval_rewards/chosen", "chosen", kGreen, true), series("eval_rewards/rejected", "rejected", kRed, true),
        series("eval_rewards/margins", "margins", kBlue, true)}},
      {"Reward accuracy",
       "share of pairs whose chosen reward beats the rejected one",
       {series("rewards/accuracies", "train", kBlue, false), series("eval_rewards/accuracies", "eval", kOrange, true)}},
      {"Log-probs",
       "summed log-probability of the responses under the policy",
       {series("logps/chosen", "chosen", kGreen, false), series("logps/rejected", "rejected", kRed, false),
        series("eval_logps/chosen", "eval chosen", kGreen, true),
        series("eval_logps/rejected", "eval rejected", kRed, true)}},
  };
  for (auto& [k, pts] : m) {
    if (used.count(k)) continue;
    std::string base = k.rfind("eval_", 0) == 0 ? k.substr(5) : k;
    charts.push_back(
        {base, "", {series(base, "train", kPurple, false), series("eval_" + base, "eval", kOrange, true)}});
  }

  // 3. the page
  fs::path dir = fs::path(run_dir).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();
  std::string logdir = dir.has_parent_path() ? dir.parent_path().string() : ".";
  std::string name = recipe && recipe->contains("name") ? recipe->value("name", "") : dir.filename().string();
  std::string stage = recipe ? recipe->value("stage", "") : "";
  std::string model = recipe ? recipe->value("model", "") : "";
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" "
      "content=\"width=device-width,initial-scale=1\">\n<title>" +
      esc(name) +
      " - affinage report</title>\n"
      "<style>" +
      std::string(kCss) + "</style></head><body><main>\n<h1>" + esc(name) + "</h1>\n";
  std::string sub = (stage.empty() ? "" : stage + " · ") + (model.empty() ? "" : "model " + model + " · ") + run_dir;
  o += "<div class=\"sub\">" + esc(sub) + "</div>\n";
  if (!summary)
    o += "<p class=\"warn\">No summary.json: the run has not finished (or stopped early); this page shows the "
         "metrics written so far.</p>\n";

  auto last = [&](const std::string& k) { return m.count(k) && !m[k].empty() ? m[k].back().second : NAN; };
  auto first = [&](const std::string& k) { return m.count(k) && !m[k].empty() ? m[k].front().second : NAN; };
  std::vector<std::pair<std::string, std::string>> cards;
  double steps = m.count("loss") && !m["loss"].empty() ? m["loss"].back().first : 0;
  if (summary) steps = double(summary->steps);
  cards.push_back({"steps", num(steps, 10)});
  if (!std::isnan(last("loss"))) cards.push_back({"final train loss", num(last("loss"), 4)});
  if (m.count("eval_loss") && m["eval_loss"].size() > 1)
    cards.push_back({"eval loss, first → last", num(first("eval_loss"), 4) + " → " + num(last("eval_loss"), 4)});
  else if (!std::isnan(last("eval_loss"))) cards.push_back({"eval loss", num(last("eval_loss"), 4)});
  if (m.count("eval_rewards/accuracies") && !m["eval_rewards/accuracies"].empty())
    cards.push_back({"eval reward accuracy",
                     num(first("eval_rewards/accuracies"), 3) + " → " + num(last("eval_rewards/accuracies"), 3)});
  if (!std::isnan(last("elapsed_s"))) cards.push_back({"elapsed", format_duration(last("elapsed_s"))});
  o += "<div class=\"cards\">";
  for (auto& [k, v] : cards) o += "<div class=\"card\"><span>" + esc(k) + "</span><b>" + esc(v) + "</b></div>";
  o += "</div>\n<h2>Curves</h2>\n";
  if (n_lines == 0) o += "<p>metrics.jsonl has no lines yet.</p>\n";
  o += "<div class=\"charts\">\n";
  for (auto& c : charts) {
    c.series.erase(std::remove_if(c.series.begin(), c.series.end(), [](const Series& x) { return x.pts.empty(); }),
                   c.series.end());
    if (!c.series.empty()) o += svg_chart(c);
  }
  o += "</div>\n";

  // Final metrics: summary.json's final line and eval beside the step-0 eval, else the last metrics values.
  o += "<h2>Final metrics</h2>\n<table>\n";
  std::map<std::string, double> fin, init;
  if (summary) {
    fin = summary->final_metrics;
    for (auto& [k, v] : summary->eval) fin[k] = v;
    init = summary->initial_eval;
  } else {
    for (auto& [k, pts] : m) fin[k] = pts.back().second;
  }
  o += row({"metric", "before training (step 0)", "final"}, "th");
  std::vector<std::string> keys = {"loss", "eval_loss"};  // the two a reader looks for first, then A-Z
  for (auto& [k, v] : fin)
    if (k != "step" && k != "loss" && k != "eval_loss") keys.push_back(k);
  for (auto& k : keys)
    if (fin.count(k)) o += row({esc(k), init.count(k) ? num(init[k], 6) : "", num(fin[k], 6)});
  o += "</table>\n";

  if (summary && !summary->tasks.empty())  // eval.tasks, before and after
    o += "<h2>Task evaluations</h2>\n<pre>" + esc(summary->tasks.dump(2)) + "</pre>\n";
  if (summary) o += "<h2>Data</h2>\n<pre>" + esc(summary->data.dump(2)) + "</pre>\n";
  o += "<h2>Recipe (resolved)</h2>\n";
  o += recipe ? "<pre>" + esc(recipe->dump(2)) + "</pre>\n" : std::string("<p>No recipe.json in this folder.</p>\n");
  o += "<footer>affinage " AFFINAGE_VERSION " · built from metrics.jsonl" + std::string(recipe ? ", recipe.json" : "") +
       (summary ? ", summary.json" : "") +
       " · the same scalars are in the events.out.tfevents.* file: "
       "<code>tensorboard --logdir " +
       esc(logdir) + "</code></footer>\n";
  return o + "</main></body></html>\n";
}

std::string write_report(const std::string& run_dir) {
  std::string path = run_dir + "/report.html";
  write_file_atomic(path, render_report(run_dir));
  return path;
}

}  // namespace affinage
