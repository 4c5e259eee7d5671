/* cli_getopt: the one option parser of every plumb command, so that all
 * of them name, accept and refuse options the same way. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <string.h>

/* Spellings of other tools (llama.cpp, Ollama) and the short names plumb
 * gives an idea wherever it exists. A command that defines the flag itself
 * keeps it; one that has `to` takes the flag as `to`; otherwise, with a
 * `why`, the flag is refused saying why. */
struct foreign {
    const char *flag, *to, *why;
};

#define ON_CPU "plumb runs on the CPU: there are no GPU layers or devices to choose"
static const struct foreign foreign[] = {
    /* one short name per idea */
    {"-c", "--ctx", NULL},
    {"-t", "--threads", NULL},
    {"-b", "--batch", NULL},
    {"-o", "--output", NULL},
    /* llama.cpp and Ollama */
    {"-ngl", NULL, ON_CPU},
    {"--n-gpu-layers", NULL, ON_CPU},
    {"--gpu-layers", NULL, ON_CPU},
    {"-sm", NULL, ON_CPU},
    {"--split-mode", NULL, ON_CPU},
    {"-ts", NULL, ON_CPU},
    {"--tensor-split", NULL, ON_CPU},
    {"-mg", NULL, ON_CPU},
    {"--main-gpu", NULL, ON_CPU},
    {"-dev", NULL, ON_CPU},
    {"--device", NULL, ON_CPU},
    {"-nkvo", NULL, ON_CPU},
    {"--no-kv-offload", NULL, ON_CPU},
    {"-m", NULL, "the model is the command's first argument, not an option"},
    {"--model", NULL, "the model is the command's first argument, not an option"},
    {"-hf", NULL, "plumb pull URL fetches a model into the store"},
    {"--hf-repo", NULL, "plumb pull URL fetches a model into the store"},
    {"--ctx-size", "--ctx", NULL},
    {"--num-ctx", "--ctx", NULL},
    {"--num_ctx", "--ctx", NULL},
    {"--num-predict", "--n-predict", NULL},
    {"--num_predict", "--n-predict", NULL},
    {"--temperature", "--temp", NULL},
    {"-s", "--seed", NULL},
    {"-tb", NULL, "plumb uses one thread count for prompts and generation (--threads)"},
    {"--threads-batch", NULL, "plumb uses one thread count for prompts and generation (--threads)"},
    {"-np", "--parallel", "requests in parallel are plumb serve's --parallel"},
    {"--batch-size", "--batch", NULL},
    {"-ub", "--batch", NULL},
    {"--ubatch-size", "--batch", NULL},
    {"-ctk", "--kv-type", NULL},
    {"--cache-type-k", "--kv-type", NULL},
    {"-ctv", "--kv-type", NULL},
    {"--cache-type-v", "--kv-type", NULL},
    {"-sys", "--system", NULL},
    {"--system-prompt", "--system", NULL},
    {"-fa", NULL, "plumb's attention is always tiled (flash-style): there is nothing to turn on"},
    {"--flash-attn", NULL, "plumb's attention is always tiled (flash-style): there is nothing to turn on"},
    {"-cb", NULL, "plumb serve always batches requests continuously"},
    {"--cont-batching", NULL, "plumb serve always batches requests continuously"},
    {"--jinja", NULL, "plumb always renders the model's own chat template (--chat-format picks a built-in one)"},
    {"--chat-template", NULL, "plumb renders the model's own chat template (--chat-format picks a built-in one)"},
    {"-cnv", NULL, "to talk with a model, use plumb chat MODEL"},
    {"--conversation", NULL, "to talk with a model, use plumb chat MODEL"},
    {"-i", NULL, "to talk with a model, use plumb chat MODEL"},
    {"--interactive", NULL, "to talk with a model, use plumb chat MODEL"},
    {"--mlock", NULL, "plumb maps the model file and manages its memory itself"},
    {"--no-mmap", NULL, "plumb maps the model file and manages its memory itself"},
    {"--api-key", NULL, "keys are read from a file: --api-key-file FILE (one key per line)"},
};

/* The long option `name` (without dashes) of the command, or NULL. */
static const struct option *long_opt(const struct cli_parser *p, const char *name, size_t len)
{
    for (const struct option *o = p->longopts; o && o->name; o++)
        if (strlen(o->name) == len && !strncmp(o->name, name, len))
            return o;
    return NULL;
}

/* The short option c of the command: NULL when it has none, else where
 * it stands in shortopts (followed by ':' when it takes a value). */
static const char *short_opt(const struct cli_parser *p, char c)
{
    return c && c != ':' && p->shortopts ? strchr(p->shortopts, c) : NULL;
}

/* Whether the command defines flag (a "-x" or a "--name"). */
static bool defines(const struct cli_parser *p, const char *flag, size_t len)
{
    if (len > 2 && flag[1] == '-')
        return long_opt(p, flag + 2, len - 2) != NULL;
    return len == 2 && short_opt(p, flag[1]);
}

static bool in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *s = list; s && *s;) {
        const char *e = strchr(s, ',');
        size_t k = e ? (size_t)(e - s) : strlen(s);
        if (k == n && !strncmp(s, name, n))
            return true;
        s = e ? e + 1 : s + k;
    }
    return false;
}

/* argv entries rewritten to plumb's spelling ("--ctx=4096"); they live as
 * long as the process, as argv does. */
static char rewritten[16][256];
static int n_rewritten;

static int unknown(const struct cli_parser *p, const char *flag, size_t len, const char *why)
{
    if (why)
        cli_usage_error(p->cmd, "%.*s: unknown option; %s", (int)len, flag, why);
    else
        cli_usage_error(p->cmd, "%.*s: unknown option", (int)len, flag);
    return '?';
}

/* The whole command line before getopt sees it: --json, other tools'
 * spellings, and words like -ngl that getopt would split into -n gl. */
static int prescan(int argc, char **argv, struct cli_parser *p)
{
    cli_json_errors = false;
    bool takes_json = long_opt(p, "json", 4) != NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            break;
        if (a[0] != '-' || !a[1])
            continue;
        if (takes_json && !strcmp(a, "--json"))
            cli_json_errors = true;
        size_t len = strcspn(a, "=");
        for (size_t k = 0; k < sizeof foreign / sizeof foreign[0]; k++) {
            const struct foreign *f = &foreign[k];
            if (strlen(f->flag) != len || strncmp(f->flag, a, len) || defines(p, a, len))
                continue;
            if (f->to && defines(p, f->to, strlen(f->to))) {
                if (n_rewritten == (int)(sizeof rewritten / sizeof rewritten[0]))
                    return unknown(p, a, len, "too many options in other tools' spellings");
                char *r = rewritten[n_rewritten++];
                snprintf(r, sizeof rewritten[0], "%s%s", f->to, a + len);
                argv[i] = r;
                a = r;
                len = strcspn(a, "=");
                break;
            }
            if (f->why)
                return unknown(p, a, len, f->why);
        }
        /* -ngl, -ctx: a word after one dash whose first letter is a short
         * option taking a number is a misspelt option, not -n "gl" */
        const char *s = a[1] != '-' ? short_opt(p, a[1]) : NULL;
        if (s && s[1] == ':' && strchr("nctbr", a[1]) && len >= 3) {
            bool word = true;
            for (size_t k = 2; k < len; k++)
                word &= isalpha((unsigned char)a[k]) || a[k] == '-';
            if (word)
                return unknown(p, a, len, NULL);
        }
        /* skip the value of an option that takes one as the next word */
        if (a[1] == '-' && !a[len]) {
            const struct option *o = long_opt(p, a + 2, len - 2);
            if (o && o->has_arg == required_argument)
                i++;
        } else if (len == 2 && s && s[1] == ':') {
            i++;
        }
    }
    return 0;
}

int cli_getopt(int argc, char **argv, struct cli_parser *p)
{
    if (!p->started) {
        p->started = true;
        optind = 1;
        opterr = 0;
        snprintf(p->spec, sizeof p->spec, ":%s", p->shortopts ? p->shortopts : "");
        if (prescan(argc, argv, p))
            return '?';
    }
    int li = -1;
    optopt = 0;
    int c = getopt_long(argc, argv, p->spec, p->longopts, &li);
    if (c == '?' || c == ':') {
        /* a long option is the last word getopt took; a short one may sit
         * inside a word (-xyz), reported by its letter */
        const char *w = optind > 1 ? argv[optind - 1] : "";
        size_t len = strcspn(w, "=");
        const struct option *o = !strncmp(w, "--", 2) ? long_opt(p, w + 2, len - 2) : NULL;
        bool is_long = optopt == 0 || (o && o->val == optopt);
        if (!is_long) {
            char flag[3] = {'-', (char)optopt, 0};
            if (c == ':')
                cli_usage_error(p->cmd, "%s: needs a value", flag);
            return c == ':' ? '?' : unknown(p, flag, 2, NULL);
        }
        if (c == ':')
            cli_usage_error(p->cmd, "%.*s: needs a value", (int)len, w);
        else if (o && o->has_arg == no_argument)
            cli_usage_error(p->cmd, "%.*s: takes no value", (int)len, w);
        else
            unknown(p, w, len, NULL);
        return '?';
    }
    if (c != -1 && optarg && !strcmp(optarg, "-") && p->files) {
        const char *name = li >= 0 ? p->longopts[li].name : NULL;
        for (const struct option *o = p->longopts; !name && o && o->name; o++)
            if (o->val == c && o->has_arg != no_argument)
                name = o->name;
        char what[64];
        snprintf(what, sizeof what, "--%s", name ? name : "?");
        if (name && in_list(p->files, name) && cli_refuse_dash(p->cmd, what, optarg))
            return '?';
    }
    return c;
}

bool cli_refuse_dash(const char *cmd, const char *what, const char *value)
{
    if (strcmp(value, "-"))
        return false;
    cli_usage_error(cmd, "%s '-': this is not read from standard input or written to standard output; give a file "
                         "name (./- for a file named '-')", what);
    return true;
}
