// The narrow C ABI of libaffinage_spm.so, the only place SentencePiece is linked (see CMakeLists.txt).
// Strings returned through buffers; ids as int. All functions return 0 on success, non-zero on error
// (then affinage_spm_last_error() says why).
#pragma once
#include <stddef.h>

extern "C" {
typedef void* affinage_spm_handle;
typedef int (*affinage_spm_load_fn)(const char* path, affinage_spm_handle* out);
typedef void (*affinage_spm_free_fn)(affinage_spm_handle h);
typedef const char* (*affinage_spm_last_error_fn)(void);
// encode: writes up to cap ids, sets *n to the count needed (call again with a larger buffer when *n > cap)
typedef int (*affinage_spm_encode_fn)(affinage_spm_handle h, const char* text, size_t len, int* ids, size_t cap,
                                      size_t* n);
// decode: writes up to cap bytes, sets *n to the byte count needed
typedef int (*affinage_spm_decode_fn)(affinage_spm_handle h, const int* ids, size_t n_ids, char* out, size_t cap,
                                      size_t* n);
typedef int (*affinage_spm_id_to_piece_fn)(affinage_spm_handle h, int id, char* out, size_t cap, size_t* n);
typedef int (*affinage_spm_piece_to_id_fn)(affinage_spm_handle h, const char* piece, int* id);
// The `kind` of a query: the first five ignore `id`; the is_* ones answer 1 or 0 for `id`.
enum affinage_spm_query_kind {
  AFFINAGE_SPM_VOCAB_SIZE = 0,
  AFFINAGE_SPM_BOS_ID = 1,
  AFFINAGE_SPM_EOS_ID = 2,
  AFFINAGE_SPM_UNK_ID = 3,
  AFFINAGE_SPM_PAD_ID = 4,
  AFFINAGE_SPM_IS_CONTROL = 10,
  AFFINAGE_SPM_IS_BYTE = 11,
  AFFINAGE_SPM_IS_UNKNOWN = 12,
  AFFINAGE_SPM_IS_USER_DEFINED = 13,
};
typedef int (*affinage_spm_query_fn)(affinage_spm_handle h, int kind, int id);
}
