/* plumb embed: sentence embeddings of texts, as /v1/embeddings serves them. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/engine.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb embed MODEL TEXT... [OPTIONS]\n"
           "\n"
           "Prints one embedding per TEXT: the model's final states of the text's\n"
           "tokens pooled into one vector, L2-normalized. Encoder models (bert) pool\n"
           "as their file says (mean or the [CLS] token); decoders pool the last\n"
           "token. The texts run together, as many per forward pass as fit.\n"
           "\n"
           "Options:\n"
           "      --pooling P     mean, cls or last (default: the model's)\n"
           "      --no-normalize  the pooled vector as it is\n"
           "  -t, --threads N     threads (default: every CPU)\n"
           "      --json          print {\"model\",\"pooling\",\"dim\",\"data\":[{\"index\",\"tokens\",\"embedding\"}]}\n"
           "  -h, --help          this help\n"
           "\n"
           "Example:\n"
           "  plumb embed bge-small.gguf \"Once upon a time\" \"The little dog\"\n");
}

enum { OPT_POOLING = 256, OPT_NO_NORM, OPT_JSON };

int cmd_embed(int argc, char **argv)
{
    static const struct option opts[] = {
        {"pooling", required_argument, 0, OPT_POOLING},
        {"no-normalize", no_argument, 0, OPT_NO_NORM},
        {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct engine_embed_params ep = {.pooling = ENGINE_POOL_DEFAULT, .normalize = true};
    bool json = false;
    int threads = 0, c;
    struct cli_parser par = {.cmd = "embed", .shortopts = "t:h", .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_POOLING:
            if (!strcmp(optarg, "mean"))
                ep.pooling = ENGINE_POOL_MEAN;
            else if (!strcmp(optarg, "cls"))
                ep.pooling = ENGINE_POOL_CLS;
            else if (!strcmp(optarg, "last"))
                ep.pooling = ENGINE_POOL_LAST;
            else
                return cli_usage_error("embed", "--pooling must be mean, cls or last");
            break;
        case OPT_NO_NORM: ep.normalize = false; break;
        case 't':
            if ((threads = atoi(optarg)) < 1)
                return cli_usage_error("embed", "--threads must be a positive number");
            break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("embed", "expected MODEL and at least one TEXT");
    const int n = argc - optind - 1;
    char path[4096];
    if (!cli_resolve_model("embed", argv[optind], path, sizeof path, NULL))
        return CLI_FAIL;
    struct engine_params p = engine_defaults();
    p.n_slots = n < 16 ? n : 16;
    p.n_threads = threads;
    struct engine *e = NULL;
    pb_err err = {0};
    int status = CLI_FAIL;
    int32_t **toks = calloc((size_t)n, sizeof *toks);
    size_t *n_toks = calloc((size_t)n, sizeof *n_toks);
    float *out = NULL;
    if (!toks || !n_toks) {
        cli_error("embed", "out of memory");
        goto done;
    }
    if (engine_open(path, &p, &e, &err)) {
        cli_error("embed", "%s", err.msg);
        goto done;
    }
    const int64_t dim = engine_embed_dim(e);
    if (!(out = malloc((size_t)n * (size_t)dim * sizeof *out))) {
        cli_error("embed", "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const char *text = argv[optind + 1 + i];
        if (tok_encode(engine_tokenizer(e), text, strlen(text), true, false, &toks[i], &n_toks[i], &err)) {
            cli_error("embed", "text %d: %s", i + 1, err.msg);
            goto done;
        }
    }
    if (engine_embed(e, (const int32_t *const *)toks, n_toks, n, &ep, out, &err)) {
        cli_error("embed", "%s", err.msg);
        goto done;
    }
    if (json) {
        json_t *data = json_array();
        for (int i = 0; i < n; i++) {
            json_t *v = json_array();
            for (int64_t k = 0; k < dim; k++)
                json_array_append_new(v, json_real(out[(size_t)i * (size_t)dim + (size_t)k]));
            json_array_append_new(data, json_pack("{s:i, s:i, s:o}", "index", i, "tokens", (int)n_toks[i],
                                                  "embedding", v));
        }
        status = cli_print_json(json_pack("{s:s, s:s, s:b, s:I, s:o}", "model", argv[optind], "pooling",
                                          engine_pooling_name(e, ep.pooling), "normalized", ep.normalize, "dim",
                                          (json_int_t)dim, "data", data), false);
    } else {
        for (int i = 0; i < n; i++) {
            for (int64_t k = 0; k < dim; k++)
                printf(k ? " %.6g" : "%.6g", (double)out[(size_t)i * (size_t)dim + (size_t)k]);
            putchar('\n');
        }
        status = CLI_OK;
    }
done:
    for (int i = 0; toks && i < n; i++)
        free(toks[i]);
    free(toks);
    free(n_toks);
    free(out);
    engine_close(e);
    return status;
}
