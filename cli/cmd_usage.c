/* plumb usage: token usage per key, model or day, as plumb serve recorded
 * it in the store's registry. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/store.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help(void)
{
    printf("Usage: plumb usage [--since DATE] [--by key|model|day] [--json]\n"
           "\n"
           "Token usage of the requests plumb serve answered, from the store's\n"
           "registry: requests, prompt tokens (and of those, cached), completion\n"
           "tokens, grouped by API key id (never the key), model or UTC day.\n"
           "\n"
           "Options:\n"
           "      --since DATE   from DATE on: YYYY-MM-DD (UTC), or a span back from now\n"
           "                     like 24h, 7d, 30d (default: everything)\n"
           "      --by WHAT      key, model, day, or total (default total)\n"
           "      --json         print JSON\n"
           "  -h, --help         this help\n"
           "\n"
           "Examples:\n"
           "  plumb usage --by key --since 30d\n"
           "  plumb usage --by day --json\n");
}

static const char *const usage_by_names[] = {"total", "key", "model", "day"};

json_t *cli_usage_json(const struct store_usage_sum *rows, size_t n, enum store_usage_by by)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", usage_by_names[by],
                                             by == STORE_USAGE_TOTAL ? "all" : rows[i].group, "requests",
                                             (json_int_t)rows[i].requests, "prompt_tokens",
                                             (json_int_t)rows[i].prompt_tokens, "cached_tokens",
                                             (json_int_t)rows[i].cached_tokens, "completion_tokens",
                                             (json_int_t)rows[i].completion_tokens, "total_tokens",
                                             (json_int_t)(rows[i].prompt_tokens + rows[i].completion_tokens),
                                             "first", cli_json_time((int64_t)rows[i].first), "last",
                                             cli_json_time((int64_t)rows[i].last)));
    return arr;
}

int cmd_usage(int argc, char **argv)
{
    enum { OPT_SINCE = 1000, OPT_BY, OPT_JSON };
    static const struct option longopts[] = {
        {"since", required_argument, 0, OPT_SINCE}, {"by", required_argument, 0, OPT_BY},
        {"json", no_argument, 0, OPT_JSON},         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    double since = 0;
    enum store_usage_by by = STORE_USAGE_TOTAL;
    bool json = false;
    int c;
    struct cli_parser par = {.cmd = "usage", .shortopts = "h", .longopts = longopts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_SINCE:
            if (!cli_parse_since(optarg, &since))
                return cli_usage_error("usage", "--since wants YYYY-MM-DD or a span like 7d, 24h (not '%s')", optarg);
            break;
        case OPT_BY:
            if (!strcmp(optarg, "key"))
                by = STORE_USAGE_KEY;
            else if (!strcmp(optarg, "model"))
                by = STORE_USAGE_MODEL;
            else if (!strcmp(optarg, "day"))
                by = STORE_USAGE_DAY;
            else if (!strcmp(optarg, "total"))
                by = STORE_USAGE_TOTAL;
            else
                return cli_usage_error("usage", "--by is key, model, day or total (not '%s')", optarg);
            break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind < argc)
        return cli_usage_error("usage", "unexpected argument '%s'", argv[optind]);
    struct store *st;
    pb_err err = {0};
    if (store_open_readonly(NULL, &st, &err))
        return cli_error("usage", "%s", err.msg);
    struct store_usage_sum *rows;
    size_t n;
    int rc = store_usage_query(st, since, by, &rows, &n, &err);
    store_close(st);
    if (rc)
        return cli_error("usage", "%s", err.msg);
    if (json) {
        json_t *arr = cli_usage_json(rows, n, by);
        free(rows);
        return cli_print_json(json_pack("{s:s, s:o, s:o}", "by", usage_by_names[by], "since",
                                        since > 0 ? cli_json_time((int64_t)since) : json_null(), "usage", arr),
                              true);
    }
    if (n == 0) {
        printf("no requests recorded%s\n", since > 0 ? " in that time" : "");
        free(rows);
        return CLI_OK;
    }
    printf("| %-24s | %9s | %13s | %13s | %17s | %13s |\n", usage_by_names[by], "requests", "prompt tok", "cached tok",
           "completion tok", "total tok");
    printf("| ------------------------ | --------- | ------------- | ------------- | ----------------- | ------------- |\n");
    for (size_t i = 0; i < n; i++)
        printf("| %-24.24s | %9llu | %13llu | %13llu | %17llu | %13llu |\n",
               by == STORE_USAGE_TOTAL ? "all" : rows[i].group[0] ? cli_esc(rows[i].group) : "(no key)",
               (unsigned long long)rows[i].requests, (unsigned long long)rows[i].prompt_tokens,
               (unsigned long long)rows[i].cached_tokens, (unsigned long long)rows[i].completion_tokens,
               (unsigned long long)(rows[i].prompt_tokens + rows[i].completion_tokens));
    free(rows);
    return CLI_OK;
}
