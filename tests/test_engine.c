#define _POSIX_C_SOURCE 200809L
/* The engine's generation loop: many requests batched together give each
 * the tokens it gets alone; queue limits, cancellation, prefix reuse,
 * JSON mode, stop strings, text held to whole characters, reported
 * logits, threads shared by engines, the memory estimate. */
#include "testutil.h"

#include "base/sys.h"
#include "plumb/engine.h"
#include "engine/textout.h"
#include "sampler/grammar.h"
#include "sampler/sampler.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What a request produced, filled on the scheduler's thread. */
struct outcome {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct engine_result res;
    int32_t ids[256];
    int n;
    char text[4096];
    size_t text_len;
    int stop_after; /* > 0: the token callback stops after this many */
    bool hold;      /* the token callback waits while this is set (the engine's thread with it) */
};

static void outcome_init(struct outcome *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
}

static void add_text(struct outcome *o, const char *text, size_t len)
{
    if (o->text_len + len < sizeof o->text) {
        memcpy(o->text + o->text_len, text, len);
        o->text_len += len;
    }
}

static int on_step(void *user, const struct engine_step *st)
{
    struct outcome *o = user;
    pthread_mutex_lock(&o->mu);
    if (o->n < 256)
        o->ids[o->n++] = st->id;
    add_text(o, st->text, st->text_len);
    int stop = o->stop_after > 0 && o->n >= o->stop_after;
    while (o->hold)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
    return stop;
}

static void on_done(void *user, const struct engine_result *r)
{
    struct outcome *o = user;
    pthread_mutex_lock(&o->mu);
    add_text(o, r->tail, r->tail_len);
    o->res = *r;
    o->res.tail = NULL;
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

/* An engine on the tiny model of a type: slots, queue and context. */
static struct engine *make(const char *type, int slots, int max_queue, int64_t n_ctx)
{
    struct engine_params p = engine_defaults();
    p.n_slots = slots;
    p.n_ctx = n_ctx;
    p.n_batch = 64;
    p.n_threads = 2;
    p.max_queue = max_queue;
    p.prefill_chunk = 16;
    struct engine *e;
    pb_err err;
    if (engine_open(test_tiny_model(type), &p, &e, &err))
        fail_msg("%s", err.msg);
    return e;
}

static struct engine_request *submit(struct engine *e, const int32_t *prompt, int n,
                                     const struct engine_request_params *rp, struct outcome *o)
{
    struct engine_events ev = {o, on_step, on_done};
    struct engine_request *r;
    pb_err err;
    if (engine_submit(e, prompt, (size_t)n, rp, &ev, &r, &err))
        fail_msg("%s", err.msg);
    return r;
}

static void make_prompt(int32_t *p, int n, int k)
{
    p[0] = 1;
    for (int i = 1; i < n; i++)
        p[i] = 3 + (k * 37 + i * 11) % 900;
}

static struct engine_request_params params_of(int k)
{
    struct engine_request_params rp = engine_request_defaults();
    rp.n_predict = 12;
    rp.ignore_eog = true;
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
        enum { N = 16 };
    static struct outcome alone[N], together[N];
    int32_t prompts[N][40];
    int lens[N];
    struct engine *s1 = make("Q4_0", 1, 0, 128);
    for (int k = 0; k < N; k++) {
        lens[k] = 5 + (k * 7) % 30;
        make_prompt(prompts[k], lens[k], k);
        struct engine_request_params rp = params_of(k);
        outcome_init(&alone[k]);
        struct engine_request *r = submit(s1, prompts[k], lens[k], &rp, &alone[k]);
        wait_done(&alone[k]);
        engine_release(s1, r);
        assert_int_equal(alone[k].res.finish, ENGINE_FINISH_LENGTH);
        assert_int_equal(alone[k].n, 12);
    }
    engine_close(s1);

    struct engine *s = make("Q4_0", 8, 8, 128);
    struct engine_request *reqs[N];
    for (int k = 0; k < N; k++) {
        struct engine_request_params rp = params_of(k);
        outcome_init(&together[k]);
        reqs[k] = submit(s, prompts[k], lens[k], &rp, &together[k]);
    }
    for (int k = 0; k < N; k++) {
        wait_done(&together[k]);
        engine_release(s, reqs[k]);
        assert_int_equal(together[k].res.finish, ENGINE_FINISH_LENGTH);
        assert_int_equal(together[k].n, alone[k].n);
        if (memcmp(together[k].ids, alone[k].ids, sizeof(int32_t) * (size_t)alone[k].n) != 0)
            fail_msg("request %d: different tokens among 15 others than alone", k);
    }
    struct engine_stats st;
    engine_get_stats(s, &st);
    assert_int_equal(st.generated_tokens, N * 12);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.queued, 0);
    assert_true(st.steps < N * 12); /* tokens of several requests per step */
    engine_close(s);
}

/* A full queue refuses; a prompt that does not fit is refused. */
static void test_limits(void **state)
{
    (void)state;
    struct engine *s = make("Q8_0", 1, 1, 64);
    int32_t p[8];
    make_prompt(p, 8, 1);
    struct engine_request_params rp = params_of(1);
    rp.n_predict = 40;
    static struct outcome o[3];
    outcome_init(&o[0]);
    outcome_init(&o[1]);
    o[0].hold = true; /* the first keeps its slot until let go */
    struct engine_request *r0 = submit(s, p, 8, &rp, &o[0]), *r1 = submit(s, p, 8, &rp, &o[1]);
    /* one running (or about to), one waiting: a third finds the queue full */
    struct engine_events ev = {&o[2], on_step, on_done};
    struct engine_request *r2;
    pb_err err;
    int rc = engine_submit(s, p, 8, &rp, &ev, &r2, &err);
    assert_int_equal(rc, PB_EBUSY);
    int32_t big[64] = {0};
    assert_int_equal(engine_submit(s, big, 64, &rp, &ev, &r2, &err), PB_ETOOLONG);
    assert_int_equal(engine_submit(s, big, 0, &rp, &ev, &r2, &err), PB_EINVAL);
    big[3] = 5000; /* beyond the vocabulary */
    assert_int_equal(engine_submit(s, big, 8, &rp, &ev, &r2, &err), PB_EINVAL);
    pthread_mutex_lock(&o[0].mu);
    o[0].hold = false;
    pthread_cond_broadcast(&o[0].cv);
    pthread_mutex_unlock(&o[0].mu);
    wait_done(&o[0]);
    wait_done(&o[1]);
    /* 40 tokens after 8 fit the 64 positions of the slot */
    assert_int_equal(o[0].res.finish, ENGINE_FINISH_LENGTH);
    assert_int_equal(o[1].res.finish, ENGINE_FINISH_LENGTH);
    engine_release(s, r0);
    engine_release(s, r1);
    /* a request that runs into the end of its context */
    rp.n_predict = -1;
    outcome_init(&o[2]);
    r2 = submit(s, p, 8, &rp, &o[2]);
    wait_done(&o[2]);
    assert_int_equal(o[2].res.finish, ENGINE_FINISH_CONTEXT);
    assert_int_equal(o[2].n, 64 - 8 + 1); /* the last token is reported, not evaluated */
    engine_release(s, r2);
    engine_close(s);
}

/* Cancelling frees the slot for the next request; a callback's stop ends
 * its request; freeing the scheduler ends what is left as cancelled. */
static void test_cancel_and_stop(void **state)
{
    (void)state;
        struct engine *s = make("Q8_0", 1, 4, 512);
    int32_t p[8];
    make_prompt(p, 8, 2);
    struct engine_request_params rp = params_of(1);
    rp.n_predict = 400;
    static struct outcome a, b, c, d;
    outcome_init(&a);
    outcome_init(&b);
    struct engine_request *ra = submit(s, p, 8, &rp, &a);
    rp.n_predict = 5;
    struct engine_request *rb = submit(s, p, 8, &rp, &b);
    /* let a generate a little, then cancel it: b gets the slot */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&a.mu);
        int n = a.n;
        pthread_mutex_unlock(&a.mu);
        if (n >= 3)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    engine_cancel(s, ra);
    wait_done(&a);
    assert_int_equal(a.res.finish, ENGINE_FINISH_CANCELLED);
    assert_true(a.n < 400);
    wait_done(&b);
    assert_int_equal(b.res.finish, ENGINE_FINISH_LENGTH);
    engine_release(s, ra);
    engine_release(s, rb);

    outcome_init(&c);
    c.stop_after = 3;
    rp.n_predict = 50;
    struct engine_request *rc_ = submit(s, p, 8, &rp, &c);
    wait_done(&c);
    assert_int_equal(c.res.finish, ENGINE_FINISH_CALLER);
    assert_int_equal(c.n, 3);
    engine_release(s, rc_);

    outcome_init(&d);
    rp.n_predict = 100000;
    struct engine_request *rd = submit(s, p, 8, &rp, &d);
    engine_release(s, rd); /* the caller gives up at once */
    engine_close(s);        /* ends it (cancelled), reported once */
    assert_true(d.done);
    assert_int_equal(d.res.finish, ENGINE_FINISH_CANCELLED);
}

/* A prompt that continues a finished one reuses its cache; one that
 * shares a long prefix with another slot's copies it; the tokens are the
 * same as computed from scratch. */
static void test_prefix_reuse(void **state)
{
    (void)state;
        int32_t base[48];
    make_prompt(base, 48, 3);
    int32_t other[48];
    make_prompt(other, 48, 4);
    struct engine_request_params rp = params_of(1);
    rp.n_predict = 6;
    /* from scratch */
    static struct outcome ref, o1, o2, o3;
    struct engine *s = make("Q4_K_M", 1, 0, 256);
    outcome_init(&ref);
    struct engine_request *r = submit(s, base, 48, &rp, &ref);
    wait_done(&ref);
    engine_release(s, r);
    engine_close(s);

    s = make("Q4_K_M", 2, 0, 256);
    outcome_init(&o1);
    r = submit(s, base, 30, &rp, &o1); /* the first 30 tokens */
    wait_done(&o1);
    engine_release(s, r);
    outcome_init(&o2);
    r = submit(s, base, 48, &rp, &o2); /* continues them: reused */
    wait_done(&o2);
    engine_release(s, r);
    assert_int_equal(o2.res.n_reused, 30);
    assert_memory_equal(o2.ids, ref.ids, sizeof(int32_t) * 6);
    engine_close(s);

    /* a busy slot holds the prompt: the free one copies its prefix */
    s = make("Q4_K_M", 2, 0, 256);
    static struct outcome busy;
    outcome_init(&busy);
    struct engine_request_params long_rp = rp;
    long_rp.n_predict = 100;
    struct engine_request *rbusy = submit(s, base, 48, &long_rp, &busy);
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
    engine_release(s, r);
    assert_int_equal(o3.res.n_reused, 47); /* all but the last token, for its logits */
    assert_memory_equal(o3.ids, ref.ids, sizeof(int32_t) * 6);
    engine_cancel(s, rbusy);
    wait_done(&busy);
    engine_release(s, rbusy);
    assert_memory_equal(busy.ids, ref.ids, sizeof(int32_t) * 6);
    struct engine_stats st;
    engine_get_stats(s, &st);
    assert_int_equal(st.reused_tokens, 47);
    assert_int_equal(st.kv_shared, 32); /* of the 47, the whole blocks are shared, not copied */
    engine_close(s);
}

/* JSON mode: every prefix of the text is a prefix of a JSON object, and
 * a request that ends by itself ends with a complete object. */
static void test_json_mode(void **state)
{
    (void)state;
        struct engine *s = make("Q8_0", 4, 4, 512);
    static struct outcome o[4];
    struct engine_request *r[4];
    for (int k = 0; k < 4; k++) {
        int32_t p[6];
        make_prompt(p, 6, k);
        struct engine_request_params rp = engine_request_defaults();
        rp.n_predict = 200;
        rp.json_object = true;
        rp.sampling.seed = (uint64_t)k;
        rp.sampling.temp = k ? 1.0f : 0;
        outcome_init(&o[k]);
        r[k] = submit(s, p, 6, &rp, &o[k]);
    }
    struct grammar *gr;
    pb_err err;
    assert_int_equal(grammar_parse(sampler_json_grammar(), strlen(sampler_json_grammar()), &gr, &err), 0);
    for (int k = 0; k < 4; k++) {
        wait_done(&o[k]);
        engine_release(s, r[k]);
        struct gmatch *m;
        assert_int_equal(gmatch_create(gr, &m, &err), 0);
        assert_true(gmatch_feed(m, o[k].text, o[k].text_len)); /* a prefix of an object */
        assert_true(o[k].n > 0);
        size_t w = strspn(o[k].text, " \t\r\n");
        assert_true(w < o[k].text_len && o[k].text[w] == '{');
        if (o[k].res.finish != ENGINE_FINISH_LENGTH) {
            assert_true(gmatch_complete(m));
            json_t *v = json_loadb(o[k].text, o[k].text_len, 0, NULL);
            assert_true(json_is_object(v));
            json_decref(v);
        }
        print_message("  request %d: %d tokens, %s: %.60s\n", k, o[k].n,
                      gmatch_complete(m) ? "a complete object" : "an open object", o[k].text);
        gmatch_free(m);
    }
    grammar_free(gr);
    engine_close(s);
}

/* A grammar and a JSON Schema through the loop: the text is a sentence
 * (the schema's output validates against it by construction: checked
 * here by its shape), a bad grammar is refused at submission, and
 * logit_bias bans and forces tokens. */
static void test_grammar_requests(void **state)
{
    (void)state;
    struct engine *s = make("Q8_0", 2, 4, 512);
    int32_t p[6];
    make_prompt(p, 6, 3);
    struct engine_request_params rp = engine_request_defaults();
    rp.n_predict = 64;
    rp.sampling.seed = 5;
    rp.grammar = "root ::= \"answer: \" (\"yes\" | \"no\") \" (\" [0-9]{1,3} \")\"\n";
    struct outcome o;
    outcome_init(&o);
    struct engine_request *r = submit(s, p, 6, &rp, &o);
    wait_done(&o);
    engine_release(s, r);
    o.text[o.text_len] = 0;
    print_message("  grammar: %s (%s)\n", o.text, engine_finish_name(o.res.finish));
    assert_int_equal(o.res.finish, ENGINE_FINISH_STOP); /* nothing can follow the ')' */
    assert_true(!strncmp(o.text, "answer: yes (", 13) || !strncmp(o.text, "answer: no (", 12));
    assert_true(o.text[o.text_len - 1] == ')');

    /* a schema: an object with an enum and a bounded integer */
    json_t *schema = json_loads("{\"type\":\"object\",\"properties\":{\"colour\":{\"enum\":[\"red\",\"green\"]},"
                                "\"n\":{\"type\":\"integer\",\"minimum\":3,\"maximum\":7}},"
                                "\"required\":[\"colour\",\"n\"],\"additionalProperties\":false}", 0, NULL);
    char *gbnf;
    pb_err err;
    assert_int_equal(sampler_schema_grammar(schema, &gbnf, &err), 0);
    rp.grammar = gbnf;
    rp.sampling.temp = 1;
    for (uint64_t seed = 0; seed < 3; seed++) {
        rp.sampling.seed = seed;
        outcome_init(&o);
        r = submit(s, p, 6, &rp, &o);
        wait_done(&o);
        engine_release(s, r);
        json_t *v = json_loadb(o.text, o.text_len, 0, NULL);
        if (!v)
            fail_msg("not JSON: %.*s", (int)o.text_len, o.text);
        const char *c = json_string_value(json_object_get(v, "colour"));
        json_int_t n = json_integer_value(json_object_get(v, "n"));
        assert_true(c && (!strcmp(c, "red") || !strcmp(c, "green")));
        assert_true(n >= 3 && n <= 7 && json_object_size(v) == 2);
        json_decref(v);
    }
    free(gbnf);
    json_decref(schema);

    /* a grammar that does not compile: refused with its message */
    rp.grammar = "root ::= \"a\" nope\n";
    struct engine_request *bad = NULL;
    struct engine_events ev = {&o, on_step, on_done};
    assert_int_equal(engine_submit(s, p, 6, &rp, &ev, &bad, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "'nope'"));

    /* logit_bias: -100 on the greedy choice changes it, +100 forces one */
    rp = engine_request_defaults();
    rp.n_predict = 4;
    rp.sampling.temp = 0;
    rp.want_logits = true;
    struct outcome plain, banned, forced;
    outcome_init(&plain);
    r = submit(s, p, 6, &rp, &plain);
    wait_done(&plain);
    engine_release(s, r);
    struct engine_logit_bias lb[1] = {{plain.ids[0], -100}};
    rp.logit_bias = lb;
    rp.n_logit_bias = 1;
    outcome_init(&banned);
    r = submit(s, p, 6, &rp, &banned);
    wait_done(&banned);
    engine_release(s, r);
    for (int i = 0; i < banned.n; i++)
        assert_int_not_equal(banned.ids[i], plain.ids[0]);
    lb[0] = (struct engine_logit_bias){777, 100};
    outcome_init(&forced);
    r = submit(s, p, 6, &rp, &forced);
    wait_done(&forced);
    engine_release(s, r);
    for (int i = 0; i < forced.n; i++)
        assert_int_equal(forced.ids[i], 777);
    lb[0] = (struct engine_logit_bias){1 << 30, 1};
    assert_int_equal(engine_submit(s, p, 6, &rp, &ev, &bad, &err), PB_EINVAL);
    engine_close(s);
}

/* Choices of one request (the same prompt submitted together): the
 * prompt is evaluated once and copied to the others, and each choice's
 * tokens are those it gets alone. */
static void test_shared_prompt(void **state)
{
    (void)state;
    struct engine *s = make("Q8_0", 4, 4, 512);
    int32_t p[48];
    make_prompt(p, 48, 7);
    struct engine_request_params rp = engine_request_defaults();
    rp.n_predict = 6;
    static struct outcome alone[3], together[3];
    struct engine_request *r[3];
    for (int k = 0; k < 3; k++) { /* alone, one after another (no cache shared: distinct seeds, cleared) */
        rp.sampling.seed = 40 + (uint64_t)k;
        outcome_init(&alone[k]);
        r[k] = submit(s, p, 48, &rp, &alone[k]);
        wait_done(&alone[k]);
        engine_release(s, r[k]);
    }
    engine_close(s);
    s = make("Q8_0", 4, 4, 512);
    struct engine_stats before, after;
    engine_get_stats(s, &before);
    for (int k = 0; k < 3; k++) {
        rp.sampling.seed = 40 + (uint64_t)k;
        outcome_init(&together[k]);
        r[k] = submit(s, p, 48, &rp, &together[k]);
    }
    for (int k = 0; k < 3; k++) {
        wait_done(&together[k]);
        engine_release(s, r[k]);
        assert_int_equal(together[k].n, alone[k].n);
        assert_memory_equal(together[k].ids, alone[k].ids, sizeof(int32_t) * (size_t)alone[k].n);
    }
    engine_get_stats(s, &after);
    /* 48 prompt tokens once, the last one for each follower, 3 x 5 generated */
    const uint64_t evaluated = after.step_tokens - before.step_tokens;
    print_message("  3 choices of a 48-token prompt: %llu tokens evaluated\n", (unsigned long long)evaluated);
    assert_true(evaluated <= 48 + 2 + 15);
    engine_close(s);
}

/* A prompt that arrives while another with the same beginning is still
 * being read (a system prompt ahead of many users' questions) waits for
 * that reading and takes all it shares, rather than taking what is read
 * so far and reading the rest again itself. */
static void test_prompt_behind_one_being_read(void **state)
{
    (void)state;
    struct engine *s = make("Q8_0", 3, 4, 1024);
    static int32_t a[1000], b[1000], c[8];
    make_prompt(a, 1000, 5);
    memcpy(b, a, 960 * sizeof *a);
    for (int i = 960; i < 1000; i++)
        b[i] = 3 + (i * 13) % 900; /* differs from a's from position 960 */
    assert_true(b[960] != a[960]);
    make_prompt(c, 8, 6);
    struct engine_request_params rp = params_of(2), gen = params_of(3);
    rp.n_predict = 2;
    gen.n_predict = 4000; /* generates while a is read: a's prompt goes in chunks beside it */
    static struct outcome oc, oa, ob;
    outcome_init(&oc);
    struct engine_request *rc = submit(s, c, 8, &gen, &oc);
    for (int i = 0; i < 5000; i++) { /* until c generates */
        pthread_mutex_lock(&oc.mu);
        const int n = oc.n;
        pthread_mutex_unlock(&oc.mu);
        if (n >= 1)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    outcome_init(&oa);
    struct engine_request *ra = submit(s, a, 1000, &rp, &oa);
    struct engine_stats st0, st;
    engine_get_stats(s, &st0);
    do { /* until a's reading has begun */
        nanosleep(&(struct timespec){0, 200000}, NULL);
        engine_get_stats(s, &st);
    } while (st.steps < st0.steps + 3);
    outcome_init(&ob);
    struct engine_request *rb = submit(s, b, 1000, &rp, &ob);
    wait_done(&oa);
    wait_done(&ob);
    print_message("  the second prompt took %d of its 960 shared tokens\n", ob.res.n_reused);
    assert_int_equal(ob.res.n_reused, 960);
    engine_release(s, ra);
    engine_release(s, rb);
    engine_cancel(s, rc);
    wait_done(&oc);
    engine_release(s, rc);
    engine_close(s);
}

/* The text of an answer: whole UTF-8 characters only, never a part of a
 * stop string; the earliest stop string ends it; what is held comes out
 * at the end. */
static void test_textout(void **state)
{
    (void)state;
    struct textout t;
    struct sbuf out = {0};
    pb_err err;
    int rc;
    const char *stops[] = {"END", "\n\n"};
    assert_int_equal(textout_init(&t, stops, 2, &err), 0);
    /* "é" split over two pieces: nothing, then both bytes */
    assert_false(textout_push(&t, "a\xc3", 2, &out, &rc));
    assert_int_equal(rc, 0);
    assert_int_equal(out.len, 1);
    assert_false(textout_push(&t, "\xa9 E", 3, &out, &rc));
    assert_string_equal(out.data, "a\xc3\xa9 "); /* "E" may start "END": held */
    assert_false(textout_push(&t, "N", 1, &out, &rc));
    assert_string_equal(out.data, "a\xc3\xa9 ");
    assert_false(textout_push(&t, "x", 1, &out, &rc)); /* "ENx" is no stop: let out */
    assert_string_equal(out.data, "a\xc3\xa9 ENx");
    assert_true(textout_push(&t, "yE\n\nEND", 7, &out, &rc)); /* the earliest stop wins */
    assert_string_equal(out.data, "a\xc3\xa9 ENxyE");
    assert_true(textout_push(&t, "more", 4, &out, &rc)); /* nothing after a stop */
    assert_int_equal(textout_flush(&t, &out), 0);
    assert_string_equal(out.data, "a\xc3\xa9 ENxyE");
    textout_free(&t);
    /* without stops, an incomplete character is let out at the end */
    out.len = 0;
    assert_int_equal(textout_init(&t, NULL, 0, &err), 0);
    assert_false(textout_push(&t, "ok\xe2\x96", 4, &out, &rc));
    assert_int_equal(out.len, 2);
    assert_int_equal(textout_flush(&t, &out), 0);
    assert_int_equal(out.len, 4);
    textout_free(&t);
    const char *too_many[] = {"a", "b", "c", "d", "e"};
    assert_int_equal(textout_init(&t, too_many, 5, &err), PB_EINVAL);
    sbuf_free(&out);
}

/* A stop string ends the request's text before it (ENGINE_FINISH_STOP),
 * the same text as without it up to there. */
static void test_stop_strings(void **state)
{
    (void)state;
    struct engine *e = make("Q8_0", 1, 0, 256);
    int32_t p[8];
    make_prompt(p, 8, 5);
    struct engine_request_params rp = params_of(1);
    rp.n_predict = 40;
    static struct outcome full, cut;
    outcome_init(&full);
    struct engine_request *r = submit(e, p, 8, &rp, &full);
    wait_done(&full);
    engine_release(e, r);
    assert_true(full.text_len > 20);
    /* a stop string from the middle of the text: three bytes at a character start */
    size_t at = full.text_len / 2;
    while (at > 0 && ((unsigned char)full.text[at] & 0xc0) == 0x80)
        at--;
    char stop[4];
    memcpy(stop, full.text + at, 3);
    stop[3] = 0;
    const char *first = strstr(full.text, stop);
    assert_non_null(first);
    rp.stop[0] = stop;
    rp.n_stop = 1;
    outcome_init(&cut);
    r = submit(e, p, 8, &rp, &cut);
    wait_done(&cut);
    engine_release(e, r);
    assert_int_equal(cut.res.finish, ENGINE_FINISH_STOP);
    assert_int_equal(cut.text_len, (size_t)(first - full.text));
    assert_memory_equal(cut.text, full.text, cut.text_len);
    engine_close(e);
}

/* Reported logits: the n_top highest of the step's own logits, highest
 * first, ties to the lower id; the sampled greedy token is the first. */
struct top_check {
    int steps;
    bool ok;
};

static int check_top(void *user, const struct engine_step *st)
{
    struct top_check *c = user;
    c->steps++;
    assert_non_null(st->logits);
    assert_int_equal(st->n_top, 5);
    for (int k = 0; k < st->n_top; k++) {
        /* how many logits beat it (or tie with a lower id) */
        int above = 0;
        for (int32_t i = 0; i < st->n_vocab; i++)
            above += st->logits[i] > st->top_logits[k] || (st->logits[i] == st->top_logits[k] && i < st->top_ids[k]);
        c->ok &= above == k && st->logits[st->top_ids[k]] == st->top_logits[k];
    }
    c->ok &= st->id == st->top_ids[0];
    return 0;
}

static void test_top_logits(void **state)
{
    (void)state;
    struct engine *e = make("Q4_K_M", 2, 0, 128);
    int32_t p[6];
    make_prompt(p, 6, 7);
    struct engine_request_params rp = params_of(1); /* greedy */
    rp.n_top = 5;
    rp.want_logits = true;
    struct top_check c = {0, true};
    const struct engine_events ev = {&c, check_top, NULL};
    struct engine_result res;
    pb_err err;
    assert_int_equal(engine_generate(e, p, 6, &rp, &ev, &res, &err), 0);
    assert_int_equal(c.steps, 12);
    assert_true(c.ok);
    assert_int_equal(res.n_gen, 12);
    assert_int_equal(res.n_prompt, 6);
    engine_close(e);
}

/* Two engines on one set of threads (two served models): each request
 * gives the tokens it gives alone, while both run at once. */
struct run_arg {
    struct engine *e;
    const int32_t *prompt;
    int n;
    struct outcome *o;
};

static void *run_one(void *arg)
{
    struct run_arg *a = arg;
    struct engine_request_params rp = params_of(2); /* sampled with a seed */
    rp.n_predict = 24;
    struct engine_request *r = submit(a->e, a->prompt, a->n, &rp, a->o);
    wait_done(a->o);
    engine_release(a->e, r);
    return NULL;
}

static void test_shared_threads(void **state)
{
    (void)state;
    pb_err err;
    struct engine_threads *th;
    assert_int_equal(engine_threads_create(2, &th, &err), 0);
    assert_int_equal(engine_threads_count(th), 2);
    struct engine_params p = engine_defaults();
    p.n_ctx = 128;
    p.threads = th;
    struct engine *a, *b;
    assert_int_equal(engine_open(test_tiny_model("Q8_0"), &p, &a, &err), 0);
    assert_int_equal(engine_open(test_tiny_model("Q4_0"), &p, &b, &err), 0);
    struct engine_info ia;
    engine_get_info(a, &ia);
    assert_int_equal(ia.n_threads, 2);
    int32_t pa[9], pb[7];
    make_prompt(pa, 9, 11);
    make_prompt(pb, 7, 12);
    static struct outcome alone_a, alone_b, both_a, both_b;
    outcome_init(&alone_a);
    outcome_init(&alone_b);
    struct run_arg ra = {a, pa, 9, &alone_a}, rb = {b, pb, 7, &alone_b};
    run_one(&ra);
    run_one(&rb);
    outcome_init(&both_a);
    outcome_init(&both_b);
    ra.o = &both_a;
    rb.o = &both_b;
    pthread_t t1, t2;
    pthread_create(&t1, NULL, run_one, &ra);
    pthread_create(&t2, NULL, run_one, &rb);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(both_a.n, 24);
    assert_int_equal(both_b.n, 24);
    assert_memory_equal(both_a.ids, alone_a.ids, 24 * sizeof(int32_t));
    assert_memory_equal(both_b.ids, alone_b.ids, 24 * sizeof(int32_t));
    engine_close(a);
    engine_close(b);
    engine_threads_free(th);
}

/* The estimate an engine reports is the one engine_estimate gives for
 * the file, and it grows with the context, the slots and the KV type as
 * the cache does; a model that cannot fit is refused with the figures. */
static void test_estimate_consistent(void **state)
{
    (void)state;
    pb_err err;
    struct engine_params p = engine_defaults();
    p.n_ctx = 256;
    p.n_threads = 2;
    struct engine_memory est, est4, est32;
    assert_int_equal(engine_estimate(test_tiny_model("Q8_0"), &p, &est, &err), 0);
    struct engine *e;
    assert_int_equal(engine_open(test_tiny_model("Q8_0"), &p, &e, &err), 0);
    struct engine_info in;
    engine_get_info(e, &in);
    engine_close(e);
    assert_int_equal(in.mem.weights, est.weights);
    assert_int_equal(in.mem.kv, est.kv);
    assert_int_equal(in.mem.compute, est.compute);
    assert_int_equal(in.mem.total, est.total);
    assert_int_equal(est.n_ctx, 256);
    p.n_slots = 4;
    assert_int_equal(engine_estimate(test_tiny_model("Q8_0"), &p, &est4, &err), 0);
    assert_int_equal(est4.kv, 4 * est.kv);
    p.n_slots = 1;
    p.kv_type = PB_KV_F32;
    assert_int_equal(engine_estimate(test_tiny_model("Q8_0"), &p, &est32, &err), 0);
    assert_int_equal(est32.kv, 2 * est.kv);
    /* a context far beyond the memory: refused, with the figures */
    p.kv_type = PB_KV_F16;
    p.n_ctx = 1 << 24;
    p.n_slots = 256;
    assert_int_equal(engine_open(test_tiny_model("Q8_0"), &p, &e, &err), PB_ENOMEM);
    assert_non_null(strstr(err.msg, "GiB"));
    assert_non_null(strstr(err.msg, "available"));
}

/* The reasoning of a thinking model handed apart: an answer that starts
 * inside a thinking block which never closes (a random model never writes
 * </think>) is reasoning from the first byte to the last, and the same
 * text as without the split. */
struct split_outcome {
    char text[4096], reasoning[4096];
    size_t text_len, reasoning_len;
};

static void split_add(char *buf, size_t *len, const char *p, size_t n)
{
    if (*len + n < 4096) {
        memcpy(buf + *len, p, n);
        *len += n;
    }
}

static int split_step(void *user, const struct engine_step *st)
{
    struct split_outcome *o = user;
    split_add(o->text, &o->text_len, st->text, st->text_len);
    split_add(o->reasoning, &o->reasoning_len, st->reasoning, st->reasoning_len);
    return 0;
}

static void split_done(void *user, const struct engine_result *r)
{
    struct split_outcome *o = user;
    split_add(o->text, &o->text_len, r->tail, r->tail_len);
    split_add(o->reasoning, &o->reasoning_len, r->tail_reasoning, r->tail_reasoning_len);
}

static void test_reasoning_split(void **state)
{
    (void)state;
    struct engine *e = make("Q8_0", 1, 0, 256);
    int32_t p[8];
    make_prompt(p, 8, 9);
    struct engine_request_params rp = params_of(1);
    rp.n_predict = 30;
    static struct split_outcome plain, split;
    const struct engine_events ev_plain = {&plain, split_step, split_done}, ev_split = {&split, split_step, split_done};
    struct engine_result res;
    pb_err err;
    assert_int_equal(engine_generate(e, p, 8, &rp, &ev_plain, &res, &err), 0);
    assert_int_equal(plain.reasoning_len, 0);
    assert_true(plain.text_len > 0);
    rp.reasoning = (struct engine_answer_start){ENGINE_REASONING_THINK, true};
    assert_int_equal(engine_generate(e, p, 8, &rp, &ev_split, &res, &err), 0);
    assert_int_equal(split.text_len, 0);
    /* the thinking is trimmed of the newlines around it */
    size_t a = 0, b = plain.text_len;
    while (a < b && plain.text[a] == '\n')
        a++;
    while (b > a && plain.text[b - 1] == '\n')
        b--;
    assert_int_equal(split.reasoning_len, b - a);
    assert_memory_equal(split.reasoning, plain.text + a, b - a);
    /* a grammar constrains the answer, not the thinking: inside the
     * thinking block the model writes as it would without one (here it
     * never closes the block, so nothing is constrained); without
     * reasoning the grammar holds from the first token */
    static struct split_outcome gram_think, gram_plain;
    const struct engine_events ev_gt = {&gram_think, split_step, split_done},
                               ev_gp = {&gram_plain, split_step, split_done};
    rp.grammar = "root ::= \"yes\"\n";
    assert_int_equal(engine_generate(e, p, 8, &rp, &ev_gt, &res, &err), 0);
    assert_int_equal(gram_think.reasoning_len, split.reasoning_len);
    assert_memory_equal(gram_think.reasoning, split.reasoning, split.reasoning_len);
    rp.reasoning = (struct engine_answer_start){ENGINE_REASONING_NONE, false};
    assert_int_equal(engine_generate(e, p, 8, &rp, &ev_gp, &res, &err), 0);
    assert_int_equal(gram_plain.text_len, 3);
    assert_memory_equal(gram_plain.text, "yes", 3);
    engine_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cancel_and_stop),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_json_mode),
        cmocka_unit_test(test_grammar_requests),
        cmocka_unit_test(test_shared_prompt),
        cmocka_unit_test(test_prompt_behind_one_being_read),
        cmocka_unit_test(test_textout),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_top_logits),
        cmocka_unit_test(test_shared_threads),
        cmocka_unit_test(test_estimate_consistent),
        cmocka_unit_test(test_reasoning_split),
    };
    return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
