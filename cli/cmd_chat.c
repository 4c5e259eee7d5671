/* plumb chat: a conversation with a model through its chat template.
 *
 * Reads one user line at a time from stdin and streams the answer to
 * stdout, on a terminal or a pipe alike (so it can be scripted). Lines
 * starting with '/' are commands. The history is re-rendered every turn;
 * the engine reuses the cache of the part that did not change. Ctrl-C
 * stops the current answer, not the program. */
#define _GNU_SOURCE
#include "gen_common.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void help(void)
{
    printf("Usage: plumb chat MODEL [OPTIONS]\n"
           "\n"
           "An interactive conversation using the model's chat template. Type a message\n"
           "and press Enter; the answer streams back. Works on a pipe too: each input line\n"
           "is one user message, each answer ends with a newline.\n"
           "\n"
           "Commands:\n"
           "  /system TEXT   set the system message (/system alone clears it)\n"
           "  /reset         forget the conversation (keeps the system message)\n"
           "  /save FILE     save the conversation as JSON\n"
           "  /load FILE     load a conversation saved with /save\n"
           "  /stats         speed and context use of the last answer\n"
           "  /help, /exit   this list; leave (Ctrl-D too)\n"
           "Ctrl-C stops the current answer.\n"
           "\n"
           "Options:\n"
           "%s"
           "      --json               print each answer as one line of JSON:\n"
           "                           {\"content\",\"finish_reason\",\"usage\",\"tokens\",\"top\"}\n"
           "      --top K              with --json: the K highest [id, logit] of each step\n"
           "  -h, --help               this help\n"
           "\n"
           "Example:\n"
           "  echo \"What is 2 + 3?\" | plumb chat qwen2.5-0.5b-instruct.gguf --temp 0\n",
           cli_gen_help());
}

struct session {
    struct engine *e;
    struct cli_gen *g;
    json_t *messages; /* without the system message */
    char *system;
    struct engine_result last;
    bool have_last;
    bool tty;
    bool json; /* one JSON object per answer instead of streamed text */
    struct cli_answer ans; /* the answer being generated */
};

static int on_step(void *user, const struct engine_step *s)
{
    struct session *ss = user;
    if (interrupted)
        return 1;
    return cli_answer_step(&ss->ans, s);
}

static void on_done(void *user, const struct engine_result *r)
{
    struct session *ss = user;
    cli_answer_done(&ss->ans, r);
}

/* The conversation with the system message in front. */
static json_t *full_conversation(const struct session *ss)
{
    json_t *all = json_array();
    if (ss->system)
        json_array_append_new(all, json_pack("{s:s,s:s}", "role", "system", "content", ss->system));
    json_array_extend(all, ss->messages);
    return all;
}

/* Tokenizes the conversation, dropping the oldest exchanges (with a
 * notice) until it leaves room for an answer. */
static int fit_prompt(struct session *ss, int32_t **ids, size_t *n)
{
    struct engine_info in;
    engine_get_info(ss->e, &in);
    const int64_t n_ctx = in.n_ctx;
    int64_t room = ss->g->rp.n_predict > 0 ? ss->g->rp.n_predict : 256;
    if (room > n_ctx / 4)
        room = n_ctx / 4;
    for (;;) {
        pb_err err = {0};
        json_t *all = full_conversation(ss);
        int rc = engine_chat_prompt(ss->e, all, &ss->g->chat_opts, ids, n, &ss->g->rp.reasoning, &err);
        json_decref(all);
        if (rc)
            return cli_error("chat", "%s", err.msg);
        if ((int64_t)*n + room <= n_ctx)
            return CLI_OK;
        free(*ids);
        *ids = NULL;
        if (json_array_size(ss->messages) <= 1) {
            return cli_error("chat", "the message does not fit in the context (%lld tokens); use a larger --ctx",
                             (long long)n_ctx);
        }
        /* drop the oldest message, and its answer */
        json_array_remove(ss->messages, 0);
        if (json_array_size(ss->messages) > 1 &&
            !strcmp(json_string_value(json_object_get(json_array_get(ss->messages, 0), "role")), "assistant"))
            json_array_remove(ss->messages, 0);
        fprintf(stderr, "(context full: the oldest exchange was dropped)\n");
    }
}

static void answer(struct session *ss, const char *line)
{
    json_t *msg = json_pack("{s:s,s:o}", "role", "user", "content", pb_json_text(line, strlen(line)));
    json_array_append_new(ss->messages, msg);
    int32_t *ids = NULL;
    size_t n = 0;
    if (fit_prompt(ss, &ids, &n)) { /* the message was not asked: forget it */
        size_t k = json_array_size(ss->messages);
        if (k && json_array_get(ss->messages, k - 1) == msg)
            json_array_remove(ss->messages, k - 1);
        return;
    }
    cli_answer_reset(&ss->ans);
    interrupted = 0;
    pb_err err = {0};
    const struct engine_events ev = {ss, on_step, on_done};
    int rc = engine_generate(ss->e, ids, n, &ss->g->rp, &ev, &ss->last, &err);
    cli_answer_end(&ss->ans);
    free(ids);
    if (rc) {
        cli_error("chat", "%s", err.msg);
        json_array_remove(ss->messages, json_array_size(ss->messages) - 1);
        return;
    }
    ss->have_last = true;
    if (interrupted) {
        fprintf(stderr, "(interrupted)\n");
        interrupted = 0;
    }
    /* the history keeps the answer, not the thinking (as the templates expect) */
    const struct cli_answer *a = &ss->ans;
    json_t *content = pb_json_text(a->text ? a->text : "", a->text_len);
    json_array_append_new(ss->messages, json_pack("{s:s,s:O}", "role", "assistant", "content", content));
    if (ss->json) {
        json_t *o = json_pack("{s:o,s:s,s:{s:i,s:i,s:i},s:O,s:o}", "content", content, "finish_reason",
                              cli_finish_name(ss->last.finish), "usage", "prompt_tokens", ss->last.n_prompt,
                              "completion_tokens", ss->last.n_gen, "cached_tokens", ss->last.n_reused, "tokens",
                              a->tokens, "top", a->top ? json_incref(a->top) : json_array());
        if (ss->g->rp.reasoning.style != ENGINE_REASONING_NONE)
            json_object_set_new(o, "reasoning", pb_json_text(a->reasoning ? a->reasoning : "", a->reasoning_len));
        cli_print_json(o, false);
        fflush(stdout);
    } else {
        json_decref(content);
    }
}

static void save(struct session *ss, const char *path)
{
    json_t *doc = json_pack("{s:o}", "messages", full_conversation(ss));
    if (json_dump_file(doc, path, JSON_INDENT(2)) != 0)
        fprintf(stderr, "plumb chat: cannot write %s\n", path);
    else
        fprintf(stderr, "(saved %zu messages to %s)\n", json_array_size(json_object_get(doc, "messages")), path);
    json_decref(doc);
}

static void load(struct session *ss, const char *path)
{
    json_error_t je = {.text = ""};
    char why[128];
    size_t len;
    char *text = cli_read_input(path, CLI_MAX_TEXT_INPUT, &len, why, sizeof why);
    const bool read = text != NULL;
    json_t *doc = read ? json_loadb(text, len, 0, &je) : NULL;
    free(text);
    json_t *msgs = doc ? json_object_get(doc, "messages") : NULL;
    if (!json_is_array(msgs)) {
        fprintf(stderr, "plumb chat: %s is not a saved conversation%s%s\n", path, doc ? "" : ": ",
                doc ? "" : read ? je.text : why);
        json_decref(doc);
        return;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || !json_is_string(json_object_get(m, "content")) ||
            (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))) {
            fprintf(stderr, "plumb chat: %s: message %zu needs a role (system, user, assistant) and a content "
                    "string\n", path, i);
            json_decref(doc);
            return;
        }
    }
    free(ss->system);
    ss->system = NULL;
    json_array_clear(ss->messages);
    json_array_foreach(msgs, i, m)
    {
        if (i == 0 && !strcmp(json_string_value(json_object_get(m, "role")), "system"))
            ss->system = strdup(json_string_value(json_object_get(m, "content")));
        else
            json_array_append(ss->messages, m);
    }
    fprintf(stderr, "(loaded %zu messages from %s)\n", json_array_size(msgs), path);
    json_decref(doc);
}

/* Handles a /command; returns 1 to leave. */
static int command(struct session *ss, char *line)
{
    char *arg = strchr(line, ' ');
    if (arg) {
        *arg++ = 0;
        while (*arg == ' ')
            arg++;
    }
    if (!strcmp(line, "/exit") || !strcmp(line, "/quit") || !strcmp(line, "/bye"))
        return 1;
    if (!strcmp(line, "/system")) {
        free(ss->system);
        ss->system = arg && *arg ? strdup(arg) : NULL;
        fprintf(stderr, ss->system ? "(system message set)\n" : "(system message cleared)\n");
    } else if (!strcmp(line, "/reset")) {
        json_array_clear(ss->messages);
        fprintf(stderr, "(conversation cleared)\n");
    } else if (!strcmp(line, "/save") || !strcmp(line, "/load")) {
        if (!arg || !*arg)
            fprintf(stderr, "plumb chat: %s needs a file name\n", line);
        else if (line[1] == 's')
            save(ss, arg);
        else
            load(ss, arg);
    } else if (!strcmp(line, "/stats")) {
        if (!ss->have_last)
            fprintf(stderr, "(no answer yet)\n");
        else
            cli_print_stats(ss->e, &ss->last, ss->g);
        struct engine_info in;
        struct engine_stats st;
        engine_get_info(ss->e, &in);
        engine_get_stats(ss->e, &st);
        fprintf(stderr, "context: %lld of %lld tokens in use, %zu messages, format %s\n", (long long)st.kv_used,
                (long long)in.n_ctx, json_array_size(ss->messages) + (ss->system ? 1 : 0), in.chat_format);
    } else if (!strcmp(line, "/help")) {
        fprintf(stderr, "/system TEXT, /reset, /save FILE, /load FILE, /stats, /exit\n");
    } else {
        fprintf(stderr, "plumb chat: unknown command %s (try /help)\n", line);
    }
    return 0;
}

int cmd_chat(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_TOP };
    static const struct option opts[] = {CLI_GEN_LONGOPTS, {"json", no_argument, 0, OPT_JSON},
                                         {"top", required_argument, 0, OPT_TOP}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    long long v;
    bool json = false;
    struct cli_gen g;
    cli_gen_init(&g, -1);
    int c;
    struct cli_parser par = {.cmd = "chat", .shortopts = "h" CLI_GEN_SHORTOPTS, .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        int handled = cli_gen_option("chat", c, optarg, &g);
        if (handled < 0)
            return CLI_USAGE;
        if (handled)
            continue;
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_TOP:
            if (!cli_parse_int("chat", "--top", optarg, 0, 1000, &v))
                return CLI_USAGE;
            g.rp.n_top = (int)v;
            break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("chat", argc == optind ? "no model given" : "expected one model");
    if (g.rp.n_top > 0 && !json)
        return cli_usage_error("chat", "--top reports logits in the --json output; add --json");
    cli_gen_finish(&g);

    struct session ss = {.g = &g, .tty = isatty(STDIN_FILENO) == 1, .json = json};
    if (!(ss.e = cli_gen_open("chat", argv[optind], &g, true)))
        return CLI_FAIL;
    cli_answer_init(&ss.ans, &g, json);
    ss.messages = json_array();
    ss.system = g.system ? strdup(g.system) : NULL;

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint; /* no SA_RESTART: Ctrl-C at the prompt interrupts the read */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    if (ss.tty) {
        struct engine_info in;
        engine_get_info(ss.e, &in);
        fprintf(stderr, "plumb chat: %s, %s format, context %lld. /help for commands, Ctrl-D to leave.\n",
                argv[optind], in.chat_format, (long long)in.n_ctx);
    }
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (ss.tty) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        errno = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (errno == EINTR && interrupted) {
                interrupted = 0;
                clearerr(stdin);
                fputc('\n', stderr);
                continue;
            }
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (n == 0)
            continue;
        if (line[0] == '/') {
            if (command(&ss, line))
                break;
            continue;
        }
        answer(&ss, line);
    }
    if (ss.tty)
        fputc('\n', stderr);
    free(line);
    cli_answer_free(&ss.ans);
    free(ss.system);
    json_decref(ss.messages);
    engine_close(ss.e);
    cli_gen_free(&g);
    return CLI_OK;
}
