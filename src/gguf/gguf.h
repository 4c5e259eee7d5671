/* GGUF files: reading (memory-mapped, fully validated) and writing.
 *
 * Reader contract: gguf_open() maps the file read-only and validates the
 * whole header before returning: every count, length, offset, dimension
 * and type is checked against the file's size and the format, so that
 * nothing read afterwards can point outside the map. Allocations are
 * bounded by the file size. Tensor data is never copied: gguf_tensor()
 * hands out pointers into the map, valid until gguf_close().
 *
 * Strings in GGUF are length-prefixed, not NUL-terminated, and may contain
 * any bytes; they are returned as struct gguf_str. Keys and tensor names
 * are copied and NUL-terminated (ones holding a NUL byte are rejected).
 */
#ifndef PLUMB_GGUF_GGUF_H
#define PLUMB_GGUF_GGUF_H

#include "base/err.h"
#include "quant/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_VTYPE_COUNT = 13,
};

struct gguf_str {
    uint64_t len;
    const char *data; /* not NUL-terminated */
};

/* An array value. Elements are read with the gguf_arr_* accessors. */
struct gguf_arr {
    enum gguf_vtype type; /* element type */
    uint64_t n;
    const uint8_t *raw;      /* fixed-size elements: n * size bytes */
    const uint64_t *str_off; /* strings: offset of each length prefix in base */
    struct gguf_arr *items;  /* nested arrays */
    const uint8_t *base;     /* start of the file image */
};

struct gguf_tensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length; unused dims are 1 */
    enum pb_type type;
    uint64_t offset;  /* relative to the data section */
    uint64_t nbytes;
    const void *data; /* into the map */
};

struct gguf_file;

/* Opens and validates path. On failure *out is NULL and err says which
 * file, at which byte offset, what is wrong. */
int gguf_open(const char *path, struct gguf_file **out, pb_err *err);

/* Parses an image already in memory (tests, fuzzing). The buffer is not
 * copied and must outlive the result; name is used in messages. */
int gguf_open_memory(const void *buf, size_t size, const char *name, struct gguf_file **out, pb_err *err);

/* Opens the image held by fd (the call duplicates the descriptor). With
 * discardable (a memfd holding a model made in memory), gguf_release also
 * frees the storage of the ranges it releases. */
int gguf_open_fd(int fd, const char *name, bool discardable, struct gguf_file **out, pb_err *err);

void gguf_close(struct gguf_file *f);

/* [p, p + n) of the image will not be read again (a tensor that was
 * copied elsewhere): its pages leave this process's memory. A file's
 * pages stay in the page cache; a discardable image's are freed. */
void gguf_release(struct gguf_file *f, const void *p, size_t n);
/* [p, p + n) is read again only here and there (an embedding table,
 * row by row): its pages leave this process's memory now and come back
 * one by one as they are read. Nothing is freed. */
void gguf_evict(struct gguf_file *f, const void *p, size_t n);
/* gguf_evict of the whole image, once loaded: what is still read is read
 * through the file or faults back in page by page. (Releases that follow
 * the tensors cannot catch every page: a touch at a tensor's start maps
 * the whole page-cache folio around it, reaching back into a neighbour
 * released before.) The file is read at random from then on (embedding
 * rows): no read-ahead, which made each gguf_read_at of a cached row take
 * 28 us instead of 2. */
void gguf_evict_all(struct gguf_file *f);
/* Asks the kernel to read [p, p + n) of the file into its page cache now,
 * in the background (a hint: the embedding table, whose rows gguf_read_at
 * reads one at a time, each a disk read while its page is not cached).
 * The page cache is the kernel's to reclaim: not this process's memory. */
void gguf_prefetch(const struct gguf_file *f, const void *p, size_t n);
/* Copies [p, p + n) of the image into dst through the file (pread), not
 * the mapping: the mapping's pages stay out of this process's memory,
 * where a kernel that maps large page-cache folios would bring in far
 * more than n bytes at each touch. An image in memory is copied. 0, or
 * -1 when the range is outside the image or the file cannot be read. */
int gguf_read_at(const struct gguf_file *f, const void *p, size_t n, void *dst);

const char *gguf_name(const struct gguf_file *f);
uint32_t gguf_version(const struct gguf_file *f);
uint64_t gguf_file_size(const struct gguf_file *f);
uint64_t gguf_alignment(const struct gguf_file *f);
uint64_t gguf_data_offset(const struct gguf_file *f);
const void *gguf_base(const struct gguf_file *f); /* start of the image */

/* ---- metadata ---- */

uint64_t gguf_n_kv(const struct gguf_file *f);
const char *gguf_kv_key(const struct gguf_file *f, uint64_t i);
enum gguf_vtype gguf_kv_type(const struct gguf_file *f, uint64_t i);
/* Index of key, or -1. */
int64_t gguf_find(const struct gguf_file *f, const char *key);

/* Typed getters: return 1 when found (and *out set), 0 when the key is
 * absent, PB_EFORMAT (with err set) when it has an incompatible type.
 * get_int accepts any integer type whose value fits int64; get_float
 * accepts F32, F64 and integers; get_bool accepts BOOL and integers. */
int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out, pb_err *err);
int gguf_get_float(const struct gguf_file *f, const char *key, double *out, pb_err *err);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, pb_err *err);
int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out, pb_err *err);
int gguf_get_arr(const struct gguf_file *f, const char *key, struct gguf_arr *out, pb_err *err);

/* Value at index i (the caller knows i < gguf_n_kv). */
struct gguf_str gguf_kv_str(const struct gguf_file *f, uint64_t i);
/* Any scalar as text ("42", "1e-05", "true", a string clipped to max). */
void gguf_kv_format(const struct gguf_file *f, uint64_t i, char *buf, size_t size);
/* Raw serialized bytes of value i (type tag not included): for copying. */
const uint8_t *gguf_kv_raw(const struct gguf_file *f, uint64_t i, uint64_t *len);

/* Array element accessors; i < a->n, element type as named. */
struct gguf_str gguf_arr_str(const struct gguf_arr *a, uint64_t i);
/* Any integer element as int64 (U64 above INT64_MAX saturates). */
int64_t gguf_arr_int(const struct gguf_arr *a, uint64_t i);
/* F32/F64 element (integers converted). */
double gguf_arr_float(const struct gguf_arr *a, uint64_t i);
bool gguf_arr_is_int(const struct gguf_arr *a);

const char *gguf_vtype_name(enum gguf_vtype t);
/* Size in bytes of a fixed-size value type, 0 for STRING/ARRAY/unknown. */
size_t gguf_vtype_size(enum gguf_vtype t);

/* Compares a gguf_str with a C string. */
bool gguf_str_eq(struct gguf_str s, const char *cstr);

/* ---- tensors ---- */

uint64_t gguf_n_tensors(const struct gguf_file *f);
const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, uint64_t i);
/* NULL when absent. */
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);
/* Elements in a tensor. */
int64_t gguf_tensor_nelements(const struct gguf_tensor *t);

/* ---- writer ----
 *
 * Usage: create; set metadata; add every tensor's info; begin (writes the
 * header to a temporary file beside the target); write each tensor's data
 * in order (in as many pieces as convenient); finish (pads, flushes,
 * renames into place). Any failure, or free without finish, removes the
 * temporary file: a partly written model never appears under the name.
 */
struct gguf_writer;

int gguf_writer_create(struct gguf_writer **out, pb_err *err);
void gguf_writer_free(struct gguf_writer *w);

/* Setting a key that exists replaces its value (its position is kept). */
int gguf_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_set_bool(struct gguf_writer *w, const char *key, bool v);
int gguf_set_str(struct gguf_writer *w, const char *key, const char *v);
int gguf_set_strn(struct gguf_writer *w, const char *key, const char *v, uint64_t len);
/* Arrays of fixed-size elements (elems holds n values of type t). */
int gguf_set_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *elems, uint64_t n);
int gguf_set_arr_str(struct gguf_writer *w, const char *key, const struct gguf_str *v, uint64_t n);
/* Copies metadata value i of src under the same key, or under key. */
int gguf_set_from(struct gguf_writer *w, const struct gguf_file *src, uint64_t i);
int gguf_set_from_as(struct gguf_writer *w, const char *key, const struct gguf_file *src, uint64_t i);
/* Removes a key if present. */
void gguf_unset(struct gguf_writer *w, const char *key);
/* Any earlier set_* failure (out of memory, bad key) is reported here. */
int gguf_writer_status(const struct gguf_writer *w, pb_err *err);

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum pb_type type, uint32_t n_dims,
                           const int64_t *ne, pb_err *err);
int gguf_writer_begin(struct gguf_writer *w, const char *path, pb_err *err);
/* Writes into fd (duplicated; the caller keeps and closes fd) instead of
 * a file: no temporary file, nothing removed on failure. name is for
 * messages. */
int gguf_writer_begin_fd(struct gguf_writer *w, int fd, const char *name, pb_err *err);
int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n, pb_err *err);
int gguf_writer_finish(struct gguf_writer *w, pb_err *err);

#endif
