#define _POSIX_C_SOURCE 200809L
/* The newer architectures (gemma2, gemma3, qwen3moe, phi3, a Mixtral-style
 * llama MoE, gpt-oss) against llama.cpp's outputs in reference-arch.json:
 * one test per model of the file, read at run time. Each checks the
 * prompt's tokens, the greedy tokens for the leading n_greedy_stable steps
 * (later ones sit on near-ties), the top-5 logits of those steps and every
 * logit after prompt p1 (logits/<model>.p1.f32), at the tolerance
 * test_model.c uses: 1e-3 for F32 weights, 0.05 for quantized ones. Every
 * token of the stable steps must match (the scalar kernels are the SIMD
 * ones' twins bit for bit, attention included, so the same holds with
 * PLUMB_SIMD=scalar). A model whose tensor types plumb cannot multiply yet is skipped, naming
 * the types.
 *
 * Then, on synthesized models: the same logits whatever the batching
 * (sliding-window rings that wrap included), sequences batched together
 * as alone, truncation and copies behind a sliding window (recomputed),
 * decode touching only the experts a token chose, and refused files. */
#include "testutil.h"

#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "kv/kv.h"
#include "model/model.h"
#include "sampler/sampler.h"
#include "tokenizer/tokenizer.h"
#include "plumb/engine.h"
#include "plumb/synth.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reference models ---- */

/* The tensor types of f that plumb cannot use, as "Q2_K, IQ4_XS" into buf
 * (empty when none). */
static const char *missing_types(const struct gguf_file *f, char *buf, size_t size)
{
    bool seen[PB_TYPE_COUNT] = {false};
    size_t o = 0;
    buf[0] = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        const bool matrix = t->n_dims >= 2 && strcmp(t->name, "token_embd.weight") != 0;
        const bool ok = matrix ? kern_dot_for(t->type) != NULL : pb_type_get(t->type)->to_float != NULL;
        /* token_embd is looked up, and multiplied too when there is no output.weight */
        const bool tied = !strcmp(t->name, "token_embd.weight") && !gguf_find_tensor(f, "output.weight");
        if ((!ok || (tied && !kern_dot_for(t->type))) && !seen[t->type]) {
            seen[t->type] = true;
            o += (size_t)snprintf(buf + o, o < size ? size - o : 0, "%s%s", o ? ", " : "", pb_type_name(t->type));
        }
    }
    return buf;
}

/* Whether every matrix of f is F32 (the tight tolerance applies). */
static bool all_f32(const struct gguf_file *f)
{
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        if (gguf_tensor(f, i)->n_dims >= 2 && gguf_tensor(f, i)->type != PB_TYPE_F32)
            return false;
    return true;
}

static float *read_f32_file(const char *path, size_t n)
{
    size_t len = 0;
    char *raw = test_read_file(path, &len);
    if (!raw)
        return NULL;
    if (len != n * sizeof(float)) {
        free(raw);
        return NULL;
    }
    float *v = malloc(n * sizeof *v);
    memcpy(v, raw, n * sizeof *v);
    free(raw);
    return v;
}

struct ref_case {
    char name[96];
};

static json_t *load_reference(void)
{
    char buf[1024];
    const char *path = testdata_file("reference-arch.json", buf, sizeof buf);
    if (!path)
        return NULL;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    return root;
}

/* Greedy steps: logits after the prompt, then argmax (ties to the lowest
 * id, as llama.cpp's reference did) and one token at a time. */
static void check_prompt(struct model_ctx *c, const struct tokenizer *tok, const char *model, const char *pname,
                         json_t *p, const char *logits_file, double tol)
{
    const int64_t nv = tok_n_vocab(tok);
    const char *text = json_string_value(json_object_get(p, "prompt"));
    json_t *jprompt = json_object_get(p, "prompt_ids"), *jgreedy = json_object_get(p, "greedy_ids");
    json_t *jtop = json_object_get(p, "topk_per_step");
    const int stable = (int)json_integer_value(json_object_get(p, "n_greedy_stable"));
    pb_err err;
    int32_t *ids;
    size_t n_ids;
    assert_int_equal(tok_encode(tok, text, strlen(text), true, false, &ids, &n_ids, &err), 0);
    if (n_ids != json_array_size(jprompt))
        fail_msg("%s %s: %zu prompt tokens, llama.cpp has %zu", model, pname, n_ids, json_array_size(jprompt));
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] != json_integer_value(json_array_get(jprompt, i)))
            fail_msg("%s %s: prompt token %zu is %d, llama.cpp has %d", model, pname, i, ids[i],
                     (int)json_integer_value(json_array_get(jprompt, i)));

    model_seq_truncate(c, 0, 0);
    float *lg = malloc((size_t)nv * sizeof *lg);
    if (model_eval(c, ids, (int)n_ids, lg, &err))
        fail_msg("%s %s: %s", model, pname, err.msg);
    /* every logit after p1 */
    double all_diff = -1;
    if (logits_file) {
        float *want = read_f32_file(logits_file, (size_t)nv);
        if (!want)
            fail_msg("%s: missing or not %lld floats", logits_file, (long long)nv);
        all_diff = 0;
        for (int64_t i = 0; i < nv; i++)
            all_diff = fmax(all_diff, fabs((double)lg[i] - want[i]));
        free(want);
    }
    const int n_steps = (int)json_array_size(jgreedy);
    int match = 0;
    double top_diff = 0;
    for (int s = 0; s < n_steps; s++) {
        const int32_t next = sampler_argmax(lg, (int32_t)nv);
        const int32_t want = (int32_t)json_integer_value(json_array_get(jgreedy, (size_t)s));
        json_t *step = json_array_get(jtop, (size_t)s);
        if (next != want)
            break;
        for (size_t k = 0; k < json_array_size(step); k++) {
            json_t *pair = json_array_get(step, k);
            const int32_t id = (int32_t)json_integer_value(json_array_get(pair, 0));
            top_diff = fmax(top_diff, fabs((double)lg[id] - json_number_value(json_array_get(pair, 1))));
        }
        match++;
        if (s + 1 < n_steps && model_eval(c, &next, 1, lg, &err))
            fail_msg("%s %s step %d: %s", model, pname, s, err.msg);
    }
    char all[64] = "";
    if (logits_file)
        snprintf(all, sizeof all, ", all %lld logits after it within %.2e", (long long)nv, all_diff);
    print_message("  %s %s: %d/%d tokens match (%d stable), top-5 logits within %.2e%s (tolerance %.0e)\n",
                  model, pname, match, n_steps, stable, top_diff, all, tol);
    if (match < stable)
        fail_msg("%s %s: greedy token %d differs from llama.cpp's (%d stable)", model, pname, match, stable);
    assert_true(top_diff <= tol);
    assert_true(all_diff <= tol);
    free(lg);
    free(ids);
}

static void test_reference_model(void **state)
{
    const char *model = *state;
    json_t *root = load_reference();
    if (!root)
        skip();
    json_t *jm = json_object_get(json_object_get(root, "models"), model);
    assert_non_null(jm);
    char buf[1024], missing[256];
    const char *path = testdata_file(json_string_value(json_object_get(jm, "model_file")), buf, sizeof buf);
    if (!path) {
        json_decref(root);
        skip();
    }
    struct gguf_file *f;
    pb_err err;
    if (gguf_open(path, &f, &err))
        fail_msg("%s", err.msg);
    const double tol = all_f32(f) ? 1e-3 : 0.05;
    if (missing_types(f, missing, sizeof missing)[0]) {
        print_message("  SKIP %s: tensor types plumb cannot multiply yet: %s\n", model, missing);
        gguf_close(f);
        json_decref(root);
        skip();
    }
    struct tokenizer *tok;
    if (tok_load(f, &tok, &err))
        fail_msg("%s", err.msg);
    gguf_close(f);
    struct model *m;
    if (model_load(path, NULL, &m, &err))
        fail_msg("%s: %s", model, err.msg);
    assert_int_equal(model_hparams(m)->n_vocab, json_integer_value(json_object_get(jm, "n_vocab")));
    /* the reference's settings: context 512, F32 KV cache, 2 threads */
    struct model_ctx_params cp = {.n_ctx = 512, .n_batch = 512, .n_threads = 2, .kv_type = PB_KV_F32};
    struct model_ctx *c;
    if (model_ctx_create(m, &cp, &c, &err))
        fail_msg("%s", err.msg);
    const char *pname;
    json_t *p;
    json_object_foreach(json_object_get(jm, "prompts"), pname, p)
    {
        char lbuf[1024], rel[256];
        snprintf(rel, sizeof rel, "logits/%s.p1.f32", model);
        const char *lpath = strcmp(pname, "p1") == 0 ? testdata_file(rel, lbuf, sizeof lbuf) : NULL;
        if (!strcmp(pname, "p1") && !lpath)
            fail_msg("%s: the reference file %s is missing", model, rel);
        check_prompt(c, tok, model, pname, p, lpath, tol);
    }
    model_ctx_free(c);
    model_free(m);
    tok_free(tok);
    json_decref(root);
}

/* ---- synthesized models ---- */

/* A small model of architecture arch written to the temp dir (cached by
 * name), F32 weights unless ftype says. */
static const char *synth_model(const char *arch, const char *dims, enum pb_ftype ftype)
{
    static char paths[16][512];
    static char keys[16][160];
    char key[160];
    snprintf(key, sizeof key, "%s/%s/%d", arch, dims, (int)ftype);
    int slot = 0;
    for (; slot < 16 && keys[slot][0]; slot++)
        if (!strcmp(keys[slot], key))
            return paths[slot];
    assert_true(slot < 16);
    struct synth_params sp = {.seed = 7, .n_threads = 1, .ftype = ftype, .stddev = 0.05f};
    const struct synth_shape *base = synth_shape_find("tiny");
    assert_non_null(base);
    sp.shape = *base;
    char spec[256], name[64];
    snprintf(spec, sizeof spec, "arch=%s,%s", arch, dims);
    pb_err err;
    if (synth_parse_dims(spec, &sp.shape, &err))
        fail_msg("%s: %s", spec, err.msg);
    snprintf(name, sizeof name, "synth-%d.gguf", slot);
    test_tmpfile(name, paths[slot], sizeof paths[slot]);
    uint64_t bytes;
    if (synth_write(paths[slot], &sp, &bytes, &err))
        fail_msg("synth %s: %s", spec, err.msg);
    snprintf(keys[slot], sizeof keys[slot], "%s", key);
    return paths[slot];
}

/* The small shapes: every new family, with sliding windows of 8 (so that
 * the rings of a context of 64 wrap) and 4 experts of which 2 are used. */
static const struct {
    const char *arch, *dims;
} small[] = {
    {"gemma2", "dim=64,layers=3,heads=4,kv_heads=2,head_dim=16,ffn=96,vocab=400,ctx=256,swa=8,softcap=5:3"},
    {"gemma3", "dim=64,layers=6,heads=4,kv_heads=2,head_dim=16,ffn=96,vocab=400,ctx=256,swa=8"},
    {"qwen3moe", "dim=64,layers=2,heads=4,kv_heads=2,head_dim=16,ffn=96,vocab=400,ctx=256,experts=4:2:32"},
    {"llama", "dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=400,ctx=256,experts=4:2:48"},
    {"phi3", "dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=400,ctx=256"},
    {"gpt-oss", "dim=64,layers=2,heads=4,kv_heads=2,head_dim=16,ffn=32,vocab=400,ctx=256,swa=8,experts=4:2:32"},
};

static const int32_t probe[40] = {1,   300, 301, 17,  299, 42,  7,   260, 261, 262, 263, 264, 5,   99,
                                  100, 120, 3,   4,   5,   6,   200, 201, 202, 203, 204, 205, 206, 207,
                                  8,   9,   10,  11,  390, 391, 392, 12,  13,  14,  15,  16};

/* Logits after the n tokens of probe, evaluated in batches of `batch`
 * (one call per batch), in a context of n_ctx with n_threads. */
static float *eval_probe(const struct model *m, int n, int batch, int threads, int64_t n_ctx)
{
    struct model_ctx_params cp = {.n_ctx = n_ctx, .n_batch = batch, .n_threads = threads};
    struct model_ctx *c;
    pb_err err;
    if (model_ctx_create(m, &cp, &c, &err))
        fail_msg("%s", err.msg);
    const int64_t nv = model_hparams(m)->n_vocab;
    float *lg = malloc((size_t)nv * sizeof *lg);
    for (int i = 0; i < n; i += batch) {
        const int k = n - i < batch ? n - i : batch;
        if (model_eval(c, probe + i, k, i + k == n ? lg : NULL, &err))
            fail_msg("%s", err.msg);
    }
    model_ctx_free(c);
    return lg;
}

static void assert_bits_equal(const float *a, const float *b, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            fail_msg("%s: logit %lld is %g", what, (long long)i, a[i]);
        if (a[i] != b[i])
            fail_msg("%s: logit %lld is %.9g, expected %.9g", what, (long long)i, a[i], b[i]);
    }
}

/* Each row is computed with the same arithmetic however the tokens are
 * batched: one batch, one token at a time (the rings of the sliding layers
 * wrapping many times), odd chunks on two threads: bit-equal logits. */
static void test_batching_is_invisible(void **state)
{
    (void)state;
    for (size_t a = 0; a < sizeof small / sizeof small[0]; a++) {
        struct model *m;
        pb_err err;
        if (model_load(synth_model(small[a].arch, small[a].dims, PB_FTYPE_Q8_0), NULL, &m, &err))
            fail_msg("%s: %s", small[a].arch, err.msg);
        const int64_t nv = model_hparams(m)->n_vocab;
        float *whole = eval_probe(m, 40, 64, 1, 64);
        float *one = eval_probe(m, 40, 1, 1, 64);
        float *chunks = eval_probe(m, 40, 7, 2, 64);
        char what[96];
        snprintf(what, sizeof what, "%s one token at a time", small[a].arch);
        assert_bits_equal(one, whole, nv, what);
        snprintf(what, sizeof what, "%s in chunks of 7", small[a].arch);
        assert_bits_equal(chunks, whole, nv, what);
        print_message("  %s: 40 tokens, batch 64 / 1 / 7: identical logits\n", small[a].arch);
        free(whole);
        free(one);
        free(chunks);
        model_free(m);
    }
}

/* Logits after probe[0, n) of a sequence evaluated alone, in one batch. */
static float *alone(const struct model *m, int n)
{
    return eval_probe(m, n, 64, 1, 64);
}

/* Evaluates probe[from, to) into sequence seq, `step` tokens per call,
 * and returns the logits after the last (caller frees). */
static float *feed(struct model_ctx *c, int64_t nv, int seq, int from, int to, int step)
{
    float *lg = malloc((size_t)nv * sizeof *lg);
    test_feed_seq(c, seq, probe + from, to - from, step, lg);
    return lg;
}

/* The small gemma2 (full and sliding-window layers), Q8_0. */
static struct model *load_windowed(void)
{
    struct model *m;
    pb_err err;
    if (model_load(synth_model(small[0].arch, small[0].dims, PB_FTYPE_Q8_0), NULL, &m, &err))
        fail_msg("%s", err.msg);
    return m;
}

/* Behind a sliding window (8 keys; rings of 8 + batch 4 - 1 rows): a
 * truncation the rings still cover continues at once, a deeper one or a
 * copy of an older prefix is recomputed from the sequence's tokens; every
 * way gives the logits of the sequence evaluated alone, bit for bit, also
 * with sequences batched together. */
static void test_windows_truncate_and_copy(void **state)
{
    (void)state;
    struct model *m = load_windowed();
    pb_err err;
    const int64_t nv = model_hparams(m)->n_vocab;
    float *ref30 = alone(m, 30), *ref25 = alone(m, 25), *ref33 = alone(m, 33);
    struct model_ctx_params cp = {.n_ctx = 64, .n_batch = 4, .n_threads = 2, .n_seq = 3};
    struct model_ctx *c;
    if (model_ctx_create(m, &cp, &c, &err))
        fail_msg("%s", err.msg);
    float *lg = feed(c, nv, 0, 0, 30, 4);
    assert_bits_equal(lg, ref30, nv, "sequence 0 in batches of 4");
    free(lg);
    /* shallow: positions 21..27 are still in the rings (which hold 19..29) */
    model_seq_truncate(c, 0, 28);
    assert_int_equal(model_seq_n_recompute(c, 0), 0);
    lg = feed(c, nv, 0, 28, 30, 4);
    assert_bits_equal(lg, ref30, nv, "after a shallow truncation");
    free(lg);
    /* deep: the rings lost what position 10 needs: recomputed */
    model_seq_truncate(c, 0, 10);
    assert_int_equal(model_seq_pos(c, 0), 10);
    assert_int_equal(model_seq_n_recompute(c, 0), 10);
    lg = feed(c, nv, 0, 10, 30, 4);
    assert_int_equal(model_seq_n_recompute(c, 0), 0);
    assert_bits_equal(lg, ref30, nv, "after a deep truncation");
    free(lg);
    /* copies: an old prefix (recomputed) and a recent one (not) */
    assert_int_equal(model_seq_copy(c, 1, 0, 22, &err), 0);
    assert_int_equal(model_seq_n_recompute(c, 1), 22);
    assert_int_equal(model_seq_copy(c, 2, 0, 29, &err), 0);
    assert_int_equal(model_seq_n_recompute(c, 2), 0);
    /* both in one batch (of the 4 tokens a batch holds) */
    int32_t toks[4] = {probe[22], probe[23], probe[24], probe[29]};
    struct model_seg segs[2] = {{1, 3, true}, {2, 1, true}};
    float *three = malloc((size_t)(2 * nv) * sizeof *three);
    if (model_eval_batch(c, toks, segs, 2, three, &err))
        fail_msg("%s", err.msg);
    assert_bits_equal(three, ref25, nv, "copied old prefix, recomputed, in a mixed batch");
    assert_bits_equal(three + nv, ref30, nv, "copied recent prefix in a mixed batch");
    free(three);
    lg = feed(c, nv, 0, 30, 33, 1);
    assert_bits_equal(lg, ref33, nv, "sequence 0 after the mixed batch");
    free(lg);
    model_ctx_free(c);
    free(ref30);
    free(ref25);
    free(ref33);
    model_free(m);
}

/* Tokens for the longer sequences below (vocabulary of 400). */
static void long_tokens(int32_t *t, int n)
{
    for (int i = 0; i < n; i++)
        t[i] = (int32_t)(i ? (i * 53 + 11) % 399 + 1 : 1);
}

/* Shared prefixes beside sliding windows (gemma2: full and window
 * layers): the full layers' blocks are shared, the rings copied; a copy
 * of a prefix the rings no longer hold is recomputed and shares nothing;
 * an owner that must recompute from position 0 first hands its rows to
 * its reader. Every sequence continues bit for bit as alone. */
static void test_windows_shared_prefix(void **state)
{
    (void)state;
    struct model *m = load_windowed();
    pb_err err;
    int32_t t[80];
    long_tokens(t, 80);
    struct model_ctx_params cp = {.n_ctx = 128, .n_batch = 16, .n_threads = 2, .n_seq = 3};
    struct model_ctx *c;
    if (model_ctx_create(m, &cp, &c, &err))
        fail_msg("%s", err.msg);
    test_continues_as_alone(m, c, PB_KV_F16, 0, t, 0, 70, 16, "the owner");
    /* a recent prefix: 64 shared, the rings copied */
    assert_int_equal(model_seq_copy(c, 1, 0, 68, &err), 0);
    assert_int_equal(model_seq_n_recompute(c, 1), 0);
    assert_int_equal(model_seq_n_shared(c, 1), 64);
    test_continues_as_alone(m, c, PB_KV_F16, 1, t, 68, 70, 16, "a shared prefix beside windows");
    /* an old prefix: recomputed, nothing left shared */
    assert_int_equal(model_seq_copy(c, 2, 0, 40, &err), 0);
    assert_int_equal(model_seq_n_recompute(c, 2), 40);
    test_continues_as_alone(m, c, PB_KV_F16, 2, t, 40, 70, 16, "an old prefix, recomputed");
    assert_int_equal(model_seq_n_shared(c, 2), 0);
    /* the owner goes back further than its rings: it recomputes from 0,
     * and its reader keeps its rows */
    model_seq_truncate(c, 0, 50);
    assert_int_equal(model_seq_n_recompute(c, 0), 50);
    test_continues_as_alone(m, c, PB_KV_F16, 0, t, 50, 75, 16, "the owner after recomputing");
    assert_int_equal(model_seq_n_shared(c, 1), 0);
    test_continues_as_alone(m, c, PB_KV_F16, 1, t, 70, 75, 16, "the reader after its owner recomputed");
    model_ctx_free(c);
    model_free(m);
}

/* Mixture-of-experts sequences batched together (their tokens grouped by
 * expert across sequences) give what each gives alone. */
static void test_moe_sequences_together(void **state)
{
    (void)state;
    for (size_t a = 2; a < 6; a += 3) { /* qwen3moe, gpt-oss */
        struct model *m;
        pb_err err;
        if (model_load(synth_model(small[a].arch, small[a].dims, PB_FTYPE_Q8_0), NULL, &m, &err))
            fail_msg("%s", err.msg);
        const int64_t nv = model_hparams(m)->n_vocab;
        float *r12 = alone(m, 12), *r20 = alone(m, 20);
        struct model_ctx_params cp = {.n_ctx = 64, .n_batch = 32, .n_threads = 2, .n_seq = 2};
        struct model_ctx *c;
        if (model_ctx_create(m, &cp, &c, &err))
            fail_msg("%s", err.msg);
        free(feed(c, nv, 1, 0, 15, 32));
        int32_t toks[17];
        memcpy(toks, probe, 12 * sizeof *toks);
        memcpy(toks + 12, probe + 15, 5 * sizeof *toks);
        struct model_seg segs[2] = {{0, 12, true}, {1, 5, true}};
        float *two = malloc((size_t)(2 * nv) * sizeof *two);
        if (model_eval_batch(c, toks, segs, 2, two, &err))
            fail_msg("%s", err.msg);
        assert_bits_equal(two, r12, nv, small[a].arch);
        assert_bits_equal(two + nv, r20, nv, small[a].arch);
        free(two);
        model_ctx_free(c);
        free(r12);
        free(r20);
        model_free(m);
    }
}

/* A copy of path with the floats at `offsets` (byte offsets into the
 * file) set to NaN, as file `name` in the temp dir. */
static const char *poisoned_copy(const char *path, const char *name, const size_t *offsets, int n)
{
    static char out[512];
    size_t len;
    char *bytes = test_read_file(path, &len);
    assert_non_null(bytes);
    const float nan = NAN;
    for (int i = 0; i < n; i++) {
        assert_true(offsets[i] + sizeof nan <= len);
        memcpy(bytes + offsets[i], &nan, sizeof nan);
    }
    test_tmpfile(name, out, sizeof out);
    assert_int_equal(test_write_file(out, bytes, len), 0);
    free(bytes);
    return out;
}

/* Decoding a token reads the experts it chose and no other: with one
 * expert's gate weights made NaN, the logits turn NaN exactly when that
 * expert is among the token's choices, else they stay bit for bit the
 * same; in every layer exactly n_expert_used experts matter. (F32
 * weights: the products read the file's rows as they are.) */
static void test_moe_decode_reads_chosen_experts(void **state)
{
    (void)state;
    const char *path = synth_model("qwen3moe", "dim=64,layers=2,heads=4,kv_heads=2,head_dim=16,ffn=96,vocab=400,"
                                   "ctx=256,experts=6:2:32", PB_FTYPE_F32);
    struct gguf_file *f;
    pb_err err;
    assert_int_equal(gguf_open(path, &f, &err), 0);
    const int64_t X = 6, F = 32, E = 64;
    const int32_t tok = 77;
    float *clean = NULL;
    {
        struct model *m;
        assert_int_equal(model_load(path, NULL, &m, &err), 0);
        struct model_ctx_params cp = {.n_ctx = 8, .n_batch = 8, .n_threads = 1};
        struct model_ctx *c;
        assert_int_equal(model_ctx_create(m, &cp, &c, &err), 0);
        clean = malloc(400 * sizeof *clean);
        assert_int_equal(model_eval(c, &tok, 1, clean, &err), 0);
        model_ctx_free(c);
        model_free(m);
    }
    for (int l = 0; l < 2; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_gate_exps.weight", l);
        const struct gguf_tensor *t = gguf_find_tensor(f, name);
        assert_non_null(t);
        assert_int_equal(t->type, PB_TYPE_F32);
        int mattered = 0;
        for (int64_t e = 0; e < X; e++) {
            /* the first weight of every row of expert e */
            size_t offs[32];
            for (int64_t r = 0; r < F; r++)
                offs[r] = (size_t)((const uint8_t *)t->data - (const uint8_t *)gguf_base(f)) +
                          (size_t)((e * F + r) * E) * sizeof(float);
            struct model *m;
            assert_int_equal(model_load(poisoned_copy(path, "poisoned.gguf", offs, (int)F), NULL, &m, &err), 0);
            struct model_ctx_params cp = {.n_ctx = 8, .n_batch = 8, .n_threads = 1};
            struct model_ctx *c;
            assert_int_equal(model_ctx_create(m, &cp, &c, &err), 0);
            float lg[400];
            assert_int_equal(model_eval(c, &tok, 1, lg, &err), 0);
            const bool nan = isnan(lg[0]);
            if (!nan)
                assert_memory_equal(lg, clean, sizeof lg);
            mattered += nan;
            model_ctx_free(c);
            model_free(m);
        }
        print_message("  layer %d: %d of %lld experts read for one token\n", l, mattered, (long long)X);
        assert_int_equal(mattered, 2);
    }
    free(clean);
    gguf_close(f);
}

/* A copy of path without metadata key `drop_key` and tensor `drop_tensor`
 * (either may be NULL), with string key `set_key` = set_val added. */
static const char *altered(const char *path, const char *name, const char *drop_key, const char *drop_tensor,
                           const char *set_key, const char *set_val)
{
    static char out[512];
    test_tmpfile(name, out, sizeof out);
    struct gguf_file *f;
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_open(path, &f, &err), 0);
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        if (!drop_key || strcmp(gguf_kv_key(f, i), drop_key) != 0)
            gguf_set_from(w, f, i);
    if (set_key)
        gguf_set_str(w, set_key, set_val);
    for (int pass = 0; pass < 2; pass++)
        for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
            const struct gguf_tensor *t = gguf_tensor(f, i);
            if (drop_tensor && !strcmp(t->name, drop_tensor))
                continue;
            if (pass == 0)
                assert_int_equal(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &err), 0);
            else
                assert_int_equal(gguf_writer_write(w, t->data, t->nbytes, &err), 0);
            if (pass == 0 && i + 1 == gguf_n_tensors(f))
                assert_int_equal(gguf_writer_begin(w, out, &err), 0);
        }
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    gguf_close(f);
    return out;
}

/* Loading fails, with code rc and a message containing `what`. */
static void assert_refused(const char *path, int rc, const char *what)
{
    struct model *m = NULL;
    pb_err err;
    const int got = model_load(path, NULL, &m, &err);
    if (got != rc || !strstr(err.msg, what))
        fail_msg("load gave %d (%s), expected %d naming '%s'", got, got ? err.msg : "loaded", rc, what);
    assert_null(m);
}

/* Files that miss what their family needs, or ask for what plumb cannot
 * honour, are refused with the field named. */
static void test_refused_files(void **state)
{
    (void)state;
    const char *moe = synth_model(small[2].arch, small[2].dims, PB_FTYPE_Q8_0);
    assert_refused(altered(moe, "noexp.gguf", "qwen3moe.expert_count", NULL, NULL, NULL), PB_EFORMAT,
                   "expert_count");
    assert_refused(altered(moe, "nodown.gguf", NULL, "blk.1.ffn_down_exps.weight", NULL, NULL), PB_EFORMAT,
                   "blk.1.ffn_down_exps.weight");
    assert_refused(altered(moe, "norouter.gguf", NULL, "blk.0.ffn_gate_inp.weight", NULL, NULL), PB_EFORMAT,
                   "blk.0.ffn_gate_inp.weight");
    const char *oai = synth_model(small[5].arch, small[5].dims, PB_FTYPE_Q8_0);
    assert_refused(altered(oai, "nosinks.gguf", NULL, "blk.1.attn_sinks.weight", NULL, NULL), PB_EFORMAT,
                   "attn_sinks");
    assert_refused(altered(oai, "rope.gguf", NULL, NULL, "gpt-oss.rope.scaling.type", "dynamic"), PB_EUNSUPPORTED,
                   "rope.scaling.type");
    const char *g2 = synth_model(small[0].arch, small[0].dims, PB_FTYPE_Q8_0);
    assert_refused(altered(g2, "nopost.gguf", NULL, "blk.2.post_ffw_norm.weight", NULL, NULL), PB_EFORMAT,
                   "post_ffw_norm");
    const char *phi = synth_model(small[4].arch, small[4].dims, PB_FTYPE_Q8_0);
    assert_refused(altered(phi, "noqkv.gguf", NULL, "blk.0.attn_qkv.weight", NULL, NULL), PB_EFORMAT,
                   "blk.0.attn_q.weight");
    /* the intact files load */
    struct model *m;
    pb_err err;
    assert_int_equal(model_load(altered(oai, "intact.gguf", NULL, NULL, NULL, NULL), NULL, &m, &err), 0);
    assert_int_equal(model_hparams(m)->n_swa, 8);
    assert_true(model_layer_is_swa(model_hparams(m), 0));
    assert_false(model_layer_is_swa(model_hparams(m), 1));
    model_free(m);
}

/* The bert encoder against llama.cpp (reference-embeddings.json): the
 * WordPiece ids of prompts p1-p3, and their mean- and CLS-pooled,
 * L2-normalized embeddings (cosine >= 0.999, each element within 2e-3:
 * Q8_0 weights, F16 KV cache); several texts in one forward pass give what
 * each gives alone; generation is refused; a text beyond the context is
 * PB_ETOOLONG. */
static void test_bert_embeddings(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(ref_path, "reference-embeddings.json");
    REQUIRE_TESTDATA(model_path, "tiny-bert-q8_0.gguf");
    json_t *ref = json_load_file(ref_path, 0, NULL);
    assert_non_null(ref);
    const json_t *prompts = json_object_get(json_object_get(json_object_get(ref, "models"), "tiny-bert-q8_0"), "prompts");
    assert_true(json_object_size(prompts) >= 3);
    struct engine_params ep = engine_defaults();
    ep.n_slots = 3;
    ep.n_threads = 2;
    struct engine *e;
    pb_err err;
    if (engine_open(model_path, &ep, &e, &err))
        fail_msg("%s", err.msg);
    assert_true(engine_is_encoder(e));
    const int64_t dim = engine_embed_dim(e);
    int32_t *toks[3];
    size_t n_toks[3];
    const char *names[3] = {"p1", "p2", "p3"};
    for (int i = 0; i < 3; i++) {
        const json_t *p = json_object_get(prompts, names[i]), *ids = json_object_get(p, "prompt_ids");
        const char *text = json_string_value(json_object_get(p, "prompt"));
        assert_int_equal(tok_encode(engine_tokenizer(e), text, strlen(text), true, false, &toks[i], &n_toks[i], &err),
                         0);
        assert_int_equal(n_toks[i], json_array_size(ids));
        for (size_t k = 0; k < n_toks[i]; k++)
            assert_int_equal(toks[i][k], json_integer_value(json_array_get(ids, k)));
    }
    float *out = malloc(3 * (size_t)dim * sizeof *out), *one = malloc((size_t)dim * sizeof *one);
    static const struct {
        enum engine_pooling pool;
        const char *key;
    } kinds[] = {{ENGINE_POOL_DEFAULT, "embedding_mean"}, {ENGINE_POOL_CLS, "embedding_cls"}};
    for (size_t k = 0; k < 2; k++) {
        const struct engine_embed_params p = {kinds[k].pool, true};
        if (engine_embed(e, (const int32_t *const *)toks, n_toks, 3, &p, out, &err))
            fail_msg("%s", err.msg);
        for (int i = 0; i < 3; i++) {
            const json_t *r = json_object_get(json_object_get(prompts, names[i]), kinds[k].key);
            assert_int_equal(json_array_size(r), dim);
            double dot = 0, na = 0, nb = 0, worst = 0;
            for (int64_t j = 0; j < dim; j++) {
                const double a = out[(size_t)i * (size_t)dim + (size_t)j], b = json_number_value(json_array_get(r, (size_t)j));
                dot += a * b, na += a * a, nb += b * b;
                worst = fabs(a - b) > worst ? fabs(a - b) : worst;
            }
            const double cos = dot / sqrt(na * nb);
            print_message("  %s %s: cosine %.7f, max difference %.2e\n", names[i], kinds[k].key, cos, worst);
            assert_true(cos >= 0.999 && worst <= 2e-3);
            /* alone, the same numbers as in the batch */
            if (engine_embed(e, (const int32_t *const *)&toks[i], &n_toks[i], 1, &p, one, &err))
                fail_msg("%s", err.msg);
            assert_memory_equal(one, out + (size_t)i * (size_t)dim, (size_t)dim * sizeof *one);
        }
    }
    struct engine_request *r = NULL;
    struct engine_events ev = {0};
    struct engine_request_params rp = engine_request_defaults();
    assert_int_equal(engine_submit(e, toks[0], n_toks[0], &rp, &ev, &r, &err), PB_EINVAL);
    int32_t *big = calloc(600, sizeof *big);
    const int32_t *bigp = big;
    size_t n_big = 600;
    assert_int_equal(engine_embed(e, &bigp, &n_big, 1, &(struct engine_embed_params){ENGINE_POOL_MEAN, true}, out, &err),
                     PB_ETOOLONG);
    free(big);
    for (int i = 0; i < 3; i++)
        free(toks[i]);
    free(out);
    free(one);
    engine_close(e);
    json_decref(ref);
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_batching_is_invisible),
        cmocka_unit_test(test_windows_truncate_and_copy),
        cmocka_unit_test(test_windows_shared_prefix),
        cmocka_unit_test(test_moe_sequences_together),
        cmocka_unit_test(test_moe_decode_reads_chosen_experts),
        cmocka_unit_test(test_refused_files),
        cmocka_unit_test(test_bert_embeddings),
    };
    const size_t n_fixed = sizeof fixed / sizeof fixed[0];
    /* one test per model of the reference file */
    json_t *root = load_reference();
    json_t *models = root ? json_object_get(root, "models") : NULL;
    const size_t n_models = models ? json_object_size(models) : 0;
    struct CMUnitTest *tests = calloc(n_fixed + n_models + 1, sizeof *tests);
    char **names = calloc(n_models + 1, sizeof *names);
    size_t n = 0;
    const char *key;
    json_t *v;
    if (models) {
        json_object_foreach(models, key, v)
        {
            (void)v;
            names[n] = strdup(key);
            tests[n] = (struct CMUnitTest){names[n], test_reference_model, NULL, NULL, names[n]};
            n++;
        }
    } else {
        print_message("SKIP: no reference-arch.json: the reference tests are skipped\n");
    }
    for (size_t i = 0; i < n_fixed; i++)
        tests[n++] = fixed[i];
    int rc = _cmocka_run_group_tests("arch", tests, n, NULL, NULL);
    for (size_t i = 0; i < n_models; i++)
        free(names[i]);
    free(names);
    free(tests);
    json_decref(root);
    return rc;
}
