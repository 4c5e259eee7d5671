/* plumb doctor: what is wrong with this installation, and the fix. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/doctor.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb doctor [--config FILE] [--deep] [--json]\n"
           "\n"
           "Checks the installation and says what to fix: the CPU features the engine\n"
           "uses; with --config, that each model exists and fits in memory with its\n"
           "context and slots, the key file's permissions (readable by others is a\n"
           "warning), that the port is free or held by plumb; the store (file sizes;\n"
           "--deep re-hashes every model), its permissions and disk space; the\n"
           "service; the clock. Exit status 0: no errors (warnings may be printed;\n"
           "--json's \"status\" is ok, warnings or errors), 1: errors, 2: bad usage.\n"
           "\n"
           "Options:\n"
           "      --config FILE   the server's configuration (plumb serve --config)\n"
           "      --deep          re-hash every model in the store (slow)\n"
           "      --json          print JSON\n"
           "  -h, --help          this help\n"
           "\n"
           "Example:\n"
           "  plumb doctor --config /etc/plumb/plumb.ini\n");
}

json_t *cli_doctor_json(const struct doctor_report *r)
{
    json_t *checks = json_array();
    for (int i = 0; i < r->n; i++)
        json_array_append_new(checks, json_pack("{s:s, s:s, s:s, s:s}", "check", r->checks[i].name, "verdict",
                                                doctor_verdict_name(r->checks[i].verdict), "detail",
                                                r->checks[i].detail, "fix", r->checks[i].fix));
    return json_pack("{s:s, s:i, s:i, s:o}", "status", r->n_error ? "errors" : r->n_warn ? "warnings" : "ok", "errors",
                     r->n_error, "warnings", r->n_warn, "checks", checks);
}

int cmd_doctor(int argc, char **argv)
{
    enum { OPT_CONFIG = 1000, OPT_DEEP, OPT_JSON };
    static const struct option longopts[] = {
        {"config", required_argument, 0, OPT_CONFIG}, {"deep", no_argument, 0, OPT_DEEP},
        {"json", no_argument, 0, OPT_JSON},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config_path = NULL;
    bool deep = false, json = false;
    int c;
    struct cli_parser par = {.cmd = "doctor", .shortopts = "h", .longopts = longopts, .files = "config"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_CONFIG: config_path = optarg; break;
        case OPT_DEEP: deep = true; break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind < argc)
        return cli_usage_error("doctor", "unexpected argument '%s'", argv[optind]);
    pb_err err = {0};
    struct config cfg;
    config_defaults(&cfg);
    struct doctor_params dp = {.deep = deep};
    if (config_path) {
        if (config_load(config_path, &cfg, &err)) {
            dp.config_error = err.msg; /* a finding, not a failure to run */
        } else {
            dp.config = &cfg; /* its store is the one checked, as plumb serve uses it */
        }
    }
    struct doctor_report r;
    pb_err run_err = {0};
    if (doctor_run(&dp, &r, &run_err))
        return cli_error("doctor", "%s", run_err.msg);
    const int status = r.n_error ? CLI_FAIL : CLI_OK; /* warnings: in the output, as JSON's status */
    if (json) {
        cli_print_json(cli_doctor_json(&r), true);
        return status;
    }
    for (int i = 0; i < r.n; i++) {
        const struct doctor_check *k = &r.checks[i];
        /* details quote configuration values, paths and file contents */
        printf("%-8s %-20s %s\n", doctor_verdict_name(k->verdict), cli_esc(k->name), cli_esc(k->detail));
        if (k->fix[0])
            printf("%-8s %-20s fix: %s\n", "", "", cli_esc(k->fix));
    }
    printf("\n%d error%s, %d warning%s\n", r.n_error, r.n_error == 1 ? "" : "s", r.n_warn, r.n_warn == 1 ? "" : "s");
    return status;
}
