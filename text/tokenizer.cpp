// Tokenizer: SentencePiece through libaffinage_spm.so, dlopen'd with RTLD_DEEPBIND so the protobuf-lite inside
// libsentencepiece never resolves against LibTorch's full protobuf (the reason is in CMakeLists.txt, affinage_spm).
#include "text/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "base/error.h"
#include "base/files.h"
#include "text/spm_shim.h"

namespace fs = std::filesystem;

namespace affinage {

namespace {

#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer refuses RTLD_DEEPBIND (scripts/sanitize.sh builds with it); its runtime is loaded first, and
// the parser tests it runs load the shim before anything else uses protobuf.
constexpr int kShimFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kShimFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

struct ShimApi {
  affinage_spm_load_fn load = nullptr;
  affinage_spm_free_fn free = nullptr;
  affinage_spm_last_error_fn last_error = nullptr;
  affinage_spm_encode_fn encode = nullptr;
  affinage_spm_decode_fn decode = nullptr;
  affinage_spm_id_to_piece_fn id_to_piece = nullptr;
  affinage_spm_piece_to_id_fn piece_to_id = nullptr;
  affinage_spm_query_fn query = nullptr;
};

// Candidate locations, in order (see the Tokenizer::load contract): an explicit AFFINAGE_SPM_LIB wins alone.
std::vector<std::string> shim_candidates() {
  if (const char* env = std::getenv("AFFINAGE_SPM_LIB"); env && *env) return {env};
  std::vector<std::string> c;
  std::string dir = executable_dir();
  if (!dir.empty()) {
    c.push_back((fs::path(dir) / "libaffinage_spm.so").string());
    c.push_back((fs::path(dir).parent_path() / "libaffinage_spm.so").string());
  }
#ifdef AFFINAGE_SPM_BUILD_PATH
  c.push_back(AFFINAGE_SPM_BUILD_PATH);
#endif
  return c;
}

template <class Fn>
bool bind(void* lib, const char* name, Fn& fn, std::string& err) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (!fn) err += std::string("\n  missing symbol ") + name;
  return fn != nullptr;
}

// Loads the shim once per process; a failure is remembered and reported on every later call.
const ShimApi& shim() {
  static ShimApi api;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    for (const std::string& path : shim_candidates()) {
      if (!fs::exists(path)) {
        tried += "\n  " + path + " (not found)";
        continue;
      }
      void* lib = dlopen(path.c_str(), kShimFlags);
      if (!lib) {
        const char* e = dlerror();
        tried += "\n  " + path + " (dlopen failed: " + (e ? e : "?") + ")";
        continue;
      }
      std::string missing;
      ShimApi a;
      bool ok = bind(lib, "affinage_spm_load", a.load, missing) & bind(lib, "affinage_spm_free", a.free, missing) &
                bind(lib, "affinage_spm_last_error", a.last_error, missing) &
                bind(lib, "affinage_spm_encode", a.encode, missing) &
                bind(lib, "affinage_spm_decode", a.decode, missing) &
                bind(lib, "affinage_spm_id_to_piece", a.id_to_piece, missing) &
                bind(lib, "affinage_spm_piece_to_id", a.piece_to_id, missing) &
                bind(lib, "affinage_spm_query", a.query, missing);
      if (!ok) {
        tried += "\n  " + path + " (not an affinage SentencePiece shim:" + missing + ")";
        dlclose(lib);
        continue;
      }
      api = a;
      return;  // the library stays loaded for the life of the process
    }
    error = "cannot load the SentencePiece shim libaffinage_spm.so; tried:" + tried +
            "\nBuild the 'affinage_spm' target and keep libaffinage_spm.so next to the affinage binary, or set "
            "AFFINAGE_SPM_LIB to its full path.";
  });
  if (!error.empty()) throw Error(error);
  return api;
}

}  // namespace

struct Tokenizer::Impl {
  const ShimApi* api = nullptr;
  affinage_spm_handle handle = nullptr;
  int vocab = 0, bos = -1, eos = -1, unk = -1, pad = -1;

  [[noreturn]] void fail_call(const std::string& what, const std::string& path) const {
    fail("tokenizer ", path, ": ", what, " failed: ", api->last_error());
  }
  // Asks a per-id property; the caller has checked the range so -1 means the shim itself failed.
  bool flag(int kind, int id, const std::string& path) const {
    if (id < 0 || id >= vocab) fail("tokenizer ", path, ": id ", id, " is outside the vocabulary [0, ", vocab, ")");
    int r = api->query(handle, kind, id);
    if (r < 0) fail_call("query", path);
    return r != 0;
  }
};

std::shared_ptr<Tokenizer> Tokenizer::load(const std::string& model_path) {
  std::error_code ec;
  if (!fs::exists(model_path, ec))
    fail("tokenizer file '", model_path, "' does not exist; point to the model's tokenizer.model (SentencePiece)");
  if (fs::is_directory(model_path, ec))
    fail("tokenizer '", model_path, "' is a folder; give the path of its tokenizer.model file");
  const ShimApi& api = shim();
  affinage_spm_handle h = nullptr;
  if (api.load(model_path.c_str(), &h) != 0)
    fail("tokenizer file '", model_path, "' could not be loaded as a SentencePiece model (", api.last_error(),
         "); a SentencePiece tokenizer.model is expected (tokenizer.json alone is not supported)");
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  im.api = &api;
  im.handle = h;
  t->path_ = model_path;
  im.vocab = api.query(h, AFFINAGE_SPM_VOCAB_SIZE, 0);
  im.bos = api.query(h, AFFINAGE_SPM_BOS_ID, 0);
  im.eos = api.query(h, AFFINAGE_SPM_EOS_ID, 0);
  im.unk = api.query(h, AFFINAGE_SPM_UNK_ID, 0);
  im.pad = api.query(h, AFFINAGE_SPM_PAD_ID, 0);
  return t;
}

Tokenizer::~Tokenizer() {
  if (impl_ && impl_->handle) impl_->api->free(impl_->handle);
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids(text.size() + 8);  // byte fallback gives at most one id per byte, plus "▁"
  size_t n = 0;
  if (impl_->api->encode(impl_->handle, text.data(), text.size(), ids.data(), ids.size(), &n) != 0)
    impl_->fail_call("encode", path_);
  if (n > ids.size()) {
    ids.resize(n);
    if (impl_->api->encode(impl_->handle, text.data(), text.size(), ids.data(), ids.size(), &n) != 0)
      impl_->fail_call("encode", path_);
  }
  ids.resize(n);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= impl_->vocab)
      fail("tokenizer ", path_, ": cannot decode id ", ids[i], " at position ", i, ": outside the vocabulary [0, ",
           impl_->vocab, ")");
  std::string out(ids.size() * 8 + 16, '\0');
  size_t n = 0;
  if (impl_->api->decode(impl_->handle, ids.data(), ids.size(), out.data(), out.size(), &n) != 0)
    impl_->fail_call("decode", path_);
  if (n > out.size()) {
    out.resize(n);
    if (impl_->api->decode(impl_->handle, ids.data(), ids.size(), out.data(), out.size(), &n) != 0)
      impl_->fail_call("decode", path_);
  }
  out.resize(n);
  return out;
}

int Tokenizer::vocab_size() const { return impl_->vocab; }

std::string Tokenizer::id_to_piece(int id) const {
  if (id < 0 || id >= impl_->vocab)
    fail("tokenizer ", path_, ": id ", id, " is outside the vocabulary [0, ", impl_->vocab, ")");
  std::string out(64, '\0');
  size_t n = 0;
  if (impl_->api->id_to_piece(impl_->handle, id, out.data(), out.size(), &n) != 0)
    impl_->fail_call("id_to_piece", path_);
  if (n > out.size()) {
    out.resize(n);
    if (impl_->api->id_to_piece(impl_->handle, id, out.data(), out.size(), &n) != 0)
      impl_->fail_call("id_to_piece", path_);
  }
  out.resize(n);
  return out;
}

int Tokenizer::piece_to_id(const std::string& piece) const {
  int id = -1;
  if (impl_->api->piece_to_id(impl_->handle, piece.c_str(), &id) != 0) impl_->fail_call("piece_to_id", path_);
  return id;
}

bool Tokenizer::is_control(int id) const { return impl_->flag(AFFINAGE_SPM_IS_CONTROL, id, path_); }
bool Tokenizer::is_byte(int id) const { return impl_->flag(AFFINAGE_SPM_IS_BYTE, id, path_); }
bool Tokenizer::is_unknown(int id) const { return impl_->flag(AFFINAGE_SPM_IS_UNKNOWN, id, path_); }
bool Tokenizer::is_user_defined(int id) const { return impl_->flag(AFFINAGE_SPM_IS_USER_DEFINED, id, path_); }
int Tokenizer::bos_id() const { return impl_->bos; }
int Tokenizer::eos_id() const { return impl_->eos; }
int Tokenizer::unk_id() const { return impl_->unk; }
int Tokenizer::pad_id() const { return impl_->pad; }

}  // namespace affinage
