#define _GNU_SOURCE
/* Catalogs (built in, overridden, corrupt), the plan's memory and speed
 * figures against hand computation, and the TCO arithmetic against
 * hand-computed cases. */
#include "testutil.h"

#include "gguf/gguf.h"
#include "kv/kv.h"
#include "plumb/engine.h"
#include "plumb/plan.h"
#include "plumb/synth.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ASSERT_NEAR(a, b, rel)                                                                                         \
    do {                                                                                                               \
        double a_ = (a), b_ = (b);                                                                                     \
        if (!(fabs(a_ - b_) <= (rel) * fabs(b_)))                                                                      \
            fail_msg("%s = %.9g, expected %.9g (relative tolerance %g)", #a, a_, b_, (double)(rel));                  \
    } while (0)

static struct catalog *builtin(void)
{
    struct catalog *c;
    pb_err err = {0};
    unsetenv("PLUMB_CATALOG");
    if (catalog_load(NULL, &c, &err))
        fail_msg("built-in catalog: %s", err.msg);
    return c;
}

static void test_builtin_catalog(void **state)
{
    (void)state;
    struct catalog *c = builtin();
    assert_true(c->n_models >= 30);
    assert_true(c->n_devices >= 25);
    assert_true(c->n_prices >= 5);
    /* the families the catalog must hold */
    const char *need[] = {"llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.3-70b", "qwen2.5-0.5b", "qwen2.5-72b",
                          "qwen3-0.6b", "qwen3-32b", "qwen3-30b-a3b", "mistral-7b", "mistral-nemo-12b",
                          "mistral-small-24b", "mixtral-8x7b", "gemma-2-9b", "gemma-3-27b", "phi-3-mini", "phi-4",
                          "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-llama-8b", "smollm2-135m",
                          "tinyllama-1.1b"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!catalog_model(c, need[i]))
            fail_msg("catalog lacks %s", need[i]);
    /* the dimensions give the published parameter counts: a typo in a
     * layer count or FFN size would not (Gemma 3's published counts
     * include a 0.4 B vision encoder, hence 12 %) */
    for (int i = 0; i < c->n_models; i++) {
        const struct cat_model *m = &c->models[i];
        struct plan_weights w;
        pb_err err = {0};
        assert_int_equal(plan_weights(m, plan_quant_find("F16"), &w, &err), PB_OK);
        if (fabs(w.params / (m->params_b * 1e9) - 1) > 0.12)
            fail_msg("%s: dimensions give %.3f B parameters, the catalog says %.3f B", m->id, w.params / 1e9,
                     m->params_b);
        if (m->experts && fabs(w.active_params / (m->active_params_b * 1e9) - 1) > 0.12)
            fail_msg("%s: %.3f B active parameters from the dimensions, %.3f B in the catalog", m->id,
                     w.active_params / 1e9, m->active_params_b);
        assert_true(!strncmp(m->source, "https://", 8));
    }
    for (int i = 0; i < c->n_devices; i++)
        assert_true(c->devices[i].memory_gb > 0 && c->devices[i].bandwidth_gbs > 0 && c->devices[i].price_date[0]);
    assert_string_equal(c->origin[CAT_MODELS], "models.json (built in)");
    char near[300];
    catalog_near(c, CAT_MODELS, "lama-3.1-8b", near, sizeof near);
    assert_non_null(strstr(near, "llama-3.1-8b"));
    catalog_near(c, CAT_DEVICES, "rtx4090", near, sizeof near);
    assert_non_null(strstr(near, "rtx-4090"));
    assert_non_null(catalog_device(c, "RTX-4090")); /* ids match without case */
    catalog_free(c);
}

/* Writes text as DIR/models.json (or which) and loads the catalog from DIR. */
static int load_with(const char *which, const char *text, pb_err *err)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/cat", test_tmpdir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, which);
    assert_int_equal(test_write_file(path, text, strlen(text)), 0);
    struct catalog *c = NULL;
    int rc = catalog_load(dir, &c, err);
    catalog_free(c);
    remove(path);
    return rc;
}

#define MODEL_OK                                                                                                       \
    "\"id\":\"m\",\"name\":\"M\",\"arch\":\"llama\",\"layers\":2,\"hidden\":64,\"ffn\":128,\"heads\":4,\"kv_heads\":"  \
    "2,\"head_dim\":16,\"vocab\":100,\"context\":512,\"tied_embeddings\":true,\"params_b\":0.0001,\"license\":\"mit\"," \
    "\"source\":\"https://example.org/config.json\""

static void test_corrupt_catalogs(void **state)
{
    (void)state;
    pb_err err = {0};
    /* a good override loads, and replaces only its own file */
    assert_int_equal(load_with("models.json", "{\"models\":[{" MODEL_OK "}]}", &err), PB_OK);
    const struct {
        const char *file, *text, *expect;
    } bad[] = {
        {"models.json", "{\"models\":[{" MODEL_OK "}", "cat/models.json:1:"},
        {"models.json", "{\"models\":{}}", "'models' array"},
        {"models.json", "{\"models\":[]}", "0 entries"},
        {"models.json", "{\"models\":[{\"id\":\"m\"}]}", "'name' is missing"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"layres\":3}]}", "unknown field 'layres'"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"experts\":8}]}", "mixture of experts"},
        {"models.json", "{\"models\":[{" MODEL_OK "},{" MODEL_OK "}]}", "used twice"},
        {"models.json", "{\"models\":[{\"id\":\"Bad Id\",\"name\":\"M\",\"arch\":\"llama\",\"layers\":2,\"hidden\":64,"
                        "\"ffn\":128,\"heads\":4,\"kv_heads\":2,\"head_dim\":16,\"vocab\":100,\"context\":512,"
                        "\"tied_embeddings\":true,\"params_b\":0.0001,\"license\":\"mit\",\"source\":\"https://x\"}]}",
         "'id' must be"},
        {"models.json", "{\"models\":[{\"id\":\"m\",\"name\":\"M\",\"arch\":\"llama\",\"layers\":-2,\"hidden\":64,"
                        "\"ffn\":128,\"heads\":4,\"kv_heads\":2,\"head_dim\":16,\"vocab\":100,\"context\":512,"
                        "\"tied_embeddings\":true,\"params_b\":0.0001,\"license\":\"mit\",\"source\":\"https://x\"}]}",
         "'layers' must be an integer"},
        {"models.json", "{\"models\":[{\"id\":\"m\",\"name\":\"M\",\"arch\":\"llama\",\"layers\":2,\"hidden\":64,"
                        "\"ffn\":128,\"heads\":6,\"kv_heads\":4,\"head_dim\":16,\"vocab\":100,\"context\":512,"
                        "\"tied_embeddings\":true,\"params_b\":0.0001,\"license\":\"mit\",\"source\":\"https://x\"}]}",
         "multiple of kv_heads"},
        {"models.json", "{\"models\":[{\"id\":\"m\",\"name\":\"M\",\"arch\":\"llama\",\"layers\":2,\"hidden\":64,"
                        "\"ffn\":128,\"heads\":4,\"kv_heads\":2,\"head_dim\":16,\"vocab\":100,\"context\":512,"
                        "\"tied_embeddings\":\"yes\",\"params_b\":0.0001,\"license\":\"mit\",\"source\":\"https://x\"}]}",
         "true or false"},
        {"models.json", "{\"models\":[{\"id\":\"m\",\"name\":\"M\",\"arch\":\"llama\",\"layers\":2,\"hidden\":64,"
                        "\"ffn\":128,\"heads\":4,\"kv_heads\":2,\"head_dim\":16,\"vocab\":100,\"context\":512,"
                        "\"tied_embeddings\":true,\"params_b\":0.0001,\"license\":\"mit\",\"source\":\"config.json\"}]}",
         "must be a URL"},
        /* where the GGUF files live */
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":\"org/repo\"}]}", "gguf: must be an object"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"files\":{\"Q4_0\":{\"file\":\"m.gguf\"}}}}]}",
         "gguf: 'repo' is missing"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"norepo\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"m.gguf\"}}}}]}", "'repo' must be OWNER/NAME"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/../x\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"m.gguf\"}}}}]}", "'repo' must be OWNER/NAME"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"revison\":\"main\",\"files\":"
                        "{\"Q4_0\":{\"file\":\"m.gguf\"}}}}]}", "unknown field 'revison'"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"revision\":\"a b\",\"files\":"
                        "{\"Q4_0\":{\"file\":\"m.gguf\"}}}}]}", "'revision' 'a b'"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{}}}]}",
         "'files' must be an object"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_Z\":{\"file\":"
                        "\"m.gguf\"}}}}]}", "files: Q4_Z: not a quantization name"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"q4_0\":{\"file\":"
                        "\"m.gguf\"}}}}]}", "upper case"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"m.bin\"}}}}]}", "must be a .gguf file name"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"../m.gguf\"}}}}]}", "must be a .gguf file name"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"m x.gguf\"}}}}]}", "must be a .gguf file name"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_0\":{}}}}]}",
         "Q4_0: 'file' is missing"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"m.gguf\",\"sha256\":\"abc\"}}}}]}", "'sha256' must be 64"},
        {"models.json", "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"o/r\",\"files\":{\"Q4_0\":{\"file\":"
                        "\"m.gguf\",\"size\":1}}}}]}", "unknown field 'size'"},
        {"hardware.json", "{\"devices\":[{\"id\":\"d\",\"name\":\"D\",\"kind\":\"toaster\"}]}", "'kind' must be"},
        {"hardware.json", "{\"devices\":[{\"id\":\"d\",\"name\":\"D\",\"kind\":\"gpu\",\"vendor\":\"V\",\"memory_gb\":24,"
                          "\"bandwidth_gbs\":-1,\"fp16_tflops\":1,\"int8_tops\":1,\"power_w\":1,\"price_usd\":1,"
                          "\"price_date\":\"2024-01\",\"source\":\"https://x\"}]}",
         "'bandwidth_gbs' must be a number"},
        {"hardware.json", "{\"devices\":[{\"id\":\"d\",\"name\":\"D\",\"kind\":\"gpu\",\"vendor\":\"V\",\"memory_gb\":24,"
                          "\"bandwidth_gbs\":1,\"fp16_tflops\":1,\"int8_tops\":1,\"power_w\":1,\"price_usd\":1,"
                          "\"price_date\":\"last year\",\"source\":\"https://x\"}]}",
         "must be a date"},
        {"api-prices.json", "{\"prices\":[{\"id\":\"p\",\"provider\":\"P\",\"model\":\"M\",\"input_per_mtok\":-1,"
                            "\"output_per_mtok\":1,\"currency\":\"USD\",\"date\":\"2024-01\",\"source\":\"https://x\"}]}",
         "'input_per_mtok' must be a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = load_with(bad[i].file, bad[i].text, &err);
        if (rc != PB_EFORMAT || !strstr(err.msg, bad[i].expect))
            fail_msg("case %zu: rc %d, message '%s', expected one with '%s'", i, rc, err.msg, bad[i].expect);
        assert_non_null(strstr(err.msg, bad[i].file)); /* names the file */
    }
    /* a folder with no catalog file in it is a mistake */
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty", test_tmpdir());
    mkdir(empty, 0755);
    struct catalog *c = NULL;
    assert_int_equal(catalog_load(empty, &c, &err), PB_EIO);
    assert_non_null(strstr(err.msg, "holds none"));
}

/* The catalog's GGUF repositories: every entry well formed, the models
 * plan recommends on small CPU boxes covered, and NAME[:QUANT] resolved
 * to a URL in Hugging Face's layout on any registry. */
static void test_catalog_gguf(void **state)
{
    (void)state;
    struct catalog *c = builtin();
    int with = 0;
    for (int i = 0; i < c->n_models; i++) {
        const struct cat_gguf *g = &c->models[i].gguf;
        if (!g->repo[0]) {
            assert_int_equal(g->n_files, 0);
            continue;
        }
        with++;
        assert_non_null(strchr(g->repo, '/'));
        assert_true(g->n_files > 0 && g->revision[0]);
        for (int f = 0; f < g->n_files; f++) {
            assert_true(strlen(g->files[f].file) > 5);
            /* the file name carries its quantization, as the repositories name them */
            char up[128];
            size_t n = strlen(g->files[f].file);
            for (size_t k = 0; k <= n; k++)
                up[k] = (char)toupper((unsigned char)g->files[f].file[k]);
            if (!strstr(up, g->files[f].quant))
                fail_msg("%s: %s is not named for %s", c->models[i].id, g->files[f].file, g->files[f].quant);
        }
    }
    assert_true(with >= 25);
    const char *need[] = {"tinyllama-1.1b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen3-0.6b",
                          "qwen3-4b", "qwen3-8b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "gemma-3-1b",
                          "gemma-3-4b", "smollm2-1.7b", "gpt-oss-20b", "mistral-7b"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!catalog_model(c, need[i])->gguf.repo[0])
            fail_msg("%s has no GGUF repository in the catalog", need[i]);

    struct cat_gguf_ref r;
    pb_err err = {0};
    /* the default quantization, a registry's trailing slash */
    assert_int_equal(catalog_gguf_resolve(c, "qwen2.5-7b", "https://huggingface.co/", &r, &err), PB_OK);
    assert_string_equal(r.url, "https://huggingface.co/bartowski/Qwen2.5-7B-Instruct-GGUF/resolve/main/"
                               "Qwen2.5-7B-Instruct-Q4_K_M.gguf");
    assert_string_equal(r.name, "qwen2.5-7b:q4_k_m");
    assert_string_equal(r.f->quant, "Q4_K_M");
    /* names and quantizations in any case; a mirror with a path */
    assert_int_equal(catalog_gguf_resolve(c, "TinyLlama-1.1B:q8_0", "http://mirror.corp:8081/hf", &r, &err), PB_OK);
    assert_string_equal(r.url, "http://mirror.corp:8081/hf/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/resolve/main/"
                               "tinyllama-1.1b-chat-v1.0.Q8_0.gguf");
    assert_string_equal(r.name, "tinyllama-1.1b:q8_0");
    /* a repository without Q4_K_M: no default, the list */
    const char *moe = "{\"models\":[{" MODEL_OK ",\"gguf\":{\"repo\":\"org/m-GGUF\",\"revision\":\"v1.0\","
                      "\"files\":{\"MXFP4\":{\"file\":\"sub/m-mxfp4.gguf\",\"sha256\":\"" 
                      "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}}}}]}";
    assert_int_equal(catalog_parse(c, "models.json", moe, strlen(moe), "test", &err), PB_OK);
    assert_int_equal(catalog_gguf_resolve(c, "m", "https://huggingface.co", &r, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "name one of MXFP4"));
    assert_int_equal(catalog_gguf_resolve(c, "M:mxfp4", "https://huggingface.co", &r, &err), PB_OK);
    assert_string_equal(r.name, "m:mxfp4");
    assert_string_equal(r.url, "https://huggingface.co/org/m-GGUF/resolve/v1.0/sub/m-mxfp4.gguf");
    assert_string_equal(r.f->sha256, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    catalog_free(c);
    c = builtin();
    /* a quantization the catalog does not list: those it does */
    assert_int_equal(catalog_gguf_resolve(c, "gemma-3-4b:Q2_K", "https://huggingface.co", &r, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "Q2_K"));
    assert_non_null(strstr(err.msg, "Q8_0, Q4_K_M"));
    /* an unknown name: close ones */
    assert_int_equal(catalog_gguf_resolve(c, "qwen2.5-7bb:q4_k_m", "https://huggingface.co", &r, &err), PB_ENOTFOUND);
    assert_non_null(strstr(err.msg, "did you mean qwen2.5-7b"));
    /* a model with no repository */
    assert_int_equal(catalog_gguf_resolve(c, "llama-3.1-405b", "https://huggingface.co", &r, &err), PB_EUNSUPPORTED);
    /* registries that are not base URLs */
    const char *bad[] = {"ftp://x", "huggingface.co", "https://", "https://h/x?y=1", "https://h x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(catalog_gguf_resolve(c, "qwen2.5-7b", bad[i], &r, &err), PB_EINVAL);
    catalog_free(c);
}

/* TinyLlama 1.1B: hidden 2048, 22 layers, 32 heads of 64, 4 KV heads,
 * FFN 5632, vocabulary 32000, separate output matrix.
 *   matrices per layer: q 2048x2048 + k, v 2048x256 + o 2048x2048
 *                       + gate, up 2048x5632 + down 5632x2048
 *                     = 4194304 + 2 x 524288 + 4194304 + 3 x 11534336 = 44040192
 *   22 layers: 968884224; embedding and output 2048 x 32000 = 65536000 each;
 *   norms (2 per layer + 1) x 2048 floats = 92160 x 4 bytes = 368640.
 * Q8_0 (34 bytes per 32): layers 1029439488, embedding and output 69632000
 *   each (Q8_0's output stays Q8_0): total 1169072128, read per token
 *   (layers + output) 1099071488.
 * Q4_0 (18 bytes per 32): layers 544997376, embedding 36864000, output in
 *   Q6_K (210 bytes per 256) 53760000: total 635990016, read 598757376. */
static struct cat_model tinyllama(void)
{
    struct cat_model m = {.id = "tinyllama-1.1b", .arch = "llama", .layers = 22, .hidden = 2048, .ffn = 5632,
                          .heads = 32, .kv_heads = 4, .head_dim = 64, .vocab = 32000, .context = 2048,
                          .params_b = 1.1};
    return m;
}

static void test_weights_by_hand(void **state)
{
    (void)state;
    struct cat_model m = tinyllama();
    struct plan_weights w;
    pb_err err = {0};
    assert_int_equal(plan_weights(&m, plan_quant_find("Q8_0"), &w, &err), PB_OK);
    assert_int_equal(w.bytes, 1169072128ull);
    assert_int_equal(w.read_dense, 1099071488ull);
    assert_int_equal(w.read_experts, 0);
    assert_true(w.params == 1100048384.0); /* 968884224 + 2 x 65536000 + 92160 */
    assert_int_equal(plan_weights(&m, plan_quant_find("q4_0"), &w, &err), PB_OK);
    assert_int_equal(w.bytes, 635990016ull);
    assert_int_equal(w.read_dense, 598757376ull);
    /* F16: 2 bytes a matrix element, norms F32 */
    assert_int_equal(plan_weights(&m, plan_quant_find("F16"), &w, &err), PB_OK);
    assert_int_equal(w.bytes, (968884224ull + 2 * 65536000ull) * 2 + 368640ull);
    ASSERT_NEAR(w.bpw, 8.0 * (double)w.bytes / w.params, 1e-12);

    /* KV cache, f16: 2 (K, V) x 22 layers x 2048 positions x 256 x 2 bytes */
    assert_int_equal(plan_kv_bytes(&m, 2048, PB_KV_F16), 2ull * 22 * 2048 * 256 * 2);
    /* q8_0: 34 bytes per 32 values */
    assert_int_equal(plan_kv_bytes(&m, 2048, PB_KV_Q8_0), 2ull * 22 * 2048 * 256 / 32 * 34);
    /* Gemma 3 27B at 8192: 62 layers, one in 6 global (10), 52 within a
     * 1024 window, whose rings also hold the rest of a batch (the engine's
     * 512: 1024 + 511 rows); 16 KV heads x 128 = 2048 values, f16:
     * 2 x 2048 x 2 = 8192 bytes a position a layer
     * 10 x 8192 x 8192 + 52 x 1535 x 8192 = 671088640 + 653885440 */
    struct catalog *c = builtin();
    const struct cat_model *g = catalog_model(c, "gemma-3-27b");
    assert_non_null(g);
    assert_int_equal(engine_defaults().n_batch, 512);
    assert_int_equal(plan_kv_bytes(g, 8192, PB_KV_F16), 1324974080ull);
    /* a mixture of experts reads experts_used / experts of its experts */
    const struct cat_model *moe = catalog_model(c, "qwen3-30b-a3b");
    assert_int_equal(plan_weights(moe, plan_quant_find("Q8_0"), &w, &err), PB_OK);
    assert_true(w.read_experts > 10 * w.read_dense);
    assert_true(w.read_dense + w.read_experts <= w.bytes);
    catalog_free(c);
}

/* The plan's weights for a shape equal the tensor data of the file plumb
 * synth writes for it, in every type plumb writes. */
static void test_weights_match_synth(void **state)
{
    (void)state;
    const struct synth_shape *sh = synth_shape_find("qwen2.5-0.5b"); /* 896: rows that fall back from K-quants */
    assert_non_null(sh);
    struct synth_shape small = *sh;
    small.n_layer = 2; /* the shape's widths, fewer layers: quick */
    small.n_vocab = 4096;
    struct cat_model m = {.id = "s", .arch = "qwen2", .layers = small.n_layer, .hidden = small.n_embd,
                          .ffn = small.n_ff, .heads = small.n_head, .kv_heads = small.n_head_kv,
                          .head_dim = small.head_dim, .vocab = small.n_vocab, .context = 512,
                          .tied_embeddings = small.tied, .params_b = 0.1};
    const char *types[] = {"Q8_0", "Q4_0", "Q4_K_M", "Q6_K", "F16"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[512], name[32];
        snprintf(name, sizeof name, "synth-%s.gguf", types[i]);
        test_tmpfile(name, path, sizeof path);
        struct synth_params sp = {.shape = small, .seed = 1, .n_threads = 1};
        assert_true(pb_ftype_from_name(types[i], &sp.ftype));
        uint64_t written;
        pb_err err = {0};
        if (synth_write(path, &sp, &written, &err))
            fail_msg("synth: %s", err.msg);
        struct plan_weights w;
        assert_int_equal(plan_weights(&m, plan_quant_find(types[i]), &w, &err), PB_OK);
        /* qwen2 has Q/K/V biases the plan leaves out: 896 + 2 x 128 floats a layer */
        uint64_t biases = (uint64_t)small.n_layer * (uint64_t)(small.n_head + 2 * small.n_head_kv) * 64 * 4;
        if (w.bytes + biases != written)
            fail_msg("%s: plan %llu + biases %llu, synth wrote %llu", types[i], (unsigned long long)w.bytes,
                     (unsigned long long)biases, (unsigned long long)written);
        /* and the file reads back as the same shape */
        struct cat_model back;
        char ft[16];
        assert_int_equal(plan_model_from_gguf(path, &back, ft, sizeof ft, &err), PB_OK);
        assert_string_equal(ft, types[i]);
        assert_int_equal(back.layers, m.layers);
        assert_int_equal(back.hidden, m.hidden);
        assert_int_equal(back.kv_heads, m.kv_heads);
        assert_int_equal(back.vocab, m.vocab);
        assert_true(back.tied_embeddings == m.tied_embeddings);
        remove(path);
    }
}

/* A device with round figures: the speeds by hand. */
static struct plan_target round_target(void)
{
    struct plan_target t = {.id = "round", .name = "round", .kind = CAT_CPU, .mem_bytes = 64e9, .bw_gbs = 100,
                            .int8_ops = 1e12, .fp_ops = 1e12, .fixed_overhead = 0, .eff_tg = 0.5, .eff_pp = 0.5};
    return t;
}

static void test_speed_by_hand(void **state)
{
    (void)state;
    struct cat_model m = tinyllama();
    struct plan_target t = round_target();
    struct plan_params p = {.ctx = 48, .users = 1, .slo_tps = 10, .prompt = 32, .kv_type = PB_KV_F16};
    static struct plan_result r;
    pb_err err = {0};
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_OK);
    const struct plan_row *q8 = &r.rows[plan_quant_find("Q8_0")];
    /* generation, Q8_0, one user at position 48:
     *   bytes: 1099071488 weights + KV 2 x 22 x 48 x 256 x 2 = 1081344
     *          = 1100152832 -> 0.01100152832 s at 100 GB/s
     *   FLOP:  2 x 1100048384 params + attention 4 x 2048 x 22 x 48
     *          = 2200096768 + 8650752 -> 0.0022 s at 1e12: memory bound
     *   t/s = 0.5 / 0.01100152832 = 45.448 */
    ASSERT_NEAR(q8->tg_user, 0.5 / 0.01100152832, 1e-9);
    assert_false(q8->compute_bound);
    assert_int_equal(q8->kv_bytes, 1081344);
    /* prompt, 32 tokens: FLOP a token 2200096768 + 4 x 2048 x 22 x 16 =
     * 2202980352 -> 2.202980352 ms; weights once per 32 tokens:
     * 1169072128 / 32 / 1e11 = 0.365 ms; t/s = 0.5 / 0.002202980352 */
    ASSERT_NEAR(q8->pp_tps, 0.5 / 0.002202980352, 1e-9);
    ASSERT_NEAR(q8->ttft_s, 32 / q8->pp_tps + 0.01100152832 / 0.5, 1e-9);
    assert_true(q8->fits && q8->meets);
    /* more users: memory grows by their caches, speed per user falls */
    p.users = 8;
    static struct plan_result r8;
    assert_int_equal(plan_evaluate(&m, &t, &p, &r8, &err), PB_OK);
    const struct plan_row *q8u = &r8.rows[plan_quant_find("Q8_0")];
    assert_int_equal(q8u->kv_bytes, 8 * 1081344);
    assert_true(q8u->tg_user < q8->tg_user && q8u->tg_total > q8->tg_total);
    /* users at the target: the largest count whose per-user speed is at
     * least 10 t/s; 1 more user falls below it */
    assert_true(q8->users_slo >= 1);
    struct plan_params pu = p;
    pu.users = q8->users_slo;
    static struct plan_result ru;
    assert_int_equal(plan_evaluate(&m, &t, &pu, &ru, &err), PB_OK);
    assert_true(ru.rows[1].tg_user >= 10);
    pu.users = q8->users_slo + 1;
    assert_int_equal(plan_evaluate(&m, &t, &pu, &ru, &err), PB_OK);
    assert_true(ru.rows[1].tg_user < 10 || pu.users > q8->users_max);
    /* the best quality that meets the target is recommended: F16 here */
    assert_int_equal(r.recommended, plan_quant_find("F16"));
    /* too little memory: nothing fits, nothing recommended */
    t.mem_bytes = 100e6;
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_OK);
    assert_int_equal(r.recommended, -1);
    for (int i = 0; i < r.n_rows; i++)
        assert_false(r.rows[i].fits);
    /* bad parameters */
    p.users = 0;
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_EINVAL);
}

/* A machine profile for the calibration tests: AVX2 kernels, 2 threads,
 * 25 GB/s, int8 100 GOPS, FP32 50 GFLOP/s, 16 GiB available. */
static void test_survey(struct survey *s)
{
    memset(s, 0, sizeof *s);
    strcpy(s->cpu.model, "test");
    strcpy(s->cpu.kernels, "avx2");
    s->cpu.threads = 2;
    s->memory.available = 16ull << 30;
    s->memory.bandwidth_gbs = 25;
    s->compute.int8_gops = 100;
    s->compute.f32_gflops = 50;
}

static void test_calibration_efficiency(void **state)
{
    (void)state;
    static struct survey s;
    test_survey(&s);
    /* roofline of the record: max(1e9 B / 20 GB/s, 2 x 1.1e9 / 100e9)
     * = max(0.05, 0.022) s; 15 t/s measured: efficiency 0.05 x 15 = 0.75.
     * prompt: max(0.022, 1e9 / (20e9 x 32)) = 0.022 s; 30 t/s: 0.66 */
    struct survey_calib cal[2] = {
        {.model = "a", .ftype = "Q4_0", .kernels = "avx2", .threads = 2, .weight_bytes = 1000000000,
         .n_params = 1100000000, .bandwidth_gbs = 20, .tg_tps = 15, .tg_tokens = 16, .pp_tps = 30, .pp_tokens = 32},
        {.model = "b", .ftype = "Q8_0", .kernels = "scalar", .threads = 2, .weight_bytes = 1, .n_params = 1,
         .bandwidth_gbs = 20, .tg_tps = 1},
    };
    struct plan_target t;
    plan_target_this(&s, cal, 2, &t);
    assert_int_equal(t.n_cal, 1); /* the other kernels' record is not this machine's state */
    ASSERT_NEAR(t.cal[0].eff_tg, 0.75, 1e-12);
    ASSERT_NEAR(t.cal[0].eff_pp, 0.66, 1e-12);
    assert_true(t.this_machine && t.bw_gbs == 25);
    struct cat_model m = tinyllama();
    struct plan_params p = {.ctx = 48, .users = 1, .prompt = 32, .kv_type = PB_KV_F16};
    static struct plan_result r;
    pb_err err = {0};
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_OK);
    const struct plan_row *q4 = &r.rows[plan_quant_find("Q4_0")], *q8 = &r.rows[plan_quant_find("Q8_0")];
    assert_true(q4->eff_calibrated && q4->eff_tg == t.cal[0].eff_tg);
    assert_true(q8->eff_calibrated); /* from the other type's record */
    assert_non_null(strstr(q8->eff_from, "median"));
    /* no records: assumed */
    plan_target_this(&s, NULL, 0, &t);
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_OK);
    assert_false(r.rows[0].eff_calibrated);
    assert_string_equal(r.rows[0].eff_from, "assumed");
}

/* A calibration record calibrates models of its size: a tiny model's bench
 * (weights in the CPU's caches, measured "slow" against the roofline of a
 * big one's) no longer becomes the efficiency of every model on the
 * machine (plan llama-3.2-1b fell from 15.3 to 1.4 t/s). The row names the
 * record it used and when it was made. */
static void test_calibration_size_class(void **state)
{
    (void)state;
    assert_int_equal(survey_calib_size_class(9u << 20), 0);
    assert_int_equal(survey_calib_size_class(256u << 20), 1);
    assert_int_equal(survey_calib_size_class(1ull << 30), 2);
    assert_int_equal(survey_calib_size_class(40ull << 30), 4);
    assert_false(survey_calib_applies(9u << 20, 600u << 20));
    assert_false(survey_calib_applies(600u << 20, 9u << 20));
    assert_true(survey_calib_applies(600u << 20, 1200u << 20));
    assert_false(survey_calib_applies(600u << 20, 8ull << 30));
    char why[300];
    struct survey_calib tiny = {.weight_bytes = 9u << 20, .tg_tps = 300, .tg_tokens = 64};
    struct survey_calib brief = {.weight_bytes = 600u << 20, .tg_tps = 30, .tg_tokens = 4};
    struct survey_calib good = {.weight_bytes = 600u << 20, .tg_tps = 30, .tg_tokens = 16, .pp_tps = 90, .pp_tokens = 32};
    assert_false(survey_calib_representative(&tiny, why, sizeof why));
    assert_non_null(strstr(why, "caches"));
    assert_false(survey_calib_representative(&brief, why, sizeof why));
    assert_non_null(strstr(why, "short"));
    assert_true(survey_calib_representative(&good, why, sizeof why));

    static struct survey s;
    test_survey(&s);
    struct survey_calib cal[2] = {
        /* 9 MiB at 300 t/s: 0.47 ms a token against a roofline of 0.37 ms */
        {.created = "2026-12-01T10:00:00Z", .model = "stories15M", .ftype = "Q4_0", .kernels = "avx2", .threads = 2,
         .weight_bytes = 9u << 20, .n_params = 15000000, .bandwidth_gbs = 20, .tg_tps = 300, .tg_tokens = 64},
        {.created = "2026-12-02T09:23:15Z", .model = "tinyllama:Q4_0", .ftype = "Q4_0", .kernels = "avx2",
         .threads = 2, .weight_bytes = 598757376, .n_params = 1100000000, .bandwidth_gbs = 20, .tg_tps = 15,
         .tg_tokens = 16},
    };
    struct plan_target t;
    struct cat_model m = tinyllama();
    struct plan_params p = {.ctx = 48, .users = 1, .prompt = 32, .kv_type = PB_KV_F16};
    static struct plan_result r;
    pb_err err = {0};
    /* the tiny record alone: nothing is calibrated by it */
    plan_target_this(&s, cal, 1, &t);
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_OK);
    for (int i = 0; i < r.n_rows; i++)
        if (r.rows[i].eff_calibrated)
            fail_msg("%s took '%s'", r.rows[i].quant, r.rows[i].eff_from);
    /* a record of TinyLlama's own size class is used, and named */
    plan_target_this(&s, cal, 2, &t);
    assert_int_equal(plan_evaluate(&m, &t, &p, &r, &err), PB_OK);
    const struct plan_row *q4 = &r.rows[plan_quant_find("Q4_0")];
    assert_true(q4->eff_calibrated);
    ASSERT_NEAR(q4->eff_tg, t.cal[1].eff_tg, 1e-12);
    assert_non_null(strstr(q4->eff_from, "tinyllama:Q4_0"));
    assert_non_null(strstr(q4->eff_from, "2026-12-02T09:23:15Z"));
    /* a 70B's weights are far beyond either record's size: assumed */
    struct cat_model big = {.id = "big", .arch = "llama", .layers = 80, .hidden = 8192, .ffn = 28672, .heads = 64,
                            .kv_heads = 8, .head_dim = 128, .vocab = 128256, .context = 8192, .params_b = 70};
    assert_int_equal(plan_evaluate(&big, &t, &p, &r, &err), PB_OK);
    assert_false(r.rows[plan_quant_find("Q4_0")].eff_calibrated);
}

static void test_smallest_device(void **state)
{
    (void)state;
    struct catalog *c = builtin();
    const struct cat_model *m = catalog_model(c, "llama-3.3-70b");
    struct plan_params p = {.ctx = 4096, .users = 1, .slo_tps = 5, .prompt = 512, .kv_type = PB_KV_F16};
    static struct plan_result r;
    int d = plan_smallest_device(c, m, &p, &r);
    assert_true(d >= 0);
    /* 70 B parameters need more than 32 GB at the lowest quantization */
    assert_true(c->devices[d].memory_gb * c->devices[d].usable_fraction > 20);
    assert_true(r.recommended >= 0 && r.rows[r.recommended].fits && r.rows[r.recommended].tg_user >= 5);
    /* no device reaches 100000 t/s a user */
    p.slo_tps = 1e5;
    assert_int_equal(plan_smallest_device(c, m, &p, &r), -1);
    catalog_free(c);
}

/* ---- TCO, by hand ---- */

static void test_tco_by_hand(void **state)
{
    (void)state;
    /* Case A: 3000 purchase, 400 W load, 100 W idle, 0.25 / kWh, half the
     * time under load, 3 years, 2 h x 50 upkeep, 1 M in + 1 M out tokens a
     * day at 1 and 3 per million.
     *   average power 100 + 0.5 x 300 = 250 W; 250 x 730.5 / 1000 = 182.625 kWh
     *   energy 182.625 x 0.25 = 45.65625; hardware 3000 / 36 = 83.3333...
     *   upkeep 100; opex 145.65625; on premise 228.98958333
     *   tokens 2 M x 30.4375 = 60.875 M; API (1 x 1 + 1 x 3) x 30.4375 = 121.75
     *   per Mtok: 228.98958333 / 60.875 = 3.76163587, API 2.0
     *   break-even volume 228.98958333 / (121.75 / 60.875e6) = 114494791.67
     *   break-even time: API 121.75 < opex 145.65625: never */
    struct tco_inputs a = {.capex = 3000, .power_w = 400, .idle_w = 100, .kwh_price = 0.25, .utilisation = 0.5,
                           .years = 3, .upkeep_hours = 2, .upkeep_rate = 50, .tokens_in_day = 1e6,
                           .tokens_out_day = 1e6, .api_in = 1, .api_out = 3};
    struct tco_result r;
    pb_err err = {0};
    assert_int_equal(tco_compute(&a, &r, &err), PB_OK);
    ASSERT_NEAR(r.avg_power_w, 250, 1e-12);
    ASSERT_NEAR(r.energy_kwh_month, 182.625, 1e-12);
    ASSERT_NEAR(r.energy_month, 45.65625, 1e-12);
    ASSERT_NEAR(r.capex_month, 3000.0 / 36, 1e-12);
    ASSERT_NEAR(r.upkeep_month, 100, 1e-12);
    ASSERT_NEAR(r.onprem_month, 228.98958333333, 1e-10);
    ASSERT_NEAR(r.tokens_month, 60.875e6, 1e-12);
    ASSERT_NEAR(r.api_month, 121.75, 1e-12);
    ASSERT_NEAR(r.onprem_per_mtok, 3.7616358658, 1e-9);
    ASSERT_NEAR(r.api_per_mtok, 2.0, 1e-12);
    ASSERT_NEAR(r.breakeven_tokens_month, 114494791.667, 1e-9);
    assert_true(r.breakeven_months < 0);
    assert_true(r.saving_month < 0);

    /* Case B: 10000 purchase, 1000 W always under load (idle 200),
     * 0.20 / kWh, 5 years, no upkeep, 10 M in + 5 M out a day at 2.5 / 10.
     *   730.5 kWh -> 146.1; hardware 10000 / 60 = 166.6667; on premise 312.766667
     *   tokens 15 M x 30.4375 = 456.5625 M; API (25 + 50) x 30.4375 = 2282.8125
     *   per Mtok 312.766667 / 456.5625 = 0.68504677, API 5.0
     *   break-even time 10000 / (2282.8125 - 146.1) = 4.68008682 months
     *   break-even volume 312.766667 / 5e-6 = 62553333.3 tokens a month */
    struct tco_inputs b = {.capex = 10000, .power_w = 1000, .idle_w = 200, .kwh_price = 0.2, .utilisation = 1,
                           .years = 5, .tokens_in_day = 10e6, .tokens_out_day = 5e6, .api_in = 2.5, .api_out = 10};
    assert_int_equal(tco_compute(&b, &r, &err), PB_OK);
    ASSERT_NEAR(r.energy_month, 146.1, 1e-12);
    ASSERT_NEAR(r.onprem_month, 312.7666666667, 1e-10);
    ASSERT_NEAR(r.api_month, 2282.8125, 1e-12);
    ASSERT_NEAR(r.onprem_per_mtok, 0.6850467716, 1e-9);
    ASSERT_NEAR(r.api_per_mtok, 5.0, 1e-12);
    ASSERT_NEAR(r.breakeven_months, 4.680086817, 1e-9);
    ASSERT_NEAR(r.breakeven_tokens_month, 62553333.33, 1e-9);
    ASSERT_NEAR(r.saving_month, 2282.8125 - 312.7666666667, 1e-10);

    /* bad inputs */
    struct tco_inputs x = b;
    x.capex = -1;
    assert_int_equal(tco_compute(&x, &r, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "capex"));
    x = b;
    x.utilisation = 1.5;
    assert_int_equal(tco_compute(&x, &r, &err), PB_EINVAL);
    x = b;
    x.idle_w = 2000;
    assert_int_equal(tco_compute(&x, &r, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "idle"));
    x = b;
    x.tokens_in_day = x.tokens_out_day = 0;
    assert_int_equal(tco_compute(&x, &r, &err), PB_EINVAL);
    x = b;
    x.kwh_price = NAN;
    assert_int_equal(tco_compute(&x, &r, &err), PB_EINVAL);
}

static void test_tco_chart(void **state)
{
    (void)state;
    struct tco_inputs b = {.capex = 10000, .power_w = 1000, .idle_w = 200, .kwh_price = 0.2, .utilisation = 1,
                           .years = 5, .tokens_in_day = 10e6, .tokens_out_day = 5e6, .api_in = 2.5, .api_out = 10};
    struct tco_result r;
    pb_err err = {0};
    assert_int_equal(tco_compute(&b, &r, &err), PB_OK);
    struct tco_chart c = {"t", "on premise", "API", "USD", 60};
    char svg[512], png[512], bad[512];
    test_tmpfile("c.svg", svg, sizeof svg);
    test_tmpfile("c.png", png, sizeof png);
    test_tmpfile("c.txt", bad, sizeof bad);
    assert_int_equal(tco_chart_write(svg, &b, &r, &c, &err), PB_OK);
    assert_int_equal(tco_chart_write(png, &b, &r, &c, &err), PB_OK);
    assert_int_equal(tco_chart_write(bad, &b, &r, &c, &err), PB_EINVAL);
    assert_int_equal(tco_chart_write("/nonexistent/dir/c.svg", &b, &r, &c, &err), PB_EIO);
    size_t n;
    char *s = test_read_file(svg, &n);
    assert_non_null(s);
    assert_non_null(strstr(s, "<svg"));
    free(s);
    s = test_read_file(png, &n);
    assert_non_null(s);
    assert_true(n > 1000 && !memcmp(s, "\x89PNG\r\n\x1a\n", 8));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_catalog),     cmocka_unit_test(test_corrupt_catalogs),
        cmocka_unit_test(test_catalog_gguf),
        cmocka_unit_test(test_weights_by_hand),     cmocka_unit_test(test_weights_match_synth),
        cmocka_unit_test(test_speed_by_hand),       cmocka_unit_test(test_calibration_efficiency),
        cmocka_unit_test(test_calibration_size_class),
        cmocka_unit_test(test_smallest_device),     cmocka_unit_test(test_tco_by_hand),
        cmocka_unit_test(test_tco_chart),
    };
    return cmocka_run_group_tests_name("plan", tests, NULL, NULL);
}
