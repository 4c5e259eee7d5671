#define _GNU_SOURCE
#include "cli.h"

#include "plumb/server.h"

#include "plumb/sampler.h"
#include "plumb/store.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *cli_esc(const char *s)
{
    static char bufs[16][4096];
    static unsigned next;
    char *b = bufs[next++ % 16];
    pb_escape_text(s, b, sizeof bufs[0]);
    return b;
}

bool cli_json_errors;

/* "plumb CMD: " and the message, escaped: messages quote names, values and
 * paths from files and the network. With --json, the JSON error line. */
static void print_error(const char *cmd, bool usage, const char *fmt, va_list ap)
{
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (cli_json_errors) {
        json_t *e = json_pack("{s:{s:o,s:s,s:s}}", "error", "message", pb_json_text(msg, strlen(msg)), "code",
                              usage ? "usage" : "failed", "command", cmd);
        char *line = e ? json_dumps(e, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        fprintf(stderr, "%s\n", line ? line : "{\"error\":{\"message\":\"out of memory\",\"code\":\"failed\"}}");
        free(line);
        json_decref(e);
        return;
    }
    fprintf(stderr, "plumb %s: %s\n", cmd, cli_esc(msg));
    if (usage)
        fprintf(stderr, "Try 'plumb %s --help'.\n", cmd);
}

int cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error(cmd, false, fmt, ap);
    va_end(ap);
    return CLI_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error(cmd, true, fmt, ap);
    va_end(ap);
    return CLI_USAGE;
}

bool cli_parse_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_usage_error(cmd, "%s expects an integer in %lld..%lld, got '%s'", opt, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_kv_type(const char *cmd, const char *s, enum pb_kv_type *out)
{
    if (!pb_kv_type_parse(s, out)) {
        cli_usage_error(cmd, "unknown KV cache type '%s' (f16, f32 or q8_0)", s);
        return false;
    }
    return true;
}

bool cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        cli_usage_error(cmd, "%s expects a number in %g..%g, got '%s'", opt, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_read_key(const char *cmd, const char *path, bool admin, char *key, size_t size)
{
    size_t len;
    char why[128];
    char *text = cli_read_input(path, 64 << 10, &len, why, sizeof why);
    if (!text) {
        cli_usage_error(cmd, "--api-key-file %s: %s", path, why);
        return false;
    }
    server_key_pick(text, admin, key, size);
    memset(text, 0, len); /* keys do not linger */
    free(text);
    if (!key[0])
        cli_usage_error(cmd, "--api-key-file %s holds no key (a line KEY, ID KEY or ID KEY admin)", path);
    return key[0] != 0;
}

void cli_fmt_bytes(uint64_t n, char *buf, size_t size)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, size, "%.2f %s", v, units[u]);
}

void cli_fmt_count(uint64_t n, char *buf, size_t size)
{
    if (n >= 1000000000ull)
        snprintf(buf, size, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000ull)
        snprintf(buf, size, "%.2f M", (double)n / 1e6);
    else if (n >= 1000ull)
        snprintf(buf, size, "%.1f K", (double)n / 1e3);
    else
        snprintf(buf, size, "%llu", (unsigned long long)n);
}

int cli_print_json(json_t *v, bool pretty)
{
    if (!v) {
        fprintf(stderr, "plumb: out of memory building JSON\n");
        return CLI_FAIL;
    }
    size_t flags = JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII | (pretty ? JSON_INDENT(2) : JSON_COMPACT);
    char *s = json_dumps(v, flags);
    json_decref(v);
    if (!s) {
        fprintf(stderr, "plumb: out of memory printing JSON\n");
        return CLI_FAIL;
    }
    puts(s);
    free(s);
    return CLI_OK;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool cli_stderr_is_tty(void)
{
    return isatty(STDERR_FILENO) == 1;
}

/* "1.2 MiB/s, 3 min 20 s left" from the rate since the start. */
static void fmt_rate(uint64_t done, uint64_t total, double secs, char *buf, size_t size)
{
    char r[32];
    double rate = secs > 0 ? (double)done / secs : 0;
    cli_fmt_bytes((uint64_t)rate, r, sizeof r);
    if (rate <= 0 || done >= total) {
        snprintf(buf, size, "%s/s", r);
        return;
    }
    double left = (double)(total - done) / rate;
    if (left >= 3600)
        snprintf(buf, size, "%s/s, %.0f h %02.0f min left", r, floor(left / 3600), fmod(floor(left / 60), 60));
    else if (left >= 60)
        snprintf(buf, size, "%s/s, %.0f min %02.0f s left", r, floor(left / 60), fmod(floor(left), 60));
    else
        snprintf(buf, size, "%s/s, %.0f s left", r, ceil(left));
}

void cli_progress(uint64_t done, uint64_t total, const char *label)
{
    static uint64_t last_done, last_total;
    static double start, last_line;
    static bool logged; /* a plain line was printed for this work */
    if (total == 0)
        return;
    double now = cli_now();
    if (done < last_done || total != last_total || start == 0) {
        start = now;
        last_line = now;
        logged = false;
    }
    last_done = done >= total ? 0 : done;
    last_total = done >= total ? 0 : total;
    char a[32], b[32], rate[80];
    cli_fmt_bytes(done, a, sizeof a);
    cli_fmt_bytes(total, b, sizeof b);
    fmt_rate(done, total, now - start, rate, sizeof rate);
    int pct = (int)(100.0 * (double)done / (double)total);
    if (cli_stderr_is_tty()) {
        const int width = 30;
        int fill = (int)((double)done / (double)total * width);
        fprintf(stderr, "\r\033[K[%.*s%*s] %3d%% %s / %s, %s  %.30s", fill, "##############################",
                width - fill, "", pct, a, b, rate, label ? cli_esc(label) : "");
        if (done >= total)
            fputc('\n', stderr);
    } else if (now - last_line >= 5 || (done >= total && logged)) {
        /* a log or CI: a plain line every few seconds, and the end of
         * work that took that long */
        last_line = now;
        logged = true;
        fprintf(stderr, "progress: %d%% %s of %s, %s%s%s\n", pct, a, b, rate, label && label[0] ? ": " : "",
                label ? cli_esc(label) : "");
    } else {
        return;
    }
    if (done >= total)
        start = 0;
    fflush(stderr);
}

void cli_progress_cb(void *user, uint64_t done, uint64_t total, const char *label)
{
    (void)user;
    cli_progress(done, total, label);
}

bool cli_resolve_model(const char *cmd, const char *model, char *path, size_t size, struct store_entry *entry)
{
    pb_err err = {0};
    if (store_resolve(NULL, model, path, size, entry, &err)) {
        cli_error(cmd, "%s", err.msg);
        return false;
    }
    return true;
}

void cli_fmt_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M", &tm))
        snprintf(buf, size, "%lld", (long long)t);
}

json_t *cli_json_time(int64_t t)
{
    char buf[32];
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return json_null();
    return json_string(buf);
}

json_t *cli_json_digest(const char *hex)
{
    char digest[80];
    snprintf(digest, sizeof digest, "sha256:%.64s", hex);
    return hex && hex[0] ? json_string(digest) : json_null();
}

json_t *cli_store_entry_json(const struct store_entry *e)
{
    char ref[STORE_NAME_MAX + STORE_TAG_MAX + 2];
    store_ref_format(&e->ref, ref, sizeof ref);
    return json_pack("{s:s,s:s,s:s,s:o,s:I,s:s?,s:s?,s:I,s:o,s:o,s:o,s:I}", "name", ref, "model", e->ref.name, "tag",
                     e->ref.tag, "digest", cli_json_digest(e->digest), "size", (json_int_t)e->size, "architecture",
                     e->arch[0] ? e->arch : NULL, "quantization", e->quant[0] ? e->quant : NULL, "parameters",
                     (json_int_t)e->n_params, "source", pb_json_text(e->source, strlen(e->source)), "created",
                     cli_json_time(e->created), "modified", cli_json_time(e->modified), "revisions",
                     (json_int_t)e->n_revisions);
}

bool cli_parse_since(const char *s, double *out)
{
    char *end;
    double n = strtod(s, &end);
    if (end != s && n >= 0 && end[0] && !end[1] && strchr("dhm", end[0])) {
        double unit = end[0] == 'd' ? 86400 : end[0] == 'h' ? 3600 : 60;
        *out = (double)time(NULL) - n * unit;
        return true;
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%d", &tm);
    if (!rest || *rest)
        return false;
    *out = (double)timegm(&tm);
    return true;
}

volatile sig_atomic_t cli_interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_trap_interrupts(bool on)
{
    static struct sigaction old_int, old_term;
    if (on) {
        struct sigaction sa = {.sa_handler = on_interrupt};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    } else {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
}

char *cli_read_input(const char *path, size_t max, size_t *len, char *why, size_t why_size)
{
    *len = 0;
    const bool in = !strcmp(path, "-");
    FILE *f = in ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(why, why_size, "%s", strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0 || n > max)
            break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (!buf)
        snprintf(why, why_size, "out of memory");
    else if (ferror(f))
        snprintf(why, why_size, "%s", strerror(errno));
    else if (n > max)
        snprintf(why, why_size, "more than %zu bytes (is it a device, or the wrong file?)", max);
    if (buf && (ferror(f) || n > max)) {
        free(buf);
        buf = NULL;
    }
    if (!in)
        fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

bool cli_read_grammar(const char *cmd, const char *path, bool grammar, char **out)
{
    size_t len;
    char why[128];
    char *text = cli_read_input(path, CLI_MAX_TEXT_INPUT, &len, why, sizeof why);
    if (!text) {
        cli_usage_error(cmd, "cannot read %s: %s", path, why);
        return false;
    }
    free(*out);
    *out = NULL;
    pb_err err = {0};
    int rc;
    if (grammar) {
        rc = sampler_grammar_check(text, len, &err);
        if (!rc)
            *out = text;
        else
            free(text);
    } else {
        json_error_t je;
        json_t *schema = json_loadb(text, len, 0, &je);
        free(text);
        if (!schema) {
            cli_usage_error(cmd, "%s: not JSON: %s (line %d, column %d)", path, je.text, je.line, je.column);
            return false;
        }
        rc = sampler_schema_grammar(schema, out, &err);
        json_decref(schema);
    }
    if (rc) {
        cli_usage_error(cmd, "%s: %s", path, err.msg);
        return false;
    }
    return true;
}
