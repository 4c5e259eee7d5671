/* Loading a model from GGUF (binding tensor views, checking every shape and
 * type before use), contexts, and evaluation. */
#include "model/model_internal.h"

#include "base/sys.h"
#include "kernels/kernels.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum bind_kind {
    BIND_MATRIX, /* multiplied by activations: needs a dot kernel */
    BIND_TABLE,  /* rows looked up (embeddings): needs to_float */
    BIND_VECTOR, /* 1-D (norms, biases): converted to F32 if needed */
};

/* Copies a 1-D tensor into an owned F32 array (converting it if needed)
 * and releases the file's pages it filled: after loading, the file is
 * read only for embedding rows. (Read in place, the norms kept ~60 MB of
 * a TinyLlama file resident: whole large folios of the page cache around
 * each one, measured with /proc/PID/pagemap.) */
static int own_as_f32(struct model *m, struct pb_tensor *t, const struct pb_type_traits *tr, pb_err *err)
{
    float **owned = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *owned);
    if (!owned)
        return pb_fail(err, PB_ENOMEM, "out of memory converting '%s'", t->name);
    m->owned = owned;
    float *buf = malloc((size_t)t->ne[0] * sizeof *buf);
    if (!buf)
        return pb_fail(err, PB_ENOMEM, "out of memory converting '%s'", t->name);
    tr->to_float(t->data, buf, t->ne[0]);
    gguf_release(m->file, t->data, t->row_bytes);
    m->owned[m->n_owned++] = buf;
    t->data = buf;
    t->type = PB_TYPE_F32;
    t->row_bytes = (size_t)t->ne[0] * sizeof(float);
    return PB_OK;
}

/* Binds tensor `name` of shape [ne0] (ne1 == 0) or [ne0, ne1] to out.
 * An absent optional tensor leaves out->data NULL. */
static int bind(struct model *m, const char *name, enum bind_kind kind, bool required, int64_t ne0, int64_t ne1,
                struct pb_tensor *out, pb_err *err)
{
    const char *file = gguf_name(m->file);
    const struct gguf_tensor *t = gguf_find_tensor(m->file, name);
    memset(out, 0, sizeof *out);
    if (!t) {
        if (required)
            return pb_fail(err, PB_EFORMAT, "%s: missing tensor '%s'", file, name);
        return PB_OK;
    }
    int64_t want[4] = {ne0, ne1 ? ne1 : 1, 1, 1};
    for (int d = 0; d < 4; d++)
        if (t->ne[d] != want[d])
            return pb_fail(err, PB_EFORMAT,
                           "%s: tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                           "], expected [%" PRId64 ", %" PRId64 "]",
                           file, name, t->ne[0], t->ne[1], t->ne[2], t->ne[3], want[0], want[1]);
    const struct pb_type_traits *tr = pb_type_get(t->type);
    if (((uintptr_t)t->data % tr->align) != 0)
        return pb_fail(err, PB_EFORMAT, "%s: tensor '%s' data is not aligned to %zu bytes", file, name, tr->align);
    out->name = t->name;
    out->type = t->type;
    memcpy(out->ne, want, sizeof want);
    out->row_bytes = pb_row_size(t->type, t->ne[0]);
    out->data = t->data;
    if (kind == BIND_MATRIX && !kern_dot_for(t->type))
        return pb_fail(err, PB_EUNSUPPORTED, "%s: tensor '%s' has type %s, which plumb cannot multiply yet", file,
                       name, tr->name);
    if (kind != BIND_MATRIX && !tr->to_float)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: tensor '%s' has type %s, which plumb cannot read yet", file, name,
                       tr->name);
    if (kind == BIND_VECTOR)
        return own_as_f32(m, out, tr, err);
    return PB_OK;
}

static int bind_layer(struct model *m, int l, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    struct layer_weights *lw = &m->layers[l];
    const int64_t E = hp->n_embd, QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    const bool bias = m->arch->needs & ARCH_QKV_BIAS, qk_norm = m->arch->needs & ARCH_QK_NORM;
    struct {
        const char *suffix;
        enum bind_kind kind;
        bool required;
        int64_t ne0, ne1;
        struct pb_tensor *out;
    } specs[] = {
        {"attn_norm.weight", BIND_VECTOR, true, E, 0, &lw->attn_norm},
        {"attn_q.weight", BIND_MATRIX, true, E, QD, &lw->wq},
        {"attn_k.weight", BIND_MATRIX, true, E, KVD, &lw->wk},
        {"attn_v.weight", BIND_MATRIX, true, E, KVD, &lw->wv},
        {"attn_output.weight", BIND_MATRIX, true, QD, E, &lw->wo},
        {"attn_q.bias", BIND_VECTOR, bias, QD, 0, &lw->bq},
        {"attn_k.bias", BIND_VECTOR, bias, KVD, 0, &lw->bk},
        {"attn_v.bias", BIND_VECTOR, bias, KVD, 0, &lw->bv},
        {"attn_q_norm.weight", BIND_VECTOR, qk_norm, hp->head_dim, 0, &lw->q_norm},
        {"attn_k_norm.weight", BIND_VECTOR, qk_norm, hp->head_dim, 0, &lw->k_norm},
        {"ffn_norm.weight", BIND_VECTOR, true, E, 0, &lw->ffn_norm},
        {"ffn_gate.weight", BIND_MATRIX, true, E, hp->n_ff, &lw->ffn_gate},
        {"ffn_up.weight", BIND_MATRIX, true, E, hp->n_ff, &lw->ffn_up},
        {"ffn_down.weight", BIND_MATRIX, true, hp->n_ff, E, &lw->ffn_down},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", l, specs[i].suffix);
        int rc = bind(m, name, specs[i].kind, specs[i].required, specs[i].ne0, specs[i].ne1, specs[i].out, err);
        if (rc)
            return rc;
        if (specs[i].kind == BIND_MATRIX)
            m->weight_bytes += specs[i].out->row_bytes * (uint64_t)specs[i].out->ne[1];
    }
    return PB_OK;
}

static int bind_all(struct model *m, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    int rc;
    if ((rc = bind(m, "token_embd.weight", BIND_TABLE, true, hp->n_embd, hp->n_vocab, &m->tok_embd, err)) ||
        (rc = bind(m, "output_norm.weight", BIND_VECTOR, true, hp->n_embd, 0, &m->out_norm, err)) ||
        (rc = bind(m, "output.weight", BIND_MATRIX, false, hp->n_embd, hp->n_vocab, &m->output, err)) ||
        (rc = bind(m, "rope_freqs.weight", BIND_VECTOR, false, hp->n_rot / 2, 0, &m->rope_freqs, err)))
        return rc;
    /* each RoPE angle is divided by its factor: a zero, negative or
     * non-finite one would turn every logit into NaN */
    const float *ff = m->rope_freqs.data;
    for (int64_t i = 0; ff && i < m->rope_freqs.ne[0]; i++)
        if (!(isfinite(ff[i]) && ff[i] > 0))
            return pb_fail(err, PB_EFORMAT, "%s: rope_freqs.weight[%" PRId64 "] is %g, expected a positive number",
                           gguf_name(m->file), i, (double)ff[i]);
    if (!m->output.data) { /* tied embeddings: the output projection is token_embd */
        if (!kern_dot_for(m->tok_embd.type))
            return pb_fail(err, PB_EUNSUPPORTED, "%s: token_embd.weight (used as output) has type %s, which plumb "
                           "cannot multiply yet", gguf_name(m->file), pb_type_name(m->tok_embd.type));
        m->output = m->tok_embd;
    }
    m->weight_bytes = m->output.row_bytes * (uint64_t)m->output.ne[1];
    if (hp->rope_scaling == ROPE_SCALING_YARN || hp->rope_scaling == ROPE_SCALING_OTHER)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: RoPE scaling '%s' is not supported yet (none, linear and Llama 3's "
                       "rope_freqs are)", gguf_name(m->file),
                       hp->rope_scaling == ROPE_SCALING_YARN ? "yarn" : "of this type");
    m->rope = (struct rope_params){
        .n_rot = (int)hp->n_rot,
        .base = hp->rope_base,
        .freq_scale = 1.0f / hp->rope_scale,
        .style = m->arch->rope,
        .freq_factors = m->rope_freqs.data,
    };
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return pb_fail(err, PB_ENOMEM, "out of memory for %" PRId64 " layers", hp->n_layer);
    for (int l = 0; l < (int)hp->n_layer; l++)
        if ((rc = bind_layer(m, l, err)))
            return rc;
    return PB_OK;
}

#define PACK_STEP_BYTES (8u << 20)

/* The matrices of the model, output last. */
static int list_matrices(struct model *m, struct pb_tensor **out)
{
    int n = 0;
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        struct layer_weights *lw = &m->layers[l];
        struct pb_tensor *ws[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->ffn_gate, &lw->ffn_up, &lw->ffn_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            out[n++] = ws[i];
    }
    out[n++] = &m->output;
    return n;
}

/* Chooses every matrix's kernels and, where they read a repacked layout,
 * repacks it into one large allocation, releasing the file's pages of
 * each tensor once copied: memory holds one copy of the weights. */
static int prepare_matrices(struct model *m, struct pool *shared, pb_err *err)
{
    const int n_max = 7 * (int)m->hp.n_layer + 1;
    struct pb_tensor **mats = malloc((size_t)n_max * sizeof *mats);
    size_t *bytes = malloc((size_t)n_max * sizeof *bytes);
    int rc = PB_OK;
    if (!mats || !bytes) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    const int n = list_matrices(m, mats);
    size_t total = 0;
    for (int i = 0; i < n && rc == PB_OK; i++) {
        rc = op_matrix_plan(mats[i], kern_level(), &bytes[i], err);
        total += (bytes[i] + 63) / 64 * 64;
    }
    if (rc || total == 0)
        goto done;
    m->packed = sys_alloc_large(total);
    if (!m->packed) {
        rc = pb_fail(err, PB_ENOMEM, "%s: cannot allocate %zu bytes for the repacked weights", gguf_name(m->file),
                     total);
        goto done;
    }
    m->packed_bytes = total;
    struct pool *pool = shared, *own = NULL;
    if (!pool && (rc = pool_create(pool_cpu_count(), &own, err)))
        goto done;
    if (!pool)
        pool = own;
    uint8_t *at = m->packed;
    for (int i = 0; i < n; i++) {
        if (!bytes[i])
            continue;
        /* in steps of at most PACK_STEP_BYTES of the file's rows, each
         * released once copied: at no time are more than a step's bytes
         * held twice (the output matrix alone can be 50+ MB) */
        const struct pb_tensor *t = mats[i];
        const int64_t n_groups = op_matrix_groups(t), rows_per_group = t->ne[1] / n_groups;
        const size_t group_bytes = t->row_bytes * (size_t)rows_per_group;
        int64_t step = (int64_t)(PACK_STEP_BYTES / (group_bytes ? group_bytes : 1));
        step = step < 1 ? 1 : step;
        /* token_embd stays readable when it is also the output */
        const bool release = t->data != m->tok_embd.data;
        for (int64_t g0 = 0; g0 < n_groups; g0 += step) {
            const int64_t g1 = g0 + step < n_groups ? g0 + step : n_groups;
            op_matrix_pack_groups(pool, t, at, g0, g1);
            if (release)
                gguf_release(m->file, (const uint8_t *)t->data + (size_t)g0 * group_bytes,
                             (size_t)(g1 - g0) * group_bytes);
        }
        op_matrix_use_packed(mats[i], at);
        at += (bytes[i] + 63) / 64 * 64;
    }
    pool_free(own);
done:
    free(mats);
    free(bytes);
    return rc;
}

/* Reads the shape and binds every tensor (nothing repacked yet). */
static int bind_model(struct model *m, const char *path, pb_err *err)
{
    int rc;
    /* an unknown architecture is reported as such, before its keys are
     * found missing */
    struct gguf_str arch;
    char known[128];
    if (gguf_get_str(m->file, "general.architecture", &arch, NULL) == 1 && arch.len < sizeof m->hp.arch) {
        char name[sizeof m->hp.arch] = {0};
        memcpy(name, arch.data, arch.len);
        if (!arch_find(name))
            return pb_fail(err, PB_EUNSUPPORTED, "%s: architecture '%s' is not supported (supported: %s)", path,
                           name, arch_names(known, sizeof known));
    }
    if ((rc = model_hparams_read(m->file, &m->hp, err)))
        return rc;
    m->arch = arch_find(m->hp.arch);
    if (!m->arch)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: architecture '%s' is not supported", path, m->hp.arch);
    if (m->hp.n_vocab <= 0 || m->hp.n_vocab > INT32_MAX)
        return pb_fail(err, PB_EFORMAT, "%s: token_embd.weight is missing or has no rows", path);
    return bind_all(m, err);
}

/* Loads the model from the file m->file just opened (rc: how that went). */
static int finish_load(struct model *m, int rc, const char *name, struct pool *pool, struct model **out, pb_err *err)
{
    if (rc == PB_OK)
        rc = bind_model(m, name, err);
    if (rc == PB_OK)
        rc = prepare_matrices(m, pool, err);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return PB_OK;
}

int model_load(const char *path, struct pool *pool, struct model **out, pb_err *err)
{
    *out = NULL;
    struct model *m = calloc(1, sizeof *m);
    if (!m)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    return finish_load(m, gguf_open(path, &m->file, err), path, pool, out, err);
}

int model_load_fd(int fd, const char *name, bool discardable, struct pool *pool, struct model **out, pb_err *err)
{
    *out = NULL;
    struct model *m = calloc(1, sizeof *m);
    if (!m)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    return finish_load(m, gguf_open_fd(fd, name, discardable, &m->file, err), name, pool, out, err);
}

void model_free(struct model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    sys_free_large(m->packed, m->packed_bytes);
    gguf_close(m->file);
    free(m);
}

const struct model_hparams *model_hparams(const struct model *m) { return &m->hp; }
const struct gguf_file *model_gguf(const struct model *m) { return m->file; }
uint64_t model_weight_bytes(const struct model *m) { return m->weight_bytes; }

/* ---- contexts ---- */

static size_t max_matmul_scratch(const struct model *m, int n_batch)
{
    size_t max = op_matmul_scratch(&m->output, n_batch); /* a batch's sequences may all want logits */
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        /* the products of one input share the scratch (layers.c) */
        size_t s[4] = {
            op_matmul_scratch(&lw->wq, n_batch) + op_matmul_scratch(&lw->wk, n_batch) +
                op_matmul_scratch(&lw->wv, n_batch),
            op_matmul_scratch(&lw->wo, n_batch),
            op_matmul_scratch(&lw->ffn_gate, n_batch) + op_matmul_scratch(&lw->ffn_up, n_batch),
            op_matmul_scratch(&lw->ffn_down, n_batch),
        };
        for (int i = 0; i < 4; i++)
            if (s[i] > max)
                max = s[i];
    }
    return max;
}

/* Bytes of n floats as alloc_floats reserves them. */
static size_t float_bytes(size_t n)
{
    return (n * sizeof(float) + 63) / 64 * 64;
}

static float *alloc_floats(size_t n)
{
    return aligned_alloc(64, float_bytes(n));
}

/* What a context allocates, computed once for model_ctx_create and for
 * the memory estimate (so the two cannot drift apart). */
struct ctx_plan {
    int64_t n_ctx;
    int n_seq, n_batch, n_threads;
    size_t x, q, ff, kvd;  /* floats per batch row: residual, queries, FFN, new K/V */
    size_t att_scratch;    /* floats, all threads */
    size_t act;            /* bytes of quantized activations */
    uint64_t kv;           /* both caches of all sequences at full context */
    uint64_t compute;      /* everything else */
};

/* The plan for shape hp; act_row(n_batch) gives the bytes of quantized
 * activations the products of a batch need (from the matrices' kernels,
 * or from the shape alone). */
static int ctx_plan_shape(const struct model_hparams *hp, size_t act_bytes, const struct model_ctx_params *p,
                          struct ctx_plan *cp, pb_err *err)
{
    if (p->n_ctx < 1 || p->n_ctx > (1 << 24))
        return pb_fail(err, PB_EINVAL, "context size %" PRId64 " out of range 1..%d", p->n_ctx, 1 << 24);
    if (p->n_batch < 1)
        return pb_fail(err, PB_EINVAL, "batch size %d must be positive", p->n_batch);
    if (p->n_seq < 0 || p->n_seq > 4096)
        return pb_fail(err, PB_EINVAL, "%d sequences out of range 1..4096", p->n_seq);
    if (!p->pool && (p->n_threads < 1 || p->n_threads > 1024))
        return pb_fail(err, PB_EINVAL, "thread count %d out of range 1..1024", p->n_threads);
    if (p->kv_type == PB_KV_Q8_0 && hp->head_dim % 32 != 0)
        return pb_fail(err, PB_EINVAL, "a q8_0 KV cache needs a head size that is a multiple of 32 (this model's is "
                       "%" PRId64 "); use f16 or f32", hp->head_dim);
    memset(cp, 0, sizeof *cp);
    cp->n_ctx = p->n_ctx;
    cp->n_seq = p->n_seq > 0 ? p->n_seq : 1;
    /* one sequence cannot fill a batch beyond its context; several can */
    cp->n_batch = p->n_batch;
    if (cp->n_seq == 1 && cp->n_batch > p->n_ctx)
        cp->n_batch = (int)p->n_ctx;
    cp->n_threads = p->pool ? pool_size(p->pool) : p->n_threads;
    cp->x = (size_t)hp->n_embd;
    cp->q = (size_t)(hp->n_head * hp->head_dim);
    cp->ff = (size_t)hp->n_ff;
    cp->kvd = (size_t)(hp->n_head_kv * hp->head_dim);
    struct kern_attn_args shape = {.n_head = (int)hp->n_head, .n_head_kv = (int)hp->n_head_kv,
                                   .head_dim = (int)hp->head_dim};
    cp->att_scratch = (size_t)cp->n_threads * op_attention_scratch(&shape);
    cp->act = (act_bytes + 63) / 64 * 64 + 64;
    cp->kv = (uint64_t)cp->n_seq * model_kv_bytes(hp, cp->n_ctx, (enum pb_kv_type)p->kv_type);
    const size_t B = (size_t)cp->n_batch;
    cp->compute = 2 * float_bytes(B * cp->x) + 2 * float_bytes(B * cp->q) + 2 * float_bytes(B * cp->ff) +
                  2 * float_bytes(B * cp->kvd) + float_bytes(cp->att_scratch) + cp->act +
                  B * (sizeof(struct ctx_seg) + sizeof(struct kern_attn_args)) +
                  (size_t)cp->n_seq * ((size_t)cp->n_ctx * sizeof(int32_t) + sizeof(int64_t) + sizeof(struct kv_cache));
    return PB_OK;
}

/* The batch size a context of p will use (ctx_plan_shape's rule). */
static int batch_of(const struct model_ctx_params *p)
{
    return p->n_seq <= 1 && p->n_batch > p->n_ctx ? (int)p->n_ctx : p->n_batch;
}

static int ctx_plan(const struct model *m, const struct model_ctx_params *p, struct ctx_plan *cp, pb_err *err)
{
    if (p->n_batch < 1)
        return pb_fail(err, PB_EINVAL, "batch size %d must be positive", p->n_batch);
    return ctx_plan_shape(&m->hp, max_matmul_scratch(m, batch_of(p)), p, cp, err);
}

uint64_t model_kv_bytes(const struct model_hparams *hp, int64_t n_ctx, enum pb_kv_type type)
{
    const int64_t kvd = hp->n_head_kv * hp->head_dim;
    int64_t local = 0;
    if (hp->n_swa > 0 && hp->swa_pattern > 0)
        for (int64_t l = 0; l < hp->n_layer; l++)
            local += (l + 1) % hp->swa_pattern != 0;
    const int64_t win = hp->n_swa < n_ctx ? hp->n_swa : n_ctx;
    return kv_bytes((int)(hp->n_layer - local), n_ctx, kvd, type) + (local ? kv_bytes((int)local, win, kvd, type) : 0);
}

int model_ctx_create(const struct model *m, const struct model_ctx_params *p, struct model_ctx **out, pb_err *err)
{
    *out = NULL;
    const struct model_hparams *hp = &m->hp;
    struct ctx_plan plan;
    int rc = ctx_plan(m, p, &plan, err);
    if (rc)
        return rc;
    struct model_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    c->m = m;
    c->n_ctx = plan.n_ctx;
    c->n_seq = plan.n_seq;
    c->n_batch = plan.n_batch;
    if (p->pool)
        c->pool = p->pool;
    else if ((rc = pool_create(p->n_threads, &c->own_pool, err)))
        goto fail;
    else
        c->pool = c->own_pool;
    c->kv = calloc((size_t)c->n_seq, sizeof *c->kv);
    c->seq_pos = calloc((size_t)c->n_seq, sizeof *c->seq_pos);
    c->tokens = malloc((size_t)c->n_seq * (size_t)c->n_ctx * sizeof *c->tokens);
    c->segs = calloc((size_t)c->n_batch, sizeof *c->segs);
    c->attn = calloc((size_t)c->n_batch, sizeof *c->attn);
    if (!c->kv || !c->seq_pos || !c->tokens || !c->segs || !c->attn) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for %d sequences", c->n_seq);
        goto fail;
    }
    for (int s = 0; s < c->n_seq; s++)
        if ((rc = kv_alloc(&c->kv[s], (int)hp->n_layer, c->n_ctx, (int64_t)plan.kvd, (enum pb_kv_type)p->kv_type, err)))
            goto fail;
    const size_t B = (size_t)c->n_batch;
    c->x = alloc_floats(B * plan.x);
    c->xb = alloc_floats(B * plan.x);
    c->q = alloc_floats(B * plan.q);
    c->att = alloc_floats(B * plan.q);
    c->gate = alloc_floats(B * plan.ff);
    c->up = alloc_floats(B * plan.ff);
    c->k_new = alloc_floats(B * plan.kvd);
    c->v_new = alloc_floats(B * plan.kvd);
    c->att_scratch = alloc_floats(plan.att_scratch);
    c->act = aligned_alloc(64, plan.act);
    if (!c->x || !c->xb || !c->q || !c->att || !c->gate || !c->up || !c->att_scratch || !c->act || !c->k_new ||
        !c->v_new) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for activation buffers (batch %d)", c->n_batch);
        goto fail;
    }
    *out = c;
    return PB_OK;
fail:
    model_ctx_free(c);
    return rc;
}

void model_ctx_free(struct model_ctx *c)
{
    if (!c)
        return;
    pool_free(c->own_pool);
    for (int s = 0; c->kv && s < c->n_seq; s++)
        kv_free(&c->kv[s]);
    free(c->kv);
    free(c->seq_pos);
    free(c->tokens);
    free(c->segs);
    free(c->attn);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->att);
    free(c->gate);
    free(c->up);
    free(c->att_scratch);
    free(c->k_new);
    free(c->v_new);
    free(c->act);
    free(c);
}

int64_t model_ctx_n_ctx(const struct model_ctx *c) { return c->n_ctx; }

int64_t model_seq_pos(const struct model_ctx *c, int seq)
{
    return seq >= 0 && seq < c->n_seq ? c->seq_pos[seq] : 0;
}

const int32_t *model_seq_tokens(const struct model_ctx *c, int seq)
{
    return seq >= 0 && seq < c->n_seq ? c->tokens + (size_t)seq * (size_t)c->n_ctx : NULL;
}

void model_seq_truncate(struct model_ctx *c, int seq, int64_t pos)
{
    if (seq >= 0 && seq < c->n_seq && pos >= 0 && pos < c->seq_pos[seq])
        c->seq_pos[seq] = pos;
}

int model_seq_copy(struct model_ctx *c, int dst, int src, int64_t n, pb_err *err)
{
    if (dst < 0 || dst >= c->n_seq || src < 0 || src >= c->n_seq || dst == src)
        return pb_fail(err, PB_EINVAL, "cannot copy sequence %d to %d (%d sequences)", src, dst, c->n_seq);
    if (n < 0 || n > c->seq_pos[src])
        return pb_fail(err, PB_EINVAL, "sequence %d holds %" PRId64 " positions, not %" PRId64, src,
                       c->seq_pos[src], n);
    kv_copy(&c->kv[dst], &c->kv[src], n);
    memcpy(c->tokens + (size_t)dst * (size_t)c->n_ctx, c->tokens + (size_t)src * (size_t)c->n_ctx,
           (size_t)n * sizeof *c->tokens);
    c->seq_pos[dst] = n;
    return PB_OK;
}

uint64_t model_ctx_kv_bytes(const struct model_ctx *c)
{
    const struct kv_cache *kv = &c->kv[0];
    return (uint64_t)c->n_seq * kv_bytes(kv->n_layer, kv->n_ctx, kv->kv_dim, kv->type);
}

/* ---- memory ---- */

/* The matrices as they are resident: repacked ones in their own memory,
 * the others and the embedding table (read row by row, counted whole) in
 * the mapped file. */
static uint64_t resident_weights(const struct model *m, const size_t *packed, int n_mats,
                                 struct pb_tensor *const *mats)
{
    uint64_t total = (uint64_t)m->tok_embd.row_bytes * (uint64_t)m->tok_embd.ne[1];
    for (int i = 0; i < n_mats; i++) {
        if (packed[i])
            total += (packed[i] + 63) / 64 * 64;
        else if (mats[i]->data != m->tok_embd.data)
            total += (uint64_t)mats[i]->row_bytes * (uint64_t)mats[i]->ne[1];
    }
    return total;
}

static void sum_parts(struct model_mem *mm)
{
    mm->total = mm->weights + mm->vectors + mm->kv + mm->compute;
}

/* The owned 1-D tensors' bytes. */
static uint64_t vector_bytes(const struct model *m)
{
    uint64_t total = 0;
    const struct pb_tensor *vs[] = {&m->out_norm, &m->rope_freqs};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        if (vs[i]->data)
            total += (uint64_t)vs[i]->ne[0] * sizeof(float);
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        const struct pb_tensor *ls[] = {&lw->attn_norm, &lw->ffn_norm, &lw->bq, &lw->bk, &lw->bv, &lw->q_norm,
                                        &lw->k_norm};
        for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++)
            if (ls[i]->data)
                total += (uint64_t)ls[i]->ne[0] * sizeof(float);
    }
    return total;
}

/* Weights, vectors and the context's parts of m (matrices planned for the
 * kernels in use) for context parameters p. */
static int mem_of(struct model *m, const struct model_ctx_params *p, struct model_mem *mm, pb_err *err)
{
    memset(mm, 0, sizeof *mm);
    const int n_max = 7 * (int)m->hp.n_layer + 1;
    struct pb_tensor **mats = malloc((size_t)n_max * sizeof *mats);
    size_t *bytes = calloc((size_t)n_max, sizeof *bytes);
    int rc = PB_OK;
    if (!mats || !bytes) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    const int n = list_matrices(m, mats);
    for (int i = 0; i < n && rc == PB_OK; i++) {
        if (mats[i]->mm) /* loaded: already planned (and perhaps packed) */
            bytes[i] = mats[i]->mm->pack ? mats[i]->mm->packed_size(mats[i]->ne[0], mats[i]->ne[1]) : 0;
        else
            rc = op_matrix_plan(mats[i], kern_level(), &bytes[i], err);
    }
    if (rc)
        goto done;
    mm->weights = resident_weights(m, bytes, n, mats);
    mm->vectors = vector_bytes(m);
    struct ctx_plan plan;
    if ((rc = ctx_plan(m, p, &plan, err)))
        goto done;
    mm->kv = plan.kv;
    mm->compute = plan.compute;
    sum_parts(mm);
done:
    free(mats);
    free(bytes);
    return rc;
}

int model_mem_shape(const struct model_hparams *hp, uint64_t weight_bytes, double act_bytes_per_value,
                    const struct model_ctx_params *p, struct model_mem *out, pb_err *err)
{
    memset(out, 0, sizeof *out);
    if (p->n_batch < 1)
        return pb_fail(err, PB_EINVAL, "batch size %d must be positive", p->n_batch);
    /* the widest products of one input: Q, K and V share theirs (3 x
     * n_embd values), the output projection reads n_head x head_dim, the
     * FFN's down projection n_ff */
    const double e = (double)hp->n_embd, q = (double)(hp->n_head * hp->head_dim), f = (double)hp->n_ff;
    double widest = 3 * e > q ? 3 * e : q;
    widest = f > widest ? f : widest;
    const size_t act = (size_t)((double)batch_of(p) * (widest * act_bytes_per_value + 3 * 64));
    struct ctx_plan plan;
    int rc = ctx_plan_shape(hp, act, p, &plan, err);
    if (rc)
        return rc;
    out->weights = weight_bytes;
    out->kv = plan.kv;
    out->compute = plan.compute;
    sum_parts(out);
    return PB_OK;
}

int model_mem(const struct model *m, const struct model_ctx_params *p, struct model_mem *out, pb_err *err)
{
    /* planning a loaded model's matrices changes nothing: they have their kernels */
    return mem_of((struct model *)m, p, out, err);
}

int model_mem_estimate(const struct gguf_file *f, const struct model_ctx_params *p, struct model_hparams *hp,
                       struct model_mem *out, pb_err *err)
{
    struct model *m = calloc(1, sizeof *m);
    if (!m)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    m->file = (struct gguf_file *)f; /* borrowed: bind_model reads it, and releases the pages of vectors it copies */
    int rc = bind_model(m, gguf_name(f), err);
    if (!rc)
        rc = mem_of(m, p, out, err);
    if (!rc && hp)
        *hp = m->hp;
    m->file = NULL;
    model_free(m);
    return rc;
}

static int check_tokens(const struct model_ctx *c, const int32_t *tokens, int n, pb_err *err)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->m->hp.n_vocab)
            return pb_fail(err, PB_EINVAL, "token id %" PRId32 " out of range (vocabulary has %" PRId64 " tokens)",
                           tokens[i], c->m->hp.n_vocab);
    return PB_OK;
}

int model_eval_batch(struct model_ctx *c, const int32_t *tokens, const struct model_seg *segs, int n_segs,
                     float *logits, pb_err *err)
{
    if (n_segs <= 0)
        return pb_fail(err, PB_EINVAL, "nothing to evaluate (0 segments)");
    int n = 0, want = 0;
    for (int s = 0; s < n_segs; s++) {
        const struct model_seg *g = &segs[s];
        if (g->seq < 0 || g->seq >= c->n_seq)
            return pb_fail(err, PB_EINVAL, "sequence %d out of range (%d sequences)", g->seq, c->n_seq);
        if (g->n <= 0)
            return pb_fail(err, PB_EINVAL, "segment %d of the batch has no tokens", s);
        for (int e = 0; e < s; e++)
            if (segs[e].seq == g->seq)
                return pb_fail(err, PB_EINVAL, "sequence %d appears twice in one batch", g->seq);
        if ((int64_t)g->n > c->n_ctx - c->seq_pos[g->seq])
            return pb_fail(err, PB_ERANGE,
                           "context full: sequence %d has %" PRId64 " cached + %d new tokens, more than its context "
                           "of %" PRId64, g->seq, c->seq_pos[g->seq], g->n, c->n_ctx);
        if (n > c->n_batch - g->n)
            return pb_fail(err, PB_ERANGE, "a batch holds at most %d tokens", c->n_batch);
        n += g->n;
        want += g->logits;
    }
    int rc = check_tokens(c, tokens, n, err);
    if (rc)
        return rc;
    for (int s = 0, off = 0; s < n_segs; off += segs[s].n, s++)
        c->segs[s] = (struct ctx_seg){segs[s].seq, off, segs[s].n, c->seq_pos[segs[s].seq], segs[s].logits};
    c->n_segs = n_segs;
    if ((rc = c->m->arch->forward(c, tokens, n, want && logits ? logits : NULL, err)))
        return rc;
    for (int s = 0, off = 0; s < n_segs; off += segs[s].n, s++) {
        const int q = segs[s].seq;
        memcpy(c->tokens + (size_t)q * (size_t)c->n_ctx + c->seq_pos[q], tokens + off,
               (size_t)segs[s].n * sizeof *tokens);
        c->seq_pos[q] += segs[s].n;
    }
    return PB_OK;
}

int model_eval(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err)
{
    if (n <= 0)
        return pb_fail(err, PB_EINVAL, "nothing to evaluate (0 tokens)");
    int rc = check_tokens(c, tokens, n, err);
    if (rc)
        return rc;
    if ((int64_t)n > c->n_ctx - c->seq_pos[0])
        return pb_fail(err, PB_ERANGE, "context full: %" PRId64 " cached + %d new tokens exceed the context size %" PRId64,
                       c->seq_pos[0], n, c->n_ctx);
    for (int i = 0; i < n; i += c->n_batch) {
        int k = n - i < c->n_batch ? n - i : c->n_batch;
        struct model_seg seg = {.seq = 0, .n = k, .logits = i + k == n && logits};
        if ((rc = model_eval_batch(c, tokens + i, &seg, 1, logits, err)))
            return rc;
    }
    return PB_OK;
}
