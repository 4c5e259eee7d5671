#define _POSIX_C_SOURCE 200809L
/* The newer architectures (gemma2, gemma3, qwen3moe, phi3, a Mixtral-style
 * llama MoE, gpt-oss) against llama.cpp's outputs in reference-arch.json:
 * one test per model of the file, read at run time. Each checks the
 * prompt's tokens, the greedy tokens for the leading n_greedy_stable steps
 * (later ones sit on near-ties), the top-5 logits of those steps and every
 * logit after prompt p1 (logits/<model>.p1.f32), at the tolerance
 * test_model.c uses: 1e-3 for F32 weights, 0.05 for quantized ones. A
 * model whose tensor types plumb cannot multiply yet is skipped, naming
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
#include "tools/tools.h"

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

    model_ctx_truncate(c, 0);
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
        if (next != want)
            break;
        json_t *step = json_array_get(jtop, (size_t)s);
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
    print_message("  %s %s: %d/%d tokens match (%d stable), top-5 logits within %.2e%s (tolerance %.0e)\n", model,
                  pname, match, n_steps, stable, top_diff, all, tol);
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
    if (model_load(path, &m, &err))
        fail_msg("%s: %s", model, err.msg);
    assert_int_equal(model_hparams(m)->n_vocab, json_integer_value(json_object_get(jm, "n_vocab")));
    /* the reference's settings: context 512, F32 KV cache, 2 threads */
    struct model_ctx_params cp = {.n_ctx = 512, .n_batch = 512, .n_threads = 2, .kv_type = KV_F32};
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
        if (model_load(synth_model(small[a].arch, small[a].dims, PB_FTYPE_Q8_0), &m, &err))
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

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_batching_is_invisible),
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
