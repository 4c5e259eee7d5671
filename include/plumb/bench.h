/* plumb bench: the speed of a model on this machine, measured through the
 * engine the way llama-bench measures it (prompt processing and
 * generation), with the memory bandwidth measured in the same run; and
 * load on a running server (bench --serve).
 */
#ifndef PLUMB_BENCH_H
#define PLUMB_BENCH_H

#include "plumb/base.h"
#include "plumb/profile.h"
#include "plumb/synth.h"

#include <stdatomic.h>

#define BENCH_MAX_TESTS 8

struct bench_test {
    char name[24];   /* "pp512", "tg128", "tg128+grammar", "embed b16" */
    int n_tokens;
    bool generation; /* tg: one token per evaluation */
    bool constrained;/* a tg test under the grammar (beside its unconstrained twin) */
    int embed_batch; /* > 0: an embedding test of this many texts at once; t/s are tokens embedded */
    double inputs_s_median; /* embedding tests: texts per second */
    int reps;
    double t_s_median, t_s_min, t_s_max; /* tokens per second over the repetitions */
};

struct bench_params {
    const char *model_path;   /* a GGUF file, or NULL: synthesize shape/ftype in memory */
    const char *model_label;  /* the model's name in the report; NULL: model_path's file name */
    struct synth_shape shape;
    enum pb_ftype ftype;
    int pp[BENCH_MAX_TESTS], n_pp; /* prompt-processing tests: prompt lengths */
    int tg[BENCH_MAX_TESTS], n_tg; /* generation tests: tokens generated */
    int n_threads;            /* 0: all CPUs */
    int reps;                 /* repetitions of each test (>= 1) */
    enum pb_kv_type kv_type;
    const char *grammar;      /* GBNF: each tg test is run again under it, in the same run (constrained
                               * decoding's cost), or NULL */
    int embed[BENCH_MAX_TESTS], n_embed; /* > 0: embedding tests instead (texts per batch) */
    pb_progress_fn progress; /* synthesis progress (may be NULL) */
    void (*on_test)(void *user, const struct bench_test *t); /* each test as it ends (may be NULL) */
    void *user;
};

/* Where a test's time went (its unconstrained repetitions, wall_s
 * seconds in all, tokens evaluated): the shares in forward passes, in the
 * weight matrices' products (the matrix parts' sum), and in each part of
 * the passes (plumb/profile.h); the rest is sampling and scheduling. */
struct bench_profile {
    double wall_s, forward, matrices;
    double parts[PB_PART_COUNT];
    uint64_t tokens;
};

struct bench_report {
    char model[96];           /* file name, or "SHAPE QUANT (synthesized)" */
    char ftype[16];           /* the file type (general.file_type), "" when unknown */
    uint64_t model_bytes;     /* the GGUF image */
    uint64_t weight_bytes;    /* bytes of weights a generated token reads */
    uint64_t n_params;
    const char *kernels;      /* kernel level */
    int n_threads;
    double load_s;
    double bandwidth_gbs;     /* the higher of the measurements before and after the tests */
    double bandwidth_before_gbs, bandwidth_after_gbs;
    double tg_bandwidth_share; /* of the first tg test: weight_bytes x t/s / bandwidth */
    /* where the first pp test's and the first tg test's time went */
    struct bench_profile pp_profile, tg_profile;
    uint64_t peak_rss_bytes;
    uint64_t kv_bytes;        /* the KV cache of the context the tests used */
    struct bench_test tests[3 * BENCH_MAX_TESTS];
    int n_tests;
};

/* Loads (or synthesizes) the model and runs every test reps times after a
 * warm-up, llama-bench style: a pp test evaluates a prompt of random
 * tokens into an empty cache, a tg test generates token by token from an
 * empty cache (with a grammar, again under it: generations that end with
 * the grammar are repeated until n tokens are generated). Embedding tests
 * embed short texts (10 to 16 tokens) in batches of n texts at once. */
int bench_run(const struct bench_params *p, struct bench_report *r, pb_err *err);

/* ---- bench --serve ----
 * Load on a running OpenAI-compatible server (plumb serve,
 * llama-server, ...). For each concurrency level, that many
 * clients stream completions at once (prompts of random token ids, so no
 * two share a prefix; ignore_eos so each answer has exactly gen_tokens
 * tokens), and the run reports aggregate generation tokens per second,
 * time to first token and inter-token latency (median and p95).
 *
 * Behind a load balancer it can also say, request by request, when it
 * ran, how it ended and which replica answered (the X-Plumb-Instance
 * header of plumb serve --instance-id), and act as sessions: each client
 * a session named in a header, repeating its prompt so that a replica
 * that keeps the session finds the prefix in its cache. */
#define SERVEBENCH_MAX_LEVELS 8

struct servebench_params {
    const char *url;      /* http(s)://HOST:PORT */
    const char *model;    /* NULL: none sent (the server's only model) */
    const char *api_key;  /* NULL: none */
    int levels[SERVEBENCH_MAX_LEVELS];
    int n_levels;
    int prompt_tokens, gen_tokens;
    int shared_prefix;       /* every prompt begins with the same this many token ids (a system prompt), then its own prompt_tokens */
    int requests_per_client; /* each client's requests at each level */
    int vocab_lo, vocab_hi;  /* prompt token ids are drawn from [lo, hi) */
    const char *session_header; /* NULL: none; else client k of level l sends "NAME: bench-l-k" */
    bool repeat_prompt;      /* each client sends one prompt every time (else a new one each time) */
    bool keep_requests;      /* fill the report's requests */
    uint64_t seed;           /* varies the prompts (0: the same prompts as every run) */
    const atomic_int *stop;  /* NULL, or: once nonzero, clients send no new request (a load of open length) */
};

/* One request as the client saw it. */
struct servebench_request {
    int level, client, index;  /* its level, its client, its place among the client's requests */
    double start, end;         /* seconds since the epoch: the connection opened, the last byte */
    int status;                /* HTTP status, 0 when none came */
    bool ok;                   /* status 200 and the whole stream, to data: [DONE] */
    int tokens, cached_tokens; /* from the usage at the end: completion tokens, prompt tokens reused */
    char instance[72];         /* the X-Plumb-Instance header, "" without one */
    char error[192];           /* why it failed: libcurl's words ("Failed to connect to ..."), "status 503: the
                                * server's message", "stream cut" */
};

struct servebench_level {
    int concurrency, requests, failed;
    long long tokens;      /* generated, all requests */
    long long prompt_tokens, cached_tokens; /* sent, and of those the server reused (its usage's cached_tokens), answered requests */
    double wall_s;         /* from the first request to the last byte */
    double agg_tps;        /* tokens / wall_s */
    double ttft_median, ttft_p95;
    double itl_median, itl_p95;
    double tps_per_user;   /* median of each request's tokens / its generation time */
    char first_error[192]; /* why the level's first failed request failed ("" when none did) */
};

struct servebench_report {
    struct servebench_level levels[SERVEBENCH_MAX_LEVELS];
    int n_levels;
    struct servebench_request *requests; /* keep_requests: every request of every level, in order */
    int n_requests;
};

/* Runs the load; with keep_requests the report owns requests, freed by
 * servebench_report_free (safe on any report servebench_run filled). */
int servebench_run(const struct servebench_params *p, struct servebench_report *r, pb_err *err);
void servebench_report_free(struct servebench_report *r);

#endif
