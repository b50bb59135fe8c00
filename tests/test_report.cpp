// report.html: written by a real short SFT and DPO run, self-contained (nothing a browser would fetch), escaped,
// with the charts each stage should have; errors for folders that are not runs; and a screenshot in headless
// Chromium whose pixels show the charts' colours, against the same page with its charts removed.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include "app/report.h"
#include "base/files.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using affinage::read_file;
using affinage::write_file_atomic;
using affinage::test::repo_path;
using affinage::test::run_cli;

namespace {

// Two real short runs shared by the tests (a few seconds on one thread), removed at exit.
struct Runs {
  std::string root = affinage::test::temp_dir("report_runs"), sft = root + "/sft", dpo = root + "/dpo";
  Runs() {
    auto run = [](const std::string& recipe, const std::string& out, const std::string& train, const std::string& eval,
                  const std::string& extra) {
      auto r = run_cli("run '" + repo_path(recipe) + "' --set 'output_dir=" + out +
                       "' --set 'model=" + repo_path("models/stories260K") + "' --set 'data.train=" + repo_path(train) +
                       "' --set 'data.eval=" + repo_path(eval) + "' --set log_every=1 --set train.batch_size=2" +
                       " --set eval.max_batches=1 --set checkpoint.every=0 --set threads=1 " + extra);
      EXPECT_EQ(r.code, 0) << r.err;
    };
    run("recipes/stories260k_sft.json", sft, "datasets/data/shakespeare_train.jsonl",
        "datasets/data/shakespeare_eval.jsonl", "--set train.max_steps=4 --set eval.every=2 --set data.seq_len=64");
    run("recipes/stories260k_dpo.json", dpo, "datasets/data/stories_words_prefs_train.jsonl",
        "datasets/data/stories_words_prefs_eval.jsonl", "--set train.max_steps=2 --set eval.every=1");
  }
  ~Runs() { fs::remove_all(root); }
};
const Runs& runs() {
  static Runs r;
  return r;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// --- a minimal PNG reader (8-bit RGB/RGBA, not interlaced) with the system zlib, for the screenshot test
struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;  // w*h*3
};
uint32_t be32(const std::string& s, size_t i) {
  return uint32_t(uint8_t(s[i])) << 24 | uint32_t(uint8_t(s[i + 1])) << 16 | uint32_t(uint8_t(s[i + 2])) << 8 |
         uint8_t(s[i + 3]);
}
Image read_png(const std::string& path) {
  Image im;
  std::string f = read_file(path), idat;
  if (f.size() < 33 || f.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    ADD_FAILURE() << path << ": not a PNG";
    return im;
  }
  int color = -1, depth = 0, interlace = 0;
  for (size_t i = 8; i + 8 <= f.size();) {
    uint32_t len = be32(f, i);
    std::string type = f.substr(i + 4, 4);
    if (type == "IHDR")
      im.w = be32(f, i + 8), im.h = be32(f, i + 12), depth = uint8_t(f[i + 16]), color = uint8_t(f[i + 17]),
      interlace = uint8_t(f[i + 20]);
    if (type == "IDAT") idat += f.substr(i + 8, len);
    i += 12 + len;
  }
  if (depth != 8 || (color != 2 && color != 6) || interlace) {
    ADD_FAILURE() << "PNG kind not handled: depth " << depth << " color " << color;
    return im;
  }
  void* z = dlopen("libz.so.1", RTLD_NOW);
  if (!z) {
    ADD_FAILURE() << "libz.so.1 not found";
    return im;
  }
  using Uncompress = int (*)(unsigned char*, unsigned long*, const unsigned char*, unsigned long);
  auto uncompress = reinterpret_cast<Uncompress>(dlsym(z, "uncompress"));
  const int bpp = color == 6 ? 4 : 3;
  const size_t stride = size_t(im.w) * bpp;
  std::vector<uint8_t> raw(im.h * (stride + 1));
  unsigned long n = raw.size();
  int rc = uncompress(raw.data(), &n, reinterpret_cast<const unsigned char*>(idat.data()), idat.size());
  if (rc != 0 || n != raw.size()) {
    ADD_FAILURE() << "inflate failed: " << rc;
    return im;
  }
  std::vector<uint8_t> prev(stride, 0), cur(stride);
  im.rgb.resize(size_t(im.w) * im.h * 3);
  for (int y = 0; y < im.h; ++y) {
    const uint8_t* in = &raw[y * (stride + 1)];
    for (size_t i = 0; i < stride; ++i) {
      int a = i >= size_t(bpp) ? cur[i - bpp] : 0, b = prev[i], c = i >= size_t(bpp) ? prev[i - bpp] : 0;
      int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      int pred = in[0] == 1   ? a
                 : in[0] == 2 ? b
                 : in[0] == 3 ? (a + b) / 2
                 : in[0] == 4 ? (pa <= pb && pa <= pc ? a
                                 : pb <= pc           ? b
                                                      : c)
                              : 0;
      cur[i] = uint8_t(in[1 + i] + pred);
    }
    for (int x = 0; x < im.w; ++x)
      for (int k = 0; k < 3; ++k) im.rgb[(size_t(y) * im.w + x) * 3 + k] = cur[x * bpp + k];
    std::swap(prev, cur);
  }
  return im;
}
int64_t count_near(const Image& im, int r, int g, int b, int tol = 40) {
  int64_t n = 0;
  for (size_t i = 0; i + 2 < im.rgb.size(); i += 3)
    n += std::abs(im.rgb[i] - r) <= tol && std::abs(im.rgb[i + 1] - g) <= tol && std::abs(im.rgb[i + 2] - b) <= tol;
  return n;
}

std::string screenshot(const std::string& html, const std::string& png) {
  const char* chromium = "/usr/bin/chromium";
  if (!fs::exists(chromium)) return "no /usr/bin/chromium: install it with scripts/setup.sh (apt-get install chromium)";
  auto ud = affinage::test::temp_dir("chromium_profile");
  std::string cmd =
      std::string("timeout 120 ") + chromium +
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
      " --disable-component-update --disable-sync --hide-scrollbars --user-data-dir='" +
      ud + "' --window-size=1200,2000 --screenshot='" + png + "' 'file://" + html + "' >'" + ud + ".log' 2>&1";
  int rc = std::system(cmd.c_str());
  std::string log = fs::exists(ud + ".log") ? read_file(ud + ".log") : "";
  fs::remove_all(ud);
  fs::remove(ud + ".log");
  if (rc != 0 || !fs::exists(png)) return "chromium failed (" + std::to_string(rc) + "): " + log;
  return "";
}

}  // namespace

TEST(Report, SftRunWritesASelfContainedReport) {
  const std::string page = read_file(runs().sft + "/report.html");
  for (const char* part : {"<svg", ">Loss<", ">Learning rate<", ">Gradient norm<", ">Throughput<", "Final metrics",
                           "Recipe (resolved)", "stories260k_sft", "&quot;stage&quot;: &quot;sft&quot;", "eval_loss"})
    EXPECT_TRUE(has(page, part)) << part;
  EXPECT_FALSE(has(page, "Rewards")) << "no DPO charts for an SFT run";
  // Nothing for a browser to fetch: no scripts, links, sources, imports or url()s; the only URL is SVG's namespace.
  for (const char* part : {"<script", "<link", "src=", "@import", "url(", "<iframe", "<img"})
    EXPECT_FALSE(has(page, part)) << part;
  std::string no_ns = page;
  for (size_t a; (a = no_ns.find("xmlns=\"http://www.w3.org/2000/svg\"")) != std::string::npos;) no_ns.erase(a, 34);
  EXPECT_FALSE(has(no_ns, "http:") || has(no_ns, "https:") || has(no_ns, "//fonts"));
  // The loss chart holds every logged step: a tooltip per point with the value metrics.jsonl has.
  std::ifstream in(runs().sft + "/metrics.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("loss")) continue;
    char want[128];
    std::snprintf(want, sizeof want, "<title>train at step %lld: %.6g</title>", (long long)j["step"].get<int64_t>(),
                  j["loss"].get<double>());
    EXPECT_TRUE(has(page, want)) << want;
    ++n;
  }
  EXPECT_EQ(n, 4);
}

TEST(Report, DpoRunHasRewardChartsAndReportCommandRebuildsIt) {
  const std::string dir = runs().dpo;
  std::string page = read_file(dir + "/report.html");
  for (const char* part : {">Rewards (train)<", ">Rewards (eval)<", ">Reward accuracy<", ">Log-probs<",
                           "eval reward accuracy", "eval_rewards/margins", "rewards/chosen"})
    EXPECT_TRUE(has(page, part)) << part;
  fs::remove(dir + "/report.html");
  auto r = run_cli("report '" + dir + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, dir + "/report.html\n");
  EXPECT_EQ(read_file(dir + "/report.html"), page);
}

TEST(Report, EscapesEverythingItShowsAndMarksAnUnfinishedRun) {
  auto dir = affinage::test::temp_dir("report_escape");
  write_file_atomic(dir + "/metrics.jsonl",
                    "{\"step\":0,\"eval_loss\":2.0}\n{\"step\":1,\"loss\":1.5,\"<b>odd</b>\":3}\n");
  write_file_atomic(dir + "/recipe.json", R"({"name": "<script>alert(1)</script>", "note": "a & b 'q'"})");
  std::string page = affinage::render_report(dir);
  EXPECT_FALSE(has(page, "<script>")) << "unescaped recipe text";
  EXPECT_FALSE(has(page, "<b>odd</b>")) << "unescaped metric name";
  EXPECT_TRUE(has(page, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(has(page, "a &amp; b &#39;q&#39;"));
  EXPECT_TRUE(has(page, "&lt;b&gt;odd&lt;/b&gt;")) << "an unknown metric gets its own chart";
  EXPECT_TRUE(has(page, "No summary.json"));
  write_file_atomic(dir + "/summary.json",
                    R"({"stage": "sft", "steps": 1, "final": {"loss": 1.5}, "initial_eval": {"eval_loss": 2.0},
      "eval": {"eval_loss": 1.75}, "tasks": {"after": {"words.jsonl": {"contains": 0.5}}}})");
  page = affinage::render_report(dir);
  EXPECT_FALSE(has(page, "No summary.json"));
  EXPECT_TRUE(has(page, "<tr><td>eval_loss</td><td>2</td><td>1.75</td></tr>")) << "before / final";
  EXPECT_TRUE(has(page, "Task evaluations") && has(page, "&quot;contains&quot;: 0.5"));
  fs::remove_all(dir);
}

TEST(Report, ErrorsNameTheFolderOrLine) {
  auto dir = affinage::test::temp_dir("report_err");
  affinage::test::expect_error([&] { affinage::write_report(dir); }, {"no metrics.jsonl", dir});
  fs::create_directories(dir + "/1-sft");
  write_file_atomic(dir + "/1-sft/metrics.jsonl", "{\"step\":1,\"loss\":1}\n");
  affinage::test::expect_error([&] { affinage::write_report(dir); }, {"multi-stage", dir + "/1-sft"});
  write_file_atomic(dir + "/1-sft/metrics.jsonl", "{\"step\":1,\"loss\":1}\n{\"step\":2,\"lo");
  affinage::test::expect_error([&] { affinage::write_report(dir + "/1-sft"); }, {"metrics.jsonl line 2", "--resume"});
  write_file_atomic(dir + "/1-sft/metrics.jsonl", "{\"step\":1,\"loss\":1}\n");
  write_file_atomic(dir + "/1-sft/recipe.json", "{oops");
  affinage::test::expect_error([&] { affinage::write_report(dir + "/1-sft"); }, {"recipe.json", "not valid JSON"});
  fs::remove(dir + "/1-sft/recipe.json");
  write_file_atomic(dir + "/1-sft/summary.json", R"({"stage": "sft", "steps": "ten"})");
  affinage::test::expect_error([&] { affinage::write_report(dir + "/1-sft"); }, {"summary.json", "'steps'"});
  fs::remove_all(dir);
}

// The page renders in a real browser: the screenshot has the window's size and the chart colours (train blue,
// eval orange) over thousands of pixels, where the same page with its <svg> charts cut out has none of them.
TEST(Report, RendersInHeadlessChromium) {
  const std::string dir = runs().dpo, tmp = affinage::test::temp_dir("report_shot");
  std::string err = screenshot(dir + "/report.html", tmp + "/report.png");
  ASSERT_EQ(err, "");
  std::string page = read_file(dir + "/report.html");
  for (size_t a; (a = page.find("<svg")) != std::string::npos;) page.erase(a, page.find("</svg>", a) + 6 - a);
  write_file_atomic(tmp + "/no_charts.html", page);
  ASSERT_EQ(screenshot(tmp + "/no_charts.html", tmp + "/no_charts.png"), "");
  Image shot = read_png(tmp + "/report.png"), bare = read_png(tmp + "/no_charts.png");
  EXPECT_EQ(shot.w, 1200);
  EXPECT_EQ(shot.h, 2000);
  int64_t blue = count_near(shot, 0x25, 0x63, 0xeb), orange = count_near(shot, 0xea, 0x58, 0x0c);
  int64_t green = count_near(shot, 0x16, 0xa3, 0x4a), red = count_near(shot, 0xdc, 0x26, 0x26);
  int64_t bare_colour = count_near(bare, 0x25, 0x63, 0xeb) + count_near(bare, 0xea, 0x58, 0x0c) +
                        count_near(bare, 0x16, 0xa3, 0x4a) + count_near(bare, 0xdc, 0x26, 0x26);
  std::cerr << "chart pixels: blue " << blue << ", orange " << orange << ", green " << green << ", red " << red
            << "; page without charts: " << bare_colour << "\n";
  EXPECT_GT(blue, 2000);
  EXPECT_GT(orange, 500);
  EXPECT_GT(green, 500);
  EXPECT_GT(red, 500);
  EXPECT_LT(bare_colour, 50);
  // Not blank: text and frames darken a good share of the page; an empty page would be all background.
  int64_t background = count_near(shot, 0xf6, 0xf7, 0xf9, 3) + count_near(shot, 0xff, 0xff, 0xff, 3);
  EXPECT_LT(background, int64_t(shot.w) * shot.h * 97 / 100);
  fs::remove_all(tmp);
}
