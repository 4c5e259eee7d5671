/* plumb survey: what this machine is, with its memory bandwidth and the
 * kernels' throughput measured on the spot; saved as the machine profile. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/survey.h"

#include <getopt.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb survey [OPTIONS]\n"
           "\n"
           "Describes this machine for running language models: CPU model, sockets,\n"
           "cores and threads, the SIMD features inference uses, caches, NUMA nodes,\n"
           "memory and huge pages, disk free where models are stored, and GPUs (NVIDIA\n"
           "through the driver's NVML library when present; others as the kernel shows\n"
           "them). It measures memory bandwidth (multi-threaded read and triad) and\n"
           "the throughput of plumb's matrix kernels (int8: Q8_0; FP32 FMA: F16), which\n"
           "takes a few seconds (--quick: about one).\n"
           "\n"
           "The result is saved as this machine's profile (%s), which\n"
           "'plumb plan' uses.\n"
           "\n"
           "Options:\n"
           "      --quick          shorter measurements\n"
           "      --no-measure     facts only: no bandwidth or throughput (not saved)\n"
           "      --no-save        do not save the profile\n"
           "  -t, --threads N      threads for the measurements (default: all usable)\n"
           "      --json           print the profile as JSON\n"
           "  -h, --help           this help\n"
           "\n"
           "Examples:\n"
           "  plumb survey\n"
           "  plumb survey --quick --json\n",
           "$PLUMB_HOME/machine/profile.json");
}

static void print_table(const struct survey *s, const char *saved)
{
    char a[32], b[32];
    printf("%-11s %s, %s %s, surveyed %s\n", "machine", s->host[0] ? cli_esc(s->host) : "(no host name)",
           cli_esc(s->cpu.arch), cli_esc(s->kernel), cli_esc(s->created));
    printf("%-11s %s: %d socket%s, %d cores, %d threads (%d usable by plumb)", "cpu", cli_esc(s->cpu.model),
           s->cpu.sockets,
           s->cpu.sockets == 1 ? "" : "s", s->cpu.cores, s->cpu.threads_online, s->cpu.threads);
    if (s->cpu.mhz_max > 0)
        printf(", %.2f GHz", s->cpu.mhz_max / 1000);
    printf("\n%-11s", "isa");
    for (int i = 0; i < s->cpu.n_features; i++)
        printf(" %s", s->cpu.features[i]);
    printf("%s(plumb kernels: %s)\n", s->cpu.n_features ? " " : " none of note ", s->cpu.kernels);
    printf("%-11s", "caches");
    for (int i = 0; i < s->cpu.n_caches; i++) {
        const struct survey_cache *c = &s->cpu.caches[i];
        cli_fmt_bytes(c->bytes, a, sizeof a);
        printf("%s L%d%s %s x%d", i ? "," : "", c->level,
               !strcmp(c->type, "Data") ? "d" : !strcmp(c->type, "Instruction") ? "i" : "", a, c->instances);
    }
    printf("%s\n", s->cpu.n_caches ? "" : " unknown");
    printf("%-11s %d node%s\n", "numa", s->cpu.numa_nodes, s->cpu.numa_nodes == 1 ? "" : "s");
    cli_fmt_bytes(s->memory.total, a, sizeof a);
    cli_fmt_bytes(s->memory.available, b, sizeof b);
    printf("%-11s %s total, %s available; transparent huge pages: %s", "memory", a, b,
           s->memory.thp[0] ? s->memory.thp : "unknown");
    cli_fmt_bytes(s->memory.hugepage_size, a, sizeof a);
    printf(", %llu of %llu reserved %s pages free\n", (unsigned long long)s->memory.hugepages_free,
           (unsigned long long)s->memory.hugepages_total, a);
    if (s->memory.bandwidth_gbs > 0) {
        cli_fmt_bytes(s->memory.bw_bytes, a, sizeof a);
        printf("%-11s %.1f GB/s read, %.1f GB/s triad (%d threads, %s buffer)\n", "bandwidth", s->memory.bandwidth_gbs,
               s->memory.triad_gbs, s->memory.bw_threads, a);
        printf("%-11s int8 %.1f GOPS (Q8_0 kernel), FP32 FMA %.1f GFLOP/s (F16 kernel), %d threads\n", "compute",
               s->compute.int8_gops, s->compute.f32_gflops, s->compute.threads);
    } else {
        printf("%-11s not measured (--no-measure)\n", "bandwidth");
    }
    cli_fmt_bytes(s->disk.free, a, sizeof a);
    cli_fmt_bytes(s->disk.total, b, sizeof b);
    printf("%-11s %s free of %s at %s (models)\n", "disk", a, b, cli_esc(s->disk.path));
    if (s->n_gpus == 0)
        printf("%-11s none found%s%s%s\n", "gpus", s->gpu_note[0] ? " (" : "", cli_esc(s->gpu_note),
               s->gpu_note[0] ? ")" : "");
    for (int i = 0; i < s->n_gpus; i++) {
        const struct survey_gpu *g = &s->gpus[i];
        printf("%-11s %s", i ? "" : "gpus", cli_esc(g->name));
        if (g->mem_total) {
            cli_fmt_bytes(g->mem_total, a, sizeof a);
            cli_fmt_bytes(g->mem_free, b, sizeof b);
            printf(", %s (%s free)", a, b);
        }
        if (g->cc_major >= 0)
            printf(", compute capability %d.%d", g->cc_major, g->cc_minor);
        if (g->bandwidth_gbs > 0)
            printf(", %.0f GB/s nominal", g->bandwidth_gbs);
        if (g->power_limit_w > 0)
            printf(", %.0f W limit", g->power_limit_w);
        if (g->driver[0])
            printf(", driver %s", cli_esc(g->driver));
        printf(" [%s]\n", g->source);
    }
    if (saved)
        printf("%-11s saved to %s/profile.json\n", "profile", saved);
}

int cmd_survey(int argc, char **argv)
{
    enum { OPT_JSON = 1000, OPT_QUICK, OPT_NO_MEASURE, OPT_NO_SAVE };
    static const struct option longopts[] = {
        {"json", no_argument, 0, OPT_JSON},     {"quick", no_argument, 0, OPT_QUICK},
        {"no-measure", no_argument, 0, OPT_NO_MEASURE}, {"no-save", no_argument, 0, OPT_NO_SAVE},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct survey_params p = {0};
    bool json = false, save = true;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "survey", .shortopts = "t:h", .longopts = longopts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_QUICK: p.quick = true; break;
        case OPT_NO_MEASURE: p.no_measure = true; break;
        case OPT_NO_SAVE: save = false; break;
        case 't':
            if (!cli_parse_int("survey", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            p.n_threads = (int)v;
            break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind < argc)
        return cli_usage_error("survey", "unexpected argument '%s'", argv[optind]);
    if (!json && cli_stderr_is_tty() && !p.no_measure)
        fprintf(stderr, "measuring memory bandwidth and kernel throughput...\n");
    static struct survey s;
    pb_err err = {0};
    if (survey_run(&p, &s, &err))
        return cli_error("survey", "%s", err.msg);
    snprintf(s.plumb_version, sizeof s.plumb_version, "%s", PLUMB_VERSION);
    char dir[600];
    const char *saved = NULL;
    if (save && !p.no_measure) {
        if (survey_dir(dir, sizeof dir, &err) || survey_save(&s, dir, &err))
            fprintf(stderr, "plumb survey: warning: profile not saved: %s\n", err.msg);
        else
            saved = dir;
    }
    if (json)
        return cli_print_json(survey_to_json(&s), true);
    print_table(&s, saved);
    return CLI_OK;
}
