/* plumb: the command-line entry point. Dispatches to one function per
 * command; each command parses its own options and prints its own help. */
#include "cli.h"

#include "plumb/engine.h"

#include <string.h>

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"survey", cmd_survey, "describe this machine: CPU, memory, measured bandwidth, GPUs"},
    {"tco", cmd_tco, "cost per million tokens on premise against a cloud API, break-even, chart"},
    {"plan", cmd_plan, "what fits, how fast, for how many users: per quantization, here or on catalog devices"},
    {"run", cmd_run, "generate text from a model, streamed, with speed figures"},
    {"chat", cmd_chat, "talk with a model through its chat template (terminal or pipe)"},
    {"show", cmd_show, "describe a model: store entry, architecture, size, tensors, memory"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"embed", cmd_embed, "sentence embeddings of texts"},
    {"quantize", cmd_quantize, "convert a model to another tensor type (Q8_0, Q4_0, Q4_K_M, ...)"},
    {"synth", cmd_synth, "write a random-weight model of a real architecture's shape"},
    {"serve", cmd_serve, "serve a model over an OpenAI-compatible HTTP API, many users at once"},
    {"tune", cmd_tune, "measure the serving settings that meet N users' targets, and write them"},
    {"doctor", cmd_doctor, "check the installation, the store, the service and the machine, with fixes"},
    {"usage", cmd_usage, "token usage of the server's requests, by key, model or day"},
    {"service", cmd_service, "plumb serve as a systemd service, behind a load balancer, on Kubernetes"},
    {"fleet", cmd_fleet, "many installations at a glance: models and digests, load, usage, doctor"},
    {"bench", cmd_bench, "measure prompt and generation speed against the memory bandwidth"},
    {"search", cmd_search, "catalog models matching a word: sizes per quantization, fit here, GGUF files"},
    {"pull", cmd_pull, "fetch or import a model into the store (catalog name, URL, file, directory), verified"},
    {"ls", cmd_ls, "list the models in the store"},
    {"rm", cmd_rm, "remove a name from the store (its file goes when no name uses it)"},
    {"verify", cmd_verify, "re-hash the store's files and check the registry"},
    {"tag", cmd_tag, "give a stored model another name"},
    {"rollback", cmd_rollback, "point a name back at its previous version"},
    {"export", cmd_export, "write stored models into one tar bundle, for a site without a network"},
    {"import", cmd_import, "add a bundle's models to the store, every file verified first"},
    {"ps", cmd_ps, "what a running server has: models loaded or not, memory, slots, idle time"},
    {"load", cmd_load, "load a model of a running server now"},
    {"unload", cmd_unload, "unload a model of a running server (at once, or when its requests end)"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "plumb %s - the local LLM technician's tool\n"
            "\n"
            "Usage: plumb COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n",
            PLUMB_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n"
                 "Run 'plumb COMMAND --help' for a command's options. Every command exits 0 when it\n"
                 "did what was asked, 1 when it failed, 2 on bad usage; with --json its errors\n"
                 "are JSON too (docs/cli.md).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        if (argc > 2 && strcmp(name, "help") == 0) {
            for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
                if (!strcmp(argv[2], commands[i].name)) {
                    char *sub[] = {argv[2], "--help", NULL};
                    return commands[i].fn(2, sub);
                }
            }
            fprintf(stderr, "plumb: unknown command '%s'\n", argv[2]);
            return CLI_USAGE;
        }
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("plumb %s\n", PLUMB_VERSION);
        return CLI_OK;
    }
    const char *simd = engine_kernels_env_ignored();
    if (simd)
        fprintf(stderr, "plumb: PLUMB_SIMD=%s is not a kernel level (scalar, avx2, avxvnni, avx512vnni); ignored\n",
                simd);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "plumb: unknown command '%s'\n\n", name);
    usage(stderr);
    return CLI_USAGE;
}
