/* plumb run: one generation, streamed to stdout, figures to stderr. */
#define _GNU_SOURCE
#include "gen_common.h"

#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb run MODEL (-p TEXT | -f FILE) [OPTIONS]\n"
           "\n"
           "Generates text from a GGUF model: the prompt and the continuation go to\n"
           "stdout as they are produced, speed figures to stderr.\n"
           "\n"
           "Options:\n"
           "  -p, --prompt TEXT        the prompt\n"
           "  -f, --file FILE          read the prompt's exact bytes from FILE ('-': standard input)\n"
           "      --chat               send the prompt as a user message through the model's\n"
           "                           chat template (with --system, --chat-format)\n"
           "%s"
           "      --no-display-prompt  print only the generated text\n"
           "      --json               print one JSON object instead of streaming:\n"
           "                           {\"prompt_tokens\",\"tokens\",\"text\",\"top\",...}\n"
           "      --top K              with --json: the K highest [id, logit] per step\n"
           "  -h, --help               this help\n"
           "\n"
           "Examples:\n"
           "  plumb run stories260K.gguf -p \"Once upon a time\" -n 32 --temp 0 --ctx 512\n"
           "  plumb run qwen2.5-0.5b-instruct.gguf --chat -p \"What is the capital of France?\"\n",
           cli_gen_help());
}

enum { OPT_NO_DISPLAY_PROMPT = 256, OPT_JSON, OPT_TOP, OPT_CHAT };

/* The prompt as token ids: raw text, or a user message through the chat
 * template. */
static int prompt_ids(struct engine *e, struct cli_gen *g, bool chat, const char *prompt, size_t len, int32_t **ids,
                      size_t *n)
{
    pb_err err = {0};
    struct engine_answer_start start;
    if (!chat) {
        if (tok_encode(engine_tokenizer(e), prompt, len, true, false, ids, n, &err))
            return cli_error("run", "%s", err.msg);
        return CLI_OK;
    }
    json_t *msgs = json_array();
    if (g->system)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", g->system));
    json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "user", "content", pb_json_text(prompt, len)));
    int rc = engine_chat_prompt(e, msgs, &g->chat_opts, ids, n, &start, &err);
    json_decref(msgs);
    if (rc)
        return cli_error("run", "%s", err.msg);
    g->rp.reasoning = start; /* the reasoning of a thinking model comes apart */
    return CLI_OK;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},
        CLI_GEN_LONGOPTS,
        {"no-display-prompt", no_argument, 0, OPT_NO_DISPLAY_PROMPT},
        {"json", no_argument, 0, OPT_JSON},
        {"top", required_argument, 0, OPT_TOP},
        {"chat", no_argument, 0, OPT_CHAT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *prompt = NULL, *prompt_file = NULL;
    struct cli_gen g;
    cli_gen_init(&g, -1);
    bool display_prompt = true, json = false, chat = false;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "run", .shortopts = "p:f:h" CLI_GEN_SHORTOPTS, .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        int handled = cli_gen_option("run", c, optarg, &g);
        if (handled < 0)
            return CLI_USAGE;
        if (handled)
            continue;
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case OPT_NO_DISPLAY_PROMPT: display_prompt = false; break;
        case OPT_JSON: json = true; break;
        case OPT_CHAT: chat = true; break;
        case OPT_TOP:
            if (!cli_parse_int("run", "--top", optarg, 0, 1000, &v))
                return CLI_USAGE;
            g.rp.n_top = (int)v;
            break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind >= argc)
        return cli_usage_error("run", "no model given");
    if (argc - optind > 1)
        return cli_usage_error("run", "unexpected argument '%s'", argv[optind + 1]);
    if (g.rp.n_top > 0 && !json)
        return cli_usage_error("run", "--top reports logits in the --json output; add --json");
    if (!!prompt == !!prompt_file)
        return cli_usage_error("run", "give the prompt with exactly one of -p TEXT or -f FILE");
    if (!chat && (g.system || g.ep.chat_format))
        return cli_usage_error("run", "--system and --chat-format need --chat");
    cli_gen_finish(&g);

    size_t prompt_len;
    char *prompt_buf = NULL;
    if (prompt_file) {
        char why[128];
        prompt_buf = cli_read_input(prompt_file, CLI_MAX_TEXT_INPUT, &prompt_len, why, sizeof why);
        if (!prompt_buf)
            return cli_error("run", "cannot read the prompt file %s: %s", prompt_file, why);
        prompt = prompt_buf;
    } else {
        prompt_len = strlen(prompt);
    }

    pb_err err = {0};
    struct engine *e = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    struct cli_answer ans;
    cli_answer_init(&ans, &g, json);
    int status = CLI_FAIL;
    if (!(e = cli_gen_open("run", argv[optind], &g, chat)))
        goto done;
    if (prompt_ids(e, &g, chat, prompt, prompt_len, &ids, &n_ids))
        goto done;
    if (!json && display_prompt && !chat) {
        fwrite(prompt, 1, prompt_len, stdout);
        fflush(stdout);
    }
    const struct engine_events ev = {&ans, cli_answer_step, cli_answer_done};
    struct engine_result res;
    int rc = engine_generate(e, ids, n_ids, &g.rp, &ev, &res, &err);
    cli_answer_end(&ans);
    if (rc) {
        cli_error("run", "%s", err.msg);
        goto done;
    }
    if (ans.failed) {
        cli_error("run", "out of memory collecting the output");
        goto done;
    }
    if (json) {
        struct engine_info in;
        engine_get_info(e, &in);
        json_t *pt = json_array();
        for (size_t i = 0; i < n_ids; i++)
            json_array_append_new(pt, json_integer(ids[i]));
        json_t *out = json_object();
        json_object_set_new(out, "prompt_tokens", pt);
        json_object_set_new(out, "tokens", json_incref(ans.tokens));
        json_object_set_new(out, "text", pb_json_text(ans.text ? ans.text : "", ans.text_len));
        if (g.rp.reasoning.style != ENGINE_REASONING_NONE)
            json_object_set_new(out, "reasoning", pb_json_text(ans.reasoning ? ans.reasoning : "", ans.reasoning_len));
        json_object_set_new(out, "top", ans.top ? json_incref(ans.top) : json_array());
        json_object_set_new(out, "finish_reason", json_string(cli_finish_name(res.finish)));
        json_object_set_new(out, "timings",
                            json_pack("{s:f,s:f,s:f,s:I}", "load_s", in.load_s, "prompt_s", res.t_prompt, "gen_s",
                                      res.t_gen, "peak_rss_bytes", (json_int_t)pb_peak_rss()));
        status = cli_print_json(out, false);
    } else {
        status = CLI_OK;
    }
    fputc('\n', stderr);
    cli_print_stats(e, &res, &g);
done:
    cli_answer_free(&ans);
    free(ids);
    free(prompt_buf);
    engine_close(e);
    cli_gen_free(&g);
    return status;
}
