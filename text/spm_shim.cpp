// libaffinage_spm.so: SentencePiece behind the narrow C ABI of text/spm_shim.h. It is the only code that links
// libsentencepiece (whose embedded protobuf-lite clashes with LibTorch's protobuf); no torch header here.
#include "spm_shim.h"  // same folder: this target has no include path to the repo root

#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#define AFFINAGE_SPM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

thread_local std::string g_last_error;

struct Model {
  sentencepiece::SentencePieceProcessor sp;
  // Piece types read from the model file itself: SentencePiece 0.1.x has no IsUserDefined() and hides the
  // ModelProto behind protobuf headers that are not installed.
  std::vector<uint8_t> types;
};

// Types of ModelProto.SentencePiece.Type (sentencepiece_model.proto).
enum PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// A minimal protobuf wire-format reader, enough to walk ModelProto.pieces (field 1) and read each
// SentencePiece.type (field 3). Returns false on malformed input.
struct Wire {
  const uint8_t* p;
  const uint8_t* end;
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  // Skips a field of wire type `wt`, or returns its payload as [*b, *e) for length-delimited fields.
  bool field(uint32_t wt, const uint8_t** b, const uint8_t** e) {
    uint64_t v;
    switch (wt) {
      case 0:
        return varint(v);
      case 1:
        if (end - p < 8) return false;
        p += 8;
        return true;
      case 5:
        if (end - p < 4) return false;
        p += 4;
        return true;
      case 2:
        if (!varint(v) || v > uint64_t(end - p)) return false;
        *b = p;
        *e = p + v;
        p += v;
        return true;
      default:
        return false;
    }
  }
};

bool read_piece_types(const std::string& bytes, std::vector<uint8_t>& types) {
  Wire top{reinterpret_cast<const uint8_t*>(bytes.data()),
           reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size()};
  while (top.p < top.end) {
    uint64_t key;
    const uint8_t *b = nullptr, *e = nullptr;
    if (!top.varint(key) || !top.field(key & 7, &b, &e)) return false;
    if ((key >> 3) != 1 || (key & 7) != 2) continue;
    uint8_t type = kNormal;  // proto2 default
    Wire piece{b, e};
    while (piece.p < piece.end) {
      uint64_t k2, v;
      if (!piece.varint(k2)) return false;
      if ((k2 >> 3) == 3 && (k2 & 7) == 0) {
        if (!piece.varint(v)) return false;
        type = uint8_t(v);
      } else {
        const uint8_t *b2, *e2;
        if (!piece.field(k2 & 7, &b2, &e2)) return false;
      }
    }
    types.push_back(type);
  }
  return true;
}

int set_error(const std::string& msg) {
  g_last_error = msg;
  return 1;
}

// Runs `f` and turns any C++ exception into an error code: exceptions must not cross the C ABI.
template <class F>
int guarded(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return set_error(std::string("sentencepiece: ") + e.what());
  } catch (...) {
    return set_error("sentencepiece: unknown exception");
  }
}

Model* as_model(affinage_spm_handle h) { return static_cast<Model*>(h); }

bool valid_id(Model* m, int id) { return id >= 0 && id < m->sp.GetPieceSize(); }

// Copies `s` into a caller buffer of `cap` bytes; *n gets the full size so the caller can retry larger.
void copy_out(const std::string& s, char* out, size_t cap, size_t* n) {
  *n = s.size();
  if (out && cap >= s.size() && !s.empty()) std::memcpy(out, s.data(), s.size());
}

}  // namespace

AFFINAGE_SPM_EXPORT const char* affinage_spm_last_error(void) { return g_last_error.c_str(); }

AFFINAGE_SPM_EXPORT int affinage_spm_load(const char* path, affinage_spm_handle* out) {
  return guarded([&] {
    if (!path || !out) return set_error("affinage_spm_load: null argument");
    *out = nullptr;
    std::ifstream f(path, std::ios::binary);
    if (!f) return set_error(std::string("cannot open '") + path + "': " + std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    std::string bytes = ss.str();
    auto m = std::make_unique<Model>();
    auto st = m->sp.LoadFromSerializedProto(bytes);
    if (!st.ok()) return set_error(std::string("not a SentencePiece model: ") + st.ToString());
    if (!read_piece_types(bytes, m->types) || int(m->types.size()) != m->sp.GetPieceSize())
      return set_error("SentencePiece model loaded but its piece table could not be read back (" +
                       std::to_string(m->types.size()) + " types for " + std::to_string(m->sp.GetPieceSize()) +
                       " pieces)");
    *out = m.release();
    return 0;
  });
}

AFFINAGE_SPM_EXPORT void affinage_spm_free(affinage_spm_handle h) {
  try {
    delete as_model(h);
  } catch (...) {}
}

AFFINAGE_SPM_EXPORT int affinage_spm_encode(affinage_spm_handle h, const char* text, size_t len, int* ids, size_t cap,
                                            size_t* n) {
  return guarded([&] {
    if (!h || !n || (!text && len)) return set_error("affinage_spm_encode: null argument");
    std::vector<int> v;
    auto st = as_model(h)->sp.Encode(std::string_view(text ? text : "", len), &v);
    if (!st.ok()) return set_error("encode failed: " + st.ToString());
    *n = v.size();
    if (ids && cap >= v.size() && !v.empty()) std::memcpy(ids, v.data(), v.size() * sizeof(int));
    return 0;
  });
}

AFFINAGE_SPM_EXPORT int affinage_spm_decode(affinage_spm_handle h, const int* ids, size_t n_ids, char* out, size_t cap,
                                            size_t* n) {
  return guarded([&] {
    if (!h || !n || (!ids && n_ids)) return set_error("affinage_spm_decode: null argument");
    Model* m = as_model(h);
    std::vector<int> v(ids, ids + n_ids);
    for (size_t i = 0; i < v.size(); ++i)
      if (!valid_id(m, v[i]))
        return set_error("decode: id " + std::to_string(v[i]) + " at position " + std::to_string(i) +
                         " is outside the vocabulary [0, " + std::to_string(m->sp.GetPieceSize()) + ")");
    std::string s;
    auto st = m->sp.Decode(v, &s);
    if (!st.ok()) return set_error("decode failed: " + st.ToString());
    copy_out(s, out, cap, n);
    return 0;
  });
}

AFFINAGE_SPM_EXPORT int affinage_spm_id_to_piece(affinage_spm_handle h, int id, char* out, size_t cap, size_t* n) {
  return guarded([&] {
    if (!h || !n) return set_error("affinage_spm_id_to_piece: null argument");
    Model* m = as_model(h);
    if (!valid_id(m, id))
      return set_error("id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(m->sp.GetPieceSize()) + ")");
    copy_out(m->sp.IdToPiece(id), out, cap, n);
    return 0;
  });
}

AFFINAGE_SPM_EXPORT int affinage_spm_piece_to_id(affinage_spm_handle h, const char* piece, int* id) {
  return guarded([&] {
    if (!h || !piece || !id) return set_error("affinage_spm_piece_to_id: null argument");
    // SentencePiece answers unk_id for a piece it lacks; -1 tells "absent" from "<unk> itself".
    Model* m = as_model(h);
    int r = m->sp.PieceToId(piece);
    if (r == m->sp.unk_id() && m->sp.IdToPiece(r) != piece) r = -1;
    *id = r;
    return 0;
  });
}

// Answers the value asked for, or -1 (with the last error set) for an id outside the vocabulary.
AFFINAGE_SPM_EXPORT int affinage_spm_query(affinage_spm_handle h, int kind, int id) {
  try {
    if (!h) return set_error("affinage_spm_query: null handle"), -1;
    Model* m = as_model(h);
    switch (kind) {
      case AFFINAGE_SPM_VOCAB_SIZE:
        return m->sp.GetPieceSize();
      case AFFINAGE_SPM_BOS_ID:
        return m->sp.bos_id();
      case AFFINAGE_SPM_EOS_ID:
        return m->sp.eos_id();
      case AFFINAGE_SPM_UNK_ID:
        return m->sp.unk_id();
      case AFFINAGE_SPM_PAD_ID:
        return m->sp.pad_id();
      default:
        break;
    }
    if (kind < AFFINAGE_SPM_IS_CONTROL || kind > AFFINAGE_SPM_IS_USER_DEFINED)
      return set_error("affinage_spm_query: unknown kind " + std::to_string(kind)), -1;
    if (!valid_id(m, id))
      return set_error("id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(m->sp.GetPieceSize()) + ")"),
             -1;
    switch (kind) {
      case AFFINAGE_SPM_IS_CONTROL:
        return m->sp.IsControl(id) ? 1 : 0;
      case AFFINAGE_SPM_IS_BYTE:
        return m->sp.IsByte(id) ? 1 : 0;
      case AFFINAGE_SPM_IS_UNKNOWN:
        return m->sp.IsUnknown(id) ? 1 : 0;
      default:
        return m->types[id] == kUserDefined ? 1 : 0;
    }
  } catch (const std::exception& e) {
    set_error(std::string("sentencepiece: ") + e.what());
  } catch (...) {
    set_error("sentencepiece: unknown exception");
  }
  return -1;
}
