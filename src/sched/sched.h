/* The scheduler: continuous batching of many generation requests over one
 * model (what plumb serve runs).
 *
 * A scheduler owns a context of n_slots sequences and a thread that runs
 * steps: each step evaluates, in one forward pass, the next token of every
 * slot that is generating and a chunk of the prompts of slots still
 * reading theirs, then samples for each slot whose logits came out. A new
 * request takes a free slot at the next step without waiting for others
 * to finish; requests beyond the slots wait in a bounded queue (FIFO).
 *
 * A request's tokens do not depend on what else runs: every row of a
 * batch is computed with the same arithmetic as alone, and each request
 * samples with its own sampler (seed). A slot keeps the tokens its cache
 * holds after its request ends; a new prompt that begins with them (a
 * shared system prompt, a continued conversation) skips that prefix, and
 * a prefix another slot holds is copied instead of computed.
 *
 * Events are delivered on the scheduler's thread: a request's token
 * callback for each generated token, then exactly one done callback. They
 * must be quick (hand the data to another thread) and may call
 * sched_cancel; they must not call sched_free.
 */
#ifndef PLUMB_SCHED_SCHED_H
#define PLUMB_SCHED_SCHED_H

#include "base/err.h"
#include "model/model.h"
#include "sampler/sampler.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sched_params {
    int n_slots;       /* sequences generated together */
    int64_t n_ctx;     /* context of each slot, in tokens */
    int n_batch;       /* tokens per forward pass (0: 512) */
    int n_threads;     /* 0: all CPUs this process may use */
    int kv_type;       /* enum kv_type */
    int max_queue;     /* requests that may wait for a slot */
    int prefill_chunk; /* prompt tokens per step at most while other slots generate (0: 256) */
    double step_target_s; /* while slots generate, steps aim at this duration: prompt
                           * tokens are added only as the measured time per token allows
                           * (bounds inter-token latency; 0: 0.15 s) */
};

struct sched;
struct sched_req;

int sched_create(const struct model *m, const struct tokenizer *tok, const struct sched_params *p, struct sched **out,
                 pb_err *err);
/* Stops the thread; requests still queued or running end as cancelled. */
void sched_free(struct sched *s);

struct sched_req_params {
    struct sampler_params sampling;
    int n_predict;    /* tokens to generate at most; < 0: until end of generation or a full context */
    bool json_object; /* only tokens that keep the text a JSON object; it ends when the object does */
    bool ignore_eog;  /* go on past end-of-generation tokens (benchmarks) */
};

enum sched_finish {
    SCHED_FINISH_EOG,       /* an end-of-generation token (not reported) */
    SCHED_FINISH_LENGTH,    /* n_predict tokens */
    SCHED_FINISH_CONTEXT,   /* the slot's context is full */
    SCHED_FINISH_STOP,      /* the token callback asked to stop */
    SCHED_FINISH_CANCELLED, /* sched_cancel or sched_free */
    SCHED_FINISH_ERROR,
};

struct sched_result {
    enum sched_finish finish;
    int n_prompt, n_gen;
    int n_reused;       /* prompt tokens whose cache was reused or copied */
    double t_queued;    /* seconds waiting for a slot */
    double t_prompt;    /* seconds from taking a slot to the first token's logits */
    double t_total;     /* seconds from submission to the end */
    char error[512];    /* SCHED_FINISH_ERROR: what went wrong */
};

struct sched_events {
    void *user;
    /* a generated token and its text (may be part of a UTF-8 character);
     * non-zero stops the request (SCHED_FINISH_STOP) */
    int (*token)(void *user, int32_t id, const char *piece, size_t len);
    void (*done)(void *user, const struct sched_result *r);
};

/* Queues a request (the prompt is copied). Fails with PB_EINVAL for an
 * empty prompt or bad sampling parameters, PB_ERANGE when the prompt does
 * not fit a slot's context or the queue is full. *out stays valid until
 * sched_release, after which the scheduler frees it once done. */
int sched_submit(struct sched *s, const int32_t *prompt, size_t n_prompt, const struct sched_req_params *p,
                 const struct sched_events *ev, struct sched_req **out, pb_err *err);
/* Asks a request to end (a client went away); its slot is freed at the
 * next step and done reports SCHED_FINISH_CANCELLED unless it already
 * ended. */
void sched_cancel(struct sched *s, struct sched_req *r);
/* Ends every request, queued or running, as cancelled, and refuses new
 * ones (a server shutting down). */
void sched_cancel_all(struct sched *s);
/* The caller is finished with r (after or before its done event). */
void sched_release(struct sched *s, struct sched_req *r);

struct sched_stats {
    int n_slots, active, queued;
    uint64_t prompt_tokens;    /* prompt tokens submitted */
    uint64_t reused_tokens;    /* of those, not evaluated: reused or copied prefixes */
    uint64_t generated_tokens;
    uint64_t steps;            /* forward passes */
    uint64_t step_tokens;      /* tokens they evaluated */
    double step_seconds;       /* time in forward passes */
    double sample_seconds;     /* time sampling and handing tokens over */
    int64_t kv_used, kv_capacity; /* positions held / positions of all slots */
};

void sched_get_stats(struct sched *s, struct sched_stats *st);
const struct tokenizer *sched_tokenizer(const struct sched *s);
int64_t sched_n_ctx(const struct sched *s);

#endif
