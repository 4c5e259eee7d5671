/* plumb show: what a GGUF file holds, with its store entry and history
 * when MODEL is a store name, and the memory it needs. */
#define _GNU_SOURCE
#include "cli.h"

#include "gguf/gguf.h"
#include "kv/kv.h"
#include "model/model.h"
#include "quant/ftype.h"
#include "store/store.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb show MODEL [OPTIONS]\n"
           "\n"
           "Describes a GGUF model: architecture, parameter count, shape, tensor\n"
           "types and sizes, context length, tokenizer, chat template, and the memory\n"
           "it needs at the default context (weights + F16 KV cache + activations, an\n"
           "estimate). MODEL is a file or a store name (NAME[:TAG]); for a name, the\n"
           "store entry and its history come first.\n"
           "\n"
           "Options:\n"
           "      --json       print a JSON object\n"
           "      --tensors    also list every tensor\n"
           "      --metadata   also list every metadata key\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb show tiny-llama-q4_0.gguf --tensors\n"
           "  plumb show support-bot:2\n");
}

struct type_sum {
    uint64_t tensors, params, bytes;
};

static json_t *str_json(struct gguf_str s)
{
    return cli_json_text(s.data, (size_t)s.len);
}

/* What running the model at the engine's default context takes: the
 * weights, the F16 KV cache, and one batch of activation buffers (an
 * estimate: thread scratch and the repacking's rounding are left out). */
struct mem_estimate {
    int64_t n_ctx;
    uint64_t weights, kv, compute, total;
};

static void estimate(const struct model_hparams *hp, uint64_t weights, struct mem_estimate *m)
{
    enum { DEFAULT_MAX_CTX = 4096, BATCH = 512 }; /* engine_open's defaults */
    m->n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < DEFAULT_MAX_CTX ? hp->n_ctx_train : DEFAULT_MAX_CTX;
    uint64_t b = (uint64_t)(m->n_ctx < BATCH ? m->n_ctx : BATCH);
    uint64_t kv_dim = (uint64_t)(hp->n_head_kv * hp->head_dim), q_dim = (uint64_t)(hp->n_head * hp->head_dim);
    m->weights = weights;
    m->kv = kv_bytes((int)hp->n_layer, m->n_ctx, (int64_t)kv_dim, KV_F16);
    /* floats per batch row: x, xb, q, att, gate, up, k, v; then the logits
     * and the 8-bit activations of the widest product */
    m->compute = b * 4 * (2 * (uint64_t)hp->n_embd + 2 * q_dim + 2 * (uint64_t)hp->n_ff + 2 * kv_dim) +
                 4 * (uint64_t)hp->n_vocab + b * (uint64_t)(hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd) * 2;
    m->total = m->weights + m->kv + m->compute;
}

static json_t *store_json(const struct store_entry *e, const struct store_revision *h, size_t n_h)
{
    json_t *o = cli_store_entry_json(e), *a = json_array();
    for (size_t i = 0; i < n_h; i++)
        json_array_append_new(a, json_pack("{s:I,s:o,s:s,s:s,s:o,s:o,s:b}", "revision", (json_int_t)h[i].id,
                                           "parent", h[i].parent ? json_integer(h[i].parent) : json_null(),
                                           "digest", h[i].digest, "action", h[i].action, "source",
                                           cli_json_text(h[i].source, strlen(h[i].source)), "at",
                                           cli_json_time(h[i].at), "current", h[i].current));
    json_object_set_new(o, "history", a);
    return o;
}

static void store_print(const struct store_entry *e, const struct store_revision *h, size_t n_h)
{
    char ref[STORE_NAME_MAX + STORE_TAG_MAX + 2], when[32];
    store_ref_format(&e->ref, ref, sizeof ref);
    printf("name            %s\n", ref);
    printf("digest          sha256:%s\n", e->digest);
    printf("source          %.300s\n", e->source[0] ? e->source : "-");
    cli_fmt_time(e->modified, when, sizeof when);
    printf("modified        %s", when);
    cli_fmt_time(e->created, when, sizeof when);
    printf(" (name created %s)\n", when);
    printf("history         %zu version%s\n", n_h, n_h == 1 ? "" : "s");
    for (size_t i = 0; i < n_h; i++) {
        cli_fmt_time(h[i].at, when, sizeof when);
        printf("  %s %4lld  sha256:%.12s  %-8s %s  %.200s\n", h[i].current ? "*" : " ", (long long)h[i].id,
               h[i].digest, h[i].action, when, h[i].source);
    }
    printf("\n");
}

static int show(const struct gguf_file *f, const struct store_entry *e, const struct store_revision *h, size_t n_h,
                bool json, bool tensors, bool metadata)
{
    struct type_sum sums[PB_TYPE_COUNT] = {{0}};
    uint64_t n_params = 0, n_bytes = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        uint64_t nel = (uint64_t)gguf_tensor_nelements(t);
        sums[t->type].tensors++;
        sums[t->type].params += nel;
        sums[t->type].bytes += t->nbytes;
        n_params += nel;
        n_bytes += t->nbytes;
    }
    pb_err herr = {0};
    struct model_hparams hp;
    bool have_hp = model_hparams_read(f, &hp, &herr) == PB_OK;
    struct gguf_str arch = {0, ""}, name = {0, ""}, tokm = {0, ""}, tmpl = {0, ""}, pre = {0, ""};
    bool has_arch = gguf_get_str(f, "general.architecture", &arch, NULL) == 1;
    bool has_name = gguf_get_str(f, "general.name", &name, NULL) == 1;
    bool has_tok = gguf_get_str(f, "tokenizer.ggml.model", &tokm, NULL) == 1;
    bool has_tmpl = gguf_get_str(f, "tokenizer.chat_template", &tmpl, NULL) == 1;
    bool has_pre = gguf_get_str(f, "tokenizer.ggml.pre", &pre, NULL) == 1;
    struct gguf_arr toks = {0};
    uint64_t n_tokens = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, NULL) == 1 ? toks.n : 0;
    int64_t ftype = -1;
    if (gguf_get_int(f, "general.file_type", &ftype, NULL) != 1)
        ftype = -1;
    const char *ftype_name = ftype >= 0 ? pb_ftype_name(ftype) : NULL;
    struct mem_estimate mem = {0};
    if (have_hp)
        estimate(&hp, n_bytes, &mem);

    if (json) {
        json_t *o = json_object();
        if (e)
            json_object_set_new(o, "store", store_json(e, h, n_h));
        json_object_set_new(o, "file", json_string(gguf_name(f)));
        json_object_set_new(o, "size_bytes", json_integer((json_int_t)gguf_file_size(f)));
        json_object_set_new(o, "gguf_version", json_integer(gguf_version(f)));
        json_object_set_new(o, "architecture", has_arch ? str_json(arch) : json_null());
        json_object_set_new(o, "name", has_name ? str_json(name) : json_null());
        json_object_set_new(o, "file_type", ftype_name ? json_string(ftype_name) : json_null());
        json_object_set_new(o, "parameters", json_integer((json_int_t)n_params));
        json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)n_bytes));
        if (have_hp) {
            json_object_set_new(o, "context_length", json_integer(hp.n_ctx_train));
            json_object_set_new(
                o, "hparams",
                json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "n_vocab", (json_int_t)hp.n_vocab, "n_embd",
                          (json_int_t)hp.n_embd, "n_layer", (json_int_t)hp.n_layer, "n_head", (json_int_t)hp.n_head,
                          "n_head_kv", (json_int_t)hp.n_head_kv, "head_dim", (json_int_t)hp.head_dim, "n_ff",
                          (json_int_t)hp.n_ff, "n_rot", (json_int_t)hp.n_rot, "rope_freq_base", (double)hp.rope_base,
                          "rms_eps", (double)hp.rms_eps));
        } else {
            json_object_set_new(o, "context_length", json_null());
            json_object_set_new(o, "hparams_error", json_string(herr.msg));
        }
        json_object_set_new(o, "tokenizer",
                            has_tok ? json_pack("{s:o,s:o,s:I}", "model", str_json(tokm), "pre",
                                                has_pre ? str_json(pre) : json_null(), "tokens", (json_int_t)n_tokens)
                                    : json_null());
        json_object_set_new(o, "chat_template", json_boolean(has_tmpl));
        json_object_set_new(o, "memory",
                            have_hp ? json_pack("{s:I,s:s,s:I,s:I,s:I,s:I}", "context", (json_int_t)mem.n_ctx,
                                                "kv_type", "f16", "weights_bytes", (json_int_t)mem.weights,
                                                "kv_cache_bytes", (json_int_t)mem.kv, "compute_bytes",
                                                (json_int_t)mem.compute, "total_bytes", (json_int_t)mem.total)
                                    : json_null());
        json_t *types = json_array();
        for (int t = 0; t < PB_TYPE_COUNT; t++)
            if (sums[t].tensors)
                json_array_append_new(types, json_pack("{s:s,s:I,s:I,s:I}", "type", pb_type_name((uint32_t)t),
                                                       "tensors", (json_int_t)sums[t].tensors, "parameters",
                                                       (json_int_t)sums[t].params, "bytes", (json_int_t)sums[t].bytes));
        json_object_set_new(o, "tensor_types", types);
        if (tensors) {
            json_t *ta = json_array();
            for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
                const struct gguf_tensor *t = gguf_tensor(f, i);
                json_t *shape = json_array();
                for (uint32_t d = 0; d < t->n_dims; d++)
                    json_array_append_new(shape, json_integer(t->ne[d]));
                json_array_append_new(ta, json_pack("{s:s,s:s,s:o,s:I,s:I}", "name", t->name, "type",
                                                    pb_type_name(t->type), "shape", shape, "bytes",
                                                    (json_int_t)t->nbytes, "offset", (json_int_t)t->offset));
            }
            json_object_set_new(o, "tensors", ta);
        }
        if (metadata) {
            json_t *mo = json_object();
            for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
                char buf[256];
                gguf_kv_format(f, i, buf, sizeof buf);
                json_object_set_new(mo, gguf_kv_key(f, i),
                                    gguf_kv_type(f, i) == GGUF_STRING ? str_json(gguf_kv_str(f, i))
                                                                      : cli_json_text(buf, strlen(buf)));
            }
            json_object_set_new(o, "metadata", mo);
        }
        return cli_print_json(o, true);
    }

    char a[32], b[32];
    if (e)
        store_print(e, h, n_h);
    cli_fmt_bytes(gguf_file_size(f), a, sizeof a);
    printf("file            %s (%s)\n", gguf_name(f), a);
    printf("format          GGUF v%u, %" PRIu64 " metadata keys, %" PRIu64 " tensors, alignment %" PRIu64 "\n",
           gguf_version(f), gguf_n_kv(f), gguf_n_tensors(f), gguf_alignment(f));
    printf("architecture    %.*s\n", has_arch ? (int)arch.len : 1, has_arch ? arch.data : "-");
    if (has_name)
        printf("name            %.*s\n", (int)(name.len > 200 ? 200 : name.len), name.data);
    if (ftype_name)
        printf("file type       %s\n", ftype_name);
    cli_fmt_count(n_params, a, sizeof a);
    cli_fmt_bytes(n_bytes, b, sizeof b);
    printf("parameters      %s (%s of tensor data)\n", a, b);
    if (have_hp) {
        printf("context length  %" PRId64 "\n", hp.n_ctx_train);
        printf("shape           %" PRId64 " layers, embedding %" PRId64 ", FFN %" PRId64 ", vocabulary %" PRId64 "\n",
               hp.n_layer, hp.n_embd, hp.n_ff, hp.n_vocab);
        printf("attention       %" PRId64 " heads, %" PRId64 " KV heads, head size %" PRId64
               ", RoPE base %g on %" PRId64 " dims, RMS eps %g\n",
               hp.n_head, hp.n_head_kv, hp.head_dim, (double)hp.rope_base, hp.n_rot, (double)hp.rms_eps);
    } else if (has_arch) {
        printf("shape           unknown (%s)\n", herr.msg);
    }
    if (has_tok)
        printf("tokenizer       %.*s%s%.*s%s, %" PRIu64 " tokens\n", (int)(tokm.len > 64 ? 64 : tokm.len), tokm.data,
               has_pre ? " (pre-tokenizer " : "", has_pre ? (int)(pre.len > 64 ? 64 : pre.len) : 0,
               has_pre ? pre.data : "", has_pre ? ")" : "", n_tokens);
    else
        printf("tokenizer       none\n");
    if (has_tmpl)
        printf("chat template   present (%" PRIu64 " bytes)\n", tmpl.len);
    else
        printf("chat template   absent\n");
    if (have_hp) {
        char c[32], d[32];
        cli_fmt_bytes(mem.total, a, sizeof a);
        cli_fmt_bytes(mem.weights, b, sizeof b);
        cli_fmt_bytes(mem.kv, c, sizeof c);
        cli_fmt_bytes(mem.compute, d, sizeof d);
        printf("memory          about %s at context %" PRId64 ": weights %s, KV cache %s (F16), activations %s\n",
               a, mem.n_ctx, b, c, d);
    }
    printf("\n%-8s %8s %12s %12s\n", "type", "tensors", "parameters", "size");
    for (int t = 0; t < PB_TYPE_COUNT; t++) {
        if (!sums[t].tensors)
            continue;
        cli_fmt_count(sums[t].params, a, sizeof a);
        cli_fmt_bytes(sums[t].bytes, b, sizeof b);
        printf("%-8s %8" PRIu64 " %12s %12s\n", pb_type_name((uint32_t)t), sums[t].tensors, a, b);
    }
    if (tensors) {
        printf("\n%-40s %-8s %-28s %12s\n", "tensor", "type", "shape", "size");
        for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
            const struct gguf_tensor *t = gguf_tensor(f, i);
            char shape[64];
            int o = 0;
            for (uint32_t d = 0; d < t->n_dims; d++)
                o += snprintf(shape + o, sizeof shape - (size_t)o, d ? " x %" PRId64 : "%" PRId64, t->ne[d]);
            cli_fmt_bytes(t->nbytes, b, sizeof b);
            printf("%-40s %-8s %-28s %12s\n", t->name, pb_type_name(t->type), shape, b);
        }
    }
    if (metadata) {
        printf("\n%-48s %-7s %s\n", "key", "type", "value");
        for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
            char buf[120];
            gguf_kv_format(f, i, buf, sizeof buf);
            printf("%-48s %-7s %s\n", gguf_kv_key(f, i), gguf_vtype_name(gguf_kv_type(f, i)), buf);
        }
    }
    return CLI_OK;
}

enum { OPT_JSON = 256, OPT_TENSORS, OPT_METADATA };

int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON},
        {"tensors", no_argument, 0, OPT_TENSORS},
        {"metadata", no_argument, 0, OPT_METADATA},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool json = false, tensors = false, metadata = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_TENSORS: tensors = true; break;
        case OPT_METADATA: metadata = true; break;
        case 'h': help(); return CLI_OK;
        default: return cli_usage_error("show", "unknown option %s", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("show", argc - optind == 0 ? "no model given" : "expected one model");
    pb_err err = {0};
    char path[4096];
    struct store_entry e;
    struct store_revision *h = NULL;
    size_t n_h = 0;
    if (!cli_resolve_model("show", argv[optind], path, sizeof path, &e))
        return CLI_FAIL;
    bool named = e.digest[0] != 0;
    if (named) {
        struct store *s;
        if (store_open(NULL, &s, &err) == PB_OK) {
            if (store_history(s, argv[optind], &h, &n_h, &err))
                n_h = 0;
            store_close(s);
        }
    }
    struct gguf_file *f;
    if (gguf_open(path, &f, &err)) {
        free(h);
        return cli_error("show", "%s", err.msg);
    }
    int rc = show(f, named ? &e : NULL, h, n_h, json, tensors, metadata);
    gguf_close(f);
    free(h);
    return rc;
}
