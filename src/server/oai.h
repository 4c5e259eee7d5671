/* The OpenAI API's shapes for plumb serve: a served model, reading
 * chat-completion and completion requests into scheduler requests, and
 * writing their answers (whole, or as Server-Sent Events). Internal to
 * the server module. */
#ifndef PLUMB_SERVER_OAI_H
#define PLUMB_SERVER_OAI_H

#include "chat/chat.h"
#include "model/model.h"
#include "sched/sched.h"
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

struct oai_model {
    char id[128];
    int64_t created;
    struct model *m;
    struct tokenizer *tok;
    struct chat *chat;
    pthread_mutex_t chat_mu; /* renders one conversation at a time */
    bool chat_mu_init;
    struct sched *sched;
    /* called (on the scheduler's thread) with each inter-token latency */
    void (*on_itl)(void *user, double seconds);
    void *on_itl_user;
};

int oai_model_open(struct oai_model *om, const char *path, const char *alias, const char *chat_format,
                   const struct sched_params *sp, pb_err *err);
void oai_model_close(struct oai_model *om);
json_t *oai_models_list(const struct oai_model *om);
json_t *oai_model_object(const struct oai_model *om);
/* {"error": {"message", "type", "param": null, "code"}} */
json_t *oai_error(const char *message, const char *type, const char *code);

/* An error for the client: an HTTP status and the OpenAI error fields. */
struct oai_error {
    char message[600];
    char type[48];
    char code[48];
};

struct oai_gen;

/* Reads a request body (chat: /v1/chat/completions, else /v1/completions)
 * and submits it. Returns 200 and *out, or the HTTP status of the error
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
