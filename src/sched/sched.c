/* Continuous batching over the slots of one model context (sched.h). */
#include "sched/sched.h"

#include "base/pool.h"
#include "base/sys.h"
#include "sampler/json_guard.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BATCH 512
#define DEFAULT_PREFILL_CHUNK 256
#define DEFAULT_STEP_TARGET 0.15
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

struct sched_req {
    struct sched_req *next; /* queue */
    int refs;               /* the scheduler's and the caller's (under s->mu) */
    enum req_state state;   /* under s->mu */
    atomic_bool cancelled;
    struct sched_req_params p;
    struct sched_events ev;
    int32_t *prompt;
    int64_t n_prompt;
    /* the scheduler thread's own from here */
    int slot;
    int64_t n_evaluated; /* prompt tokens in the slot's cache */
    struct sampler *smp;
    struct json_guard guard;
    struct sched_result res;
    double t_submit, t_admit;
};

struct slot {
    int32_t *cached;  /* the tokens the sequence's cache holds */
    int64_t n_cached; /* == model_seq_pos */
    struct sched_req *req;
    int32_t next;     /* a sampled token to evaluate */
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
    uint8_t *allowed; /* JSON mode's mask */
    /* every token's text (for JSON mode): piece_off[i] .. piece_off[i + 1] in pieces */
    char *pieces;
    uint32_t *piece_off;
    uint64_t n_admitted;
    double token_s; /* seconds per token of recent steps (0: none measured) */

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stop;
    bool cancel_all; /* sched_cancel_all */
    struct sched_req *queue_head, *queue_tail;
    int n_queued, n_active;
    struct sched_stats stats; /* counters, under mu */
};

const struct tokenizer *sched_tokenizer(const struct sched *s) { return s->tok; }
int64_t sched_n_ctx(const struct sched *s) { return s->p.n_ctx; }

static void req_free(struct sched_req *r)
{
    sampler_free(r->smp);
    free(r->prompt);
    free(r);
}

/* Drops one reference (under s->mu). */
static void req_unref(struct sched_req *r)
{
    if (--r->refs == 0)
        req_free(r);
}

/* ---- token texts for JSON mode ---- */

static int build_pieces(struct sched *s, pb_err *err)
{
    size_t cap = 1 << 16, used = 0;
    s->pieces = malloc(cap);
    s->piece_off = malloc(((size_t)s->n_vocab + 1) * sizeof *s->piece_off);
    if (!s->pieces || !s->piece_off)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    char buf[256];
    for (int32_t i = 0; i < s->n_vocab; i++) {
        s->piece_off[i] = (uint32_t)used;
        size_t n = tok_piece(s->tok, i, false, buf, sizeof buf);
        if (n > sizeof buf)
            n = 0; /* a token longer than any JSON needs: never chosen in JSON mode */
        if (used + n > cap) {
            cap *= 2;
            char *np = realloc(s->pieces, cap);
            if (!np)
                return pb_fail(err, PB_ENOMEM, "out of memory");
            s->pieces = np;
        }
        memcpy(s->pieces + used, buf, n);
        used += n;
        if (used > UINT32_MAX - 256)
            return pb_fail(err, PB_EUNSUPPORTED, "vocabulary texts too large");
    }
    s->piece_off[s->n_vocab] = (uint32_t)used;
    return PB_OK;
}

/* allowed[i]: token i keeps the text a JSON object (end-of-generation
 * only once it is complete, and then only that). */
static void json_mask(struct sched *s, const struct json_guard *g)
{
    const bool complete = json_guard_complete(g);
    for (int32_t i = 0; i < s->n_vocab; i++) {
        if (tok_is_eog(s->tok, i)) {
            s->allowed[i] = complete;
            continue;
        }
        const uint32_t a = s->piece_off[i], n = s->piece_off[i + 1] - a;
        struct json_guard t = *g;
        s->allowed[i] = !complete && n > 0 && json_guard_feed(&t, s->pieces + a, n);
    }
}

/* ---- creation ---- */

static void *loop(void *arg);

int sched_create(const struct model *m, const struct tokenizer *tok, const struct sched_params *p, struct sched **out,
                 pb_err *err)
{
    *out = NULL;
    if (p->n_slots < 1 || p->n_slots > 256)
        return pb_fail(err, PB_EINVAL, "%d parallel slots: 1..256", p->n_slots);
    if (p->max_queue < 0)
        return pb_fail(err, PB_EINVAL, "a negative queue length");
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    s->m = m;
    s->tok = tok;
    s->p = *p;
    if (s->p.n_batch <= 0)
        s->p.n_batch = DEFAULT_BATCH;
    if (s->p.n_batch < s->p.n_slots)
        s->p.n_batch = s->p.n_slots; /* every slot's token fits one step */
    if (s->p.prefill_chunk <= 0)
        s->p.prefill_chunk = DEFAULT_PREFILL_CHUNK;
    if (!(s->p.step_target_s > 0))
        s->p.step_target_s = DEFAULT_STEP_TARGET;
    s->n_vocab = (int32_t)model_hparams(m)->n_vocab;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    struct model_ctx_params cp = {
        .n_ctx = p->n_ctx,
        .n_batch = s->p.n_batch,
        .n_threads = p->n_threads > 0 ? p->n_threads : pool_cpu_count(),
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
    for (size_t i = 0; i < ns; i++)
        if (!(s->slots[i].cached = malloc((size_t)p->n_ctx * sizeof *s->slots[i].cached))) {
            rc = pb_fail(err, PB_ENOMEM, "out of memory for %d slots", p->n_slots);
            goto fail;
        }
    if ((rc = build_pieces(s, err)))
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

/* Ends r (scheduler thread, not under mu): frees its slot, reports done. */
static void finish(struct sched *s, struct sched_req *r, enum sched_finish f)
{
    r->res.finish = f;
    r->res.t_total = sys_now() - r->t_submit;
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
    /* what is left ends as cancelled */
    for (int i = 0; s->slots && i < s->p.n_slots; i++)
        if (s->slots[i].req)
            finish(s, s->slots[i].req, SCHED_FINISH_CANCELLED);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct sched_req *r = s->queue_head;
        if (r) {
            s->queue_head = r->next;
            s->n_queued--;
        }
        pthread_mutex_unlock(&s->mu);
        if (!r)
            break;
        r->slot = -1;
        finish(s, r, SCHED_FINISH_CANCELLED);
    }
    for (int i = 0; s->slots && i < s->p.n_slots; i++)
        free(s->slots[i].cached);
    free(s->slots);
    free(s->tokens);
    free(s->segs);
    free(s->seg_slot);
    free(s->logits);
    free(s->allowed);
    free(s->pieces);
    free(s->piece_off);
    model_ctx_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
}

/* ---- requests ---- */

int sched_submit(struct sched *s, const int32_t *prompt, size_t n_prompt, const struct sched_req_params *p,
                 const struct sched_events *ev, struct sched_req **out, pb_err *err)
{
    *out = NULL;
    if (n_prompt == 0)
        return pb_fail(err, PB_EINVAL, "the prompt is empty");
    if ((int64_t)n_prompt >= s->p.n_ctx)
        return pb_fail(err, PB_ERANGE, "the prompt has %zu tokens; a slot's context holds %" PRId64
                       " with room for the answer", n_prompt, s->p.n_ctx);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->n_vocab)
            return pb_fail(err, PB_EINVAL, "token id %" PRId32 " out of range", prompt[i]);
    struct sched_req *r = calloc(1, sizeof *r);
    if (!r)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    r->p = *p;
    r->ev = *ev;
    r->slot = -1;
    r->n_prompt = (int64_t)n_prompt;
    r->refs = 2;
    atomic_init(&r->cancelled, false);
    json_guard_init(&r->guard);
    r->prompt = malloc(n_prompt * sizeof *prompt);
    int rc = r->prompt ? sampler_create(&p->sampling, s->n_vocab, &r->smp, err)
                       : pb_fail(err, PB_ENOMEM, "out of memory");
    if (rc) {
        req_free(r);
        return rc;
    }
    memcpy(r->prompt, prompt, n_prompt * sizeof *prompt);
    r->res.n_prompt = (int)n_prompt;
    r->t_submit = sys_now();
    pthread_mutex_lock(&s->mu);
    const int free_slots = s->p.n_slots - s->n_active;
    if (s->stop || s->cancel_all || s->n_queued >= s->p.max_queue + (free_slots > 0 ? free_slots : 0)) {
        const bool stopping = s->stop || s->cancel_all;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return stopping ? pb_fail(err, PB_ERANGE, "the server is stopping")
                        : pb_fail(err, PB_ERANGE, "all %d slots are busy and %d requests wait already",
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

void sched_cancel(struct sched *s, struct sched_req *r)
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
    for (struct sched_req *q = s->queue_head; q; q = q->next)
        atomic_store(&q->cancelled, true);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sched_release(struct sched *s, struct sched_req *r)
{
    if (!r)
        return;
    atomic_store(&r->cancelled, true); /* nobody listens any more */
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->wake);
    req_unref(r);
    pthread_mutex_unlock(&s->mu);
}

void sched_get_stats(struct sched *s, struct sched_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    st->active = s->n_active;
    st->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}

/* ---- the loop ---- */

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb)
{
    int64_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Puts r in a free slot: the one whose cache shares the longest prefix
 * with the prompt, or a copy of a longer prefix another slot holds. At
 * least the prompt's last token is evaluated, for its logits. */
static void admit(struct sched *s, struct sched_req *r)
{
    int best = -1, lru = -1;
    int64_t best_lcp = -1;
    for (int i = 0; i < s->p.n_slots; i++) {
        const struct slot *sl = &s->slots[i];
        if (sl->req)
            continue;
        int64_t lcp = common_prefix(sl->cached, sl->n_cached, r->prompt, r->n_prompt);
        if (lcp > best_lcp) {
            best = i;
            best_lcp = lcp;
        }
        if (lru < 0 || sl->admitted < s->slots[lru].admitted)
            lru = i;
    }
    if (best_lcp < MIN_REUSE_TOKENS && best_lcp < r->n_prompt - 1) {
        /* nothing worth keeping here: the least recently used slot, so
         * that the caches other prompts may want live longest */
        best = lru;
        best_lcp = common_prefix(s->slots[lru].cached, s->slots[lru].n_cached, r->prompt, r->n_prompt);
    }
    struct slot *sl = &s->slots[best];
    int64_t keep = best_lcp < r->n_prompt - 1 ? best_lcp : r->n_prompt - 1;
    /* a longer prefix elsewhere */
    int src = -1;
    int64_t src_lcp = keep + MIN_COPY_TOKENS - 1;
    for (int i = 0; i < s->p.n_slots; i++) {
        if (i == best)
            continue;
        int64_t lcp = common_prefix(s->slots[i].cached, s->slots[i].n_cached, r->prompt, r->n_prompt);
        if (lcp > r->n_prompt - 1)
            lcp = r->n_prompt - 1;
        if (lcp > src_lcp) {
            src = i;
            src_lcp = lcp;
        }
    }
    if (src >= 0 && model_seq_copy(s->ctx, best, src, src_lcp, NULL) == PB_OK) {
        memcpy(sl->cached, s->slots[src].cached, (size_t)src_lcp * sizeof *sl->cached);
        keep = src_lcp;
    } else {
        model_seq_truncate(s->ctx, best, keep);
    }
    sl->n_cached = keep;
    sl->req = r;
    sl->has_next = false;
    sl->admitted = ++s->n_admitted;
    r->slot = best;
    r->n_evaluated = keep;
    r->res.n_reused = (int)keep;
    r->t_admit = sys_now();
    r->res.t_queued = r->t_admit - r->t_submit;
    for (int64_t i = 0; i < r->n_prompt; i++)
        sampler_accept(r->smp, r->prompt[i]);
}

/* Takes queued requests into free slots and ends cancelled ones; sleeps
 * while there is nothing to do. Returns false when stopping. */
static bool gather(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    const bool all = s->cancel_all;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->p.n_slots; i++) {
        struct sched_req *r = s->slots[i].req;
        if (r && (all || atomic_load(&r->cancelled)))
            finish(s, r, SCHED_FINISH_CANCELLED);
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            return false;
        }
        /* queued requests whose caller gave up are dropped */
        struct sched_req *dropped = NULL;
        for (struct sched_req **pp = &s->queue_head; *pp;) {
            struct sched_req *q = *pp;
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
        for (struct sched_req *q = s->queue_head; q; q = q->next)
            s->queue_tail = q;
        if (dropped) {
            pthread_mutex_unlock(&s->mu);
            while (dropped) {
                struct sched_req *q = dropped;
                dropped = q->next;
                finish(s, q, SCHED_FINISH_CANCELLED);
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        while (s->queue_head && s->n_active < s->p.n_slots) {
            struct sched_req *q = s->queue_head;
            s->queue_head = q->next;
            if (!s->queue_head)
                s->queue_tail = NULL;
            s->n_queued--;
            s->n_active++;
            q->state = REQ_ACTIVE;
            admit(s, q);
            s->stats.reused_tokens += (uint64_t)q->res.n_reused;
        }
        if (s->n_active > 0)
            break;
        pthread_cond_wait(&s->wake, &s->mu);
    }
    int64_t used = 0;
    for (int i = 0; i < s->p.n_slots; i++)
        used += s->slots[i].n_cached;
    s->stats.kv_used = used;
    pthread_mutex_unlock(&s->mu);
    return true;
}

/* The next token of slot i's request from its logits; false when the
 * request ended. */
static bool sample_next(struct sched *s, int i, const float *logits)
{
    struct slot *sl = &s->slots[i];
    struct sched_req *r = sl->req;
    if (r->res.n_gen == 0)
        r->res.t_prompt = sys_now() - r->t_admit;
    int32_t id;
    if (r->p.json_object) {
        json_mask(s, &r->guard);
        id = sampler_sample_allowed(r->smp, logits, s->allowed);
        if (id < 0) { /* nothing can continue the object: end */
            finish(s, r, SCHED_FINISH_STOP);
            return false;
        }
    } else {
        id = sampler_sample(r->smp, logits);
    }
    sampler_accept(r->smp, id);
    if (tok_is_eog(s->tok, id) && !r->p.ignore_eog) {
        finish(s, r, SCHED_FINISH_EOG);
        return false;
    }
    if (r->p.json_object)
        json_guard_feed(&r->guard, s->pieces + s->piece_off[id], s->piece_off[id + 1] - s->piece_off[id]);
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
    r->res.n_gen++;
    pthread_mutex_lock(&s->mu);
    s->stats.generated_tokens++;
    pthread_mutex_unlock(&s->mu);
    int stop = r->ev.token ? r->ev.token(r->ev.user, id, piece, n) : 0;
    free(big);
    if (stop) {
        finish(s, r, SCHED_FINISH_STOP);
        return false;
    }
    if (r->p.n_predict >= 0 && r->res.n_gen >= r->p.n_predict) {
        finish(s, r, SCHED_FINISH_LENGTH);
        return false;
    }
    if (sl->n_cached >= s->p.n_ctx) {
        finish(s, r, SCHED_FINISH_CONTEXT);
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
            if (!sl->req || sl->has_next || sl->req->n_evaluated >= sl->req->n_prompt)
                continue;
            bool taken = false;
            for (int k = 0; k < n_segs; k++)
                taken |= s->seg_slot[k] == i;
            if (!taken && (pick < 0 || sl->admitted < s->slots[pick].admitted))
                pick = i;
        }
        if (pick < 0)
            break;
        struct sched_req *r = s->slots[pick].req;
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
    int rc = model_eval_batch(s->ctx, s->tokens, s->segs, n_segs, s->logits, &err);
    const double t1 = sys_now();
    const double per = (t1 - t0) / n_tok;
    s->token_s = s->token_s > 0 ? 0.8 * s->token_s + 0.2 * per : per;
    int with_logits = 0;
    for (int k = 0, off = 0; k < n_segs; off += s->segs[k].n, k++) {
        struct slot *sl = &s->slots[s->seg_slot[k]];
        struct sched_req *r = sl->req;
        if (rc) {
            snprintf(r->res.error, sizeof r->res.error, "%s", err.msg);
            finish(s, r, SCHED_FINISH_ERROR);
            continue;
        }
        memcpy(sl->cached + sl->n_cached, s->tokens + off, (size_t)s->segs[k].n * sizeof *sl->cached);
        sl->n_cached += s->segs[k].n;
        if (sl->has_next)
            sl->has_next = false;
        else
            r->n_evaluated += s->segs[k].n;
        if (s->segs[k].logits) {
            const float *lg = s->logits + (size_t)with_logits++ * (size_t)s->n_vocab;
            if (atomic_load(&r->cancelled))
                finish(s, r, SCHED_FINISH_CANCELLED);
            else
                sample_next(s, s->seg_slot[k], lg);
        }
    }
    pthread_mutex_lock(&s->mu);
    s->stats.steps++;
    s->stats.step_tokens += (uint64_t)n_tok;
    s->stats.step_seconds += t1 - t0;
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
