/* Reading the INI configuration (config.h) with libinih. */
#include "plumb/config.h"

#include "base/err.h"
#include "base/sbuf.h"

#include "plumb/store.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX_BYTES (1u << 20) /* far beyond any real configuration */

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    const struct server_params d = server_defaults();
    snprintf(c->host, sizeof c->host, "%s", d.host);
    c->port = d.port;
    c->max_queue = d.max_queue;
    c->max_body = d.max_body;
    c->max_connections = d.max_connections;
    c->max_per_client = d.max_per_client;
    c->header_timeout_s = d.header_timeout_s;
    c->min_rate = d.min_rate;
    c->timeout_s = d.timeout_s;
    c->drain_timeout_s = SERVER_DEFAULT_DRAIN_S;
}

bool config_ui_parse(const char *s, enum server_ui *out)
{
    static const char *const names[] = {"auto", "on", "off"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i])) {
            *out = (enum server_ui)i;
            return true;
        }
    return false;
}

const char *config_ui_name(enum server_ui ui)
{
    return ui == SERVER_UI_ON ? "on" : ui == SERVER_UI_OFF ? "off" : "auto";
}

/* A model section's settings before its keys: the server's defaults. */
static void model_defaults(struct config_model *m)
{
    const struct server_model d = server_model_defaults();
    m->parallel = d.engine.n_slots;
    m->ctx = d.engine.n_ctx;
    m->batch = d.engine.n_batch;
    m->kv_type = (int)d.engine.kv_type;
    m->step_ms = d.engine.step_target_s * 1000;
    m->prefill_chunk = d.engine.prefill_chunk;
}

struct engine_params config_engine_params(const struct config_model *m)
{
    struct engine_params ep = server_model_defaults().engine;
    ep.n_slots = m->parallel;
    ep.n_ctx = m->ctx;
    ep.n_batch = m->batch;
    ep.kv_type = (enum pb_kv_type)m->kv_type;
    ep.step_target_s = m->step_ms / 1000;
    ep.prefill_chunk = m->prefill_chunk;
    ep.chat_format = m->chat_format[0] ? m->chat_format : NULL;
    return ep;
}

int config_server_models(const struct config *c, struct server_model *out, char (*paths)[CONFIG_PATH_MAX],
                         pb_err *err)
{
    if (c->n_models == 0)
        return pb_fail(err, PB_EINVAL, "%s: no [model NAME] section", c->path);
    for (int i = 0; i < c->n_models; i++) {
        const struct config_model *cm = &c->models[i];
        if (store_resolve(c->store[0] ? c->store : NULL, cm->source, paths[i], CONFIG_PATH_MAX, NULL, err))
            return pb_wrap(err, PB_EINVAL, "%s: [model %s]", c->path, cm->alias);
        out[i] = server_model_defaults();
        out[i].alias = cm->alias;
        out[i].path = paths[i];
        out[i].source = cm->source;
        out[i].engine = config_engine_params(cm);
    }
    return PB_OK;
}

bool config_alias_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._:-", s[i]))
            return false;
    return true;
}

struct parse {
    struct config *c;
    pb_err *err;
    char section[128];
    struct config_model *model;
    bool store;          /* in [store] */
    bool failed;
    /* keys seen in the current section, to refuse duplicates */
    char seen[32][32];
    int n_seen;
};

static bool parse_long(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

static bool parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

static bool parse_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1"))
        return *out = true, true;
    if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0"))
        return *out = false, true;
    return false;
}

static bool copy_str(char *dst, size_t size, const char *v)
{
    size_t n = strlen(v);
    if (n >= size)
        return false;
    memcpy(dst, v, n + 1);
    return true;
}

/* [store] registry: an http(s) URL with a host (plumb pull checks it
 * fully: catalog_registry_check). */
static bool registry_url_ok(const char *v)
{
    size_t skip = !strncasecmp(v, "https://", 8) ? 8 : !strncasecmp(v, "http://", 7) ? 7 : 0;
    return skip && v[skip] && v[skip] != '/' && !strpbrk(v, " ?#");
}

/* The handler: 1 to go on, 0 for an error (inih then reports its line). */
static int on_value(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    if (p->failed)
        return 0;
    pb_err *err = p->err;
    struct config *c = p->c;
    if (strcmp(section, p->section) != 0) {
        snprintf(p->section, sizeof p->section, "%s", section);
        p->n_seen = 0;
        p->model = NULL;
        p->store = !strcmp(section, "store");
        if (!strncmp(section, "model ", 6)) {
            const char *alias = section + 6;
            if (!config_alias_valid(alias)) {
                pb_fail(err, PB_EFORMAT, "bad model name '%s' (1-64 of letters, digits, . _ : -)", alias);
                return p->failed = true, 0;
            }
            for (int i = 0; i < c->n_models; i++)
                if (!strcmp(c->models[i].alias, alias)) {
                    pb_fail(err, PB_EFORMAT, "model '%s' is configured twice", alias);
                    return p->failed = true, 0;
                }
            if (c->n_models == CONFIG_MAX_MODELS) {
                pb_fail(err, PB_ERANGE, "more than %d models", CONFIG_MAX_MODELS);
                return p->failed = true, 0;
            }
            p->model = &c->models[c->n_models++];
            memset(p->model, 0, sizeof *p->model);
            snprintf(p->model->alias, sizeof p->model->alias, "%s", alias);
            model_defaults(p->model);
        } else if (strcmp(section, "server") != 0 && !p->store) {
            pb_fail(err, PB_EFORMAT, "unknown section [%s] (server, store, model NAME)", section);
            return p->failed = true, 0;
        }
    }
    for (int i = 0; i < p->n_seen; i++)
        if (!strcmp(p->seen[i], name)) {
            /* (inih does not report section headers: a repeated section
             * shows as a repeated key) */
            pb_fail(err, PB_EFORMAT, "'%s' is set twice in [%s] (a key or its section repeated)", name, section);
            return p->failed = true, 0;
        }
    if (p->n_seen < 32)
        snprintf(p->seen[p->n_seen++], sizeof p->seen[0], "%.31s", name);

    long long n;
    bool ok = true, known = true;
    if (p->store) {
        if (!strcmp(name, "registry"))
            ok = registry_url_ok(value) && copy_str(c->registry, sizeof c->registry, value);
        else if (!strcmp(name, "registry_token_file"))
            ok = *value && copy_str(c->registry_token_file, sizeof c->registry_token_file, value);
        else
            known = false;
    } else if (!p->model) { /* [server] */
        if (!strcmp(name, "host"))
            ok = *value && copy_str(c->host, sizeof c->host, value);
        else if (!strcmp(name, "port"))
            ok = parse_long(value, 0, 65535, &n) && (c->port = (int)n, true);
        else if (!strcmp(name, "api_key_file"))
            ok = copy_str(c->api_key_file, sizeof c->api_key_file, value);
        else if (!strcmp(name, "max_queue"))
            ok = parse_long(value, 0, 1 << 20, &n) && (c->max_queue = (int)n, true);
        else if (!strcmp(name, "max_body"))
            ok = parse_long(value, 1024, 1ll << 32, &n) && (c->max_body = (size_t)n, true);
        else if (!strcmp(name, "max_tokens"))
            ok = parse_long(value, 0, 1 << 24, &n) && (c->max_tokens = (int)n, true);
        else if (!strcmp(name, "max_connections"))
            ok = parse_long(value, 1, 100000, &n) && (c->max_connections = (int)n, true);
        else if (!strcmp(name, "max_connections_per_client"))
            ok = parse_long(value, 0, 100000, &n) && (c->max_per_client = (int)n, true);
        else if (!strcmp(name, "header_timeout"))
            ok = parse_double(value, 0.1, 3600, &c->header_timeout_s);
        else if (!strcmp(name, "min_rate"))
            ok = parse_double(value, 1, 1e12, &c->min_rate);
        else if (!strcmp(name, "insecure"))
            ok = parse_bool(value, &c->insecure);
        else if (!strcmp(name, "cors_origins"))
            ok = copy_str(c->cors_origins, sizeof c->cors_origins, value);
        else if (!strcmp(name, "timeout"))
            ok = parse_double(value, 0.1, 1e7, &c->timeout_s);
        else if (!strcmp(name, "drain_timeout"))
            ok = parse_double(value, 0, 1e7, &c->drain_timeout_s);
        else if (!strcmp(name, "threads"))
            ok = parse_long(value, 0, 1024, &n) && (c->threads = (int)n, true);
        else if (!strcmp(name, "log_format"))
            ok = (!strcmp(value, "json") || !strcmp(value, "text")) && (c->log_json = !strcmp(value, "json"), true);
        else if (!strcmp(name, "store"))
            ok = copy_str(c->store, sizeof c->store, value);
        else if (!strcmp(name, "pid_file"))
            ok = copy_str(c->pid_file, sizeof c->pid_file, value);
        else if (!strcmp(name, "instance_id"))
            ok = server_instance_id_valid(value) && copy_str(c->instance_id, sizeof c->instance_id, value);
        else if (!strcmp(name, "ui"))
            ok = config_ui_parse(value, &c->ui);
        else
            known = false;
    } else {
        struct config_model *m = p->model;
        if (!strcmp(name, "source"))
            ok = *value && copy_str(m->source, sizeof m->source, value);
        else if (!strcmp(name, "parallel"))
            ok = parse_long(value, 1, ENGINE_MAX_SLOTS, &n) && (m->parallel = (int)n, true);
        else if (!strcmp(name, "ctx")) /* 0: the model's training context, at most the engine's default */
            ok = parse_long(value, 0, 1 << 24, &n) && (n == 0 || n >= 16) && (m->ctx = n, true);
        else if (!strcmp(name, "kv_type")) {
            enum pb_kv_type t;
            ok = pb_kv_type_parse(value, &t) && (m->kv_type = (int)t, true);
        } else if (!strcmp(name, "batch"))
            ok = parse_long(value, 1, 1 << 16, &n) && (m->batch = (int)n, true);
        else if (!strcmp(name, "step_ms"))
            ok = parse_double(value, 1, 1e6, &m->step_ms);
        else if (!strcmp(name, "prefill_chunk"))
            ok = parse_long(value, 1, 1 << 16, &n) && (m->prefill_chunk = (int)n, true);
        else if (!strcmp(name, "chat_format")) {
            ok = !*value || engine_chat_format_known(value);
            if (!ok) {
                pb_fail(err, PB_EFORMAT, "unknown chat_format '%s' in [%s] (one of %s)", value, section,
                        engine_chat_formats());
                return p->failed = true, 0;
            }
            ok = copy_str(m->chat_format, sizeof m->chat_format, value);
        }
        else
            known = false;
    }
    if (!known)
        pb_fail(err, PB_EFORMAT, "unknown key '%s' in [%s]", name, section);
    else if (!ok)
        pb_fail(err, PB_EFORMAT, "bad value '%s' for '%s' in [%s]", value, name, section);
    if (!known || !ok)
        return p->failed = true, 0;
    return 1;
}

/* Text in memory read the way libinih reads a file: a line at a time
 * (fgets' contract), for config_parse. */
struct mem_lines {
    const char *p;
    size_t left;
};

static char *mem_line(char *str, int num, void *stream)
{
    struct mem_lines *m = stream;
    if (m->left == 0 || num < 2)
        return NULL;
    size_t n = 0;
    while (n < (size_t)num - 1 && n < m->left && m->p[n++] != '\n') {
    }
    memcpy(str, m->p, n);
    str[n] = 0;
    m->p += n;
    m->left -= n;
    return str;
}

/* Reads the configuration named name (a path, or a label for text in
 * memory: mem non-NULL) over c. */
static int load(const char *name, struct mem_lines *mem, struct config *c, pb_err *err)
{
    if (!copy_str(c->path, sizeof c->path, name))
        return pb_fail(err, PB_EINVAL, "configuration path too long");
    struct parse p = {.c = c, .err = err};
    p.section[0] = '\x01'; /* no section seen yet */
    pb_err inner = {0};
    p.err = &inner;
    /* a file is read whole, and only a regular file of sensible size:
     * /dev/zero or a FIFO would never end */
    char *text = NULL;
    struct mem_lines file;
    if (!mem) {
        size_t len = 0;
        int rc = pb_read_small(name, CONFIG_MAX_BYTES, &text, &len, err);
        if (rc)
            return pb_wrap(err, rc, "configuration");
        file = (struct mem_lines){text, len};
        mem = &file;
    }
    int line = ini_parse_stream(mem_line, mem, on_value, &p);
    free(text);
    if (line < 0)
        return pb_fail(err, PB_ENOMEM, "%s: out of memory", name);
    if (line > 0)
        return pb_fail(err, inner.code ? inner.code : PB_EFORMAT, "%s:%d: %s", name, line,
                       inner.msg[0] ? inner.msg : "not a key = value line, nor a [section]");
    for (int i = 0; i < c->n_models; i++)
        if (!c->models[i].source[0])
            return pb_fail(err, PB_EFORMAT, "%s: [model %s] has no 'source' (a store name or a GGUF file)", name,
                           c->models[i].alias);
    return PB_OK;
}

/* A value an INI line carries as it is: no line break or control
 * character, no comment character, no space at either end. */
static int ini_value(const char *section, const char *key, const char *v, pb_err *err)
{
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f || v[i] == ';' || v[i] == '#')
            return pb_fail(err, PB_EINVAL, "[%s] %s: '%s' has a character an INI value cannot hold", section, key,
                           v);
    if (n && (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1])))
        return pb_fail(err, PB_EINVAL, "[%s] %s: '%s' begins or ends with a space", section, key, v);
    return PB_OK;
}

int config_format(const struct config *c, char **out, pb_err *err)
{
    *out = NULL;
    struct sbuf b = {0};
    int rc = 0;
    const struct {
        const char *key, *value;
    } strs[] = {{"host", c->host},         {"api_key_file", c->api_key_file}, {"store", c->store},
                {"pid_file", c->pid_file}, {"instance_id", c->instance_id}, {"cors_origins", c->cors_origins}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if ((rc = ini_value("server", strs[i].key, strs[i].value, err)))
            return rc;
    if ((rc = ini_value("store", "registry", c->registry, err)) ||
        (rc = ini_value("store", "registry_token_file", c->registry_token_file, err)))
        return rc;
    if (c->registry[0] && !registry_url_ok(c->registry))
        return pb_fail(err, PB_EINVAL, "[store] registry: '%s' is not an http:// or https:// URL", c->registry);
    for (int i = 0; i < c->n_models; i++) {
        if ((rc = ini_value(c->models[i].alias, "source", c->models[i].source, err)))
            return rc;
        if (!config_alias_valid(c->models[i].alias))
            return pb_fail(err, PB_EINVAL, "bad model name '%s'", c->models[i].alias);
    }
    rc |= sbuf_addf(&b, "[server]\nhost = %s\nport = %d\n", c->host, c->port);
    for (size_t i = 1; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i].value[0])
            rc |= sbuf_addf(&b, "%s = %s\n", strs[i].key, strs[i].value);
    rc |= sbuf_addf(&b,
                    "max_queue = %d\nmax_body = %zu\nmax_tokens = %d\nmax_connections = %d\n"
                    "max_connections_per_client = %d\nheader_timeout = %.17g\nmin_rate = %.17g\ninsecure = %s\n"
                    "timeout = %.17g\ndrain_timeout = %.17g\nthreads = %d\nlog_format = %s\nui = %s\n",
                    c->max_queue, c->max_body, c->max_tokens, c->max_connections, c->max_per_client,
                    c->header_timeout_s, c->min_rate, c->insecure ? "yes" : "no", c->timeout_s, c->drain_timeout_s,
                    c->threads, c->log_json ? "json" : "text", config_ui_name(c->ui));
    if (c->registry[0] || c->registry_token_file[0]) {
        rc |= sbuf_addf(&b, "\n[store]\n");
        if (c->registry[0])
            rc |= sbuf_addf(&b, "registry = %s\n", c->registry);
        if (c->registry_token_file[0])
            rc |= sbuf_addf(&b, "registry_token_file = %s\n", c->registry_token_file);
    }
    for (int i = 0; i < c->n_models; i++) {
        const struct config_model *m = &c->models[i];
        rc |= sbuf_addf(&b,
                        "\n[model %s]\nsource = %s\nparallel = %d\nctx = %lld\nkv_type = %s\nbatch = %d\n"
                        "step_ms = %.17g\nprefill_chunk = %d\n",
                        m->alias, m->source, m->parallel, (long long)m->ctx,
                        pb_kv_type_name((enum pb_kv_type)m->kv_type), m->batch, m->step_ms, m->prefill_chunk);
        if (m->chat_format[0])
            rc |= sbuf_addf(&b, "chat_format = %s\n", m->chat_format);
    }
    if (rc) {
        sbuf_free(&b);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    *out = b.data;
    return PB_OK;
}

int config_load(const char *path, struct config *c, pb_err *err)
{
    return load(path, NULL, c, err);
}

int config_parse(const char *name, const char *text, size_t len, struct config *c, pb_err *err)
{
    struct mem_lines mem = {text, len};
    return load(name, &mem, c, err);
}
