/* Hyperparameters from GGUF metadata, with the range checks that make the
 * buffer sizes computed from them safe. */
#include "model/model_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Reads <arch>.<suffix>; absent keys take def, or fail when required. */
static int arch_int(const struct gguf_file *f, const char *arch, const char *suffix, bool required, int64_t def,
                    int64_t lo, int64_t hi, int64_t *out, pb_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_int(f, key, out, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (required)
            return pb_fail(err, PB_EFORMAT, "%s: missing metadata '%s'", gguf_name(f), key);
        *out = def;
    }
    /* defaults are derived from other keys, so they are checked too */
    if (*out < lo || *out > hi)
        return pb_fail(err, PB_EFORMAT, "%s: metadata '%s' is %" PRId64 "%s, expected %" PRId64 "..%" PRId64,
                       gguf_name(f), key, *out, rc == 0 ? " (derived: the key is absent)" : "", lo, hi);
    return PB_OK;
}

static int arch_float(const struct gguf_file *f, const char *arch, const char *suffix, double def, double lo,
                      double hi, float *out, pb_err *err)
{
    char key[160];
    double v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_float(f, key, &v, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        v = def;
    if (!isfinite(v) || v < lo || v > hi)
        return pb_fail(err, PB_EFORMAT, "%s: metadata '%s' is %g, expected %g..%g", gguf_name(f), key, v, lo, hi);
    *out = (float)v;
    return PB_OK;
}

int model_hparams_read(const struct gguf_file *f, struct model_hparams *hp, pb_err *err)
{
    memset(hp, 0, sizeof *hp);
    struct gguf_str arch;
    int rc = gguf_get_str(f, "general.architecture", &arch, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return pb_fail(err, PB_EFORMAT, "%s: missing metadata 'general.architecture'", gguf_name(f));
    if (arch.len == 0 || arch.len >= sizeof hp->arch || memchr(arch.data, 0, arch.len))
        return pb_fail(err, PB_EFORMAT, "%s: general.architecture is not a valid name", gguf_name(f));
    memcpy(hp->arch, arch.data, arch.len);
    const char *a = hp->arch;

    if ((rc = arch_int(f, a, "context_length", false, 0, 0, INT32_MAX, &hp->n_ctx_train, err)) ||
        (rc = arch_int(f, a, "embedding_length", true, 0, 1, 1 << 20, &hp->n_embd, err)) ||
        (rc = arch_int(f, a, "block_count", true, 0, 1, 1 << 16, &hp->n_layer, err)) ||
        (rc = arch_int(f, a, "feed_forward_length", true, 0, 1, 1 << 22, &hp->n_ff, err)) ||
        (rc = arch_int(f, a, "attention.head_count", true, 0, 1, 1 << 14, &hp->n_head, err)) ||
        (rc = arch_int(f, a, "attention.head_count_kv", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv, err)))
        return rc;
    if (hp->n_head % hp->n_head_kv != 0)
        return pb_fail(err, PB_EFORMAT, "%s: %" PRId64 " attention heads are not a multiple of %" PRId64 " KV heads",
                       gguf_name(f), hp->n_head, hp->n_head_kv);
    if ((rc = arch_int(f, a, "attention.key_length", false, hp->n_embd / hp->n_head, 1, 1 << 14, &hp->head_dim, err)))
        return rc;
    if (hp->head_dim % 2)
        return pb_fail(err, PB_EFORMAT, "%s: head size %" PRId64 " is odd", gguf_name(f), hp->head_dim);
    if ((rc = arch_int(f, a, "rope.dimension_count", false, hp->head_dim, 2, hp->head_dim, &hp->n_rot, err)))
        return rc;
    if (hp->n_rot % 2)
        return pb_fail(err, PB_EFORMAT, "%s: RoPE dimension count %" PRId64 " is odd", gguf_name(f), hp->n_rot);
    if ((rc = arch_float(f, a, "attention.layer_norm_rms_epsilon", 1e-5, 1e-12, 1.0, &hp->rms_eps, err)) ||
        (rc = arch_float(f, a, "rope.freq_base", 10000.0, 1e-3, 1e12, &hp->rope_base, err)))
        return rc;

    /* RoPE scaling: <arch>.rope.scaling.type / .factor, or the older
     * <arch>.rope.scale_linear. Llama 3's scheme comes as the rope_freqs
     * tensor instead and needs no key. */
    char key[160];
    struct gguf_str st;
    hp->rope_scaling = ROPE_SCALING_NONE;
    hp->rope_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if ((rc = gguf_get_str(f, key, &st, err)) < 0)
        return rc;
    if (rc == 1) {
        hp->rope_scaling = gguf_str_eq(st, "none")       ? ROPE_SCALING_NONE
                           : gguf_str_eq(st, "linear")   ? ROPE_SCALING_LINEAR
                           : gguf_str_eq(st, "yarn")     ? ROPE_SCALING_YARN
                           : gguf_str_eq(st, "longrope") ? ROPE_SCALING_LONGROPE
                                                         : ROPE_SCALING_OTHER;
        if ((rc = arch_float(f, a, "rope.scaling.factor", 1.0, 1e-3, 1e6, &hp->rope_scale, err)))
            return rc;
    } else {
        if ((rc = arch_float(f, a, "rope.scale_linear", 1.0, 1e-3, 1e6, &hp->rope_scale, err)))
            return rc;
        if (hp->rope_scale != 1.0f)
            hp->rope_scaling = ROPE_SCALING_LINEAR;
    }

    hp->n_ctx_orig = hp->n_ctx_train;
    if ((rc = arch_int(f, a, "rope.scaling.original_context_length", false, hp->n_ctx_train, 0, INT32_MAX,
                       &hp->n_ctx_orig, err)) ||
        (rc = arch_float(f, a, "rope.scaling.attn_factor", 1.0, 1e-3, 1e3, &hp->rope_attn_factor, err)) ||
        (rc = arch_float(f, a, "rope.scaling.yarn_beta_fast", 32.0, 1e-3, 1e6, &hp->yarn_beta_fast, err)) ||
        (rc = arch_float(f, a, "rope.scaling.yarn_beta_slow", 1.0, 1e-3, 1e6, &hp->yarn_beta_slow, err)) ||
        (rc = arch_float(f, a, "rope.scaling.yarn_log_multiplier", 0.0, 0.0, 1e3, &hp->yarn_log_mul, err)))
        return rc;
    if (hp->rope_scaling == ROPE_SCALING_YARN && hp->n_ctx_orig < 1)
        return pb_fail(err, PB_EFORMAT, "%s: YaRN RoPE scaling needs %s.rope.scaling.original_context_length",
                       gguf_name(f), a);

    /* mixture of experts */
    if ((rc = arch_int(f, a, "expert_count", false, 0, 0, 4096, &hp->n_expert, err)))
        return rc;
    if (hp->n_expert > 0 &&
        ((rc = arch_int(f, a, "expert_used_count", true, 0, 1, hp->n_expert, &hp->n_expert_used, err)) ||
         (rc = arch_int(f, a, "expert_feed_forward_length", false, hp->n_ff, 1, 1 << 22, &hp->n_ff_exp, err))))
        return rc;

    /* the family's conventions: sliding windows, their RoPE base, soft-caps */
    const struct arch_desc *d = arch_find(a);
    hp->rope_base_swa = hp->rope_base;
    if (d && d->swa_pattern > 0) {
        if ((rc = arch_int(f, a, "attention.sliding_window", false, 0, 0, INT32_MAX, &hp->n_swa, err)))
            return rc;
        hp->swa_pattern = hp->n_swa > 0 ? d->swa_pattern : 0;
        if ((rc = arch_float(f, a, "rope.freq_base_swa", d->rope_base_swa > 0 ? d->rope_base_swa : hp->rope_base,
                             1e-3, 1e12, &hp->rope_base_swa, err)))
            return rc;
    }
    if (d && (d->needs & ARCH_SOFTCAP) &&
        ((rc = arch_float(f, a, "attn_logit_softcapping", 50.0, 0.0, 1e6, &hp->attn_softcap, err)) ||
         (rc = arch_float(f, a, "final_logit_softcapping", 30.0, 0.0, 1e6, &hp->final_softcap, err))))
        return rc;
    /* gemma3 soft-caps its logits only without sliding windows (llama.cpp's non-iswa graph) */
    if (d && !strcmp(d->name, "gemma3") && hp->n_swa == 0 &&
        (rc = arch_float(f, a, "final_logit_softcapping", 0.0, 0.0, 1e6, &hp->final_softcap, err)))
        return rc;

    /* encoders: LayerNorm's epsilon, attention both ways, pooling */
    hp->causal = true;
    hp->pooling = MODEL_POOL_LAST;
    if (d && (d->needs & ARCH_ENCODER)) {
        int64_t pool = MODEL_POOL_MEAN;
        bool causal = false;
        if ((rc = arch_float(f, a, "attention.layer_norm_epsilon", 1e-12, 1e-13, 1.0, &hp->rms_eps, err)) ||
            (rc = arch_int(f, a, "pooling_type", false, MODEL_POOL_MEAN, 0, 4, &pool, err)))
            return rc;
        snprintf(key, sizeof key, "%s.attention.causal", a);
        if ((rc = gguf_get_bool(f, key, &causal, err)) < 0)
            return rc;
        hp->causal = causal;
        if (pool == 4)
            return pb_fail(err, PB_EUNSUPPORTED, "%s: pooling type 4 (rank: a reranker) is not supported",
                           gguf_name(f));
        hp->pooling = (enum model_pooling)pool;
    }

    const struct gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    struct gguf_arr toks;
    if (emb)
        hp->n_vocab = emb->ne[1];
    else if (gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, NULL) == 1)
        hp->n_vocab = (int64_t)toks.n; /* vocabulary-only file */
    return PB_OK;
}

bool model_layer_is_swa(const struct model_hparams *hp, int l)
{
    return hp->n_swa > 0 && hp->swa_pattern > 0 && l % hp->swa_pattern < hp->swa_pattern - 1;
}
