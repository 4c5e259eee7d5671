#include "gen_common.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STR_(x) #x
#define STR(x) STR_(x)

const char CLI_GEN_HELP[] =
    "  -n, --n-predict N        tokens to generate (-1: until end of text or a full context)\n"
    "      --temp T             temperature; 0 is greedy (default 0.8)\n"
    "      --top-k K            keep the K most likely tokens, 0 = off (default 40)\n"
    "      --top-p P            nucleus sampling, 1 = off (default 0.95)\n"
    "      --min-p M            drop tokens below M x the best one, 0 = off (default 0.05)\n"
    "      --repeat-penalty R   penalize recent tokens, 1 = off (default 1.0)\n"
    "      --repeat-last-n N    how many recent tokens are penalized (default 64)\n"
    "      --seed S             random seed (default: random, printed on stderr)\n"
    "  -t, --threads N          threads (default: all CPUs)\n"
    "  -c, --ctx N              context size in tokens (default: the model's, at\n"
    "                           most " STR(ENGINE_DEFAULT_MAX_CTX) "); may exceed the model's with a warning\n"
    "  -b, --batch N            prompt tokens per forward pass (default " STR(ENGINE_DEFAULT_BATCH) ")\n"
    "      --kv-type T          KV cache type: f16 (default), f32 or q8_0\n"
    "      --ignore-eos         do not stop at end-of-text tokens\n"
    "      --system TEXT        a system message for chat formatting\n"
    "      --chat-format NAME   a built-in chat format instead of the model's template:\n"
    "                           chatml, llama3, llama2, mistral, gemma, phi3\n"
    "      --ignore-memory      load the model even when its memory estimate exceeds what\n"
    "                           is available (it is refused otherwise)\n";

void cli_gen_init(struct cli_gen *g, int n_predict_default)
{
    memset(g, 0, sizeof *g);
    g->ep = engine_defaults();
    g->rp = engine_request_defaults();
    g->rp.n_predict = n_predict_default;
}

int cli_gen_option(const char *cmd, int c, const char *arg, struct cli_gen *g)
{
    struct sampler_params *sp = &g->rp.sampling;
    long long v;
    double d;
    switch (c) {
    case 'n':
        if (!cli_parse_int(cmd, "--n-predict", arg, -1, 1 << 30, &v))
            return -1;
        g->rp.n_predict = (int)v;
        return 1;
    case GOPT_TEMP:
        if (!cli_parse_float(cmd, "--temp", arg, 0, 100, &d))
            return -1;
        sp->temp = (float)d;
        return 1;
    case GOPT_TOP_K:
        if (!cli_parse_int(cmd, "--top-k", arg, 0, 1 << 30, &v))
            return -1;
        sp->top_k = (int32_t)v;
        return 1;
    case GOPT_TOP_P:
        if (!cli_parse_float(cmd, "--top-p", arg, 0, 1, &d))
            return -1;
        sp->top_p = (float)d;
        return 1;
    case GOPT_MIN_P:
        if (!cli_parse_float(cmd, "--min-p", arg, 0, 1, &d))
            return -1;
        sp->min_p = (float)d;
        return 1;
    case GOPT_REPEAT_PENALTY:
        if (!cli_parse_float(cmd, "--repeat-penalty", arg, 0.01, 100, &d))
            return -1;
        sp->repeat_penalty = (float)d;
        return 1;
    case GOPT_REPEAT_LAST_N:
        if (!cli_parse_int(cmd, "--repeat-last-n", arg, 0, 1 << 20, &v))
            return -1;
        sp->repeat_last_n = (int32_t)v;
        return 1;
    case GOPT_SEED:
        if (!cli_parse_int(cmd, "--seed", arg, 0, INT64_MAX, &v))
            return -1;
        sp->seed = (uint64_t)v;
        g->seed_given = true;
        return 1;
    case 't':
        if (!cli_parse_int(cmd, "--threads", arg, 1, 1024, &v))
            return -1;
        g->ep.n_threads = (int)v;
        return 1;
    case 'c':
        if (!cli_parse_int(cmd, "--ctx", arg, 1, 1 << 24, &v))
            return -1;
        g->ep.n_ctx = v;
        return 1;
    case 'b':
        if (!cli_parse_int(cmd, "--batch", arg, 1, 1 << 16, &v))
            return -1;
        g->ep.n_batch = (int)v;
        return 1;
    case GOPT_IGNORE_EOS: g->rp.ignore_eog = true; return 1;
    case GOPT_IGNORE_MEMORY: g->ep.ignore_memory = true; return 1;
    case GOPT_KV_TYPE: return cli_parse_kv_type(cmd, arg, &g->ep.kv_type) ? 1 : -1;
    case GOPT_CHAT_FORMAT:
        if (!engine_chat_format_known(arg)) {
            cli_usage_error(cmd, "unknown chat format '%s' (one of %s)", arg, engine_chat_formats());
            return -1;
        }
        g->ep.chat_format = arg;
        return 1;
    case GOPT_SYSTEM: g->system = arg; return 1;
    default: return 0;
    }
}

void cli_gen_finish(struct cli_gen *g)
{
    if (!g->seed_given)
        g->rp.sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
}

struct engine *cli_gen_open(const char *cmd, const char *model, const struct cli_gen *g, bool chat)
{
    char path[4096];
    if (!cli_resolve_model(cmd, model, path, sizeof path, NULL))
        return NULL;
    pb_err err = {0};
    struct engine *e;
    if (engine_open(path, &g->ep, &e, &err)) {
        cli_error(cmd, "%s%s", err.msg, err.code == PB_ENOMEM ? " (--ignore-memory loads it anyway)" : "");
        return NULL;
    }
    struct engine_info in;
    engine_get_info(e, &in);
    char warn[512];
    if (engine_ctx_advice(in.n_ctx, in.n_ctx_train, warn, sizeof warn))
        fprintf(stderr, "plumb %s: warning: %s\n", cmd, warn);
    if (engine_threads_advice(g->ep.n_threads, warn, sizeof warn))
        fprintf(stderr, "plumb %s: warning: %s\n", cmd, warn);
    if (chat && in.chat_notice[0])
        fprintf(stderr, "plumb %s: %s\n", cmd, in.chat_notice);
    return e;
}

const char *cli_finish_name(enum engine_finish f)
{
    switch (f) {
    case ENGINE_FINISH_EOG:
    case ENGINE_FINISH_STOP: return "stop";
    case ENGINE_FINISH_LENGTH: return "length";
    case ENGINE_FINISH_CONTEXT: return "context";
    case ENGINE_FINISH_CALLER:
    case ENGINE_FINISH_CANCELLED: return "interrupted";
    case ENGINE_FINISH_ERROR: break;
    }
    return "error";
}

void cli_print_stats(const struct engine *e, const struct engine_result *r, const struct cli_gen *g)
{
    struct engine_info in;
    engine_get_info(e, &in);
    char rss[32];
    cli_fmt_bytes(pb_peak_rss(), rss, sizeof rss);
    fprintf(stderr, "prompt:     %d tokens (%d reused) in %.3f s (%.1f t/s)\n", r->n_prompt, r->n_reused, r->t_prompt,
            r->t_prompt > 0 ? (r->n_prompt - r->n_reused) / r->t_prompt : 0.0);
    fprintf(stderr, "generation: %d tokens in %.3f s (%.1f t/s), stopped: %s\n", r->n_gen, r->t_gen,
            r->t_gen > 0 && r->n_gen > 1 ? (r->n_gen - 1) / r->t_gen : 0.0, cli_finish_name(r->finish));
    fprintf(stderr, "load %.3f s, context %lld, threads %d, seed %llu, peak RSS %s\n", in.load_s, (long long)in.n_ctx,
            in.n_threads, (unsigned long long)g->rp.sampling.seed, rss);
}
