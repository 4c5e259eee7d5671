#include "chat/chat.h"

#include "template/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Built-in formats, written as templates for the same interpreter, the
 * more specific first (a family is recognized by the first marker found). */
static const struct builtin {
    const char *name;
    const char *marker; /* text that identifies the family in a template or vocabulary */
    const char *src;
} builtins[] = {
    /* gpt-oss: OpenAI's harmony format. A system message carrying the
     * reasoning effort and the channels, the caller's system message as
     * the developer's instructions, earlier answers in the final channel;
     * the model writes <|channel|>analysis<|message|>...<|end|> and then
     * <|start|>assistant<|channel|>final<|message|>... */
    {"harmony", "<|channel|>",
     "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
     "Knowledge cutoff: 2024-06\nCurrent date: {{ strftime_now('%Y-%m-%d') }}\n\n"
     "Reasoning: {{ reasoning_effort if reasoning_effort is defined else 'medium' }}\n\n"
     "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
     "{% if messages and messages[0].role in ['system', 'developer'] %}"
     "<|start|>developer<|message|># Instructions\n\n{{ messages[0].content }}\n\n<|end|>"
     "{% set msgs = messages[1:] %}{% else %}{% set msgs = messages %}{% endif %}"
     "{% for m in msgs %}{% if m.role == 'assistant' %}<|start|>assistant<|channel|>final<|message|>"
     "{{ m.content.split('</think>')[-1] }}<|end|>{% else %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>"
     "{% endif %}{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}"},
    /* DeepSeek-R1 (and its distills): the answer opens a thinking block;
     * earlier answers keep only what follows their thinking */
    {"deepseek-r1", "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
     "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}{% endif %}{% endfor %}"
     "{% for m in messages %}{% if m.role == 'user' %}<\xef\xbd\x9c" "User\xef\xbd\x9c>{{ m.content }}"
     "{% elif m.role == 'assistant' %}<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>{{ m.content.split('</think>')[-1] }}"
     "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>\n"
     "{% if enable_thinking is defined and not enable_thinking %}</think>{% endif %}{% endif %}"},
    /* Qwen3: ChatML with thinking; enable_thinking=false closes an empty
     * thinking block in the prompt, as Qwen3's own template does */
    {"qwen3", "</think>",
     "{% for m in messages %}<|im_start|>{{ m.role }}\n"
     "{{ m.content.split('</think>')[-1].lstrip('\\n') if m.role == 'assistant' else m.content }}<|im_end|>\n"
     "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
     "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
     "{% endif %}"},
    /* ChatML, with tools as Qwen 2.5 and Hermes write them */
    {"chatml", "<|im_start|>",
     "{% if tools %}<|im_start|>system\n{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}"
     "\n\n{% endif %}# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are "
     "provided with function signatures within <tools></tools> XML tags:\n<tools>{% for t in tools %}\n"
     "{{ t | tojson }}{% endfor %}\n</tools>\n\nFor each function call, return a json object with function name "
     "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
     "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
     "{% set msgs = messages[1:] if messages and messages[0].role == 'system' else messages %}"
     "{% else %}{% set msgs = messages %}{% endif %}"
     "{% for m in msgs %}{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{{ m.content }}"
     "{% for tc in m.tool_calls %}{% if m.content or not loop.first %}\n{% endif %}<tool_call>\n{\"name\": \""
     "{{ tc.function.name }}\", \"arguments\": {{ tc.function.arguments | tojson }}}\n</tool_call>{% endfor %}"
     "<|im_end|>\n{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
     "</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
     "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"},
    {"llama3", "<|start_header_id|>",
     "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
     "{{ m.content | trim }}<|eot_id|>{% endfor %}"
     "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"},
    {"llama2", "<<SYS>>",
     "{% if messages and messages[0].role == 'system' %}{% set sys = messages[0].content %}"
     "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
     "{% for m in msgs %}{% if m.role == 'user' %}{{ bos_token }}[INST] "
     "{% if loop.first and sys %}<<SYS>>\n{{ sys }}\n<</SYS>>\n\n{% endif %}{{ m.content | trim }} [/INST]"
     "{% elif m.role == 'assistant' %} {{ m.content | trim }} {{ eos_token }}{% endif %}{% endfor %}"},
    {"mistral", "[INST]",
     "{% if messages and messages[0].role == 'system' %}{% set sys = messages[0].content %}"
     "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
     "{{ bos_token }}{% for m in msgs %}{% if m.role == 'user' %}[INST] "
     "{% if loop.first and sys %}{{ sys }}\n\n{% endif %}{{ m.content }}[/INST]"
     "{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"},
    {"gemma", "<start_of_turn>",
     "{% if messages and messages[0].role == 'system' %}{% set sys = messages[0].content %}"
     "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
     "{{ bos_token }}{% for m in msgs %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
     "{% if loop.first and sys %}{{ sys }}\n\n{% endif %}{{ m.content | trim }}<end_of_turn>\n{% endfor %}"
     "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"},
    {"phi3", "<|assistant|>",
     "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
     "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}"},
};
#define N_BUILTINS (sizeof builtins / sizeof builtins[0])

struct chat {
    struct tmpl *t;
    char name[32];
    char *bos_text, *eos_text;
    enum chat_reasoning_style style;
    enum chat_tool_style tools;
    bool knows_tools; /* the template renders tools itself */
};

enum chat_tool_style chat_tool_style(const struct chat *c, bool *knows_tools)
{
    *knows_tools = c->knows_tools;
    return c->tools;
}

const char *chat_format_names(void)
{
    return "chatml, llama3, llama2, mistral, gemma, phi3, harmony, deepseek-r1, qwen3";
}

/* The reasoning markup a template writes (or expects back). */
static enum chat_reasoning_style style_of(const char *src, size_t len)
{
    static const struct {
        const char *marker;
        enum chat_reasoning_style style;
    } marks[] = {{"<|channel|>", CHAT_REASONING_HARMONY}, {"</think>", CHAT_REASONING_THINK},
                 {"<think>", CHAT_REASONING_THINK}};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        const size_t ml = strlen(marks[i].marker);
        for (size_t k = 0; k + ml <= len; k++)
            if (!memcmp(src + k, marks[i].marker, ml))
                return marks[i].style;
    }
    return CHAT_REASONING_NONE;
}

enum chat_reasoning_style chat_reasoning_style(const struct chat *c)
{
    return c->style;
}

json_t *chat_opts_vars(const struct chat_opts *opts)
{
    json_t *v = json_object();
    if (!v)
        return NULL;
    json_object_set_new(v, "enable_thinking", json_boolean(!(opts && opts->no_thinking)));
    if (opts && opts->reasoning_effort)
        json_object_set_new(v, "reasoning_effort", json_string(opts->reasoning_effort));
    return v;
}

static const struct builtin *find_builtin(const char *name)
{
    for (size_t i = 0; i < N_BUILTINS; i++)
        if (!strcmp(builtins[i].name, name))
            return &builtins[i];
    return NULL;
}

bool chat_format_known(const char *name)
{
    return find_builtin(name) != NULL;
}

/* The built-in family whose marker appears in text (NULL: none). */
static const struct builtin *detect(const char *text, size_t len)
{
    for (size_t i = 0; i < N_BUILTINS; i++) {
        size_t ml = strlen(builtins[i].marker);
        for (size_t k = 0; k + ml <= len; k++)
            if (!memcmp(text + k, builtins[i].marker, ml))
                return &builtins[i];
    }
    return NULL;
}

/* The family whose marker is a token of the vocabulary. */
static const struct builtin *detect_vocab(const struct tokenizer *tok)
{
    for (size_t i = 0; i < N_BUILTINS; i++) {
        int32_t *ids;
        size_t n;
        if (tok_encode(tok, builtins[i].marker, strlen(builtins[i].marker), false, true, &ids, &n, NULL) == PB_OK) {
            bool one = n == 1 && tok_attr(tok, ids[0]) != TOK_NORMAL;
            free(ids);
            if (one)
                return &builtins[i];
        }
    }
    return NULL;
}

static char *token_text(const struct tokenizer *tok, int32_t id)
{
    size_t len;
    const char *s = id >= 0 ? tok_text(tok, id, &len) : "";
    if (id < 0)
        len = 0;
    char *out = malloc(len + 1);
    if (out) {
        memcpy(out, s, len);
        out[len] = 0;
    }
    return out;
}

int chat_open(const struct gguf_file *f, const struct tokenizer *tok, const char *format, struct chat **out,
              char *notice, size_t notice_size, pb_err *err)
{
    *out = NULL;
    if (notice && notice_size)
        notice[0] = 0;
    struct chat *c = calloc(1, sizeof *c);
    if (!c)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    c->bos_text = token_text(tok, tok_bos(tok));
    c->eos_text = token_text(tok, tok_eos(tok));
    int rc = PB_OK;
    if (!c->bos_text || !c->eos_text) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto fail;
    }
    const struct builtin *b = NULL;
    if (format) {
        if (!(b = find_builtin(format))) {
            rc = pb_fail(err, PB_EINVAL, "unknown chat format '%s' (one of %s)", format, chat_format_names());
            goto fail;
        }
    } else {
        struct gguf_str src;
        int have = gguf_get_str(f, "tokenizer.chat_template", &src, err);
        if (have < 0) {
            rc = have;
            goto fail;
        }
        if (have == 1) {
            pb_err perr = {0};
            if (tmpl_parse(src.data, (size_t)src.len, &c->t, &perr) == PB_OK) {
                snprintf(c->name, sizeof c->name, "model template");
                c->style = style_of(src.data, (size_t)src.len);
                c->tools = chat_tool_style_of(src.data, (size_t)src.len, &c->knows_tools);
                *out = c;
                return PB_OK;
            }
            b = detect(src.data, (size_t)src.len);
            if (!b)
                b = detect_vocab(tok);
            if (!b)
                b = find_builtin("chatml");
            if (notice)
                snprintf(notice, notice_size, "the model's chat template cannot be used (%s); using the built-in "
                         "'%s' format instead (choose another with --chat-format)", perr.msg, b->name);
        } else {
            b = detect_vocab(tok);
            if (!b)
                b = find_builtin("chatml");
            if (notice)
                snprintf(notice, notice_size, "the model has no chat template; using the built-in '%s' format "
                         "(choose another with --chat-format)", b->name);
        }
    }
    if ((rc = tmpl_parse(b->src, strlen(b->src), &c->t, err)))
        goto fail;
    snprintf(c->name, sizeof c->name, "%s", b->name);
    c->style = style_of(b->src, strlen(b->src));
    c->tools = chat_tool_style_of(b->src, strlen(b->src), &c->knows_tools);
    *out = c;
    return PB_OK;
fail:
    chat_free(c);
    return rc;
}

void chat_free(struct chat *c)
{
    if (!c)
        return;
    tmpl_free(c->t);
    free(c->bos_text);
    free(c->eos_text);
    free(c);
}

const char *chat_name(const struct chat *c)
{
    return c->name;
}

/* messages with a leading system message folded into the first user
 * message ("system\nuser"), or NULL when there is nothing to fold. */
static json_t *fold_system(const json_t *messages)
{
    const json_t *first = json_array_get(messages, 0);
    const char *role = json_string_value(json_object_get(first, "role"));
    const char *sys = json_string_value(json_object_get(first, "content"));
    if (!role || strcmp(role, "system") || !sys)
        return NULL;
    json_t *out = json_array();
    bool folded = false;
    for (size_t i = 1; out && i < json_array_size(messages); i++) {
        json_t *m = json_deep_copy(json_array_get(messages, i));
        const char *r = json_string_value(json_object_get(m, "role"));
        const char *text = json_string_value(json_object_get(m, "content"));
        if (!folded && r && !strcmp(r, "user") && text) {
            char *joined = malloc(strlen(sys) + strlen(text) + 2);
            if (joined) {
                sprintf(joined, "%s\n%s", sys, text);
                json_object_set_new(m, "content", json_string(joined));
                free(joined);
            }
            folded = true;
        }
        json_array_append_new(out, m);
    }
    if (out && !folded) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static int render_once(const struct chat *c, const json_t *messages, const json_t *tools,
                       bool add_generation_prompt, const json_t *extra, struct tmpl_output *out, pb_err *err);

int chat_render(const struct chat *c, const json_t *messages, bool add_generation_prompt, const json_t *extra,
                struct tmpl_output *out, pb_err *err)
{
    return chat_render_tools(c, messages, NULL, add_generation_prompt, extra, out, err);
}

/* A template that refuses a system message (Gemma's raise "System role not
 * supported") is given the conversation with the system message folded
 * into the first user turn, as llama.cpp's chat layer does. */
int chat_render_tools(const struct chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                      const json_t *extra, struct tmpl_output *out, pb_err *err)
{
    int rc = render_once(c, messages, tools, add_generation_prompt, extra, out, err);
    if (rc != PB_EINVAL)
        return rc;
    json_t *folded = fold_system(messages);
    if (!folded)
        return rc;
    pb_err again;
    if (render_once(c, folded, tools, add_generation_prompt, extra, out, &again) == PB_OK)
        rc = PB_OK;
    json_decref(folded);
    return rc;
}

static int render_once(const struct chat *c, const json_t *messages, const json_t *tools,
                       bool add_generation_prompt, const json_t *extra, struct tmpl_output *out, pb_err *err)
{
    /* messages (and tools, documents) carry user text: their strings stay
     * marked through the render, so their bytes never become special
     * tokens however the template transforms them */
    json_t *plain = json_pack("{s:b,s:s,s:s}", "add_generation_prompt", add_generation_prompt, "bos_token",
                              c->bos_text, "eos_token", c->eos_text);
    json_t *user = json_pack("{s:O,s:O,s:n}", "messages", messages, "tools", tools ? tools : json_null(),
                             "documents");
    int rc = PB_OK;
    if (!plain || !user)
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
    else if (extra && json_is_object(extra) && json_object_update(plain, (json_t *)extra))
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
    if (rc == PB_OK) {
        struct tmpl_vars vars = {plain, user};
        rc = tmpl_render(c->t, &vars, NULL, out, err);
    }
    json_decref(plain);
    json_decref(user);
    return rc;
}

int chat_tokenize(const struct chat *c, const struct tokenizer *tok, const json_t *messages,
                  bool add_generation_prompt, const struct chat_opts *opts, int32_t **ids, size_t *n_ids,
                  struct chat_start *start, pb_err *err)
{
    json_t *vars = NULL;
    if (opts && !(vars = chat_opts_vars(opts)))
        return pb_fail(err, PB_ENOMEM, "out of memory");
    /* tool calls and results in the history, tools offered */
    const json_t *tools = opts && json_array_size(opts->tools) ? opts->tools : NULL;
    json_t *msgs = chat_tool_messages(messages, tools, c->knows_tools, c->tools);
    if (!msgs) {
        json_decref(vars);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    struct tmpl_output r;
    int rc = chat_render_tools(c, msgs, c->knows_tools ? tools : NULL, add_generation_prompt, vars, &r, err);
    json_decref(vars);
    json_decref(msgs);
    if (rc)
        return rc;
    if (start)
        chat_start_of(c, r.text, r.len, start);
    const char *text = r.text;
    size_t len = r.len;
    /* templates usually write the BOS text themselves: add it only when
     * the model adds one and the text does not start with it */
    size_t bl = strlen(c->bos_text);
    bool has_bos = bl > 0 && len >= bl && memcmp(text, c->bos_text, bl) == 0;
    rc = tok_encode_ex(tok, text, len, !has_bos, true, r.user, ids, n_ids, err);
    tmpl_output_free(&r);
    return rc;
}
