/* plumb synth: write a random-weight model of a real architecture's shape. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/synth.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb synth (--shape NAME | --dims SPEC) --type TYPE [OPTIONS] OUT\n"
           "\n"
           "Writes a GGUF model with random weights (normal, deviation 0.02, fixed seed)\n"
           "and the exact shape of a real model: for tests, benchmarks and qualifying a\n"
           "machine before downloading anything.\n"
           "\n"
           "Options:\n"
           "      --shape NAME       a built-in shape (--list shows them)\n"
           "      --dims SPEC        explicit shape, or changes to --shape, as key=value,...:\n"
           "                         arch (llama, qwen2, qwen3, qwen3moe, phi3, gemma2,\n"
           "                         gemma3, gpt-oss), dim, layers, heads, kv_heads, head_dim,\n"
           "                         ffn, vocab, ctx, rope_base, eps, tied, experts=N:K:FFN\n"
           "                         (N experts, K used), swa=WINDOW, softcap=ATTN:FINAL\n"
           "      --type TYPE        %s\n"
           "      --vocab-from GGUF  copy the tokenizer from GGUF (vocabulary size follows it)\n"
           "      --seed N           random seed (default 1234)\n"
           "      --fast             each tensor's first 256 rows repeat (for benchmarks: the\n"
           "                         same bytes, a fraction of the time for large shapes)\n"
           "  -t, --threads N        threads (default: all CPUs)\n"
           "      --list             list the built-in shapes\n"
           "      --json             print the summary (or --list) as JSON\n"
           "  -h, --help             this help\n"
           "\n"
           "Example:\n"
           "  plumb synth --shape tinyllama-1.1b --type Q4_0 tinyllama-q4_0.gguf\n",
           pb_ftype_names());
}

static int list_shapes(bool json)
{
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < synth_n_shapes(); i++) {
            const struct synth_shape *s = synth_shape_at(i);
            json_array_append_new(
                a, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:s}", "name", s->name, "arch", s->arch,
                             "dim", (json_int_t)s->n_embd, "layers", (json_int_t)s->n_layer, "heads",
                             (json_int_t)s->n_head, "kv_heads", (json_int_t)s->n_head_kv, "ffn", (json_int_t)s->n_ff,
                             "vocab", (json_int_t)s->n_vocab, "ctx", (json_int_t)s->n_ctx, "tied", s->tied, "source",
                             s->source));
        }
        return cli_print_json(a, true);
    }
    printf("%-16s %-8s %6s %6s %6s %8s %6s %9s %7s %7s  %s\n", "shape", "arch", "dim", "layers", "heads",
           "kv_heads", "ffn", "experts", "vocab", "ctx", "source");
    for (size_t i = 0; i < synth_n_shapes(); i++) {
        const struct synth_shape *s = synth_shape_at(i);
        char experts[32] = "-";
        if (s->n_expert)
            snprintf(experts, sizeof experts, "%" PRId64 ":%" PRId64, s->n_expert_used, s->n_expert);
        printf("%-16s %-8s %6" PRId64 " %6" PRId64 " %6" PRId64 " %8" PRId64 " %6" PRId64 " %9s %7" PRId64
               " %7" PRId64 "  %s\n",
               s->name, s->arch, s->n_embd, s->n_layer, s->n_head, s->n_head_kv, s->n_expert ? s->n_ff_exp : s->n_ff,
               experts, s->n_vocab, s->n_ctx, s->source);
    }
    return CLI_OK;
}

enum { OPT_SHAPE = 256, OPT_DIMS, OPT_TYPE, OPT_VOCAB, OPT_SEED, OPT_LIST, OPT_JSON, OPT_FAST };

int cmd_synth(int argc, char **argv)
{
    static const struct option opts[] = {
        {"shape", required_argument, 0, OPT_SHAPE}, {"dims", required_argument, 0, OPT_DIMS},
        {"type", required_argument, 0, OPT_TYPE},   {"vocab-from", required_argument, 0, OPT_VOCAB},
        {"seed", required_argument, 0, OPT_SEED},   {"threads", required_argument, 0, 't'},
        {"list", no_argument, 0, OPT_LIST},         {"json", no_argument, 0, OPT_JSON},
        {"fast", no_argument, 0, OPT_FAST},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0},
    };
    const char *shape = NULL, *dims = NULL, *type = NULL;
    struct synth_params sp = {.seed = 1234, .progress = cli_progress_cb};
    bool list = false, json = false;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "synth", .shortopts = "t:h", .longopts = opts, .files = "vocab-from"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_SHAPE: shape = optarg; break;
        case OPT_DIMS: dims = optarg; break;
        case OPT_TYPE: type = optarg; break;
        case OPT_VOCAB: sp.vocab_from = optarg; break;
        case OPT_SEED:
            if (!cli_parse_int("synth", "--seed", optarg, 0, INT64_MAX, &v))
                return CLI_USAGE;
            sp.seed = (uint64_t)v;
            break;
        case 't':
            if (!cli_parse_int("synth", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            sp.n_threads = (int)v;
            break;
        case OPT_LIST: list = true; break;
        case OPT_FAST: sp.distinct_rows = 256; break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (list)
        return list_shapes(json);
    if (argc - optind != 1)
        return cli_usage_error("synth", argc - optind == 0 ? "no output file given" : "expected one output file");
    if (!shape && !dims)
        return cli_usage_error("synth", "give --shape NAME or --dims SPEC (see --list)");
    if (!type)
        return cli_usage_error("synth", "give --type (one of %s)", pb_ftype_names());
    if (!pb_ftype_from_name(type, &sp.ftype))
        return cli_usage_error("synth", "unknown type '%s' (one of %s)", type, pb_ftype_names());
    pb_err err = {0};
    if (shape) {
        const struct synth_shape *s = synth_shape_find(shape);
        if (!s)
            return cli_usage_error("synth", "unknown shape '%s' (see plumb synth --list)", shape);
        sp.shape = *s;
    } else {
        /* --dims alone: start from the tiny llama shape */
        sp.shape = *synth_shape_find("tiny");
    }
    if (dims && synth_parse_dims(dims, &sp.shape, &err))
        return cli_usage_error("synth", "%s", err.msg);

    const char *out = argv[optind];
    if (cli_refuse_dash("synth", "OUT", out))
        return CLI_USAGE;
    uint64_t bytes;
    double t0 = cli_now();
    if (synth_write(out, &sp, &bytes, &err))
        return cli_error("synth", "%s", err.msg);
    double secs = cli_now() - t0;
    if (json)
        return cli_print_json(json_pack("{s:s,s:s,s:s,s:I,s:I,s:f}", "output", out, "shape", sp.shape.name, "type",
                                        type, "seed", (json_int_t)sp.seed, "tensor_bytes", (json_int_t)bytes,
                                        "seconds", secs), true);
    char b[32];
    cli_fmt_bytes(bytes, b, sizeof b);
    printf("wrote %s: shape %s (%s), %s, %s of weights, seed %llu, %.2f s\n", out, sp.shape.name, sp.shape.arch, type,
           b, (unsigned long long)sp.seed, secs);
    return CLI_OK;
}
