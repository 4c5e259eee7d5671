/* OpenAI request bodies, through the server's own reading of them
 * (oai_request_read: the model name, sampling and length fields, stop
 * strings, stream options, logprobs, response_format with its schema
 * compiled to a grammar, tools and tool_choice, logit_bias, n, the
 * refusal of fields plumb does not support, then messages with tool
 * calls and results, or the prompt), as /v1/chat/completions and as /v1/completions. What passes
 * goes on as the server would take it before submitting: messages
 * rendered with a chat template and tokenized, a text prompt tokenized,
 * and a sampler made of its parameters (which must accept whatever the
 * server accepted) draws a few tokens. The same body is then read as
 * /v1/embeddings reads it (oai_embed_request_read: input as a string,
 * strings, token ids or lists of them, encoding_format, dimensions), for
 * a model of 384 dimensions. The input is the body. The served model is
 * called "test". */
#include "fuzz.h"

#include "chat/chat.h"
#include "sampler/grammar.h"
#include "sampler/sampler.h"
#include "server/oai.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct tokenizer *tok;
static struct chat *chatml;

static void setup(void)
{
    if (tok)
        return;
    tok = fuzz_tokenizer(&(struct fuzz_vocab){.add_space_prefix = -1, .add_bos = -1});
    pb_err err = {0};
    FUZZ_CHECK(chat_open(NULL, tok, "chatml", &chatml, NULL, 0, &err) == PB_OK, "%s", err.msg);
}

static bool role_ok(const char *r)
{
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant") || !strcmp(r, "tool"));
}

/* What a body that passed must hold, whatever it was. */
static void check_request(const struct oai_request *r, bool chat)
{
    FUZZ_CHECK(r->rp.n_stop >= 0 && r->rp.n_stop <= ENGINE_MAX_STOPS, "%d stop strings", r->rp.n_stop);
    for (int i = 0; i < r->rp.n_stop; i++)
        FUZZ_CHECK(r->rp.stop[i], "stop string %d is NULL", i);
    FUZZ_CHECK(r->n_logprobs >= -1 && r->n_logprobs <= 20, "%d logprobs", r->n_logprobs);
    FUZZ_CHECK(r->rp.n_predict == -1 || r->rp.n_predict >= 1, "n_predict %d", r->rp.n_predict);
    FUZZ_CHECK(r->n >= 1 && r->n <= 16, "n %d", r->n);
    if (r->grammar) { /* checked when read: it must compile */
        struct grammar *g;
        pb_err err = {0};
        FUZZ_CHECK(grammar_parse(r->grammar, strlen(r->grammar), &g, &err) == PB_OK, "%s", err.msg);
        grammar_free(g);
    }
    if (chat) {
        FUZZ_CHECK(json_is_array(r->messages) && json_array_size(r->messages) > 0, "no messages");
        for (size_t i = 0; i < json_array_size(r->messages); i++) {
            const json_t *m = json_array_get(r->messages, i);
            FUZZ_CHECK(role_ok(json_string_value(json_object_get(m, "role"))), "message %zu: bad role", i);
            FUZZ_CHECK(json_is_string(json_object_get(m, "content")), "message %zu: content not a string", i);
            if (!strcmp(json_string_value(json_object_get(m, "role")), "tool"))
                FUZZ_CHECK(json_is_string(json_object_get(m, "tool_call_id")), "message %zu: a tool result without its id",
                           i);
            const json_t *calls = json_object_get(m, "tool_calls");
            for (size_t k = 0; k < json_array_size(calls); k++)
                FUZZ_CHECK(json_is_string(json_object_get(json_object_get(json_array_get(calls, k), "function"), "name")),
                           "message %zu: tool call %zu without a name", i, k);
        }
        if (r->tool_choice == OAI_TOOLS_NAMED) {
            bool found = false;
            for (size_t k = 0; k < json_array_size(r->tools) && !found; k++) {
                const char *name = json_string_value(
                    json_object_get(json_object_get(json_array_get(r->tools, k), "function"), "name"));
                found = name && r->tool_name && !strcmp(name, r->tool_name);
            }
            FUZZ_CHECK(found, "tool_choice names a function the tools do not offer");
        }
        return;
    }
    FUZZ_CHECK(!r->messages && (r->prompt != NULL) != (r->ids != NULL), "a completion needs one prompt form");
    for (size_t i = 0; i < r->n_ids; i++)
        FUZZ_CHECK(r->ids[i] >= 0 && r->ids[i] < tok_n_vocab(tok), "prompt id %d out of range", r->ids[i]);
}

/* The request's sampling parameters at work on fixed logits. */
static void sample(const struct oai_request *r)
{
    const int32_t n_vocab = tok_n_vocab(tok);
    static float *logits;
    if (!logits) {
        logits = malloc((size_t)n_vocab * sizeof *logits);
        FUZZ_CHECK(logits, "out of memory");
        for (int32_t i = 0; i < n_vocab; i++)
            logits[i] = 4.0f * sinf((float)i * 0.7f);
    }
    struct sampler *s;
    pb_err err = {0};
    FUZZ_CHECK(sampler_create(&r->rp.sampling, n_vocab, &s, &err) == PB_OK, "accepted, but the sampler refuses: %s",
               err.msg);
    for (int k = 0; k < 4; k++) {
        int32_t id = sampler_sample(s, logits);
        FUZZ_CHECK(id >= 0 && id < n_vocab, "sampled id %d", id);
        sampler_accept(s, id);
    }
    sampler_free(s);
}

static void one(const uint8_t *data, size_t size, bool chat)
{
    struct oai_request r;
    struct oai_error e = {0};
    /* every other input through a model's preset (defaults and fixed fields) */
    static const struct server_preset preset = {
        .set = SERVER_PRESET_SYSTEM | SERVER_PRESET_TOP_K | SERVER_PRESET_STOP | SERVER_PRESET_MAX_TOKENS,
        .fixed = SERVER_PRESET_TEMPERATURE | SERVER_PRESET_SYSTEM,
        .system = "You are terse.",
        .top_k = 40,
        .stop = {"\n\n"},
        .n_stop = 1,
        .max_tokens = 64,
    };
    const struct server_preset *ps = size % 2 ? &preset : NULL;
    int st = oai_request_read("test", tok_n_vocab(tok), chat, (const char *)data, size, ps, &r, &e);
    fuzz_note("%s: %d %s", chat ? "chat" : "completion", st, e.message);
    if (st != 200) {
        FUZZ_CHECK(st == 400 || st == 404 || st == 500, "status %d", st);
        FUZZ_CHECK(st == 500 || (e.message[0] && e.type[0]), "status %d without a message", st);
        FUZZ_CHECK(!r.body && !r.messages && !r.ids, "a refused request kept its parts");
        return;
    }
    check_request(&r, chat);
    sample(&r);
    int32_t *ids = NULL;
    size_t n = 0;
    pb_err err = {0};
    if (chat)
        {
        const struct chat_opts co = {.no_thinking = r.co.no_thinking, .tools = r.co.tools,
                                     .reasoning_effort = r.co.reasoning_effort};
        (void)chat_tokenize(chatml, tok, r.messages, true, &co, &ids, &n, NULL, &err);
    }
    else if (r.prompt)
        (void)tok_encode(tok, r.prompt, r.prompt_len, true, false, &ids, &n, &err);
    free(ids);
    oai_request_free(&r);
}

/* An embeddings body: what passes has inputs of tokens in the
 * vocabulary, one of the two formats and a dimension the model has. */
static void embed(const uint8_t *data, size_t size)
{
    enum { DIM = 384 };
    struct oai_embed_request r;
    struct oai_error e = {0};
    int st = oai_embed_request_read("test", tok, DIM, (const char *)data, size, &r, &e);
    fuzz_note("embeddings: %d %s", st, e.message);
    if (st != 200) {
        FUZZ_CHECK(st == 400 || st == 404 || st == 500, "status %d", st);
        FUZZ_CHECK(st == 500 || (e.message[0] && e.type[0]), "status %d without a message", st);
        FUZZ_CHECK(!r.toks && !r.n_toks && !r.n, "a refused request kept its inputs");
        return;
    }
    FUZZ_CHECK(r.n >= 1 && r.n <= OAI_MAX_INPUTS && r.toks && r.n_toks, "%d inputs", r.n);
    const int32_t n_vocab = tok_n_vocab(tok);
    for (int i = 0; i < r.n; i++) {
        FUZZ_CHECK(r.n_toks[i] > 0 && r.toks[i], "input %d has no tokens", i);
        for (size_t j = 0; j < r.n_toks[i]; j++)
            FUZZ_CHECK(r.toks[i][j] >= 0 && r.toks[i][j] < n_vocab, "input %d: token %d out of range", i, r.toks[i][j]);
    }
    FUZZ_CHECK(r.dims >= 1 && r.dims <= DIM, "%lld dimensions", r.dims);
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    const char *fmt = json_string_value(json_object_get(body, "encoding_format"));
    FUZZ_CHECK(r.base64 == (fmt && !strcmp(fmt, "base64")), "encoding_format %s read as %s", fmt ? fmt : "(none)",
               r.base64 ? "base64" : "float");
    FUZZ_CHECK(!fmt || !strcmp(fmt, "float") || !strcmp(fmt, "base64"), "encoding_format %s accepted", fmt);
    json_decref(body);
    oai_embed_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    one(data, size, true);
    one(data, size, false);
    embed(data, size);
    return 0;
}
