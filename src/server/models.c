#define _POSIX_C_SOURCE 200809L
/* The served names and their loaded copies (models.h): loading on
 * demand, unloading when idle or to make room, presets. */
#include "server/models.h"
#include "server/log.h"

#include "plumb/store.h"

#include "base/err.h"
#include "base/sys.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STOP_MAX 256 /* bytes of a preset's stop string kept */

enum copy_state { COPY_UNLOADED, COPY_LOADING, COPY_LOADED, COPY_UNLOADING };

/* A file opened with one set of engine settings, shared by the names on
 * it. Fields below refs are under the lock. */
struct copy {
    struct copy *next;        /* every copy alive */
    struct server_model spec; /* path, source, engine settings (strings below); no alias, preset */
    char path[1024], source[1024], chat_format[64];
    char label[128];          /* the first name on it, for logs */
    uint64_t mem;             /* the estimate in bytes, the process's own left out (actual once loaded) */
    int64_t n_ctx, n_ctx_train;
    int refs;                 /* names on it, and loads or unloads in progress */
    enum copy_state state;
    struct engine *e;         /* while loaded (and unloading, until closed) */
    int busy;                 /* requests using e */
    int waiting;              /* requests waiting for it to load */
    double last_used;         /* sys_now() when the last request ended (or it was loaded) */
    double keep_alive_s;      /* how long it stays after last_used; < 0: forever */
    unsigned loads;           /* loads that ended, failed or not */
    char load_error[sizeof(((pb_err *)0)->msg)]; /* the last load's failure ("" when it succeeded) */
    bool known;               /* the two below are known (read from the file, or loaded once) */
    bool encoder;
    char tool_style[16];
    bool unload_asked;        /* POST .../unload while busy: it goes once no request uses it */
};

/* A name served: what the API calls it, its preset, its copy. */
struct served {
    struct server_model spec; /* strings below; keep_alive_s resolved; engine as the copy's */
    char alias[128], path[1024], source[1024], chat_format[64];
    char digest[72];          /* "sha256:HEX" when the file is a store's (blobs/sha256-HEX), else "" */
    char *system;
    char stops[ENGINE_MAX_STOPS][STOP_MAX];
    struct copy *copy;
    int64_t created;
    int refs;                 /* the list's and each request's (under the lock) */
};

struct models {
    struct models_params p;
    pthread_mutex_t mu;
    pthread_cond_t changed;   /* a copy was loaded or unloaded */
    pthread_cond_t wake;      /* the reaper: a request ended, or stop */
    pthread_t reaper;
    bool reaper_started, stopping;
    struct served *list[SERVER_MAX_MODELS];
    int n;
    struct copy *copies;
    uint64_t limit;           /* bytes for models and process; 0: none */
    uint64_t budget;          /* for the copies: limit less the process; UINT64_MAX: none */
    struct engine_stats retired; /* counters of engines since closed (/metrics counts on) */
};

static void logf_(struct models *ms, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct models *ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    server_vlog(ms->p.log, ms->p.log_user, fmt, ap);
    va_end(ap);
}

static double mib(uint64_t b)
{
    return (double)b / 1048576.0;
}

/* ---- presets ---- */

static const char *const preset_names[SERVER_PRESET_FIELDS] = {
    "system", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "stop", "max_tokens", "reasoning",
};

const char *server_load_name(enum server_load l)
{
    return l == SERVER_LOAD_START ? "start" : l == SERVER_LOAD_DEMAND ? "demand" : "default";
}

const char *server_preset_field_name(unsigned bit)
{
    for (int k = 0; k < SERVER_PRESET_FIELDS; k++)
        if (bit == 1u << k)
            return preset_names[k];
    return "?";
}

bool server_preset_field_parse(const char *name, unsigned *bit)
{
    for (int k = 0; k < SERVER_PRESET_FIELDS; k++)
        if (!strcmp(name, preset_names[k]))
            return *bit = 1u << k, true;
    return false;
}

json_t *server_preset_json(const struct server_preset *p)
{
    const unsigned s = p->set;
    json_t *o = json_object(), *stop = json_null(), *fixed = json_array();
    if (s & SERVER_PRESET_STOP) {
        stop = json_array();
        for (int i = 0; i < p->n_stop && i < ENGINE_MAX_STOPS; i++)
            json_array_append_new(stop, pb_json_text(p->stop[i], strlen(p->stop[i])));
    }
    for (int k = 0; k < SERVER_PRESET_FIELDS; k++)
        if (p->fixed & (1u << k))
            json_array_append_new(fixed, json_string(preset_names[k]));
#define NUM(bit, v) ((s & (bit)) ? json_real(v) : json_null())
#define INT(bit, v) ((s & (bit)) ? json_integer((json_int_t)(v)) : json_null())
    json_object_set_new(o, "system", s & SERVER_PRESET_SYSTEM && p->system ? pb_json_text(p->system, strlen(p->system))
                                                                           : json_null());
    json_object_set_new(o, "temperature", NUM(SERVER_PRESET_TEMPERATURE, p->temperature));
    json_object_set_new(o, "top_p", NUM(SERVER_PRESET_TOP_P, p->top_p));
    json_object_set_new(o, "top_k", INT(SERVER_PRESET_TOP_K, p->top_k));
    json_object_set_new(o, "min_p", NUM(SERVER_PRESET_MIN_P, p->min_p));
    json_object_set_new(o, "repeat_penalty", NUM(SERVER_PRESET_REPEAT_PENALTY, p->repeat_penalty));
    json_object_set_new(o, "seed", INT(SERVER_PRESET_SEED, p->seed));
    json_object_set_new(o, "stop", stop);
    json_object_set_new(o, "max_tokens", INT(SERVER_PRESET_MAX_TOKENS, p->max_tokens));
    json_object_set_new(o, "reasoning", s & SERVER_PRESET_REASONING ? json_boolean(p->reasoning) : json_null());
    json_object_set_new(o, "fixed", fixed);
#undef NUM
#undef INT
    return o;
}

static bool same_str(const char *a, const char *b)
{
    return !strcmp(a ? a : "", b ? b : "");
}

static bool same_preset(const struct server_preset *a, const struct server_preset *b)
{
    if (a->set != b->set || a->fixed != b->fixed || a->n_stop != b->n_stop)
        return false;
    const unsigned s = a->set;
    for (int i = 0; (s & SERVER_PRESET_STOP) && i < a->n_stop && i < ENGINE_MAX_STOPS; i++)
        if (!same_str(a->stop[i], b->stop[i]))
            return false;
    return (!(s & SERVER_PRESET_SYSTEM) || same_str(a->system, b->system)) &&
           (!(s & SERVER_PRESET_TEMPERATURE) || a->temperature == b->temperature) &&
           (!(s & SERVER_PRESET_TOP_P) || a->top_p == b->top_p) && (!(s & SERVER_PRESET_TOP_K) || a->top_k == b->top_k) &&
           (!(s & SERVER_PRESET_MIN_P) || a->min_p == b->min_p) &&
           (!(s & SERVER_PRESET_REPEAT_PENALTY) || a->repeat_penalty == b->repeat_penalty) &&
           (!(s & SERVER_PRESET_SEED) || a->seed == b->seed) &&
           (!(s & SERVER_PRESET_MAX_TOKENS) || a->max_tokens == b->max_tokens) &&
           (!(s & SERVER_PRESET_REASONING) || a->reasoning == b->reasoning);
}

/* ---- copies ---- */

/* Whether two specs open the same file the same way. */
static bool same_engine(const struct server_model *a, const struct server_model *b)
{
    const struct engine_params *x = &a->engine, *y = &b->engine;
    return !strcmp(a->path, b->path) && same_str(x->chat_format, y->chat_format) && x->n_slots == y->n_slots &&
           x->n_ctx == y->n_ctx && x->n_batch == y->n_batch && x->kv_type == y->kv_type &&
           x->prefill_chunk == y->prefill_chunk && x->step_target_s == y->step_target_s;
}

/* The memory a copy of spec takes, the process's own left out. */
static int estimate(struct models *ms, const struct server_model *spec, struct engine_memory *mem, pb_err *err)
{
    struct engine_params ep = spec->engine;
    ep.threads = ms->p.threads;
    int rc = engine_estimate(spec->path, &ep, mem, err);
    if (rc)
        return pb_wrap(err, rc, "%s", spec->path);
    return PB_OK;
}

static uint64_t own_bytes(const struct engine_memory *m)
{
    return m->total > ENGINE_PROCESS_BYTES ? m->total - ENGINE_PROCESS_BYTES : m->total;
}

/* A new copy of spec (unloaded; a reference for the caller) in the list
 * of copies, or the error of its estimate. */
static int copy_new(struct models *ms, const struct server_model *spec, const char *label, struct copy **out,
                    pb_err *err)
{
    *out = NULL;
    struct engine_memory mem;
    int rc = estimate(ms, spec, &mem, err);
    if (rc)
        return rc;
    struct copy *c = calloc(1, sizeof *c);
    if (!c)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    c->spec = *spec;
    c->spec.alias = NULL;
    memset(&c->spec.preset, 0, sizeof c->spec.preset);
    snprintf(c->path, sizeof c->path, "%s", spec->path);
    c->spec.path = c->path;
    snprintf(c->source, sizeof c->source, "%s", spec->source ? spec->source : spec->path);
    c->spec.source = c->source;
    if (spec->engine.chat_format) {
        snprintf(c->chat_format, sizeof c->chat_format, "%s", spec->engine.chat_format);
        c->spec.engine.chat_format = c->chat_format;
    }
    snprintf(c->label, sizeof c->label, "%s", label);
    c->mem = own_bytes(&mem);
    c->n_ctx = mem.n_ctx;
    c->n_ctx_train = mem.n_ctx_train;
    struct engine_caps caps;
    pb_err cerr = {0};
    if (engine_caps_of(c->path, c->spec.engine.chat_format, &caps, &cerr) == PB_OK) { /* else: known once loaded */
        c->known = true;
        c->encoder = caps.encoder;
        snprintf(c->tool_style, sizeof c->tool_style, "%s", caps.tool_style);
    }
    c->keep_alive_s = SERVER_KEEP_FOREVER;
    c->refs = 1; /* the caller's */
    pthread_mutex_lock(&ms->mu);
    c->next = ms->copies;
    ms->copies = c;
    pthread_mutex_unlock(&ms->mu);
    *out = c;
    return PB_OK;
}

/* Adds a closed engine's counters to the retired ones (under the lock). */
static void retire_stats(struct models *ms, struct engine *e)
{
    struct engine_stats st;
    engine_get_stats(e, &st);
    ms->retired.steps += st.steps;
    ms->retired.step_tokens += st.step_tokens;
    ms->retired.step_seconds += st.step_seconds;
    ms->retired.sample_seconds += st.sample_seconds;
    for (int p = 0; p < PB_PART_COUNT; p++)
        ms->retired.part_seconds[p] += st.part_seconds[p];
}

static void copy_unref(struct models *ms, struct copy *c)
{
    pthread_mutex_lock(&ms->mu);
    const bool last = --c->refs == 0;
    if (last) {
        for (struct copy **pp = &ms->copies; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        if (c->e)
            retire_stats(ms, c->e);
    }
    pthread_mutex_unlock(&ms->mu);
    if (!last)
        return;
    if (c->e) {
        engine_close(c->e);
        logf_(ms, "unloaded '%s' (%s)", c->label, c->source);
    }
    free(c);
}

/* What the copies take now (loading and unloading ones included), under
 * the lock. */
static uint64_t used_locked(const struct models *ms)
{
    uint64_t used = 0;
    for (const struct copy *c = ms->copies; c; c = c->next)
        if (c->state != COPY_UNLOADED)
            used += c->mem;
    return used;
}

/* Unloads c, which the caller marked unloading and holds a reference on
 * (outside the lock). */
static void copy_close(struct models *ms, struct copy *c, const char *why)
{
    struct engine *e = c->e;
    pthread_mutex_lock(&ms->mu);
    retire_stats(ms, e);
    pthread_mutex_unlock(&ms->mu);
    engine_close(e);
    logf_(ms, "unloaded '%s' (%s): %s", c->label, c->source, why);
    pthread_mutex_lock(&ms->mu);
    c->e = NULL;
    c->state = COPY_UNLOADED;
    c->unload_asked = false;
    pthread_cond_broadcast(&ms->changed);
    pthread_mutex_unlock(&ms->mu);
    copy_unref(ms, c);
}

/* Loads c (unloaded; under the lock, which it lets go of meanwhile):
 * first unloads idle copies, least recently used first, while c does not
 * fit. 200, or 503 with *e. */
static int copy_load_locked(struct models *ms, struct copy *c, const char *name, struct oai_error *e, int *retry)
{
    struct copy *victims[64];
    int n_victims = 0;
    const uint64_t used = used_locked(ms);
    if (ms->budget != UINT64_MAX && used + c->mem > ms->budget) {
        uint64_t freeable = 0;
        char busy[300] = "";
        size_t at = 0;
        for (struct copy *o = ms->copies; o; o = o->next) {
            if (o->state == COPY_LOADED && o->busy == 0 && o->waiting == 0)
                freeable += o->mem;
            else if (o->state != COPY_UNLOADED && o != c && at < sizeof busy)
                at += (size_t)snprintf(busy + at, sizeof busy - at, "%s'%s'", at ? ", " : "", o->label);
        }
        if (c->mem > ms->budget || used - freeable + c->mem > ms->budget) {
            snprintf(e->type, sizeof e->type, "server_error");
            snprintf(e->code, sizeof e->code, "model_memory");
            if (c->mem > ms->budget)
                snprintf(e->message, sizeof e->message, "the model '%s' needs about %.1f MiB, more than the %.1f MiB "
                         "the models may use (memory_limit): it cannot be loaded", name, mib(c->mem),
                         mib(ms->budget));
            else
                snprintf(e->message, sizeof e->message, "the model '%s' needs about %.1f MiB but only %.1f MiB of %.1f "
                         "are free or held by idle models; busy now: %s; try again when they are idle", name,
                         mib(c->mem), mib(ms->budget - (used - freeable)), mib(ms->budget), busy);
            *retry = c->mem > ms->budget ? 3600 : 5;
            return 503;
        }
        /* the least recently used first, until c fits */
        uint64_t now_used = used;
        while (now_used + c->mem > ms->budget && n_victims < 64) {
            struct copy *lru = NULL;
            for (struct copy *o = ms->copies; o; o = o->next)
                if (o->state == COPY_LOADED && o->busy == 0 && o->waiting == 0 &&
                    (!lru || o->last_used < lru->last_used))
                    lru = o;
            if (!lru)
                break;
            lru->state = COPY_UNLOADING;
            lru->refs++;
            victims[n_victims++] = lru;
            now_used -= lru->mem;
        }
    }
    c->state = COPY_LOADING;
    c->refs++;
    pthread_mutex_unlock(&ms->mu);
    for (int i = 0; i < n_victims; i++) {
        char why[200];
        snprintf(why, sizeof why, "the least recently used, to make room for '%s'", name);
        copy_close(ms, victims[i], why);
    }
    struct engine_params ep = c->spec.engine;
    ep.threads = ms->p.threads;
    ep.max_queue = ms->p.max_queue;
    ep.ignore_memory = true; /* weighed against the budget above */
    const double t0 = sys_now();
    struct engine *eng = NULL;
    pb_err err = {0};
    int rc = engine_open(c->path, &ep, &eng, &err);
    struct engine_info in;
    char warn[512] = "";
    if (!rc) {
        engine_get_info(eng, &in);
        if (!engine_ctx_advice(in.n_ctx, in.n_ctx_train, warn, sizeof warn))
            warn[0] = '\0';
    }
    pthread_mutex_lock(&ms->mu);
    c->loads++;
    if (rc) {
        c->state = COPY_UNLOADED;
        snprintf(c->load_error, sizeof c->load_error, "%s", err.msg);
    } else {
        c->e = eng;
        c->state = COPY_LOADED;
        c->load_error[0] = '\0';
        c->mem = own_bytes(&in.mem);
        c->n_ctx = in.n_ctx;
        c->known = true;
        c->encoder = engine_is_encoder(eng);
        snprintf(c->tool_style, sizeof c->tool_style, "%s", engine_tool_style(eng));
        c->last_used = sys_now();
        c->keep_alive_s = SERVER_KEEP_FOREVER; /* until a request ends, or the caller says */
    }
    const uint64_t now_used = used_locked(ms);
    pthread_cond_broadcast(&ms->changed);
    pthread_mutex_unlock(&ms->mu);
    if (rc) {
        logf_(ms, "error: loading '%s' (%s) failed: %s", name, c->source, err.msg);
    } else {
        char of[48] = "";
        if (ms->budget != UINT64_MAX)
            snprintf(of, sizeof of, " of %.1f MiB", mib(ms->budget));
        logf_(ms, "loaded '%s' (%s) in %.2f s: %.1f MiB; the models use %.1f MiB%s", name, c->source,
              sys_now() - t0, mib(c->mem), mib(now_used), of);
        if (warn[0])
            logf_(ms, "warning: model '%s': %s", name, warn);
    }
    copy_unref(ms, c); /* the load's reference (a name still holds one) */
    pthread_mutex_lock(&ms->mu);
    if (rc) {
        snprintf(e->type, sizeof e->type, "server_error");
        snprintf(e->code, sizeof e->code, "model_load_failed");
        snprintf(e->message, sizeof e->message, "the model '%s' could not be loaded: %.400s", name, err.msg);
        *retry = 5;
        return 503;
    }
    return 200;
}

/* Waits until c is loaded (or loads it), then takes a use of it when
 * take; under the lock. 200, or 503 with *e. */
static int copy_ready_locked(struct models *ms, struct copy *c, const char *name, double wait_s, bool take,
                             struct oai_error *e, int *retry)
{
    const double deadline = sys_now() + wait_s;
    const unsigned loads0 = c->loads;
    bool waited = false;
    for (;;) {
        if (ms->stopping) {
            snprintf(e->type, sizeof e->type, "server_error");
            snprintf(e->code, sizeof e->code, "draining");
            snprintf(e->message, sizeof e->message, "the server is shutting down");
            *retry = 1;
            return 503;
        }
        if (c->state == COPY_LOADED) {
            if (take)
                c->busy++;
            return 200;
        }
        if (c->state == COPY_UNLOADED) {
            if (waited && c->loads != loads0 && c->load_error[0]) { /* the load waited for failed */
                snprintf(e->type, sizeof e->type, "server_error");
                snprintf(e->code, sizeof e->code, "model_load_failed");
                snprintf(e->message, sizeof e->message, "the model '%s' could not be loaded: %.400s", name,
                         c->load_error);
                *retry = 5;
                return 503;
            }
            int st = copy_load_locked(ms, c, name, e, retry);
            if (st != 200)
                return st;
            continue;
        }
        /* loading or unloading: wait for the change */
        const double left = deadline - sys_now();
        if (left <= 0) {
            snprintf(e->type, sizeof e->type, "server_error");
            snprintf(e->code, sizeof e->code, "model_loading");
            snprintf(e->message, sizeof e->message, "the model '%s' is still %s after %.0f s: try again", name,
                     c->state == COPY_LOADING ? "loading" : "unloading", wait_s);
            *retry = 5;
            return 503;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        const double w = left < 1 ? left : 1; /* sys_now is monotonic: wait in short turns */
        long long ns = ts.tv_nsec + (long long)(w * 1e9);
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        c->waiting++;
        waited = true;
        pthread_cond_timedwait(&ms->changed, &ms->mu, &ts);
        c->waiting--;
    }
}

/* ---- the reaper ---- */

/* Unloads copies idle beyond their keep-alive, sleeping until the next
 * one is due (at most a second). */
static void *reaper_main(void *arg)
{
    struct models *ms = arg;
    pthread_mutex_lock(&ms->mu);
    while (!ms->stopping) {
        const double now = sys_now();
        double next = now + 1;
        struct copy *due = NULL;
        for (struct copy *c = ms->copies; c && !due; c = c->next) {
            if (c->state != COPY_LOADED || c->busy || c->waiting || c->keep_alive_s < 0)
                continue;
            const double at = c->last_used + c->keep_alive_s;
            if (at <= now)
                due = c;
            else if (at < next)
                next = at;
        }
        if (due) {
            due->state = COPY_UNLOADING;
            due->refs++;
            char why[100];
            snprintf(why, sizeof why, "idle for %.1f s (keep_alive %.0f s)", now - due->last_used, due->keep_alive_s);
            pthread_mutex_unlock(&ms->mu);
            copy_close(ms, due, why);
            pthread_mutex_lock(&ms->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (long long)((next - now) * 1e9) + 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&ms->wake, &ms->mu, &ts);
    }
    pthread_mutex_unlock(&ms->mu);
    return NULL;
}

/* ---- names ---- */

static void served_free(struct models *ms, struct served *m)
{
    copy_unref(ms, m->copy);
    free(m->system);
    free(m);
}

void models_unref(struct models *ms, struct served *m)
{
    pthread_mutex_lock(&ms->mu);
    const bool last = --m->refs == 0;
    pthread_mutex_unlock(&ms->mu);
    if (last)
        served_free(ms, m);
}

const char *models_id(const struct served *m)
{
    return m->alias;
}

/* A spec's load and keep-alive with the defaults decided
 * (server_model). */
static enum server_load resolve_load(const struct server_model *spec, int n_models)
{
    if (spec->load != SERVER_LOAD_DEFAULT)
        return spec->load;
    return n_models > 1 ? SERVER_LOAD_DEMAND : SERVER_LOAD_START;
}

static double resolve_keep_alive(const struct server_model *spec, enum server_load load)
{
    if (spec->keep_alive_s == SERVER_KEEP_ALIVE_DEFAULT)
        return load == SERVER_LOAD_START ? SERVER_KEEP_FOREVER : SERVER_DEFAULT_KEEP_ALIVE_S;
    return spec->keep_alive_s < 0 ? SERVER_KEEP_FOREVER : spec->keep_alive_s;
}

/* A name of spec on copy c (its reference taken). */
static int served_new(struct models *ms, const struct server_model *spec, struct copy *c, int n_models,
                      struct served **out, pb_err *err)
{
    struct served *m = calloc(1, sizeof *m);
    if (!m)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    m->spec = *spec;
    oai_model_id(spec->path, spec->alias, m->alias, sizeof m->alias);
    m->spec.alias = m->alias;
    snprintf(m->path, sizeof m->path, "%s", spec->path);
    m->spec.path = m->path;
    snprintf(m->source, sizeof m->source, "%s", spec->source ? spec->source : spec->path);
    m->spec.source = m->source;
    char hex[65];
    if (store_blob_digest(m->path, hex))
        snprintf(m->digest, sizeof m->digest, "sha256:%s", hex);
    if (spec->engine.chat_format) {
        snprintf(m->chat_format, sizeof m->chat_format, "%s", spec->engine.chat_format);
        m->spec.engine.chat_format = m->chat_format;
    }
    m->spec.load = resolve_load(spec, n_models);
    m->spec.keep_alive_s = resolve_keep_alive(spec, m->spec.load);
    struct server_preset *ps = &m->spec.preset;
    if ((ps->set & SERVER_PRESET_SYSTEM) && spec->preset.system) {
        if (!(m->system = strdup(spec->preset.system))) {
            free(m);
            return pb_fail(err, PB_ENOMEM, "out of memory");
        }
        ps->system = m->system;
    } else {
        ps->system = NULL;
    }
    if (ps->n_stop < 0 || ps->n_stop > ENGINE_MAX_STOPS) {
        int rc = pb_fail(err, PB_EINVAL, "model '%s': %d stop strings (at most %d)", m->alias, ps->n_stop,
                         ENGINE_MAX_STOPS);
        free(m->system);
        free(m);
        return rc;
    }
    for (int i = 0; i < ps->n_stop; i++) {
        snprintf(m->stops[i], sizeof m->stops[i], "%s", spec->preset.stop[i] ? spec->preset.stop[i] : "");
        ps->stop[i] = m->stops[i];
    }
    m->copy = c;
    m->created = (int64_t)time(NULL);
    m->refs = 1;
    pthread_mutex_lock(&ms->mu);
    c->refs++;
    pthread_mutex_unlock(&ms->mu);
    *out = m;
    return PB_OK;
}

/* Whether name m serves spec exactly as asked (n_models: the list's
 * length, which decides the default load). */
static bool same_served(const struct served *m, const struct server_model *spec, int n_models)
{
    const enum server_load load = resolve_load(spec, n_models);
    const double ka = resolve_keep_alive(spec, load);
    char id[128];
    oai_model_id(spec->path, spec->alias, id, sizeof id);
    return !strcmp(m->alias, id) && same_engine(&m->spec, spec) && same_str(m->source, spec->source ? spec->source
                                                                                                    : spec->path) &&
           m->spec.load == load && m->spec.keep_alive_s == ka && same_preset(&m->spec.preset, &spec->preset);
}

int models_create(const struct models_params *p, struct models **out, pb_err *err)
{
    *out = NULL;
    struct models *ms = calloc(1, sizeof *ms);
    if (!ms)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    ms->p = *p;
    pthread_mutex_init(&ms->mu, NULL);
    pthread_cond_init(&ms->changed, NULL);
    pthread_cond_init(&ms->wake, NULL);
    ms->limit = p->memory_limit ? p->memory_limit : sys_mem_available();
    ms->budget = p->ignore_memory || !ms->limit ? UINT64_MAX
                 : ms->limit > ENGINE_PROCESS_BYTES ? ms->limit - ENGINE_PROCESS_BYTES
                                                    : 0;
    if (p->ignore_memory)
        ms->limit = 0;
    if (pthread_create(&ms->reaper, NULL, reaper_main, ms) != 0) {
        models_free(ms);
        return pb_fail(err, PB_ENOMEM, "cannot start a thread");
    }
    ms->reaper_started = true;
    *out = ms;
    return PB_OK;
}

void models_cancel_all(struct models *ms)
{
    if (!ms)
        return;
    pthread_mutex_lock(&ms->mu);
    ms->stopping = true;
    pthread_cond_broadcast(&ms->wake);
    pthread_mutex_unlock(&ms->mu);
    if (ms->reaper_started)
        pthread_join(ms->reaper, NULL);
    ms->reaper_started = false;
    pthread_mutex_lock(&ms->mu);
    for (struct copy *c = ms->copies; c; c = c->next)
        if (c->state == COPY_LOADED)
            engine_cancel_all(c->e); /* waiting connections end */
    pthread_mutex_unlock(&ms->mu);
}

void models_free(struct models *ms)
{
    if (!ms)
        return;
    models_cancel_all(ms);
    for (int i = 0; i < ms->n; i++)
        models_unref(ms, ms->list[i]);
    pthread_cond_destroy(&ms->wake);
    pthread_cond_destroy(&ms->changed);
    pthread_mutex_destroy(&ms->mu);
    free(ms);
}

/* The "serving" line of a name. */
static void log_serving(struct models *ms, const char *prefix, const struct served *m)
{
    const struct copy *c = m->copy;
    logf_(ms, "%sserving %s as '%s' (%d slot%s x %lld tokens, %s, %.1f MiB)", prefix, m->source, m->alias,
          m->spec.engine.n_slots, m->spec.engine.n_slots == 1 ? "" : "s", (long long)c->n_ctx,
          m->spec.load == SERVER_LOAD_START ? "loaded at start" : "loaded on demand", mib(c->mem));
}

int models_set(struct models *ms, const struct server_model *list, int n, bool reload, pb_err *err)
{
    if (n < 1 || n > SERVER_MAX_MODELS)
        return pb_fail(err, PB_EINVAL, "%d models to serve (1..%d)", n, SERVER_MAX_MODELS);
    struct served *next[SERVER_MAX_MODELS] = {0};
    struct copy *fresh[SERVER_MAX_MODELS]; /* copies made here (a reference each until the end) */
    int n_fresh = 0, rc = PB_OK;
    for (int i = 0; i < n && !rc; i++) {
        const struct server_model *spec = &list[i];
        if (!spec->path) {
            rc = pb_fail(err, PB_EINVAL, "model %d has no file", i + 1);
            break;
        }
        /* the same name served the same way: kept */
        pthread_mutex_lock(&ms->mu);
        for (int k = 0; k < ms->n && !next[i]; k++)
            if (same_served(ms->list[k], spec, n)) {
                next[i] = ms->list[k];
                next[i]->refs++;
            }
        struct copy *c = NULL;
        for (struct copy *o = ms->copies; o && !next[i] && !c; o = o->next)
            if (same_engine(&o->spec, spec))
                c = o;
        if (c)
            c->refs++; /* held while the list is built */
        pthread_mutex_unlock(&ms->mu);
        if (next[i])
            continue;
        char id[128];
        oai_model_id(spec->path, spec->alias, id, sizeof id);
        if (!c && (rc = copy_new(ms, spec, id, &c, err)))
            break;
        fresh[n_fresh++] = c;
        rc = served_new(ms, spec, c, n, &next[i], err);
    }
    for (int i = 0; i < n && !rc; i++)
        for (int k = 0; k < i && !rc; k++)
            if (!strcmp(next[k]->alias, next[i]->alias))
                rc = pb_fail(err, PB_EINVAL, "two models are called '%s' (give them different aliases)",
                             next[i]->alias);
    /* the copies to load now: those of names loaded at start, not loaded */
    struct copy *to_load[SERVER_MAX_MODELS];
    int n_load = 0;
    if (!rc) {
        uint64_t need = 0;
        char what[300] = "";
        size_t at = 0;
        pthread_mutex_lock(&ms->mu);
        const uint64_t used = used_locked(ms);
        for (int i = 0; i < n; i++) {
            struct copy *c = next[i]->copy;
            bool listed = false;
            for (int k = 0; k < n_load; k++)
                listed |= to_load[k] == c;
            if (next[i]->spec.load != SERVER_LOAD_START || c->state != COPY_UNLOADED || listed)
                continue;
            to_load[n_load++] = c;
            need += c->mem;
            if (at < sizeof what)
                at += (size_t)snprintf(what + at, sizeof what - at, "%s%s %.2f GiB (%d x %lld tokens)",
                                       at ? ", " : "", next[i]->alias, (double)c->mem / 1073741824.0,
                                       c->spec.engine.n_slots, (long long)c->n_ctx);
        }
        pthread_mutex_unlock(&ms->mu);
        if (ms->budget != UINT64_MAX && used + need > ms->budget)
            rc = pb_fail(err, PB_ENOMEM, "the models need about %.2f GiB together (%s) but %.2f GiB are available%s; "
                         "use smaller contexts or fewer slots", (double)(need + ENGINE_PROCESS_BYTES) / 1073741824.0,
                         what, (double)(ms->budget > used ? ms->budget - used + ENGINE_PROCESS_BYTES
                                                          : ENGINE_PROCESS_BYTES) / 1073741824.0,
                         ms->p.memory_limit ? " (memory_limit)" : "");
        else if (ms->budget != UINT64_MAX)
            for (int i = 0; i < n; i++)
                if (next[i]->copy->mem > ms->budget)
                    logf_(ms, "warning: model '%s' needs about %.1f MiB, more than the %.1f MiB the models may use: "
                          "requests for it will get 503", next[i]->alias, mib(next[i]->copy->mem), mib(ms->budget));
    }
    for (int i = 0; i < n_load && !rc; i++) {
        struct oai_error e = {0};
        int retry = 0;
        const char *name = "";
        for (int k = 0; k < n; k++)
            if (next[k]->copy == to_load[i])
                name = next[k]->alias;
        double keep = SERVER_KEEP_FOREVER;
        for (int k = 0; k < n; k++)
            if (next[k]->copy == to_load[i] && next[k]->spec.load == SERVER_LOAD_START)
                keep = next[k]->spec.keep_alive_s;
        pthread_mutex_lock(&ms->mu);
        int st = copy_ready_locked(ms, to_load[i], name, 1e9, false, &e, &retry);
        if (st == 200 && to_load[i]->busy == 0)
            to_load[i]->keep_alive_s = keep;
        pthread_mutex_unlock(&ms->mu);
        if (st != 200)
            rc = pb_fail(err, !strcmp(e.code, "model_memory") ? PB_ENOMEM : PB_EIO, "%s", e.message);
    }
    if (rc) {
        for (int i = 0; i < n; i++)
            if (next[i])
                models_unref(ms, next[i]);
        for (int i = 0; i < n_fresh; i++)
            copy_unref(ms, fresh[i]);
        return rc;
    }
    /* the new list in place of the old */
    struct served *old[SERVER_MAX_MODELS];
    pthread_mutex_lock(&ms->mu);
    const int n_old = ms->n;
    memcpy(old, ms->list, (size_t)n_old * sizeof *old);
    memcpy(ms->list, next, (size_t)n * sizeof *next);
    ms->n = n;
    pthread_mutex_unlock(&ms->mu);
    for (int i = 0; i < n_fresh; i++)
        copy_unref(ms, fresh[i]);
    int kept = 0;
    for (int i = 0; i < n_old; i++) {
        bool still = false;
        for (int k = 0; k < n; k++)
            still |= next[k] == old[i];
        kept += still;
        if (!still && reload)
            logf_(ms, "reload: '%s' (%s) leaves when its requests finish", old[i]->alias, old[i]->source);
        models_unref(ms, old[i]); /* the old list's reference */
    }
    for (int k = 0; k < n; k++) {
        bool was = false;
        for (int i = 0; i < n_old; i++)
            was |= next[k] == old[i];
        if (!was || !reload)
            log_serving(ms, reload ? "reload: " : "", next[k]);
    }
    if (reload)
        logf_(ms, "reload: %d model%s, %d unchanged", n, n == 1 ? "" : "s", kept);
    return PB_OK;
}

int models_pick(struct models *ms, const char *name, struct served **out, struct oai_error *e)
{
    *out = NULL;
    pthread_mutex_lock(&ms->mu);
    int st = 200;
    const int n = ms->n;
    if (!name) {
        if (n == 1)
            *out = ms->list[0];
        else
            st = 400;
    } else {
        for (int i = 0; i < n && !*out; i++)
            if (!strcmp(ms->list[i]->alias, name))
                *out = ms->list[i];
        if (!*out)
            st = 404;
    }
    if (*out)
        (*out)->refs++;
    pthread_mutex_unlock(&ms->mu);
    if (st == 400) {
        snprintf(e->message, sizeof e->message, "this server serves %d models: say which in 'model'", n);
        snprintf(e->type, sizeof e->type, "invalid_request_error");
        snprintf(e->code, sizeof e->code, "model_required");
    } else if (st == 404) {
        snprintf(e->message, sizeof e->message, "the model '%.400s' does not exist (GET /v1/models lists them)", name);
        snprintf(e->type, sizeof e->type, "invalid_request_error");
        snprintf(e->code, sizeof e->code, "model_not_found");
    }
    return st;
}

int models_use(struct models *ms, struct served *m, double wait_s, struct oai_model *om, struct oai_error *e,
               int *retry_after)
{
    struct copy *c = m->copy;
    pthread_mutex_lock(&ms->mu);
    int st = copy_ready_locked(ms, c, m->alias, wait_s, true, e, retry_after);
    if (st == 200) {
        memset(om, 0, sizeof *om);
        snprintf(om->id, sizeof om->id, "%s", m->alias);
        om->created = m->created;
        om->e = c->e;
        om->n_ctx = c->n_ctx;
        om->preset = &m->spec.preset;
        om->on_itl = ms->p.on_itl;
        om->on_itl_user = ms->p.on_itl_user;
    }
    pthread_mutex_unlock(&ms->mu);
    return st;
}

void models_done(struct models *ms, struct served *m, bool has_keep_alive, double keep_alive_s)
{
    struct copy *c = m->copy;
    pthread_mutex_lock(&ms->mu);
    c->busy--;
    c->last_used = sys_now();
    c->keep_alive_s = c->unload_asked ? 0 : has_keep_alive ? keep_alive_s : m->spec.keep_alive_s;
    pthread_cond_broadcast(&ms->wake);
    pthread_mutex_unlock(&ms->mu);
}

/* ---- what is served ---- */

static const char *state_name(enum copy_state s)
{
    static const char *const n[] = {"unloaded", "loading", "loaded", "unloading"};
    return n[s];
}

/* GET /v1/models's object of a name (under the lock). */
static json_t *openai_object_locked(const struct served *m)
{
    const struct copy *c = m->copy;
    json_t *o;
    if (c->state == COPY_LOADED) {
        struct oai_model om = {.created = m->created, .e = c->e, .n_ctx = c->n_ctx};
        snprintf(om.id, sizeof om.id, "%s", m->alias);
        o = oai_model_object(&om);
    } else {
        o = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I}", "id", m->alias, "object", "model", "created",
                      (json_int_t)m->created, "owned_by", "plumb", "context_length", (json_int_t)c->n_ctx,
                      "max_model_len", (json_int_t)c->n_ctx, "n_ctx_train", (json_int_t)c->n_ctx_train);
        if (c->known) { /* as the file says */
            json_object_set_new(o, "capabilities", c->encoder ? json_pack("[s]", "embeddings")
                                                              : json_pack("[s,s,s,s]", "chat", "completions", "tools",
                                                                          "embeddings"));
            json_object_set_new(o, "tool_call_format", json_string(c->tool_style));
        }
    }
    json_object_set_new(o, "status", json_string(state_name(c->state)));
    return o;
}

json_t *models_openai(struct models *ms, const char *id)
{
    json_t *out = id ? NULL : json_array();
    pthread_mutex_lock(&ms->mu);
    for (int i = 0; i < ms->n; i++) {
        if (!id)
            json_array_append_new(out, openai_object_locked(ms->list[i]));
        else if (!out && !strcmp(ms->list[i]->alias, id))
            out = openai_object_locked(ms->list[i]);
    }
    pthread_mutex_unlock(&ms->mu);
    return out;
}

/* GET /v1/plumb/models's object of a name (under the lock). */
static json_t *status_object_locked(const struct served *m, double now)
{
    const struct copy *c = m->copy;
    struct engine_stats st = {0};
    const bool loaded = c->state == COPY_LOADED;
    if (loaded)
        engine_get_stats(c->e, &st);
    const bool idle = loaded && c->busy == 0;
    json_t *expires = json_null();
    if (idle && c->keep_alive_s >= 0) {
        const double left = c->last_used + c->keep_alive_s - now;
        expires = json_real(left > 0 ? left : 0);
    }
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(m->alias));
    json_object_set_new(o, "source", pb_json_text(m->source, strlen(m->source)));
    json_object_set_new(o, "path", pb_json_text(m->path, strlen(m->path)));
    json_object_set_new(o, "state", json_string(state_name(c->state)));
    json_object_set_new(o, "load", json_string(server_load_name(m->spec.load)));
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)c->mem));
    json_object_set_new(o, "slots", json_integer(m->spec.engine.n_slots));
    json_object_set_new(o, "slots_busy", json_integer(st.active));
    json_object_set_new(o, "queued", json_integer(st.queued + c->waiting));
    json_object_set_new(o, "context_length", json_integer((json_int_t)c->n_ctx));
    json_object_set_new(o, "idle_s", idle ? json_real(now - c->last_used) : json_null());
    json_object_set_new(o, "keep_alive_s", json_real(m->spec.keep_alive_s < 0 ? -1 : m->spec.keep_alive_s));
    json_object_set_new(o, "expires_in_s", expires);
    json_object_set_new(o, "load_error", c->load_error[0] ? json_string(c->load_error) : json_null());
    json_object_set_new(o, "preset", server_preset_json(&m->spec.preset));
    return o;
}

json_t *models_status(struct models *ms)
{
    json_t *list = json_array();
    const double now = sys_now();
    pthread_mutex_lock(&ms->mu);
    for (int i = 0; i < ms->n; i++)
        json_array_append_new(list, status_object_locked(ms->list[i], now));
    const uint64_t used = used_locked(ms) + ENGINE_PROCESS_BYTES;
    pthread_mutex_unlock(&ms->mu);
    return json_pack("{s:o, s:{s:o, s:I}}", "models", list, "memory", "limit_bytes",
                     ms->limit ? json_integer((json_int_t)ms->limit) : json_null(), "used_bytes", (json_int_t)used);
}

static json_t *status_of(struct models *ms, struct served *m)
{
    pthread_mutex_lock(&ms->mu);
    json_t *o = status_object_locked(m, sys_now());
    pthread_mutex_unlock(&ms->mu);
    return o;
}

int models_load(struct models *ms, const char *name, double wait_s, json_t **out, struct oai_error *e,
                int *retry_after)
{
    *out = NULL;
    struct served *m;
    int st = models_pick(ms, name, &m, e);
    if (st != 200)
        return st;
    pthread_mutex_lock(&ms->mu);
    st = copy_ready_locked(ms, m->copy, m->alias, wait_s, false, e, retry_after);
    if (st == 200)
        m->copy->unload_asked = false;
    if (st == 200 && m->copy->busy == 0) { /* loaded by hand: idle from now */
        m->copy->last_used = sys_now();
        m->copy->keep_alive_s = m->spec.keep_alive_s;
        pthread_cond_broadcast(&ms->wake);
    }
    pthread_mutex_unlock(&ms->mu);
    if (st == 200)
        *out = status_of(ms, m);
    models_unref(ms, m);
    return st;
}

int models_unload(struct models *ms, const char *name, json_t **out, struct oai_error *e)
{
    *out = NULL;
    struct served *m;
    int st = models_pick(ms, name, &m, e);
    if (st != 200)
        return st;
    struct copy *c = m->copy;
    pthread_mutex_lock(&ms->mu);
    bool now = false;
    if (c->state == COPY_LOADED) {
        c->keep_alive_s = 0; /* busy: it goes once no request uses it (the reaper) */
        c->unload_asked = true;
        if (c->busy == 0 && c->waiting == 0) {
            c->state = COPY_UNLOADING;
            c->refs++;
            now = true;
        }
    }
    pthread_mutex_unlock(&ms->mu);
    if (now)
        copy_close(ms, c, "asked to (POST /v1/plumb/models/NAME/unload)");
    else
        logf_(ms, "'%s' unloads when its requests end (asked to)", m->alias);
    *out = status_of(ms, m);
    models_unref(ms, m);
    return 200;
}

void models_gauges(struct models *ms, struct metrics_gauges *g, struct metrics_model_gauges *per, char (*ids)[128],
                   char (*sources)[1024], char (*digests)[72], int max)
{
    pthread_mutex_lock(&ms->mu);
    g->steps += ms->retired.steps;
    g->step_tokens += ms->retired.step_tokens;
    g->step_seconds += ms->retired.step_seconds;
    g->sample_seconds += ms->retired.sample_seconds;
    for (int p = 0; p < PB_PART_COUNT; p++)
        g->part_seconds[p] += ms->retired.part_seconds[p];
    for (const struct copy *c = ms->copies; c; c = c->next) { /* each engine once */
        if (c->state != COPY_LOADED)
            continue;
        struct engine_stats st;
        engine_get_stats(c->e, &st);
        g->slots_total += st.n_slots;
        g->slots_active += st.active;
        g->queue_depth += st.queued;
        g->kv_used += st.kv_used;
        g->kv_shared += st.kv_shared;
        g->kv_capacity += st.kv_capacity;
        g->steps += st.steps;
        g->step_tokens += st.step_tokens;
        g->step_seconds += st.step_seconds;
        g->sample_seconds += st.sample_seconds;
        for (int p = 0; p < PB_PART_COUNT; p++)
            g->part_seconds[p] += st.part_seconds[p];
    }
    int k = 0;
    for (int i = 0; i < ms->n && k < max; i++) {
        const struct copy *c = ms->list[i]->copy;
        struct engine_stats st = {0};
        if (c->state == COPY_LOADED)
            engine_get_stats(c->e, &st);
        snprintf(ids[k], 128, "%s", ms->list[i]->alias);
        snprintf(sources[k], 1024, "%s", ms->list[i]->source);
        snprintf(digests[k], 72, "%s", ms->list[i]->digest);
        per[k] = (struct metrics_model_gauges){ids[k], sources[k], digests[k][0] ? digests[k] : NULL, st.active,
                                               st.queued + c->waiting,
                                               st.kv_capacity ? (double)st.kv_used / (double)st.kv_capacity : 0};
        k++;
    }
    g->n_models = ms->n;
    g->models = per;
    g->n_model_gauges = k;
    pthread_mutex_unlock(&ms->mu);
}
