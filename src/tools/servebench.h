/* plumb bench --serve: load on a running OpenAI-compatible server (plumb
 * serve, llama-server, ...). For each concurrency level, that many
 * clients stream completions at once (prompts of random token ids, so no
 * two share a prefix; ignore_eos so each answer has exactly gen_tokens
 * tokens), and the run reports aggregate generation tokens per second,
 * time to first token and inter-token latency (median and p95). */
#ifndef PLUMB_TOOLS_SERVEBENCH_H
#define PLUMB_TOOLS_SERVEBENCH_H

#include "base/err.h"

#define SERVEBENCH_MAX_LEVELS 8

struct servebench_params {
    const char *url;      /* http://HOST:PORT */
    const char *model;    /* NULL: none sent (the server's only model) */
    const char *api_key;  /* NULL: none */
    int levels[SERVEBENCH_MAX_LEVELS];
    int n_levels;
    int prompt_tokens, gen_tokens;
    int requests_per_client; /* each client's requests at each level */
    int vocab_lo, vocab_hi;  /* prompt token ids are drawn from [lo, hi) */
};

struct servebench_level {
    int concurrency, requests, failed;
    long long tokens;      /* generated, all requests */
    double wall_s;         /* from the first request to the last byte */
    double agg_tps;        /* tokens / wall_s */
    double ttft_median, ttft_p95;
    double itl_median, itl_p95;
    double tps_per_user;   /* median of each request's tokens / its generation time */
};

struct servebench_report {
    struct servebench_level levels[SERVEBENCH_MAX_LEVELS];
    int n_levels;
};

int servebench_run(const struct servebench_params *p, struct servebench_report *r, pb_err *err);

#endif
