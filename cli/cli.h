/* Shared pieces of the plumb command-line tool. The CLI is a thin client
 * of libplumb: it parses arguments, calls the library, prints results. */
#ifndef PLUMB_CLI_H
#define PLUMB_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>

#include <jansson.h>

#include "plumb/base.h"

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
int cmd_ls(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_tag(int argc, char **argv);
int cmd_rollback(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_service(int argc, char **argv);
/* plumb service lb / k8s (argv[0] is the verb) */
int cmd_service_lb(int argc, char **argv);
int cmd_service_k8s(int argc, char **argv);
int cmd_usage(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

struct store_entry;
/* MODEL (a file, or a store name: store_resolve) into the file to open;
 * entry (may be NULL) gets the store entry. On failure prints the error
 * for cmd and returns false. */
bool cli_resolve_model(const char *cmd, const char *model, char *path, size_t size, struct store_entry *entry);
/* A store entry as a JSON object (name, digest, size, ...). */
json_t *cli_store_entry_json(const struct store_entry *e);
/* Unix seconds as local "YYYY-MM-DD HH:MM" / UTC RFC 3339. */
void cli_fmt_time(int64_t t, char *buf, size_t size);
json_t *cli_json_time(int64_t t);
int cmd_survey(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_tco(int argc, char **argv);

/* Text read from a file or the network (metadata, names, paths, key ids,
 * messages that quote them) as human output prints it: control characters
 * (C0, DEL, C1) and bytes that are not UTF-8 as \xHH (pb_escape_text), so
 * a file cannot drive the terminal. The result is one of 16 static 4 KiB
 * buffers used in turn: for the arguments of a printf, not for keeping. */
const char *cli_esc(const char *s);

/* Prints "plumb CMD: msg" (escaped: cli_esc) to stderr and returns CLI_FAIL. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the error, a hint to use --help, and returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

/* Text inputs (-f FILE): a file, or a pipe such as /dev/stdin, read
 * whole up to max bytes (/dev/zero would never end) into a malloc'ed
 * NUL-terminated buffer. NULL with the reason in why otherwise. */
#define CLI_MAX_TEXT_INPUT (64u << 20)
char *cli_read_input(const char *path, size_t max, size_t *len, char *why, size_t why_size);

/* Monotonic seconds, for "took 1.2 s". */
double cli_now(void);

/* True when fd 2 is a terminal (progress bars go there only then). */
bool cli_stderr_is_tty(void);



/* A progress bar on stderr, redrawn in place, only when stderr is a
 * terminal; done == total ends the line. */
void cli_progress(uint64_t done, uint64_t total, const char *label);
/* The same, shaped as the library's progress callbacks. */
void cli_progress_cb(void *user, uint64_t done, uint64_t total, const char *label);

#endif
