#define _POSIX_C_SOURCE 200809L
/* The scheduler: many requests batched together give each the tokens it
 * gets alone; queue limits, cancellation, prefix reuse, JSON mode. */
#include "testutil.h"

#include "base/sys.h"
#include "sampler/json_guard.h"
#include "sched/sched.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What a request produced, filled on the scheduler's thread. */
struct outcome {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct sched_result res;
    int32_t ids[256];
    int n;
    char text[4096];
    size_t text_len;
    int stop_after; /* > 0: the token callback stops after this many */
    bool json_ok;   /* every text prefix was a JSON object prefix */
    struct json_guard g;
};

static void outcome_init(struct outcome *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->json_ok = true;
    json_guard_init(&o->g);
}

static int on_token(void *user, int32_t id, const char *piece, size_t len)
{
    struct outcome *o = user;
    pthread_mutex_lock(&o->mu);
    if (o->n < 256)
        o->ids[o->n++] = id;
    if (o->text_len + len < sizeof o->text) {
        memcpy(o->text + o->text_len, piece, len);
        o->text_len += len;
    }
    if (o->json_ok && !json_guard_feed(&o->g, piece, len))
        o->json_ok = false;
    int stop = o->stop_after > 0 && o->n >= o->stop_after;
    pthread_mutex_unlock(&o->mu);
    return stop;
}

static void on_done(void *user, const struct sched_result *r)
{
    struct outcome *o = user;
    pthread_mutex_lock(&o->mu);
    o->res = *r;
    o->done = true;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void wait_done(struct outcome *o)
{
    pthread_mutex_lock(&o->mu);
    while (!o->done)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
}

struct fixture {
    struct model *m;
    struct tokenizer *tok;
};

static struct fixture load(const char *type)
{
    struct fixture f;
    pb_err err;
    if (model_load(test_tiny_model(type), &f.m, &err) || tok_load(model_gguf(f.m), &f.tok, &err))
        fail_msg("%s", err.msg);
    return f;
}

static void unload(struct fixture *f)
{
    tok_free(f->tok);
    model_free(f->m);
}

static struct sched *make(const struct fixture *f, int slots, int max_queue, int64_t n_ctx)
{
    struct sched_params p = {.n_slots = slots, .n_ctx = n_ctx, .n_batch = 64, .n_threads = 2, .max_queue = max_queue,
                             .prefill_chunk = 16};
    struct sched *s;
    pb_err err;
    if (sched_create(f->m, f->tok, &p, &s, &err))
        fail_msg("%s", err.msg);
    return s;
}

static struct sched_req *submit(struct sched *s, const int32_t *prompt, int n, const struct sched_req_params *rp,
                                struct outcome *o)
{
    struct sched_events ev = {o, on_token, on_done};
    struct sched_req *r;
    pb_err err;
    if (sched_submit(s, prompt, (size_t)n, rp, &ev, &r, &err))
        fail_msg("%s", err.msg);
    return r;
}

static void make_prompt(int32_t *p, int n, int k)
{
    p[0] = 1;
    for (int i = 1; i < n; i++)
        p[i] = 3 + (k * 37 + i * 11) % 900;
}

static struct sched_req_params params_of(int k)
{
    struct sched_req_params rp = {.sampling = sampler_defaults(), .n_predict = 12, .ignore_eog = true};
    if (k % 2) { /* half greedy, half sampled with a seed */
        rp.sampling.temp = 0;
    } else {
        rp.sampling.temp = 0.9f;
        rp.sampling.seed = 1000 + (uint64_t)k;
        rp.sampling.frequency_penalty = 0.2f;
    }
    return rp;
}

/* 16 requests with different prompts (and sampling) at once on 8 slots,
 * a queue of 8: each gives exactly the tokens it gives alone. */
static void test_batched_equals_alone(void **state)
{
    (void)state;
    struct fixture f = load("Q4_0");
    enum { N = 16 };
    static struct outcome alone[N], together[N];
    int32_t prompts[N][40];
    int lens[N];
    struct sched *s1 = make(&f, 1, 0, 128);
    for (int k = 0; k < N; k++) {
        lens[k] = 5 + (k * 7) % 30;
        make_prompt(prompts[k], lens[k], k);
        struct sched_req_params rp = params_of(k);
        outcome_init(&alone[k]);
        struct sched_req *r = submit(s1, prompts[k], lens[k], &rp, &alone[k]);
        wait_done(&alone[k]);
        sched_release(s1, r);
        assert_int_equal(alone[k].res.finish, SCHED_FINISH_LENGTH);
        assert_int_equal(alone[k].n, 12);
    }
    sched_free(s1);

    struct sched *s = make(&f, 8, 8, 128);
    struct sched_req *reqs[N];
    for (int k = 0; k < N; k++) {
        struct sched_req_params rp = params_of(k);
        outcome_init(&together[k]);
        reqs[k] = submit(s, prompts[k], lens[k], &rp, &together[k]);
    }
    for (int k = 0; k < N; k++) {
        wait_done(&together[k]);
        sched_release(s, reqs[k]);
        assert_int_equal(together[k].res.finish, SCHED_FINISH_LENGTH);
        assert_int_equal(together[k].n, alone[k].n);
        if (memcmp(together[k].ids, alone[k].ids, sizeof(int32_t) * (size_t)alone[k].n) != 0)
            fail_msg("request %d: different tokens among 15 others than alone", k);
    }
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_int_equal(st.generated_tokens, N * 12);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.queued, 0);
    assert_true(st.steps < N * 12); /* tokens of several requests per step */
    sched_free(s);
    unload(&f);
}

/* A full queue refuses; a prompt that does not fit is refused. */
static void test_limits(void **state)
{
    (void)state;
    struct fixture f = load("Q8_0");
    struct sched *s = make(&f, 1, 1, 64);
    int32_t p[8];
    make_prompt(p, 8, 1);
    struct sched_req_params rp = params_of(1);
    rp.n_predict = 40;
    static struct outcome o[3];
    outcome_init(&o[0]);
    outcome_init(&o[1]);
    struct sched_req *r0 = submit(s, p, 8, &rp, &o[0]), *r1 = submit(s, p, 8, &rp, &o[1]);
    /* one running (or about to), one waiting: a third finds the queue full */
    struct sched_events ev = {&o[2], on_token, on_done};
    struct sched_req *r2;
    pb_err err;
    int rc = sched_submit(s, p, 8, &rp, &ev, &r2, &err);
    assert_int_equal(rc, PB_ERANGE);
    int32_t big[64] = {0};
    assert_int_equal(sched_submit(s, big, 64, &rp, &ev, &r2, &err), PB_ERANGE);
    assert_int_equal(sched_submit(s, big, 0, &rp, &ev, &r2, &err), PB_EINVAL);
    big[3] = 5000; /* beyond the vocabulary */
    assert_int_equal(sched_submit(s, big, 8, &rp, &ev, &r2, &err), PB_EINVAL);
    wait_done(&o[0]);
    wait_done(&o[1]);
    /* 40 tokens after 8 fit the 64 positions of the slot */
    assert_int_equal(o[0].res.finish, SCHED_FINISH_LENGTH);
    assert_int_equal(o[1].res.finish, SCHED_FINISH_LENGTH);
    sched_release(s, r0);
    sched_release(s, r1);
    /* a request that runs into the end of its context */
    rp.n_predict = -1;
    outcome_init(&o[2]);
    r2 = submit(s, p, 8, &rp, &o[2]);
    wait_done(&o[2]);
    assert_int_equal(o[2].res.finish, SCHED_FINISH_CONTEXT);
    assert_int_equal(o[2].n, 64 - 8 + 1); /* the last token is reported, not evaluated */
    sched_release(s, r2);
    sched_free(s);
    unload(&f);
}

/* Cancelling frees the slot for the next request; a callback's stop ends
 * its request; freeing the scheduler ends what is left as cancelled. */
static void test_cancel_and_stop(void **state)
{
    (void)state;
    struct fixture f = load("Q8_0");
    struct sched *s = make(&f, 1, 4, 512);
    int32_t p[8];
    make_prompt(p, 8, 2);
    struct sched_req_params rp = params_of(1);
    rp.n_predict = 400;
    static struct outcome a, b, c, d;
    outcome_init(&a);
    outcome_init(&b);
    struct sched_req *ra = submit(s, p, 8, &rp, &a);
    rp.n_predict = 5;
    struct sched_req *rb = submit(s, p, 8, &rp, &b);
    /* let a generate a little, then cancel it: b gets the slot */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&a.mu);
        int n = a.n;
        pthread_mutex_unlock(&a.mu);
        if (n >= 3)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    sched_cancel(s, ra);
    wait_done(&a);
    assert_int_equal(a.res.finish, SCHED_FINISH_CANCELLED);
    assert_true(a.n < 400);
    wait_done(&b);
    assert_int_equal(b.res.finish, SCHED_FINISH_LENGTH);
    sched_release(s, ra);
    sched_release(s, rb);

    outcome_init(&c);
    c.stop_after = 3;
    rp.n_predict = 50;
    struct sched_req *rc_ = submit(s, p, 8, &rp, &c);
    wait_done(&c);
    assert_int_equal(c.res.finish, SCHED_FINISH_STOP);
    assert_int_equal(c.n, 3);
    sched_release(s, rc_);

    outcome_init(&d);
    rp.n_predict = 100000;
    struct sched_req *rd = submit(s, p, 8, &rp, &d);
    sched_release(s, rd); /* the caller gives up at once */
    sched_free(s);        /* ends it (cancelled), reported once */
    assert_true(d.done);
    assert_int_equal(d.res.finish, SCHED_FINISH_CANCELLED);
    unload(&f);
}

/* A prompt that continues a finished one reuses its cache; one that
 * shares a long prefix with another slot's copies it; the tokens are the
 * same as computed from scratch. */
static void test_prefix_reuse(void **state)
{
    (void)state;
    struct fixture f = load("Q4_K_M");
    int32_t base[48];
    make_prompt(base, 48, 3);
    int32_t other[48];
    make_prompt(other, 48, 4);
    struct sched_req_params rp = params_of(1);
    rp.n_predict = 6;
    /* from scratch */
    static struct outcome ref, o1, o2, o3;
    struct sched *s = make(&f, 1, 0, 256);
    outcome_init(&ref);
    struct sched_req *r = submit(s, base, 48, &rp, &ref);
    wait_done(&ref);
    sched_release(s, r);
    sched_free(s);

    s = make(&f, 2, 0, 256);
    outcome_init(&o1);
    r = submit(s, base, 30, &rp, &o1); /* the first 30 tokens */
    wait_done(&o1);
    sched_release(s, r);
    outcome_init(&o2);
    r = submit(s, base, 48, &rp, &o2); /* continues them: reused */
    wait_done(&o2);
    sched_release(s, r);
    assert_int_equal(o2.res.n_reused, 30);
    assert_memory_equal(o2.ids, ref.ids, sizeof(int32_t) * 6);
    sched_free(s);

    /* a busy slot holds the prompt: the free one copies its prefix */
    s = make(&f, 2, 0, 256);
    static struct outcome busy;
    outcome_init(&busy);
    struct sched_req_params long_rp = rp;
    long_rp.n_predict = 100;
    struct sched_req *rbusy = submit(s, base, 48, &long_rp, &busy);
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&busy.mu);
        int n = busy.n;
        pthread_mutex_unlock(&busy.mu);
        if (n >= 1)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    outcome_init(&o3);
    r = submit(s, base, 48, &rp, &o3);
    wait_done(&o3);
    sched_release(s, r);
    assert_int_equal(o3.res.n_reused, 47); /* all but the last token, for its logits */
    assert_memory_equal(o3.ids, ref.ids, sizeof(int32_t) * 6);
    sched_cancel(s, rbusy);
    wait_done(&busy);
    sched_release(s, rbusy);
    assert_memory_equal(busy.ids, ref.ids, sizeof(int32_t) * 6);
    struct sched_stats st;
    sched_get_stats(s, &st);
    assert_int_equal(st.reused_tokens, 47);
    sched_free(s);
    unload(&f);
}

/* JSON mode: every prefix of the text is a prefix of a JSON object, and
 * a request that ends by itself ends with a complete object. */
static void test_json_mode(void **state)
{
    (void)state;
    struct fixture f = load("Q8_0");
    struct sched *s = make(&f, 4, 4, 512);
    static struct outcome o[4];
    struct sched_req *r[4];
    for (int k = 0; k < 4; k++) {
        int32_t p[6];
        make_prompt(p, 6, k);
        struct sched_req_params rp = {.sampling = sampler_defaults(), .n_predict = 200, .json_object = true};
        rp.sampling.seed = (uint64_t)k;
        rp.sampling.temp = k ? 1.0f : 0;
        outcome_init(&o[k]);
        r[k] = submit(s, p, 6, &rp, &o[k]);
    }
    for (int k = 0; k < 4; k++) {
        wait_done(&o[k]);
        sched_release(s, r[k]);
        assert_true(o[k].json_ok);
        assert_true(o[k].n > 0);
        size_t w = strspn(o[k].text, " \t\r\n");
        assert_true(w < o[k].text_len && o[k].text[w] == '{');
        if (o[k].res.finish != SCHED_FINISH_LENGTH)
            assert_true(json_guard_complete(&o[k].g));
        print_message("  request %d: %d tokens, %s: %.60s\n", k, o[k].n,
                      json_guard_complete(&o[k].g) ? "a complete object" : "an open object", o[k].text);
    }
    sched_free(s);
    unload(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cancel_and_stop),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_json_mode),
    };
    return cmocka_run_group_tests_name("sched", tests, NULL, NULL);
}
