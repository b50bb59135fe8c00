// SentencePiece tokenizers (BPE and unigram; byte fallback; control and user-defined pieces), loaded
// through the dlopen'd shim (text/spm_shim.h) so SentencePiece's protobuf never meets LibTorch's.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace affinage {

class Tokenizer {
 public:
  // Loads a tokenizer.model. Error names the file (missing, not a SentencePiece model) and what to do.
  static std::shared_ptr<Tokenizer> load(const std::string& model_path);
  ~Tokenizer();

  const std::string& path() const { return path_; }
  // Plain text → ids, no BOS/EOS added (SentencePiece's dummy "▁" prefix applies, as in mistral-common).
  std::vector<int> encode(const std::string& text) const;
  // ids → text; control tokens (BOS/EOS/[INST]...) render as nothing, byte pieces are reassembled.
  std::string decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  std::string id_to_piece(int id) const;
  int piece_to_id(const std::string& piece) const;  // -1 when the vocabulary lacks the piece
  bool is_control(int id) const;
  bool is_byte(int id) const;
  bool is_unknown(int id) const;
  bool is_user_defined(int id) const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;
  int unk_id() const;
  int pad_id() const;

 private:
  Tokenizer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace affinage
