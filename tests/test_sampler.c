/* Sampler: greedy, the filters, temperature, penalties, seeds; grammars,
 * their masks, JSON Schema to grammar. */
#include "testutil.h"

#include "base/rng.h"
#include "sampler/grammar.h"
#include "sampler/sampler.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct sampler *make(struct sampler_params p, int32_t n)
{
    struct sampler *s;
    pb_err err;
    if (sampler_create(&p, n, &s, &err))
        fail_msg("%s", err.msg);
    return s;
}

/* Sampling at temperature temp with top-k (0: none) as the only cut-off. */
static struct sampler_params temp_top_k(float temp, int top_k, uint64_t seed)
{
    struct sampler_params p = sampler_defaults();
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = 1.0f;
    p.min_p = 0;
    p.seed = seed;
    return p;
}

static void test_greedy_ties_lowest(void **state)
{
    (void)state;
    float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 2.0f};
    struct sampler_params p = sampler_defaults();
    p.temp = 0;
    struct sampler *s = make(p, 6);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sampler_sample(s, logits), 1);
    assert_int_equal(sampler_argmax(logits, 6), 1);
    sampler_free(s);
}

/* Draws n samples and counts each id. */
static void histogram(struct sampler *s, const float *logits, int32_t n_vocab, int n, int *counts)
{
    memset(counts, 0, (size_t)n_vocab * sizeof *counts);
    for (int i = 0; i < n; i++) {
        int32_t id = sampler_sample(s, logits);
        assert_true(id >= 0 && id < n_vocab);
        counts[id]++;
    }
}

static void test_filters(void **state)
{
    (void)state;
    /* probabilities at temp 1: about 0.64, 0.24, 0.09, 0.03, ... */
    float logits[8] = {3.0f, 2.0f, 1.0f, 0.0f, -1.0f, -2.0f, -3.0f, -4.0f};
    int counts[8];
    struct sampler_params p = sampler_defaults();
    p.seed = 5;
    p.min_p = 0;
    p.top_p = 1;

    p.top_k = 1; /* top-k 1 is greedy */
    struct sampler *s = make(p, 8);
    histogram(s, logits, 8, 200, counts);
    assert_int_equal(counts[0], 200);
    sampler_free(s);

    p.top_k = 2; /* only the two best */
    s = make(p, 8);
    histogram(s, logits, 8, 2000, counts);
    assert_int_equal(counts[0] + counts[1], 2000);
    assert_true(counts[1] > 200);
    sampler_free(s);

    p.top_k = 0;
    p.top_p = 0.7f; /* 0.64 < 0.7: the nucleus is the first two */
    s = make(p, 8);
    histogram(s, logits, 8, 2000, counts);
    assert_int_equal(counts[0] + counts[1], 2000);
    assert_true(counts[1] > 0);
    sampler_free(s);

    p.top_p = 1;
    p.min_p = 0.2f; /* keeps p >= 0.2 * 0.64: the first two */
    s = make(p, 8);
    histogram(s, logits, 8, 2000, counts);
    assert_int_equal(counts[0] + counts[1], 2000);
    assert_true(counts[1] > 0);
    sampler_free(s);

    p.min_p = 0; /* nothing filtered: all appear at temp 1 over many draws */
    p.temp = 1;
    s = make(p, 8);
    histogram(s, logits, 8, 20000, counts);
    for (int i = 0; i < 6; i++)
        assert_true(counts[i] > 0);
    /* frequencies follow the softmax within a few percent */
    double z = 0;
    for (int i = 0; i < 8; i++)
        z += exp(logits[i]);
    assert_float_equal(counts[0] / 20000.0, exp(3.0) / z, 0.02);
    sampler_free(s);

    p.temp = 0.05f; /* near-greedy */
    s = make(p, 8);
    histogram(s, logits, 8, 500, counts);
    assert_int_equal(counts[0], 500);
    sampler_free(s);
}

/* top-k over shuffled logits (ties included) keeps exactly the k best. */
static void test_top_k_selection(void **state)
{
    (void)state;
    enum { N = 1000 };
    float logits[N];
    int counts[N];
    for (int i = 0; i < N; i++)
        logits[i] = (float)((i * 7919) % N) / 100.0f; /* a permutation of 0..9.99 */
    logits[17] = logits[(N - 1) * 7919 % N == 0 ? 1 : 2]; /* a tie somewhere in the middle */
    struct sampler_params p = temp_top_k(0.5f, 5, 3);
    struct sampler *s = make(p, N);
    histogram(s, logits, N, 5000, counts);
    /* the five best values are 9.99 .. 9.95 */
    int kept = 0;
    for (int i = 0; i < N; i++) {
        if (logits[i] >= 9.95f - 1e-4f) {
            assert_true(counts[i] > 0);
            kept++;
        } else {
            assert_int_equal(counts[i], 0);
        }
    }
    assert_int_equal(kept, 5);
    sampler_free(s);
    /* NaN logits do not break the ordering */
    logits[500] = NAN;
    p.top_k = 0;
    s = make(p, N);
    histogram(s, logits, N, 100, counts);
    assert_int_equal(counts[500], 0);
    sampler_free(s);
}

static void test_seed_determinism(void **state)
{
    (void)state;
    float logits[100];
    for (int i = 0; i < 100; i++)
        logits[i] = sinf((float)i) * 2;
    struct sampler_params p = temp_top_k(1.5f, 0, 1234);
    struct sampler *a = make(p, 100), *b = make(p, 100);
    p.seed = 1235;
    struct sampler *c = make(p, 100);
    int same_ac = 0;
    for (int i = 0; i < 100; i++) {
        int32_t x = sampler_sample(a, logits), y = sampler_sample(b, logits), z = sampler_sample(c, logits);
        assert_int_equal(x, y);
        same_ac += x == z;
    }
    assert_true(same_ac < 50);
    sampler_free(a);
    sampler_free(b);
    sampler_free(c);
}

static void test_repetition_penalty(void **state)
{
    (void)state;
    float logits[4] = {2.0f, 1.9f, -1.0f, -1.1f};
    struct sampler_params p = sampler_defaults();
    p.temp = 0;
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    struct sampler *s = make(p, 4);
    assert_int_equal(sampler_sample(s, logits), 0);
    sampler_accept(s, 0); /* 2.0 / 1.5 < 1.9: id 1 wins now */
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_accept(s, 1);
    sampler_accept(s, 3); /* window of 2: id 0 is no longer penalized */
    assert_int_equal(sampler_sample(s, logits), 0);
    /* negative logits are multiplied: -1.0 * 1.5 < -1.1 */
    float neg[2] = {-1.0f, -1.1f};
    struct sampler *s2 = make(p, 2);
    sampler_accept(s2, 0);
    assert_int_equal(sampler_sample(s2, neg), 1);
    sampler_reset(s2);
    assert_int_equal(sampler_sample(s2, neg), 0);
    sampler_free(s);
    sampler_free(s2);
}

/* OpenAI's penalties: presence once per token seen in the window,
 * frequency per occurrence; greedy shows the shifted order. */
static void test_presence_frequency(void **state)
{
    (void)state;
    float logits[4] = {3.0f, 2.5f, 2.0f, 0.0f};
    struct sampler_params p = sampler_defaults();
    p.temp = 0;
    p.presence_penalty = 0.6f; /* token 0: 3.0 - 0.6 = 2.4 < 2.5 */
    struct sampler *s = make(p, 4);
    sampler_accept(s, 0);
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_free(s);
    p.presence_penalty = 0;
    p.frequency_penalty = 0.3f; /* token 0 seen twice: 3.0 - 0.6 = 2.4; token 1 once: 2.2 */
    s = make(p, 4);
    sampler_accept(s, 0);
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    assert_int_equal(sampler_sample(s, logits), 0);
    sampler_accept(s, 0); /* three times: 2.1 < 2.2 */
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_free(s);
}

/* A mask of allowed tokens: greedy takes the best allowed one, sampling
 * never draws a refused one (even one a penalty would favour), and
 * nothing allowed gives -1. */
static void test_allowed_mask(void **state)
{
    (void)state;
    float logits[5] = {5.0f, 4.0f, 1.0f, 0.5f, -2.0f};
    uint8_t allowed[5] = {0, 0, 1, 0, 1};
    struct sampler_params p = sampler_defaults();
    p.temp = 0;
    struct sampler *s = make(p, 5);
    assert_int_equal(sampler_sample_allowed(s, logits, allowed), 2);
    sampler_free(s);
    const float temps[2] = {1.0f, 5.0f};
    for (int k = 0; k < 2; k++) {
        p = temp_top_k(temps[k], k ? 0 : 40, 9); /* k = 0: the sorted path (top-k), k = 1: the one-pass path */
        p.frequency_penalty = -10.0f; /* favours the refused token 3 */
        s = make(p, 5);
        sampler_accept(s, 3);
        int seen[5] = {0};
        for (int i = 0; i < 2000; i++) {
            int32_t id = sampler_sample_allowed(s, logits, allowed);
            assert_true(id == 2 || id == 4);
            seen[id]++;
        }
        assert_true(seen[2] > seen[4] && seen[4] > 0);
        uint8_t none[5] = {0};
        assert_int_equal(sampler_sample_allowed(s, logits, none), -1);
        sampler_free(s);
    }
}

/* sampler_sample_checked's offers: what a take() callback accepts, and
 * how many it was asked. */
struct offers {
    const uint8_t *allowed;
    int asked;
};

static bool take_allowed(void *user, int32_t id)
{
    struct offers *o = user;
    o->asked++;
    return o->allowed[id] != 0;
}

/* Offering draws to a test equals sampling under the mask of what the
 * test takes: greedy in order of logit (ties to the lower id, penalties
 * applied), temperature by drawing again; -1 when the offers run out or
 * the sampling has cut-offs. */
static void test_checked_draws(void **state)
{
    (void)state;
    enum { N = 300 };
    float logits[N];
    uint8_t allowed[N];
    struct rng g;
    rng_seed(&g, 5);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < N; i++) {
            logits[i] = (float)(rng_u64(&g) % 40) / 4.0f; /* ties on purpose */
            allowed[i] = rng_u64(&g) % 3 == 0;
        }
        struct sampler_params p = sampler_defaults();
        p.temp = 0;
        p.presence_penalty = 3.0f;
        struct sampler *s = make(p, N), *t = make(p, N);
        sampler_accept(s, round), sampler_accept(t, round); /* a penalized token */
        const int32_t want = sampler_sample_allowed(t, logits, allowed);
        struct offers o = {allowed, 0};
        const int32_t got = sampler_sample_checked(s, logits, N, take_allowed, &o);
        assert_int_equal(got, want);
        /* the offers went best first: as many as tokens rank at or above the choice */
        int above = 0;
        float lw = logits[want] - (want == round ? 3.0f : 0);
        for (int i = 0; i < N; i++) {
            float li = logits[i] - (i == round ? 3.0f : 0);
            above += li > lw || (li == lw && i <= want);
        }
        assert_int_equal(o.asked, above);
        /* too few offers for the choice: none taken */
        if (above > 1) {
            o.asked = 0;
            assert_int_equal(sampler_sample_checked(s, logits, above - 1, take_allowed, &o), -1);
            assert_int_equal(o.asked, above - 1);
        }
        sampler_free(s);
        sampler_free(t);
    }

    /* temperature: the draws taken follow the masked distribution
     * (p(2) / p(4) = e^(3 / T)) */
    float lg[5] = {5.0f, 4.0f, 1.0f, 0.5f, -2.0f};
    uint8_t al[5] = {0, 0, 1, 0, 1};
    struct sampler_params p = temp_top_k(4.0f, 0, 3);
    struct sampler *s = make(p, 5);
    int seen[5] = {0}, refused = 0;
    struct offers o = {al, 0};
    for (int calls = 0; seen[2] + seen[4] < 4000 && calls < 20000; calls++) {
        int32_t id = sampler_sample_checked(s, lg, 16, take_allowed, &o);
        if (id < 0)
            refused++;
        else
            seen[id]++;
    }
    assert_int_equal(seen[0] + seen[1] + seen[3], 0);
    assert_int_equal(seen[2] + seen[4], 4000);
    const double ratio = (double)seen[2] / seen[4], want = exp(3.0 / 4.0);
    assert_true(fabs(ratio - want) < 0.15 * want);
    assert_true(refused < 400); /* P(allowed) is about 0.22: 16 draws rarely all miss */
    sampler_free(s);

    /* top-k, top-p or min-p: never drawn for */
    p = sampler_defaults();
    assert_false(sampler_can_check(&p));
    s = make(p, 5);
    o.asked = 0;
    assert_int_equal(sampler_sample_checked(s, lg, 16, take_allowed, &o), -1);
    assert_int_equal(o.asked, 0);
    sampler_free(s);
}

static struct grammar *compile(const char *text)
{
    struct grammar *g;
    pb_err err;
    if (grammar_parse(text, strlen(text), &g, &err))
        fail_msg("%s", err.msg);
    return g;
}

static struct gmatch *matcher(const struct grammar *g)
{
    struct gmatch *m;
    pb_err err;
    if (gmatch_create(g, &m, &err))
        fail_msg("%s", err.msg);
    return m;
}

/* JSON mode's grammar: whole objects are accepted and complete, every
 * prefix of them is accepted and not complete, and text that cannot
 * become an object is refused at the byte where it goes wrong. */
static void test_json_grammar(void **state)
{
    (void)state;
    struct grammar *gr = compile(sampler_json_grammar());
    static const char *const good[] = {
        "{}",
        "{\"a\":1}",
        " {\n  \"a\" : [1, -2.5e+3, 0, 0.25E-1, true, false, null, \"x\\\"y\\u00e9\\n\"], \"b\": {\"c\": []}}",
        "{\"k\\u0041\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
        "{\"\":{\"\":{\"\":[[[]]]}}}\n",
        "{\"pair\": \"\\ud83e\\udd99 \\uD83D\\uDE00\", \"bmp\": \"\\ud7ff\\ue000\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *t = good[i];
        struct gmatch *g = matcher(gr);
        size_t n = strlen(t), last = n;
        while (last > 0 && (t[last - 1] == '\n' || t[last - 1] == ' '))
            last--;
        for (size_t k = 0; k < n; k++) {
            if (!gmatch_feed(g, t + k, 1))
                fail_msg("good[%zu] refused at byte %zu", i, k);
            assert_int_equal(gmatch_complete(g), k + 1 >= last);
        }
        gmatch_free(g);
        g = matcher(gr);
        assert_true(gmatch_feed(g, t, n) && gmatch_complete(g));
        gmatch_free(g);
    }
    static const struct {
        const char *text;
        size_t bad_at; /* the first byte refused */
    } bad[] = {
        {"[1]", 0},                /* an array at the top */
        {"\"s\"", 0},            /* a string at the top */
        {"{\"a\" 1}", 5},        /* no colon */
        {"{\"a\":01}", 6},       /* a leading zero */
        {"{\"a\":1.}", 7},       /* no fraction digit */
        {"{\"a\":-}", 6},        /* a lone minus */
        {"{\"a\":tru}", 8},      /* a broken literal */
        {"{\"a\":1,}", 7},       /* a trailing comma */
        {"{a:1}", 1},              /* an unquoted key */
        {"{\"a\":[1}", 7},       /* the wrong closing bracket */
        {"{\"a\\q\":1}", 4},   /* a bad escape */
        {"{\"\\u12g4\":1}", 6},/* a bad hex digit */
        {"{\"a\tb\":1}", 3},    /* a raw control character */
        {"{\"\xc0\xaf\":1}", 2},  /* an overlong UTF-8 form */
        {"{\"\xed\xa0\x80\":1}", 3}, /* a surrogate */
        {"{\"\xe2\x82\":1}", 4},  /* a truncated sequence */
        {"{}x", 2},                /* text after the object */
        {"{}{}", 2},               /* a second object */
        /* UTF-16 surrogate escapes come in pairs (found by fuzz_json_guard) */
        {"{\"\\udd99\":1}", 5},      /* a lone low half */
        {"{\"\\ud83e\":1}", 8},      /* a high half, then the string ends */
        {"{\"\\ud83ex\":1}", 8},     /* a high half, then a character */
        {"{\"\\ud83e\\n\":1}", 9},  /* a high half, then another escape */
        {"{\"\\ud83e\\ud83e\":1}", 11}, /* two high halves */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct gmatch *g = matcher(gr);
        size_t n = strlen(bad[i].text), k = 0;
        while (k < n && gmatch_feed(g, bad[i].text + k, 1))
            k++;
        gmatch_free(g);
        if (k != bad[i].bad_at)
            fail_msg("bad[%zu] '%s': refused at byte %zu, expected %zu", i, bad[i].text, k, bad[i].bad_at);
    }
    /* limits: nesting depth (the matcher's stacks) and runs of whitespace */
    struct gmatch *g = matcher(gr);
    assert_true(gmatch_feed(g, "{\"a\":", 5));
    int depth = 1;
    while (depth < 10000 && gmatch_feed(g, "[", 1))
        depth++;
    assert_true(depth > 32 && depth < GRAMMAR_MAX_DEPTH);
    gmatch_free(g);
    /* blanks between tokens: one space, or a newline and 20 spaces or
     * tabs at most (a model cannot stall in blank space) */
    g = matcher(gr);
    int ws = 0;
    while (ws < 1000 && gmatch_feed(g, " ", 1))
        ws++;
    assert_int_equal(ws, 1);
    gmatch_free(g);
    g = matcher(gr);
    assert_true(gmatch_feed(g, "{\n", 2));
    ws = 0;
    while (ws < 1000 && gmatch_feed(g, "\t", 1))
        ws++;
    assert_int_equal(ws, 20);
    gmatch_free(g);
    grammar_free(gr);
}

/* Grammars that cannot be compiled are refused with what is wrong. */
static void test_grammar_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"root ::= a\n", "rule 'a' is used but not defined"},
        {"root ::= root \"x\"\n", "rule 'root' can reach itself"},
        {"root ::= x \"y\"\nx ::= \"a\"? root\n", "can reach itself"},
        {"root ::= \"a\" (\n", "line 1, column 14: a group without its closing )"},
        {"root ::= [z-a]\n", "end comes before its start"},
        {"root ::= x*\nx ::= \"a\"?\n", "can reach itself"},
        {"root ::= \"a\"{3,2}\n", "n below m"},
        {"foo ::= \"a\"\n", "no rule 'root'"},
        {"root ::= \"\\q\"\n", "unknown escape"},
        {"root ::= \"a\"\nroot ::= \"b\"\n", "line 2, column 1: a rule defined twice"},
        {"root ::= \"a\"{1,200000}\n", "above 100000"},
        {"root ::= *\n", "without anything before it to repeat"},
        {"root ::= \"abc\n", "without its closing quote"},
        {"root ::= []\n", "empty character class"},
        {"root := \"a\"\n", "expected ::="},
        {"root ::= \"\xff\"\n", "invalid UTF-8"},
        {"", "no rule 'root'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct grammar *g = NULL;
        pb_err err = {0};
        assert_int_equal(grammar_parse(bad[i].text, strlen(bad[i].text), &g, &err), PB_EINVAL);
        assert_null(g);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("grammar %zu: '%s' does not say '%s'", i, err.msg, bad[i].msg);
    }
    /* deeply nested groups are bounded, not a stack overflow */
    char deep[600];
    size_t n = (size_t)snprintf(deep, sizeof deep, "root ::= ");
    for (int i = 0; i < 200; i++)
        deep[n++] = '(';
    deep[n] = 0;
    struct grammar *g;
    pb_err err;
    assert_int_equal(grammar_parse(deep, n, &g, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "nested more than 64"));
    /* a rule over several lines, comments, repetition forms, any char */
    g = compile("# a comment\nroot ::= \"<\" item\n  (\",\" item)* \">\" # the end\n"
                "item ::= [a-c]{2} | \"x\"+ | [^<>,]? \".\" | \"\\u00e9\" . \"!\"{0,2}\n");
    static const char *const ok[] = {"<ab>", "<ab,xxx,.>", "<z.,\xc3\xa9\xe2\x82\xac!!>"};
    static const char *const no[] = {"<a>", "<ab,>", "<ab", "<\xc3\xa9\xe2\x82\xac!!!>"};
    for (size_t i = 0; i < 3; i++) {
        struct gmatch *m = matcher(g);
        if (!gmatch_feed(m, ok[i], strlen(ok[i])) || !gmatch_complete(m))
            fail_msg("'%s' refused", ok[i]);
        assert_true(gmatch_done(m));
        gmatch_free(m);
    }
    for (size_t i = 0; i < 4; i++) {
        struct gmatch *m = matcher(g);
        if (gmatch_feed(m, no[i], strlen(no[i])) && gmatch_complete(m))
            fail_msg("'%s' accepted", no[i]);
        gmatch_free(m);
    }
    grammar_free(g);
}

/* The trie's masks equal feeding every token's text on its own, state
 * after state along a random walk (cached masks included), for a
 * vocabulary with multi-byte characters split across tokens. */
static void test_grammar_mask(void **state)
{
    (void)state;
    static const char *const toks[] = {
        "{", "}", "\"", "\":", ":", ",", " ", "\n", "  ", "a", "b", "ab", "abc", "\"a", "\"b\":", "1", "12", "-",
        ".", "0", "e", "true", "false", "null", "nul", "[", "]", "[]", "{}", "\\", "\\n", "\xc3", "\xa9",
        "\xc3\xa9", "\xe2\x82", "\xac", "\xe2", "\x82\xac", "\xed\xa0", "\xff", "x\"}", "\"}", "1}", "\t",
    };
    enum { N = sizeof toks / sizeof toks[0] };
    char pieces[512];
    uint32_t off[N + 1], o = 0;
    for (int i = 0; i < N; i++) {
        off[i] = o;
        memcpy(pieces + o, toks[i], strlen(toks[i]));
        o += (uint32_t)strlen(toks[i]);
    }
    off[N] = o;
    struct gtrie *t;
    pb_err err;
    if (gtrie_build(pieces, off, N, NULL, &t, &err))
        fail_msg("%s", err.msg);
    struct grammar *gr = compile(sampler_json_grammar());
    uint64_t rng = 42, total_cached = 0;
    int checked = 0;
    for (int run = 0; run < 40; run++) {
        struct gmatch *m = matcher(gr);
        char text[1024];
        size_t len = 0;
        for (int step = 0; step < 40; step++) {
            uint8_t allowed[N];
            int32_t n = gmatch_mask(m, t, allowed), count = 0;
            for (int i = 0; i < N; i++) {
                /* brute force: the text so far and this token, fed afresh */
                struct gmatch *c = matcher(gr);
                const bool ok = gmatch_feed(c, text, len) && gmatch_feed(c, toks[i], strlen(toks[i]));
                gmatch_free(c);
                if (ok != (allowed[i] != 0))
                    fail_msg("after '%.*s': token '%s' %s by the mask", (int)len, text, toks[i],
                             allowed[i] ? "allowed" : "refused");
                count += allowed[i];
            }
            assert_int_equal(n, count);
            if (n == 0 || len + 8 >= sizeof text)
                break;
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int pick = (int)((rng >> 33) % (uint64_t)n);
            for (int i = 0; i < N; i++)
                if (allowed[i] && pick-- == 0) {
                    assert_true(gmatch_feed(m, toks[i], strlen(toks[i])));
                    memcpy(text + len, toks[i], strlen(toks[i]));
                    len += strlen(toks[i]);
                    break;
                }
            checked++;
        }
        uint64_t computed, cached;
        gmatch_counts(m, &computed, &cached);
        total_cached += cached;
        gmatch_free(m);
    }
    assert_true(total_cached > 0); /* states repeat: masks came from the cache */
    assert_true(checked > 100);
    gtrie_free(t);
    grammar_free(gr);
}

static void test_bad_params(void **state)
{
    (void)state;
    struct sampler *s;
    pb_err err;
    struct sampler_params p = sampler_defaults();
    assert_int_equal(sampler_create(&p, 0, &s, &err), PB_EINVAL);
    p.repeat_penalty = 0;
    assert_int_equal(sampler_create(&p, 10, &s, &err), PB_EINVAL);
    p = sampler_defaults();
    p.temp = NAN;
    assert_int_equal(sampler_create(&p, 10, &s, &err), PB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties_lowest),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_top_k_selection),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_presence_frequency),
        cmocka_unit_test(test_allowed_mask),
        cmocka_unit_test(test_checked_draws),
        cmocka_unit_test(test_json_grammar),
        cmocka_unit_test(test_grammar_errors),
        cmocka_unit_test(test_grammar_mask),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
