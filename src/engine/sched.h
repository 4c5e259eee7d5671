/* The generation loop behind the engine's requests (plumb/engine.h says
 * what it does; this is its internal interface).
 *
 * A scheduler owns a model context of n_slots sequences and a thread that
 * runs steps: each step evaluates, in one forward pass, the next token of
 * every slot that is generating and chunks of the prompts of slots still
 * reading theirs, then samples for each slot whose logits came out.
 * Requests beyond the slots wait in a bounded FIFO queue.
 */
#ifndef PLUMB_ENGINE_SCHED_H
#define PLUMB_ENGINE_SCHED_H

#include "base/err.h"
#include "base/pool.h"
#include "model/model.h"
#include "plumb/engine.h"
#include "tokenizer/tokenizer.h"

struct sched_params {
    int n_slots;
    int64_t n_ctx;        /* of each slot */
    int n_batch;
    enum pb_kv_type kv_type;
    int max_queue;
    int prefill_chunk;
    double step_target_s;
    struct pool *pool;    /* the context's threads (borrowed) */
};

struct sched;

int sched_create(const struct model *m, const struct tokenizer *tok, const struct sched_params *p, struct sched **out,
                 pb_err *err);
/* Stops the thread; requests still queued or running end as cancelled. */
void sched_free(struct sched *s);

int sched_submit(struct sched *s, const int32_t *prompt, size_t n_prompt, const struct engine_request_params *p,
                 const struct engine_events *ev, struct engine_request **out, pb_err *err);
void sched_cancel(struct sched *s, struct engine_request *r);
void sched_cancel_all(struct sched *s);
void sched_release(struct sched *s, struct engine_request *r);
void sched_get_stats(struct sched *s, struct engine_stats *st);
/* Runs embeddings on the loop's thread between steps (engine_embed). */
int sched_embed(struct sched *s, const int32_t *const *toks, const size_t *n_toks, int n_texts,
                const struct engine_embed_params *p, float *out, pb_err *err);
/* Bytes a scheduler allocates beside its model context: per slot (its
 * logits) and fixed (the batch, JSON mode's mask and vocabulary texts of
 * piece_bytes in all). */
uint64_t sched_mem_per_slot(int64_t n_vocab);
uint64_t sched_mem_fixed(int64_t n_vocab, int n_batch, uint64_t piece_bytes);

#endif
