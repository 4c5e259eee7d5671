/* GGUF reader. Everything is parsed from a read-only image through a
 * bounds-checked cursor; every size read from the file is compared with
 * the bytes that remain before anything is allocated or indexed. */
#define _GNU_SOURCE
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ARRAY_DEPTH 8
#define MAX_KEY_LEN 65535
#define MAX_TENSOR_NAME_LEN 1024

struct gguf_value {
    enum gguf_vtype type;
    union {
        uint64_t u;
        int64_t i;
        double f;
        struct gguf_str s;
        struct gguf_arr a;
    } v;
};

struct gguf_kv {
    char *key;
    uint64_t raw_off, raw_len; /* serialized value (after the type tag) */
    struct gguf_value val;
};

/* Open-addressing hash of names -> index + 1 (0 = empty): duplicate
 * checks and lookups in constant time, whatever the file claims. */
struct name_index {
    uint64_t *slots;
    uint64_t mask;
};

struct gguf_file {
    char *name;
    const uint8_t *base;
    uint64_t size;
    void *map; /* NULL for gguf_open_memory */
    int fd;    /* the file's descriptor (gguf_read_at, gguf_release), else -1 */
    bool discardable;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    uint64_t n_kv;
    struct gguf_kv *kv;
    uint64_t n_tensors;
    struct gguf_tensor *tensors;
    char **tensor_names;
    struct name_index key_index, tensor_index;
};

/* ---- cursor ---- */

struct cursor {
    const uint8_t *base;
    uint64_t size, pos;
    const char *name;
    pb_err *err;
};

static uint64_t left(const struct cursor *c)
{
    return c->size - c->pos;
}

static int need(struct cursor *c, uint64_t n, const char *what)
{
    if (n > left(c))
        return pb_fail(c->err, PB_EFORMAT,
                       "%s: offset %" PRIu64 ": file ends inside %s (needs %" PRIu64 " bytes, %" PRIu64 " left)",
                       c->name, c->pos, what, n, left(c));
    return PB_OK;
}

static int read_bytes(struct cursor *c, void *dst, uint64_t n, const char *what)
{
    int rc = need(c, n, what);
    if (rc)
        return rc;
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return PB_OK;
}

static int read_u32(struct cursor *c, uint32_t *v, const char *what)
{
    return read_bytes(c, v, 4, what);
}

static int read_u64(struct cursor *c, uint64_t *v, const char *what)
{
    return read_bytes(c, v, 8, what);
}

/* Reads a length-prefixed string without copying it. */
static int read_str(struct cursor *c, struct gguf_str *s, const char *what)
{
    uint64_t start = c->pos;
    int rc = read_u64(c, &s->len, what);
    if (rc)
        return rc;
    if (s->len > left(c))
        return pb_fail(c->err, PB_EFORMAT,
                       "%s: offset %" PRIu64 ": %s has length %" PRIu64 " but only %" PRIu64 " bytes remain",
                       c->name, start, what, s->len, left(c));
    s->data = (const char *)c->base + c->pos;
    c->pos += s->len;
    return PB_OK;
}

/* Copies a string into a NUL-terminated heap buffer (keys, tensor names). */
static int read_name(struct cursor *c, char **out, uint64_t max_len, const char *what)
{
    uint64_t start = c->pos;
    struct gguf_str s = {0, NULL};
    int rc = read_str(c, &s, what);
    if (rc)
        return rc;
    if (s.len == 0)
        return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s is empty", c->name, start, what);
    if (s.len > max_len)
        return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s is %" PRIu64 " bytes long (limit %" PRIu64 ")",
                       c->name, start, what, s.len, max_len);
    if (memchr(s.data, 0, s.len))
        return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s contains a NUL byte", c->name, start, what);
    *out = malloc(s.len + 1);
    if (!*out)
        return pb_fail(c->err, PB_ENOMEM, "%s: out of memory reading %s", c->name, what);
    memcpy(*out, s.data, s.len);
    (*out)[s.len] = 0;
    return PB_OK;
}

/* ---- value types ---- */

size_t gguf_vtype_size(enum gguf_vtype t)
{
    switch (t) {
    case GGUF_U8:
    case GGUF_I8:
    case GGUF_BOOL:
        return 1;
    case GGUF_U16:
    case GGUF_I16:
        return 2;
    case GGUF_U32:
    case GGUF_I32:
    case GGUF_F32:
        return 4;
    case GGUF_U64:
    case GGUF_I64:
    case GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

const char *gguf_vtype_name(enum gguf_vtype t)
{
    static const char *names[GGUF_VTYPE_COUNT] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                                  "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < GGUF_VTYPE_COUNT ? names[t] : "invalid";
}

static bool vtype_is_int(enum gguf_vtype t)
{
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 || t == GGUF_I32 ||
           t == GGUF_U64 || t == GGUF_I64;
}

/* Decodes a fixed-size scalar at p. Integers go to i (U64 above INT64_MAX
 * saturates, with *big set) and floats to f. */
static void decode_scalar(enum gguf_vtype t, const uint8_t *p, int64_t *i, double *f, bool *big)
{
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    *i = 0;
    *f = 0;
    if (big)
        *big = false;
    switch (t) {
    case GGUF_U8: memcpy(&u8, p, 1); *i = u8; break;
    case GGUF_BOOL: memcpy(&u8, p, 1); *i = u8 != 0; break;
    case GGUF_I8: memcpy(&i8, p, 1); *i = i8; break;
    case GGUF_U16: memcpy(&u16, p, 2); *i = u16; break;
    case GGUF_I16: memcpy(&i16, p, 2); *i = i16; break;
    case GGUF_U32: memcpy(&u32, p, 4); *i = u32; break;
    case GGUF_I32: memcpy(&i32, p, 4); *i = i32; break;
    case GGUF_I64: memcpy(i, p, 8); break;
    case GGUF_U64:
        memcpy(&u64, p, 8);
        if (u64 > (uint64_t)INT64_MAX) {
            *i = INT64_MAX;
            if (big)
                *big = true;
        } else {
            *i = (int64_t)u64;
        }
        break;
    case GGUF_F32: memcpy(&f32, p, 4); *f = f32; return;
    case GGUF_F64: memcpy(f, p, 8); return;
    default: return;
    }
    *f = (double)*i;
}

static void free_arr(struct gguf_arr *a)
{
    if (a->items) {
        for (uint64_t i = 0; i < a->n; i++)
            free_arr(&a->items[i]);
        free(a->items);
    }
    free((void *)a->str_off);
    a->items = NULL;
    a->str_off = NULL;
}

static int read_value(struct cursor *c, enum gguf_vtype type, struct gguf_value *val, int depth, const char *what);

/* Reads an array body (element type, count, elements). */
static int read_array(struct cursor *c, struct gguf_arr *a, int depth, const char *what)
{
    uint64_t start = c->pos;
    uint32_t et;
    int rc;
    memset(a, 0, sizeof *a);
    a->base = c->base;
    if ((rc = read_u32(c, &et, what)) || (rc = read_u64(c, &a->n, what)))
        return rc;
    if (et >= GGUF_VTYPE_COUNT)
        return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s has unknown element type %" PRIu32,
                       c->name, start, what, et);
    a->type = (enum gguf_vtype)et;
    if (depth >= MAX_ARRAY_DEPTH)
        return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s nests arrays deeper than %d", c->name, start,
                       what, MAX_ARRAY_DEPTH);

    size_t es = gguf_vtype_size(a->type);
    /* smallest encoding of one element: bounds n before any allocation */
    uint64_t min_elem = es ? es : a->type == GGUF_STRING ? 8 : 12;
    if (a->n > left(c) / min_elem)
        return pb_fail(c->err, PB_EFORMAT,
                       "%s: offset %" PRIu64 ": %s claims %" PRIu64 " elements of type %s; only %" PRIu64
                       " bytes remain",
                       c->name, start, what, a->n, gguf_vtype_name(a->type), left(c));
    if (es) {
        if (a->type == GGUF_BOOL) {
            for (uint64_t i = 0; i < a->n; i++)
                if (c->base[c->pos + i] > 1)
                    return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s element %" PRIu64 " is not a bool (%u)",
                                   c->name, c->pos + i, what, i, c->base[c->pos + i]);
        }
        a->raw = c->base + c->pos;
        c->pos += a->n * es;
        return PB_OK;
    }
    if (a->n == 0)
        return PB_OK;
    if (a->type == GGUF_STRING) {
        uint64_t *offs = malloc(a->n * sizeof *offs);
        if (!offs)
            return pb_fail(c->err, PB_ENOMEM, "%s: out of memory for %s (%" PRIu64 " strings)", c->name, what, a->n);
        a->str_off = offs;
        for (uint64_t i = 0; i < a->n; i++) {
            struct gguf_str s;
            offs[i] = c->pos;
            if ((rc = read_str(c, &s, what)))
                return rc;
        }
        return PB_OK;
    }
    /* nested arrays */
    a->items = calloc(a->n, sizeof *a->items);
    if (!a->items)
        return pb_fail(c->err, PB_ENOMEM, "%s: out of memory for %s (%" PRIu64 " arrays)", c->name, what, a->n);
    for (uint64_t i = 0; i < a->n; i++) /* unread items stay zeroed: safe to free */
        if ((rc = read_array(c, &a->items[i], depth + 1, what)))
            return rc;
    return PB_OK;
}

static int read_value(struct cursor *c, enum gguf_vtype type, struct gguf_value *val, int depth, const char *what)
{
    uint64_t start = c->pos;
    int rc;
    memset(val, 0, sizeof *val);
    val->type = type;
    switch (type) {
    case GGUF_STRING:
        return read_str(c, &val->v.s, what);
    case GGUF_ARRAY:
        return read_array(c, &val->v.a, depth, what);
    default: {
        size_t es = gguf_vtype_size(type);
        if (!es)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s has unknown value type %u", c->name, start,
                           what, (unsigned)type);
        if ((rc = need(c, es, what)))
            return rc;
        if (type == GGUF_BOOL && c->base[c->pos] > 1)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s is not a bool (%u)", c->name, start, what,
                           c->base[c->pos]);
        memcpy(&val->v.u, c->base + c->pos, es); /* raw bits; decoded on access */
        c->pos += es;
        return PB_OK;
    }
    }
}

/* ---- header ---- */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static int index_init(struct name_index *ix, uint64_t n)
{
    uint64_t size = 16;
    while (size < 2 * n)
        size <<= 1;
    ix->slots = calloc(size, sizeof *ix->slots);
    ix->mask = size - 1;
    return ix->slots ? PB_OK : PB_ENOMEM;
}

/* Finds name among names[] through the index; with insert, adds index i
 * when absent. Returns the index found, or -1. */
static int64_t index_lookup(struct name_index *ix, char *const *names, size_t stride, const char *name, bool insert,
                            uint64_t i)
{
    if (!ix->slots)
        return -1;
    for (uint64_t h = hash_name(name) & ix->mask;; h = (h + 1) & ix->mask) {
        uint64_t v = ix->slots[h];
        if (v == 0) {
            if (insert)
                ix->slots[h] = i + 1;
            return -1;
        }
        const char *other = *(char *const *)(const void *)((const char *)names + (v - 1) * stride);
        if (strcmp(other, name) == 0)
            return (int64_t)(v - 1);
    }
}

static bool is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

static int parse_kvs(struct cursor *c, struct gguf_file *f)
{
    int rc;
    /* smallest kv: empty-key length 8 + type 4 + 1-byte value */
    if (f->n_kv > left(c) / 13)
        return pb_fail(c->err, PB_EFORMAT, "%s: offset 16: header claims %" PRIu64 " metadata entries; only %" PRIu64
                       " bytes remain", c->name, f->n_kv, left(c));
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    if (!f->kv || index_init(&f->key_index, f->n_kv))
        return pb_fail(c->err, PB_ENOMEM, "%s: out of memory for %" PRIu64 " metadata entries", c->name, f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        struct gguf_kv *kv = &f->kv[i];
        char what[96];
        uint64_t at = c->pos;
        uint32_t type;
        snprintf(what, sizeof what, "metadata key #%" PRIu64, i);
        if ((rc = read_name(c, &kv->key, MAX_KEY_LEN, what)))
            return rc;
        if (index_lookup(&f->key_index, &f->kv[0].key, sizeof *f->kv, kv->key, true, i) >= 0)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": duplicate metadata key '%.64s'", c->name, at,
                           kv->key);
        snprintf(what, sizeof what, "metadata '%.64s'", kv->key);
        if ((rc = read_u32(c, &type, what)))
            return rc;
        if (type >= GGUF_VTYPE_COUNT)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s has unknown value type %" PRIu32, c->name,
                           c->pos - 4, what, type);
        kv->raw_off = c->pos;
        if ((rc = read_value(c, (enum gguf_vtype)type, &kv->val, 0, what)))
            return rc;
        kv->raw_len = c->pos - kv->raw_off;
    }
    return PB_OK;
}

static int check_alignment_key(struct cursor *c, struct gguf_file *f)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find(f, "general.alignment");
    if (i < 0)
        return PB_OK;
    const struct gguf_kv *kv = &f->kv[i];
    int64_t v;
    double d;
    if (!vtype_is_int(kv->val.type))
        return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": general.alignment has type %s, expected u32",
                       c->name, kv->raw_off, gguf_vtype_name(kv->val.type));
    decode_scalar(kv->val.type, (const uint8_t *)&kv->val.v.u, &v, &d, NULL);
    if (v <= 0 || !is_pow2((uint64_t)v) || v > (1 << 30))
        return pb_fail(c->err, PB_EFORMAT,
                       "%s: offset %" PRIu64 ": general.alignment is %" PRId64 ", expected a power of two",
                       c->name, kv->raw_off, v);
    f->alignment = (uint64_t)v;
    return PB_OK;
}

static int parse_tensor_infos(struct cursor *c, struct gguf_file *f)
{
    int rc;
    /* smallest info: name length 8 + 1 byte + n_dims 4 + type 4 + offset 8 */
    if (f->n_tensors > left(c) / 25)
        return pb_fail(c->err, PB_EFORMAT, "%s: offset 8: header claims %" PRIu64 " tensors; only %" PRIu64
                       " bytes remain after the metadata", c->name, f->n_tensors, left(c));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    f->tensor_names = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensor_names);
    if (!f->tensors || !f->tensor_names || index_init(&f->tensor_index, f->n_tensors))
        return pb_fail(c->err, PB_ENOMEM, "%s: out of memory for %" PRIu64 " tensors", c->name, f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        char what[128];
        uint64_t at = c->pos;
        snprintf(what, sizeof what, "tensor info #%" PRIu64, i);
        if ((rc = read_name(c, &f->tensor_names[i], MAX_TENSOR_NAME_LEN, what)))
            return rc;
        t->name = f->tensor_names[i];
        snprintf(what, sizeof what, "tensor '%.64s'", t->name);
        uint32_t type;
        if ((rc = read_u32(c, &t->n_dims, what)))
            return rc;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s has %" PRIu32 " dimensions (expected 1..%d)",
                           c->name, c->pos - 4, what, t->n_dims, GGUF_MAX_DIMS);
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            if ((rc = read_u64(c, &ne, what)))
                return rc;
            if (ne > (uint64_t)INT64_MAX)
                return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s dimension %" PRIu32 " is %" PRIu64
                               " (above 2^63-1)", c->name, c->pos - 8, what, d, ne);
            if (ne == 0)
                return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s dimension %" PRIu32 " is 0", c->name,
                               c->pos - 8, what, d);
            t->ne[d] = (int64_t)ne;
            if (nel > INT64_MAX / (int64_t)ne)
                return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s element count overflows 64 bits",
                               c->name, c->pos - 8, what);
            nel *= (int64_t)ne;
        }
        if ((rc = read_u32(c, &type, what)))
            return rc;
        const struct pb_type_traits *tr = pb_type_get(type);
        if (!tr)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s has unknown type %" PRIu32, c->name,
                           c->pos - 4, what, type);
        t->type = (enum pb_type)type;
        if (t->ne[0] % tr->block != 0)
            return pb_fail(c->err, PB_EFORMAT,
                           "%s: offset %" PRIu64 ": %s row length %" PRId64 " is not a multiple of the %s block size %" PRId64,
                           c->name, at, what, t->ne[0], tr->name, tr->block);
        /* bytes = rows * row size; nel fits int64, so nel/block*size can
         * overflow only through size (at most 292) */
        uint64_t blocks = (uint64_t)nel / (uint64_t)tr->block;
        if (blocks > UINT64_MAX / tr->size)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": %s byte size overflows 64 bits", c->name, at,
                           what);
        t->nbytes = blocks * tr->size;
        if ((rc = read_u64(c, &t->offset, what)))
            return rc;
        if (index_lookup(&f->tensor_index, f->tensor_names, sizeof *f->tensor_names, t->name, true, i) >= 0)
            return pb_fail(c->err, PB_EFORMAT, "%s: offset %" PRIu64 ": duplicate tensor name '%.64s'", c->name, at,
                           t->name);
    }
    return PB_OK;
}

static int place_tensors(struct cursor *c, struct gguf_file *f)
{
    uint64_t end_of_infos = c->pos;
    uint64_t pad = (f->alignment - end_of_infos % f->alignment) % f->alignment;
    f->data_offset = end_of_infos + pad;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return pb_fail(c->err, PB_EFORMAT, "%s: tensor '%s' data offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                           c->name, t->name, t->offset, f->alignment);
        if (f->data_offset > f->size || t->offset > f->size - f->data_offset ||
            t->nbytes > f->size - f->data_offset - t->offset)
            return pb_fail(c->err, PB_EFORMAT,
                           "%s: tensor '%s' data (offset %" PRIu64 ", %" PRIu64 " bytes) extends past the end of the file"
                           " (data section starts at %" PRIu64 ", file is %" PRIu64 " bytes)",
                           c->name, t->name, t->offset, t->nbytes, f->data_offset, f->size);
        t->data = f->base + f->data_offset + t->offset;
    }
    return PB_OK;
}

static int parse(struct gguf_file *f, pb_err *err)
{
    struct cursor c = {f->base, f->size, 0, f->name, err};
    uint32_t magic;
    int rc;
    if ((rc = read_u32(&c, &magic, "the magic number")))
        return rc;
    if (magic != GGUF_MAGIC)
        return pb_fail(err, PB_EFORMAT, "%s: offset 0: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                       f->name, f->base[0], f->base[1], f->base[2], f->base[3]);
    if ((rc = read_u32(&c, &f->version, "the version")))
        return rc;
    if (f->version == 1)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: offset 4: GGUF version 1 is obsolete; convert the file again",
                       f->name);
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0)
            return pb_fail(err, PB_EUNSUPPORTED, "%s: offset 4: version %08" PRIx32 " looks big-endian; only "
                           "little-endian GGUF is supported", f->name, f->version);
        return pb_fail(err, PB_EUNSUPPORTED, "%s: offset 4: GGUF version %" PRIu32 " (supported: 2, 3)", f->name,
                       f->version);
    }
    if ((rc = read_u64(&c, &f->n_tensors, "the tensor count")) || (rc = read_u64(&c, &f->n_kv, "the metadata count")))
        return rc;
    if ((rc = parse_kvs(&c, f)) || (rc = check_alignment_key(&c, f)) || (rc = parse_tensor_infos(&c, f)) ||
        (rc = place_tensors(&c, f)))
        return rc;
    return PB_OK;
}

static int open_image(const void *buf, size_t size, void *map, const char *name, struct gguf_file **out, pb_err *err)
{
    struct gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        if (map)
            munmap(map, size);
        return pb_fail(err, PB_ENOMEM, "%s: out of memory", name);
    }
    f->name = strdup(name);
    f->fd = -1;
    f->base = buf;
    f->size = size;
    f->map = map;
    int rc = f->name ? parse(f, err) : pb_fail(err, PB_ENOMEM, "out of memory");
    if (rc) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return PB_OK;
}

int gguf_open_memory(const void *buf, size_t size, const char *name, struct gguf_file **out, pb_err *err)
{
    *out = NULL;
    return open_image(buf, size, NULL, name ? name : "(memory)", out, err);
}

int gguf_open(const char *path, struct gguf_file **out, pb_err *err)
{
    *out = NULL;
    int fd; /* a FIFO is refused, not waited on */
    if (pb_open_input(path, &fd, err)) {
        if (err)
            err->code = PB_EIO;
        return PB_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return pb_fail(err, PB_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (st.st_size < 8) {
        close(fd);
        return pb_fail(err, PB_EFORMAT, "%s: file is %lld bytes, too short to be GGUF", path, (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    if (map == MAP_FAILED) {
        close(fd);
        return pb_fail(err, PB_EIO, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
    }
    int rc = open_image(map, size, map, path, out, err);
    if (rc) /* open_image unmapped it */
        close(fd);
    else
        (*out)->fd = fd; /* for gguf_read_at */
    return rc;
}

int gguf_open_fd(int fd, const char *name, bool discardable, struct gguf_file **out, pb_err *err)
{
    *out = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pb_fail(err, PB_EIO, "%s: cannot stat: %s", name, strerror(errno));
    if (st.st_size < 8)
        return pb_fail(err, PB_EFORMAT, "%s: %lld bytes, too short to be GGUF", name, (long long)st.st_size);
    size_t size = (size_t)st.st_size;
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return pb_fail(err, PB_EIO, "%s: cannot duplicate the descriptor: %s", name, strerror(errno));
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, own, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(own);
        return pb_fail(err, PB_EIO, "%s: cannot map %zu bytes: %s", name, size, strerror(e));
    }
    int rc = open_image(map, size, map, name, out, err);
    if (rc) {
        close(own);
    } else {
        (*out)->fd = own;
        (*out)->discardable = discardable;
    }
    return rc;
}

/* The whole pages of [p, p + n) inside the mapping, dropped from this
 * process's memory (its neighbours may still be read); with discard, a
 * discardable image's pages are freed as well. */
static void drop_pages(struct gguf_file *f, const void *p, size_t n, bool discard)
{
    if (!f->map || n == 0)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) / page * page, b = ((uintptr_t)p + n) / page * page;
    uintptr_t lo = (uintptr_t)f->map, hi = lo + f->size;
    if (a < lo || b > hi || b <= a)
        return;
    madvise((void *)a, b - a, MADV_DONTNEED);
    if (discard && f->discardable && f->fd >= 0)
        fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(a - lo), (off_t)(b - a));
}

void gguf_release(struct gguf_file *f, const void *p, size_t n) { drop_pages(f, p, n, true); }

void gguf_evict(struct gguf_file *f, const void *p, size_t n) { drop_pages(f, p, n, false); }

void gguf_evict_all(struct gguf_file *f)
{
    if (f->map)
        drop_pages(f, f->map, f->size, false);
    if (f->fd >= 0)
        (void)posix_fadvise(f->fd, 0, 0, POSIX_FADV_RANDOM); /* a hint */
}

void gguf_prefetch(const struct gguf_file *f, const void *p, size_t n)
{
    const uintptr_t lo = (uintptr_t)f->base, at = (uintptr_t)p;
    if (f->fd < 0 || !f->map || at < lo || n > f->size || at - lo > f->size - n)
        return;
    /* in pieces: the kernel reads only the first few MiB of one large
     * request */
    const size_t piece = (size_t)2 << 20;
    for (size_t done = 0; done < n; done += piece)
        (void)posix_fadvise(f->fd, (off_t)(at - lo + done), (off_t)(n - done < piece ? n - done : piece),
                            POSIX_FADV_WILLNEED);
}

int gguf_read_at(const struct gguf_file *f, const void *p, size_t n, void *dst)
{
    const uintptr_t lo = (uintptr_t)f->base, at = (uintptr_t)p;
    if (at < lo || n > f->size || at - lo > f->size - n)
        return -1;
    if (f->fd < 0 || !f->map) {
        memcpy(dst, p, n);
        return 0;
    }
    for (size_t done = 0; done < n;) {
        const ssize_t got = pread(f->fd, (char *)dst + done, n - done, (off_t)(at - lo + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        done += (size_t)got;
    }
    return 0;
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    if (f->kv) {
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            if (f->kv[i].val.type == GGUF_ARRAY)
                free_arr(&f->kv[i].val.v.a);
        }
        free(f->kv);
    }
    if (f->tensor_names) {
        for (uint64_t i = 0; i < f->n_tensors; i++)
            free(f->tensor_names[i]);
        free(f->tensor_names);
    }
    free(f->tensors);
    free(f->key_index.slots);
    free(f->tensor_index.slots);
    if (f->map)
        munmap(f->map, f->size);
    if (f->fd >= 0)
        close(f->fd);
    free(f->name);
    free(f);
}

/* ---- accessors ---- */

const char *gguf_name(const struct gguf_file *f) { return f->name; }
uint32_t gguf_version(const struct gguf_file *f) { return f->version; }
uint64_t gguf_file_size(const struct gguf_file *f) { return f->size; }
uint64_t gguf_alignment(const struct gguf_file *f) { return f->alignment; }
uint64_t gguf_data_offset(const struct gguf_file *f) { return f->data_offset; }
const void *gguf_base(const struct gguf_file *f) { return f->base; }
uint64_t gguf_n_kv(const struct gguf_file *f) { return f->n_kv; }
const char *gguf_kv_key(const struct gguf_file *f, uint64_t i) { return f->kv[i].key; }
enum gguf_vtype gguf_kv_type(const struct gguf_file *f, uint64_t i) { return f->kv[i].val.type; }
uint64_t gguf_n_tensors(const struct gguf_file *f) { return f->n_tensors; }
const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, uint64_t i) { return &f->tensors[i]; }

int64_t gguf_find(const struct gguf_file *f, const char *key)
{
    return index_lookup((struct name_index *)&f->key_index, &f->kv[0].key, sizeof *f->kv, key, false, 0);
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
    int64_t i = index_lookup((struct name_index *)&f->tensor_index, f->tensor_names, sizeof *f->tensor_names, name,
                             false, 0);
    return i < 0 ? NULL : &f->tensors[i];
}

int64_t gguf_tensor_nelements(const struct gguf_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

static const struct gguf_kv *lookup(const struct gguf_file *f, const char *key)
{
    int64_t i = gguf_find(f, key);
    return i < 0 ? NULL : &f->kv[i];
}

static int wrong_type(const struct gguf_file *f, const struct gguf_kv *kv, const char *expected, pb_err *err)
{
    return pb_fail(err, PB_EFORMAT, "%s: metadata '%s' has type %s, expected %s", f->name, kv->key,
                   gguf_vtype_name(kv->val.type), expected);
}

int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out, pb_err *err)
{
    const struct gguf_kv *kv = lookup(f, key);
    if (!kv)
        return 0;
    if (!vtype_is_int(kv->val.type))
        return wrong_type(f, kv, "an integer", err);
    double d;
    bool big;
    decode_scalar(kv->val.type, (const uint8_t *)&kv->val.v.u, out, &d, &big);
    if (big)
        return pb_fail(err, PB_EFORMAT, "%s: metadata '%s' is too large", f->name, key);
    return 1;
}

int gguf_get_float(const struct gguf_file *f, const char *key, double *out, pb_err *err)
{
    const struct gguf_kv *kv = lookup(f, key);
    if (!kv)
        return 0;
    if (kv->val.type != GGUF_F32 && kv->val.type != GGUF_F64 && !vtype_is_int(kv->val.type))
        return wrong_type(f, kv, "a number", err);
    int64_t i;
    decode_scalar(kv->val.type, (const uint8_t *)&kv->val.v.u, &i, out, NULL);
    return 1;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, pb_err *err)
{
    const struct gguf_kv *kv = lookup(f, key);
    if (!kv)
        return 0;
    if (kv->val.type != GGUF_BOOL && !vtype_is_int(kv->val.type))
        return wrong_type(f, kv, "a bool", err);
    int64_t i;
    double d;
    decode_scalar(kv->val.type, (const uint8_t *)&kv->val.v.u, &i, &d, NULL);
    *out = i != 0;
    return 1;
}

int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out, pb_err *err)
{
    const struct gguf_kv *kv = lookup(f, key);
    if (!kv)
        return 0;
    if (kv->val.type != GGUF_STRING)
        return wrong_type(f, kv, "a string", err);
    *out = kv->val.v.s;
    return 1;
}

int gguf_get_arr(const struct gguf_file *f, const char *key, struct gguf_arr *out, pb_err *err)
{
    const struct gguf_kv *kv = lookup(f, key);
    if (!kv)
        return 0;
    if (kv->val.type != GGUF_ARRAY)
        return wrong_type(f, kv, "an array", err);
    *out = kv->val.v.a;
    return 1;
}

struct gguf_str gguf_kv_str(const struct gguf_file *f, uint64_t i)
{
    struct gguf_str s = {0, ""};
    if (f->kv[i].val.type == GGUF_STRING)
        s = f->kv[i].val.v.s;
    return s;
}

const uint8_t *gguf_kv_raw(const struct gguf_file *f, uint64_t i, uint64_t *len)
{
    *len = f->kv[i].raw_len;
    return f->base + f->kv[i].raw_off;
}

void gguf_kv_format(const struct gguf_file *f, uint64_t i, char *buf, size_t size)
{
    const struct gguf_value *v = &f->kv[i].val;
    int64_t iv;
    double fv;
    if (size == 0)
        return;
    switch (v->type) {
    case GGUF_STRING: {
        size_t n = v->v.s.len < size - 1 ? (size_t)v->v.s.len : size - 1;
        for (size_t k = 0; k < n; k++) {
            unsigned char ch = (unsigned char)v->v.s.data[k];
            buf[k] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch; /* keep one line */
        }
        buf[n] = 0;
        break;
    }
    case GGUF_ARRAY:
        snprintf(buf, size, "[%s x %" PRIu64 "]", gguf_vtype_name(v->v.a.type), v->v.a.n);
        break;
    case GGUF_BOOL:
        snprintf(buf, size, "%s", (v->v.u & 0xff) ? "true" : "false");
        break;
    case GGUF_F32:
    case GGUF_F64:
        decode_scalar(v->type, (const uint8_t *)&v->v.u, &iv, &fv, NULL);
        snprintf(buf, size, "%g", fv);
        break;
    case GGUF_U64: {
        uint64_t u;
        memcpy(&u, &v->v.u, 8);
        snprintf(buf, size, "%" PRIu64, u);
        break;
    }
    default:
        decode_scalar(v->type, (const uint8_t *)&v->v.u, &iv, &fv, NULL);
        snprintf(buf, size, "%" PRId64, iv);
        break;
    }
}

struct gguf_str gguf_arr_str(const struct gguf_arr *a, uint64_t i)
{
    struct gguf_str s;
    memcpy(&s.len, a->base + a->str_off[i], 8);
    s.data = (const char *)a->base + a->str_off[i] + 8;
    return s;
}

int64_t gguf_arr_int(const struct gguf_arr *a, uint64_t i)
{
    int64_t v;
    double d;
    decode_scalar(a->type, a->raw + i * gguf_vtype_size(a->type), &v, &d, NULL);
    return v;
}

double gguf_arr_float(const struct gguf_arr *a, uint64_t i)
{
    int64_t v;
    double d;
    decode_scalar(a->type, a->raw + i * gguf_vtype_size(a->type), &v, &d, NULL);
    return d;
}

bool gguf_arr_is_int(const struct gguf_arr *a)
{
    return vtype_is_int(a->type);
}

bool gguf_str_eq(struct gguf_str s, const char *cstr)
{
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.data, cstr, n) == 0;
}
