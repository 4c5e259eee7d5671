/* The OpenAI API's shapes for plumb serve: a served model, reading
 * chat-completion and completion requests into engine requests, and
 * writing their answers (whole, or as Server-Sent Events). Internal to
 * the server module. */
#ifndef PLUMB_SERVER_OAI_H
#define PLUMB_SERVER_OAI_H

#include "plumb/engine.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

struct oai_model {
    char id[128];
    int64_t created;
    struct engine *e;
    int64_t n_ctx;   /* per slot */
    /* called (on the engine's thread) with each inter-token latency */
    void (*on_itl)(void *user, double seconds);
    void *on_itl_user;
};

int oai_model_open(struct oai_model *om, const char *path, const char *alias, const struct engine_params *ep,
                   pb_err *err);
void oai_model_close(struct oai_model *om);
json_t *oai_model_object(const struct oai_model *om);
/* {"error": {"message", "type", "param": null, "code"}} */
json_t *oai_error(const char *message, const char *type, const char *code);

/* An error for the client: an HTTP status and the OpenAI error fields. */
struct oai_error {
    char message[600];
    char type[48];
    char code[48];
};

/* A request body read and checked, as far as it goes without a model:
 * everything oai_gen_start validates before it renders or tokenizes the
 * prompt and submits. */
struct oai_request {
    json_t *body;                    /* the parsed body: rp.stop and prompt point into it */
    bool chat;
    struct engine_request_params rp; /* sampling, n_predict (-1: not asked), stops, JSON mode, logits */
    bool stream, include_usage;
    int n_logprobs;                  /* alternatives per token; -1: no log-probabilities */
    json_t *messages;                /* chat: [{role, content}], string contents, roles checked */
    const char *prompt;              /* completion: the prompt text (not NUL-safe: prompt_len bytes), or NULL */
    size_t prompt_len;
    int32_t *ids;                    /* completion: the prompt as token ids (each below n_vocab), or NULL */
    size_t n_ids;
};

/* Reads a request body (chat: /v1/chat/completions, else /v1/completions)
 * for the model model_id, whose vocabulary has n_vocab tokens. Returns 200
 * and *r (free it with oai_request_free), or the HTTP status of the error
 * described in *e (400, 404, 500), with *r left empty. */
int oai_request_read(const char *model_id, int32_t n_vocab, bool chat, const char *body, size_t len,
                     struct oai_request *r, struct oai_error *e);
void oai_request_free(struct oai_request *r);

struct oai_gen;

/* The "model" of a request body: 1 and its name in out, 0 when the body
 * names none, -1 when it is not a JSON object or the name not a string
 * (oai_gen_start says why). */
int oai_peek_model(const char *body, size_t len, char *out, size_t size);

/* Reads a request body (oai_request_read), renders or tokenizes its
 * prompt and submits it. Returns 200 and *out, or the HTTP status of the error
 * described in *e (400, 404, 503). */
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
 * OAI_STREAM_END when the stream is complete. */
#define OAI_STREAM_END (-1)
ssize_t oai_stream_read(struct oai_gen *g, char *buf, size_t max, double wait_s);

struct oai_gen_info {
    int n_prompt, n_gen, n_reused;
    double ttft;        /* seconds from submission to the first token */
    const char *finish; /* "stop", "length", "cancelled", "error", or "running" */
};
void oai_gen_info(struct oai_gen *g, struct oai_gen_info *info);
void oai_gen_free(struct oai_gen *g);

#endif
