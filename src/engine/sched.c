#define _POSIX_C_SOURCE 200809L
/* The generation loop: continuous batching over the slots of one model
 * context (sched.h, plumb/engine.h). */
#include "engine/sched.h"
#include "base/err.h"

#include "base/sys.h"
#include "base/vec.h"
#include "chat/chat.h"
#include "engine/textout.h"
#include "sampler/grammar.h"
#include "sampler/sampler.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* prompt tokens a step takes at least while others generate, so that a
 * prompt always moves on */
#define MIN_PREFILL 8
/* A prefix held by another slot is copied when it is at least this much
 * longer than what the chosen slot holds (copying costs a few memcpy of
 * the cache rows; below this, evaluating is as cheap). */
#define MIN_COPY_TOKENS 16
/* A free slot is chosen for the prefix it holds when that is at least
 * this long, or the whole prompt (a BOS token alone says nothing). */
#define MIN_REUSE_TOKENS 8

enum req_state { REQ_QUEUED, REQ_ACTIVE, REQ_DONE };

/* An embedding job: texts run on free slots by the loop's thread between
 * steps, the caller waiting. */
struct embed_job {
    struct embed_job *next;
    const int32_t *const *toks;
    const size_t *n_toks;
    int n_texts;
    struct engine_embed_params p;
    float *out;          /* [n_texts][n_embd] */
    int rc;
    pb_err err;
    bool done;
};

struct engine_request {
    struct engine_request *next; /* queue, and the admission list */
    int refs;               /* the scheduler's and the caller's (under s->mu) */
    enum req_state state;   /* under s->mu */
    atomic_bool cancelled;
    struct engine_request_params p;
    struct engine_events ev;
    int32_t *prompt;
    int64_t n_prompt;
    /* the scheduler thread's own from here */
    int slot;
    int64_t n_evaluated; /* prompt tokens in the slot's cache */
    /* a request admitted while another reads the same beginning waits for
     * that reading and takes it: the leader's slot and its admission
     * there (how to tell it is still there: the request itself may be
     * gone and its memory reused), the leader (NULL: not waiting; only
     * compared while it is the slot's), and how many positions to take */
    int lead_slot;
    uint64_t lead_admitted;
    struct engine_request *leader;
    int64_t share;
    struct sampler *smp;
    struct grammar *gram;   /* constrained output (a grammar, JSON mode), or NULL */
    struct gmatch *gm;
    float *biased;          /* [n_vocab]: the logits with the request's logit_bias, or NULL */
    struct textout tx;
    struct sbuf text;    /* what a step lets out (the answer's, when reasoning is split) */
    struct chat_reasoning *rsn; /* splits reasoning from the answer, or NULL */
    /* the grammar constrains the answer, not the thinking before it: when
     * the output starts inside a thinking block (or in harmony's headers),
     * it applies from the first text of the answer on */
    bool grammar_waits, in_answer;
    struct sbuf raw;     /* with rsn: text before the split */
    struct sbuf reasoning;
    bool split_failed;   /* out of memory splitting */
    int32_t *top_ids;    /* [p.n_top] */
    float *top_logits;
    struct engine_result res;
    double t_submit, t_admit, t_first;
};

struct slot {
    struct engine_request *req;
    int32_t next;      /* a sampled token to evaluate */
    bool has_next;
    uint64_t admitted; /* admission order: prompt chunks go oldest first, free slots are reused least recent first */
};

struct sched {
    const struct model *m;
    const struct tokenizer *tok;
    struct model_ctx *ctx;
    struct sched_params p;
    int32_t n_vocab;
    struct slot *slots;
    /* the step's batch */
    int32_t *tokens;
    struct model_seg *segs;
    int *seg_slot;
    float *logits;
    uint8_t *allowed; /* a grammar's mask */
    /* every token's text: piece_off[i] .. piece_off[i + 1] in pieces, and
     * their trie for grammars */
    char *pieces;
    uint32_t *piece_off;
    struct gtrie *trie;
    int32_t *eog;     /* the end-of-generation tokens */
    int n_eog;
    uint64_t n_admitted;
    double token_s; /* seconds per token of recent steps (0: none measured) */

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stop;
    bool cancel_all; /* sched_cancel_all */
    struct engine_request *queue_head, *queue_tail;
    int n_queued, n_active;
    struct embed_job *embed_head; /* under mu; the loop runs them */
    pthread_cond_t embed_done;
    struct engine_stats stats; /* counters, under mu */
};

static void req_free(struct engine_request *r)
{
    sampler_free(r->smp);
    gmatch_free(r->gm);
    grammar_free(r->gram);
    free(r->biased);
    free((void *)r->p.grammar);
    free((void *)r->p.logit_bias);
    textout_free(&r->tx);
    sbuf_free(&r->text);
    chat_reasoning_free(r->rsn);
    sbuf_free(&r->raw);
    sbuf_free(&r->reasoning);
    for (int i = 0; i < r->p.n_stop; i++)
        free((char *)r->p.stop[i]);
    free(r->top_ids);
    free(r->top_logits);
    free(r->prompt);
    free(r);
}

/* Drops one reference (under s->mu). */
static void req_unref(struct engine_request *r)
{
    if (--r->refs == 0)
        req_free(r);
}

/* ---- token texts for grammars ---- */

static int build_pieces(struct sched *s, pb_err *err)
{
    size_t cap = 0, used = 0;
    void *p0 = NULL;
    s->piece_off = malloc(((size_t)s->n_vocab + 1) * sizeof *s->piece_off);
    if (!s->piece_off || vec_reserve(&p0, &cap, 1 << 16, 1))
        return pb_fail(err, PB_ENOMEM, "out of memory");
    s->pieces = p0;
    char buf[256];
    for (int32_t i = 0; i < s->n_vocab; i++) {
        s->piece_off[i] = (uint32_t)used;
        size_t n = tok_piece(s->tok, i, false, buf, sizeof buf);
        if (n > sizeof buf)
            n = 0; /* a token longer than any JSON needs: never chosen in JSON mode */
        void *p = s->pieces;
        if (vec_reserve(&p, &cap, used + n, 1))
            return pb_fail(err, PB_ENOMEM, "out of memory");
        s->pieces = p;
        memcpy(s->pieces + used, buf, n);
        used += n;
        if (used > UINT32_MAX - 256)
            return pb_fail(err, PB_EUNSUPPORTED, "vocabulary texts too large");
    }
    s->piece_off[s->n_vocab] = (uint32_t)used;
    return PB_OK;
}

/* The trie of the token texts, end-of-generation tokens left out (a
 * grammar's end decides about them). */
static int build_trie(struct sched *s, pb_err *err)
{
    uint8_t *skip = calloc((size_t)s->n_vocab, 1);
    if (!skip)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int n = 0;
    for (int32_t i = 0; i < s->n_vocab; i++)
        n += skip[i] = tok_is_eog(s->tok, i);
    if (!(s->eog = malloc(((size_t)n + 1) * sizeof *s->eog))) {
        free(skip);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    for (int32_t i = 0; i < s->n_vocab; i++)
        if (skip[i])
            s->eog[s->n_eog++] = i;
    int rc = gtrie_build(s->pieces, s->piece_off, s->n_vocab, skip, &s->trie, err);
    free(skip);
    return rc;
}

/* ---- creation ---- */

static void *loop(void *arg);

int sched_create(const struct model *m, const struct tokenizer *tok, const struct sched_params *p, struct sched **out,
                 pb_err *err)
{
    *out = NULL;
    if (p->n_slots < 1 || p->n_slots > ENGINE_MAX_SLOTS)
        return pb_fail(err, PB_EINVAL, "%d parallel slots: 1..%d", p->n_slots, ENGINE_MAX_SLOTS);
    if (p->max_queue < 0)
        return pb_fail(err, PB_EINVAL, "a negative queue length");
    if (p->n_batch < 1 || p->prefill_chunk < 1 || !(p->step_target_s > 0))
        return pb_fail(err, PB_EINVAL, "batch, prefill chunk and step time must be positive");
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    s->m = m;
    s->tok = tok;
    s->p = *p;
    if (s->p.n_batch < s->p.n_slots)
        s->p.n_batch = s->p.n_slots; /* every slot's token fits one step */
    s->n_vocab = (int32_t)model_hparams(m)->n_vocab;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->embed_done, NULL);
    struct model_ctx_params cp = {
        .n_ctx = p->n_ctx,
        .n_batch = s->p.n_batch,
        .pool = p->pool,
        .kv_type = p->kv_type,
        .n_seq = p->n_slots,
    };
    int rc = model_ctx_create(m, &cp, &s->ctx, err);
    if (rc)
        goto fail;
    const size_t ns = (size_t)p->n_slots;
    s->slots = calloc(ns, sizeof *s->slots);
    s->tokens = malloc((size_t)s->p.n_batch * sizeof *s->tokens);
    s->segs = malloc(ns * sizeof *s->segs);
    s->seg_slot = malloc(ns * sizeof *s->seg_slot);
    s->logits = malloc(ns * (size_t)s->n_vocab * sizeof *s->logits);
    s->allowed = malloc((size_t)s->n_vocab);
    if (!s->slots || !s->tokens || !s->segs || !s->seg_slot || !s->logits || !s->allowed) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for %d slots", p->n_slots);
        goto fail;
    }
    if ((rc = build_pieces(s, err)) || (rc = build_trie(s, err)))
        goto fail;
    s->stats.n_slots = p->n_slots;
    s->stats.kv_capacity = (int64_t)p->n_slots * p->n_ctx;
    if (pthread_create(&s->thread, NULL, loop, s) != 0) {
        rc = pb_fail(err, PB_ENOMEM, "cannot start the scheduler thread");
        goto fail;
    }
    s->started = true;
    *out = s;
    return PB_OK;
fail:
    sched_free(s);
    return rc;
}

uint64_t sched_mem_per_slot(int64_t n_vocab)
{
    return (uint64_t)n_vocab * sizeof(float) + sizeof(struct slot) + sizeof(struct model_seg) + sizeof(int);
}

uint64_t sched_mem_fixed(int64_t n_vocab, int n_batch, uint64_t piece_bytes)
{
    return sizeof(struct sched) + (uint64_t)n_batch * sizeof(int32_t) + (uint64_t)n_vocab /* allowed */ +
           ((uint64_t)n_vocab + 1) * sizeof(uint32_t) + piece_bytes;
}

/* The reasoning splitter's pieces into the request's two buffers. */
static void on_part(void *user, enum chat_part part, const char *text, size_t len)
{
    struct engine_request *r = user;
    if (sbuf_add(part == CHAT_PART_REASONING ? &r->reasoning : &r->text, text, len))
        r->split_failed = true;
}

/* Text let out by the text holder (in r->raw when splitting) into the
 * answer (r->text) and the reasoning (r->reasoning); at the end, what the
 * splitter held back too. */
static void split_reasoning(struct engine_request *r, bool end)
{
    if (!r->rsn)
        return;
    r->text.len = r->reasoning.len = 0;
    if (r->raw.len)
        chat_reasoning_feed(r->rsn, r->raw.data, r->raw.len, on_part, r);
    if (end)
        chat_reasoning_finish(r->rsn, on_part, r);
    r->raw.len = 0;
}

/* Ends r (scheduler thread, not under mu): lets out the text held back,
 * frees its slot, reports done. */
static void finish(struct sched *s, struct engine_request *r, enum engine_finish f)
{
    const double now = sys_now();
    r->res.finish = f;
    r->res.t_total = now - r->t_submit;
    r->res.t_gen = r->res.n_gen ? now - r->t_first : 0;
    r->text.len = r->raw.len = r->reasoning.len = 0;
    r->res.tail = r->res.tail_reasoning = "";
    r->res.tail_len = r->res.tail_reasoning_len = 0;
    if (f != ENGINE_FINISH_ERROR && textout_flush(&r->tx, r->rsn ? &r->raw : &r->text) == PB_OK) {
        split_reasoning(r, true);
        r->res.tail = r->text.data ? r->text.data : "";
        r->res.tail_len = r->text.len;
        r->res.tail_reasoning = r->reasoning.data ? r->reasoning.data : "";
        r->res.tail_reasoning_len = r->reasoning.len;
    }
    if (r->slot >= 0) {
        s->slots[r->slot].req = NULL;
        s->slots[r->slot].has_next = false;
    }
    pthread_mutex_lock(&s->mu);
    if (r->state == REQ_ACTIVE)
        s->n_active--;
    r->state = REQ_DONE;
    pthread_mutex_unlock(&s->mu);
    if (r->ev.done)
        r->ev.done(r->ev.user, &r->res);
    pthread_mutex_lock(&s->mu);
    req_unref(r);
    pthread_mutex_unlock(&s->mu);
}

static void fail_request(struct sched *s, struct engine_request *r, const char *msg)
{
    snprintf(r->res.error, sizeof r->res.error, "%s", msg);
    finish(s, r, ENGINE_FINISH_ERROR);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    /* embedding jobs still waiting fail */
    pthread_mutex_lock(&s->mu);
    for (struct embed_job *j = s->embed_head; j; j = j->next) {
        j->rc = pb_fail(&j->err, PB_ESTOPPING, "the engine is shutting down");
        j->done = true;
    }
    s->embed_head = NULL;
    pthread_cond_broadcast(&s->embed_done);
    pthread_mutex_unlock(&s->mu);
    /* what is left ends as cancelled */
    for (int i = 0; s->slots && i < s->p.n_slots; i++)
        if (s->slots[i].req)
            finish(s, s->slots[i].req, ENGINE_FINISH_CANCELLED);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct engine_request *r = s->queue_head;
        if (r) {
            s->queue_head = r->next;
            s->n_queued--;
        }
        pthread_mutex_unlock(&s->mu);
        if (!r)
            break;
        r->slot = -1;
        finish(s, r, ENGINE_FINISH_CANCELLED);
    }
    free(s->slots);
    free(s->tokens);
    free(s->segs);
    free(s->seg_slot);
    free(s->logits);
    free(s->allowed);
    free(s->pieces);
    free(s->piece_off);
    gtrie_free(s->trie);
    free(s->eog);
    model_ctx_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->embed_done);
    free(s);
}

/* ---- requests ---- */

/* The request's own copies of what it was given. */
static int req_prepare(struct sched *s, struct engine_request *r, const int32_t *prompt, size_t n_prompt,
                       const struct engine_request_params *p, pb_err *err)
{
    r->p = *p;
    r->p.n_stop = 0;
    r->slot = -1;
    r->n_prompt = (int64_t)n_prompt;
    r->refs = 2;
    atomic_init(&r->cancelled, false);
    r->p.grammar = NULL;
    r->p.logit_bias = NULL;
    r->p.n_logit_bias = 0;
    if (p->n_stop < 0 || p->n_stop > ENGINE_MAX_STOPS)
        return pb_fail(err, PB_EINVAL, "at most %d stop strings", ENGINE_MAX_STOPS);
    for (int i = 0; i < p->n_stop; i++) {
        if (!p->stop[i])
            return pb_fail(err, PB_EINVAL, "stop string %d is missing", i);
        if (!(r->p.stop[i] = strdup(p->stop[i])))
            return pb_fail(err, PB_ENOMEM, "out of memory");
        r->p.n_stop = i + 1;
    }
    int rc = textout_init(&r->tx, r->p.stop, r->p.n_stop, err);
    if (rc)
        return rc;
    if (p->n_top < 0)
        return pb_fail(err, PB_EINVAL, "a negative number of top logits");
    if (r->p.n_top > s->n_vocab)
        r->p.n_top = s->n_vocab;
    if (r->p.n_top > 0) {
        r->top_ids = malloc((size_t)r->p.n_top * sizeof *r->top_ids);
        r->top_logits = malloc((size_t)r->p.n_top * sizeof *r->top_logits);
        if (!r->top_ids || !r->top_logits)
            return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    if (p->reasoning.style != ENGINE_REASONING_NONE) {
        const enum chat_reasoning_style style =
            p->reasoning.style == ENGINE_REASONING_HARMONY ? CHAT_REASONING_HARMONY : CHAT_REASONING_THINK;
        if ((rc = chat_reasoning_create(style, p->reasoning.in_reasoning, &r->rsn, err)))
            return rc;
    }
    /* constrained output: JSON mode is the JSON grammar */
    const char *gtext = p->grammar ? p->grammar : p->json_object ? sampler_json_grammar() : NULL;
    if (gtext) {
        if ((rc = grammar_parse(gtext, strlen(gtext), &r->gram, err)) ||
            (rc = gmatch_create(r->gram, &r->gm, err)))
            return rc;
        if (p->grammar && !(r->p.grammar = strdup(p->grammar)))
            return pb_fail(err, PB_ENOMEM, "out of memory");
        r->grammar_waits = r->rsn && (p->reasoning.style == ENGINE_REASONING_HARMONY || p->reasoning.in_reasoning);
    }
    if (p->n_logit_bias < 0 || p->n_logit_bias > ENGINE_MAX_LOGIT_BIAS)
        return pb_fail(err, PB_EINVAL, "at most %d logit biases", ENGINE_MAX_LOGIT_BIAS);
    if (p->n_logit_bias > 0) {
        struct engine_logit_bias *lb = malloc((size_t)p->n_logit_bias * sizeof *lb);
        if (!lb || !(r->biased = malloc((size_t)s->n_vocab * sizeof *r->biased))) {
            free(lb);
            return pb_fail(err, PB_ENOMEM, "out of memory");
        }
        for (int i = 0; i < p->n_logit_bias; i++) {
            lb[i] = p->logit_bias[i];
            if (lb[i].id < 0 || lb[i].id >= s->n_vocab || !isfinite(lb[i].bias)) {
                free(lb);
                return pb_fail(err, PB_EINVAL, "logit_bias: token id %" PRId32 " is outside the vocabulary (%" PRId32
                               " tokens) or its bias is not a number", p->logit_bias[i].id, s->n_vocab);
            }
        }
        r->p.logit_bias = lb;
        r->p.n_logit_bias = p->n_logit_bias;
    }
    if (!(r->prompt = malloc(n_prompt * sizeof *prompt)))
        return pb_fail(err, PB_ENOMEM, "out of memory");
    memcpy(r->prompt, prompt, n_prompt * sizeof *prompt);
    r->res.n_prompt = (int)n_prompt;
    return sampler_create(&p->sampling, s->n_vocab, &r->smp, err);
}

int sched_submit(struct sched *s, const int32_t *prompt, size_t n_prompt, const struct engine_request_params *p,
                 const struct engine_events *ev, struct engine_request **out, pb_err *err)
{
    *out = NULL;
    if (n_prompt == 0)
        return pb_fail(err, PB_EINVAL, "the prompt is empty");
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->n_vocab)
            return pb_fail(err, PB_EINVAL, "token id %" PRId32 " is outside the vocabulary (%" PRId32 " tokens)",
                           prompt[i], s->n_vocab);
    /* the one rule: the prompt leaves room for at least one token */
    if ((int64_t)n_prompt >= s->p.n_ctx)
        return pb_fail(err, PB_ETOOLONG, "the prompt has %zu tokens; the context holds %" PRId64
                       " with room for the answer", n_prompt, s->p.n_ctx);
    struct engine_request *r = calloc(1, sizeof *r);
    if (!r)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    r->ev = *ev;
    int rc = req_prepare(s, r, prompt, n_prompt, p, err);
    if (rc) {
        req_free(r);
        return rc;
    }
    r->t_submit = sys_now();
    pthread_mutex_lock(&s->mu);
    const int free_slots = s->p.n_slots - s->n_active;
    if (s->stop || s->cancel_all || s->n_queued >= s->p.max_queue + (free_slots > 0 ? free_slots : 0)) {
        const bool stopping = s->stop || s->cancel_all;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return stopping ? pb_fail(err, PB_ESTOPPING, "the engine is shutting down")
                        : pb_fail(err, PB_EBUSY, "all %d slots are busy and %d requests wait already",
                                  s->p.n_slots, s->p.max_queue);
    }
    r->state = REQ_QUEUED;
    if (s->queue_tail)
        s->queue_tail->next = r;
    else
        s->queue_head = r;
    s->queue_tail = r;
    s->n_queued++;
    s->stats.prompt_tokens += n_prompt;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return PB_OK;
}

void sched_cancel(struct sched *s, struct engine_request *r)
{
    atomic_store(&r->cancelled, true);
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sched_cancel_all(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->cancel_all = true;
    for (struct engine_request *q = s->queue_head; q; q = q->next)
        atomic_store(&q->cancelled, true);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sched_release(struct sched *s, struct engine_request *r)
{
    if (!r)
        return;
    atomic_store(&r->cancelled, true); /* nobody listens any more */
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->wake);
    req_unref(r);
    pthread_mutex_unlock(&s->mu);
}

void sched_get_stats(struct sched *s, struct engine_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    st->active = s->n_active;
    st->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}

/* ---- the loop ---- */

/* What the pass just ended spent in each part (before: the context's
 * counters when it began) into the stats. Under s->mu. */
static void add_parts(struct sched *s, const double before[PB_PART_COUNT])
{
    double now[PB_PART_COUNT];
    model_ctx_part_seconds(s->ctx, now);
    for (int p = 0; p < PB_PART_COUNT; p++)
        s->stats.part_seconds[p] += now[p] - before[p];
}

/* The positions the slots hold, and of them those read from another
 * slot's rows, into the stats. Under s->mu (the cache changes only on the
 * scheduler thread, which calls this). */
static void count_kv(struct sched *s)
{
    int64_t used = 0, shared = 0;
    for (int i = 0; i < s->p.n_slots; i++) {
        used += model_seq_pos(s->ctx, i);
        shared += model_seq_n_shared(s->ctx, i);
    }
    s->stats.kv_used = used;
    s->stats.kv_shared = shared;
}

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb)
{
    int64_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* How much of sequence i's cache r's prompt can keep. */
static int64_t slot_prefix(const struct sched *s, int i, const struct engine_request *r)
{
    return common_prefix(model_seq_tokens(s->ctx, i), model_seq_pos(s->ctx, i), r->prompt, r->n_prompt);
}

/* The free slot for r: the one whose cache shares the longest prefix with
 * the prompt, else the least recently used (so that the caches other
 * prompts may want live longest). Under s->mu: slots are claimed there. */
static int choose_slot(struct sched *s, const struct engine_request *r)
{
    int best = -1, lru = -1;
    int64_t best_lcp = -1;
    for (int i = 0; i < s->p.n_slots; i++) {
        const struct slot *sl = &s->slots[i];
        if (sl->req)
            continue;
        int64_t lcp = slot_prefix(s, i, r);
        if (lcp > best_lcp) {
            best = i;
            best_lcp = lcp;
        }
        if (lru < 0 || sl->admitted < s->slots[lru].admitted)
            lru = i;
    }
    return best_lcp < MIN_REUSE_TOKENS && best_lcp < r->n_prompt - 1 ? lru : best;
}

/* Prepares slot r->slot's cache for r (scheduler thread, not under mu:
 * copying a prefix does not hold up submitters or /metrics): keeps what
 * it shares with the prompt, or copies a longer prefix another slot
 * holds. At least the prompt's last token is evaluated, for its logits. */
static void admit(struct sched *s, struct engine_request *r)
{
    const int slot = r->slot;
    int64_t keep = slot_prefix(s, slot, r);
    if (keep > r->n_prompt - 1)
        keep = r->n_prompt - 1;
    int src = -1;
    int64_t src_lcp = keep + MIN_COPY_TOKENS - 1;
    for (int i = 0; i < s->p.n_slots; i++) {
        if (i == slot)
            continue;
        int64_t lcp = slot_prefix(s, i, r);
        if (lcp > r->n_prompt - 1)
            lcp = r->n_prompt - 1;
        if (lcp > src_lcp) {
            src = i;
            src_lcp = lcp;
        }
    }
    if (src >= 0 && model_seq_copy(s->ctx, slot, src, src_lcp, NULL) == PB_OK)
        keep = src_lcp;
    else
        model_seq_truncate(s->ctx, slot, keep);
    r->n_evaluated = keep;
    r->res.n_reused = (int)keep;
    r->t_admit = sys_now();
    r->res.t_queued = r->t_admit - r->t_submit;
    for (int64_t i = 0; i < r->n_prompt; i++)
        sampler_accept(r->smp, r->prompt[i]);
}

/* A request whose prompt shares more with one still being evaluated (the
 * choices of one request, or prompts behind one system prompt arriving
 * while the first is read) than its slot now holds: it follows the one
 * that shares most, waiting for that evaluation instead of computing the
 * same positions again. Only requests already admitted lead (their slots
 * hold what they have evaluated); followers do not lead. */
static void follow(struct sched *s, struct engine_request *r)
{
    struct engine_request *best = NULL;
    int64_t best_lcp = r->n_evaluated + MIN_COPY_TOKENS - 1;
    for (int i = 0; i < s->p.n_slots; i++) {
        struct engine_request *q = s->slots[i].req;
        if (!q || q == r || q->leader || q->t_admit == 0)
            continue;
        int64_t lcp = common_prefix(q->prompt, q->n_prompt, r->prompt, r->n_prompt);
        if (lcp > r->n_prompt - 1)
            lcp = r->n_prompt - 1;
        if (lcp > best_lcp && q->n_evaluated < lcp) {
            best = q;
            best_lcp = lcp;
        }
    }
    if (best) {
        r->leader = best;
        r->lead_slot = best->slot;
        r->lead_admitted = s->slots[best->slot].admitted;
        r->share = best_lcp;
    }
}

/* Followers whose leader has evaluated what they share take it; those
 * whose leader went away before that evaluate their prompt themselves. */
static void catch_up(struct sched *s)
{
    uint64_t reused = 0;
    for (int i = 0; i < s->p.n_slots; i++) {
        struct engine_request *r = s->slots[i].req;
        if (!r || !r->leader)
            continue;
        const struct slot *lead = &s->slots[r->lead_slot];
        const int64_t have = slot_prefix(s, r->lead_slot, r);
        if (have >= r->share) {
            if (model_seq_copy(s->ctx, r->slot, r->lead_slot, r->share, NULL) == PB_OK) {
                reused += (uint64_t)(r->share - r->n_evaluated);
                r->n_evaluated = r->share;
                r->res.n_reused = (int)r->share;
            }
            r->leader = NULL;
        } else if (!lead->req || lead->admitted != r->lead_admitted) {
            r->leader = NULL; /* the leader ended early: on its own */
        }
    }
    if (reused) {
        pthread_mutex_lock(&s->mu);
        s->stats.reused_tokens += reused;
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---- embeddings ---- */

/* Pools the states of one text (rows of n_embd) into out, normalized
 * when asked. */
static void pool_text(const float *rows, int n, int64_t E, enum model_pooling pool, bool normalize, float *out)
{
    if (pool == MODEL_POOL_CLS) {
        memcpy(out, rows, (size_t)E * sizeof *out);
    } else if (pool == MODEL_POOL_LAST) {
        memcpy(out, rows + (size_t)(n - 1) * (size_t)E, (size_t)E * sizeof *out);
    } else {
        for (int64_t i = 0; i < E; i++) {
            double sum = 0;
            for (int t = 0; t < n; t++)
                sum += rows[(size_t)t * (size_t)E + (size_t)i];
            out[i] = (float)(sum / n);
        }
    }
    if (!normalize)
        return;
    double ss = 0;
    for (int64_t i = 0; i < E; i++)
        ss += (double)out[i] * out[i];
    const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (int64_t i = 0; i < E; i++)
        out[i] *= inv;
}

/* Runs job j on the slots no request holds, as many texts per forward
 * pass as free slots and the batch allow (scheduler thread). */
static void run_embed(struct sched *s, struct embed_job *j)
{
    const struct model_hparams *hp = model_hparams(s->m);
    const int64_t E = hp->n_embd;
    enum model_pooling pool = j->p.pooling == ENGINE_POOL_MEAN   ? MODEL_POOL_MEAN
                              : j->p.pooling == ENGINE_POOL_CLS  ? MODEL_POOL_CLS
                              : j->p.pooling == ENGINE_POOL_LAST ? MODEL_POOL_LAST
                                                                 : hp->pooling;
    if (pool == MODEL_POOL_NONE)
        pool = MODEL_POOL_MEAN;
    int free_slots[ENGINE_MAX_SLOTS], n_free = 0;
    for (int i = 0; i < s->p.n_slots; i++)
        if (!s->slots[i].req)
            free_slots[n_free++] = i;
    if (n_free == 0) {
        j->rc = pb_fail(&j->err, PB_EBUSY, "every slot is generating: no room for embeddings now");
        return;
    }
    float *hidden = malloc((size_t)s->p.n_batch * (size_t)E * sizeof *hidden);
    if (!hidden) {
        j->rc = pb_fail(&j->err, PB_ENOMEM, "out of memory");
        return;
    }
    for (int t0 = 0; t0 < j->n_texts && !j->rc;) {
        int n_segs = 0, n_tok = 0;
        while (t0 + n_segs < j->n_texts && n_segs < n_free &&
               n_tok + (int)j->n_toks[t0 + n_segs] <= s->p.n_batch) {
            const int k = t0 + n_segs;
            memcpy(s->tokens + n_tok, j->toks[k], j->n_toks[k] * sizeof *s->tokens);
            s->segs[n_segs] = (struct model_seg){.seq = free_slots[n_segs], .n = (int)j->n_toks[k]};
            n_tok += (int)j->n_toks[k];
            n_segs++;
        }
        const double t_start = sys_now();
        double parts[PB_PART_COUNT];
        model_ctx_part_seconds(s->ctx, parts);
        j->rc = model_eval_hidden(s->ctx, s->tokens, s->segs, n_segs, hidden, &j->err);
        pthread_mutex_lock(&s->mu);
        s->stats.steps++;
        s->stats.step_tokens += (uint64_t)n_tok;
        s->stats.step_seconds += sys_now() - t_start;
        add_parts(s, parts);
        s->stats.embedded_tokens += (uint64_t)n_tok;
        pthread_mutex_unlock(&s->mu);
        for (int k = 0, row = 0; k < n_segs && !j->rc; row += s->segs[k].n, k++)
            pool_text(hidden + (size_t)row * (size_t)E, s->segs[k].n, E, pool, j->p.normalize,
                      j->out + (size_t)(t0 + k) * (size_t)E);
        t0 += n_segs;
    }
    free(hidden);
}

static void run_embed_jobs(struct sched *s)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct embed_job *j = s->embed_head;
        if (j)
            s->embed_head = j->next;
        pthread_mutex_unlock(&s->mu);
        if (!j)
            return;
        run_embed(s, j);
        pthread_mutex_lock(&s->mu);
        j->done = true;
        pthread_cond_broadcast(&s->embed_done);
        pthread_mutex_unlock(&s->mu);
    }
}

int sched_embed(struct sched *s, const int32_t *const *toks, const size_t *n_toks, int n_texts,
                const struct engine_embed_params *p, float *out, pb_err *err)
{
    if (n_texts <= 0)
        return pb_fail(err, PB_EINVAL, "no texts to embed");
    const int64_t limit = s->p.n_ctx < s->p.n_batch ? s->p.n_ctx : s->p.n_batch;
    for (int i = 0; i < n_texts; i++) {
        if (n_toks[i] == 0)
            return pb_fail(err, PB_EINVAL, "text %d has no tokens", i);
        if ((int64_t)n_toks[i] > limit)
            return pb_fail(err, PB_ETOOLONG, "text %d has %zu tokens; at most %" PRId64 " fit the context", i,
                           n_toks[i], limit);
        for (size_t k = 0; k < n_toks[i]; k++)
            if (toks[i][k] < 0 || toks[i][k] >= s->n_vocab)
                return pb_fail(err, PB_EINVAL, "token id %" PRId32 " is outside the vocabulary (%" PRId32 " tokens)",
                               toks[i][k], s->n_vocab);
    }
    struct embed_job j = {.toks = toks, .n_toks = n_toks, .n_texts = n_texts, .p = *p, .out = out};
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->cancel_all) {
        pthread_mutex_unlock(&s->mu);
        return pb_fail(err, PB_ESTOPPING, "the engine is shutting down");
    }
    struct embed_job **tail = &s->embed_head;
    while (*tail)
        tail = &(*tail)->next;
    *tail = &j;
    pthread_cond_signal(&s->wake);
    while (!j.done)
        pthread_cond_wait(&s->embed_done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (j.rc && err)
        *err = j.err;
    return j.rc;
}

/* Takes queued requests into free slots and ends cancelled ones; sleeps
 * while there is nothing to do. Returns false when stopping. */
static bool gather(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    const bool all = s->cancel_all;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->p.n_slots; i++) {
        struct engine_request *r = s->slots[i].req;
        if (r && (all || atomic_load(&r->cancelled)))
            finish(s, r, ENGINE_FINISH_CANCELLED);
    }
    struct engine_request *admitted = NULL, **tail = &admitted;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            return false;
        }
        /* queued requests whose caller gave up are dropped */
        struct engine_request *dropped = NULL;
        for (struct engine_request **pp = &s->queue_head; *pp;) {
            struct engine_request *q = *pp;
            if (atomic_load(&q->cancelled)) {
                *pp = q->next;
                q->next = dropped;
                dropped = q;
                s->n_queued--;
            } else {
                pp = &q->next;
            }
        }
        s->queue_tail = NULL;
        for (struct engine_request *q = s->queue_head; q; q = q->next)
            s->queue_tail = q;
        if (dropped) {
            pthread_mutex_unlock(&s->mu);
            while (dropped) {
                struct engine_request *q = dropped;
                dropped = q->next;
                finish(s, q, ENGINE_FINISH_CANCELLED);
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        while (s->queue_head && s->n_active < s->p.n_slots) {
            struct engine_request *q = s->queue_head;
            s->queue_head = q->next;
            if (!s->queue_head)
                s->queue_tail = NULL;
            s->n_queued--;
            s->n_active++;
            q->state = REQ_ACTIVE;
            q->slot = choose_slot(s, q);
            s->slots[q->slot].req = q;
            s->slots[q->slot].has_next = false;
            s->slots[q->slot].admitted = ++s->n_admitted;
            q->next = NULL;
            *tail = q;
            tail = &q->next;
        }
        if (s->n_active > 0 || s->embed_head)
            break;
        pthread_cond_wait(&s->wake, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    run_embed_jobs(s);
    uint64_t reused = 0;
    for (struct engine_request *q = admitted; q; q = q->next) {
        admit(s, q);
        follow(s, q);
        reused += (uint64_t)q->res.n_reused; /* a follower's share is counted when it is taken */
    }
    pthread_mutex_lock(&s->mu);
    s->stats.reused_tokens += reused;
    count_kv(s);
    pthread_mutex_unlock(&s->mu);
    return true;
}

/* The k highest logits, highest first, ties to the lower id (insertion into
 * a short sorted list: k is small). */
static int top_logits(const float *logits, int32_t n, int k, int32_t *ids, float *vals)
{
    int have = 0;
    for (int32_t i = 0; i < n; i++) {
        float v = logits[i];
        if (have == k && !(v > vals[k - 1]))
            continue;
        int pos = have < k ? have++ : k - 1;
        while (pos > 0 && v > vals[pos - 1]) {
            vals[pos] = vals[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        vals[pos] = v;
        ids[pos] = i;
    }
    return have;
}

/* Tokens a constrained draw offers the grammar before it falls back to
 * the mask: a mask walks the whole vocabulary's trie where most tokens
 * are allowed (inside strings: milliseconds on a 150k vocabulary), while
 * an offer is one feed of a few bytes. */
#define GRAMMAR_OFFERS 16

struct grammar_offer {
    const struct sched *s;
    struct gmatch *gm;
};

/* Whether the grammar takes token id next (sampler_sample_checked's
 * test): the same answer the mask gives, and a token taken is fed. */
static bool grammar_takes(void *user, int32_t id)
{
    const struct grammar_offer *o = user;
    const struct sched *s = o->s;
    if (tok_is_eog(s->tok, id))
        return gmatch_complete(o->gm);
    const uint32_t len = s->piece_off[id + 1] - s->piece_off[id];
    /* the trie leaves out empty tokens and long ones: never allowed */
    return len > 0 && len <= GRAMMAR_MAX_TOKEN && gmatch_feed(o->gm, s->pieces + s->piece_off[id], len);
}

/* The next token of slot i's request from its logits; false when the
 * request ended. */
static bool sample_next(struct sched *s, int i, const float *logits)
{
    struct slot *sl = &s->slots[i];
    struct engine_request *r = sl->req;
    const double now = sys_now();
    if (r->res.n_gen == 0) {
        r->res.t_prompt = now - r->t_admit;
        r->t_first = now;
    }
    if (r->biased) { /* the request's logit_bias: the logits it samples from and reports */
        memcpy(r->biased, logits, (size_t)s->n_vocab * sizeof *logits);
        for (int k = 0; k < r->p.n_logit_bias; k++)
            r->biased[r->p.logit_bias[k].id] += r->p.logit_bias[k].bias;
        logits = r->biased;
    }
    int32_t id = -1;
    bool fed = false; /* the grammar has taken id already */
    struct gmatch *gm = r->grammar_waits && !r->in_answer ? NULL : r->gm;
    if (gm) {
        /* offered to the grammar first: the mask only when none is taken */
        struct grammar_offer offer = {s, gm};
        id = sampler_sample_checked(r->smp, logits, GRAMMAR_OFFERS, grammar_takes, &offer);
        fed = id >= 0 && !tok_is_eog(s->tok, id);
    }
    if (id >= 0) {
        /* drawn above */
    } else if (gm) {
        gmatch_mask(gm, s->trie, s->allowed);
        const bool complete = gmatch_complete(gm);
        for (int k = 0; k < s->n_eog; k++)
            s->allowed[s->eog[k]] = complete;
        id = sampler_sample_allowed(r->smp, logits, s->allowed);
        if (id < 0) { /* nothing can continue the output: end */
            finish(s, r, ENGINE_FINISH_STOP);
            return false;
        }
    } else {
        id = sampler_sample(r->smp, logits);
    }
    sampler_accept(r->smp, id);
    if (tok_is_eog(s->tok, id) && !r->p.ignore_eog) {
        finish(s, r, ENGINE_FINISH_EOG);
        return false;
    }
    if (gm && !fed && !tok_is_eog(s->tok, id))
        gmatch_feed(gm, s->pieces + s->piece_off[id], s->piece_off[id + 1] - s->piece_off[id]);
    char buf[256];
    size_t n = tok_piece(s->tok, id, false, buf, sizeof buf);
    const char *piece = buf;
    char *big = NULL;
    if (n > sizeof buf) {
        big = malloc(n);
        if (big)
            tok_piece(s->tok, id, false, big, n);
        else
            n = 0;
        piece = big;
    }
    r->text.len = r->raw.len = 0;
    int rc;
    const bool stopped = textout_push(&r->tx, piece, n, r->rsn ? &r->raw : &r->text, &rc);
    free(big);
    split_reasoning(r, false);
    if (r->grammar_waits && !r->in_answer && r->text.len > 0) {
        /* the answer began in this token: what of it came is the
         * grammar's first input (refused, the grammar starts after it) */
        r->in_answer = true;
        gmatch_feed(r->gm, r->text.data, r->text.len);
    }
    if (!rc && r->split_failed)
        rc = PB_ENOMEM;
    if (rc) {
        fail_request(s, r, "out of memory holding the answer's text");
        return false;
    }
    struct engine_step step = {
        .index = r->res.n_gen,
        .id = id,
        .text = r->text.data ? r->text.data : "",
        .text_len = r->text.len,
        .reasoning = r->reasoning.data ? r->reasoning.data : "",
        .reasoning_len = r->reasoning.len,
        .logits = r->p.want_logits ? logits : NULL,
        .n_vocab = s->n_vocab,
        .top_ids = r->top_ids,
        .top_logits = r->top_logits,
        .n_top = r->p.n_top > 0 ? top_logits(logits, s->n_vocab, r->p.n_top, r->top_ids, r->top_logits) : 0,
    };
    r->res.n_gen++;
    pthread_mutex_lock(&s->mu);
    s->stats.generated_tokens++;
    pthread_mutex_unlock(&s->mu);
    const int caller_stop = r->ev.step ? r->ev.step(r->ev.user, &step) : 0;
    if (stopped) {
        finish(s, r, ENGINE_FINISH_STOP);
        return false;
    }
    if (caller_stop) {
        finish(s, r, ENGINE_FINISH_CALLER);
        return false;
    }
    if (r->gm && (!r->grammar_waits || r->in_answer) &&
        (gmatch_done(r->gm) || (r->p.ignore_eog && gmatch_complete(r->gm)))) {
        finish(s, r, ENGINE_FINISH_STOP); /* nothing can follow: no end-of-generation to wait for */
        return false;
    }
    if (r->p.n_predict >= 0 && r->res.n_gen >= r->p.n_predict) {
        finish(s, r, ENGINE_FINISH_LENGTH);
        return false;
    }
    if (model_seq_pos(s->ctx, i) >= s->p.n_ctx) {
        finish(s, r, ENGINE_FINISH_CONTEXT);
        return false;
    }
    sl->next = id;
    sl->has_next = true;
    return true;
}

/* One forward pass: every generating slot's next token, then prompt
 * chunks (oldest admission first) within the batch. */
static void step(struct sched *s)
{
    catch_up(s);
    int n_segs = 0, n_tok = 0;
    for (int i = 0; i < s->p.n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->req || !sl->has_next)
            continue;
        s->tokens[n_tok++] = sl->next;
        s->segs[n_segs] = (struct model_seg){.seq = i, .n = 1, .logits = true};
        s->seg_slot[n_segs++] = i;
    }
    int budget = s->p.n_batch - n_tok;
    if (n_segs > 0) {
        /* generating slots wait for each step: prompt tokens only as far
         * as the step stays near its target time */
        int fit = s->token_s > 0 ? (int)(s->p.step_target_s / s->token_s) - n_tok : s->p.prefill_chunk;
        if (fit < MIN_PREFILL)
            fit = MIN_PREFILL;
        if (fit > s->p.prefill_chunk)
            fit = s->p.prefill_chunk;
        if (budget > fit)
            budget = fit;
    }
    while (budget > 0) {
        int pick = -1;
        for (int i = 0; i < s->p.n_slots; i++) {
            const struct slot *sl = &s->slots[i];
            if (!sl->req || sl->has_next || sl->req->n_evaluated >= sl->req->n_prompt || sl->req->leader)
                continue;
            bool taken = false;
            for (int k = 0; k < n_segs; k++)
                taken |= s->seg_slot[k] == i;
            if (!taken && (pick < 0 || sl->admitted < s->slots[pick].admitted))
                pick = i;
        }
        if (pick < 0)
            break;
        struct engine_request *r = s->slots[pick].req;
        int64_t left = r->n_prompt - r->n_evaluated;
        int k = left < budget ? (int)left : budget;
        memcpy(s->tokens + n_tok, r->prompt + r->n_evaluated, (size_t)k * sizeof *s->tokens);
        s->segs[n_segs] = (struct model_seg){.seq = pick, .n = k, .logits = k == left};
        s->seg_slot[n_segs++] = pick;
        n_tok += k;
        budget -= k;
    }
    if (n_segs == 0)
        return;
    pb_err err;
    const double t0 = sys_now();
    double parts[PB_PART_COUNT];
    model_ctx_part_seconds(s->ctx, parts);
    int rc = model_eval_batch(s->ctx, s->tokens, s->segs, n_segs, s->logits, &err);
    const double t1 = sys_now();
    const double per = (t1 - t0) / n_tok;
    s->token_s = s->token_s > 0 ? 0.8 * s->token_s + 0.2 * per : per;
    /* the positions held, before any request of this step reports its end */
    pthread_mutex_lock(&s->mu);
    count_kv(s);
    /* counted before sampling ends any request: a caller that reads the
     * stats when its request is done finds its last pass in them */
    s->stats.steps++;
    s->stats.step_tokens += (uint64_t)n_tok;
    s->stats.step_seconds += t1 - t0;
    add_parts(s, parts);
    pthread_mutex_unlock(&s->mu);
    int with_logits = 0;
    for (int k = 0; k < n_segs; k++) {
        struct slot *sl = &s->slots[s->seg_slot[k]];
        struct engine_request *r = sl->req;
        if (rc) {
            fail_request(s, r, err.msg);
            continue;
        }
        if (sl->has_next)
            sl->has_next = false;
        else
            r->n_evaluated += s->segs[k].n;
        if (s->segs[k].logits) {
            const float *lg = s->logits + (size_t)with_logits++ * (size_t)s->n_vocab;
            if (atomic_load(&r->cancelled))
                finish(s, r, ENGINE_FINISH_CANCELLED);
            else
                sample_next(s, s->seg_slot[k], lg);
        }
    }
    pthread_mutex_lock(&s->mu);
    s->stats.sample_seconds += sys_now() - t1;
    pthread_mutex_unlock(&s->mu);
}

static void *loop(void *arg)
{
    struct sched *s = arg;
    while (gather(s))
        step(s);
    return NULL;
}
