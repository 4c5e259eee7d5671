#define _POSIX_C_SOURCE 200809L
/* Tool calls in the model's own format (chat.h): the conversation
 * prepared for the template, the grammar that makes a call, and the
 * model's output read back into calls. */
#include "chat/chat.h"

#include "base/sbuf.h"
#include "plumb/sampler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *find_n(const char *s, size_t n, const char *what)
{
    const size_t w = strlen(what);
    for (size_t i = 0; i + w <= n; i++)
        if (!memcmp(s + i, what, w))
            return s + i;
    return NULL;
}

enum chat_tool_style chat_tool_style_of(const char *src, size_t len, bool *knows_tools)
{
    *knows_tools = find_n(src, len, "tools") != NULL;
    if (find_n(src, len, "<tool_call>"))
        return CHAT_TOOLS_HERMES;
    if (find_n(src, len, "[TOOL_CALLS]"))
        return CHAT_TOOLS_MISTRAL;
    if (find_n(src, len, "<|channel|>"))
        return CHAT_TOOLS_HARMONY;
    if (find_n(src, len, "<|python_tag|>") || (*knows_tools && find_n(src, len, "<|start_header_id|>")))
        return CHAT_TOOLS_LLAMA3;
    return CHAT_TOOLS_GENERIC;
}

const char *chat_tool_style_name(enum chat_tool_style s)
{
    static const char *const names[] = {"generic", "hermes", "llama3", "mistral", "harmony"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

/* ---- the conversation ---- */

/* A call's arguments as the template wants them: the object a JSON string
 * holds (templates write them with tojson), else the value as it is. */
static json_t *args_value(const json_t *args)
{
    if (json_is_string(args)) {
        json_t *v = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, NULL);
        if (v)
            return v;
    }
    return args ? json_deep_copy(args) : json_object();
}

/* A call as text in the generic format's words. */
static int calls_text(const json_t *calls, struct sbuf *out)
{
    json_t *list = json_array();
    for (size_t i = 0; i < json_array_size(calls); i++) {
        const json_t *fn = json_object_get(json_array_get(calls, i), "function");
        json_array_append_new(list, json_pack("{s:O?, s:o}", "name", json_object_get(fn, "name"), "arguments",
                                              args_value(json_object_get(fn, "arguments"))));
    }
    json_t *o = json_pack("{s:o}", "tool_calls", list);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return PB_ENOMEM;
    int rc = sbuf_add(out, s, strlen(s));
    free(s);
    return rc;
}

/* Mistral's templates take call ids of 9 letters and digits only: an id
 * of another form becomes such an id, the same each time it appears. */
static json_t *mistral_id(const json_t *id)
{
    const char *s = json_string_value(id);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    bool ok = n == 9;
    for (size_t i = 0; ok && i < n; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9');
    if (ok)
        return json_string(s);
    static const char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    char out[10];
    for (int i = 0; i < 9; i++, h /= 62)
        out[i] = digits[h % 62];
    out[9] = 0;
    return json_string(out);
}

json_t *chat_tool_messages(const json_t *messages, const json_t *tools, bool knows_tools, enum chat_tool_style style)
{
    json_t *out = json_array();
    if (!out)
        return NULL;
    const bool offer = json_array_size(tools) > 0 && !knows_tools;
    for (size_t i = 0; i < json_array_size(messages); i++) {
        const json_t *m = json_array_get(messages, i);
        json_t *c = json_deep_copy(m);
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *calls = json_object_get(m, "tool_calls");
        if (!c || !role) {
            json_decref(c);
            json_decref(out);
            return NULL;
        }
        if (knows_tools) {
            /* the template writes the calls: arguments as objects */
            if (json_is_array(calls)) {
                json_t *cc = json_object_get(c, "tool_calls");
                for (size_t k = 0; k < json_array_size(cc); k++) {
                    json_t *call = json_array_get(cc, k), *fn = json_object_get(call, "function");
                    if (json_is_object(fn))
                        json_object_set_new(fn, "arguments", args_value(json_object_get(fn, "arguments")));
                    if (style == CHAT_TOOLS_MISTRAL && json_object_get(call, "id"))
                        json_object_set_new(call, "id", mistral_id(json_object_get(call, "id")));
                }
            }
            if (style == CHAT_TOOLS_MISTRAL && json_object_get(c, "tool_call_id"))
                json_object_set_new(c, "tool_call_id", mistral_id(json_object_get(c, "tool_call_id")));
        } else if (json_is_array(calls) || !strcmp(role, "tool")) {
            /* a template that knows no tools: calls and results as text */
            struct sbuf t = {0};
            const char *text = json_string_value(json_object_get(m, "content"));
            int rc = 0;
            if (!strcmp(role, "tool")) {
                const char *id = json_string_value(json_object_get(m, "tool_call_id"));
                char head[160];
                snprintf(head, sizeof head, "Result of the tool call%s%.100s: ", id ? " " : "", id ? id : "");
                rc = sbuf_add(&t, head, strlen(head));
                json_object_set_new(c, "role", json_string("user"));
            } else if (text && *text) {
                rc = sbuf_add(&t, text, strlen(text)) || sbuf_add(&t, "\n", 1);
            }
            if (!strcmp(role, "tool") && text)
                rc |= sbuf_add(&t, text, strlen(text));
            if (json_is_array(calls))
                rc |= calls_text(calls, &t);
            json_object_del(c, "tool_calls");
            json_object_set_new(c, "content", json_stringn(t.data ? t.data : "", t.len));
            sbuf_free(&t);
            if (rc) {
                json_decref(c);
                json_decref(out);
                return NULL;
            }
        }
        if (json_is_null(json_object_get(c, "content")))
            json_object_set_new(c, "content", json_string(""));
        json_array_append_new(out, c);
    }
    if (offer) {
        /* the tools and how to call them, in the system message */
        char *list = json_dumps(tools, JSON_INDENT(1));
        struct sbuf t = {0};
        const json_t *first = json_array_get(out, 0);
        const char *role = json_string_value(json_object_get(first, "role"));
        const bool has_sys = role && !strcmp(role, "system");
        int rc = 0;
        if (has_sys) {
            const char *sys = json_string_value(json_object_get(first, "content"));
            rc |= sbuf_add(&t, sys ? sys : "", sys ? strlen(sys) : 0) || sbuf_add(&t, "\n\n", 2);
        }
        static const char head[] = "You can call these tools (their parameters as JSON Schema):\n";
        static const char how[] = "\nTo call tools, answer with this JSON and nothing else: "
                                  "{\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<the arguments>}}]}";
        rc |= sbuf_add(&t, head, sizeof head - 1) || sbuf_add(&t, list ? list : "[]", list ? strlen(list) : 2) ||
              sbuf_add(&t, how, sizeof how - 1);
        free(list);
        json_t *sysm = json_pack("{s:s, s:s%}", "role", "system", "content", t.data ? t.data : "", t.len);
        sbuf_free(&t);
        if (rc || !sysm || (has_sys ? json_array_set_new(out, 0, sysm) : json_array_insert_new(out, 0, sysm))) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* ---- the grammar of a call ---- */

int chat_tool_grammar(enum chat_tool_style style, const json_t *tools, const char *only, bool parallel, char **gbnf,
                      pb_err *err)
{
    static const struct sampler_call_format formats[] = {
        [CHAT_TOOLS_GENERIC] = {"{\"tool_calls\": [", ", ", "]}", "{\"name\": \"", "\", \"arguments\": ", "}"},
        [CHAT_TOOLS_HERMES] = {"", "\n", "", "<tool_call>\n{\"name\": \"", "\", \"arguments\": ", "}\n</tool_call>"},
        [CHAT_TOOLS_LLAMA3] = {"", "; ", "", "{\"name\": \"", "\", \"parameters\": ", "}"},
        [CHAT_TOOLS_MISTRAL] = {"[", ", ", "]", "{\"name\": \"", "\", \"arguments\": ", "}"},
        [CHAT_TOOLS_HARMONY] = {"", "", "", "<|channel|>commentary to=functions.", " <|constrain|>json<|message|>",
                                ""},
    };
    /* tools as {name, parameters} */
    json_t *list = json_array();
    for (size_t i = 0; list && i < json_array_size(tools); i++) {
        const json_t *fn = json_object_get(json_array_get(tools, i), "function");
        json_array_append_new(list, json_pack("{s:O?, s:O?}", "name", json_object_get(fn, "name"), "parameters",
                                              json_object_get(fn, "parameters")));
    }
    if (!list)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    /* one call at a time where the format has no way to write several */
    const bool several = parallel && style != CHAT_TOOLS_HARMONY;
    int rc = sampler_tools_grammar(list, only, &formats[style], several, gbnf, err);
    json_decref(list);
    return rc;
}

/* ---- reading calls back ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
        p++;
    return p;
}

/* The JSON value at p (its end in *next); NULL when there is none. */
static json_t *value_at(const char *p, const char *end, const char **next)
{
    json_error_t je;
    json_t *v = json_loadb(p, (size_t)(end - p), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
    if (v)
        *next = p + je.position;
    return v;
}

static bool known_tool(const json_t *tools, const char *name)
{
    for (size_t i = 0; i < json_array_size(tools); i++) {
        const char *n = json_string_value(json_object_get(json_object_get(json_array_get(tools, i), "function"), "name"));
        if (n && !strcmp(n, name))
            return true;
    }
    return false;
}

/* {name, arguments | parameters} into calls as {name, arguments (text)};
 * false when it is not such an object or names no offered tool. */
static bool add_call(json_t *calls, const json_t *obj, const json_t *tools)
{
    const json_t *name = json_object_get(obj, "name");
    const json_t *args = json_object_get(obj, "arguments");
    if (!args)
        args = json_object_get(obj, "parameters");
    if (!json_is_object(obj) || !json_is_string(name) || !known_tool(tools, json_string_value(name)))
        return false;
    char *text = NULL;
    if (json_is_string(args)) {
        text = strdup(json_string_value(args));
    } else if (json_is_object(args)) {
        text = json_dumps(args, JSON_COMPACT);
    } else if (!args) {
        text = strdup("{}");
    } else {
        return false;
    }
    if (!text)
        return false;
    json_array_append_new(calls, json_pack("{s:O, s:s}", "name", name, "arguments", text));
    free(text);
    return true;
}

/* A JSON form of calls: {"tool_calls": [...]}, one call object, or an
 * array of them. */
static bool add_json_calls(json_t *calls, const json_t *v, const json_t *tools)
{
    const json_t *list = json_object_get(v, "tool_calls");
    if (json_is_array(list))
        v = list;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            return false;
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *c = json_array_get(v, i);
            const json_t *fn = json_object_get(c, "function"); /* OpenAI's own shape too */
            if (!add_call(calls, json_is_object(fn) ? fn : c, tools))
                return false;
        }
        return true;
    }
    return add_call(calls, v, tools);
}

int chat_tool_parse(enum chat_tool_style style, const json_t *tools, const char *text, size_t len, json_t **calls,
                    size_t *content_len)
{
    *calls = NULL;
    *content_len = len;
    json_t *out = json_array();
    if (!out)
        return PB_ENOMEM;
    const char *end = text + len, *p;
    bool ok = false;
    size_t keep = len;
    if (style == CHAT_TOOLS_HERMES && (p = find_n(text, len, "<tool_call>"))) {
        keep = (size_t)(p - text);
        ok = true;
        while (ok && p) {
            const char *q = skip_ws(p + 11, end), *next;
            json_t *v = value_at(q, end, &next);
            ok = v && add_call(out, v, tools);
            json_decref(v);
            if (!ok)
                break;
            q = skip_ws(next, end);
            if ((size_t)(end - q) >= 12 && !memcmp(q, "</tool_call>", 12))
                q += 12;
            q = skip_ws(q, end);
            p = (size_t)(end - q) >= 11 && !memcmp(q, "<tool_call>", 11) ? q : NULL;
            if (!p && q != end)
                ok = false; /* text after the calls: not a clean call */
        }
    } else if (style == CHAT_TOOLS_HARMONY && (p = find_n(text, len, "to=functions."))) {
        const char *h = p;
        while (h > text && memcmp(h, "<|", 2) != 0)
            h--;
        keep = (size_t)(h - text);
        const char *n0 = p + 13, *n1 = n0;
        while (n1 < end && *n1 != ' ' && *n1 != '<')
            n1++;
        const char *m = find_n(n1, (size_t)(end - n1), "<|message|>"), *next;
        json_t *args = m ? value_at(m + 11, end, &next) : NULL;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(n1 - n0 < 127 ? n1 - n0 : 127), n0);
        json_t *obj = args ? json_pack("{s:s, s:O}", "name", name, "arguments", args) : NULL;
        ok = obj && add_call(out, obj, tools);
        json_decref(obj);
        json_decref(args);
    }
    if (!ok && json_array_size(out) == 0) {
        /* the generic forms (and Llama 3's, Mistral's): the output is JSON */
        keep = len;
        json_array_clear(out);
        p = skip_ws(text, end);
        if (style == CHAT_TOOLS_LLAMA3 && (size_t)(end - p) >= 14 && !memcmp(p, "<|python_tag|>", 14))
            p = skip_ws(p + 14, end);
        if ((size_t)(end - p) >= 12 && !memcmp(p, "[TOOL_CALLS]", 12))
            p = skip_ws(p + 12, end);
        if ((size_t)(end - p) >= 13 && !memcmp(p, "<|tool_call|>", 13)) /* Granite */
            p = skip_ws(p + 13, end);
        const char *next;
        ok = p < end && (*p == '{' || *p == '[');
        while (ok) {
            json_t *v = value_at(p, end, &next);
            ok = v && add_json_calls(out, v, tools);
            json_decref(v);
            if (!ok)
                break;
            p = skip_ws(next, end);
            if (p < end && *p == ';') /* Llama 3's several calls */
                p = skip_ws(p + 1, end);
            if (p == end)
                break;
        }
        if (ok)
            keep = 0;
    } else if (!ok) {
        json_array_clear(out);
    }
    if (!ok || json_array_size(out) == 0) {
        json_decref(out);
        return PB_OK; /* no calls: all of it is content */
    }
    while (keep > 0 && (text[keep - 1] == ' ' || text[keep - 1] == '\n'))
        keep--;
    *calls = out;
    *content_len = keep;
    return PB_OK;
}

size_t chat_tool_safe(enum chat_tool_style style, const char *text, size_t len)
{
    /* JSON forms (every style's fallback): text that starts, after
     * blanks, with { or [ may be calls to its end */
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r'))
        i++;
    if (i == len || text[i] == '{' || text[i] == '[')
        return 0;
    if (style == CHAT_TOOLS_LLAMA3 && len - i < 14 && !memcmp(text + i, "<|python_tag|>", len - i))
        return 0;
    const char *marker = style == CHAT_TOOLS_HERMES ? "<tool_call>" : style == CHAT_TOOLS_HARMONY ? "<|" : NULL;
    if (!marker)
        return len;
    const char *p = find_n(text, len, marker);
    if (p)
        return (size_t)(p - text);
    /* hold back an end that could begin the marker */
    for (size_t k = strlen(marker) - 1; k > 0; k--)
        if (len >= k && !memcmp(text + len - k, marker, k))
            return len - k;
    return len;
}
