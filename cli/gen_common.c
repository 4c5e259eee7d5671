#include "gen_common.h"

#include "base/pool.h"
#include "base/sys.h"

#include <string.h>
#include <time.h>

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
    "                           most 4096); may exceed the model's with a warning\n"
    "  -b, --batch N            prompt tokens per forward pass (default 512)\n"
    "      --kv-type T          KV cache type: f16 (default), f32 or q8_0\n"
    "      --ignore-eos         do not stop at end-of-text tokens\n"
    "      --system TEXT        a system message for chat formatting\n"
    "      --chat-format NAME   a built-in chat format instead of the model's template:\n"
    "                           chatml, llama3, llama2, mistral, gemma, phi3\n";

void cli_gen_init(struct cli_gen *g, int n_predict_default)
{
    memset(g, 0, sizeof *g);
    g->gp.sampling = sampler_defaults();
    g->gp.n_predict = n_predict_default;
}

int cli_gen_option(const char *cmd, int c, const char *arg, struct cli_gen *g)
{
    long long v;
    double d;
    switch (c) {
    case 'n':
        if (!cli_parse_int(cmd, "--n-predict", arg, -1, 1 << 30, &v))
            return -1;
        g->gp.n_predict = (int)v;
        return 1;
    case GOPT_TEMP:
        if (!cli_parse_float(cmd, "--temp", arg, 0, 100, &d))
            return -1;
        g->gp.sampling.temp = (float)d;
        return 1;
    case GOPT_TOP_K:
        if (!cli_parse_int(cmd, "--top-k", arg, 0, 1 << 30, &v))
            return -1;
        g->gp.sampling.top_k = (int32_t)v;
        return 1;
    case GOPT_TOP_P:
        if (!cli_parse_float(cmd, "--top-p", arg, 0, 1, &d))
            return -1;
        g->gp.sampling.top_p = (float)d;
        return 1;
    case GOPT_MIN_P:
        if (!cli_parse_float(cmd, "--min-p", arg, 0, 1, &d))
            return -1;
        g->gp.sampling.min_p = (float)d;
        return 1;
    case GOPT_REPEAT_PENALTY:
        if (!cli_parse_float(cmd, "--repeat-penalty", arg, 0.01, 100, &d))
            return -1;
        g->gp.sampling.repeat_penalty = (float)d;
        return 1;
    case GOPT_REPEAT_LAST_N:
        if (!cli_parse_int(cmd, "--repeat-last-n", arg, 0, 1 << 20, &v))
            return -1;
        g->gp.sampling.repeat_last_n = (int32_t)v;
        return 1;
    case GOPT_SEED:
        if (!cli_parse_int(cmd, "--seed", arg, 0, INT64_MAX, &v))
            return -1;
        g->gp.sampling.seed = (uint64_t)v;
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
    case GOPT_IGNORE_EOS: g->gp.ignore_eog = true; return 1;
    case GOPT_KV_TYPE: return cli_parse_kv_type(cmd, arg, &g->ep.kv_type) ? 1 : -1;
    case GOPT_CHAT_FORMAT:
        if (!chat_format_known(arg)) {
            cli_usage_error(cmd, "unknown chat format '%s' (one of %s)", arg, chat_format_names());
            return -1;
        }
        g->chat_format = arg;
        return 1;
    case GOPT_SYSTEM: g->system = arg; return 1;
    default: return 0;
    }
}

void cli_gen_finish(struct cli_gen *g)
{
    if (!g->seed_given)
        g->gp.sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
}

int cli_chat_open(const char *cmd, struct engine *e, const struct cli_gen *g, struct chat **out)
{
    char notice[600];
    pb_err err = {0};
    if (chat_open(model_gguf(engine_model(e)), engine_tokenizer(e), g->chat_format, out, notice, sizeof notice,
                  &err))
        return cli_error(cmd, "%s", err.msg);
    if (notice[0])
        fprintf(stderr, "plumb %s: %s\n", cmd, notice);
    return CLI_OK;
}

void cli_warn_ctx(const char *cmd, const struct engine *e)
{
    const struct model_hparams *hp = model_hparams(engine_model(e));
    if (hp->n_ctx_train > 0 && engine_n_ctx(e) > hp->n_ctx_train)
        fprintf(stderr, "plumb %s: warning: context %lld exceeds the model's training context %lld; output may "
                        "degrade past it\n", cmd, (long long)engine_n_ctx(e), (long long)hp->n_ctx_train);
}

void cli_stream_put(struct cli_stream *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s->n == sizeof s->pending) {
            fwrite(s->pending, 1, s->n, stdout);
            s->n = 0;
        }
        s->pending[s->n++] = p[i];
    }
    size_t ok = tok_utf8_complete(s->pending, s->n);
    fwrite(s->pending, 1, ok, stdout);
    memmove(s->pending, s->pending + ok, s->n - ok);
    s->n -= ok;
    fflush(stdout);
}

void cli_stream_end(struct cli_stream *s)
{
    fwrite(s->pending, 1, s->n, stdout);
    s->n = 0;
    putchar('\n');
    fflush(stdout);
}

const char *cli_stop_name(enum gen_stop s)
{
    switch (s) {
    case GEN_STOP_EOG: return "stop";
    case GEN_STOP_LENGTH: return "length";
    case GEN_STOP_CONTEXT: return "context";
    default: return "interrupted";
    }
}

void cli_print_stats(const struct engine *e, const struct gen_stats *gs, const struct cli_gen *g)
{
    char rss[32];
    cli_fmt_bytes(sys_peak_rss(), rss, sizeof rss);
    fprintf(stderr, "prompt:     %d tokens (%d reused) in %.3f s (%.1f t/s)\n", gs->n_prompt, gs->n_reused,
            gs->t_prompt, gs->t_prompt > 0 ? (gs->n_prompt - gs->n_reused) / gs->t_prompt : 0.0);
    fprintf(stderr, "generation: %d tokens in %.3f s (%.1f t/s), stopped: %s\n", gs->n_gen, gs->t_gen,
            gs->t_gen > 0 ? gs->n_gen / gs->t_gen : 0.0, cli_stop_name(gs->stop));
    fprintf(stderr, "load %.3f s, context %lld, threads %d, seed %llu, peak RSS %s\n", engine_load_seconds(e),
            (long long)engine_n_ctx(e), g->ep.n_threads > 0 ? g->ep.n_threads : pool_cpu_count(),
            (unsigned long long)g->gp.sampling.seed, rss);
}
