/* Conversations (src/chat): a hostile conversation rendered with every
 * built-in format and with the real model templates of the template
 * corpus (the .jinja files of fuzz/corpus/template, each read as a model's
 * tokenizer.chat_template), then tokenized with the user text marked, as
 * the engine does for a chat request. The input is JSON: an array of
 * messages, or an object {"messages": ..., "add_generation_prompt": bool,
 * "extra": {more template variables}, "template": index} where template
 * picks one of the chats (default: all). */
#include "fuzz.h"

#include "chat/chat.h"

#include <stdlib.h>
#include <string.h>

#define MAX_CHATS 64

static struct tokenizer *tok;
static struct chat *chats[MAX_CHATS];
static int n_chats;

static void add_chat(const struct gguf_file *f, const char *format)
{
    pb_err err = {0};
    FUZZ_CHECK(n_chats < MAX_CHATS, "too many chats");
    FUZZ_CHECK(chat_open(f, tok, format, &chats[n_chats], NULL, 0, &err) == PB_OK, "%s", err.msg);
    n_chats++;
}

static void setup(void)
{
    if (tok)
        return;
    tok = fuzz_tokenizer(&(struct fuzz_vocab){.add_space_prefix = -1, .add_bos = -1});
    static const char *const formats[] = {"chatml", "llama3", "llama2", "mistral", "gemma", "phi3"};
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        add_chat(NULL, formats[i]);
    char dir[4096];
    char **paths = fuzz_list_templates(fuzz_source_path("fuzz/corpus/template", dir, sizeof dir));
    for (char **p = paths; *p; p++) {
        size_t len;
        char *src = fuzz_read_file(*p, &len);
        FUZZ_CHECK(src, "cannot read %s", *p);
        struct gguf_file *f =
            fuzz_vocab_gguf(&(struct fuzz_vocab){.add_space_prefix = -1, .add_bos = -1, .chat_template = src});
        add_chat(f, NULL);
        gguf_close(f);
        free(src);
        free(*p);
    }
    free(paths);
}

static void one(const struct chat *c, const json_t *messages, bool agp, const json_t *extra,
                const struct chat_opts *opts)
{
    pb_err err = {0};
    if (extra) {
        struct tmpl_output out;
        if (chat_render(c, messages, agp, extra, &out, &err) == PB_OK)
            tmpl_output_free(&out);
        return;
    }
    int32_t *ids;
    size_t n;
    struct chat_start start;
    int rc = chat_tokenize(c, tok, messages, agp, opts, &ids, &n, &start, &err);
    fuzz_note("%s: %s", chat_name(c), rc ? err.msg : "rendered, tokenized");
    if (rc != PB_OK)
        return;
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok_n_vocab(tok), "token id %d out of range", ids[i]);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (!j)
        return 0;
    const json_t *messages = j, *extra = NULL;
    bool agp = true;
    int only = -1;
    struct chat_opts opts = {0};
    if (json_is_object(j)) {
        /* the request's switches: "tools": true offers the fixture's
         * tools, "no_thinking" and "reasoning_effort" as a request sets them */
        if (json_is_true(json_object_get(j, "tools")))
            opts.tools = fuzz_tools();
        opts.no_thinking = json_is_true(json_object_get(j, "no_thinking"));
        opts.reasoning_effort = json_string_value(json_object_get(j, "reasoning_effort"));
        messages = json_object_get(j, "messages");
        agp = !json_is_false(json_object_get(j, "add_generation_prompt"));
        extra = json_object_get(j, "extra");
        const json_t *pick = json_object_get(j, "template");
        if (json_is_integer(pick))
            only = (int)(json_integer_value(pick) % n_chats);
        only = only < 0 ? -1 : only;
    }
    for (int i = 0; i < n_chats; i++)
        if (only < 0 || i == only)
            one(chats[i], messages ? messages : json_null(), agp, extra, &opts);
    json_decref(j);
    return 0;
}
