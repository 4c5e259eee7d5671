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

/* Copies a 1-D tensor (or the rows of a small 2-D one, such as per-expert
 * biases) into an owned F32 array, converting it if needed, and releases
 * the file's pages it filled: after loading, the file is read only for
 * embedding rows. (Read in place, the norms kept ~60 MB of a TinyLlama
 * file resident: whole large folios of the page cache around each one,
 * measured with /proc/PID/pagemap.) */
static int own_as_f32(struct model *m, struct pb_tensor *t, const struct pb_type_traits *tr, pb_err *err)
{
    float **owned = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *owned);
    if (!owned)
        return pb_fail(err, PB_ENOMEM, "out of memory converting '%s'", t->name);
    m->owned = owned;
    const int64_t n = t->ne[0] * t->ne[1];
    float *buf = malloc((size_t)n * sizeof *buf);
    if (!buf)
        return pb_fail(err, PB_ENOMEM, "out of memory converting '%s'", t->name);
    tr->to_float(t->data, buf, n);
    gguf_release(m->file, t->data, t->row_bytes * (size_t)t->ne[1]);
    m->owned[m->n_owned++] = buf;
    t->data = buf;
    t->type = PB_TYPE_F32;
    t->row_bytes = (size_t)t->ne[0] * sizeof(float);
    return PB_OK;
}

/* out = rows [row0, row0 + n_rows) of tensor t (stored as ne[0]-long rows,
 * higher dimensions flattened into rows), checked for its use. */
static int view_of(struct model *m, const struct gguf_tensor *t, enum bind_kind kind, int64_t row0, int64_t n_rows,
                   struct pb_tensor *out, pb_err *err)
{
    const char *file = gguf_name(m->file);
    const struct pb_type_traits *tr = pb_type_get(t->type);
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->type = t->type;
    out->ne[0] = t->ne[0];
    out->ne[1] = n_rows;
    out->ne[2] = out->ne[3] = 1;
    out->row_bytes = pb_row_size(t->type, t->ne[0]);
    out->data = (const uint8_t *)t->data + (size_t)row0 * out->row_bytes;
    if (((uintptr_t)out->data % tr->align) != 0)
        return pb_fail(err, PB_EFORMAT, "%s: tensor '%s' data is not aligned to %zu bytes", file, t->name, tr->align);
    if (kind == BIND_MATRIX && !kern_dot_for(t->type))
        return pb_fail(err, PB_EUNSUPPORTED, "%s: tensor '%s' has type %s, which plumb cannot multiply yet", file,
                       t->name, tr->name);
    if (kind != BIND_MATRIX && !tr->to_float)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: tensor '%s' has type %s, which plumb cannot read yet", file,
                       t->name, tr->name);
    if (kind == BIND_VECTOR)
        return own_as_f32(m, out, tr, err);
    return PB_OK;
}

/* Finds tensor `name` and checks its shape against want (unused dims 1).
 * An absent tensor is an error when required, else *t is NULL. */
static int find_shaped(struct model *m, const char *name, bool required, const int64_t want[4],
                       const struct gguf_tensor **t, pb_err *err)
{
    const char *file = gguf_name(m->file);
    *t = gguf_find_tensor(m->file, name);
    if (!*t)
        return required ? pb_fail(err, PB_EFORMAT, "%s: missing tensor '%s'", file, name) : PB_OK;
    for (int d = 0; d < 4; d++)
        if ((*t)->ne[d] != want[d])
            return pb_fail(err, PB_EFORMAT,
                           "%s: tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                           "], expected [%" PRId64 ", %" PRId64 ", %" PRId64 "]",
                           file, name, (*t)->ne[0], (*t)->ne[1], (*t)->ne[2], (*t)->ne[3], want[0], want[1], want[2]);
    return PB_OK;
}

/* Binds tensor `name` of shape [ne0] (ne1 == 0) or [ne0, ne1] to out.
 * An absent optional tensor leaves out->data NULL. */
static int bind(struct model *m, const char *name, enum bind_kind kind, bool required, int64_t ne0, int64_t ne1,
                struct pb_tensor *out, pb_err *err)
{
    const int64_t want[4] = {ne0, ne1 ? ne1 : 1, 1, 1};
    const struct gguf_tensor *t;
    memset(out, 0, sizeof *out);
    int rc = find_shaped(m, name, required, want, &t, err);
    return rc || !t ? rc : view_of(m, t, kind, 0, want[1], out, err);
}

/* Binds the n_parts row ranges of a fused matrix (rows[i] rows each, in
 * order) to outs[i]; false in *found when the tensor is absent. */
static int bind_split(struct model *m, const char *name, int64_t ne0, const int64_t *rows, int n_parts,
                      struct pb_tensor *const *outs, bool *found, pb_err *err)
{
    int64_t total = 0;
    for (int i = 0; i < n_parts; i++)
        total += rows[i];
    const int64_t want[4] = {ne0, total, 1, 1};
    const struct gguf_tensor *t;
    int rc = find_shaped(m, name, false, want, &t, err);
    *found = t != NULL;
    for (int i = 0, row = 0; !rc && t && i < n_parts; row += (int)rows[i], i++)
        rc = view_of(m, t, BIND_MATRIX, row, rows[i], outs[i], err);
    return rc;
}

/* Binds the 3-D expert tensor `name` ([ne0, ne1, n_expert]) as one view
 * of ne1 rows per expert. */
static int bind_experts(struct model *m, const char *name, int64_t ne0, int64_t ne1, struct pb_tensor *views,
                        pb_err *err)
{
    const int64_t want[4] = {ne0, ne1, m->hp.n_expert, 1};
    const struct gguf_tensor *t;
    int rc = find_shaped(m, name, true, want, &t, err);
    for (int64_t e = 0; !rc && e < m->hp.n_expert; e++)
        rc = view_of(m, t, BIND_MATRIX, e * ne1, ne1, &views[e], err);
    return rc;
}

static uint64_t matrix_bytes(const struct pb_tensor *t)
{
    return t->data ? t->row_bytes * (uint64_t)t->ne[1] : 0;
}

/* The experts of layer l: router, its bias, the 3-D tensors as views,
 * their biases; *bytes receives the experts' matrix bytes. */
static int bind_moe(struct model *m, int l, struct pb_tensor *views, uint64_t *bytes, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    struct layer_weights *lw = &m->layers[l];
    const int64_t E = hp->n_embd, F = hp->n_ff_exp, X = hp->n_expert;
    const bool oai = m->arch->needs & ARCH_OAI;
    char name[96];
    int rc;
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d.%s", l, suffix), name)
    lw->gate_exps = views;
    lw->up_exps = views + X;
    lw->down_exps = views + 2 * X;
    if ((rc = bind(m, NAME("ffn_gate_inp.weight"), BIND_MATRIX, true, E, X, &lw->ffn_gate_inp, err)) ||
        (rc = bind(m, NAME("ffn_gate_inp.bias"), BIND_VECTOR, oai, X, 0, &lw->ffn_gate_inp_b, err)) ||
        (rc = bind_experts(m, NAME("ffn_gate_exps.weight"), E, F, lw->gate_exps, err)) ||
        (rc = bind_experts(m, NAME("ffn_up_exps.weight"), E, F, lw->up_exps, err)) ||
        (rc = bind_experts(m, NAME("ffn_down_exps.weight"), F, E, lw->down_exps, err)) ||
        (rc = bind(m, NAME("ffn_gate_exps.bias"), BIND_VECTOR, oai, F, X, &lw->gate_exps_b, err)) ||
        (rc = bind(m, NAME("ffn_up_exps.bias"), BIND_VECTOR, oai, F, X, &lw->up_exps_b, err)) ||
        (rc = bind(m, NAME("ffn_down_exps.bias"), BIND_VECTOR, oai, E, X, &lw->down_exps_b, err)))
        return rc;
#undef NAME
    *bytes = 0;
    for (int64_t e = 0; e < 3 * X; e++)
        *bytes += matrix_bytes(&views[e]);
    m->weight_bytes += matrix_bytes(&lw->ffn_gate_inp);
    return PB_OK;
}

static int bind_layer(struct model *m, int l, uint64_t *expert_bytes, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    struct layer_weights *lw = &m->layers[l];
    const int64_t E = hp->n_embd, QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    const unsigned needs = m->arch->needs;
    const bool bias = needs & ARCH_QKV_BIAS, qk_norm = needs & ARCH_QK_NORM, post = needs & ARCH_POST_NORMS,
               oai = needs & ARCH_OAI, moe = hp->n_expert > 0;
    char name[96];
    int rc;
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d.%s", l, suffix), name)
    /* Q, K and V: three tensors, or one fused (Phi-3) */
    bool fused = false;
    const int64_t qkv_rows[3] = {QD, KVD, KVD};
    struct pb_tensor *qkv[3] = {&lw->wq, &lw->wk, &lw->wv};
    if ((rc = bind_split(m, NAME("attn_qkv.weight"), E, qkv_rows, 3, qkv, &fused, err)))
        return rc;
    if (!fused && ((rc = bind(m, NAME("attn_q.weight"), BIND_MATRIX, true, E, QD, &lw->wq, err)) ||
                   (rc = bind(m, NAME("attn_k.weight"), BIND_MATRIX, true, E, KVD, &lw->wk, err)) ||
                   (rc = bind(m, NAME("attn_v.weight"), BIND_MATRIX, true, E, KVD, &lw->wv, err))))
        return rc;
    struct {
        const char *suffix;
        enum bind_kind kind;
        bool required;
        int64_t ne0, ne1;
        struct pb_tensor *out;
    } specs[] = {
        {"attn_norm.weight", BIND_VECTOR, true, E, 0, &lw->attn_norm},
        {"attn_output.weight", BIND_MATRIX, true, QD, E, &lw->wo},
        {"attn_q.bias", BIND_VECTOR, bias, QD, 0, &lw->bq},
        {"attn_k.bias", BIND_VECTOR, bias, KVD, 0, &lw->bk},
        {"attn_v.bias", BIND_VECTOR, bias, KVD, 0, &lw->bv},
        {"attn_output.bias", BIND_VECTOR, oai, E, 0, &lw->bo},
        {"attn_q_norm.weight", BIND_VECTOR, qk_norm, hp->head_dim, 0, &lw->q_norm},
        {"attn_k_norm.weight", BIND_VECTOR, qk_norm, hp->head_dim, 0, &lw->k_norm},
        {"attn_sinks.weight", BIND_VECTOR, oai, hp->n_head, 0, &lw->sinks},
        {post ? "post_attention_norm.weight" : NULL, BIND_VECTOR, true, E, 0, &lw->attn_post_norm},
        /* gpt-oss's norm before the FFN is its post_attention_norm */
        {oai ? "post_attention_norm.weight" : "ffn_norm.weight", BIND_VECTOR, true, E, 0, &lw->ffn_norm},
        {"post_ffw_norm.weight", BIND_VECTOR, post, E, 0, &lw->ffn_post_norm},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (specs[i].suffix && (rc = bind(m, NAME(specs[i].suffix), specs[i].kind, specs[i].required, specs[i].ne0,
                                          specs[i].ne1, specs[i].out, err)))
            return rc;
    if (moe) {
        if ((rc = bind_moe(m, l, m->exp_views + (size_t)l * 3 * (size_t)hp->n_expert, expert_bytes, err)))
            return rc;
    } else {
        /* gate and up: two tensors, or one with the gate's rows first (Phi-3) */
        const int64_t up_rows[2] = {hp->n_ff, hp->n_ff};
        struct pb_tensor *gu[2] = {&lw->ffn_gate, &lw->ffn_up};
        if ((rc = bind(m, NAME("ffn_gate.weight"), BIND_MATRIX, false, E, hp->n_ff, &lw->ffn_gate, err)))
            return rc;
        if (lw->ffn_gate.data) {
            rc = bind(m, NAME("ffn_up.weight"), BIND_MATRIX, true, E, hp->n_ff, &lw->ffn_up, err);
        } else {
            if ((rc = bind_split(m, NAME("ffn_up.weight"), E, up_rows, 2, gu, &fused, err)))
                return rc;
            if (!fused)
                rc = pb_fail(err, PB_EFORMAT, "%s: missing tensor 'blk.%d.ffn_gate.weight' (and no ffn_up.weight "
                             "of [%" PRId64 ", %" PRId64 "] holding gate and up)", gguf_name(m->file), l, E,
                             2 * hp->n_ff);
        }
        if (rc || (rc = bind(m, NAME("ffn_down.weight"), BIND_MATRIX, true, hp->n_ff, E, &lw->ffn_down, err)))
            return rc;
    }
#undef NAME
    const struct pb_tensor *mats[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->ffn_gate, &lw->ffn_up, &lw->ffn_down};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        m->weight_bytes += matrix_bytes(mats[i]);
    return PB_OK;
}

/* The RoPE and attention conventions of the family, checked against what
 * plumb can honour. */
static int check_rope(struct model *m, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    const char *file = gguf_name(m->file);
    if (hp->rope_scaling == ROPE_SCALING_OTHER)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: %s.rope.scaling.type is not one plumb knows (none, linear, yarn, "
                       "longrope)", file, hp->arch);
    if (hp->rope_scaling == ROPE_SCALING_YARN && hp->yarn_log_mul != 0)
        return pb_fail(err, PB_EUNSUPPORTED, "%s: %s.rope.scaling.yarn_log_multiplier is %g: YaRN with an "
                       "attention-scale multiplier (DeepSeek's) is not supported", file, hp->arch,
                       (double)hp->yarn_log_mul);
    if ((m->rope_long.data != NULL) != (m->rope_short.data != NULL))
        return pb_fail(err, PB_EFORMAT, "%s: rope_factors_long.weight and rope_factors_short.weight come together",
                       file);
    if (m->rope_long.data && m->rope_freqs.data)
        return pb_fail(err, PB_EFORMAT, "%s: both rope_freqs.weight and LongRoPE factors", file);
    if (hp->rope_scaling == ROPE_SCALING_LONGROPE && !m->rope_long.data)
        return pb_fail(err, PB_EFORMAT, "%s: LongRoPE scaling without rope_factors_long.weight", file);
    return PB_OK;
}

/* An encoder's tensors (bert): embeddings with positions, token types and
 * their LayerNorm; per layer Q/K/V/output with biases, two LayerNorms
 * with biases, an up/down FFN with biases; no output head. */
static int bind_encoder(struct model *m, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    int rc;
    if ((rc = bind(m, "token_embd.weight", BIND_TABLE, true, E, hp->n_vocab, &m->tok_embd, err)) ||
        (rc = bind(m, "position_embd.weight", BIND_TABLE, true, E, hp->n_ctx_train, &m->pos_embd, err)) ||
        (rc = bind(m, "token_embd_norm.weight", BIND_VECTOR, true, E, 0, &m->embd_norm, err)) ||
        (rc = bind(m, "token_embd_norm.bias", BIND_VECTOR, true, E, 0, &m->embd_norm_b, err)))
        return rc;
    const struct gguf_tensor *tt = gguf_find_tensor(m->file, "token_types.weight");
    if (tt && (rc = bind(m, "token_types.weight", BIND_TABLE, true, E, tt->ne[1], &m->type_embd, err)))
        return rc;
    if (hp->n_ctx_train < 1)
        return pb_fail(err, PB_EFORMAT, "%s: an encoder needs %s.context_length (its learned positions)",
                       gguf_name(m->file), hp->arch);
    m->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    m->embd_scale = 1.0f;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return pb_fail(err, PB_ENOMEM, "out of memory for %" PRId64 " layers", hp->n_layer);
    char name[96];
    for (int l = 0; l < (int)hp->n_layer; l++) {
        struct layer_weights *lw = &m->layers[l];
        const struct {
            const char *suffix;
            enum bind_kind kind;
            int64_t ne0, ne1;
            struct pb_tensor *out;
        } specs[] = {
            {"attn_q.weight", BIND_MATRIX, E, QD, &lw->wq},          {"attn_q.bias", BIND_VECTOR, QD, 0, &lw->bq},
            {"attn_k.weight", BIND_MATRIX, E, KVD, &lw->wk},         {"attn_k.bias", BIND_VECTOR, KVD, 0, &lw->bk},
            {"attn_v.weight", BIND_MATRIX, E, KVD, &lw->wv},         {"attn_v.bias", BIND_VECTOR, KVD, 0, &lw->bv},
            {"attn_output.weight", BIND_MATRIX, QD, E, &lw->wo},     {"attn_output.bias", BIND_VECTOR, E, 0, &lw->bo},
            {"attn_output_norm.weight", BIND_VECTOR, E, 0, &lw->attn_post_norm},
            {"attn_output_norm.bias", BIND_VECTOR, E, 0, &lw->attn_post_norm_b},
            {"ffn_up.weight", BIND_MATRIX, E, F, &lw->ffn_up},       {"ffn_up.bias", BIND_VECTOR, F, 0, &lw->ffn_up_b},
            {"ffn_down.weight", BIND_MATRIX, F, E, &lw->ffn_down},   {"ffn_down.bias", BIND_VECTOR, E, 0, &lw->ffn_down_b},
            {"layer_output_norm.weight", BIND_VECTOR, E, 0, &lw->ffn_post_norm},
            {"layer_output_norm.bias", BIND_VECTOR, E, 0, &lw->ffn_post_norm_b},
        };
        for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, specs[i].suffix);
            if ((rc = bind(m, name, specs[i].kind, true, specs[i].ne0, specs[i].ne1, specs[i].out, err)))
                return rc;
        }
        const struct pb_tensor *mats[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->ffn_up, &lw->ffn_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            m->weight_bytes += matrix_bytes(mats[i]);
    }
    return PB_OK;
}

static int bind_all(struct model *m, pb_err *err)
{
    const struct model_hparams *hp = &m->hp;
    int rc;
    if (m->arch->needs & ARCH_ENCODER)
        return bind_encoder(m, err);
    if ((rc = bind(m, "token_embd.weight", BIND_TABLE, true, hp->n_embd, hp->n_vocab, &m->tok_embd, err)) ||
        (rc = bind(m, "output_norm.weight", BIND_VECTOR, true, hp->n_embd, 0, &m->out_norm, err)) ||
        (rc = bind(m, "output.weight", BIND_MATRIX, false, hp->n_embd, hp->n_vocab, &m->output, err)) ||
        (rc = bind(m, "rope_freqs.weight", BIND_VECTOR, false, hp->n_rot / 2, 0, &m->rope_freqs, err)) ||
        (rc = bind(m, "rope_factors_long.weight", BIND_VECTOR, false, hp->n_rot / 2, 0, &m->rope_long, err)) ||
        (rc = bind(m, "rope_factors_short.weight", BIND_VECTOR, false, hp->n_rot / 2, 0, &m->rope_short, err)) ||
        (rc = check_rope(m, err)))
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
    if ((m->arch->needs & ARCH_MOE) && hp->n_expert == 0)
        return pb_fail(err, PB_EFORMAT, "%s: a %s model needs %s.expert_count", gguf_name(m->file), hp->arch,
                       hp->arch);
    m->weight_bytes = m->output.row_bytes * (uint64_t)m->output.ne[1];
    /* Gemma's query scale: 1/sqrt(n_embd / n_head) for the 27B models
     * (known, as llama.cpp knows them, by their layer count), else
     * 1/sqrt(head_dim) like everyone's */
    const bool gemma27 = (!strcmp(hp->arch, "gemma2") && hp->n_layer == 46) ||
                         (!strcmp(hp->arch, "gemma3") && hp->n_layer == 62);
    m->attn_scale = 1.0f / sqrtf((float)(gemma27 ? hp->n_embd / hp->n_head : hp->head_dim));
    m->embd_scale = m->arch->needs & ARCH_EMBD_SCALE ? sqrtf((float)hp->n_embd) : 1.0f;
    m->final_softcap = hp->final_softcap;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return pb_fail(err, PB_ENOMEM, "out of memory for %" PRId64 " layers", hp->n_layer);
    if (hp->n_expert > 0 && !(m->exp_views = calloc((size_t)(hp->n_layer * 3 * hp->n_expert), sizeof *m->exp_views)))
        return pb_fail(err, PB_ENOMEM, "out of memory for %" PRId64 " experts", hp->n_expert);
    uint64_t experts = 0;
    for (int l = 0; l < (int)hp->n_layer; l++) {
        uint64_t bytes = 0;
        if ((rc = bind_layer(m, l, &bytes, err)))
            return rc;
        experts += bytes;
    }
    /* a token reads n_expert_used of each layer's experts */
    if (hp->n_expert > 0)
        m->weight_bytes += experts / (uint64_t)hp->n_expert * (uint64_t)hp->n_expert_used;
    return PB_OK;
}

#define PACK_STEP_BYTES (8u << 20)

/* The number of matrices of the model (at most). */
static int n_matrices(const struct model *m)
{
    return (int)(m->hp.n_layer * (8 + 3 * m->hp.n_expert)) + 1;
}

/* The matrices of the model, output last. */
static int list_matrices(struct model *m, struct pb_tensor **out)
{
    int n = 0;
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        struct layer_weights *lw = &m->layers[l];
        struct pb_tensor *ws[] = {&lw->wq,     &lw->wk,       &lw->wv,          &lw->wo,
                                  &lw->ffn_gate, &lw->ffn_up, &lw->ffn_down,    &lw->ffn_gate_inp};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (ws[i]->data)
                out[n++] = ws[i];
        for (int64_t e = 0; lw->gate_exps && e < 3 * m->hp.n_expert; e++)
            out[n++] = &lw->gate_exps[e]; /* gate, up and down views are consecutive */
    }
    if (m->output.data) /* encoders have none */
        out[n++] = &m->output;
    return n;
}

/* Chooses every matrix's kernels and, where they read a repacked layout,
 * repacks it into one large allocation, releasing the file's pages of
 * each tensor once copied: memory holds one copy of the weights. A matrix
 * read as stored is copied there too, through the file (pread): read in
 * place, each touch maps a whole page-cache folio around it, and the
 * small ones (qwen3-30b-a3b's 48 F32 routers, 1 MiB each) kept 90 MiB of
 * their neighbours' pages in the process beside their own 48. */
static int prepare_matrices(struct model *m, struct pool *shared, pb_err *err)
{
    const int n_max = n_matrices(m);
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
        if (!bytes[i]) /* read as stored: copied */
            bytes[i] = matrix_bytes(mats[i]);
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
    for (int i = 0; i < n && rc == PB_OK; i++) {
        if (!bytes[i])
            continue;
        const bool tied = mats[i]->data == m->tok_embd.data;
        if (!mats[i]->mm->pack) {
            if (gguf_read_at(m->file, mats[i]->data, bytes[i], at) != 0) {
                rc = pb_fail(err, PB_EIO, "%s: cannot read tensor '%s'", gguf_name(m->file), mats[i]->name);
                break;
            }
            (tied ? gguf_evict : gguf_release)(m->file, mats[i]->data, bytes[i]);
            op_matrix_use_packed(mats[i], at);
            at += (bytes[i] + 63) / 64 * 64;
            continue;
        }
        /* in steps of at most PACK_STEP_BYTES of the file's rows, each
         * released once copied: at no time are more than a step's bytes
         * held twice (the output matrix alone can be 50+ MB) */
        const struct pb_tensor *t = mats[i];
        const int64_t n_groups = op_matrix_groups(t), rows_per_group = t->ne[1] / n_groups;
        const size_t group_bytes = t->row_bytes * (size_t)rows_per_group;
        int64_t step = (int64_t)(PACK_STEP_BYTES / (group_bytes ? group_bytes : 1));
        step = step < 1 ? 1 : step;
        /* token_embd stays readable when it is also the output (tied
         * embeddings): its pages are evicted, not released, and its rows
         * are read from the file as tokens are looked up (layer_embed, as
         * every table's are); kept, the table stayed resident beside its
         * repacked copy */
        for (int64_t g0 = 0; g0 < n_groups; g0 += step) {
            const int64_t g1 = g0 + step < n_groups ? g0 + step : n_groups;
            op_matrix_pack_groups(pool, t, at, g0, g1);
            const uint8_t *p = (const uint8_t *)t->data + (size_t)g0 * group_bytes;
            if (tied)
                gguf_evict(m->file, p, (size_t)(g1 - g0) * group_bytes);
            else
                gguf_release(m->file, p, (size_t)(g1 - g0) * group_bytes);
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
    if (rc == PB_OK) { /* the weights are in memory of their own now; the
                        * embedding table is read row by row (layer_embed):
                        * its rows come from the page cache, not the disk */
        gguf_evict_all(m->file);
        if (m->tok_embd.data)
            gguf_prefetch(m->file, m->tok_embd.data, m->tok_embd.row_bytes * (size_t)m->tok_embd.ne[1]);
    }
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
    free(m->exp_views);
    sys_free_large(m->packed, m->packed_bytes);
    gguf_close(m->file);
    free(m);
}

const struct model_hparams *model_hparams(const struct model *m) { return &m->hp; }
const struct gguf_file *model_gguf(const struct model *m) { return m->file; }
uint64_t model_weight_bytes(const struct model *m) { return m->weight_bytes; }

/* ---- contexts ---- */

static size_t max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

static size_t max_matmul_scratch(const struct model *m, int n_batch)
{
    size_t max = op_matmul_scratch(&m->output, n_batch); /* a batch's sequences may all want logits */
    const int rows = n_batch * (int)m->hp.n_expert_used; /* (token, expert) pairs of a batch */
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        /* the products of one input share the scratch (layers.c) */
        max = max_sz(max, op_matmul_scratch(&lw->wq, n_batch) + op_matmul_scratch(&lw->wk, n_batch) +
                              op_matmul_scratch(&lw->wv, n_batch));
        max = max_sz(max, op_matmul_scratch(&lw->wo, n_batch));
        if (lw->gate_exps) {
            /* every expert's inputs at once (op_matmul_tasks): the batch's
             * rows quantized, then each expert's chosen ones copied */
            max = max_sz(max, op_matmul_scratch(&lw->ffn_gate_inp, n_batch));
            max = max_sz(max, op_matmul_scratch(&lw->gate_exps[0], n_batch) + op_matmul_scratch(&lw->up_exps[0], n_batch) +
                                  op_matmul_scratch(&lw->gate_exps[0], rows) + op_matmul_scratch(&lw->up_exps[0], rows));
            max = max_sz(max, op_matmul_scratch(&lw->down_exps[0], rows));
        } else {
            max = max_sz(max, op_matmul_scratch(&lw->ffn_gate, n_batch) + op_matmul_scratch(&lw->ffn_up, n_batch));
            max = max_sz(max, op_matmul_scratch(&lw->ffn_down, n_batch));
        }
    }
    return max;
}

/* Bytes of n floats as alloc_floats reserves them. */
static size_t float_bytes(size_t n)
{
    return (n * sizeof(float) + 63) / 64 * 64;
}

/* The RoPE of the full layers ([0]) and the sliding ones ([1]) for a
 * context of n_ctx positions per sequence: linear scaling, YaRN (with its
 * attention factor, computed as llama.cpp does: its own magnitude
 * correction cancelled and re-applied inside the rotation), LongRoPE's
 * short or long factors (long ones when the context exceeds the original)
 * with the file's attention factor, Llama 3's frequency factors. */
static void ctx_rope(const struct model *m, int64_t n_ctx, struct rope_params rope[2])
{
    const struct model_hparams *hp = &m->hp;
    struct rope_params *r = &rope[0];
    *r = (struct rope_params){
        .n_rot = (int)hp->n_rot,
        .base = hp->rope_base,
        .freq_scale = hp->rope_scaling == ROPE_SCALING_NONE || hp->rope_scaling == ROPE_SCALING_LONGROPE
                          ? 1.0f
                          : 1.0f / hp->rope_scale,
        .style = m->arch->rope,
        .freq_factors = m->rope_freqs.data,
        .attn_factor = 1.0f,
    };
    if (m->rope_long.data)
        r->freq_factors = n_ctx > hp->n_ctx_orig ? m->rope_long.data : m->rope_short.data;
    if (hp->rope_scaling == ROPE_SCALING_YARN) {
        const float factor = 1.0f / r->freq_scale;
        r->ext_factor = 1.0f;
        r->attn_factor = (factor <= 1.0f ? 1.0f : 0.1f * logf(factor) + 1.0f) * (1.0f / (1.0f + 0.1f * logf(factor)));
        op_rope_yarn_corr_dims(r->n_rot, hp->n_ctx_orig, r->base, hp->yarn_beta_fast, hp->yarn_beta_slow,
                               r->corr_dims);
    }
    r->attn_factor *= hp->rope_attn_factor;
    rope[1] = *r;
    rope[1].base = hp->rope_base_swa;
    if (m->arch->needs & ARCH_SWA_ROPE) { /* gemma3's local layers: their own base, unscaled */
        rope[1].freq_scale = 1.0f;
        rope[1].freq_factors = NULL;
        rope[1].ext_factor = 0;
    }
}

static float *alloc_floats(size_t n)
{
    return aligned_alloc(64, float_bytes(n ? n : 1));
}

/* Rows of a sliding layer's ring: its window and the rest of a batch
 * (the batch's rows are stored before its first query reads the window
 * behind it), at most the context; the context when nothing slides. */
static int64_t swa_rows(const struct model_hparams *hp, int64_t n_ctx, int n_batch)
{
    const int64_t rows = hp->n_swa > 0 ? hp->n_swa + n_batch - 1 : n_ctx;
    return rows < n_ctx ? rows : n_ctx;
}

/* KV bytes of one sequence: full layers n_ctx rows, sliding ones their ring. */
static uint64_t seq_kv_bytes(const struct model_hparams *hp, int64_t n_ctx, int n_batch, enum pb_kv_type type)
{
    const int64_t kvd = hp->n_head_kv * hp->head_dim;
    int local = 0;
    for (int l = 0; l < (int)hp->n_layer; l++)
        local += model_layer_is_swa(hp, l);
    return kv_bytes((int)hp->n_layer - local, n_ctx, kvd, type) +
           (local ? kv_bytes(local, swa_rows(hp, n_ctx, n_batch), kvd, type) : 0);
}

/* What a context allocates, computed once for model_ctx_create and for
 * the memory estimate (so the two cannot drift apart). */
struct ctx_plan {
    int64_t n_ctx;
    int n_seq, n_batch, n_threads;
    size_t x, q, ff, kvd;  /* floats per batch row: residual, queries, dense FFN, new K/V */
    size_t rope;           /* floats per batch row of each RoPE angle table */
    size_t moe_x, moe_ff;  /* floats per batch row of the experts' grouped outputs and FFN */
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
    cp->ff = hp->n_expert > 0 ? 0 : (size_t)hp->n_ff;
    cp->moe_x = (size_t)(hp->n_expert_used * hp->n_embd);
    cp->moe_ff = (size_t)(hp->n_expert_used * hp->n_ff_exp);
    cp->kvd = (size_t)(hp->n_head_kv * hp->head_dim);
    cp->rope = (size_t)hp->n_rot;
    struct kern_attn_args shape = {.n_head = (int)hp->n_head, .n_head_kv = (int)hp->n_head_kv,
                                   .head_dim = (int)hp->head_dim};
    cp->att_scratch = (size_t)cp->n_threads * op_attention_scratch(&shape);
    cp->act = (act_bytes + 63) / 64 * 64 + 64;
    cp->kv = (uint64_t)cp->n_seq * seq_kv_bytes(hp, cp->n_ctx, cp->n_batch, (enum pb_kv_type)p->kv_type);
    const size_t B = (size_t)cp->n_batch;
    const size_t B_ff = B < FFN_ROWS ? B : FFN_ROWS;
    cp->compute = 2 * float_bytes(B * cp->x) + 2 * float_bytes(B * cp->q) + 2 * float_bytes(B_ff * cp->ff) +
                  2 * float_bytes(B * cp->kvd) + 2 * float_bytes(B * cp->rope) + float_bytes(cp->att_scratch) + cp->act +
                  B * (sizeof(struct ctx_seg) + sizeof(struct kern_attn_args)) +
                  (size_t)cp->n_seq * ((size_t)cp->n_ctx * sizeof(int32_t) + sizeof(int64_t) +
                                       sizeof(struct kv_cache) + sizeof(struct seq_state));
    if (hp->n_expert > 0) { /* router logits, choices, grouped rows, one task per expert and product */
        const size_t K = (size_t)hp->n_expert_used;
        cp->compute += float_bytes(B * (size_t)hp->n_expert) + float_bytes(B * K) +
                       3 * B * K * sizeof(int32_t) + float_bytes(B * cp->moe_x) + 2 * float_bytes(B * cp->moe_ff) +
                       2 * (size_t)hp->n_expert * sizeof(struct op_mm_task);
    }
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
    return seq_kv_bytes(hp, n_ctx, 1, type);
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
    int64_t *caps = NULL;
    c->m = m;
    c->n_ctx = plan.n_ctx;
    c->n_seq = plan.n_seq;
    c->n_batch = plan.n_batch;
    c->swa_cap = swa_rows(hp, c->n_ctx, c->n_batch);
    ctx_rope(m, c->n_ctx, c->rope);
    if (p->pool)
        c->pool = p->pool;
    else if ((rc = pool_create(p->n_threads, &c->own_pool, err)))
        goto fail;
    else
        c->pool = c->own_pool;
    c->kv = calloc((size_t)c->n_seq, sizeof *c->kv);
    c->seq_pos = calloc((size_t)c->n_seq, sizeof *c->seq_pos);
    c->tokens = malloc((size_t)c->n_seq * (size_t)c->n_ctx * sizeof *c->tokens);
    c->st = calloc((size_t)c->n_seq, sizeof *c->st);
    c->segs = calloc((size_t)c->n_batch, sizeof *c->segs);
    c->attn = calloc((size_t)c->n_batch, sizeof *c->attn);
    caps = malloc((size_t)hp->n_layer * sizeof *caps);
    if (!c->kv || !c->seq_pos || !c->tokens || !c->st || !c->segs || !c->attn || !caps) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for %d sequences", c->n_seq);
        goto fail;
    }
    for (int l = 0; l < (int)hp->n_layer; l++)
        caps[l] = model_layer_is_swa(hp, l) ? c->swa_cap : c->n_ctx;
    for (int s = 0; s < c->n_seq; s++)
        if ((rc = kv_alloc(&c->kv[s], (int)hp->n_layer, c->n_ctx, (int64_t)plan.kvd, (enum pb_kv_type)p->kv_type,
                           caps, err)))
            goto fail;
    const size_t B = (size_t)c->n_batch;
    c->x = alloc_floats(B * plan.x);
    c->xb = alloc_floats(B * plan.x);
    c->q = alloc_floats(B * plan.q);
    c->att = alloc_floats(B * plan.q);
    c->gate = alloc_floats((B < FFN_ROWS ? B : FFN_ROWS) * plan.ff);
    c->up = alloc_floats((B < FFN_ROWS ? B : FFN_ROWS) * plan.ff);
    c->k_new = alloc_floats(B * plan.kvd);
    c->v_new = alloc_floats(B * plan.kvd);
    c->att_scratch = alloc_floats(plan.att_scratch);
    c->rope_cs[0] = alloc_floats(B * plan.rope);
    c->rope_cs[1] = alloc_floats(B * plan.rope);
    c->act = aligned_alloc(64, plan.act);
    if (!c->x || !c->xb || !c->q || !c->att || !c->gate || !c->up || !c->att_scratch || !c->act || !c->k_new ||
        !c->v_new || !c->rope_cs[0] || !c->rope_cs[1]) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for activation buffers (batch %d)", c->n_batch);
        goto fail;
    }
    if (hp->n_expert > 0) {
        const size_t K = (size_t)hp->n_expert_used, X = (size_t)hp->n_expert;
        c->moe_logits = alloc_floats(B * X);
        c->moe_sel = malloc(B * K * sizeof *c->moe_sel);
        c->moe_w = alloc_floats(B * K);
        c->moe_slot = malloc(B * K * sizeof *c->moe_slot);
        c->moe_rows = malloc(B * K * sizeof *c->moe_rows);
        c->moe_x = alloc_floats(B * plan.moe_x);
        c->moe_g = alloc_floats(B * plan.moe_ff);
        c->moe_u = alloc_floats(B * plan.moe_ff);
        c->moe_tasks = malloc(2 * X * sizeof *c->moe_tasks);
        if (!c->moe_logits || !c->moe_sel || !c->moe_w || !c->moe_slot || !c->moe_rows || !c->moe_x || !c->moe_g ||
            !c->moe_u || !c->moe_tasks) {
            rc = pb_fail(err, PB_ENOMEM, "out of memory for the experts' buffers (batch %d)", c->n_batch);
            goto fail;
        }
    }
    free(caps);
    *out = c;
    return PB_OK;
fail:
    free(caps);
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
    free(c->st);
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
    free(c->rope_cs[0]);
    free(c->rope_cs[1]);
    free(c->k_new);
    free(c->v_new);
    free(c->act);
    free(c->moe_logits);
    free(c->moe_sel);
    free(c->moe_w);
    free(c->moe_slot);
    free(c->moe_rows);
    free(c->moe_x);
    free(c->moe_g);
    free(c->moe_u);
    free(c->moe_tasks);
    free(c);
}

int64_t model_ctx_n_ctx(const struct model_ctx *c) { return c->n_ctx; }

int64_t model_seq_pos(const struct model_ctx *c, int seq)
{
    return seq >= 0 && seq < c->n_seq ? c->seq_pos[seq] : 0;
}

int64_t model_seq_n_recompute(const struct model_ctx *c, int seq)
{
    return seq >= 0 && seq < c->n_seq ? c->seq_pos[seq] - c->st[seq].computed : 0;
}

/* After sequence seq keeps only its first `computed` positions: when its
 * sliding layers' rings no longer hold the window its next token needs,
 * everything is computed again. */
static void check_windows(struct model_ctx *c, int seq)
{
    struct seq_state *st = &c->st[seq];
    const int64_t n_swa = c->m->hp.n_swa;
    if (n_swa > 0 && st->computed > 0) {
        const int64_t need = st->computed - n_swa + 1 > 0 ? st->computed - n_swa + 1 : 0;
        if (need < st->ring_lo)
            st->computed = st->ring_lo = 0;
    }
}

const int32_t *model_seq_tokens(const struct model_ctx *c, int seq)
{
    return seq >= 0 && seq < c->n_seq ? c->tokens + (size_t)seq * (size_t)c->n_ctx : NULL;
}

void model_seq_truncate(struct model_ctx *c, int seq, int64_t pos)
{
    if (seq < 0 || seq >= c->n_seq || pos < 0 || pos >= c->seq_pos[seq])
        return;
    c->seq_pos[seq] = pos;
    if (c->st[seq].computed > pos)
        c->st[seq].computed = pos;
    check_windows(c, seq);
}

int model_seq_copy(struct model_ctx *c, int dst, int src, int64_t n, pb_err *err)
{
    if (dst < 0 || dst >= c->n_seq || src < 0 || src >= c->n_seq || dst == src)
        return pb_fail(err, PB_EINVAL, "cannot copy sequence %d to %d (%d sequences)", src, dst, c->n_seq);
    if (n < 0 || n > c->seq_pos[src])
        return pb_fail(err, PB_EINVAL, "sequence %d holds %" PRId64 " positions, not %" PRId64, src,
                       c->seq_pos[src], n);
    const struct seq_state *s = &c->st[src];
    struct seq_state *d = &c->st[dst];
    kv_copy(c->kv, c->n_seq, dst, src, n < s->computed ? n : s->computed);
    memcpy(c->tokens + (size_t)dst * (size_t)c->n_ctx, c->tokens + (size_t)src * (size_t)c->n_ctx,
           (size_t)n * sizeof *c->tokens);
    d->computed = n < s->computed ? n : s->computed;
    d->ring_lo = s->ring_lo;
    c->seq_pos[dst] = n;
    check_windows(c, dst);
    return PB_OK;
}

int64_t model_seq_n_shared(const struct model_ctx *c, int seq)
{
    if (seq < 0 || seq >= c->n_seq)
        return 0;
    const int64_t n = kv_n_shared(&c->kv[seq]);
    return n < c->st[seq].computed ? n : c->st[seq].computed;
}

void model_ctx_part_seconds(const struct model_ctx *c, double out[PB_PART_COUNT])
{
    memcpy(out, c->t_part, sizeof c->t_part);
}

static const char *const part_names[PB_PART_COUNT] = {
    [PB_PART_EMBED] = "embed",         [PB_PART_NORM] = "norms",         [PB_PART_QKV] = "qkv",
    [PB_PART_ROPE_KV] = "rope_kv",     [PB_PART_ATTENTION] = "attention", [PB_PART_ATTN_OUT] = "attn_out",
    [PB_PART_FFN_UP] = "ffn_gate_up",  [PB_PART_FFN_ACT] = "ffn_act",     [PB_PART_FFN_DOWN] = "ffn_down",
    [PB_PART_ROUTER] = "router",       [PB_PART_EXPERTS] = "experts",     [PB_PART_OUTPUT] = "output",
    [PB_PART_QUANTIZE] = "quantize",
};

const char *pb_part_name(enum pb_part p)
{
    return (unsigned)p < PB_PART_COUNT ? part_names[p] : "?";
}

int pb_part_is_matrix(enum pb_part p)
{
    switch (p) {
    case PB_PART_QKV: case PB_PART_ATTN_OUT: case PB_PART_FFN_UP: case PB_PART_FFN_DOWN: case PB_PART_ROUTER:
    case PB_PART_EXPERTS: case PB_PART_OUTPUT: case PB_PART_QUANTIZE:
        return 1;
    default:
        return 0;
    }
}

uint64_t model_ctx_kv_bytes(const struct model_ctx *c)
{
    return (uint64_t)c->n_seq * kv_cache_bytes(&c->kv[0]);
}

/* ---- memory ---- */

/* The matrices as they are resident: each in the model's own memory,
 * repacked or copied as stored (the output counted once when it is the
 * embedding table). The table itself is read row by row through the file
 * (layer_embed) and never resident. */
static uint64_t resident_weights(const size_t *packed, int n_mats, struct pb_tensor *const *mats)
{
    uint64_t total = 0;
    for (int i = 0; i < n_mats; i++)
        total += packed[i] ? (packed[i] + 63) / 64 * 64 : (uint64_t)mats[i]->row_bytes * (uint64_t)mats[i]->ne[1];
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
    const struct pb_tensor *vs[] = {&m->out_norm, &m->rope_freqs, &m->rope_long, &m->rope_short};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        if (vs[i]->data)
            total += (uint64_t)vs[i]->ne[0] * sizeof(float);
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        /* gpt-oss's FFN norm is its post_attention_norm, counted once */
        const struct pb_tensor *ls[] = {&lw->attn_norm,  &lw->ffn_norm,       &lw->bq,          &lw->bk,
                                        &lw->bv,         &lw->bo,             &lw->q_norm,      &lw->k_norm,
                                        &lw->sinks,      &lw->attn_post_norm, &lw->ffn_post_norm,
                                        &lw->ffn_gate_inp_b, &lw->gate_exps_b, &lw->up_exps_b, &lw->down_exps_b};
        for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++)
            if (ls[i]->data)
                total += (uint64_t)ls[i]->ne[0] * (uint64_t)ls[i]->ne[1] * sizeof(float);
    }
    return total;
}

/* Weights, vectors and the context's parts of m (matrices planned for the
 * kernels in use) for context parameters p. */
static int mem_of(struct model *m, const struct model_ctx_params *p, struct model_mem *mm, pb_err *err)
{
    memset(mm, 0, sizeof *mm);
    const int n_max = n_matrices(m);
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
    mm->weights = resident_weights(bytes, n, mats);
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
    if (hp->n_expert > 0) { /* the experts' products: k rows per token, gate and up n_embd values each
                               * (max_matmul_scratch), down n_ff_exp */
        const double fe = (double)hp->n_ff_exp, k = (double)hp->n_expert_used;
        const double moe = k * (2 * e > fe ? 2 * e : fe);
        widest = 3 * e > q ? 3 * e : q;
        widest = moe > widest ? moe : widest;
    }
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

/* One forward pass over the prepared segments (c->segs, n rows); the
 * sequences' positions and histories advance. */
static int forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err)
{
    c->rope_ready[0] = c->rope_ready[1] = false; /* new rows, new angles */
    for (int s = 0; s < c->n_segs; s++) /* rows others read are theirs before they change */
        kv_before_write(c->kv, c->n_seq, c->segs[s].seq, c->segs[s].pos0);
    int rc = c->m->arch->forward(c, tokens, n, logits, err);
    if (rc)
        return rc;
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        struct seq_state *st = &c->st[sg->seq];
        int32_t *held = c->tokens + (size_t)sg->seq * (size_t)c->n_ctx + sg->pos0;
        if (tokens + sg->off != held) /* not a recomputation of what the sequence holds */
            memcpy(held, tokens + sg->off, (size_t)sg->n * sizeof *tokens);
        st->computed = sg->pos0 + sg->n;
        if (st->computed - c->swa_cap > st->ring_lo)
            st->ring_lo = st->computed - c->swa_cap;
        c->seq_pos[sg->seq] = sg->pos0 + sg->n;
    }
    return PB_OK;
}

/* Computes sequence seq's pending positions again (from its history),
 * n_batch at a time, without logits. */
static int recompute(struct model_ctx *c, int seq, pb_err *err)
{
    struct seq_state *st = &c->st[seq];
    const int64_t end = c->seq_pos[seq];
    while (st->computed < end) {
        const int k = end - st->computed < c->n_batch ? (int)(end - st->computed) : c->n_batch;
        c->segs[0] = (struct ctx_seg){seq, 0, k, st->computed, false};
        c->n_segs = 1;
        int rc = forward(c, c->tokens + (size_t)seq * (size_t)c->n_ctx + st->computed, k, NULL, err);
        if (rc)
            return rc;
    }
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
    /* sequences whose sliding windows a truncation emptied first catch up */
    for (int s = 0; s < n_segs; s++)
        if (c->st[segs[s].seq].computed < c->seq_pos[segs[s].seq] && (rc = recompute(c, segs[s].seq, err)))
            return rc;
    for (int s = 0, off = 0; s < n_segs; off += segs[s].n, s++)
        c->segs[s] = (struct ctx_seg){segs[s].seq, off, segs[s].n, c->seq_pos[segs[s].seq], segs[s].logits};
    c->n_segs = n_segs;
    return forward(c, tokens, n, want && logits ? logits : NULL, err);
}

int model_eval_hidden(struct model_ctx *c, const int32_t *tokens, const struct model_seg *segs, int n_segs,
                      float *hidden, pb_err *err)
{
    if (n_segs <= 0)
        return pb_fail(err, PB_EINVAL, "nothing to evaluate (0 segments)");
    for (int s = 0; s < n_segs; s++)
        if (segs[s].seq >= 0 && segs[s].seq < c->n_seq)
            model_seq_truncate(c, segs[s].seq, 0);
    int rc = model_eval_batch(c, tokens, segs, n_segs, NULL, err);
    if (rc)
        return rc;
    const struct model *m = c->m;
    const int64_t E = m->hp.n_embd;
    int n = 0;
    for (int s = 0; s < n_segs; s++)
        n += segs[s].n;
    if (m->arch->needs & ARCH_ENCODER) /* the last LayerNorm is the blocks' own */
        memcpy(hidden, c->x, (size_t)n * (size_t)E * sizeof *hidden);
    else
        for (int t = 0; t < n; t++)
            op_rmsnorm(hidden + (size_t)t * (size_t)E, c->x + (size_t)t * (size_t)E, m->out_norm.data, E,
                       m->hp.rms_eps);
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
