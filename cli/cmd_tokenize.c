/* plumb tokenize: the ids a model's tokenizer gives a text. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/tokenizer.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb tokenize MODEL (TEXT | -f FILE) [OPTIONS]\n"
           "\n"
           "Prints the token ids of TEXT, space-separated, BOS first when the\n"
           "vocabulary adds one. MODEL may be a vocabulary-only GGUF.\n"
           "\n"
           "Options:\n"
           "  -f, --file FILE   tokenize the exact bytes of FILE ('-': standard input)\n"
           "      --no-bos      do not add BOS (or EOS) tokens\n"
           "      --special     parse special tokens written in the text (<s>, ...)\n"
           "      --json        print {\"tokens\":[...],\"pieces\":[...]}\n"
           "  -h, --help        this help\n"
           "\n"
           "Example:\n"
           "  plumb tokenize stories260K.gguf \"Once upon a time\"\n");
}

enum { OPT_NO_BOS = 256, OPT_SPECIAL, OPT_JSON };

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"file", required_argument, 0, 'f'},
        {"no-bos", no_argument, 0, OPT_NO_BOS},
        {"special", no_argument, 0, OPT_SPECIAL},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool add_bos = true, special = false, json = false;
    const char *file = NULL;
    int c;
    struct cli_parser par = {.cmd = "tokenize", .shortopts = "f:h", .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case 'f': file = optarg; break;
        case OPT_NO_BOS: add_bos = false; break;
        case OPT_SPECIAL: special = true; break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    int want = file ? 1 : 2;
    if (argc - optind != want)
        return cli_usage_error("tokenize", file ? "expected MODEL and -f FILE" : "expected MODEL and TEXT");

    const char *text = file ? NULL : argv[optind + 1];
    size_t len = text ? strlen(text) : 0;
    char *buf = NULL;
    if (file) {
        char why[128];
        if (!(buf = cli_read_input(file, CLI_MAX_TEXT_INPUT, &len, why, sizeof why)))
            return cli_error("tokenize", "cannot read %s: %s", file, why);
        text = buf;
    }

    pb_err err = {0};
    struct tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int status = CLI_FAIL;
    char path[4096];
    if (!cli_resolve_model("tokenize", argv[optind], path, sizeof path, NULL))
        goto done;
    if (tok_open(path, &t, &err) || tok_encode(t, text, len, add_bos, special, &ids, &n, &err)) {
        cli_error("tokenize", "%s", err.msg);
        goto done;
    }
    if (json) {
        json_t *jt = json_array(), *jp = json_array();
        for (size_t i = 0; i < n; i++) {
            char piece[512];
            size_t pl = tok_piece(t, ids[i], true, piece, sizeof piece);
            json_array_append_new(jt, json_integer(ids[i]));
            json_array_append_new(jp, pb_json_text(piece, pl < sizeof piece ? pl : sizeof piece));
        }
        status = cli_print_json(json_pack("{s:o,s:o}", "tokens", jt, "pieces", jp), false);
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\n');
        status = CLI_OK;
    }
done:
    free(ids);
    tok_free(t);
    free(buf);
    return status;
}
