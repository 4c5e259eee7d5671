#define _POSIX_C_SOURCE 200809L
/* OpenAI request and response shapes over the engine (oai.h). */
#include "server/oai.h"

#include "base/sbuf.h"
#include "base/sys.h"
#include "base/units.h"
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

void oai_model_id(const char *path, const char *alias, char *out, size_t size)
{
    if (alias && *alias) {
        snprintf(out, size, "%s", alias);
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    snprintf(out, size, "%.*s", (int)n, base);
}

json_t *oai_model_object(const struct oai_model *om)
{
    /* what it can do: an encoder only embeds; a decoder chats, completes,
     * calls tools and embeds (pooled states) */
    json_t *caps = engine_is_encoder(om->e) ? json_pack("[s]", "embeddings")
                                            : json_pack("[s,s,s,s]", "chat", "completions", "tools", "embeddings");
    struct engine_info in;
    engine_get_info(om->e, &in);
    return json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:o, s:s}", "id", om->id, "object", "model", "created",
                     (json_int_t)om->created, "owned_by", "plumb", "context_length", (json_int_t)om->n_ctx,
                     "max_model_len", (json_int_t)om->n_ctx, "n_ctx_train", (json_int_t)in.n_ctx_train,
                     "capabilities", caps, "tool_call_format", engine_tool_style(om->e));
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

#define OAI_MAX_CHOICES 16

/* One choice of a request (n of them run as n engine requests). */
struct choice {
    struct oai_gen *g;
    int index;
    struct engine_request *req;
    struct sbuf text;      /* the answer; streaming: text[sent ..] is not yet sent */
    size_t sent;
    struct sbuf reasoning; /* reasoning_content not yet sent */
    /* log-probabilities: chat: the entries of choices[].logprobs.content
     * not yet sent; completions: the legacy object's four lists */
    json_t *lp_content;
    json_t *lp_tokens, *lp_values, *lp_top, *lp_offsets;
    size_t text_total;     /* bytes of answer text so far (text_offset) */
    bool done, final_sent;
    struct engine_result res;
    int n_tokens;
    double t_last;         /* its last token */
    json_t *calls;         /* tool calls read from the answer (at the end) */
    size_t content_len;    /* the text before them */
};

struct oai_gen {
    struct oai_model *om;
    bool chat, stream, include_usage;
    char id[48];
    int64_t created;
    int n_prompt;
    int n;                 /* choices */
    struct choice ch[OAI_MAX_CHOICES];
    int n_logprobs;        /* alternatives per token (-1: none asked) */
    json_t *tools;         /* offered and to be read back from the answers (tool_choice not "none") */
    bool has_keep_alive;   /* the request's keep_alive */
    double keep_alive_s;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_done;
    bool timed_out;
    double t_start, t_first, deadline;
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

/* Fields plumb does not honour are refused, never ignored. */
static int refuse_unsupported(const json_t *req, struct oai_error *e)
{
    static const char *const fields[] = {"functions", "function_call", "audio", "modalities", "prediction"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const json_t *v = json_object_get(req, fields[i]);
        if (v && !json_is_null(v))
            return BAD("'%s' is not supported by this server (use 'tools' and 'tool_choice')", fields[i]);
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

/* response_format (text, json_object, json_schema) and the "grammar"
 * extension into r (the grammar owned by r). */
static int read_format(const json_t *req, struct oai_request *r, struct oai_error *e)
{
    const json_t *rf = json_object_get(req, "response_format"), *gr = json_object_get(req, "grammar");
    pb_err err;
    if (gr && !json_is_null(gr)) {
        if (!json_is_string(gr))
            return BAD("'grammar' must be a string (GBNF)");
        if (rf && !json_is_null(rf))
            return BAD("'grammar' and 'response_format' cannot be used together");
        if (sampler_grammar_check(json_string_value(gr), json_string_length(gr), &err))
            return BAD("'grammar': %s", err.msg);
        if (!(r->grammar = strdup(json_string_value(gr))))
            return 500;
        r->rp.grammar = r->grammar;
        return 200;
    }
    if (!rf || json_is_null(rf))
        return 200;
    const json_t *t = json_object_get(rf, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : NULL;
    if (!json_is_object(rf) || !type)
        return BAD("'response_format' must be an object with a 'type'");
    if (!strcmp(type, "json_object")) {
        r->rp.json_object = true;
        return 200;
    }
    if (!strcmp(type, "text"))
        return 200;
    if (strcmp(type, "json_schema") != 0)
        return BAD("response_format type '%s' is not supported (text, json_object, json_schema)", type);
    const json_t *js = json_object_get(rf, "json_schema"), *schema = json_object_get(js, "schema"),
                 *strict = json_object_get(js, "strict");
    if (!json_is_object(js) || !json_is_string(json_object_get(js, "name")))
        return BAD("response_format json_schema needs 'json_schema': {\"name\": ..., \"schema\": {...}}");
    if (strict && !json_is_null(strict) && !json_is_boolean(strict))
        return BAD("response_format json_schema 'strict' must be true or false");
    if (!schema || json_is_null(schema)) {
        r->rp.json_object = true; /* no schema: any JSON object */
        return 200;
    }
    if (sampler_schema_grammar(schema, &r->grammar, &err))
        return err.code == PB_ENOMEM ? 500 : BAD("response_format json_schema: %s", err.msg);
    r->rp.grammar = r->grammar;
    return 200;
}

/* logit_bias: {"token id": bias in [-100, 100], ...} */
static int read_logit_bias(const json_t *req, int32_t n_vocab, struct oai_request *r, struct oai_error *e)
{
    const json_t *lb = json_object_get(req, "logit_bias");
    if (!lb || json_is_null(lb))
        return 200;
    if (!json_is_object(lb))
        return BAD("'logit_bias' must be an object of token ids and biases");
    if (json_object_size(lb) > ENGINE_MAX_LOGIT_BIAS)
        return BAD("'logit_bias' has more than %d entries", ENGINE_MAX_LOGIT_BIAS);
    if (json_object_size(lb) == 0)
        return 200;
    if (!(r->bias = calloc(json_object_size(lb), sizeof *r->bias)))
        return 500;
    const char *k;
    const json_t *v;
    int n = 0;
    json_object_foreach((json_t *)lb, k, v)
    {
        char *end;
        long id = strtol(k, &end, 10);
        if (!*k || *end || id < 0 || id >= n_vocab)
            return BAD("logit_bias: '%.40s' is not a token id below %" PRId32, k, n_vocab);
        if (!json_is_number(v) || !(json_number_value(v) >= -100 && json_number_value(v) <= 100))
            return BAD("logit_bias: the bias of token %ld must be a number from -100 to 100", id);
        r->bias[n++] = (struct engine_logit_bias){(int32_t)id, (float)json_number_value(v)};
    }
    r->rp.logit_bias = r->bias;
    r->rp.n_logit_bias = n;
    return 200;
}

/* A seed for a request that names none. */
static uint64_t fresh_seed(void)
{
    static atomic_uint_fast64_t counter;
    return (uint64_t)(sys_now() * 1e9) ^ (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull);
}

/* The sampling and length fields every generation request has. */
static int read_common(const json_t *req, struct oai_request *r, bool chat, int32_t n_vocab, struct oai_error *e)
{
    struct engine_request_params *rp = &r->rp;
    struct sampler_params *sp = &rp->sampling;
    *sp = sampler_defaults();
    /* the OpenAI API's defaults: temperature 1, top_p 1, no other filter */
    sp->temp = 1.0f;
    sp->top_k = 0;
    sp->top_p = 1.0f;
    sp->min_p = 0;
    sp->seed = fresh_seed();
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
        (st = get_int(req, "n", 1, OAI_MAX_CHOICES, &n, e)) != 200 ||
        (st = get_bool(req, "ignore_eos", &rp->ignore_eog, e)) != 200)
        return st;
    r->n = (int)n;
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
    if ((st = read_format(req, r, e)) != 200)
        return st;
    return read_logit_bias(req, n_vocab, r, e);
}

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


/* A function name as OpenAI allows them: 1-64 of [a-zA-Z0-9_-]. */
static bool good_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* An assistant message's tool_calls, checked, as the template gets them. */
static int read_calls(const json_t *calls, size_t i, json_t **out, struct oai_error *e)
{
    if (!json_is_array(calls))
        return BAD("messages[%zu].tool_calls must be an array", i);
    json_t *list = json_array();
    for (size_t k = 0; k < json_array_size(calls); k++) {
        const json_t *c = json_array_get(calls, k), *fn = json_object_get(c, "function"),
                     *id = json_object_get(c, "id");
        const char *name = json_string_value(json_object_get(fn, "name"));
        const json_t *args = json_object_get(fn, "arguments");
        if (!json_is_object(c) || !json_is_object(fn) || !good_name(name) || !(json_is_string(args) || json_is_object(args))) {
            json_decref(list);
            return BAD("messages[%zu].tool_calls[%zu] must be {\"id\", \"type\": \"function\", \"function\": "
                       "{\"name\", \"arguments\"}}", i, k);
        }
        json_array_append_new(list, json_pack("{s:O?, s:s, s:{s:s, s:O}}", "id", json_is_string(id) ? id : NULL,
                                              "type", "function", "function", "name", name, "arguments", args));
    }
    *out = list;
    return 200;
}

/* messages -> the template's [{role, content}] with string contents, and
 * assistant tool_calls and tool results as the templates take them. */
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
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
            st = BAD("messages[%zu]: role '%s' is not supported (system, developer, user, assistant, tool)", i, r);
            break;
        }
        struct sbuf text = {0};
        if ((st = content_text(json_object_get(m, "content"), &text, e)) == 200) {
            json_t *c = pb_json_text(text.data ? text.data : "", text.len);
            json_t *o = json_pack("{s:s, s:o}", "role", r, "content", c);
            const json_t *calls = json_object_get(m, "tool_calls");
            if (!strcmp(r, "assistant") && calls && !json_is_null(calls)) {
                json_t *list2 = NULL;
                if ((st = read_calls(calls, i, &list2, e)) == 200)
                    json_object_set_new(o, "tool_calls", list2);
            } else if (!strcmp(r, "tool")) {
                const json_t *id = json_object_get(m, "tool_call_id"), *name = json_object_get(m, "name");
                if (!json_is_string(id))
                    st = BAD("messages[%zu]: a tool message needs its 'tool_call_id'", i);
                else
                    json_object_set(o, "tool_call_id", (json_t *)id);
                if (json_is_string(name))
                    json_object_set(o, "name", (json_t *)name);
            }
            json_array_append_new(list, o);
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

/* tools, tool_choice and parallel_tool_calls (chat). */
static int read_tools(const json_t *req, struct oai_request *r, struct oai_error *e)
{
    const json_t *tools = json_object_get(req, "tools"), *choice = json_object_get(req, "tool_choice");
    int st = get_bool(req, "parallel_tool_calls", &r->parallel_tool_calls, e);
    if (st != 200)
        return st;
    r->tool_choice = OAI_TOOLS_NONE;
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return BAD("'tools' must be an array of {\"type\": \"function\", \"function\": {...}}");
        if (json_array_size(tools) > 128)
            return BAD("more than 128 tools");
        for (size_t i = 0; i < json_array_size(tools); i++) {
            const json_t *t = json_array_get(tools, i), *fn = json_object_get(t, "function");
            const json_t *type = json_object_get(t, "type"), *params = json_object_get(fn, "parameters");
            const char *name = json_string_value(json_object_get(fn, "name"));
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") || !json_is_object(fn))
                return BAD("tools[%zu] must be {\"type\": \"function\", \"function\": {\"name\", \"parameters\"}}", i);
            if (!good_name(name))
                return BAD("tools[%zu].function.name must be 1 to 64 letters, digits, _ or -", i);
            for (size_t k = 0; k < i; k++)
                if (!strcmp(name, json_string_value(json_object_get(json_object_get(json_array_get(tools, k),
                                                                                      "function"), "name"))))
                    return BAD("two tools are called '%s'", name);
            if (params && !json_is_null(params)) { /* the schema must be one plumb can follow */
                char *g;
                pb_err err;
                if (sampler_schema_grammar(params, &g, &err))
                    return BAD("tools[%zu] ('%s') parameters: %s", i, name, err.msg);
                free(g);
            }
        }
        if (json_array_size(tools))
            r->tools = (json_t *)tools;
        r->tool_choice = r->tools ? OAI_TOOLS_AUTO : OAI_TOOLS_NONE;
    }
    if (!choice || json_is_null(choice))
        return 200;
    if (json_is_string(choice)) {
        const char *c = json_string_value(choice);
        if (!strcmp(c, "none"))
            r->tool_choice = OAI_TOOLS_NONE;
        else if (!strcmp(c, "auto"))
            r->tool_choice = r->tools ? OAI_TOOLS_AUTO : OAI_TOOLS_NONE;
        else if (!strcmp(c, "required"))
            r->tool_choice = OAI_TOOLS_REQUIRED;
        else
            return BAD("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                       "\"function\": {\"name\"}}");
    } else {
        const char *name = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
        if (!json_is_object(choice) || !name)
            return BAD("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                       "\"function\": {\"name\"}}");
        r->tool_choice = OAI_TOOLS_NAMED;
        r->tool_name = name;
        bool found = false;
        for (size_t i = 0; i < json_array_size(r->tools); i++)
            found |= !strcmp(name, json_string_value(json_object_get(json_object_get(json_array_get(r->tools, i),
                                                                                      "function"), "name")));
        if (!found)
            return BAD("tool_choice names '%.64s', which is not among the tools", name);
    }
    if (r->tool_choice >= OAI_TOOLS_REQUIRED && !r->tools)
        return BAD("tool_choice \"required\" or a named function needs 'tools'");
    if (r->tool_choice >= OAI_TOOLS_REQUIRED && r->rp.grammar)
        return BAD("a required tool call and a response_format schema or grammar cannot be used together");
    return 200;
}

static int read_chat_opts(const json_t *req, struct engine_chat_opts *co, bool *split, struct oai_error *e)
{
    memset(co, 0, sizeof *co);
    *split = true;
    const json_t *kw = json_object_get(req, "chat_template_kwargs");
    if (kw && !json_is_null(kw)) {
        if (!json_is_object(kw))
            return BAD("'chat_template_kwargs' must be an object");
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)kw, key, v)
        {
            if (strcmp(key, "enable_thinking") != 0)
                return BAD("chat_template_kwargs.%s is not supported (enable_thinking)", key);
            if (!json_is_boolean(v))
                return BAD("chat_template_kwargs.enable_thinking must be true or false");
            co->no_thinking = json_is_false(v);
        }
    }
    const json_t *eff = json_object_get(req, "reasoning_effort");
    if (eff && !json_is_null(eff)) {
        const char *x = json_string_value(eff);
        if (!x || (strcmp(x, "low") && strcmp(x, "medium") && strcmp(x, "high")))
            return BAD("'reasoning_effort' must be \"low\", \"medium\" or \"high\"");
        co->reasoning_effort = x;
    }
    const json_t *fmt = json_object_get(req, "reasoning_format");
    if (fmt && !json_is_null(fmt)) {
        const char *x = json_string_value(fmt);
        if (!x || (strcmp(x, "none") && strcmp(x, "auto") && strcmp(x, "deepseek")))
            return BAD("'reasoning_format' must be \"auto\", \"deepseek\" or \"none\"");
        *split = strcmp(x, "none") != 0;
    }
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

/* keep_alive, as Ollama takes it: seconds (a number, or a string such as
 * "300"), a duration ("5m", "1h"), 0 to unload the model once the
 * request ends, a negative number or "forever" to keep it loaded. */
static int read_keep_alive(const json_t *req, struct oai_request *r, struct oai_error *e)
{
    const json_t *v = json_object_get(req, "keep_alive");
    if (!v || json_is_null(v))
        return 200;
    double x = 0;
    bool ok;
    if (json_is_number(v)) {
        x = json_number_value(v);
        ok = isfinite(x) && x <= 10.0 * 365 * 86400;
        if (x < 0)
            x = -1;
    } else {
        ok = json_is_string(v) && units_parse_duration(json_string_value(v), &x);
    }
    if (!ok)
        return BAD("'keep_alive' must be seconds or a duration such as \"5m\" or \"1h\" (0: unload after this "
                   "request; negative: keep loaded)");
    r->has_keep_alive = true;
    r->keep_alive_s = x;
    return 200;
}

static bool has_field(const json_t *req, const char *name)
{
    const json_t *v = json_object_get(req, name);
    return v && !json_is_null(v);
}

/* The model's preset over what the request said (oai_request_read). */
static int apply_preset(const json_t *req, const struct server_preset *ps, struct oai_request *r, struct oai_error *e)
{
    (void)e;
    struct engine_request_params *rp = &r->rp;
    struct sampler_params *sp = &rp->sampling;
    const unsigned set = ps->set, fixed = ps->fixed;
    /* the request's own value stands unless the field is fixed; else the
     * preset's, or the API's default for a fixed field without one */
#define OWN(bit, key) (!(fixed & (bit)) && has_field(req, key))
    if (!OWN(SERVER_PRESET_TEMPERATURE, "temperature"))
        sp->temp = set & SERVER_PRESET_TEMPERATURE ? (float)ps->temperature : 1.0f;
    if (!OWN(SERVER_PRESET_TOP_P, "top_p"))
        sp->top_p = !(set & SERVER_PRESET_TOP_P) ? 1.0f : ps->top_p <= 0 ? 1e-6f : (float)ps->top_p;
    if (!OWN(SERVER_PRESET_MIN_P, "min_p"))
        sp->min_p = set & SERVER_PRESET_MIN_P ? (float)ps->min_p : 0.0f;
    if (!OWN(SERVER_PRESET_TOP_K, "top_k"))
        sp->top_k = set & SERVER_PRESET_TOP_K ? ps->top_k : 0;
    if (!OWN(SERVER_PRESET_REPEAT_PENALTY, "repeat_penalty"))
        sp->repeat_penalty = set & SERVER_PRESET_REPEAT_PENALTY ? (float)ps->repeat_penalty : 1.0f;
    if (!OWN(SERVER_PRESET_SEED, "seed") && ((set & SERVER_PRESET_SEED) || has_field(req, "seed")))
        sp->seed = set & SERVER_PRESET_SEED ? (uint64_t)ps->seed : fresh_seed();
    if (!OWN(SERVER_PRESET_STOP, "stop")) {
        rp->n_stop = 0;
        for (int i = 0; (set & SERVER_PRESET_STOP) && i < ps->n_stop && i < ENGINE_MAX_STOPS; i++)
            rp->stop[rp->n_stop++] = ps->stop[i];
    }
    if ((set & SERVER_PRESET_MAX_TOKENS) && ps->max_tokens > 0 &&
        (rp->n_predict < 0 || rp->n_predict > ps->max_tokens))
        rp->n_predict = ps->max_tokens;
    if (!r->chat)
        return 200;
    const json_t *kw = json_object_get(req, "chat_template_kwargs");
    const bool own_thinking = !(fixed & SERVER_PRESET_REASONING) && has_field(kw, "enable_thinking");
    if (!own_thinking)
        r->co.no_thinking = set & SERVER_PRESET_REASONING ? !ps->reasoning : false;
    if ((set | fixed) & SERVER_PRESET_SYSTEM) {
        bool has_system = false;
        for (size_t i = 0; i < json_array_size(r->messages);) {
            const char *role = json_string_value(json_object_get(json_array_get(r->messages, i), "role"));
            if (role && !strcmp(role, "system")) {
                has_system = true;
                if (fixed & SERVER_PRESET_SYSTEM) { /* the preset's (or none) in place of the request's */
                    json_array_remove(r->messages, i);
                    continue;
                }
            }
            i++;
        }
        if ((set & SERVER_PRESET_SYSTEM) && ps->system && ((fixed & SERVER_PRESET_SYSTEM) || !has_system)) {
            json_t *m = json_pack("{s:s, s:o}", "role", "system", "content",
                                  pb_json_text(ps->system, strlen(ps->system)));
            if (!m || json_array_insert_new(r->messages, 0, m))
                return 500;
        }
        if (json_array_size(r->messages) == 0)
            return BAD("'messages' holds only system messages, which this model's preset replaces");
    }
#undef OWN
    return 200;
}

void oai_request_free(struct oai_request *r)
{
    json_decref(r->messages);
    free(r->ids);
    free(r->grammar);
    free(r->bias);
    json_decref(r->body);
    memset(r, 0, sizeof *r);
}

int oai_request_read(const char *model_id, int32_t n_vocab, bool chat, const char *body, size_t len,
                     const struct server_preset *preset, struct oai_request *r, struct oai_error *e)
{
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->rp = engine_request_defaults();
    r->n_logprobs = -1;
    r->n = 1;
    r->parallel_tool_calls = true;
    r->split = true;
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
    if ((st = read_common(req, r, chat, n_vocab, e)) != 200 || (st = get_stops(req, &r->rp, e)) != 200)
        goto done;
    if ((st = get_bool(req, "stream", &r->stream, e)) != 200 || (st = read_keep_alive(req, r, e)) != 200)
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
        static const char *const chat_only[] = {"tools", "tool_choice", "parallel_tool_calls"};
        for (size_t i = 0; i < sizeof chat_only / sizeof chat_only[0]; i++)
            if (json_object_get(req, chat_only[i]) && !json_is_null(json_object_get(req, chat_only[i]))) {
                st = BAD("'%s' belongs to chat completions (/v1/chat/completions)", chat_only[i]);
                goto done;
            }
        st = read_prompt(req, n_vocab, r, e);
    } else if ((st = read_messages(req, &r->messages, e)) == 200 && (st = read_tools(req, r, e)) == 200) {
        st = read_chat_opts(req, &r->co, &r->split, e);
        r->co.tools = r->tools;
    }
    if (st == 200 && preset)
        st = apply_preset(req, preset, r, e);
done:
    if (st != 200)
        oai_request_free(r);
    return st;
}

/* ---- log-probabilities ---- */

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

/* A token's bytes (as decoded). */
static size_t token_bytes(const struct oai_gen *g, int32_t id, char *buf, size_t size)
{
    size_t n = tok_piece(engine_tokenizer(g->om->e), id, false, buf, size);
    return n < size ? n : size;
}

/* Records the step's log-probabilities (engine's thread, under g->mu). */
static void record_logprobs(struct choice *c, const struct engine_step *st)
{
    const struct oai_gen *g = c->g;
    const double lse = log_sum_exp(st->logits, st->n_vocab);
    char buf[256];
    size_t n = token_bytes(g, st->id, buf, sizeof buf);
    const double lp = (double)st->logits[st->id] - lse;
    if (c->lp_content) {
        json_t *top = json_array();
        for (int k = 0; k < st->n_top; k++) {
            char tb[256];
            size_t tn = token_bytes(g, st->top_ids[k], tb, sizeof tb);
            json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", pb_json_text(tb, tn), "logprob",
                                                 (double)st->top_logits[k] - lse, "bytes", bytes_json(tb, tn)));
        }
        json_array_append_new(c->lp_content, json_pack("{s:o, s:f, s:o, s:o}", "token", pb_json_text(buf, n),
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
    json_array_append_new(c->lp_tokens, pb_json_text(buf, n));
    json_array_append_new(c->lp_values, json_real(lp));
    json_array_append_new(c->lp_top, top);
    json_array_append_new(c->lp_offsets, json_integer((json_int_t)c->text_total));
    c->text_total += n;
}

static int on_step(void *user, const struct engine_step *st)
{
    struct choice *c = user;
    struct oai_gen *g = c->g;
    const double now = sys_now();
    pthread_mutex_lock(&g->mu);
    if (g->n_logprobs >= 0 && st->logits)
        record_logprobs(c, st);
    if (g->n_tokens++ == 0)
        g->t_first = now;
    if (g->om->on_itl)
        g->om->on_itl(g->om->on_itl_user, g->om->id, c->n_tokens > 0 ? now - c->t_last : -1);
    c->n_tokens++;
    c->t_last = now;
    bool stop = sbuf_add(&c->text, st->text, st->text_len) != PB_OK ||
                sbuf_add(&c->reasoning, st->reasoning, st->reasoning_len) != PB_OK;
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
    struct choice *c = user;
    struct oai_gen *g = c->g;
    pthread_mutex_lock(&g->mu);
    sbuf_add(&c->text, r->tail, r->tail_len);
    sbuf_add(&c->reasoning, r->tail_reasoning, r->tail_reasoning_len);
    c->res = *r;
    c->res.tail = c->res.tail_reasoning = NULL;
    c->content_len = c->text.len;
    /* the answer read for tool calls (the model's format) */
    if (g->tools && r->finish != ENGINE_FINISH_ERROR && r->finish != ENGINE_FINISH_CANCELLED)
        engine_tool_parse(g->om->e, g->tools, c->text.data ? c->text.data : "", c->text.len, &c->calls,
                          &c->content_len);
    c->done = true;
    g->n_done++;
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

/* The submission's error as the client's. */
static int submit_error(int rc, const pb_err *err, struct oai_error *e)
{
    switch (rc) {
    case PB_EBUSY: set_error(e, "server_error", "server_busy", "%s; retry later", err->msg); return 503;
    case PB_ESTOPPING: set_error(e, "server_error", "draining", "%s", err->msg); return 503;
    case PB_ETOOLONG: set_error(e, "invalid_request_error", "context_length_exceeded", "%s", err->msg); return 400;
    case PB_EINVAL: return BAD("%s", err->msg);
    default: set_error(e, "server_error", NULL, "%s", err->msg); return 500;
    }
}

int oai_gen_start(struct oai_model *om, bool chat, const char *body, size_t len, int max_tokens_cap, double timeout_s,
                  struct oai_gen **out, struct oai_error *e)
{
    *out = NULL;
    struct oai_request r;
    const struct tokenizer *tok = engine_tokenizer(om->e);
    int st = oai_request_read(om->id, tok_n_vocab(tok), chat, body, len, om->preset, &r, e);
    if (st != 200)
        return st;
    struct engine_request_params rp = r.rp;
    int32_t *ids = r.ids;
    size_t n_ids = r.n_ids;
    struct oai_gen *g = NULL;
    char *tool_grammar = NULL;
    pb_err err;
    r.ids = NULL; /* ours from here */
    if (chat) {
        if (engine_chat_prompt(om->e, r.messages, &r.co, &ids, &n_ids, r.split ? &rp.reasoning : NULL, &err)) {
            st = BAD("the messages cannot be rendered with the chat template: %s", err.msg);
            goto done;
        }
        /* a call that must come: the grammar of the model's call format */
        if (r.tool_choice >= OAI_TOOLS_REQUIRED) {
            if (engine_tool_grammar(om->e, r.tools, r.tool_choice == OAI_TOOLS_NAMED ? r.tool_name : NULL,
                                    r.parallel_tool_calls, &tool_grammar, &err)) {
                st = err.code == PB_ENOMEM ? 500 : BAD("tools: %s", err.msg);
                goto done;
            }
            rp.grammar = tool_grammar;
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
    g->n = r.n;
    g->n_logprobs = r.n_logprobs;
    g->stream = r.stream;
    g->include_usage = r.include_usage;
    g->has_keep_alive = r.has_keep_alive;
    g->keep_alive_s = r.keep_alive_s;
    g->created = (int64_t)time(NULL);
    g->n_prompt = (int)n_ids;
    g->t_start = sys_now();
    g->deadline = g->t_start + timeout_s;
    if (r.tool_choice != OAI_TOOLS_NONE)
        g->tools = json_incref(r.tools);
    make_id(g->id, sizeof g->id, chat ? "chatcmpl-" : "cmpl-");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (int i = 0; i < g->n; i++) {
        struct choice *c = &g->ch[i];
        c->g = g;
        c->index = i;
        if (g->n_logprobs >= 0 && chat) {
            c->lp_content = json_array();
        } else if (g->n_logprobs >= 0) {
            c->lp_tokens = json_array();
            c->lp_values = json_array();
            c->lp_top = json_array();
            c->lp_offsets = json_array();
        }
    }
    /* the choices: one engine request each, seeds one apart; they share
     * the prompt's evaluation (the engine copies a prefix another slot
     * computed) */
    const uint64_t seed0 = rp.sampling.seed;
    for (int i = 0; i < g->n; i++) {
        rp.sampling.seed = seed0 + (uint64_t)i;
        const struct engine_events ev = {&g->ch[i], on_step, on_done};
        int rc = engine_submit(om->e, ids, n_ids, &rp, &ev, &g->ch[i].req, &err);
        if (rc) {
            st = submit_error(rc, &err, e);
            goto done;
        }
    }
    *out = g;
    g = NULL;
done:
    if (g)
        oai_gen_free(g);
    free(ids);
    free(tool_grammar);
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
    while (g->n_done < g->n)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT)
            break;
    bool d = g->n_done == g->n;
    pthread_mutex_unlock(&g->mu);
    return d;
}

void oai_gen_cancel(struct oai_gen *g)
{
    for (int i = 0; i < g->n; i++)
        if (g->ch[i].req)
            engine_cancel(g->om->e, g->ch[i].req);
}

/* finish_reason of an ended choice (under g->mu). */
static const char *finish_reason(const struct oai_gen *g, const struct choice *c)
{
    if (!c->done)
        return "running";
    if (g->timed_out)
        return "length";
    switch (c->res.finish) {
    case ENGINE_FINISH_EOG:
    case ENGINE_FINISH_STOP:
    case ENGINE_FINISH_CALLER: return c->calls ? "tool_calls" : "stop";
    case ENGINE_FINISH_LENGTH:
    case ENGINE_FINISH_CONTEXT: return "length";
    case ENGINE_FINISH_CANCELLED: return "cancelled";
    case ENGINE_FINISH_ERROR: break;
    }
    return "error";
}

static int completion_tokens(const struct oai_gen *g)
{
    int n = 0;
    for (int i = 0; i < g->n; i++)
        n += g->ch[i].res.n_gen > g->ch[i].n_tokens ? g->ch[i].res.n_gen : g->ch[i].n_tokens;
    return n;
}

static json_t *usage_of(const struct oai_gen *g)
{
    const int n_gen = completion_tokens(g);
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", g->n_prompt, "completion_tokens", n_gen,
                     "total_tokens", g->n_prompt + n_gen, "prompt_tokens_details", "cached_tokens",
                     g->ch[0].res.n_reused);
}

/* The log-probabilities gathered since the last call as the choice's
 * "logprobs" value (null when none were asked), and a fresh start (under
 * g->mu). */
static json_t *take_logprobs(struct choice *c)
{
    if (c->g->n_logprobs < 0)
        return json_null();
    json_t *o;
    if (c->g->chat) {
        o = json_pack("{s:o, s:n}", "content", c->lp_content, "refusal");
        c->lp_content = json_array();
    } else {
        o = json_pack("{s:o, s:o, s:o, s:o}", "tokens", c->lp_tokens, "token_logprobs", c->lp_values, "top_logprobs",
                      c->lp_top, "text_offset", c->lp_offsets);
        c->lp_tokens = json_array();
        c->lp_values = json_array();
        c->lp_top = json_array();
        c->lp_offsets = json_array();
    }
    return o;
}

/* The calls of a choice as OpenAI's tool_calls (ids made here); with
 * delta, each with its index. */
static json_t *calls_json(const struct choice *c, bool delta)
{
    json_t *list = json_array();
    for (size_t i = 0; i < json_array_size(c->calls); i++) {
        const json_t *k = json_array_get(c->calls, i);
        char id[40];
        make_id(id, sizeof id, "call_");
        json_t *o = json_pack("{s:s, s:s, s:{s:O, s:O}}", "id", id, "type", "function", "function", "name",
                              json_object_get(k, "name"), "arguments", json_object_get(k, "arguments"));
        if (delta)
            json_object_set_new(o, "index", json_integer((json_int_t)i));
        json_array_append_new(list, o);
    }
    return list;
}

int oai_gen_result(struct oai_gen *g, json_t **body, struct oai_error *e)
{
    pthread_mutex_lock(&g->mu);
    int st = 200;
    json_t *choices = json_array();
    for (int i = 0; i < g->n && st == 200; i++) {
        struct choice *c = &g->ch[i];
        if (c->res.finish == ENGINE_FINISH_ERROR) {
            set_error(e, "server_error", NULL, "generation failed: %s", c->res.error);
            st = 500;
            break;
        }
        if (c->res.finish == ENGINE_FINISH_CANCELLED && !g->timed_out) {
            set_error(e, "server_error", "cancelled", "the request was cancelled");
            st = 503;
            break;
        }
        const char *fr = finish_reason(g, c);
        const size_t tl = c->calls ? c->content_len : c->text.len;
        json_t *text = c->calls && tl == 0 ? json_null() : pb_json_text(c->text.data ? c->text.data : "", tl);
        json_t *choice;
        if (g->chat) {
            json_t *msg = json_pack("{s:s, s:o, s:n}", "role", "assistant", "content", text, "refusal");
            if (c->calls)
                json_object_set_new(msg, "tool_calls", calls_json(c, false));
            if (c->reasoning.len)
                json_object_set_new(msg, "reasoning_content", pb_json_text(c->reasoning.data, c->reasoning.len));
            choice = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", msg, "logprobs", take_logprobs(c),
                               "finish_reason", fr);
        } else {
            choice = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "text", text, "logprobs", take_logprobs(c),
                               "finish_reason", fr);
        }
        json_array_append_new(choices, choice);
    }
    if (st == 200) {
        *body = json_pack("{s:s, s:s, s:I, s:s, s:O, s:o}", "id", g->id, "object",
                          g->chat ? "chat.completion" : "text_completion", "created", (json_int_t)g->created, "model",
                          g->om->id, "choices", choices, "usage", usage_of(g));
        if (!*body) {
            set_error(e, "server_error", NULL, "out of memory");
            st = 500;
        }
    }
    json_decref(choices);
    pthread_mutex_unlock(&g->mu);
    return st;
}

/* ---- streaming ---- */

static int add_event(struct oai_gen *g, json_t *chunk)
{
    char *s = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    json_decref(chunk);
    if (!s)
        return PB_ENOMEM;
    int rc = sbuf_add(&g->sse, "data: ", 6) || sbuf_add(&g->sse, s, strlen(s)) || sbuf_add(&g->sse, "\n\n", 2);
    free(s);
    return rc ? PB_ENOMEM : PB_OK;
}

/* One SSE event: choice c's delta (delta may be NULL: a usage-only event
 * when c is NULL). */
static int add_chunk(struct oai_gen *g, struct choice *c, json_t *delta_or_text, const char *finish)
{
    json_t *choices = json_array();
    if (c) {
        json_t *one;
        if (g->chat)
            one = json_pack("{s:i, s:o, s:o, s:o}", "index", c->index, "delta", delta_or_text, "logprobs",
                            take_logprobs(c), "finish_reason", finish ? json_string(finish) : json_null());
        else
            one = json_pack("{s:i, s:o, s:o, s:o}", "index", c->index, "text", delta_or_text, "logprobs",
                            take_logprobs(c), "finish_reason", finish ? json_string(finish) : json_null());
        json_array_append_new(choices, one);
    }
    json_t *chunk = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", g->id, "object",
                              g->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)g->created,
                              "model", g->om->id, "choices", choices);
    if (g->include_usage && chunk)
        json_object_set_new(chunk, "usage", c ? json_null() : usage_of(g));
    return add_event(g, chunk);
}

/* What choice c has that the client has not seen, as events (under g->mu):
 * reasoning and text (with tools: only the text that cannot be a part of
 * a call), and at its end the calls, in fragments as OpenAI streams them,
 * and the finish reason. */
static void advance_choice(struct oai_gen *g, struct choice *c, bool first)
{
    const char *t = c->text.data ? c->text.data : "";
    size_t upto = c->text.len;
    if (g->tools)
        upto = c->done ? (c->calls ? c->content_len : c->text.len) : engine_tool_safe(g->om->e, t, c->text.len);
    if (upto < c->sent)
        upto = c->sent;
    const bool has_lp = json_array_size(c->lp_content) || json_array_size(c->lp_tokens);
    if (first || upto > c->sent || c->reasoning.len || has_lp) {
        if (g->chat) {
            json_t *delta = json_object();
            if (first)
                json_object_set_new(delta, "role", json_string("assistant"));
            if (c->reasoning.len) { /* the reasoning so far comes first, as its own field */
                json_object_set_new(delta, "reasoning_content", pb_json_text(c->reasoning.data, c->reasoning.len));
                c->reasoning.len = 0;
            }
            if (upto > c->sent || first)
                json_object_set_new(delta, "content", pb_json_text(t + c->sent, upto - c->sent));
            add_chunk(g, c, delta, NULL);
        } else {
            add_chunk(g, c, pb_json_text(t + c->sent, upto - c->sent), NULL);
        }
        c->sent = upto;
    }
    if (!c->done || c->final_sent)
        return;
    if (c->calls && g->chat) {
        json_t *calls = calls_json(c, true);
        for (size_t i = 0; i < json_array_size(calls); i++) {
            json_t *k = json_array_get(calls, i), *fn = json_object_get(k, "function");
            const char *args = json_string_value(json_object_get(fn, "arguments"));
            const size_t an = args ? strlen(args) : 0;
            /* the name first, the arguments after it in pieces */
            json_t *head = json_pack("{s:O, s:O, s:s, s:{s:O, s:s}}", "index", json_object_get(k, "index"), "id",
                                     json_object_get(k, "id"), "type", "function", "function", "name",
                                     json_object_get(fn, "name"), "arguments", "");
            add_chunk(g, c, json_pack("{s:[o]}", "tool_calls", head), NULL);
            for (size_t at = 0; at < an;) {
                size_t k2 = at + 24 < an ? at + 24 : an;
                while (k2 < an && ((unsigned char)args[k2] & 0xc0) == 0x80)
                    k2++; /* whole characters */
                json_t *frag = json_pack("{s:O, s:{s:s%}}", "index", json_object_get(k, "index"), "function",
                                         "arguments", args + at, k2 - at);
                add_chunk(g, c, json_pack("{s:[o]}", "tool_calls", frag), NULL);
                at = k2;
            }
        }
        json_decref(calls);
    }
    if (c->res.finish == ENGINE_FINISH_ERROR) {
        char msg[700];
        snprintf(msg, sizeof msg, "generation failed: %s", c->res.error);
        add_event(g, oai_error(msg, "server_error", NULL));
    } else {
        add_chunk(g, c, g->chat ? json_object() : json_string(""), finish_reason(g, c));
    }
    c->final_sent = true;
}

/* Moves what the answer has into SSE events (under g->mu). */
static void advance_stream(struct oai_gen *g)
{
    for (;;) {
        switch (g->phase) {
        case PH_FIRST:
            if (g->chat)
                for (int i = 0; i < g->n; i++)
                    advance_choice(g, &g->ch[i], true);
            g->phase = PH_TEXT;
            continue;
        case PH_TEXT:
            for (int i = 0; i < g->n; i++)
                advance_choice(g, &g->ch[i], false);
            if (g->n_done < g->n)
                return;
            g->phase = PH_FINAL;
            continue;
        case PH_FINAL:
            g->phase = g->include_usage ? PH_USAGE : PH_DONE_MARK;
            continue;
        case PH_USAGE:
            add_chunk(g, NULL, NULL, NULL);
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

ssize_t oai_stream_read(struct oai_gen *g, char *buf, size_t max, double wait_s, bool *last)
{
    *last = false;
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
    *last = g->phase == PH_END && g->sse_off == g->sse.len;
    pthread_mutex_unlock(&g->mu);
    return (ssize_t)n;
}

void oai_gen_info(struct oai_gen *g, struct oai_gen_info *info)
{
    pthread_mutex_lock(&g->mu);
    info->n_prompt = g->n_prompt;
    info->n_gen = completion_tokens(g);
    info->n_reused = g->ch[0].res.n_reused;
    info->ttft = g->n_tokens ? g->t_first - g->t_start : 0;
    info->queue_s = g->ch[0].res.t_queued;
    info->finish = finish_reason(g, &g->ch[0]);
    if (g->n_done < g->n)
        info->finish = "running";
    info->has_keep_alive = g->has_keep_alive;
    info->keep_alive_s = g->keep_alive_s;
    pthread_mutex_unlock(&g->mu);
}

void oai_gen_free(struct oai_gen *g)
{
    if (!g)
        return;
    oai_gen_cancel(g);
    /* the engine may still call back: wait for the done events of what
     * was submitted */
    for (int i = 0; i < g->n; i++) {
        struct choice *c = &g->ch[i];
        if (c->req) {
            for (;;) {
                pthread_mutex_lock(&g->mu);
                bool d = c->done;
                pthread_mutex_unlock(&g->mu);
                if (d)
                    break;
                oai_gen_wait(g, 0.05);
            }
            engine_release(g->om->e, c->req);
        }
        sbuf_free(&c->text);
        sbuf_free(&c->reasoning);
        json_decref(c->lp_content);
        json_decref(c->lp_tokens);
        json_decref(c->lp_values);
        json_decref(c->lp_top);
        json_decref(c->lp_offsets);
        json_decref(c->calls);
    }
    json_decref(g->tools);
    sbuf_free(&g->sse);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

/* ---- embeddings ---- */

static void base64_floats(const float *v, size_t n, struct sbuf *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const size_t len = n * 4;
    unsigned char *b = malloc(len ? len : 1);
    if (!b)
        return;
    for (size_t i = 0; i < n; i++) { /* little-endian float32, as numpy reads them */
        uint32_t u;
        memcpy(&u, &v[i], 4);
        b[4 * i] = (unsigned char)u;
        b[4 * i + 1] = (unsigned char)(u >> 8);
        b[4 * i + 2] = (unsigned char)(u >> 16);
        b[4 * i + 3] = (unsigned char)(u >> 24);
    }
    for (size_t i = 0; i < len; i += 3) {
        const uint32_t x = (uint32_t)b[i] << 16 | (i + 1 < len ? (uint32_t)b[i + 1] << 8 : 0) |
                           (i + 2 < len ? b[i + 2] : 0);
        char q[4] = {tab[x >> 18 & 63], tab[x >> 12 & 63], i + 1 < len ? tab[x >> 6 & 63] : '=',
                     i + 2 < len ? tab[x & 63] : '='};
        sbuf_add(out, q, 4);
    }
    free(b);
}

/* The inputs: a string, strings, token ids, or lists of token ids. */
static int read_inputs(const json_t *in, const struct tokenizer *tok, int32_t ***toks, size_t **n_toks, int *n,
                       struct oai_error *e)
{
    const int32_t n_vocab = tok_n_vocab(tok);
    json_t *list = NULL;
    if (json_is_string(in) || (json_is_array(in) && json_array_size(in) > 0 && json_is_integer(json_array_get(in, 0))))
        list = json_pack("[O]", in);
    else if (json_is_array(in) && json_array_size(in) > 0)
        list = json_incref((json_t *)in);
    else
        return BAD("'input' must be a string, an array of strings, an array of token ids or of such arrays");
    if (!list)
        return 500;
    const size_t k = json_array_size(list);
    if (k > OAI_MAX_INPUTS) {
        json_decref(list);
        return BAD("'input' has %zu items; at most %d", k, OAI_MAX_INPUTS);
    }
    *toks = calloc(k, sizeof **toks);
    *n_toks = calloc(k, sizeof **n_toks);
    *n = (int)k;
    int st = *toks && *n_toks ? 200 : 500;
    for (size_t i = 0; i < k && st == 200; i++) {
        const json_t *x = json_array_get(list, i);
        pb_err err;
        if (json_is_string(x)) {
            if (json_string_length(x) == 0)
                st = BAD("input[%zu] is empty", i);
            else if (tok_encode(tok, json_string_value(x), json_string_length(x), true, false, &(*toks)[i],
                                &(*n_toks)[i], &err))
                st = BAD("input[%zu] cannot be tokenized: %s", i, err.msg);
        } else if (json_is_array(x) && json_array_size(x) > 0) {
            const size_t m = json_array_size(x);
            if (!((*toks)[i] = malloc(m * sizeof ***toks))) {
                st = 500;
                break;
            }
            (*n_toks)[i] = m;
            for (size_t j = 0; j < m && st == 200; j++) {
                const json_t *t = json_array_get(x, j);
                if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab)
                    st = BAD("input[%zu] must be a string or token ids below %" PRId32, i, n_vocab);
                else
                    (*toks)[i][j] = (int32_t)json_integer_value(t);
            }
        } else {
            st = BAD("input[%zu] must be a non-empty string or array of token ids", i);
        }
    }
    json_decref(list);
    return st;
}

int oai_embed_request_read(const char *model_id, const struct tokenizer *tok, int64_t dim, const char *body,
                           size_t len, struct oai_embed_request *r, struct oai_error *e)
{
    *r = (struct oai_embed_request){.dims = dim};
    json_error_t je;
    json_t *req = json_loadb(body ? body : "", len, 0, &je);
    if (!req)
        return BAD("the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    int st = 200;
    const json_t *model = json_object_get(req, "model"), *fmt = json_object_get(req, "encoding_format");
    if (!json_is_object(req)) {
        st = BAD("the body must be a JSON object");
        goto done;
    }
    if (model && !json_is_null(model) && (!json_is_string(model) || strcmp(json_string_value(model), model_id))) {
        set_error(e, "invalid_request_error", "model_not_found", "the model '%s' does not exist (this server serves "
                  "'%s')", json_is_string(model) ? json_string_value(model) : "?", model_id);
        st = 404;
        goto done;
    }
    if (fmt && !json_is_null(fmt)) {
        if (!json_is_string(fmt) || (strcmp(json_string_value(fmt), "float") && strcmp(json_string_value(fmt), "base64"))) {
            st = BAD("'encoding_format' must be \"float\" or \"base64\"");
            goto done;
        }
        r->base64 = !strcmp(json_string_value(fmt), "base64");
    }
    if ((st = get_int(req, "dimensions", 1, dim, &r->dims, e)) != 200)
        goto done;
    const char *k;
    json_t *v;
    json_object_foreach(req, k, v) {
        if (strcmp(k, "input") && strcmp(k, "model") && strcmp(k, "encoding_format") && strcmp(k, "dimensions") &&
            strcmp(k, "user")) {
            st = BAD("'%.60s' is not supported by /v1/embeddings (input, model, encoding_format, dimensions, user)", k);
            goto done;
        }
    }
    st = read_inputs(json_object_get(req, "input"), tok, &r->toks, &r->n_toks, &r->n, e);
done:
    json_decref(req);
    if (st != 200)
        oai_embed_request_free(r);
    return st;
}

void oai_embed_request_free(struct oai_embed_request *r)
{
    for (int i = 0; r->toks && i < r->n; i++)
        free(r->toks[i]);
    free(r->toks);
    free(r->n_toks);
    *r = (struct oai_embed_request){0};
}

int oai_embeddings(struct oai_model *om, const char *body, size_t len, json_t **out, int *n_tokens,
                   struct oai_error *e)
{
    *out = NULL;
    *n_tokens = 0;
    const int64_t dim = engine_embed_dim(om->e);
    struct oai_embed_request r;
    int st = oai_embed_request_read(om->id, engine_tokenizer(om->e), dim, body, len, &r, e);
    if (st != 200)
        return st;
    const long long dims = r.dims;
    const int n = r.n;
    float *vec = malloc((size_t)n * (size_t)dim * sizeof *vec);
    if (!vec) {
        st = 500;
        goto done;
    }
    pb_err err;
    const struct engine_embed_params ep = {.pooling = ENGINE_POOL_DEFAULT, .normalize = true};
    int rc = engine_embed(om->e, (const int32_t *const *)r.toks, r.n_toks, n, &ep, vec, &err);
    if (rc) {
        st = submit_error(rc, &err, e);
        goto done;
    }
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        float *x = vec + (size_t)i * (size_t)dim;
        if (dims < dim) { /* shortened, and normalized again (Matryoshka-trained models) */
            double ss = 0;
            for (long long j = 0; j < dims; j++)
                ss += (double)x[j] * x[j];
            for (long long j = 0; j < dims && ss > 0; j++)
                x[j] = (float)(x[j] / sqrt(ss));
        }
        json_t *emb;
        if (r.base64) {
            struct sbuf s = {0};
            base64_floats(x, (size_t)dims, &s);
            emb = json_stringn(s.data ? s.data : "", s.len);
            sbuf_free(&s);
        } else {
            emb = json_array();
            for (long long j = 0; j < dims; j++)
                json_array_append_new(emb, json_real(x[j]));
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index", i, "embedding", emb));
        *n_tokens += (int)r.n_toks[i];
    }
    *out = json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data", data, "model", om->id, "usage",
                     "prompt_tokens", *n_tokens, "total_tokens", *n_tokens);
    if (!*out)
        st = 500;
done:
    if (st == 500 && !e->message[0])
        set_error(e, "server_error", NULL, "out of memory");
    oai_embed_request_free(&r);
    free(vec);
    return st;
}

/* ---- /tokenize and /detokenize (llama.cpp's shapes) ---- */

int oai_tokenize(struct oai_model *om, const char *body, size_t len, json_t **out, struct oai_error *e)
{
    *out = NULL;
    json_t *req = json_loadb(body ? body : "", len, 0, NULL);
    const json_t *content = json_object_get(req, "content");
    bool add_special = false, with_pieces = false, parse_special = true;
    int st = 200;
    if (!json_is_string(content)) {
        st = BAD("/tokenize takes {\"content\": \"text\", \"add_special\", \"parse_special\", \"with_pieces\"}");
    } else if ((st = get_bool(req, "add_special", &add_special, e)) == 200 &&
               (st = get_bool(req, "parse_special", &parse_special, e)) == 200 &&
               (st = get_bool(req, "with_pieces", &with_pieces, e)) == 200) {
        const struct tokenizer *tok = engine_tokenizer(om->e);
        int32_t *ids;
        size_t n;
        pb_err err;
        if (tok_encode(tok, json_string_value(content), json_string_length(content), add_special, parse_special, &ids,
                       &n, &err)) {
            st = BAD("the text cannot be tokenized: %s", err.msg);
        } else {
            json_t *list = json_array();
            for (size_t i = 0; i < n; i++) {
                if (!with_pieces) {
                    json_array_append_new(list, json_integer(ids[i]));
                    continue;
                }
                char piece[256];
                size_t pl = tok_piece(tok, ids[i], true, piece, sizeof piece);
                json_array_append_new(list, json_pack("{s:i, s:o}", "id", (int)ids[i], "piece",
                                                      pb_json_text(piece, pl < sizeof piece ? pl : sizeof piece)));
            }
            free(ids);
            *out = json_pack("{s:o}", "tokens", list);
        }
    }
    json_decref(req);
    return st;
}

int oai_detokenize(struct oai_model *om, const char *body, size_t len, json_t **out, struct oai_error *e)
{
    *out = NULL;
    json_t *req = json_loadb(body ? body : "", len, 0, NULL);
    const json_t *tokens = json_object_get(req, "tokens");
    const struct tokenizer *tok = engine_tokenizer(om->e);
    int st = 200;
    struct sbuf text = {0};
    if (!json_is_array(tokens)) {
        st = BAD("/detokenize takes {\"tokens\": [ids]}");
    } else {
        for (size_t i = 0; i < json_array_size(tokens) && st == 200; i++) {
            const json_t *t = json_array_get(tokens, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= tok_n_vocab(tok)) {
                st = BAD("tokens[%zu] is not a token id below %" PRId32, i, tok_n_vocab(tok));
                break;
            }
            char piece[256];
            size_t pl = tok_piece(tok, (int32_t)json_integer_value(t), false, piece, sizeof piece);
            sbuf_add(&text, piece, pl < sizeof piece ? pl : sizeof piece);
        }
        if (st == 200)
            *out = json_pack("{s:o}", "content", pb_json_text(text.data ? text.data : "", text.len));
    }
    sbuf_free(&text);
    json_decref(req);
    return st;
}
