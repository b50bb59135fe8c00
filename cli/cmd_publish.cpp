// affinage publish: a folder ready to upload to the Hugging Face Hub (files, model card, provenance); uploads nothing.
#include <iostream>
#include "app/publish.h"
#include "base/error.h"
#include "cli/commands.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_publish(const Args& args) {
  PublishOptions o;
  po::options_description opts("publish options");
  opts.add_options()("adapter", po::value(&o.adapter_dir), "PEFT adapter folder to publish (e.g. RUN_DIR/adapter)")(
      "model", po::value(&o.model_dir), "Hugging Face model folder to publish (e.g. from affinage merge)")(
      "out", po::value(&o.out_dir)->required(), "output folder (must not exist, or be empty)")(
      "name", po::value(&o.name), "Hub repo id, e.g. me/stories-shakespeare (default: the output folder's name)")(
      "license", po::value(&o.license), "Hub license id, e.g. apache-2.0, mit (default: other)")(
      "run", po::value(&o.run_dir), "the run's output_dir (default: found above the adapter folder)")(
      "base-model", po::value(&o.base_model), "Hub id of the base model (default: the adapter's, when it is one)")(
      "dataset", po::value(&o.datasets)->composing(), "Hub dataset id for the card's front matter (repeatable)");
  po::variables_map vm;
  const std::string usage =
      "usage: affinage publish (--adapter DIR | --model DIR) --out DIR [--name NAME] [--license LICENSE] [--run "
      "RUN_DIR]\n"
      "                        [--base-model OWNER/NAME] [--dataset OWNER/NAME ...]\n\n"
      "Writes the files, a README.md model card and provenance.json; prints the upload command, uploads nothing.";
  if (parse_args(args, usage, opts, vm)) return 0;
  if (o.adapter_dir.empty() == o.model_dir.empty()) fail("give exactly one of --adapter DIR and --model DIR");
  auto r = publish(o);
  for (auto& n : r.notes) std::cerr << "note: " << n << "\n";
  std::cout << "published " << (o.adapter_dir.empty() ? "model" : "adapter") << " to " << r.out_dir << ":";
  for (auto& f : r.files) std::cout << " " << f;
  std::cout << "\nupload with:\n  " << r.upload_command << "\n";
  return 0;
}

}  // namespace affinage::cli
