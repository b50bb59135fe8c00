// Publishing: a folder ready to upload to the Hugging Face Hub as is - the adapter or model files, a README.md
// model card filled from the training run, and provenance.json (SHA-256 of everything it came from).
// Nothing is uploaded. See docs/merge_publish.md.
#pragma once
#include <string>
#include <vector>

namespace affinage {

struct PublishOptions {
  std::string adapter_dir;            // a PEFT adapter folder, or...
  std::string model_dir;              // ...a Hugging Face model folder (e.g. from `affinage merge`)
  std::string out_dir;                // must not exist, or be empty
  std::string name;                   // Hub repo id ("user/model"); default: the output folder's name
  std::string license;                // Hub license id; default "other"
  std::string run_dir;                // the run that trained it; default: found next to the adapter
  std::string base_model;             // Hub id of the base model; default: the adapter's / run's, when it is one
  std::vector<std::string> datasets;  // Hub dataset ids for the card's front matter
};

struct PublishResult {
  std::string out_dir, name;
  std::string upload_command;      // huggingface-cli upload NAME OUT_DIR .
  std::vector<std::string> files;  // in the output folder
  std::vector<std::string> notes;  // what the user may want to fill in (printed by the CLI)
};

// Copies the files (hashing them on the way), finds the run (RUN_DIR, or a folder up to three levels above
// the adapter holding recipe.json; for a merged model, the run of its first adapter), writes README.md and
// provenance.json, all in a staging folder renamed into place at the end. Errors name the folder or file.
PublishResult publish(const PublishOptions& opts);

// True when `s` reads as a Hub repo id ("name" or "owner/name") and is not a folder on this machine.
bool looks_like_hub_id(const std::string& s);

}  // namespace affinage
