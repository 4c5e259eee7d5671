/* Quantizing a model file to another file type. */
#include "tools/rows.h"
#include "plumb/quantize.h"

#include "base/err.h"
#include "quant/ftype.h"

#include "gguf/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct src_rows {
    const struct gguf_tensor *t;
    const struct pb_type_traits *tr;
    size_t row_bytes;
};

static void dequant_source_row(void *ctx, int64_t r, float *dst, int64_t n)
{
    const struct src_rows *s = ctx;
    s->tr->to_float((const uint8_t *)s->t->data + (size_t)r * s->row_bytes, dst, n);
}

/* Block index from "blk.N.", or -1. */
static int layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0)
        return -1;
    char *end;
    long v = strtol(name + 4, &end, 10);
    return end != name + 4 && *end == '.' && v >= 0 && v < (1 << 20) ? (int)v : -1;
}

static int n_layers_of(const struct gguf_file *f)
{
    int n = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        int l = layer_of(gguf_tensor(f, i)->name);
        if (l + 1 > n)
            n = l + 1;
    }
    return n;
}

/* The model facts the mixes' rules look at: query heads per KV head and
 * experts, from the architecture's keys (absent or per-layer: 0). */
static struct ftype_model model_of(const struct gguf_file *f)
{
    struct ftype_model m = {0, 0};
    struct gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch, NULL) != 1 || arch.len > 64)
        return m;
    char key[128];
    int64_t heads, kv_heads, experts;
    snprintf(key, sizeof key, "%.*s.attention.head_count", (int)arch.len, arch.data);
    if (gguf_get_int(f, key, &heads, NULL) == 1) {
        snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)arch.len, arch.data);
        if (gguf_get_int(f, key, &kv_heads, NULL) != 1)
            kv_heads = heads;
        if (heads > 0 && kv_heads > 0 && heads < (1 << 20))
            m.n_gqa = (int)(heads / kv_heads);
    }
    snprintf(key, sizeof key, "%.*s.expert_count", (int)arch.len, arch.data);
    if (gguf_get_int(f, key, &experts, NULL) == 1 && experts > 0 && experts < (1 << 20))
        m.n_expert = (int)experts;
    return m;
}

static enum pb_type target_type(const struct gguf_file *f, const struct ftype_model *m, const struct gguf_tensor *t,
                                enum pb_ftype ft, int n_layer)
{
    bool tied = !gguf_find_tensor(f, "output.weight");
    struct ftype_tensor info = {
        .name = t->name,
        .n_dims = t->n_dims,
        .ne0 = t->ne[0],
        .layer = layer_of(t->name),
        .n_layer = n_layer,
        .is_output = strcmp(t->name, "output.weight") == 0 || (tied && strcmp(t->name, "token_embd.weight") == 0),
    };
    if (t->n_dims < 2)
        return t->type; /* norms and biases are kept as they are */
    return pb_ftype_model_tensor_type(ft, m, &info);
}

static int write_tensor(struct gguf_writer *w, struct rows_writer *rw, const struct gguf_tensor *t, enum pb_type to,
                        pb_err *err)
{
    if (to == t->type)
        return gguf_writer_write(w, t->data, t->nbytes, err);
    struct src_rows s = {t, pb_type_get(t->type), pb_row_size(t->type, t->ne[0])};
    return rows_write(rw, w, dequant_source_row, &s, t->ne[1] * t->ne[2] * t->ne[3], t->ne[0], to, 0, err);
}

int quantize_file(const char *in, const char *out, const struct quantize_params *p, struct quantize_report *r,
                  pb_err *err)
{
    memset(r, 0, sizeof *r);
    struct gguf_file *f = NULL;
    struct gguf_writer *w = NULL;
    struct rows_writer rw = {0};
    enum pb_type *types = NULL;
    int rc = gguf_open(in, &f, err);
    if (rc)
        goto done;
    const uint64_t nt = gguf_n_tensors(f);
    const int n_layer = n_layers_of(f);
    const struct ftype_model model = model_of(f);
    int64_t src_ft;
    const char *src_ft_name = gguf_get_int(f, "general.file_type", &src_ft, NULL) == 1 ? pb_ftype_name(src_ft) : NULL;
    snprintf(r->source_ftype, sizeof r->source_ftype, "%s", src_ft_name ? src_ft_name : "unknown");

    /* choose every tensor's type first, so an unconvertible one fails
     * before anything is written */
    types = calloc(nt ? nt : 1, sizeof *types);
    if (!types) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    int64_t max_row = 1;
    for (uint64_t i = 0; i < nt; i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        types[i] = target_type(f, &model, t, p->ftype, n_layer);
        if (types[i] != t->type) {
            const struct pb_type_traits *tr = pb_type_get(t->type);
            if ((uintptr_t)t->data % tr->align != 0) {
                rc = pb_fail(err, PB_EFORMAT, "%s: tensor '%s' data is not aligned to %zu bytes", in, t->name,
                             tr->align);
                goto done;
            }
            if (!tr->to_float) {
                rc = pb_fail(err, PB_EUNSUPPORTED, "%s: tensor '%s' is %s, which plumb cannot convert yet", in,
                             t->name, pb_type_name(t->type));
                goto done;
            }
            if (pb_type_is_quantized(t->type))
                r->requantized = true;
            if (t->ne[0] > max_row)
                max_row = t->ne[0];
        }
    }

    if ((rc = gguf_writer_create(&w, err)))
        goto done;
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    if (gguf_alignment(f) < GGUF_DEFAULT_ALIGNMENT) /* never write data less aligned than the default */
        gguf_unset(w, "general.alignment");
    gguf_set_u32(w, "general.file_type", (uint32_t)p->ftype);
    gguf_set_u32(w, "general.quantization_version", 2);
    for (uint64_t i = 0; i < nt; i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        if ((rc = gguf_writer_add_tensor(w, t->name, types[i], t->n_dims, t->ne, err)))
            goto done;
    }
    if ((rc = rows_writer_init(&rw, p->n_threads, max_row, err)) || (rc = gguf_writer_begin(w, out, err)))
        goto done;

    uint64_t total = 0, done_bytes = 0;
    for (uint64_t i = 0; i < nt; i++)
        total += pb_row_size(types[i], gguf_tensor(f, i)->ne[0]) *
                 (uint64_t)(gguf_tensor(f, i)->ne[1] * gguf_tensor(f, i)->ne[2] * gguf_tensor(f, i)->ne[3]);
    for (uint64_t i = 0; i < nt; i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        if ((rc = write_tensor(w, &rw, t, types[i], err)))
            goto done;
        uint64_t out_bytes = pb_row_size(types[i], t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        r->n_tensors++;
        r->n_converted += types[i] != t->type;
        r->n_params += (uint64_t)gguf_tensor_nelements(t);
        r->bytes_in += t->nbytes;
        r->bytes_out += out_bytes;
        done_bytes += out_bytes;
        if (p->progress)
            p->progress(p->user, done_bytes, total, t->name);
    }
    rc = gguf_writer_finish(w, err);
done:
    gguf_writer_free(w); /* removes the temporary file after a failure */
    rows_writer_free(&rw);
    free(types);
    gguf_close(f);
    return rc;
}
