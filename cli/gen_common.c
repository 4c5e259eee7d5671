#include "gen_common.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STR_(x) #x
#define STR(x) STR_(x)

static const char gen_help[] =
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
    "                           %s\n"
    "      --ignore-memory      load the model even when its memory estimate exceeds what\n"
    "                           is available (it is refused otherwise)\n"
    "      --show-reasoning     print a reasoning model's thinking (dimmed on a terminal);\n"
    "                           it is hidden by default\n"
    "      --no-think           ask the model not to think first (Qwen3's enable_thinking)\n"
    "      --reasoning-effort E low, medium or high (gpt-oss)\n"
    "      --json-schema FILE   the output is JSON following this JSON Schema (constrained\n"
    "                           decoding; unsupported keywords are an error naming them)\n"
    "      --grammar FILE       the output follows this GBNF grammar (root rule 'root');\n"
    "                           '-' reads the schema or grammar from standard input\n";

const char *cli_gen_help(void)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, gen_help, engine_chat_formats());
    return buf;
}

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
    case GOPT_JSON_SCHEMA:
    case GOPT_GRAMMAR:
        if (!cli_read_grammar(cmd, arg, c == GOPT_GRAMMAR, &g->grammar))
            return -1;
        g->rp.grammar = g->grammar;
        return 1;
    case GOPT_SHOW_REASONING: g->show_reasoning = true; return 1;
    case GOPT_NO_THINK: g->chat_opts.no_thinking = true; return 1;
    case GOPT_REASONING_EFFORT:
        if (strcmp(arg, "low") && strcmp(arg, "medium") && strcmp(arg, "high")) {
            cli_usage_error(cmd, "--reasoning-effort is low, medium or high, not '%s'", arg);
            return -1;
        }
        g->chat_opts.reasoning_effort = arg;
        return 1;
    default: return 0;
    }
}

void cli_gen_free(struct cli_gen *g)
{
    free(g->grammar);
    g->grammar = NULL;
    g->rp.grammar = NULL;
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

void cli_answer_init(struct cli_answer *a, const struct cli_gen *g, bool json)
{
    memset(a, 0, sizeof *a);
    a->json = json;
    a->show_reasoning = g->show_reasoning;
    a->tty = isatty(STDOUT_FILENO) == 1;
    if (json) {
        a->tokens = json_array();
        a->top = g->rp.n_top > 0 ? json_array() : NULL;
    }
}

void cli_answer_reset(struct cli_answer *a)
{
    a->text_len = a->reasoning_len = 0;
    a->failed = a->in_reasoning = false;
    if (a->tokens)
        json_array_clear(a->tokens);
    if (a->top)
        json_array_clear(a->top);
}

void cli_answer_free(struct cli_answer *a)
{
    free(a->text);
    free(a->reasoning);
    json_decref(a->tokens);
    json_decref(a->top);
}

static bool keep(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = (*cap + n + 1) * 2;
        char *b = realloc(*buf, c);
        if (!b)
            return false;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return true;
}

/* Prints (unless json) and keeps one part of the answer. */
static void add_part(struct cli_answer *a, bool reasoning, const char *p, size_t n)
{
    if (!n)
        return;
    if (!a->json && (!reasoning || a->show_reasoning)) {
        if (reasoning != a->in_reasoning && a->tty)
            fputs(reasoning ? "\033[2m" : "\033[0m", stdout);
        if (!reasoning && a->in_reasoning && !a->tty)
            fputs("\n\n", stdout); /* the thinking, then the answer */
        a->in_reasoning = reasoning;
        fwrite(p, 1, n, stdout);
        fflush(stdout);
    }
    if (!(reasoning ? keep(&a->reasoning, &a->reasoning_len, &a->reasoning_cap, p, n)
                    : keep(&a->text, &a->text_len, &a->text_cap, p, n)))
        a->failed = true;
}

int cli_answer_step(void *user, const struct engine_step *s)
{
    struct cli_answer *a = user;
    if (a->tokens)
        json_array_append_new(a->tokens, json_integer(s->id));
    if (a->top) {
        json_t *step = json_array();
        for (int i = 0; i < s->n_top; i++)
            json_array_append_new(step, json_pack("[i,f]", s->top_ids[i], (double)s->top_logits[i]));
        json_array_append_new(a->top, step);
    }
    add_part(a, true, s->reasoning, s->reasoning_len);
    add_part(a, false, s->text, s->text_len);
    return a->failed;
}

void cli_answer_done(void *user, const struct engine_result *r)
{
    struct cli_answer *a = user;
    add_part(a, true, r->tail_reasoning, r->tail_reasoning_len);
    add_part(a, false, r->tail, r->tail_len);
}

void cli_answer_end(struct cli_answer *a)
{
    if (a->json)
        return;
    if (a->in_reasoning && a->tty)
        fputs("\033[0m", stdout);
    a->in_reasoning = false;
    putchar('\n');
    fflush(stdout);
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
