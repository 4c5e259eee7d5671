/* plumb quantize: convert a model to another file type. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/quantize.h"
#include "plumb/store.h"

#include <getopt.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb quantize IN OUT TYPE [OPTIONS]\n"
           "\n"
           "Writes IN (a GGUF file or a store name, NAME[:TAG]) converted to TYPE as\n"
           "the file OUT. TYPE is one of:\n"
           "  %s\n"
           "The _M mixes keep the output projection and the attention V / FFN down\n"
           "projections of some layers in Q6_K, as llama.cpp does; norms stay F32.\n"
           "OUT appears only when complete.\n"
           "\n"
           "Options:\n"
           "  -t, --threads N      threads (default: all CPUs)\n"
           "      --name NAME[:TAG] also add OUT to the store under this name (as plumb pull\n"
           "                       OUT --name NAME would)\n"
           "      --json           print the summary as JSON\n"
           "  -h, --help           this help\n"
           "\n"
           "Examples:\n"
           "  plumb quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M\n"
           "  plumb quantize qwen2.5-0.5b:f16 /tmp/qwen-q8.gguf Q8_0 --name qwen2.5-0.5b:q8_0\n",
           pb_ftype_names());
}

enum { OPT_JSON = 256, OPT_NAME };

/* OUT into the store as name; fills the digest for the summary. */
static int register_output(const char *out, const char *name, char digest[80])
{
    struct store *s;
    struct store_pull_result r;
    struct store_pull_opts o = {.name = name, .max_attempts = 1, .cancel = &cli_interrupted};
    pb_err err = {0};
    if (store_open(NULL, &s, &err))
        return cli_error("quantize", "--name: %s (%s is written)", err.msg, out);
    int rc = store_pull(s, out, &o, &r, &err);
    store_close(s);
    if (rc)
        return cli_error("quantize", "--name: %s (%s is written)", err.msg, out);
    snprintf(digest, 80, "sha256:%s", r.entry.digest);
    return CLI_OK;
}

int cmd_quantize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, OPT_JSON},
        {"name", required_argument, 0, OPT_NAME},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct quantize_params qp = {.progress = cli_progress_cb};
    bool json = false;
    const char *name = NULL;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "quantize", .shortopts = "t:h", .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case 't':
            if (!cli_parse_int("quantize", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            qp.n_threads = (int)v;
            break;
        case OPT_JSON: json = true; break;
        case OPT_NAME: name = optarg; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind != 3)
        return cli_usage_error("quantize", "expected IN OUT TYPE");
    const char *in_arg = argv[optind], *out = argv[optind + 1], *type = argv[optind + 2];
    if (!pb_ftype_from_name(type, &qp.ftype))
        return cli_usage_error("quantize", "unknown type '%s' (one of %s)", type, pb_ftype_names());
    if (cli_refuse_dash("quantize", "IN", in_arg) || cli_refuse_dash("quantize", "OUT", out))
        return CLI_USAGE;
    if (strcmp(in_arg, out) == 0)
        return cli_usage_error("quantize", "IN and OUT are the same file");
    pb_err err = {0};
    struct store_ref ref;
    if (name && store_ref_parse(name, &ref, &err))
        return cli_usage_error("quantize", "--name: %s", err.msg);
    char in[4096];
    if (!cli_resolve_model("quantize", in_arg, in, sizeof in, NULL))
        return CLI_FAIL;
    if (strcmp(in, out) == 0)
        return cli_usage_error("quantize", "IN and OUT are the same file");

    struct quantize_report r;
    double t0 = cli_now();
    if (quantize_file(in, out, &qp, &r, &err))
        return cli_error("quantize", "%s", err.msg);
    double secs = cli_now() - t0;
    if (r.requantized)
        fprintf(stderr, "plumb quantize: warning: %s was already quantized (%s); requantizing loses quality\n", cli_esc(in_arg),
                r.source_ftype);
    double bpw_in = r.n_params ? 8.0 * (double)r.bytes_in / (double)r.n_params : 0;
    double bpw_out = r.n_params ? 8.0 * (double)r.bytes_out / (double)r.n_params : 0;
    char digest[80] = "";
    if (name && register_output(out, name, digest))
        return CLI_FAIL;
    if (json)
        return cli_print_json(json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:s?,s:s?}", "input", in_arg, "output",
                                        out, "type", type, "tensors", (json_int_t)r.n_tensors, "converted",
                                        (json_int_t)r.n_converted, "bytes_in", (json_int_t)r.bytes_in, "bytes_out",
                                        (json_int_t)r.bytes_out, "bpw_in", bpw_in, "bpw_out", bpw_out, "seconds",
                                        secs, "name", name, "digest", digest[0] ? digest : NULL), true);
    char a[32], b[32], n[32];
    cli_fmt_bytes(r.bytes_in, a, sizeof a);
    cli_fmt_bytes(r.bytes_out, b, sizeof b);
    cli_fmt_count(r.n_params, n, sizeof n);
    printf("%s -> %s (%s)\n", cli_esc(in_arg), cli_esc(out), type);
    printf("tensors     %llu (%llu converted), %s parameters\n", (unsigned long long)r.n_tensors,
           (unsigned long long)r.n_converted, n);
    printf("size        %s (%.2f bits/weight) -> %s (%.2f bits/weight)\n", a, bpw_in, b, bpw_out);
    printf("time        %.2f s\n", secs);
    if (name)
        printf("stored      %s (%.19s...)\n", cli_esc(name), digest);
    return CLI_OK;
}
