#define _POSIX_C_SOURCE 200809L
/* Synthesizing random-weight models of real architectures' shapes. */
#include "tools/rows.h"
#include "plumb/synth.h"

#include "base/err.h"
#include "quant/ftype.h"

#include "base/rng.h"
#include "base/vec.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dimensions from each model's published config.json (the source). */
static const struct synth_shape shapes[] = {
    {.name = "tiny", .arch = "llama", .n_vocab = 32000, .n_ctx = 512, .n_embd = 256, .n_layer = 4, .n_head = 8, .n_head_kv = 4, .n_ff = 768, .rope_base = 10000, .rms_eps = 1e-5, .tied = true, .source = "the tiny-llama test model's shape"},
    {.name = "stories260k", .arch = "llama", .n_vocab = 512, .n_ctx = 512, .n_embd = 64, .n_layer = 5, .n_head = 8, .n_head_kv = 4, .n_ff = 172, .rope_base = 10000, .rms_eps = 1e-5, .source = "karpathy/tinyllamas stories260K"},
    {.name = "smollm2-135m", .arch = "llama", .n_vocab = 49152, .n_ctx = 8192, .n_embd = 576, .n_layer = 30, .n_head = 9, .n_head_kv = 3, .n_ff = 1536, .rope_base = 100000, .rms_eps = 1e-5, .tied = true, .source = "HuggingFaceTB/SmolLM2-135M config.json"},
    {.name = "tinyllama-1.1b", .arch = "llama", .n_vocab = 32000, .n_ctx = 2048, .n_embd = 2048, .n_layer = 22, .n_head = 32, .n_head_kv = 4, .n_ff = 5632, .rope_base = 10000, .rms_eps = 1e-5, .source = "TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json"},
    {.name = "llama-3.2-1b", .arch = "llama", .n_vocab = 128256, .n_ctx = 131072, .n_embd = 2048, .n_layer = 16, .n_head = 32, .n_head_kv = 8, .head_dim = 64, .n_ff = 8192, .rope_base = 500000, .rms_eps = 1e-5, .tied = true, .source = "meta-llama/Llama-3.2-1B config.json", .rope_factor = 32, .rope_low = 1, .rope_high = 4, .rope_orig_ctx = 8192},
    {.name = "llama-3.2-3b", .arch = "llama", .n_vocab = 128256, .n_ctx = 131072, .n_embd = 3072, .n_layer = 28, .n_head = 24, .n_head_kv = 8, .head_dim = 128, .n_ff = 8192, .rope_base = 500000, .rms_eps = 1e-5, .tied = true, .source = "meta-llama/Llama-3.2-3B config.json", .rope_factor = 32, .rope_low = 1, .rope_high = 4, .rope_orig_ctx = 8192},
    {.name = "llama-3.1-8b", .arch = "llama", .n_vocab = 128256, .n_ctx = 131072, .n_embd = 4096, .n_layer = 32, .n_head = 32, .n_head_kv = 8, .head_dim = 128, .n_ff = 14336, .rope_base = 500000, .rms_eps = 1e-5, .source = "meta-llama/Llama-3.1-8B config.json", .rope_factor = 8, .rope_low = 1, .rope_high = 4, .rope_orig_ctx = 8192},
    {.name = "mistral-7b", .arch = "llama", .n_vocab = 32768, .n_ctx = 32768, .n_embd = 4096, .n_layer = 32, .n_head = 32, .n_head_kv = 8, .head_dim = 128, .n_ff = 14336, .rope_base = 1000000, .rms_eps = 1e-5, .source = "mistralai/Mistral-7B-Instruct-v0.3 config.json"},
    {.name = "qwen2.5-0.5b", .arch = "qwen2", .n_vocab = 151936, .n_ctx = 32768, .n_embd = 896, .n_layer = 24, .n_head = 14, .n_head_kv = 2, .head_dim = 64, .n_ff = 4864, .rope_base = 1000000, .rms_eps = 1e-6, .tied = true, .qkv_bias = true, .source = "Qwen/Qwen2.5-0.5B config.json"},
    {.name = "qwen2.5-1.5b", .arch = "qwen2", .n_vocab = 151936, .n_ctx = 32768, .n_embd = 1536, .n_layer = 28, .n_head = 12, .n_head_kv = 2, .head_dim = 128, .n_ff = 8960, .rope_base = 1000000, .rms_eps = 1e-6, .tied = true, .qkv_bias = true, .source = "Qwen/Qwen2.5-1.5B config.json"},
    {.name = "qwen2.5-7b", .arch = "qwen2", .n_vocab = 152064, .n_ctx = 32768, .n_embd = 3584, .n_layer = 28, .n_head = 28, .n_head_kv = 4, .head_dim = 128, .n_ff = 18944, .rope_base = 1000000, .rms_eps = 1e-6, .qkv_bias = true, .source = "Qwen/Qwen2.5-7B config.json"},
    {.name = "qwen3-0.6b", .arch = "qwen3", .n_vocab = 151936, .n_ctx = 40960, .n_embd = 1024, .n_layer = 28, .n_head = 16, .n_head_kv = 8, .head_dim = 128, .n_ff = 3072, .rope_base = 1000000, .rms_eps = 1e-6, .tied = true, .qk_norm = true, .source = "Qwen/Qwen3-0.6B config.json"},
    /* the newer families */
    {.name = "qwen3-30b-a3b", .arch = "qwen3moe", .n_vocab = 151936, .n_ctx = 40960, .n_embd = 2048, .n_layer = 48,
     .n_head = 32, .n_head_kv = 4, .head_dim = 128, .n_ff = 6144, .rope_base = 1000000, .rms_eps = 1e-6,
     .qk_norm = true, .n_expert = 128, .n_expert_used = 8, .n_ff_exp = 768,
     .source = "Qwen/Qwen3-30B-A3B config.json"},
    {.name = "gpt-oss-20b", .arch = "gpt-oss", .n_vocab = 201088, .n_ctx = 131072, .n_embd = 2880, .n_layer = 24,
     .n_head = 64, .n_head_kv = 8, .head_dim = 64, .n_ff = 2880, .rope_base = 150000, .rms_eps = 1e-5,
     .n_expert = 32, .n_expert_used = 4, .n_ff_exp = 2880, .n_swa = 128, .rope_scaling = "yarn", .rope_scale = 32,
     .rope_scaling_orig_ctx = 4096, .source = "openai/gpt-oss-20b config.json"},
    {.name = "gemma-2-2b", .arch = "gemma2", .n_vocab = 256000, .n_ctx = 8192, .n_embd = 2304, .n_layer = 26,
     .n_head = 8, .n_head_kv = 4, .head_dim = 256, .n_ff = 9216, .rope_base = 10000, .rms_eps = 1e-6, .tied = true,
     .n_swa = 4096, .attn_softcap = 50, .final_softcap = 30, .source = "google/gemma-2-2b config.json"},
    {.name = "gemma-3-1b", .arch = "gemma3", .n_vocab = 262144, .n_ctx = 32768, .n_embd = 1152, .n_layer = 26,
     .n_head = 4, .n_head_kv = 1, .head_dim = 256, .n_ff = 6912, .rope_base = 1000000, .rms_eps = 1e-6,
     .tied = true, .qk_norm = true, .n_swa = 512, .rope_base_swa = 10000,
     .source = "google/gemma-3-1b-it config.json"},
    {.name = "gemma-3-4b", .arch = "gemma3", .n_vocab = 262208, .n_ctx = 131072, .n_embd = 2560, .n_layer = 34,
     .n_head = 8, .n_head_kv = 4, .head_dim = 256, .n_ff = 10240, .rope_base = 1000000, .rms_eps = 1e-6,
     .tied = true, .qk_norm = true, .n_swa = 1024, .rope_base_swa = 10000, .rope_scaling = "linear", .rope_scale = 8,
     .source = "google/gemma-3-4b-it config.json (text_config)"},
    {.name = "phi-3-mini", .arch = "phi3", .n_vocab = 32064, .n_ctx = 4096, .n_embd = 3072, .n_layer = 32,
     .n_head = 32, .n_head_kv = 32, .head_dim = 96, .n_ff = 8192, .rope_base = 10000, .rms_eps = 1e-5,
     .source = "microsoft/Phi-3-mini-4k-instruct config.json"},
    {.name = "phi-4-mini", .arch = "phi3", .n_vocab = 200064, .n_ctx = 131072, .n_embd = 3072, .n_layer = 32,
     .n_head = 24, .n_head_kv = 8, .head_dim = 128, .n_ff = 8192, .rope_base = 10000, .rms_eps = 1e-5, .tied = true,
     .n_rot = 96, .rope_scaling = "longrope", .rope_scaling_orig_ctx = 4096,
     .source = "microsoft/Phi-4-mini-instruct config.json"},
    {.name = "mixtral-8x7b", .arch = "llama", .n_vocab = 32000, .n_ctx = 32768, .n_embd = 4096, .n_layer = 32,
     .n_head = 32, .n_head_kv = 8, .head_dim = 128, .n_ff = 14336, .rope_base = 1000000, .rms_eps = 1e-5,
     .n_expert = 8, .n_expert_used = 2, .n_ff_exp = 14336, .source = "mistralai/Mixtral-8x7B-v0.1 config.json"},
};

size_t synth_n_shapes(void)
{
    return sizeof shapes / sizeof shapes[0];
}

const struct synth_shape *synth_shape_at(size_t i)
{
    return i < synth_n_shapes() ? &shapes[i] : NULL;
}

const struct synth_shape *synth_shape_find(const char *name)
{
    for (size_t i = 0; i < synth_n_shapes(); i++)
        if (strcmp(shapes[i].name, name) == 0)
            return &shapes[i];
    return NULL;
}

static int parse_num(const char *key, const char *val, double lo, double hi, double *out, pb_err *err)
{
    char *end;
    double v = strtod(val, &end);
    if (end == val || *end || !isfinite(v) || v < lo || v > hi)
        return pb_fail(err, PB_EINVAL, "--dims: %s=%s is not a number in %g..%g", key, val, lo, hi);
    *out = v;
    return PB_OK;
}

int synth_parse_dims(const char *spec, struct synth_shape *s, pb_err *err)
{
    char buf[512];
    if (strlen(spec) >= sizeof buf)
        return pb_fail(err, PB_EINVAL, "--dims: specification too long");
    strcpy(buf, spec);
    struct {
        const char *key;
        int64_t *dst;
        double lo, hi;
    } ints[] = {
        {"vocab", &s->n_vocab, 4, 1 << 24}, {"ctx", &s->n_ctx, 1, 1 << 24},     {"dim", &s->n_embd, 2, 1 << 16},
        {"layers", &s->n_layer, 1, 1024},   {"heads", &s->n_head, 1, 1024},     {"kv_heads", &s->n_head_kv, 1, 1024},
        {"head_dim", &s->head_dim, 0, 4096}, {"ffn", &s->n_ff, 1, 1 << 20},
    };
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq)
            return pb_fail(err, PB_EINVAL, "--dims: '%s' is not key=value", item);
        *eq = 0;
        const char *key = item, *val = eq + 1;
        double v = 0;
        int rc, found = 0;
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            if (strcmp(key, ints[i].key) == 0) {
                if ((rc = parse_num(key, val, ints[i].lo, ints[i].hi, &v, err)))
                    return rc;
                if (v != floor(v))
                    return pb_fail(err, PB_EINVAL, "--dims: %s must be an integer", key);
                *ints[i].dst = (int64_t)v;
                found = 1;
            }
        }
        if (found)
            continue;
        if (strcmp(key, "arch") == 0) {
            static const char *const archs[] = {"llama", "qwen2", "qwen3", "qwen3moe", "phi3", "gemma2", "gemma3",
                                                "gpt-oss"};
            bool known = false;
            for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
                known |= strcmp(val, archs[i]) == 0;
            if (!known)
                return pb_fail(err, PB_EINVAL, "--dims: arch must be llama, qwen2, qwen3, qwen3moe, phi3, gemma2, "
                               "gemma3 or gpt-oss");
            snprintf(s->arch, sizeof s->arch, "%s", val);
            s->qkv_bias = strcmp(val, "qwen2") == 0;
            s->qk_norm = !strcmp(val, "qwen3") || !strcmp(val, "qwen3moe") || !strcmp(val, "gemma3");
        } else if (strcmp(key, "experts") == 0) {
            /* N:K:FFN, N experts of which K are used, FFN wide */
            long long n_exp, used, ff;
            int end = 0;
            if (sscanf(val, "%lld:%lld:%lld%n", &n_exp, &used, &ff, &end) != 3 || val[end] || n_exp < 1 ||
                n_exp > 1024 || used < 1 || used > n_exp || ff < 1 || ff > (1 << 20))
                return pb_fail(err, PB_EINVAL, "--dims: experts=%s is not N:K:FFN (K <= N <= 1024)", val);
            s->n_expert = n_exp;
            s->n_expert_used = used;
            s->n_ff_exp = ff;
        } else if (strcmp(key, "swa") == 0) {
            if ((rc = parse_num(key, val, 0, 1 << 24, &v, err)))
                return rc;
            s->n_swa = (int64_t)v;
        } else if (strcmp(key, "softcap") == 0) {
            /* ATTN:FINAL */
            double at, fi;
            int end = 0;
            if (sscanf(val, "%lf:%lf%n", &at, &fi, &end) != 2 || val[end] || !(at >= 0) || !(fi >= 0))
                return pb_fail(err, PB_EINVAL, "--dims: softcap=%s is not ATTN:FINAL", val);
            s->attn_softcap = at;
            s->final_softcap = fi;
        } else if (strcmp(key, "rope_base") == 0) {
            if ((rc = parse_num(key, val, 1, 1e9, &s->rope_base, err)))
                return rc;
        } else if (strcmp(key, "eps") == 0) {
            if ((rc = parse_num(key, val, 1e-12, 1, &s->rms_eps, err)))
                return rc;
        } else if (strcmp(key, "tied") == 0) {
            if ((rc = parse_num(key, val, 0, 1, &v, err)))
                return rc;
            s->tied = v != 0;
        } else {
            return pb_fail(err, PB_EINVAL, "--dims: unknown key '%s' (known: arch, dim, layers, heads, kv_heads, "
                           "head_dim, ffn, vocab, ctx, rope_base, eps, tied, experts, swa, softcap)", key);
        }
    }
    if ((!strcmp(s->arch, "qwen3moe") || !strcmp(s->arch, "gpt-oss")) && s->n_expert == 0)
        return pb_fail(err, PB_EINVAL, "--dims: arch %s needs experts=N:K:FFN", s->arch);
    if (s->n_expert && strcmp(s->arch, "qwen3moe") && strcmp(s->arch, "gpt-oss") && strcmp(s->arch, "llama"))
        return pb_fail(err, PB_EINVAL, "--dims: experts go with arch llama, qwen3moe or gpt-oss, not %s", s->arch);
    if (s->n_swa && strcmp(s->arch, "gemma2") && strcmp(s->arch, "gemma3") && strcmp(s->arch, "gpt-oss"))
        return pb_fail(err, PB_EINVAL, "--dims: a sliding window goes with arch gemma2, gemma3 or gpt-oss");
    int64_t hd = s->head_dim ? s->head_dim : (s->n_head ? s->n_embd / s->n_head : 0);
    if (s->n_head % s->n_head_kv || hd < 2 || hd % 2)
        return pb_fail(err, PB_EINVAL, "--dims: heads must be a multiple of kv_heads and the head size even "
                       "(heads %" PRId64 ", kv_heads %" PRId64 ", head size %" PRId64 ")", s->n_head, s->n_head_kv, hd);
    char base[sizeof s->name];
    snprintf(base, sizeof base, "%s", s->name);
    snprintf(s->name, sizeof s->name, "%.24s+dims", base[0] ? base : s->arch);
    s->source = "--dims";
    return PB_OK;
}

/* ---- vocabulary ---- */

/* A SentencePiece-style vocabulary of exactly n tokens: <unk>, <s>, </s>,
 * the 256 byte tokens, then pieces of growing length (printable ASCII,
 * then lowercase letter strings, each with and without the space mark),
 * scored so that earlier pieces win merges. Enough for byte-exact round
 * trips of any text; the point is a model of the right size, not a good
 * tokenizer. */
static int write_builtin_vocab(struct gguf_writer *w, int64_t n, pb_err *err)
{
    if (n < 300)
        return pb_fail(err, PB_EINVAL, "vocabulary of %" PRId64 " is too small for the built-in one (min 300); "
                       "use --vocab-from", n);
    struct gguf_str *toks = malloc((size_t)n * sizeof *toks);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    char *arena = malloc((size_t)n * 16);
    if (!toks || !scores || !types || !arena) {
        free(toks);
        free(scores);
        free(types);
        free(arena);
        return pb_fail(err, PB_ENOMEM, "out of memory for the vocabulary");
    }
    char *p = arena;
    int64_t k = 0;
#define ADD(str, len, type)                                                                                            \
    do {                                                                                                               \
        memcpy(p, (str), (len));                                                                                       \
        toks[k] = (struct gguf_str){(uint64_t)(len), p};                                                               \
        types[k] = (type);                                                                                             \
        scores[k] = (type) == TOK_NORMAL ? -(float)k : 0.0f;                                                           \
        p += (len);                                                                                                    \
        k++;                                                                                                           \
    } while (0)
    ADD("<unk>", 5, TOK_UNKNOWN);
    ADD("<s>", 3, TOK_CONTROL);
    ADD("</s>", 4, TOK_CONTROL);
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        ADD(hex, 6, TOK_BYTE);
    }
    ADD("\xe2\x96\x81", 3, TOK_NORMAL);
    for (int c = 33; c < 127 && k + 2 <= n; c++) {
        char s[4] = {"\xe2\x96\x81"[0], "\xe2\x96\x81"[1], "\xe2\x96\x81"[2], (char)c};
        ADD(s + 3, 1, TOK_NORMAL);
        ADD(s, 4, TOK_NORMAL);
    }
    for (int len = 2; k < n && len <= 8; len++) {
        int64_t combos = 1;
        for (int i = 0; i < len; i++)
            combos *= 26;
        for (int64_t c = 0; c < combos && k < n; c++) {
            char s[12];
            memcpy(s, "\xe2\x96\x81", 3);
            int64_t v = c;
            for (int i = len - 1; i >= 0; i--, v /= 26)
                s[3 + i] = (char)('a' + v % 26);
            ADD(s, (size_t)len + 3, TOK_NORMAL);
            if (k < n)
                ADD(s + 3, (size_t)len, TOK_NORMAL);
        }
    }
#undef ADD
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)k);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, scores, (uint64_t)k);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)k);
    gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    free(toks);
    free(scores);
    free(types);
    free(arena);
    return PB_OK;
}

/* Copies tokenizer.* from path; returns its vocabulary size in *n. */
static int copy_vocab(struct gguf_writer *w, const char *path, int64_t *n, pb_err *err)
{
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err);
    if (rc)
        return rc;
    struct gguf_arr toks;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, err) != 1 || toks.type != GGUF_STRING) {
        gguf_close(f);
        return pb_fail(err, PB_EFORMAT, "%s: has no tokenizer.ggml.tokens to copy", path);
    }
    *n = (int64_t)toks.n;
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        if (strncmp(gguf_kv_key(f, i), "tokenizer.", 10) == 0)
            gguf_set_from(w, f, i);
    gguf_close(f);
    return PB_OK;
}

/* ---- tensors ---- */

enum fill { FILL_RANDOM, FILL_ONES, FILL_ROPE_FREQS, FILL_LONGROPE };

struct planned {
    char name[64];
    uint32_t n_dims;
    int64_t ne[3];
    enum pb_type type;
    enum fill fill;
};

struct plan {
    struct planned *t;
    size_t n, cap;
};

static int plan_add(struct plan *pl, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                    enum fill fill)
{
    if (vec_reserve((void **)&pl->t, &pl->cap, pl->n + 1, sizeof *pl->t))
        return PB_ENOMEM;
    struct planned *t = &pl->t[pl->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->fill = fill;
    return PB_OK;
}

static int plan_model(const struct synth_shape *s, int64_t n_vocab, struct plan *pl)
{
    const int64_t E = s->n_embd, D = s->head_dim ? s->head_dim : s->n_embd / s->n_head;
    const int64_t QD = s->n_head * D, KVD = s->n_head_kv * D, X = s->n_expert, F = s->n_ff_exp;
    const bool gemma = !strcmp(s->arch, "gemma2") || !strcmp(s->arch, "gemma3"), oai = !strcmp(s->arch, "gpt-oss"),
               phi3 = !strcmp(s->arch, "phi3");
    int rc = plan_add(pl, "token_embd.weight", 2, E, n_vocab, 1, FILL_RANDOM);
    for (int64_t l = 0; l < s->n_layer && !rc; l++) {
        char n[64];
#define LAYER(suffix, nd, a, b, c, fill)                                                                              \
    (snprintf(n, sizeof n, "blk.%" PRId64 ".%s", l, suffix), plan_add(pl, n, nd, a, b, c, fill))
        rc = LAYER("attn_norm.weight", 1, E, 1, 1, FILL_ONES);
        if (!rc && phi3) /* Q, K and V fused */
            rc = LAYER("attn_qkv.weight", 2, E, QD + 2 * KVD, 1, FILL_RANDOM);
        else if (!rc)
            rc = LAYER("attn_q.weight", 2, E, QD, 1, FILL_RANDOM) || LAYER("attn_k.weight", 2, E, KVD, 1, FILL_RANDOM) ||
                 LAYER("attn_v.weight", 2, E, KVD, 1, FILL_RANDOM);
        if (!rc)
            rc = LAYER("attn_output.weight", 2, QD, E, 1, FILL_RANDOM);
        if (!rc && (s->qkv_bias || oai))
            rc = LAYER("attn_q.bias", 1, QD, 1, 1, FILL_RANDOM) || LAYER("attn_k.bias", 1, KVD, 1, 1, FILL_RANDOM) ||
                 LAYER("attn_v.bias", 1, KVD, 1, 1, FILL_RANDOM);
        if (!rc && oai)
            rc = LAYER("attn_output.bias", 1, E, 1, 1, FILL_RANDOM) ||
                 LAYER("attn_sinks.weight", 1, s->n_head, 1, 1, FILL_RANDOM);
        if (!rc && s->qk_norm)
            rc = LAYER("attn_q_norm.weight", 1, D, 1, 1, FILL_ONES) || LAYER("attn_k_norm.weight", 1, D, 1, 1, FILL_ONES);
        if (!rc && (gemma || oai))
            rc = LAYER("post_attention_norm.weight", 1, E, 1, 1, FILL_ONES);
        if (!rc && !oai)
            rc = LAYER("ffn_norm.weight", 1, E, 1, 1, FILL_ONES);
        if (!rc && gemma)
            rc = LAYER("post_ffw_norm.weight", 1, E, 1, 1, FILL_ONES);
        if (!rc && X) {
            rc = LAYER("ffn_gate_inp.weight", 2, E, X, 1, FILL_RANDOM) ||
                 LAYER("ffn_gate_exps.weight", 3, E, F, X, FILL_RANDOM) ||
                 LAYER("ffn_up_exps.weight", 3, E, F, X, FILL_RANDOM) ||
                 LAYER("ffn_down_exps.weight", 3, F, E, X, FILL_RANDOM);
            if (!rc && oai)
                rc = LAYER("ffn_gate_inp.bias", 1, X, 1, 1, FILL_RANDOM) ||
                     LAYER("ffn_gate_exps.bias", 2, F, X, 1, FILL_RANDOM) ||
                     LAYER("ffn_up_exps.bias", 2, F, X, 1, FILL_RANDOM) ||
                     LAYER("ffn_down_exps.bias", 2, E, X, 1, FILL_RANDOM);
        } else if (!rc && phi3) { /* gate and up fused, gate first */
            rc = LAYER("ffn_up.weight", 2, E, 2 * s->n_ff, 1, FILL_RANDOM) ||
                 LAYER("ffn_down.weight", 2, s->n_ff, E, 1, FILL_RANDOM);
        } else if (!rc) {
            rc = LAYER("ffn_gate.weight", 2, E, s->n_ff, 1, FILL_RANDOM) ||
                 LAYER("ffn_up.weight", 2, E, s->n_ff, 1, FILL_RANDOM) ||
                 LAYER("ffn_down.weight", 2, s->n_ff, E, 1, FILL_RANDOM);
        }
#undef LAYER
    }
    const int64_t n_rot = s->n_rot ? s->n_rot : D;
    if (!rc)
        rc = plan_add(pl, "output_norm.weight", 1, E, 1, 1, FILL_ONES);
    if (!rc && s->rope_factor > 0)
        rc = plan_add(pl, "rope_freqs.weight", 1, D / 2, 1, 1, FILL_ROPE_FREQS);
    if (!rc && s->rope_scaling && !strcmp(s->rope_scaling, "longrope"))
        rc = plan_add(pl, "rope_factors_long.weight", 1, n_rot / 2, 1, 1, FILL_LONGROPE) ||
             plan_add(pl, "rope_factors_short.weight", 1, n_rot / 2, 1, 1, FILL_ONES);
    if (!rc && !s->tied)
        rc = plan_add(pl, "output.weight", 2, E, n_vocab, 1, FILL_RANDOM);
    return rc ? PB_ENOMEM : PB_OK;
}

static void set_hparams(struct gguf_writer *w, const struct synth_params *p, int64_t n_vocab)
{
    const struct synth_shape *s = &p->shape;
    const char *a = s->arch;
    char key[96], name[96];
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    gguf_set_str(w, "general.architecture", a);
    snprintf(name, sizeof name, "synth %s", s->name);
    gguf_set_str(w, "general.name", name);
    gguf_set_u32(w, "general.file_type", (uint32_t)p->ftype);
    gguf_set_u32(w, "general.quantization_version", 2);
    gguf_set_u32(w, KEY("context_length"), (uint32_t)s->n_ctx);
    gguf_set_u32(w, KEY("embedding_length"), (uint32_t)s->n_embd);
    gguf_set_u32(w, KEY("block_count"), (uint32_t)s->n_layer);
    gguf_set_u32(w, KEY("feed_forward_length"), (uint32_t)s->n_ff);
    gguf_set_u32(w, KEY("attention.head_count"), (uint32_t)s->n_head);
    gguf_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->n_head_kv);
    int64_t hd = s->head_dim ? s->head_dim : s->n_embd / s->n_head;
    gguf_set_u32(w, KEY("attention.key_length"), (uint32_t)hd);
    gguf_set_u32(w, KEY("attention.value_length"), (uint32_t)hd);
    gguf_set_u32(w, KEY("rope.dimension_count"), (uint32_t)(s->n_rot ? s->n_rot : hd));
    gguf_set_f32(w, KEY("rope.freq_base"), (float)s->rope_base);
    if (s->n_expert) {
        gguf_set_u32(w, KEY("expert_count"), (uint32_t)s->n_expert);
        gguf_set_u32(w, KEY("expert_used_count"), (uint32_t)s->n_expert_used);
        gguf_set_u32(w, KEY("expert_feed_forward_length"), (uint32_t)s->n_ff_exp);
    }
    if (s->n_swa)
        gguf_set_u32(w, KEY("attention.sliding_window"), (uint32_t)s->n_swa);
    if (s->rope_base_swa > 0)
        gguf_set_f32(w, KEY("rope.freq_base_swa"), (float)s->rope_base_swa);
    if (s->attn_softcap > 0 || s->final_softcap > 0) {
        gguf_set_f32(w, KEY("attn_logit_softcapping"), (float)s->attn_softcap);
        gguf_set_f32(w, KEY("final_logit_softcapping"), (float)s->final_softcap);
    }
    if (s->rope_scaling && strcmp(s->rope_scaling, "longrope") != 0) {
        gguf_set_str(w, KEY("rope.scaling.type"), s->rope_scaling);
        gguf_set_f32(w, KEY("rope.scaling.factor"), (float)s->rope_scale);
    }
    if (s->rope_scaling_orig_ctx)
        gguf_set_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)s->rope_scaling_orig_ctx);
    if (s->rope_scaling && !strcmp(s->rope_scaling, "longrope")) {
        /* as the converter writes it: sqrt(1 + ln(scale) / ln(original context)) */
        const double scale = (double)s->n_ctx / (double)s->rope_scaling_orig_ctx;
        gguf_set_f32(w, KEY("rope.scaling.attn_factor"),
                     (float)(scale > 1 ? sqrt(1 + log(scale) / log((double)s->rope_scaling_orig_ctx)) : 1.0));
    }
    gguf_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)s->rms_eps);
    gguf_set_u32(w, KEY("vocab_size"), (uint32_t)n_vocab);
    gguf_set_u64(w, "plumb.synth.seed", p->seed);
    gguf_set_str(w, "plumb.synth.source", s->source ? s->source : "");
#undef KEY
}

struct fill_ctx {
    uint64_t seed;
    float stddev;
    enum fill fill;
    const struct synth_shape *shape;
};

/* Llama 3's RoPE frequency factors (Meta's published scheme): long
 * wavelengths are slowed by the scaling factor, short ones kept, with a
 * smooth blend between. ggml divides each angle by its factor. */
static void llama3_rope_factors(const struct synth_shape *s, float *dst, int64_t n)
{
    const double pi = 3.14159265358979323846;
    const double dim = (double)(2 * n);
    const double low_wavelen = s->rope_orig_ctx / s->rope_low, high_wavelen = s->rope_orig_ctx / s->rope_high;
    for (int64_t i = 0; i < n; i++) {
        double freq = pow(s->rope_base, -2.0 * (double)i / dim);
        double wavelen = 2 * pi / freq;
        double f;
        if (wavelen < high_wavelen) {
            f = 1;
        } else if (wavelen > low_wavelen) {
            f = s->rope_factor;
        } else {
            double smooth = (s->rope_orig_ctx / wavelen - s->rope_low) / (s->rope_high - s->rope_low);
            f = 1 / ((1 - smooth) / s->rope_factor + smooth);
        }
        dst[i] = (float)f;
    }
}

/* Row r of a tensor: its own generator seeded from (tensor, row), so the
 * result does not depend on the number of threads. */
static void fill_row(void *arg, int64_t r, float *dst, int64_t n)
{
    const struct fill_ctx *c = arg;
    if (c->fill == FILL_ROPE_FREQS) {
        llama3_rope_factors(c->shape, dst, n);
        return;
    }
    if (c->fill == FILL_LONGROPE) { /* plausible long-context factors: 1 up to the context multiple */
        const double top = (double)c->shape->n_ctx / (double)c->shape->rope_scaling_orig_ctx;
        for (int64_t i = 0; i < n; i++)
            dst[i] = (float)(1.0 + (top - 1.0) * (double)i / (double)(n > 1 ? n - 1 : 1));
        return;
    }
    if (c->fill == FILL_ONES) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = 1.0f;
        return;
    }
    struct rng g;
    rng_seed(&g, c->seed ^ ((uint64_t)r * 0x9e3779b97f4a7c15ull));
    for (int64_t i = 0; i < n; i++)
        dst[i] = rng_normal(&g) * c->stddev;
}

/* The output: a path, or a descriptor with a name for messages. */
struct synth_target {
    const char *path;
    int fd;
};

static int synth_emit(const struct synth_target *out, const struct synth_params *p, uint64_t *bytes_written,
                      pb_err *err)
{
    const struct synth_shape *s = &p->shape;
    struct gguf_writer *w = NULL;
    struct plan pl = {0};
    struct rows_writer rw = {0};
    int64_t n_vocab = s->n_vocab;
    *bytes_written = 0;
    int rc = gguf_writer_create(&w, err);
    if (rc)
        goto done;
    if (p->vocab_from)
        rc = copy_vocab(w, p->vocab_from, &n_vocab, err);
    else
        rc = write_builtin_vocab(w, n_vocab, err);
    if (rc)
        goto done;
    set_hparams(w, p, n_vocab);
    if ((rc = plan_model(s, n_vocab, &pl))) {
        rc = pb_fail(err, rc, "out of memory");
        goto done;
    }
    int64_t max_row = 1;
    uint64_t total = 0;
    const struct ftype_model model = {(int)(s->n_head / s->n_head_kv), 0};
    for (size_t i = 0; i < pl.n; i++) {
        struct planned *t = &pl.t[i];
        int layer = -1;
        if (strncmp(t->name, "blk.", 4) == 0)
            layer = atoi(t->name + 4);
        struct ftype_tensor info = {t->name, t->n_dims, t->ne[0], layer, (int)s->n_layer,
                                    strcmp(t->name, "output.weight") == 0 ||
                                        (s->tied && strcmp(t->name, "token_embd.weight") == 0)};
        t->type = pb_ftype_model_tensor_type(p->ftype, &model, &info);
        if ((rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, err)))
            goto done;
        if (t->ne[0] > max_row)
            max_row = t->ne[0];
        total += pb_row_size(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2]);
    }
    if ((rc = rows_writer_init(&rw, p->n_threads, max_row, err)) || (rc = out->path ? gguf_writer_begin(w, out->path, err)
                                                                         : gguf_writer_begin_fd(w, out->fd, "(memory)", err)))
        goto done;
    for (size_t i = 0; i < pl.n; i++) {
        const struct planned *t = &pl.t[i];
        struct fill_ctx fc = {rng_hash_str(t->name) ^ (p->seed * 0xd1b54a32d192ed03ull),
                              p->stddev > 0 ? p->stddev : 0.02f, t->fill, s};
        if ((rc = rows_write(&rw, w, fill_row, &fc, t->ne[1] * t->ne[2], t->ne[0], t->type, p->distinct_rows, err)))
            goto done;
        *bytes_written += pb_row_size(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2]);
        if (p->progress)
            p->progress(p->user, *bytes_written, total, t->name);
    }
    rc = gguf_writer_finish(w, err);
done:
    gguf_writer_free(w);
    rows_writer_free(&rw);
    free(pl.t);
    return rc;
}

int synth_write(const char *out, const struct synth_params *p, uint64_t *bytes_written, pb_err *err)
{
    struct synth_target t = {out, -1};
    return synth_emit(&t, p, bytes_written, err);
}

int synth_write_fd(int fd, const struct synth_params *p, uint64_t *bytes_written, pb_err *err)
{
    struct synth_target t = {NULL, fd};
    return synth_emit(&t, p, bytes_written, err);
}
