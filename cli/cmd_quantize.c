/* plumb quantize: convert a model to another file type. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/quantize.h"

#include <getopt.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb quantize IN OUT TYPE [OPTIONS]\n"
           "\n"
           "Writes IN converted to TYPE as OUT. TYPE is one of:\n"
           "  %s\n"
           "The _M mixes keep the output projection and the attention V / FFN down\n"
           "projections of some layers in Q6_K, as llama.cpp does; norms stay F32.\n"
           "OUT appears only when complete.\n"
           "\n"
           "Options:\n"
           "  -t, --threads N   threads (default: all CPUs)\n"
           "      --json        print the summary as JSON\n"
           "  -h, --help        this help\n"
           "\n"
           "Example:\n"
           "  plumb quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M\n",
           pb_ftype_names());
}

enum { OPT_JSON = 256 };

int cmd_quantize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct quantize_params qp = {.progress = cli_progress_cb};
    bool json = false;
    long long v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":t:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!cli_parse_int("quantize", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            qp.n_threads = (int)v;
            break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        case ':': return cli_usage_error("quantize", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("quantize", "unknown option %s", argv[optind - 1]);
        }
    }
    if (argc - optind != 3)
        return cli_usage_error("quantize", "expected IN OUT TYPE");
    const char *in = argv[optind], *out = argv[optind + 1], *type = argv[optind + 2];
    if (!pb_ftype_from_name(type, &qp.ftype))
        return cli_usage_error("quantize", "unknown type '%s' (one of %s)", type, pb_ftype_names());
    if (strcmp(in, out) == 0)
        return cli_usage_error("quantize", "IN and OUT are the same file");
    if (strcmp(out, "-") == 0)
        return cli_usage_error("quantize", "OUT '-': quantize writes a GGUF file, not standard output (give a path; "
                                           "./- for a file named '-')");

    pb_err err = {0};
    struct quantize_report r;
    double t0 = cli_now();
    if (quantize_file(in, out, &qp, &r, &err))
        return cli_error("quantize", "%s", err.msg);
    double secs = cli_now() - t0;
    if (r.requantized)
        fprintf(stderr, "plumb quantize: warning: %s was already quantized (%s); requantizing loses quality\n", in,
                r.source_ftype);
    double bpw_in = r.n_params ? 8.0 * (double)r.bytes_in / (double)r.n_params : 0;
    double bpw_out = r.n_params ? 8.0 * (double)r.bytes_out / (double)r.n_params : 0;
    if (json)
        return cli_print_json(json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:f,s:f,s:f}", "input", in, "output", out, "type",
                                        type, "tensors", (json_int_t)r.n_tensors, "converted",
                                        (json_int_t)r.n_converted, "bytes_in", (json_int_t)r.bytes_in, "bytes_out",
                                        (json_int_t)r.bytes_out, "bpw_in", bpw_in, "bpw_out", bpw_out, "seconds",
                                        secs), true);
    char a[32], b[32], n[32];
    cli_fmt_bytes(r.bytes_in, a, sizeof a);
    cli_fmt_bytes(r.bytes_out, b, sizeof b);
    cli_fmt_count(r.n_params, n, sizeof n);
    printf("%s -> %s (%s)\n", in, out, type);
    printf("tensors     %llu (%llu converted), %s parameters\n", (unsigned long long)r.n_tensors,
           (unsigned long long)r.n_converted, n);
    printf("size        %s (%.2f bits/weight) -> %s (%.2f bits/weight)\n", a, bpw_in, b, bpw_out);
    printf("time        %.2f s\n", secs);
    return CLI_OK;
}
