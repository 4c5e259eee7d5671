/* GGUF writer: metadata is kept serialized in memory; tensor data streams
 * to a temporary file that is renamed into place only when complete. */
#define _POSIX_C_SOURCE 200809L
#include "gguf/gguf.h"

#include "base/vec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct wkv {
    char *key;
    uint8_t *blob; /* u32 type tag followed by the serialized value */
    size_t len;
};

struct wtensor {
    char *name;
    enum pb_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes;
    uint64_t offset;
};

struct gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
    uint64_t alignment;
    pb_err first_err; /* first set_* failure, reported by status/begin */
    int status;
    FILE *fp;
    char *path, *tmp_path;
    bool to_fd;         /* writing into a caller's descriptor: no temporary file */
    size_t cur;         /* tensor being written */
    uint64_t cur_done;  /* bytes of it written */
    uint64_t written;   /* bytes written to the file */
};

int gguf_writer_create(struct gguf_writer **out, pb_err *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return pb_fail(err, PB_ENOMEM, "out of memory creating GGUF writer");
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return PB_OK;
}

void gguf_writer_free(struct gguf_writer *w)
{
    if (!w)
        return;
    if (w->fp) {
        fclose(w->fp);
        if (!w->to_fd)
            unlink(w->tmp_path);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].blob);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

static int set_failed(struct gguf_writer *w, int code, const char *msg, const char *key)
{
    if (!w->status)
        w->status = pb_fail(&w->first_err, code, "%s '%s'", msg, key);
    return w->status;
}

/* Stores blob (ownership taken) under key, replacing an existing value. */
static int put(struct gguf_writer *w, const char *key, uint8_t *blob, size_t len)
{
    if (!blob)
        return set_failed(w, PB_ENOMEM, "out of memory setting", key);
    if (!key[0]) {
        free(blob);
        return set_failed(w, PB_EINVAL, "empty metadata key", key);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].blob);
            w->kv[i].blob = blob;
            w->kv[i].len = len;
            return PB_OK;
        }
    }
    if (vec_reserve((void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof *w->kv)) {
        free(blob);
        return set_failed(w, PB_ENOMEM, "out of memory setting", key);
    }
    char *k = strdup(key);
    if (!k) {
        free(blob);
        return set_failed(w, PB_ENOMEM, "out of memory setting", key);
    }
    w->kv[w->n_kv].key = k;
    w->kv[w->n_kv].blob = blob;
    w->kv[w->n_kv].len = len;
    w->n_kv++;
    return PB_OK;
}

static uint8_t *blob_new(uint32_t type, size_t payload, size_t *len)
{
    *len = 4 + payload;
    uint8_t *b = malloc(*len);
    if (b)
        memcpy(b, &type, 4);
    return b;
}

static int set_scalar(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *v)
{
    size_t len, es = gguf_vtype_size(t);
    uint8_t *b = blob_new(t, es, &len);
    if (b)
        memcpy(b + 4, v, es);
    return put(w, key, b, len);
}

int gguf_set_u32(struct gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_U32, &v); }
int gguf_set_i32(struct gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, GGUF_I32, &v); }
int gguf_set_u64(struct gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_U64, &v); }
int gguf_set_f32(struct gguf_writer *w, const char *key, float v) { return set_scalar(w, key, GGUF_F32, &v); }

int gguf_set_bool(struct gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_BOOL, &b);
}

int gguf_set_strn(struct gguf_writer *w, const char *key, const char *v, uint64_t n)
{
    size_t len;
    uint8_t *b = blob_new(GGUF_STRING, 8 + n, &len);
    if (b) {
        memcpy(b + 4, &n, 8);
        memcpy(b + 12, v, n);
    }
    return put(w, key, b, len);
}

int gguf_set_str(struct gguf_writer *w, const char *key, const char *v)
{
    return gguf_set_strn(w, key, v, strlen(v));
}

int gguf_set_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *elems, uint64_t n)
{
    size_t es = gguf_vtype_size(t), len;
    if (!es)
        return set_failed(w, PB_EINVAL, "gguf_set_arr needs a fixed-size element type for", key);
    uint8_t *b = blob_new(GGUF_ARRAY, 12 + n * es, &len);
    if (b) {
        uint32_t et = t;
        memcpy(b + 4, &et, 4);
        memcpy(b + 8, &n, 8);
        if (n)
            memcpy(b + 16, elems, n * es);
    }
    return put(w, key, b, len);
}

int gguf_set_arr_str(struct gguf_writer *w, const char *key, const struct gguf_str *v, uint64_t n)
{
    size_t payload = 12, len;
    for (uint64_t i = 0; i < n; i++)
        payload += 8 + v[i].len;
    uint8_t *b = blob_new(GGUF_ARRAY, payload, &len);
    if (b) {
        uint32_t et = GGUF_STRING;
        uint8_t *p = b + 4;
        memcpy(p, &et, 4);
        memcpy(p + 4, &n, 8);
        p += 12;
        for (uint64_t i = 0; i < n; i++) {
            memcpy(p, &v[i].len, 8);
            if (v[i].len)
                memcpy(p + 8, v[i].data, v[i].len);
            p += 8 + v[i].len;
        }
    }
    return put(w, key, b, len);
}

int gguf_set_from_as(struct gguf_writer *w, const char *key, const struct gguf_file *src, uint64_t i)
{
    uint64_t raw_len;
    const uint8_t *raw = gguf_kv_raw(src, i, &raw_len);
    size_t len;
    uint8_t *b = blob_new(gguf_kv_type(src, i), raw_len, &len);
    if (b)
        memcpy(b + 4, raw, raw_len);
    return put(w, key, b, len);
}

int gguf_set_from(struct gguf_writer *w, const struct gguf_file *src, uint64_t i)
{
    return gguf_set_from_as(w, gguf_kv_key(src, i), src, i);
}

void gguf_unset(struct gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].key);
            free(w->kv[i].blob);
            memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - i - 1) * sizeof *w->kv);
            w->n_kv--;
            return;
        }
    }
}

int gguf_writer_status(const struct gguf_writer *w, pb_err *err)
{
    if (w->status && err)
        *err = w->first_err;
    return w->status;
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum pb_type type, uint32_t n_dims,
                           const int64_t *ne, pb_err *err)
{
    const struct pb_type_traits *tr = pb_type_get(type);
    if (w->fp)
        return pb_fail(err, PB_EINVAL, "tensor '%s' added after the header was written", name);
    if (!tr)
        return pb_fail(err, PB_EINVAL, "tensor '%s': unknown type %d", name, (int)type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return pb_fail(err, PB_EINVAL, "tensor '%s': %u dimensions", name, n_dims);
    if (!name[0])
        return pb_fail(err, PB_EINVAL, "tensor with an empty name");
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return pb_fail(err, PB_EINVAL, "duplicate tensor '%s'", name);
    struct wtensor t = {0};
    int64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < (int)n_dims ? ne[d] : 1;
        if (t.ne[d] < 0 || (t.ne[d] && nel > INT64_MAX / t.ne[d]))
            return pb_fail(err, PB_EINVAL, "tensor '%s': bad dimensions", name);
        nel *= t.ne[d];
    }
    if (t.ne[0] % tr->block)
        return pb_fail(err, PB_EINVAL, "tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %" PRId64,
                       name, t.ne[0], tr->name, tr->block);
    t.type = type;
    t.n_dims = n_dims;
    t.nbytes = (uint64_t)(nel / tr->block) * tr->size;
    if (vec_reserve((void **)&w->t, &w->cap_t, w->n_t + 1, sizeof *w->t))
        return pb_fail(err, PB_ENOMEM, "out of memory adding tensor '%s'", name);
    t.name = strdup(name);
    if (!t.name)
        return pb_fail(err, PB_ENOMEM, "out of memory adding tensor '%s'", name);
    w->t[w->n_t++] = t;
    return PB_OK;
}

static uint64_t pad_to(uint64_t x, uint64_t align)
{
    return (align - x % align) % align;
}

static int write_all(struct gguf_writer *w, const void *p, size_t n, pb_err *err)
{
    if (n && fwrite(p, 1, n, w->fp) != n)
        return pb_fail(err, PB_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    w->written += n;
    return PB_OK;
}

static int write_zeros(struct gguf_writer *w, uint64_t n, pb_err *err)
{
    static const uint8_t zeros[64];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        int rc = write_all(w, zeros, k, err);
        if (rc)
            return rc;
        n -= k;
    }
    return PB_OK;
}

/* The alignment to use: general.alignment when set (as u32), else 32. */
static int resolve_alignment(struct gguf_writer *w, pb_err *err)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0)
            continue;
        uint32_t type, v;
        memcpy(&type, w->kv[i].blob, 4);
        if (type != GGUF_U32 || w->kv[i].len != 8)
            return pb_fail(err, PB_EINVAL, "general.alignment must be a u32");
        memcpy(&v, w->kv[i].blob + 4, 4);
        if (v == 0 || (v & (v - 1)))
            return pb_fail(err, PB_EINVAL, "general.alignment %u is not a power of two", v);
        w->alignment = v;
    }
    return PB_OK;
}

static int fail_writing(struct gguf_writer *w, int rc)
{
    if (w->fp) {
        fclose(w->fp);
        w->fp = NULL;
        if (!w->to_fd)
            unlink(w->tmp_path);
    }
    return rc;
}

/* Checks the writer can begin and places the tensors. */
static int prepare_begin(struct gguf_writer *w, pb_err *err)
{
    int rc;
    if (w->status)
        return gguf_writer_status(w, err);
    if (w->fp || w->path)
        return pb_fail(err, PB_EINVAL, "gguf_writer_begin called twice");
    if ((rc = resolve_alignment(w, err)))
        return rc;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += w->t[i].nbytes + pad_to(w->t[i].nbytes, w->alignment);
    }
    return PB_OK;
}

static int write_header(struct gguf_writer *w, pb_err *err);

int gguf_writer_begin(struct gguf_writer *w, const char *path, pb_err *err)
{
    int rc = prepare_begin(w, err);
    if (rc)
        return rc;
    /* the rename at the end would replace a device node or a FIFO */
    if ((rc = pb_check_output(path, err)))
        return rc;
    size_t plen = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(plen + 32);
    if (!w->path || !w->tmp_path)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    snprintf(w->tmp_path, plen + 32, "%s.tmp-%ld", path, (long)getpid());
    w->fp = fopen(w->tmp_path, "wb");
    if (!w->fp)
        return pb_fail(err, PB_EIO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
    return write_header(w, err);
}

int gguf_writer_begin_fd(struct gguf_writer *w, int fd, const char *name, pb_err *err)
{
    int rc = prepare_begin(w, err);
    if (rc)
        return rc;
    w->path = strdup(name);
    w->tmp_path = strdup(name);
    if (!w->path || !w->tmp_path)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int own = dup(fd);
    w->fp = own >= 0 ? fdopen(own, "wb") : NULL;
    if (!w->fp) {
        if (own >= 0)
            close(own);
        return pb_fail(err, PB_EIO, "%s: cannot write: %s", name, strerror(errno));
    }
    w->to_fd = true;
    return write_header(w, err);
}

static int write_header(struct gguf_writer *w, pb_err *err)
{
    int rc;
    setvbuf(w->fp, NULL, _IOFBF, 1 << 20);

    uint32_t magic = GGUF_MAGIC, version = 3;
    uint64_t n_t = w->n_t, n_kv = w->n_kv;
    if ((rc = write_all(w, &magic, 4, err)) || (rc = write_all(w, &version, 4, err)) ||
        (rc = write_all(w, &n_t, 8, err)) || (rc = write_all(w, &n_kv, 8, err)))
        return fail_writing(w, rc);
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t klen = strlen(w->kv[i].key);
        if ((rc = write_all(w, &klen, 8, err)) || (rc = write_all(w, w->kv[i].key, klen, err)) ||
            (rc = write_all(w, w->kv[i].blob, w->kv[i].len, err)))
            return fail_writing(w, rc);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        uint64_t nlen = strlen(t->name);
        uint32_t type = t->type;
        if ((rc = write_all(w, &nlen, 8, err)) || (rc = write_all(w, t->name, nlen, err)) ||
            (rc = write_all(w, &t->n_dims, 4, err)))
            return fail_writing(w, rc);
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((rc = write_all(w, &t->ne[d], 8, err)))
                return fail_writing(w, rc);
        if ((rc = write_all(w, &type, 4, err)) || (rc = write_all(w, &t->offset, 8, err)))
            return fail_writing(w, rc);
    }
    if ((rc = write_zeros(w, pad_to(w->written, w->alignment), err)))
        return fail_writing(w, rc);
    w->cur = 0;
    w->cur_done = 0;
    return PB_OK;
}

int gguf_writer_write(struct gguf_writer *w, const void *data, size_t n, pb_err *err)
{
    const uint8_t *p = data;
    int rc;
    if (!w->fp)
        return pb_fail(err, PB_EINVAL, "gguf_writer_write before begin (or after a failure)");
    while (n > 0) {
        if (w->cur >= w->n_t)
            return fail_writing(w, pb_fail(err, PB_EINVAL, "%s: more tensor data than the tensors declared", w->path));
        const struct wtensor *t = &w->t[w->cur];
        uint64_t room = t->nbytes - w->cur_done;
        size_t k = n < room ? n : (size_t)room;
        if ((rc = write_all(w, p, k, err)))
            return fail_writing(w, rc);
        p += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->nbytes) {
            if ((rc = write_zeros(w, pad_to(t->nbytes, w->alignment), err)))
                return fail_writing(w, rc);
            w->cur++;
            w->cur_done = 0;
        }
    }
    return PB_OK;
}

int gguf_writer_finish(struct gguf_writer *w, pb_err *err)
{
    if (!w->fp)
        return pb_fail(err, PB_EINVAL, "gguf_writer_finish before begin (or after a failure)");
    /* zero-sized tensors at the end complete without a write */
    while (w->cur < w->n_t && w->t[w->cur].nbytes == 0)
        w->cur++;
    if (w->cur < w->n_t)
        return fail_writing(w, pb_fail(err, PB_EINVAL, "%s: tensor '%s' is missing %" PRIu64 " bytes of data", w->path,
                                       w->t[w->cur].name, w->t[w->cur].nbytes - w->cur_done));
    if (fflush(w->fp) != 0 || (!w->to_fd && fsync(fileno(w->fp)) != 0))
        return fail_writing(w, pb_fail(err, PB_EIO, "%s: cannot flush: %s", w->tmp_path, strerror(errno)));
    if (w->to_fd) {
        int rc = fclose(w->fp) == 0 ? PB_OK : pb_fail(err, PB_EIO, "%s: cannot close: %s", w->path, strerror(errno));
        w->fp = NULL;
        return rc;
    }
    if (fclose(w->fp) != 0) {
        w->fp = NULL;
        unlink(w->tmp_path);
        return pb_fail(err, PB_EIO, "%s: cannot close: %s", w->tmp_path, strerror(errno));
    }
    w->fp = NULL;
    int rc = pb_check_output(w->path, err); /* it may have changed while the file was written */
    if (rc) {
        unlink(w->tmp_path);
        return rc;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        int e = errno;
        unlink(w->tmp_path);
        return pb_fail(err, PB_EIO, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(e));
    }
    return PB_OK;
}
