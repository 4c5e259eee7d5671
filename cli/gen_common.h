/* What `plumb run` and `plumb chat` share: the generation options, the
 * engine they open, the finish reasons as they print them, and the speed
 * figures. Both are one-slot clients of the engine. */
#ifndef PLUMB_CLI_GEN_COMMON_H
#define PLUMB_CLI_GEN_COMMON_H

#include "cli.h"

#include "plumb/engine.h"
#include "plumb/sampler.h"

#include <getopt.h>

enum {
    GOPT_TEMP = 1000,
    GOPT_TOP_K,
    GOPT_TOP_P,
    GOPT_MIN_P,
    GOPT_REPEAT_PENALTY,
    GOPT_REPEAT_LAST_N,
    GOPT_SEED,
    GOPT_IGNORE_EOS,
    GOPT_CHAT_FORMAT,
    GOPT_SYSTEM,
    GOPT_KV_TYPE,
    GOPT_IGNORE_MEMORY,
    GOPT_SHOW_REASONING,
    GOPT_NO_THINK,
    GOPT_REASONING_EFFORT,
    GOPT_JSON_SCHEMA,
    GOPT_GRAMMAR,
};

/* Long options of cli_gen_option, to put in a command's option table. */
#define CLI_GEN_LONGOPTS                                                                                               \
    {"n-predict", required_argument, 0, 'n'}, {"temp", required_argument, 0, GOPT_TEMP},                               \
        {"top-k", required_argument, 0, GOPT_TOP_K}, {"top-p", required_argument, 0, GOPT_TOP_P},                      \
        {"min-p", required_argument, 0, GOPT_MIN_P}, {"repeat-penalty", required_argument, 0, GOPT_REPEAT_PENALTY},    \
        {"repeat-last-n", required_argument, 0, GOPT_REPEAT_LAST_N}, {"seed", required_argument, 0, GOPT_SEED},        \
        {"threads", required_argument, 0, 't'}, {"ctx", required_argument, 0, 'c'},                                    \
        {"batch", required_argument, 0, 'b'}, {"ignore-eos", no_argument, 0, GOPT_IGNORE_EOS},                         \
        {"chat-format", required_argument, 0, GOPT_CHAT_FORMAT}, {"system", required_argument, 0, GOPT_SYSTEM},     \
        {"kv-type", required_argument, 0, GOPT_KV_TYPE}, {"ignore-memory", no_argument, 0, GOPT_IGNORE_MEMORY},   \
        {"show-reasoning", no_argument, 0, GOPT_SHOW_REASONING}, {"no-think", no_argument, 0, GOPT_NO_THINK},          \
        {"reasoning-effort", required_argument, 0, GOPT_REASONING_EFFORT},                                           \
        {"json-schema", required_argument, 0, GOPT_JSON_SCHEMA}, {"grammar", required_argument, 0, GOPT_GRAMMAR}
#define CLI_GEN_SHORTOPTS "n:t:c:b:"

/* Help text for those options. */
const char *cli_gen_help(void);

struct cli_gen {
    struct engine_params ep;
    struct engine_request_params rp;
    struct engine_chat_opts chat_opts; /* --no-think, --reasoning-effort */
    bool show_reasoning;
    bool seed_given;
    const char *system; /* system prompt, or NULL */
    char *grammar;      /* --json-schema or --grammar as GBNF (rp.grammar points here); free with cli_gen_free */
};

void cli_gen_free(struct cli_gen *g);

void cli_gen_init(struct cli_gen *g, int n_predict_default);
/* Handles option c: 1 if it was a generation option, 0 if not, -1 after
 * printing a usage error for a bad value. */
int cli_gen_option(const char *cmd, int c, const char *arg, struct cli_gen *g);
/* Picks a random seed unless one was given. */
void cli_gen_finish(struct cli_gen *g);

/* Resolves MODEL and opens its engine (one slot), printing what the user
 * should know (a context beyond the model's training context; for chat,
 * a chat format fallback). NULL after printing the error. */
struct engine *cli_gen_open(const char *cmd, const char *model, const struct cli_gen *g, bool chat);

/* An answer as it streams: printed to stdout (reasoning dimmed on a
 * terminal, and only with --show-reasoning) unless json, and kept (text,
 * reasoning, and for json the token ids and top logits of every step). */
struct cli_answer {
    bool json, show_reasoning, tty;
    bool failed;          /* out of memory keeping it */
    bool in_reasoning;    /* the last thing printed was reasoning */
    char *text, *reasoning;
    size_t text_len, text_cap, reasoning_len, reasoning_cap;
    json_t *tokens, *top; /* json: ids, and each step's [id, logit] pairs when top is not NULL */
};
void cli_answer_init(struct cli_answer *a, const struct cli_gen *g, bool json);
/* Forgets the last answer (keeps the buffers). */
void cli_answer_reset(struct cli_answer *a);
void cli_answer_free(struct cli_answer *a);
/* The engine events that fill it (user: the cli_answer). */
int cli_answer_step(void *user, const struct engine_step *s);
void cli_answer_done(void *user, const struct engine_result *r);
/* Ends what was printed (a newline; the dim attribute reset). */
void cli_answer_end(struct cli_answer *a);

/* The finish reason as run and chat print it: "stop" (end of text or a
 * stop string), "length", "context", "interrupted", "error". */
const char *cli_finish_name(enum engine_finish f);

/* "prompt: ... generation: ... load ..." on stderr. */
void cli_print_stats(const struct engine *e, const struct engine_result *r, const struct cli_gen *g);

#endif
