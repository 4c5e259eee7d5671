/* The architecture loader on well-formed files: where fuzz_gguf mutates
 * bytes (and rarely keeps a model's dozens of keys and tensors
 * consistent), this target reads its input as choices, writes a valid
 * GGUF of them and reads it the way plumb show, plan and serve's memory
 * check do: model_mem_estimate (the hyperparameters, every tensor bound
 * and checked against the shape, every matrix given its kernels; nothing
 * repacked). The models are tiny (dimensions up to 256, two layers, 64
 * tokens), so where the estimate passes the model is also loaded (the
 * matrices repacked for the kernels of this CPU, odd row counts
 * included), a context made, and a few tokens evaluated: the loaded
 * model's model_mem must equal the estimate, and the logits of zero
 * weights must be finite.
 *
 * The choices: the architecture; each hyperparameter present or absent,
 * of its usual type or another, in range or not; RoPE scaling; the type
 * of each kind of tensor (every type plumb knows, with and without
 * kernels); tied output, rope_freqs; one tensor dropped and one given a
 * wrong shape. Tensor data are zeros (so a model with rope_freqs is
 * refused: its factors must be positive). */
#define _GNU_SOURCE
#include "fuzz.h"

#include "base/pool.h"
#include "model/model.h"
#include "quant/types.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The input as a stream of choices; zeros once it runs out. */
struct choices {
    const uint8_t *p;
    size_t n;
};

static unsigned pick(struct choices *c, unsigned n)
{
    if (c->n == 0)
        return 0;
    c->n--;
    return *c->p++ % n;
}

static const enum pb_type types[] = {
    PB_TYPE_F32,  PB_TYPE_F16,  PB_TYPE_BF16, PB_TYPE_Q8_0, PB_TYPE_Q4_0,   PB_TYPE_Q4_1,   PB_TYPE_Q5_0,
    PB_TYPE_Q5_1, PB_TYPE_Q4_K, PB_TYPE_Q5_K, PB_TYPE_Q6_K, PB_TYPE_Q2_K,   PB_TYPE_Q3_K,   PB_TYPE_IQ4_NL,
    PB_TYPE_IQ4_XS, PB_TYPE_Q8_1, PB_TYPE_I32, PB_TYPE_F64, PB_TYPE_MXFP4, PB_TYPE_TQ2_0,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* A dimension: usually a small multiple of 32 (every block size fits
 * 256), sometimes anything up to 255. */
static int64_t dim(struct choices *c, int64_t max_mult)
{
    unsigned v = pick(c, 256);
    if (v < 224)
        return 32 * (1 + (int64_t)(v % (unsigned)max_mult));
    return 1 + pick(c, 255);
}

/* An integer key: absent, as u32, as a string, as f32, or out of range. */
static void set_int(struct gguf_writer *w, struct choices *c, const char *arch, const char *suffix, int64_t v)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    switch (pick(c, 8)) {
    case 0: break;
    case 1: gguf_set_str(w, key, "32"); break;
    case 2: gguf_set_f32(w, key, (float)v); break;
    case 3: gguf_set_u64(w, key, (uint64_t)v << 40); break;
    case 4: gguf_set_i32(w, key, -(int32_t)v); break;
    default: gguf_set_u32(w, key, (uint32_t)v); break;
    }
}

static void set_float(struct gguf_writer *w, struct choices *c, const char *arch, const char *suffix)
{
    static const float values[] = {1e-5f, 1e-6f, 10000.0f, 500000.0f, 0.0f, -1.0f, 2.0f, 1e30f};
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    unsigned k = pick(c, 10);
    if (k < 8)
        gguf_set_f32(w, key, values[k]);
    else if (k == 8)
        gguf_set_bool(w, key, true);
}

struct shape {
    const char *arch;
    int64_t embd, layers, heads, heads_kv, head_dim, ff, vocab, rot;
};

struct tensor_spec {
    char name[64];
    enum pb_type type;
    int64_t ne[2];
};

static void add(struct tensor_spec *t, size_t *n, size_t max, const char *name, enum pb_type type, int64_t ne0,
                int64_t ne1)
{
    if (*n == max)
        return;
    t[*n] = (struct tensor_spec){.type = type, .ne = {ne0, ne1}};
    snprintf(t[*n].name, sizeof t[*n].name, "%s", name);
    (*n)++;
}

/* The tensors of shape s, each typed by its kind's choice. */
static size_t plan_tensors(struct choices *c, const struct shape *s, struct tensor_spec *t, size_t max)
{
    enum pb_type embd_t = types[pick(c, N_TYPES)], out_t = types[pick(c, N_TYPES)], vec_t = types[pick(c, N_TYPES)],
                 attn_t = types[pick(c, N_TYPES)], ffn_t = types[pick(c, N_TYPES)];
    const bool tied = pick(c, 2), freqs = pick(c, 4) == 0, bias = pick(c, 2), qk_norm = pick(c, 2);
    const int64_t QD = s->heads * s->head_dim, KVD = s->heads_kv * s->head_dim;
    size_t n = 0;
    add(t, &n, max, "token_embd.weight", embd_t, s->embd, s->vocab);
    add(t, &n, max, "output_norm.weight", vec_t, s->embd, 0);
    if (!tied)
        add(t, &n, max, "output.weight", out_t, s->embd, s->vocab);
    if (freqs)
        add(t, &n, max, "rope_freqs.weight", vec_t, s->rot / 2, 0);
    for (int64_t l = 0; l < s->layers; l++) {
        static const char *const names[] = {"attn_norm.weight", "attn_q.weight",  "attn_k.weight",
                                            "attn_v.weight",    "attn_output.weight", "attn_q.bias",
                                            "attn_k.bias",      "attn_v.bias",    "attn_q_norm.weight",
                                            "attn_k_norm.weight", "ffn_norm.weight", "ffn_gate.weight",
                                            "ffn_up.weight",    "ffn_down.weight"};
        const int64_t ne[][2] = {{s->embd, 0}, {s->embd, QD},  {s->embd, KVD}, {s->embd, KVD},      {QD, s->embd},
                                 {QD, 0},      {KVD, 0},       {KVD, 0},       {s->head_dim, 0},    {s->head_dim, 0},
                                 {s->embd, 0}, {s->embd, s->ff}, {s->embd, s->ff}, {s->ff, s->embd}};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if ((i >= 5 && i <= 7 && !bias) || ((i == 8 || i == 9) && !qk_norm))
                continue;
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", (int)l, names[i]);
            const bool matrix = ne[i][1] != 0;
            add(t, &n, max, name, matrix ? (i >= 11 ? ffn_t : attn_t) : vec_t, ne[i][0], ne[i][1]);
        }
    }
    /* one tensor dropped, one misshapen */
    if (n && pick(c, 3) == 0) {
        size_t k = pick(c, 255) % n;
        t[k] = t[--n];
    }
    if (n && pick(c, 3) == 0) {
        size_t k = pick(c, 255) % n, d = pick(c, 2);
        t[k].ne[d] += pick(c, 2) ? 32 : -1;
    }
    return n;
}

/* Writes the GGUF of the choices into fd; false when the writer refuses
 * them (a row length that is not a multiple of the type's block, ...). */
static bool write_model(struct choices *c, int fd)
{
    static const char *const archs[] = {"llama", "qwen2", "qwen3", "gemma3", "llama"};
    struct shape s = {.arch = archs[pick(c, 5)]};
    s.embd = dim(c, 8);
    s.layers = 1 + pick(c, 2);
    s.heads = 1 + pick(c, 4);
    s.heads_kv = 1 + pick(c, (unsigned)s.heads);
    s.head_dim = pick(c, 4) ? s.embd / s.heads : 2 * (1 + pick(c, 64));
    s.ff = dim(c, 8);
    s.vocab = 1 + pick(c, 64);
    s.rot = pick(c, 4) ? s.head_dim : 2 * pick(c, 64);
    struct gguf_writer *w;
    pb_err err = {0};
    FUZZ_CHECK(gguf_writer_create(&w, &err) == PB_OK, "%s", err.msg);
    if (pick(c, 8))
        gguf_set_str(w, "general.architecture", s.arch);
    set_int(w, c, s.arch, "context_length", 2048);
    set_int(w, c, s.arch, "embedding_length", s.embd);
    set_int(w, c, s.arch, "block_count", s.layers);
    set_int(w, c, s.arch, "feed_forward_length", s.ff);
    set_int(w, c, s.arch, "attention.head_count", s.heads);
    set_int(w, c, s.arch, "attention.head_count_kv", s.heads_kv);
    set_int(w, c, s.arch, "attention.key_length", s.head_dim);
    set_int(w, c, s.arch, "rope.dimension_count", s.rot);
    set_float(w, c, s.arch, "attention.layer_norm_rms_epsilon");
    set_float(w, c, s.arch, "rope.freq_base");
    static const char *const scalings[] = {NULL, "none", "linear", "yarn", "longrope"};
    const char *scaling = scalings[pick(c, 5)];
    char key[160];
    if (scaling) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", s.arch);
        gguf_set_str(w, key, scaling);
    }
    set_float(w, c, s.arch, scaling ? "rope.scaling.factor" : "rope.scale_linear");

    struct tensor_spec t[64];
    size_t n = plan_tensors(c, &s, t, sizeof t / sizeof t[0]);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const int64_t ne[2] = {t[i].ne[0], t[i].ne[1] ? t[i].ne[1] : 1};
        ok = ne[0] > 0 && ne[1] > 0 && gguf_writer_add_tensor(w, t[i].name, t[i].type, t[i].ne[1] ? 2 : 1, ne, &err) == PB_OK;
    }
    if (ok)
        ok = gguf_writer_status(w, &err) == PB_OK && gguf_writer_begin_fd(w, fd, "fuzz-model.gguf", &err) == PB_OK;
    static const uint8_t zeros[4096];
    for (size_t i = 0; i < n && ok; i++) {
        const struct pb_type_traits *tr = pb_type_get(t[i].type);
        FUZZ_CHECK(tr, "the writer took a tensor of unknown type %d", (int)t[i].type);
        uint64_t bytes = (uint64_t)(t[i].ne[0] / tr->block) * tr->size * (uint64_t)(t[i].ne[1] ? t[i].ne[1] : 1);
        for (uint64_t done = 0; done < bytes && ok;) {
            size_t k = bytes - done < sizeof zeros ? (size_t)(bytes - done) : sizeof zeros;
            ok = gguf_writer_write(w, zeros, k, &err) == PB_OK;
            done += k;
        }
    }
    if (ok)
        ok = gguf_writer_finish(w, &err) == PB_OK;
    fuzz_note("write: %s", ok ? "ok" : err.msg);
    gguf_writer_free(w);
    return ok;
}

static bool mem_equal(const struct model_mem *a, const struct model_mem *b)
{
    return a->weights == b->weights && a->vectors == b->vectors && a->kv == b->kv && a->compute == b->compute &&
           a->total == b->total;
}

/* Loads the model in fd whose estimate est passed, makes a context of p
 * and evaluates a few tokens. */
static void run_model(int fd, struct model_ctx_params p, const struct model_mem *est)
{
    static struct pool *pool;
    pb_err err = {0};
    if (!pool)
        FUZZ_CHECK(pool_create(1, &pool, &err) == PB_OK, "%s", err.msg);
    struct model *m;
    FUZZ_CHECK(model_load_fd(fd, "fuzz-model.gguf", false, pool, &m, &err) == PB_OK,
               "estimated but does not load: %s", err.msg);
    p.pool = pool;
    struct model_mem mm;
    FUZZ_CHECK(model_mem(m, &p, &mm, &err) == PB_OK, "model_mem: %s", err.msg);
    FUZZ_CHECK(mem_equal(&mm, est), "loaded %llu+%llu+%llu+%llu bytes, estimated %llu+%llu+%llu+%llu",
               (unsigned long long)mm.weights, (unsigned long long)mm.vectors, (unsigned long long)mm.kv,
               (unsigned long long)mm.compute, (unsigned long long)est->weights, (unsigned long long)est->vectors,
               (unsigned long long)est->kv, (unsigned long long)est->compute);
    struct model_ctx *ctx;
    FUZZ_CHECK(model_ctx_create(m, &p, &ctx, &err) == PB_OK, "estimated but no context: %s", err.msg);
    FUZZ_CHECK(model_ctx_kv_bytes(ctx) == mm.kv, "the context's KV cache differs from the estimate");
    const int64_t n_vocab = model_hparams(m)->n_vocab;
    const int32_t tokens[3] = {0, (int32_t)(n_vocab - 1), (int32_t)(n_vocab / 2)};
    const int n = p.n_ctx < 3 ? (int)p.n_ctx : 3;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    FUZZ_CHECK(logits, "out of memory");
    int rc = model_eval(ctx, tokens, n, logits, &err);
    fuzz_note("eval: %s", rc ? err.msg : "ok");
    FUZZ_CHECK(rc == PB_OK, "evaluation failed: %s", err.msg);
    for (int64_t i = 0; i < n_vocab; i++)
        FUZZ_CHECK(isfinite(logits[i]), "logit %lld of zero weights is %g", (long long)i, (double)logits[i]);
    free(logits);
    model_ctx_free(ctx);
    model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct choices c = {data, size};
    int fd = memfd_create("fuzz-model", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "memfd_create failed");
    struct gguf_file *f = NULL;
    pb_err err = {0};
    if (write_model(&c, fd))
        FUZZ_CHECK(gguf_open_fd(fd, "fuzz-model.gguf", false, &f, &err) == PB_OK, "plumb cannot read its own file: %s",
                   err.msg);
    if (!f) {
        close(fd);
        return 0;
    }
    struct model_hparams hp;
    /* one pick per statement: an initializer list's order is unspecified */
    struct model_ctx_params p = {.n_threads = 1};
    p.n_ctx = 1 + (int64_t)pick(&c, 512);
    p.n_batch = 1 + (int)pick(&c, 64);
    p.n_seq = (int)pick(&c, 4);
    p.kv_type = (int)pick(&c, 3);
    struct model_mem mm;
    int rc = model_mem_estimate(f, &p, &hp, &mm, &err);
    fuzz_note("estimate: %s", rc ? err.msg : "ok");
    gguf_close(f);
    if (rc == PB_OK) {
        FUZZ_CHECK(mm.total == mm.weights + mm.vectors + mm.kv + mm.compute, "memory parts do not add up");
        FUZZ_CHECK(mm.kv == (uint64_t)(p.n_seq ? p.n_seq : 1) * model_kv_bytes(&hp, p.n_ctx, (enum pb_kv_type)p.kv_type),
                   "KV cache estimate disagrees with model_kv_bytes");
        run_model(fd, p, &mm);
    }
    close(fd);
    return 0;
}
