/* The OpenAI API's shapes for plumb serve: a served model, reading
 * chat-completion and completion requests into engine requests, and
 * writing their answers (whole, or as Server-Sent Events). Internal to
 * the server module. */
#ifndef PLUMB_SERVER_OAI_H
#define PLUMB_SERVER_OAI_H

#include "plumb/engine.h"
#include "plumb/sampler.h"
#include "plumb/server.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

/* A model as a request sees it: its name, the engine it runs on (loaded,
 * owned by the server) and its preset. */
struct oai_model {
    char id[128];
    int64_t created;
    struct engine *e;
    int64_t n_ctx;   /* per slot */
    const struct server_preset *preset; /* NULL: none */
    /* called (on the engine's thread) for each generated token with its
     * inter-token latency, or -1 for the first token of a choice */
    void (*on_itl)(void *user, const char *model, double seconds);
    void *on_itl_user;
};

/* The model's name (alias, else path's file name without .gguf). */
void oai_model_id(const char *path, const char *alias, char *out, size_t size);
/* GET /v1/models's object of a loaded model. */
json_t *oai_model_object(const struct oai_model *om);
/* {"error": {"message", "type", "param": null, "code"}} */
json_t *oai_error(const char *message, const char *type, const char *code);

/* An error for the client: an HTTP status and the OpenAI error fields. */
struct oai_error {
    char message[600];
    char type[48];
    char code[48];
};

/* tool_choice */
enum oai_tool_choice {
    OAI_TOOLS_NONE,     /* no tools, or "none": the answer is text */
    OAI_TOOLS_AUTO,     /* the model may call tools */
    OAI_TOOLS_REQUIRED, /* it must call one (or several): enforced by a grammar */
    OAI_TOOLS_NAMED,    /* it must call tool_name */
};

/* A request body read and checked, as far as it goes without a model:
 * everything oai_gen_start validates before it renders or tokenizes the
 * prompt and submits (schemas and grammars are compiled here, so their
 * errors are a 400 naming what is wrong). */
struct oai_request {
    json_t *body;                    /* the parsed body: rp.stop, prompt, tools, co point into it */
    bool chat;
    struct engine_request_params rp; /* sampling, n_predict (-1: not asked), stops, JSON mode, grammar,
                                      * logit_bias, logits */
    bool stream, include_usage;
    int n_logprobs;                  /* alternatives per token; -1: no log-probabilities */
    int n;                           /* choices (1..16) */
    char *grammar;                   /* rp.grammar: from response_format json_schema or "grammar" */
    struct engine_logit_bias *bias;  /* rp.logit_bias */
    json_t *messages;                /* chat: [{role, content[, tool_calls | tool_call_id]}], checked */
    json_t *tools;                   /* chat: the tools offered, or NULL */
    enum oai_tool_choice tool_choice;
    const char *tool_name;           /* OAI_TOOLS_NAMED */
    bool parallel_tool_calls;
    struct engine_chat_opts co;      /* chat: the template's switches and the tools */
    bool split;                      /* chat: reasoning apart from the answer */
    const char *prompt;              /* completion: the prompt text (not NUL-safe: prompt_len bytes), or NULL */
    size_t prompt_len;
    int32_t *ids;                    /* completion: the prompt as token ids (each below n_vocab), or NULL */
    size_t n_ids;
    bool has_keep_alive;             /* "keep_alive" (Ollama's): how long the model stays loaded after this */
    double keep_alive_s;             /* seconds (0: unload when it ends), -1: forever */
};

/* Reads a request body (chat: /v1/chat/completions, else /v1/completions)
 * for the model model_id, whose vocabulary has n_vocab tokens, with its
 * preset (NULL: none) applied: a field the request leaves out, or one the
 * preset fixes, takes the preset's value (server_preset). Returns 200 and
 * *r (free it with oai_request_free), or the HTTP status of the error
 * described in *e (400, 404, 500), with *r left empty. */
int oai_request_read(const char *model_id, int32_t n_vocab, bool chat, const char *body, size_t len,
                     const struct server_preset *preset, struct oai_request *r, struct oai_error *e);
void oai_request_free(struct oai_request *r);

struct oai_gen;

/* The "model" of a request body: 1 and its name in out, 0 when the body
 * names none, -1 when it is not a JSON object or the name not a string
 * (oai_gen_start says why). */
int oai_peek_model(const char *body, size_t len, char *out, size_t size);

/* Reads a request body (oai_request_read), renders or tokenizes its
 * prompt and submits it (n choices: n engine requests). Returns 200 and
 * *out, or the HTTP status of the error described in *e (400, 404, 503). */
int oai_gen_start(struct oai_model *om, bool chat, const char *body, size_t len, int max_tokens_cap, double timeout_s,
                  struct oai_gen **out, struct oai_error *e);
bool oai_gen_streaming(const struct oai_gen *g);
/* Waits up to seconds for the answer to end; true when it has. */
bool oai_gen_wait(struct oai_gen *g, double seconds);
/* The client went away: stop generating. */
void oai_gen_cancel(struct oai_gen *g);
/* The whole answer (not streaming, after oai_gen_wait): 200 and *body,
 * or an error status and *e. */
int oai_gen_result(struct oai_gen *g, json_t **body, struct oai_error *e);

/* Streaming: up to max bytes of the event stream into buf, waiting up to
 * wait_s for more. Returns the bytes, 0 when nothing came in time,
 * OAI_STREAM_END when the stream is complete; *last is set when the bytes
 * returned end the stream (the next read returns OAI_STREAM_END). */
#define OAI_STREAM_END (-1)
ssize_t oai_stream_read(struct oai_gen *g, char *buf, size_t max, double wait_s, bool *last);

/* POST /v1/embeddings: input (a string, strings, token ids or lists of
 * them, at most OAI_MAX_INPUTS), encoding_format (float, base64),
 * dimensions (at most the model's: shortened and normalized again).
 * Returns 200 and *out, or the status of the error in *e; *n_tokens: the
 * tokens embedded. */
#define OAI_MAX_INPUTS 2048
/* An embeddings body read and checked, as far as it goes without a model. */
struct oai_embed_request {
    int n;            /* inputs (1..OAI_MAX_INPUTS) */
    int32_t **toks;   /* [n][n_toks[i]]: each input's tokens, below the vocabulary's size */
    size_t *n_toks;
    long long dims;   /* numbers per vector returned (1..the model's dimension) */
    bool base64;      /* encoding_format "base64" (little-endian float32), else "float" */
};
/* Reads an embeddings body for the model model_id (vocabulary tok, vectors
 * of dim numbers): 200 and *r (free it with oai_embed_request_free), or
 * the HTTP status of the error described in *e (400, 404, 500), with *r
 * left empty. */
int oai_embed_request_read(const char *model_id, const struct tokenizer *tok, int64_t dim, const char *body,
                           size_t len, struct oai_embed_request *r, struct oai_error *e);
void oai_embed_request_free(struct oai_embed_request *r);
int oai_embeddings(struct oai_model *om, const char *body, size_t len, json_t **out, int *n_tokens,
                   struct oai_error *e);
/* POST /tokenize {"content", "add_special", "parse_special", "with_pieces"}
 * -> {"tokens": [...]} and POST /detokenize {"tokens"} -> {"content"}, as
 * llama-server has them. */
int oai_tokenize(struct oai_model *om, const char *body, size_t len, json_t **out, struct oai_error *e);
int oai_detokenize(struct oai_model *om, const char *body, size_t len, json_t **out, struct oai_error *e);

struct oai_gen_info {
    int n_prompt, n_gen, n_reused;
    double ttft;        /* seconds from submission to the first token */
    double queue_s;     /* seconds waiting for a slot (the first choice) */
    const char *finish; /* "stop", "length", "cancelled", "error", or "running" */
    bool has_keep_alive;/* the request's "keep_alive" */
    double keep_alive_s;
};
void oai_gen_info(struct oai_gen *g, struct oai_gen_info *info);
void oai_gen_free(struct oai_gen *g);

#endif
