#define _POSIX_C_SOURCE 200809L
/* OpenAI request and response shapes over the engine (oai.h). */
#include "server/oai.h"

#include "base/sbuf.h"
#include "base/sys.h"
#include "base/utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the served model ---- */

int oai_model_open(struct oai_model *om, const char *path, const char *alias, const struct engine_params *ep,
                   pb_err *err)
{
    memset(om, 0, sizeof *om);
    int rc = engine_open(path, ep, &om->e, err);
    if (rc)
        return rc;
    struct engine_info info;
    engine_get_info(om->e, &info);
    om->n_ctx = info.n_ctx;
    if (alias && *alias) {
        snprintf(om->id, sizeof om->id, "%s", alias);
    } else {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t n = strlen(base);
        if (n > 5 && !strcmp(base + n - 5, ".gguf"))
            n -= 5;
        snprintf(om->id, sizeof om->id, "%.*s", (int)n, base);
    }
    om->created = (int64_t)time(NULL);
    return PB_OK;
}

void oai_model_close(struct oai_model *om)
{
    engine_close(om->e);
    memset(om, 0, sizeof *om);
}

json_t *oai_model_object(const struct oai_model *om)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", om->id, "object", "model", "created", (json_int_t)om->created,
                     "owned_by", "plumb");
}

json_t *oai_error(const char *message, const char *type, const char *code)
{
    return json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", message, "type", type ? type : "server_error",
                     "param", "code", code);
}

int oai_peek_model(const char *body, size_t len, char *out, size_t size)
{
    json_t *req = json_loadb(body ? body : "", len, 0, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return -1;
    }
    const json_t *m = json_object_get(req, "model");
    int rc = 0;
    if (json_is_string(m) && json_string_length(m) < size) {
        memcpy(out, json_string_value(m), json_string_length(m) + 1);
        rc = 1;
    } else if (m && !json_is_null(m)) {
        rc = -1; /* not a string: oai_gen_start says so */
    }
    json_decref(req);
    return rc;
}

/* ---- a generation ---- */

enum stream_phase { PH_FIRST, PH_TEXT, PH_FINAL, PH_USAGE, PH_DONE_MARK, PH_END };

struct oai_gen {
    struct oai_model *om;
    bool chat, stream, include_usage;
    char id[48];
    int64_t created;
    int n_prompt;
    struct engine_request *req;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sbuf text;    /* not streaming: the answer; streaming: text not yet sent */
    /* log-probabilities: n_logprobs alternatives per token (-1: none asked);
     * chat: the entries of choices[].logprobs.content not yet sent;
     * completions: the legacy object's four lists */
    int n_logprobs;
    json_t *lp_content;
    json_t *lp_tokens, *lp_values, *lp_top, *lp_offsets;
    size_t text_total;   /* bytes of answer text so far (text_offset) */
    bool done;
    struct engine_result res;
    bool timed_out;
    double t_start, t_first, t_last, deadline;
    int n_tokens;

    /* streaming (the connection's thread) */
    enum stream_phase phase;
    struct sbuf sse;
    size_t sse_off;
};

static void set_error(struct oai_error *e, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(struct oai_error *e, const char *type, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
}

#define BAD(...) (set_error(e, "invalid_request_error", "invalid_value", __VA_ARGS__), 400)

/* An optional number field within [lo, hi]; 400 otherwise. */
static int get_number(const json_t *req, const char *name, double lo, double hi, double *out, struct oai_error *e)
{
    const json_t *v = json_object_get(req, name);
    if (!v || json_is_null(v))
        return 200;
    if (!json_is_number(v))
        return BAD("'%s' must be a number", name);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return BAD("'%s' must be between %g and %g, not %g", name, lo, hi, x);
    *out = x;
    return 200;
}

static int get_int(const json_t *req, const char *name, long long lo, long long hi, long long *out, struct oai_error *e)
{
    const json_t *v = json_object_get(req, name);
    if (!v || json_is_null(v))
        return 200;
    if (!json_is_integer(v))
        return BAD("'%s' must be an integer", name);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return BAD("'%s' must be between %lld and %lld, not %lld", name, lo, hi, x);
    *out = x;
    return 200;
}

static int get_bool(const json_t *req, const char *name, bool *out, struct oai_error *e)
{
    const json_t *v = json_object_get(req, name);
    if (!v || json_is_null(v))
        return 200;
    if (!json_is_boolean(v))
        return BAD("'%s' must be true or false", name);
    *out = json_is_true(v);
    return 200;
}

/* The stop sequences: a string or up to ENGINE_MAX_STOPS strings (they
 * point into req, which outlives the submission that copies them). */
static int get_stops(const json_t *req, struct engine_request_params *rp, struct oai_error *e)
{
    rp->n_stop = 0;
    const json_t *v = json_object_get(req, "stop");
    if (!v || json_is_null(v))
        return 200;
    if (json_is_string(v)) {
        rp->stop[rp->n_stop++] = json_string_value(v);
        return 200;
    }
    if (!json_is_array(v) || json_array_size(v) > ENGINE_MAX_STOPS)
        return BAD("'stop' must be a string or an array of at most %d strings", ENGINE_MAX_STOPS);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        if (!json_is_string(s))
            return BAD("'stop' must be a string or an array of at most %d strings", ENGINE_MAX_STOPS);
        rp->stop[rp->n_stop++] = json_string_value(s);
    }
    return 200;
}

/* Fields plumb does not honour yet are refused, never ignored. */
static int refuse_unsupported(const json_t *req, struct oai_error *e)
{
    static const char *const fields[] = {"tools", "tool_choice", "functions", "function_call", "logit_bias",
                                         "parallel_tool_calls", "audio", "modalities", "prediction"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const json_t *v = json_object_get(req, fields[i]);
        if (v && !json_is_null(v))
            return BAD("'%s' is not supported by this server yet", fields[i]);
    }
    return 200;
}

/* logprobs: chat takes "logprobs": true and "top_logprobs": 0..20;
 * completions take "logprobs": 0..20 (the legacy shape). *n is -1 when
 * none are asked, else the alternatives per token. */
static int read_logprobs(const json_t *req, bool chat, int *n, struct oai_error *e)
{
    *n = -1;
    long long top = -1;
    if (chat) {
        bool want = false;
        int st = get_bool(req, "logprobs", &want, e);
        if (st != 200)
            return st;
        if ((st = get_int(req, "top_logprobs", 0, 20, &top, e)) != 200)
            return st;
        if (top >= 0 && !want)
            return BAD("'top_logprobs' needs \"logprobs\": true");
        if (want)
            *n = top >= 0 ? (int)top : 0;
        return 200;
    }
    const json_t *v = json_object_get(req, "logprobs");
    if (!v || json_is_null(v))
        return 200;
    if (json_is_boolean(v))
        return BAD("'logprobs' of a completion is the number of alternatives (0 to 20)");
    int st = get_int(req, "logprobs", 0, 20, &top, e);
    if (st == 200)
        *n = (int)top;
    return st;
}

/* The sampling and length fields every generation request has. */
static int read_common(const json_t *req, struct engine_request_params *rp, bool chat, struct oai_error *e)
{
    struct sampler_params *sp = &rp->sampling;
    *sp = sampler_defaults();
    /* the OpenAI API's defaults: temperature 1, top_p 1, no other filter */
    sp->temp = 1.0f;
    sp->top_k = 0;
    sp->top_p = 1.0f;
    sp->min_p = 0;
    static atomic_uint_fast64_t counter;
    sp->seed = (uint64_t)(sys_now() * 1e9) ^ (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull);
    double temp = 1, top_p = 1, min_p = 0, pp = 0, fp = 0, rep = 1;
    long long top_k = 0, seed = 0, n = 1;
    int st;
    if ((st = get_number(req, "temperature", 0, 2, &temp, e)) != 200 ||
        (st = get_number(req, "top_p", 0, 1, &top_p, e)) != 200 ||
        (st = get_number(req, "min_p", 0, 1, &min_p, e)) != 200 ||
        (st = get_number(req, "presence_penalty", -2, 2, &pp, e)) != 200 ||
        (st = get_number(req, "frequency_penalty", -2, 2, &fp, e)) != 200 ||
        (st = get_number(req, "repeat_penalty", 0.01, 10, &rep, e)) != 200 ||
        (st = get_int(req, "top_k", 0, 1 << 30, &top_k, e)) != 200 ||
        (st = get_int(req, "n", 1, 1, &n, e)) != 200 || (st = get_bool(req, "ignore_eos", &rp->ignore_eog, e)) != 200)
        return st;
    const json_t *sv = json_object_get(req, "seed");
    if (sv && !json_is_null(sv)) {
        if (!json_is_integer(sv))
            return BAD("'seed' must be an integer");
        seed = json_integer_value(sv);
        sp->seed = (uint64_t)seed;
    }
    sp->temp = (float)temp;
    sp->top_p = top_p <= 0 ? 1e-6f : (float)top_p; /* top_p 0: only the most likely token */
    sp->min_p = (float)min_p;
    sp->presence_penalty = (float)pp;
    sp->frequency_penalty = (float)fp;
    sp->repeat_penalty = (float)rep;
    sp->top_k = (int32_t)top_k;

    long long max_tokens = -1;
    if ((st = get_int(req, "max_tokens", 1, 1 << 30, &max_tokens, e)) != 200)
        return st;
    if (chat && (st = get_int(req, "max_completion_tokens", 1, 1 << 30, &max_tokens, e)) != 200)
        return st;
    rp->n_predict = (int)max_tokens;

    const json_t *rf = json_object_get(req, "response_format");
    if (rf && !json_is_null(rf)) {
        const json_t *t = json_object_get(rf, "type");
        const char *type = json_is_string(t) ? json_string_value(t) : NULL;
        if (!json_is_object(rf) || !type)
            return BAD("'response_format' must be an object with a 'type'");
        if (!strcmp(type, "json_object"))
            rp->json_object = true;
        else if (strcmp(type, "text") != 0)
            return BAD("response_format type '%s' is not supported (text, json_object)", type);
    }
    return 200;
}

/* The text of a message's content: a string, or an array of text parts. */
static int content_text(const json_t *content, struct sbuf *out, struct oai_error *e)
{
    if (json_is_string(content))
        return sbuf_add(out, json_string_value(content), json_string_length(content)) ? 500 : 200;
    if (json_is_null(content))
        return 200;
    if (!json_is_array(content))
        return BAD("a message's 'content' must be a string or an array of text parts");
    for (size_t i = 0; i < json_array_size(content); i++) {
        const json_t *part = json_array_get(content, i), *type = json_object_get(part, "type"),
                     *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return BAD("only text content parts are supported");
        if (sbuf_add(out, json_string_value(text), json_string_length(text)))
            return 500;
    }
    return 200;
}

/* messages -> the template's [{role, content}] with string contents. */
static int read_messages(const json_t *req, json_t **out, struct oai_error *e)
{
    const json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return BAD("'messages' must be a non-empty array");
    json_t *list = json_array();
    int st = 200;
    for (size_t i = 0; i < json_array_size(msgs) && st == 200; i++) {
        const json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role");
        const char *r = json_is_string(role) ? json_string_value(role) : NULL;
        if (!json_is_object(m) || !r) {
            st = BAD("messages[%zu] must be an object with a 'role'", i);
            break;
        }
        if (!strcmp(r, "developer"))
            r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
            st = BAD("messages[%zu]: role '%s' is not supported (system, developer, user, assistant)", i, r);
            break;
        }
        struct sbuf text = {0};
        if ((st = content_text(json_object_get(m, "content"), &text, e)) == 200) {
            json_t *c = pb_json_text(text.data ? text.data : "", text.len);
            json_array_append_new(list, json_pack("{s:s, s:o}", "role", r, "content", c));
        } else if (st == 400) {
            char msg[sizeof e->message];
            snprintf(msg, sizeof msg, "%s", e->message);
            set_error(e, "invalid_request_error", "invalid_value", "messages[%zu]: %s", i, msg);
        }
        sbuf_free(&text);
    }
    if (st != 200) {
        json_decref(list);
        return st;
    }
    *out = list;
    return 200;
}

/* The completion's prompt: a string, one string in an array, or token ids
 * below n_vocab. A string is left in r->prompt (pointing into the body)
 * for the submission to tokenize. */
static int read_prompt(const json_t *req, int32_t n_vocab, struct oai_request *r, struct oai_error *e)
{
    const json_t *p = json_object_get(req, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->prompt = json_string_value(p);
        r->prompt_len = json_string_length(p);
        return 200;
    }
    if (json_is_array(p) && json_array_size(p) > 0) {
        size_t k = json_array_size(p);
        int32_t *v = malloc(k * sizeof *v);
        if (!v)
            return 500;
        for (size_t i = 0; i < k; i++) {
            const json_t *t = json_array_get(p, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab) {
                free(v);
                return BAD("'prompt' must be a string, or an array of token ids below %" PRId32, n_vocab);
            }
            v[i] = (int32_t)json_integer_value(t);
        }
        r->ids = v;
        r->n_ids = k;
        return 200;
    }
    return BAD("'prompt' must be a string or an array of token ids (one prompt per request)");
}

/* The bytes of token id as a JSON array of numbers (OpenAI's "bytes"). */
static json_t *bytes_json(const char *p, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

/* log(sum(exp(logits))), in double, stable. */
static double log_sum_exp(const float *logits, int32_t n)
{
    float max = logits[0];
    for (int32_t i = 1; i < n; i++)
        max = logits[i] > max ? logits[i] : max;
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)logits[i] - max);
    return max + log(sum);
}

/* A token's text for the API: its bytes (as decoded), and a string of
 * them with any invalid UTF-8 replaced. */
static size_t token_bytes(const struct oai_gen *g, int32_t id, char *buf, size_t size)
{
    size_t n = tok_piece(engine_tokenizer(g->om->e), id, false, buf, size);
    return n < size ? n : size;
}

/* Records the step's log-probabilities (engine's thread, under g->mu). */
static void record_logprobs(struct oai_gen *g, const struct engine_step *st)
{
    const double lse = log_sum_exp(st->logits, st->n_vocab);
    char buf[256];
    size_t n = token_bytes(g, st->id, buf, sizeof buf);
    const double lp = (double)st->logits[st->id] - lse;
    if (g->lp_content) {
        json_t *top = json_array();
        for (int k = 0; k < st->n_top; k++) {
            char tb[256];
            size_t tn = token_bytes(g, st->top_ids[k], tb, sizeof tb);
            json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", pb_json_text(tb, tn), "logprob",
                                                 (double)st->top_logits[k] - lse, "bytes", bytes_json(tb, tn)));
        }
        json_array_append_new(g->lp_content, json_pack("{s:o, s:f, s:o, s:o}", "token", pb_json_text(buf, n),
                                                       "logprob", lp, "bytes", bytes_json(buf, n), "top_logprobs",
                                                       top));
        return;
    }
    json_t *top = json_object();
    for (int k = 0; k < st->n_top; k++) {
        char tb[256], key[300];
        size_t tn = token_bytes(g, st->top_ids[k], tb, sizeof tb);
        json_t *ks = pb_json_text(tb, tn);
        snprintf(key, sizeof key, "%s", json_string_value(ks));
        json_decref(ks);
        if (!json_object_get(top, key)) /* two tokens with one text: the likelier */
            json_object_set_new(top, key, json_real((double)st->top_logits[k] - lse));
    }
    json_array_append_new(g->lp_tokens, pb_json_text(buf, n));
    json_array_append_new(g->lp_values, json_real(lp));
    json_array_append_new(g->lp_top, top);
    json_array_append_new(g->lp_offsets, json_integer((json_int_t)g->text_total));
    g->text_total += n;
}

static int on_step(void *user, const struct engine_step *st)
{
    struct oai_gen *g = user;
    const double now = sys_now();
    pthread_mutex_lock(&g->mu);
    if (g->n_logprobs >= 0 && st->logits)
        record_logprobs(g, st);
    if (g->n_tokens++ == 0)
        g->t_first = now;
    else if (g->om->on_itl)
        g->om->on_itl(g->om->on_itl_user, now - g->t_last);
    g->t_last = now;
    bool stop = sbuf_add(&g->text, st->text, st->text_len) != PB_OK;
    if (now > g->deadline) {
        g->timed_out = true;
        stop = true;
    }
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return stop;
}

static void on_done(void *user, const struct engine_result *r)
{
    struct oai_gen *g = user;
    pthread_mutex_lock(&g->mu);
    sbuf_add(&g->text, r->tail, r->tail_len);
    g->res = *r;
    g->res.tail = NULL;
    g->done = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void make_id(char *out, size_t size, const char *prefix)
{
    static atomic_uint_fast64_t counter;
    uint64_t x = (uint64_t)(sys_now() * 1e6) * 6364136223846793005ull + atomic_fetch_add(&counter, 1);
    x ^= x >> 29;
    snprintf(out, size, "%s%016" PRIx64, prefix, (uint64_t)(x * 0xBF58476D1CE4E5B9ull));
}

void oai_request_free(struct oai_request *r)
{
    json_decref(r->messages);
    free(r->ids);
    json_decref(r->body);
    memset(r, 0, sizeof *r);
}

int oai_request_read(const char *model_id, int32_t n_vocab, bool chat, const char *body, size_t len,
                     struct oai_request *r, struct oai_error *e)
{
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->rp = engine_request_defaults();
    r->n_logprobs = -1;
    json_error_t je;
    json_t *req = r->body = json_loadb(body ? body : "", len, 0, &je);
    if (!req)
        return BAD("the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    int st = 200;
    if (!json_is_object(req)) {
        st = BAD("the body must be a JSON object");
        goto done;
    }
    const json_t *model = json_object_get(req, "model");
    if (model && !json_is_null(model) && (!json_is_string(model) || strcmp(json_string_value(model), model_id) != 0)) {
        if (json_is_string(model))
            set_error(e, "invalid_request_error", "model_not_found",
                      "the model '%s' does not exist (this server serves '%s')", json_string_value(model), model_id);
        else
            set_error(e, "invalid_request_error", "invalid_value", "'model' must be a string");
        st = json_is_string(model) ? 404 : 400;
        goto done;
    }
    if ((st = read_common(req, &r->rp, chat, e)) != 200 || (st = get_stops(req, &r->rp, e)) != 200)
        goto done;
    if ((st = get_bool(req, "stream", &r->stream, e)) != 200)
        goto done;
    const json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so) || (st = get_bool(so, "include_usage", &r->include_usage, e)) != 200) {
            st = BAD("'stream_options' must be an object like {\"include_usage\": true}");
            goto done;
        }
    }
    if ((st = refuse_unsupported(req, e)) != 200 || (st = read_logprobs(req, chat, &r->n_logprobs, e)) != 200)
        goto done;
    if (r->n_logprobs >= 0) {
        r->rp.want_logits = true;
        r->rp.n_top = r->n_logprobs > 0 ? r->n_logprobs : 0;
    }
    if (!chat) {
        bool echo = false;
        if ((st = get_bool(req, "echo", &echo, e)) != 200)
            goto done;
        if (echo) {
            st = BAD("'echo' is not supported");
            goto done;
        }
        st = read_prompt(req, n_vocab, r, e);
    } else {
        st = read_messages(req, &r->messages, e);
    }
done:
    if (st != 200)
        oai_request_free(r);
    return st;
}

int oai_gen_start(struct oai_model *om, bool chat, const char *body, size_t len, int max_tokens_cap, double timeout_s,
                  struct oai_gen **out, struct oai_error *e)
{
    *out = NULL;
    struct oai_request r;
    const struct tokenizer *tok = engine_tokenizer(om->e);
    int st = oai_request_read(om->id, tok_n_vocab(tok), chat, body, len, &r, e);
    if (st != 200)
        return st;
    struct engine_request_params rp = r.rp;
    int32_t *ids = r.ids;
    size_t n_ids = r.n_ids;
    struct oai_gen *g = NULL;
    pb_err err;
    r.ids = NULL; /* ours from here */
    if (chat) {
        if (engine_chat_prompt(om->e, r.messages, &ids, &n_ids, &err)) {
            st = BAD("the messages cannot be rendered with the chat template: %s", err.msg);
            goto done;
        }
    } else if (r.prompt) {
        if (tok_encode(tok, r.prompt, r.prompt_len, true, false, &ids, &n_ids, &err)) {
            st = BAD("the prompt cannot be tokenized: %s", err.msg);
            goto done;
        }
    }
    /* the answer's length: what was asked, within the cap and the context
     * (a prompt that leaves no room is the engine's to refuse) */
    int64_t room = om->n_ctx - (int64_t)n_ids;
    if (max_tokens_cap > 0 && room > max_tokens_cap)
        room = max_tokens_cap;
    if (room > 0 && (rp.n_predict < 0 || rp.n_predict > room))
        rp.n_predict = (int)room;

    if (!(g = calloc(1, sizeof *g))) {
        st = 500;
        set_error(e, "server_error", NULL, "out of memory");
        goto done;
    }
    g->om = om;
    g->chat = chat;
    g->n_logprobs = r.n_logprobs;
    if (r.n_logprobs >= 0 && chat) {
        g->lp_content = json_array();
    } else if (r.n_logprobs >= 0) {
        g->lp_tokens = json_array();
        g->lp_values = json_array();
        g->lp_top = json_array();
        g->lp_offsets = json_array();
    }
    g->stream = r.stream;
    g->include_usage = r.include_usage;
    g->created = (int64_t)time(NULL);
    g->n_prompt = (int)n_ids;
    g->t_start = sys_now();
    g->deadline = g->t_start + timeout_s;
    make_id(g->id, sizeof g->id, chat ? "chatcmpl-" : "cmpl-");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    const struct engine_events ev = {g, on_step, on_done};
    switch (engine_submit(om->e, ids, n_ids, &rp, &ev, &g->req, &err)) {
    case PB_OK: break;
    case PB_EBUSY:
        set_error(e, "server_error", "server_busy", "%s; retry later", err.msg);
        st = 503;
        goto done;
    case PB_ESTOPPING:
        set_error(e, "server_error", "draining", "%s", err.msg);
        st = 503;
        goto done;
    case PB_ETOOLONG:
        set_error(e, "invalid_request_error", "context_length_exceeded", "%s", err.msg);
        st = 400;
        goto done;
    case PB_EINVAL: st = BAD("%s", err.msg); goto done;
    default:
        set_error(e, "server_error", NULL, "%s", err.msg);
        st = 500;
        goto done;
    }
    *out = g;
    g = NULL;
done:
    if (g)
        oai_gen_free(g);
    free(ids);
    oai_request_free(&r); /* after the submission, which copied the stop strings */
    return st;
}

bool oai_gen_streaming(const struct oai_gen *g)
{
    return g->stream;
}

bool oai_gen_wait(struct oai_gen *g, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (long long)(seconds * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&g->mu);
    while (!g->done)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT)
            break;
    bool d = g->done;
    pthread_mutex_unlock(&g->mu);
    return d;
}

void oai_gen_cancel(struct oai_gen *g)
{
    if (g->req)
        engine_cancel(g->om->e, g->req);
}

/* finish_reason of an ended answer (under g->mu). */
static const char *finish_reason(const struct oai_gen *g)
{
    if (!g->done)
        return "running";
    if (g->timed_out)
        return "length";
    switch (g->res.finish) {
    case ENGINE_FINISH_EOG:
    case ENGINE_FINISH_STOP:
    case ENGINE_FINISH_CALLER: return "stop";
    case ENGINE_FINISH_LENGTH:
    case ENGINE_FINISH_CONTEXT: return "length";
    case ENGINE_FINISH_CANCELLED: return "cancelled";
    case ENGINE_FINISH_ERROR: break;
    }
    return "error";
}

static json_t *usage_of(const struct oai_gen *g)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", g->n_prompt, "completion_tokens", g->res.n_gen,
                     "total_tokens", g->n_prompt + g->res.n_gen, "prompt_tokens_details", "cached_tokens",
                     g->res.n_reused);
}

/* The log-probabilities gathered since the last call as the choice's
 * "logprobs" value (null when none were asked), and a fresh start (under
 * g->mu). */
static json_t *take_logprobs(struct oai_gen *g)
{
    if (g->n_logprobs < 0)
        return json_null();
    json_t *o;
    if (g->chat) {
        o = json_pack("{s:o, s:n}", "content", g->lp_content, "refusal");
        g->lp_content = json_array();
    } else {
        o = json_pack("{s:o, s:o, s:o, s:o}", "tokens", g->lp_tokens, "token_logprobs", g->lp_values, "top_logprobs",
                      g->lp_top, "text_offset", g->lp_offsets);
        g->lp_tokens = json_array();
        g->lp_values = json_array();
        g->lp_top = json_array();
        g->lp_offsets = json_array();
    }
    return o;
}

int oai_gen_result(struct oai_gen *g, json_t **body, struct oai_error *e)
{
    pthread_mutex_lock(&g->mu);
    int st = 200;
    const char *fr = finish_reason(g);
    if (g->res.finish == ENGINE_FINISH_ERROR) {
        set_error(e, "server_error", NULL, "generation failed: %s", g->res.error);
        st = 500;
    } else if (g->res.finish == ENGINE_FINISH_CANCELLED && !g->timed_out) {
        set_error(e, "server_error", "cancelled", "the request was cancelled");
        st = 503;
    } else {
        json_t *text = pb_json_text(g->text.data ? g->text.data : "", g->text.len);
        json_t *choice = g->chat ? json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:s}", "index", 0, "message", "role",
                                             "assistant", "content", text, "refusal", "logprobs", take_logprobs(g),
                                             "finish_reason", fr)
                                 : json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "text", text, "logprobs",
                                             take_logprobs(g), "finish_reason", fr);
        *body = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", g->id, "object",
                          g->chat ? "chat.completion" : "text_completion", "created", (json_int_t)g->created, "model",
                          g->om->id, "choices", choice, "usage", usage_of(g));
        if (!*body) {
            set_error(e, "server_error", NULL, "out of memory");
            st = 500;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

/* One SSE event with a chunk of the answer (text may be NULL). */
static int add_chunk(struct oai_gen *g, const char *text, size_t len, const char *finish, bool with_choice)
{
    json_t *choices = json_array();
    if (with_choice) {
        json_t *c;
        if (g->chat) {
            json_t *delta = json_object();
            if (g->phase == PH_FIRST)
                json_object_set_new(delta, "role", json_string("assistant"));
            if (text)
                json_object_set_new(delta, "content", pb_json_text(text, len));
            else if (g->phase == PH_FIRST)
                json_object_set_new(delta, "content", json_string(""));
            c = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs", take_logprobs(g),
                          "finish_reason", finish ? json_string(finish) : json_null());
        } else {
            c = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "text", pb_json_text(text ? text : "", len),
                          "logprobs", take_logprobs(g), "finish_reason", finish ? json_string(finish) : json_null());
        }
        json_array_append_new(choices, c);
    }
    json_t *chunk = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", g->id, "object",
                              g->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)g->created,
                              "model", g->om->id, "choices", choices);
    if (g->include_usage)
        json_object_set_new(chunk, "usage", with_choice ? json_null() : usage_of(g));
    char *s = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (!s)
        return PB_ENOMEM;
    int rc = sbuf_add(&g->sse, "data: ", 6) || sbuf_add(&g->sse, s, strlen(s)) || sbuf_add(&g->sse, "\n\n", 2);
    free(s);
    return rc ? PB_ENOMEM : PB_OK;
}

/* Moves what the answer has into SSE events (under g->mu). */
static void advance_stream(struct oai_gen *g)
{
    for (;;) {
        switch (g->phase) {
        case PH_FIRST:
            if (g->chat)
                add_chunk(g, NULL, 0, NULL, true);
            g->phase = PH_TEXT;
            continue;
        case PH_TEXT:
            if (g->text.len) {
                add_chunk(g, g->text.data, g->text.len, NULL, true);
                g->text.len = 0;
            }
            if (!g->done)
                return;
            g->phase = PH_FINAL;
            continue;
        case PH_FINAL:
            if (g->res.finish == ENGINE_FINISH_ERROR) {
                char msg[700];
                snprintf(msg, sizeof msg, "generation failed: %s", g->res.error);
                json_t *err = oai_error(msg, "server_error", NULL);
                char *s = json_dumps(err, JSON_COMPACT);
                json_decref(err);
                if (s) {
                    sbuf_add(&g->sse, "data: ", 6);
                    sbuf_add(&g->sse, s, strlen(s));
                    sbuf_add(&g->sse, "\n\n", 2);
                    free(s);
                }
            } else {
                add_chunk(g, NULL, 0, finish_reason(g), true);
            }
            g->phase = g->include_usage ? PH_USAGE : PH_DONE_MARK;
            continue;
        case PH_USAGE:
            add_chunk(g, NULL, 0, NULL, false);
            g->phase = PH_DONE_MARK;
            continue;
        case PH_DONE_MARK:
            sbuf_add(&g->sse, "data: [DONE]\n\n", 14);
            g->phase = PH_END;
            return;
        case PH_END: return;
        }
    }
}

ssize_t oai_stream_read(struct oai_gen *g, char *buf, size_t max, double wait_s)
{
    pthread_mutex_lock(&g->mu);
    if (g->sse_off == g->sse.len) {
        g->sse.len = g->sse_off = 0;
        advance_stream(g);
        if (g->sse.len == 0 && g->phase != PH_END) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long long ns = ts.tv_nsec + (long long)(wait_s * 1e9);
            ts.tv_sec += (time_t)(ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
            advance_stream(g);
        }
    }
    size_t n = g->sse.len - g->sse_off;
    if (n == 0) {
        bool end = g->phase == PH_END;
        pthread_mutex_unlock(&g->mu);
        return end ? OAI_STREAM_END : 0;
    }
    if (n > max)
        n = max;
    memcpy(buf, g->sse.data + g->sse_off, n);
    g->sse_off += n;
    pthread_mutex_unlock(&g->mu);
    return (ssize_t)n;
}

void oai_gen_info(struct oai_gen *g, struct oai_gen_info *info)
{
    pthread_mutex_lock(&g->mu);
    info->n_prompt = g->n_prompt;
    info->n_gen = g->res.n_gen > g->n_tokens ? g->res.n_gen : g->n_tokens;
    info->n_reused = g->res.n_reused;
    info->ttft = g->n_tokens ? g->t_first - g->t_start : 0;
    info->finish = finish_reason(g);
    pthread_mutex_unlock(&g->mu);
}

void oai_gen_free(struct oai_gen *g)
{
    if (!g)
        return;
    if (g->req) {
        engine_cancel(g->om->e, g->req);
        /* the engine may still call back: wait for its done event */
        while (!oai_gen_wait(g, 1.0)) {
        }
        engine_release(g->om->e, g->req);
    }
    sbuf_free(&g->text);
    sbuf_free(&g->sse);
    json_decref(g->lp_content);
    json_decref(g->lp_tokens);
    json_decref(g->lp_values);
    json_decref(g->lp_top);
    json_decref(g->lp_offsets);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
