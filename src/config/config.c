/* Reading the INI configuration (config.h) with libinih. */
#include "plumb/config.h"

#include "base/err.h"
#include "base/sbuf.h"
#include "base/units.h"

#include "plumb/store.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
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
    m->load = SERVER_LOAD_DEFAULT;
    m->keep_alive_s = SERVER_KEEP_ALIVE_DEFAULT;
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

struct server_preset config_model_preset(const struct config_model *m)
{
    struct server_preset p = {
        .set = m->preset_set,
        .fixed = m->preset_fixed,
        .system = m->system,
        .temperature = m->temperature,
        .top_p = m->top_p,
        .min_p = m->min_p,
        .top_k = m->top_k,
        .repeat_penalty = m->repeat_penalty,
        .seed = m->seed,
        .n_stop = m->n_stop,
        .max_tokens = m->max_tokens,
        .reasoning = m->reasoning,
    };
    for (int i = 0; i < m->n_stop && i < ENGINE_MAX_STOPS; i++)
        p.stop[i] = m->stop[i];
    return p;
}

bool config_parse_duration(const char *s, double *out)
{
    return units_parse_duration(s, out);
}

bool config_parse_size(const char *s, uint64_t *out)
{
    return units_parse_size(s, out);
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
        out[i].load = (enum server_load)cm->load;
        out[i].keep_alive_s = cm->keep_alive_s;
        out[i].preset = config_model_preset(cm);
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

/* Text in memory read the way libinih reads a file: a line at a time
 * (fgets' contract), for config_parse and config_load. */
struct mem_lines {
    const char *p;
    size_t left;
    int line;      /* lines handed out, as libinih counts them */
    bool indented; /* the last one starts with a space or a tab */
};

struct parse {
    struct config *c;
    pb_err *err;
    struct mem_lines *mem;
    char section[128];
    struct config_model *model;
    bool store;          /* in [store] */
    bool failed;
    int err_line; /* the error is about this line, not the one libinih is at (0: that one) */
    /* keys seen in the current section, to refuse duplicates */
    char seen[32][32];
    int n_seen;
    char last_key[32]; /* the section's last key: an indented line continues it */
    /* the system prompt being read: its lines as written, decoded when
     * they end */
    struct config_model *sys_model;
    struct sbuf sys_raw;
    int sys_line;
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

/* Decodes the escapes of n bytes of a value into out (size bytes, NUL
 * added): \n \t \s (a space) \\ \; \# \", and a backslash before a line
 * break (the lines of a system prompt) joins the lines. False with the
 * reason in why. */
static bool unescape(const char *in, size_t n, char *out, size_t size, char *why, size_t why_size)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '\\') {
            if (++i == n) {
                snprintf(why, why_size, "a backslash ends it (\\\\ is one)");
                return false;
            }
            switch (in[i]) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 's': ch = ' '; break;
            case '\\': case ';': case '#': case '"': ch = in[i]; break;
            case '\n': continue; /* the next line goes on this one */
            default:
                snprintf(why, why_size, "unknown escape '\\%c' (\\n \\t \\s \\\\ \\; \\# \\\")", in[i]);
                return false;
            }
        }
        if (o + 1 >= size) {
            snprintf(why, why_size, "longer than %zu bytes", size - 1);
            return false;
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    return true;
}

/* stop: one string as it is (escapes decoded), or up to ENGINE_MAX_STOPS
 * strings in double quotes separated by commas. */
static bool parse_stops(const char *v, struct config_model *m, char *why, size_t why_size)
{
    m->n_stop = 0;
    if (*v != '"') {
        if (!unescape(v, strlen(v), m->stop[0], sizeof m->stop[0], why, why_size))
            return false;
        m->n_stop = 1;
    } else {
        for (const char *q = v;;) {
            if (*q != '"') {
                snprintf(why, why_size, "expected a string in double quotes at '%.20s'", q);
                return false;
            }
            const char *start = ++q;
            while (*q && *q != '"')
                q += q[0] == '\\' && q[1] ? 2 : 1;
            if (!*q) {
                snprintf(why, why_size, "a string without its closing quote");
                return false;
            }
            if (m->n_stop == ENGINE_MAX_STOPS) {
                snprintf(why, why_size, "more than %d strings", ENGINE_MAX_STOPS);
                return false;
            }
            if (!unescape(start, (size_t)(q - start), m->stop[m->n_stop], sizeof m->stop[0], why, why_size))
                return false;
            m->n_stop++;
            q += 1 + strspn(q + 1, " \t");
            if (!*q)
                break;
            if (*q != ',') {
                snprintf(why, why_size, "expected ',' between the strings at '%.20s'", q);
                return false;
            }
            q += 1 + strspn(q + 1, " \t");
        }
    }
    for (int i = 0; i < m->n_stop; i++)
        if (!m->stop[i][0]) {
            snprintf(why, why_size, "an empty string");
            return false;
        }
    return true;
}

/* fixed: names of preset fields, comma separated. */
static bool parse_fixed(const char *v, unsigned *out, char *why, size_t why_size)
{
    *out = 0;
    for (const char *q = v + strspn(v, " ,"); *q; q += strspn(q, " ,")) {
        size_t k = strcspn(q, " ,");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(k < 31 ? k : 31), q);
        unsigned bit;
        if (!server_preset_field_parse(name, &bit) || bit == SERVER_PRESET_MAX_TOKENS) {
            snprintf(why, why_size, "%s'%s' is not a field that can be fixed (system, temperature, top_p, top_k, "
                     "min_p, repeat_penalty, seed, stop, reasoning)", bit == SERVER_PRESET_MAX_TOKENS ?
                     "max_tokens is always a cap; " : "", name);
            return false;
        }
        *out |= bit;
        q += k;
    }
    return true;
}

/* The system prompt read so far, decoded into its model (its lines end
 * here). */
static bool finish_system(struct parse *p)
{
    struct config_model *m = p->sys_model;
    p->sys_model = NULL;
    char why[160];
    bool ok = unescape(p->sys_raw.data ? p->sys_raw.data : "", p->sys_raw.len, m->system, sizeof m->system, why,
                       sizeof why);
    if (ok && !m->system[0])
        ok = (snprintf(why, sizeof why, "it is empty (leave 'system' out)"), false);
    p->sys_raw.len = 0;
    if (!ok) {
        pb_fail(p->err, PB_EFORMAT, "bad 'system' in [model %s]: %s", m->alias, why);
        p->err_line = p->sys_line;
        p->failed = true;
    }
    return ok;
}

/* The handler: 1 to go on, 0 for an error (inih then reports its line). */
static int on_value(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    if (p->failed)
        return 0;
    pb_err *err = p->err;
    struct config *c = p->c;
    /* an indented line after a key: libinih hands it over as more of that
     * key (a continuation), which only 'system' takes */
    const bool cont = !strcmp(section, p->section) && p->mem->indented && p->last_key[0] &&
                      !strcmp(name, p->last_key);
    if (p->sys_model && !(cont && !strcmp(name, "system")) && !finish_system(p))
        return 0;
    if (cont) {
        if (strcmp(name, "system") != 0 || !p->model) {
            pb_fail(err, PB_EFORMAT, "an indented line goes on with '%s' in [%s]; only 'system' takes more lines "
                    "(remove the indentation)", name, section);
            return p->failed = true, 0;
        }
        p->sys_model = p->model;
        if (p->sys_raw.len > 4 * CONFIG_SYSTEM_MAX ||
            (p->sys_raw.len && sbuf_add(&p->sys_raw, "\n", 1)) || sbuf_add(&p->sys_raw, value, strlen(value))) {
            pb_fail(err, PB_EFORMAT, "'system' in [%s] is longer than %d bytes", section, CONFIG_SYSTEM_MAX - 1);
            return p->failed = true, 0;
        }
        return 1;
    }
    if (strcmp(section, p->section) != 0) {
        snprintf(p->section, sizeof p->section, "%s", section);
        p->n_seen = 0;
        p->last_key[0] = '\0';
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
    snprintf(p->last_key, sizeof p->last_key, "%.31s", name);

    long long n;
    bool ok = true, known = true;
    const char *want = NULL; /* what the value may be, for the message */
    char why[200] = "";
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
        else if (!strcmp(name, "memory_limit"))
            ok = units_parse_size(value, &c->memory_limit),
            want = "bytes, or a number with K, M, G, T (KiB, ...: powers of 1024) or KB, MB, GB, TB";
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
        } else if (!strcmp(name, "load")) {
            ok = !strcmp(value, "start") || !strcmp(value, "demand");
            m->load = !strcmp(value, "start") ? SERVER_LOAD_START : SERVER_LOAD_DEMAND;
            want = "start or demand";
        } else if (!strcmp(name, "keep_alive")) {
            ok = units_parse_duration(value, &m->keep_alive_s);
            want = "seconds, or a duration such as 90s, 5m, 1h30m; -1 or forever: never unloaded";
        } else if (!strcmp(name, "system")) {
            p->sys_model = m;
            p->sys_line = p->mem->line;
            p->sys_raw.len = 0;
            m->preset_set |= SERVER_PRESET_SYSTEM;
            ok = sbuf_add(&p->sys_raw, value, strlen(value)) == PB_OK;
        } else if (!strcmp(name, "temperature")) {
            ok = parse_double(value, 0, 2, &m->temperature), want = "0 to 2";
            m->preset_set |= SERVER_PRESET_TEMPERATURE;
        } else if (!strcmp(name, "top_p")) {
            ok = parse_double(value, 0, 1, &m->top_p), want = "0 to 1";
            m->preset_set |= SERVER_PRESET_TOP_P;
        } else if (!strcmp(name, "min_p")) {
            ok = parse_double(value, 0, 1, &m->min_p), want = "0 to 1";
            m->preset_set |= SERVER_PRESET_MIN_P;
        } else if (!strcmp(name, "repeat_penalty")) {
            ok = parse_double(value, 0.01, 10, &m->repeat_penalty), want = "0.01 to 10 (1: off)";
            m->preset_set |= SERVER_PRESET_REPEAT_PENALTY;
        } else if (!strcmp(name, "top_k")) {
            ok = parse_long(value, 0, 1 << 30, &n) && (m->top_k = (int)n, true), want = "0 (off) or more";
            m->preset_set |= SERVER_PRESET_TOP_K;
        } else if (!strcmp(name, "seed")) {
            ok = parse_long(value, LLONG_MIN, LLONG_MAX, &m->seed), want = "an integer";
            m->preset_set |= SERVER_PRESET_SEED;
        } else if (!strcmp(name, "max_tokens")) {
            ok = parse_long(value, 1, 1 << 24, &n) && (m->max_tokens = (int)n, true), want = "1 or more";
            m->preset_set |= SERVER_PRESET_MAX_TOKENS;
        } else if (!strcmp(name, "reasoning")) {
            ok = !strcmp(value, "on") || !strcmp(value, "off") || parse_bool(value, &m->reasoning);
            if (ok && (!strcmp(value, "on") || !strcmp(value, "off")))
                m->reasoning = !strcmp(value, "on");
            want = "on or off";
            m->preset_set |= SERVER_PRESET_REASONING;
        } else if (!strcmp(name, "stop")) {
            ok = parse_stops(value, m, why, sizeof why);
            m->preset_set |= SERVER_PRESET_STOP;
        } else if (!strcmp(name, "fixed")) {
            ok = parse_fixed(value, &m->preset_fixed, why, sizeof why);
        }
        else
            known = false;
    }
    if (!known)
        pb_fail(err, PB_EFORMAT, "unknown key '%s' in [%s]", name, section);
    else if (!ok && why[0])
        pb_fail(err, PB_EFORMAT, "bad value for '%s' in [%s]: %s", name, section, why);
    else if (!ok && want)
        pb_fail(err, PB_EFORMAT, "bad value '%s' for '%s' in [%s] (%s)", value, name, section, want);
    else if (!ok)
        pb_fail(err, PB_EFORMAT, "bad value '%s' for '%s' in [%s]", value, name, section);
    if (!known || !ok)
        return p->failed = true, 0;
    return 1;
}

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
    m->line++;
    m->indented = n > 0 && (str[0] == ' ' || str[0] == '\t');
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
        file = (struct mem_lines){text, len, 0, false};
        mem = &file;
    }
    p.mem = mem;
    int line = ini_parse_stream(mem_line, mem, on_value, &p);
    free(text);
    if (line == 0 && p.sys_model && !finish_system(&p))
        line = p.sys_line;
    sbuf_free(&p.sys_raw);
    if (line < 0)
        return pb_fail(err, PB_ENOMEM, "%s: out of memory", name);
    if (line > 0)
        return pb_fail(err, inner.code ? inner.code : PB_EFORMAT, "%s:%d: %s", name, p.err_line ? p.err_line : line,
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

/* A system prompt as the reader takes it back: escapes for backslashes,
 * tabs, ';', '#' and the line breaks and spaces INI would lose; lines of
 * at most SYS_WIDTH characters (libinih reads 196 at most), a line break
 * of the text as a new indented line where it can be, else as \n; a
 * long line goes on after a backslash. */
#define SYS_WIDTH 150
static int write_system(struct sbuf *b, const char *alias, const char *s, pb_err *err)
{
    const size_t n = strlen(s);
    if (n == 0)
        return pb_fail(err, PB_EINVAL, "[model %s] system: empty", alias);
    int rc = sbuf_addf(b, "system = ");
    size_t col = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char ch = s[i];
        const bool blank_after = i + 1 == n || s[i + 1] == ' ' || s[i + 1] == '\t' || s[i + 1] == '\n';
        if (ch == '\n' && i > 0 && s[i - 1] != ' ' && !blank_after) {
            rc = sbuf_addf(b, "\n  ");
            col = 0;
            continue;
        }
        char enc[3] = {ch, 0, 0};
        if (ch == '\\' || ch == ';' || ch == '#')
            enc[0] = '\\', enc[1] = ch;
        else if (ch == '\n')
            enc[0] = '\\', enc[1] = 'n';
        else if (ch == '\t')
            enc[0] = '\\', enc[1] = 't';
        else if ((unsigned char)ch < 0x20 || ch == 0x7f)
            return pb_fail(err, PB_EINVAL, "[model %s] system: a control character (0x%02x) INI cannot hold", alias,
                           (unsigned char)ch);
        if (col + strlen(enc) > SYS_WIDTH) {
            rc |= sbuf_addf(b, "\\\n  ");
            col = 0;
        }
        if (ch == ' ' && (i == 0 || i + 1 == n || col == 0 || (i + 1 < n && s[i + 1] == '\n')))
            enc[0] = '\\', enc[1] = 's'; /* INI trims spaces at either end of a line */
        rc |= sbuf_addf(b, "%s", enc);
        col += strlen(enc);
    }
    return rc | sbuf_addf(b, "\n");
}

/* One stop string in double quotes. */
static int write_stop(struct sbuf *b, const char *alias, const char *s, pb_err *err)
{
    int rc = sbuf_addf(b, "\"");
    for (const char *q = s; *q && !rc; q++) {
        if (*q == '\\' || *q == '"' || *q == ';' || *q == '#')
            rc = sbuf_addf(b, "\\%c", *q);
        else if (*q == '\n')
            rc = sbuf_addf(b, "\\n");
        else if (*q == '\t')
            rc = sbuf_addf(b, "\\t");
        else if ((unsigned char)*q < 0x20 || *q == 0x7f)
            return pb_fail(err, PB_EINVAL, "[model %s] stop: a control character (0x%02x) INI cannot hold", alias,
                           (unsigned char)*q);
        else
            rc = sbuf_addf(b, "%c", *q);
    }
    return rc | sbuf_addf(b, "\"");
}

/* A model section's load, keep_alive and preset keys (those given). */
static int write_preset(struct sbuf *b, const struct config_model *m, pb_err *err)
{
    int rc = 0;
    if (m->load != SERVER_LOAD_DEFAULT)
        rc |= sbuf_addf(b, "load = %s\n", server_load_name((enum server_load)m->load));
    if (m->keep_alive_s < 0 && m->keep_alive_s != SERVER_KEEP_ALIVE_DEFAULT)
        rc |= sbuf_addf(b, "keep_alive = forever\n");
    else if (m->keep_alive_s >= 0)
        rc |= sbuf_addf(b, "keep_alive = %.17g\n", m->keep_alive_s);
    const unsigned set = m->preset_set;
    if ((set & SERVER_PRESET_SYSTEM)) {
        int src = write_system(b, m->alias, m->system, err);
        if (src < 0)
            return src;
        rc |= src;
    }
    if (set & SERVER_PRESET_TEMPERATURE)
        rc |= sbuf_addf(b, "temperature = %.17g\n", m->temperature);
    if (set & SERVER_PRESET_TOP_P)
        rc |= sbuf_addf(b, "top_p = %.17g\n", m->top_p);
    if (set & SERVER_PRESET_TOP_K)
        rc |= sbuf_addf(b, "top_k = %d\n", m->top_k);
    if (set & SERVER_PRESET_MIN_P)
        rc |= sbuf_addf(b, "min_p = %.17g\n", m->min_p);
    if (set & SERVER_PRESET_REPEAT_PENALTY)
        rc |= sbuf_addf(b, "repeat_penalty = %.17g\n", m->repeat_penalty);
    if (set & SERVER_PRESET_SEED)
        rc |= sbuf_addf(b, "seed = %lld\n", m->seed);
    if ((set & SERVER_PRESET_STOP) && m->n_stop > 0) {
        rc |= sbuf_addf(b, "stop = ");
        for (int i = 0; i < m->n_stop && i < ENGINE_MAX_STOPS; i++) {
            if (!m->stop[i][0])
                return pb_fail(err, PB_EINVAL, "[model %s] stop: an empty string", m->alias);
            int src = write_stop(b, m->alias, m->stop[i], err);
            if (src < 0)
                return src;
            rc |= src | sbuf_addf(b, i + 1 < m->n_stop ? ", " : "\n");
        }
    }
    if (set & SERVER_PRESET_MAX_TOKENS)
        rc |= sbuf_addf(b, "max_tokens = %d\n", m->max_tokens);
    if (set & SERVER_PRESET_REASONING)
        rc |= sbuf_addf(b, "reasoning = %s\n", m->reasoning ? "on" : "off");
    if (m->preset_fixed) {
        rc |= sbuf_addf(b, "fixed =");
        bool first = true;
        for (int k = 0; k < SERVER_PRESET_FIELDS; k++)
            if (m->preset_fixed & (1u << k)) {
                rc |= sbuf_addf(b, "%s %s", first ? "" : ",", server_preset_field_name(1u << k));
                first = false;
            }
        rc |= sbuf_addf(b, "\n");
    }
    return rc ? PB_ENOMEM : PB_OK;
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
    if (c->memory_limit)
        rc |= sbuf_addf(&b, "memory_limit = %llu\n", (unsigned long long)c->memory_limit);
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
        int prc = write_preset(&b, m, err);
        if (prc && prc != PB_ENOMEM) {
            sbuf_free(&b);
            return prc;
        }
        rc |= prc;
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
    struct mem_lines mem = {.p = text, .left = len};
    return load(name, &mem, c, err);
}
