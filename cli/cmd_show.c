/* plumb show: what a GGUF file holds, with its store entry and history
 * when MODEL is a store name, and the memory it needs. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/engine.h"
#include "plumb/server.h"
#include "plumb/store.h"

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
           "store entry and its history come first. With --config, MODEL may be a model\n"
           "of the server's configuration ([model NAME]): how it is served (loading,\n"
           "keep-alive, slots, context) and its preset come first, then its file.\n"
           "\n"
           "Options:\n"
           "      --config FILE  the server's configuration (plumb serve --config)\n"
           "      --json       print a JSON object\n"
           "      --tensors    also list every tensor\n"
           "      --metadata   also list every metadata key\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb show tiny-llama-q4_0.gguf --tensors\n"
           "  plumb show support-bot:2\n"
           "  plumb show assistant --config /etc/plumb/plumb.ini\n");
}

/* The revisions of a name are numbered 1, 2, ... in order (the registry's
 * ids run across all names): the number of the one with id, 0 for none. */
static size_t revision_number(const struct store_revision *h, size_t n_h, long long id)
{
    for (size_t i = 0; i < n_h && id; i++)
        if (h[i].id == id)
            return i + 1;
    return 0;
}

static json_t *store_json(const struct store_entry *e, const struct store_revision *h, size_t n_h)
{
    json_t *o = cli_store_entry_json(e), *a = json_array();
    for (size_t i = 0; i < n_h; i++) {
        size_t parent = revision_number(h, n_h, h[i].parent);
        json_array_append_new(a, json_pack("{s:I,s:o,s:o,s:s,s:o,s:o,s:b}", "revision", (json_int_t)(i + 1),
                                           "parent", parent ? json_integer((json_int_t)parent) : json_null(),
                                           "digest", cli_json_digest(h[i].digest), "action", h[i].action, "source",
                                           pb_json_text(h[i].source, strlen(h[i].source)), "at",
                                           cli_json_time(h[i].at), "current", h[i].current));
    }
    json_object_set_new(o, "history", a);
    return o;
}

static void store_print(const struct store_entry *e, const struct store_revision *h, size_t n_h)
{
    char ref[STORE_NAME_MAX + STORE_TAG_MAX + 2], when[32];
    store_ref_format(&e->ref, ref, sizeof ref);
    printf("name            %s\n", ref);
    printf("digest          sha256:%s\n", e->digest);
    printf("source          %.300s\n", e->source[0] ? cli_esc(e->source) : "-");
    cli_fmt_time(e->modified, when, sizeof when);
    printf("modified        %s", when);
    cli_fmt_time(e->created, when, sizeof when);
    printf(" (name created %s)\n", when);
    printf("history         %zu version%s\n", n_h, n_h == 1 ? "" : "s");
    for (size_t i = 0; i < n_h; i++) {
        cli_fmt_time(h[i].at, when, sizeof when);
        printf("  %s %4zu  sha256:%.12s  %-8s %s  %.200s\n", h[i].current ? "*" : " ", i + 1,
               h[i].digest, h[i].action, when, cli_esc(h[i].source));
    }
    printf("\n");
}

/* A field of the description as an integer (0 when absent). */
static long long num(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* A string field as text with control characters escaped (NULL when
 * absent): metadata comes from files anybody can write. */
static const char *text(const json_t *o, const char *key, char *buf, size_t size)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v)
        return NULL;
    pb_escape_text(v, buf, size);
    return buf;
}

static void print_description(const json_t *d, bool tensors, bool metadata)
{
    char a[32], b[32], t1[256], t2[256];
    cli_fmt_bytes((uint64_t)num(d, "size_bytes"), a, sizeof a);
    printf("file            %s (%s)\n", text(d, "file", t1, sizeof t1), a);
    printf("format          GGUF v%lld, %lld metadata keys, %lld tensors, alignment %lld\n", num(d, "gguf_version"),
           num(d, "metadata_keys"), num(d, "tensor_count"), num(d, "alignment"));
    const char *arch = text(d, "architecture", t1, sizeof t1);
    printf("architecture    %s\n", arch ? arch : "-");
    if (text(d, "name", t2, sizeof t2))
        printf("name            %.200s\n", t2);
    if (text(d, "file_type", t2, sizeof t2))
        printf("file type       %s\n", t2);
    cli_fmt_count((uint64_t)num(d, "parameters"), a, sizeof a);
    cli_fmt_bytes((uint64_t)num(d, "tensor_bytes"), b, sizeof b);
    printf("parameters      %s (%s of tensor data)\n", a, b);
    const json_t *hp = json_object_get(d, "hparams");
    if (hp) {
        printf("context length  %lld\n", num(d, "context_length"));
        printf("shape           %lld layers, embedding %lld, FFN %lld, vocabulary %lld\n", num(hp, "n_layer"),
               num(hp, "n_embd"), num(hp, "n_ff"), num(hp, "n_vocab"));
        printf("attention       %lld heads, %lld KV heads, head size %lld, RoPE base %g on %lld dims, RMS eps %g\n",
               num(hp, "n_head"), num(hp, "n_head_kv"), num(hp, "head_dim"),
               json_real_value(json_object_get(hp, "rope_freq_base")), num(hp, "n_rot"),
               json_real_value(json_object_get(hp, "rms_eps")));
    } else if (arch) {
        printf("shape           unknown (%s)\n", text(d, "hparams_error", t2, sizeof t2));
    }
    const json_t *tok = json_object_get(d, "tokenizer");
    if (json_is_object(tok)) {
        const char *pre = text(tok, "pre", t2, sizeof t2);
        printf("tokenizer       %.64s%s%.64s%s, %lld tokens\n", text(tok, "model", t1, sizeof t1),
               pre ? " (pre-tokenizer " : "", pre ? pre : "", pre ? ")" : "", num(tok, "tokens"));
    } else {
        printf("tokenizer       none\n");
    }
    if (json_is_true(json_object_get(d, "chat_template")))
        printf("chat template   present (%lld bytes)\n", num(d, "chat_template_bytes"));
    else
        printf("chat template   absent\n");
    const json_t *mem = json_object_get(d, "memory");
    if (json_is_object(mem) && !json_object_get(mem, "error")) {
        char c[32], e[32], r[32];
        cli_fmt_bytes((uint64_t)num(mem, "total_bytes"), a, sizeof a);
        cli_fmt_bytes((uint64_t)num(mem, "weights_bytes"), b, sizeof b);
        cli_fmt_bytes((uint64_t)num(mem, "kv_cache_bytes"), c, sizeof c);
        cli_fmt_bytes((uint64_t)num(mem, "compute_bytes"), e, sizeof e);
        cli_fmt_bytes((uint64_t)num(mem, "runtime_bytes"), r, sizeof r);
        printf("memory          about %s at context %lld: weights %s, KV cache %s (F16), buffers %s, runtime %s\n",
               a, num(mem, "context"), b, c, e, r);
    } else if (json_is_object(mem)) {
        printf("memory          unknown (%s)\n", text(mem, "error", t2, sizeof t2));
    }
    printf("\n%-8s %8s %12s %12s\n", "type", "tensors", "parameters", "size");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(d, "tensor_types"), i, v)
    {
        cli_fmt_count((uint64_t)num(v, "parameters"), a, sizeof a);
        cli_fmt_bytes((uint64_t)num(v, "bytes"), b, sizeof b);
        printf("%-8s %8lld %12s %12s\n", json_string_value(json_object_get(v, "type")), num(v, "tensors"), a, b);
    }
    if (tensors) {
        printf("\n%-40s %-8s %-28s %12s\n", "tensor", "type", "shape", "size");
        json_array_foreach(json_object_get(d, "tensors"), i, v)
        {
            char shape[64];
            int o = 0;
            size_t k;
            json_t *ne;
            json_array_foreach(json_object_get(v, "shape"), k, ne)
            {
                if (o < (int)sizeof shape)
                    o += snprintf(shape + o, sizeof shape - (size_t)o, k ? " x %lld" : "%lld",
                                  (long long)json_integer_value(ne));
            }
            cli_fmt_bytes((uint64_t)num(v, "bytes"), b, sizeof b);
            printf("%-40s %-8s %-28s %12s\n", text(v, "name", t1, sizeof t1),
                   json_string_value(json_object_get(v, "type")), shape, b);
        }
    }
    if (metadata) {
        printf("\n%-48s %-7s %s\n", "key", "type", "value");
        const json_t *types = json_object_get(d, "metadata_types");
        const char *key;
        json_object_foreach(json_object_get(d, "metadata"), key, v)
        {
            char val[120];
            text(json_object_get(d, "metadata"), key, val, sizeof val);
            printf("%-48s %-7s %s\n", cli_esc(key), json_string_value(json_object_get(types, key)), val);
        }
    }
}

/* How a configuration serves model m (c holds it): its settings, with
 * the defaults decided as plumb serve decides them, and its preset. */
static json_t *served_json(const struct config *c, const struct config_model *m)
{
    enum server_load load = (enum server_load)m->load;
    if (load == SERVER_LOAD_DEFAULT)
        load = c->n_models > 1 ? SERVER_LOAD_DEMAND : SERVER_LOAD_START;
    double keep = m->keep_alive_s;
    if (keep == SERVER_KEEP_ALIVE_DEFAULT)
        keep = load == SERVER_LOAD_START ? SERVER_KEEP_FOREVER : SERVER_DEFAULT_KEEP_ALIVE_S;
    const struct server_preset ps = config_model_preset(m);
    return json_pack("{s:s, s:o, s:o, s:s, s:f, s:i, s:I, s:s, s:o, s:o}", "name", m->alias, "config",
                     pb_json_text(c->path, strlen(c->path)), "source", pb_json_text(m->source, strlen(m->source)),
                     "load", server_load_name(load), "keep_alive_s", keep < 0 ? -1.0 : keep, "parallel", m->parallel,
                     "ctx", (json_int_t)m->ctx, "kv_type", pb_kv_type_name((enum pb_kv_type)m->kv_type),
                     "chat_format", m->chat_format[0] ? json_string(m->chat_format) : json_null(), "preset",
                     server_preset_json(&ps));
}

/* The same as text: a line per setting, the preset's fields as set. */
static void served_print(const json_t *sv)
{
    char t[256];
    const double keep = json_real_value(json_object_get(sv, "keep_alive_s"));
    char ka[48];
    if (keep < 0)
        snprintf(ka, sizeof ka, "forever");
    else
        snprintf(ka, sizeof ka, "%g s", keep);
    printf("served as       '%s' by %s\n", cli_esc(json_string_value(json_object_get(sv, "name"))),
           cli_esc(json_string_value(json_object_get(sv, "config"))));
    printf("loading         %s, kept %s after its last request\n", json_string_value(json_object_get(sv, "load")), ka);
    const json_t *ctx = json_object_get(sv, "ctx");
    printf("slots           %lld x %s tokens, KV cache %s%s%s\n", num(sv, "parallel"),
           json_integer_value(ctx) ? (snprintf(t, sizeof t, "%lld", (long long)json_integer_value(ctx)), t)
                                   : "the model's context (at most 4096)",
           json_string_value(json_object_get(sv, "kv_type")),
           json_is_string(json_object_get(sv, "chat_format")) ? ", chat format " : "",
           json_is_string(json_object_get(sv, "chat_format")) ? json_string_value(json_object_get(sv, "chat_format"))
                                                              : "");
    const json_t *ps = json_object_get(sv, "preset"), *fixed = json_object_get(ps, "fixed");
    bool any = false;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)ps, key, v)
    {
        if (json_is_null(v) || !strcmp(key, "fixed"))
            continue;
        bool is_fixed = false;
        for (size_t i = 0; i < json_array_size(fixed); i++)
            is_fixed |= !strcmp(json_string_value(json_array_get(fixed, i)), key);
        char *val = NULL;
        if (json_is_string(v))
            val = strdup(json_string_value(v));
        else if (json_is_real(v) && asprintf(&val, "%g", json_real_value(v)) < 0)
            val = NULL;
        else if (!json_is_real(v))
            val = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (json_is_string(v) && val) /* a system prompt on one line */
            for (char *q = val; *q; q++)
                if (*q == '\n')
                    *q = ' ';
        printf("%-15s %s = %.300s%s\n", any ? "" : "preset", key, val ? cli_esc(val) : "?",
               is_fixed ? "  (fixed)" : "");
        free(val);
        any = true;
    }
    for (size_t i = 0; i < json_array_size(fixed); i++) { /* fixed without a value */
        const char *f = json_string_value(json_array_get(fixed, i));
        if (json_is_null(json_object_get(ps, f))) {
            printf("%-15s %s: fixed at the API's default\n", any ? "" : "preset", f);
            any = true;
        }
    }
    if (!any)
        printf("preset          none (the requests' own settings)\n");
    printf("\n");
}

enum { OPT_JSON = 256, OPT_TENSORS, OPT_METADATA, OPT_CONFIG };

int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON},
        {"tensors", no_argument, 0, OPT_TENSORS},
        {"metadata", no_argument, 0, OPT_METADATA},
        {"config", required_argument, 0, OPT_CONFIG},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool json = false, tensors = false, metadata = false;
    const char *config_path = NULL;
    int c;
    struct cli_parser par = {.cmd = "show", .shortopts = "h", .longopts = opts, .files = "config"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_TENSORS: tensors = true; break;
        case OPT_METADATA: metadata = true; break;
        case OPT_CONFIG: config_path = optarg; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("show", argc - optind == 0 ? "no model given" : "expected one model");
    pb_err err = {0};
    char path[4096];
    struct store_entry e;
    struct store_revision *h = NULL;
    size_t n_h = 0;
    json_t *served = NULL;
    static struct config cfg; /* large (system prompts) */
    if (config_path) {
        config_defaults(&cfg);
        if (config_load(config_path, &cfg, &err))
            return cli_error("show", "%s", err.msg);
        for (int i = 0; i < cfg.n_models && !served; i++) {
            const struct config_model *m = &cfg.models[i];
            if (strcmp(m->alias, argv[optind]) != 0)
                continue;
            if (store_resolve(cfg.store[0] ? cfg.store : NULL, m->source, path, sizeof path, &e, &err))
                return cli_error("show", "[model %s]: %s", m->alias, err.msg);
            served = served_json(&cfg, m);
        }
    }
    if (!served && !cli_resolve_model("show", argv[optind], path, sizeof path, &e))
        return CLI_FAIL;
    bool named = e.digest[0] != 0;
    if (named) {
        struct store *s;
        const char *name = served ? json_string_value(json_object_get(served, "source")) : argv[optind];
        if (store_open_readonly(served && cfg.store[0] ? cfg.store : NULL, &s, &err) == PB_OK) {
            if (store_history(s, name, &h, &n_h, &err))
                n_h = 0;
            store_close(s);
        }
    }
    json_t *d;
    if (engine_describe(path, tensors, metadata, &d, &err)) {
        free(h);
        json_decref(served);
        return cli_error("show", "%s", err.msg);
    }
    int rc = CLI_OK;
    if (json) {
        if (served)
            json_object_set_new(d, "served", served);
        if (named)
            json_object_set_new(d, "store", store_json(&e, h, n_h));
        json_object_del(d, "metadata_types");
        rc = cli_print_json(d, true);
    } else {
        if (served)
            served_print(served);
        json_decref(served);
        if (named)
            store_print(&e, h, n_h);
        print_description(d, tensors, metadata);
        json_decref(d);
    }
    free(h);
    return rc;
}
