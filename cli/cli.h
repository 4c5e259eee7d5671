/* Shared pieces of the plumb command-line tool. The CLI is a thin client
 * of libplumb: it parses arguments, calls the library, prints results. */
#ifndef PLUMB_CLI_H
#define PLUMB_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include <jansson.h>

#include "plumb/base.h"
#include "plumb/doctor.h"
#include "plumb/store.h"

/* Exit statuses: 0 ok, 1 the command failed, 2 bad usage. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

int cmd_show(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_tag(int argc, char **argv);
int cmd_rollback(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_service(int argc, char **argv);
/* plumb service lb / k8s (argv[0] is the verb) */
int cmd_service_lb(int argc, char **argv);
int cmd_service_k8s(int argc, char **argv);
int cmd_usage(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
/* plumb ps, load, unload: the models of a running server */
int cmd_ps(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_unload(int argc, char **argv);

struct store_entry;
/* MODEL (a file, or a store name: store_resolve) into the file to open;
 * entry (may be NULL) gets the store entry. On failure prints the error
 * for cmd and returns false. */
bool cli_resolve_model(const char *cmd, const char *model, char *path, size_t size, struct store_entry *entry);
/* A digest as every command shows it, "sha256:HEX" (JSON null for ""). */
json_t *cli_json_digest(const char *hex);
/* A store entry as a JSON object (name, digest, size, ...). */
json_t *cli_store_entry_json(const struct store_entry *e);
/* Unix seconds as local "YYYY-MM-DD HH:MM" / UTC RFC 3339. */
void cli_fmt_time(int64_t t, char *buf, size_t size);
json_t *cli_json_time(int64_t t);

/* JSON shared by a command and plumb serve's console reports (usage,
 * doctor): the same shapes as `plumb usage --json`'s "usage" array and
 * `plumb doctor --json`. */
json_t *cli_usage_json(const struct store_usage_sum *rows, size_t n, enum store_usage_by by);
json_t *cli_doctor_json(const struct doctor_report *r);
int cmd_survey(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_tco(int argc, char **argv);
int cmd_fleet(int argc, char **argv);

/* Text read from a file or the network (metadata, names, paths, key ids,
 * messages that quote them) as human output prints it: control characters
 * (C0, DEL, C1) and bytes that are not UTF-8 as \xHH (pb_escape_text), so
 * a file cannot drive the terminal. The result is one of 16 static 4 KiB
 * buffers used in turn: for the arguments of a printf, not for keeping. */
const char *cli_esc(const char *s);

/* With --json on the command line (cli_getopt sees it), errors are one
 * JSON line on stderr instead of text:
 *   {"error":{"message":"...","code":"usage"|"failed","command":"CMD"}}
 * (code "usage" with exit status 2, "failed" with 1); stdout keeps only
 * the command's result. */
extern bool cli_json_errors;

/* Prints "plumb CMD: msg" (escaped: cli_esc) to stderr and returns CLI_FAIL. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the error, a hint to use --help, and returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One command's options, for cli_getopt (a variable of the command: the
 * parser keeps its state in it).
 *   shortopts  getopt's short options, without the leading ':'
 *   files      long options naming a file the command opens by name,
 *              comma separated: '-' is refused for them (options that
 *              take '-' as standard input or output are not listed)
 * Every command parses with it, so that all report the same way:
 *   "--frob: unknown option (plumb CMD --help lists them)", exit 2
 *   "--ctx: needs a value"
 * and spellings of llama.cpp and Ollama that mean an option here are
 * taken as that option (--ctx-size as --ctx, -np as --parallel), those
 * that mean nothing here say why (-ngl: plumb runs on the CPU). */
struct cli_parser {
    const char *cmd;
    const char *shortopts;
    const struct option *longopts;
    const char *files;
    bool started;
    char spec[64]; /* ":" shortopts */
};
/* getopt_long for a plumb command: the option's value (optarg, optind as
 * getopt sets them), -1 after the last option, or '?' after printing a
 * usage error (the caller returns CLI_USAGE). The first call resets
 * getopt, checks the whole command line for other tools' spellings and
 * turns on cli_json_errors when the command takes --json and it is there. */
int cli_getopt(int argc, char **argv, struct cli_parser *p);
/* '-' where a FILE (what: "OUT", "--svg") cannot be standard input or
 * output: prints the usage error and returns true. */
bool cli_refuse_dash(const char *cmd, const char *what, const char *value);

/* Strict number parsing for option values: the whole string must be a
 * number within [lo, hi]. On failure prints an error naming opt. */
bool cli_parse_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out);
/* --kv-type: f16, f32 or q8_0 into *out; a usage error otherwise. */
bool cli_parse_kv_type(const char *cmd, const char *s, enum pb_kv_type *out);
/* --since: "2026-12-01" (UTC midnight) or a span back from now ("7d",
 * "24h", "90m") into Unix seconds; false when it is neither. */
bool cli_parse_since(const char *s, double *out);
bool cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);

/* "1.23 GiB", "512 B", ... */
void cli_fmt_bytes(uint64_t n, char *buf, size_t size);
/* "1.10 B", "4.59 M", "260.1 K" */
void cli_fmt_count(uint64_t n, char *buf, size_t size);

/* Prints a JSON value to stdout followed by a newline and frees it:
 * indented when pretty, else on one line (long token lists). */
int cli_print_json(json_t *v, bool pretty);

/* Long copies (pull, export, import) stop cleanly on SIGINT or SIGTERM:
 * while trapped, those signals set cli_interrupted (give it to the
 * library's cancel flag) instead of killing the process, so the library
 * removes its temporary files. cli_trap_interrupts(false) restores the
 * previous handlers. */
extern volatile sig_atomic_t cli_interrupted;
void cli_trap_interrupts(bool on);

/* Text inputs (-f FILE): a file, '-' for standard input, or a pipe such as /dev/stdin, read
 * whole up to max bytes (/dev/zero would never end) into a malloc'ed
 * NUL-terminated buffer. NULL with the reason in why otherwise. */
#define CLI_MAX_TEXT_INPUT (64u << 20)
char *cli_read_input(const char *path, size_t max, size_t *len, char *why, size_t why_size);
/* --api-key-file FILE: a key of a key file as plumb serve reads them (a
 * line KEY, ID KEY or ID KEY admin; blank lines and # comments skipped;
 * '-' is standard input): the first with the admin flag when admin, else
 * the first. False after printing a usage error for cmd. */
bool cli_read_key(const char *cmd, const char *path, bool admin, char *key, size_t size);
/* --json-schema FILE / --grammar FILE (grammar true) read and checked, as
 * GBNF into *out (malloc'ed; replaces and frees what *out held). False
 * after printing a usage error for cmd. */
bool cli_read_grammar(const char *cmd, const char *path, bool grammar, char **out);

/* Monotonic seconds, for "took 1.2 s". */
double cli_now(void);

/* True when fd 2 is a terminal (progress bars go there only then). */
bool cli_stderr_is_tty(void);



/* Progress of long work (downloads, copies, quantize, synthesis): on a
 * terminal a bar on stderr redrawn in place with the rate and the time
 * left; otherwise (a service's log, CI) a plain line every 5 seconds and
 * one at the end. done == total ends it; a smaller done or another total
 * starts a new one. */
void cli_progress(uint64_t done, uint64_t total, const char *label);
/* The same, shaped as the library's progress callbacks. */
void cli_progress_cb(void *user, uint64_t done, uint64_t total, const char *label);

#endif
