/* plumb run: one generation, streamed to stdout, figures to stderr. */
#define _GNU_SOURCE
#include "cli.h"

#include "base/pool.h"
#include "base/sys.h"
#include "engine/engine.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help(void)
{
    printf("Usage: plumb run MODEL (-p TEXT | -f FILE) [OPTIONS]\n"
           "\n"
           "Generates text from a GGUF model: the prompt and the continuation go to\n"
           "stdout as they are produced, speed figures to stderr.\n"
           "\n"
           "Options:\n"
           "  -p, --prompt TEXT        the prompt\n"
           "  -f, --file FILE          read the prompt's exact bytes from FILE\n"
           "  -n, --n-predict N        tokens to generate (default -1: until end of text\n"
           "                           or a full context)\n"
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
           "      --no-display-prompt  print only the generated text\n"
           "      --ignore-eos         do not stop at end-of-text tokens\n"
           "      --json               print one JSON object instead of streaming:\n"
           "                           {\"prompt_tokens\",\"tokens\",\"text\",\"top\",...}\n"
           "      --top K              with --json: the K highest [id, logit] per step\n"
           "  -h, --help               this help\n"
           "\n"
           "Example:\n"
           "  plumb run stories260K.gguf -p \"Once upon a time\" -n 32 --temp 0 --ctx 512\n");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
        if (n == cap) {
            char *nb = cap > ((size_t)1 << 30) ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

struct run_state {
    bool json;
    bool failed; /* out of memory collecting --json output */
    /* streaming: bytes not yet printed because they end mid-character */
    char pending[64];
    size_t n_pending;
    /* --json */
    json_t *tokens, *top;
    char *text;
    size_t text_len, text_cap;
};

static int on_token(void *user, const struct gen_step *s)
{
    struct run_state *st = user;
    if (st->json) {
        json_array_append_new(st->tokens, json_integer(s->id));
        if (st->top) {
            json_t *step = json_array();
            for (int i = 0; i < s->n_top; i++)
                json_array_append_new(step, json_pack("[i,f]", s->top_ids[i], (double)s->top_logits[i]));
            json_array_append_new(st->top, step);
        }
        if (st->text_len + s->piece_len + 1 > st->text_cap) {
            size_t cap = (st->text_cap + s->piece_len + 1) * 2;
            char *t = realloc(st->text, cap);
            if (!t) {
                st->failed = true;
                return 1;
            }
            st->text = t;
            st->text_cap = cap;
        }
        memcpy(st->text + st->text_len, s->piece, s->piece_len);
        st->text_len += s->piece_len;
        return 0;
    }
    /* print whole UTF-8 characters only; hold back a split one */
    for (size_t i = 0; i < s->piece_len; i++) {
        if (st->n_pending == sizeof st->pending) {
            fwrite(st->pending, 1, st->n_pending, stdout);
            st->n_pending = 0;
        }
        st->pending[st->n_pending++] = s->piece[i];
    }
    size_t ok = tok_utf8_complete(st->pending, st->n_pending);
    fwrite(st->pending, 1, ok, stdout);
    memmove(st->pending, st->pending + ok, st->n_pending - ok);
    st->n_pending -= ok;
    fflush(stdout);
    return 0;
}

static const char *stop_name(enum gen_stop s)
{
    switch (s) {
    case GEN_STOP_EOG: return "stop";
    case GEN_STOP_LENGTH: return "length";
    case GEN_STOP_CONTEXT: return "context";
    default: return "caller";
    }
}

enum {
    OPT_TEMP = 256,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_REPEAT_PENALTY,
    OPT_REPEAT_LAST_N,
    OPT_SEED,
    OPT_NO_DISPLAY_PROMPT,
    OPT_IGNORE_EOS,
    OPT_JSON,
    OPT_TOP,
};

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},
        {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, OPT_TEMP},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT_PENALTY},
        {"repeat-last-n", required_argument, 0, OPT_REPEAT_LAST_N},
        {"seed", required_argument, 0, OPT_SEED},
        {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},
        {"no-display-prompt", no_argument, 0, OPT_NO_DISPLAY_PROMPT},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"json", no_argument, 0, OPT_JSON},
        {"top", required_argument, 0, OPT_TOP},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *prompt = NULL, *prompt_file = NULL;
    struct engine_params ep = {0};
    struct gen_params gp = {.sampling = sampler_defaults(), .n_predict = -1};
    bool display_prompt = true, json = false, seed_given = false;
    long long v;
    double d;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":p:f:n:t:c:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 'n':
            if (!cli_parse_int("run", "--n-predict", optarg, -1, 1 << 30, &v))
                return CLI_USAGE;
            gp.n_predict = (int)v;
            break;
        case OPT_TEMP:
            if (!cli_parse_float("run", "--temp", optarg, 0, 100, &d))
                return CLI_USAGE;
            gp.sampling.temp = (float)d;
            break;
        case OPT_TOP_K:
            if (!cli_parse_int("run", "--top-k", optarg, 0, 1 << 30, &v))
                return CLI_USAGE;
            gp.sampling.top_k = (int32_t)v;
            break;
        case OPT_TOP_P:
            if (!cli_parse_float("run", "--top-p", optarg, 0, 1, &d))
                return CLI_USAGE;
            gp.sampling.top_p = (float)d;
            break;
        case OPT_MIN_P:
            if (!cli_parse_float("run", "--min-p", optarg, 0, 1, &d))
                return CLI_USAGE;
            gp.sampling.min_p = (float)d;
            break;
        case OPT_REPEAT_PENALTY:
            if (!cli_parse_float("run", "--repeat-penalty", optarg, 0.01, 100, &d))
                return CLI_USAGE;
            gp.sampling.repeat_penalty = (float)d;
            break;
        case OPT_REPEAT_LAST_N:
            if (!cli_parse_int("run", "--repeat-last-n", optarg, 0, 1 << 20, &v))
                return CLI_USAGE;
            gp.sampling.repeat_last_n = (int32_t)v;
            break;
        case OPT_SEED:
            if (!cli_parse_int("run", "--seed", optarg, 0, INT64_MAX, &v))
                return CLI_USAGE;
            gp.sampling.seed = (uint64_t)v;
            seed_given = true;
            break;
        case 't':
            if (!cli_parse_int("run", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            ep.n_threads = (int)v;
            break;
        case 'c':
            if (!cli_parse_int("run", "--ctx", optarg, 1, 1 << 24, &v))
                return CLI_USAGE;
            ep.n_ctx = v;
            break;
        case 'b':
            if (!cli_parse_int("run", "--batch", optarg, 1, 1 << 16, &v))
                return CLI_USAGE;
            ep.n_batch = (int)v;
            break;
        case OPT_NO_DISPLAY_PROMPT: display_prompt = false; break;
        case OPT_IGNORE_EOS: gp.ignore_eog = true; break;
        case OPT_JSON: json = true; break;
        case OPT_TOP:
            if (!cli_parse_int("run", "--top", optarg, 0, 1000, &v))
                return CLI_USAGE;
            gp.top_k_report = (int)v;
            break;
        case 'h': help(); return CLI_OK;
        case ':': return cli_usage_error("run", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("run", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage_error("run", "no model given");
    if (argc - optind > 1)
        return cli_usage_error("run", "unexpected argument '%s'", argv[optind + 1]);
    if (gp.top_k_report > 0 && !json)
        return cli_usage_error("run", "--top reports logits in the --json output; add --json");
    if (!!prompt == !!prompt_file)
        return cli_usage_error("run", "give the prompt with exactly one of -p TEXT or -f FILE");
    const char *model_path = argv[optind];
    if (!seed_given)
        gp.sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);

    size_t prompt_len;
    char *prompt_buf = NULL;
    if (prompt_file) {
        prompt_buf = read_file(prompt_file, &prompt_len);
        if (!prompt_buf)
            return cli_error("run", "cannot read prompt file %s", prompt_file);
        prompt = prompt_buf;
    } else {
        prompt_len = strlen(prompt);
    }

    pb_err err = {0};
    struct engine *e = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    struct run_state st = {.json = json};
    int status = CLI_FAIL;
    if (engine_open(model_path, &ep, &e, &err)) {
        cli_error("run", "%s", err.msg);
        goto done;
    }
    const struct model_hparams *hp = model_hparams(engine_model(e));
    if (hp->n_ctx_train > 0 && engine_n_ctx(e) > hp->n_ctx_train)
        fprintf(stderr, "plumb run: warning: context %lld exceeds the model's training context %lld; output may "
                        "degrade past it\n", (long long)engine_n_ctx(e), (long long)hp->n_ctx_train);
    if (tok_encode(engine_tokenizer(e), prompt, prompt_len, true, false, &ids, &n_ids, &err)) {
        cli_error("run", "%s", err.msg);
        goto done;
    }
    if (json) {
        st.tokens = json_array();
        st.top = gp.top_k_report > 0 ? json_array() : NULL;
    } else if (display_prompt) {
        fwrite(prompt, 1, prompt_len, stdout);
        fflush(stdout);
    }
    struct gen_stats gs;
    int rc = engine_generate(e, ids, n_ids, &gp, on_token, &st, &gs, &err);
    if (!json) {
        fwrite(st.pending, 1, st.n_pending, stdout);
        putchar('\n');
        fflush(stdout);
    }
    if (rc) {
        cli_error("run", "%s", err.msg);
        goto done;
    }
    if (st.failed) {
        cli_error("run", "out of memory collecting the output");
        goto done;
    }
    if (json) {
        json_t *pt = json_array();
        for (size_t i = 0; i < n_ids; i++)
            json_array_append_new(pt, json_integer(ids[i]));
        json_t *out = json_object();
        json_object_set_new(out, "prompt_tokens", pt);
        json_object_set_new(out, "tokens", st.tokens);
        json_object_set_new(out, "text", cli_json_text(st.text ? st.text : "", st.text_len));
        json_object_set_new(out, "top", st.top ? st.top : json_array());
        json_object_set_new(out, "finish_reason", json_string(stop_name(gs.stop)));
        json_object_set_new(out, "timings",
                            json_pack("{s:f,s:f,s:f,s:I}", "load_s", engine_load_seconds(e), "prompt_s", gs.t_prompt,
                                      "gen_s", gs.t_gen, "peak_rss_bytes", (json_int_t)sys_peak_rss()));
        st.tokens = st.top = NULL;
        status = cli_print_json(out, false);
    } else {
        status = CLI_OK;
    }
    char rss[32];
    cli_fmt_bytes(sys_peak_rss(), rss, sizeof rss);
    fprintf(stderr, "\nprompt:     %d tokens in %.3f s (%.1f t/s)\n", gs.n_prompt, gs.t_prompt,
            gs.t_prompt > 0 ? gs.n_prompt / gs.t_prompt : 0.0);
    fprintf(stderr, "generation: %d tokens in %.3f s (%.1f t/s), stopped: %s\n", gs.n_gen, gs.t_gen,
            gs.t_gen > 0 ? gs.n_gen / gs.t_gen : 0.0, stop_name(gs.stop));
    fprintf(stderr, "load %.3f s, context %lld, threads %d, seed %llu, peak RSS %s\n", engine_load_seconds(e),
            (long long)engine_n_ctx(e), ep.n_threads > 0 ? ep.n_threads : pool_cpu_count(),
            (unsigned long long)gp.sampling.seed, rss);
done:
    json_decref(st.tokens);
    json_decref(st.top);
    free(st.text);
    free(ids);
    free(prompt_buf);
    engine_free(e);
    return status;
}
