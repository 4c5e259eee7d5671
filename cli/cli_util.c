#define _GNU_SOURCE
#include "cli.h"

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

/* "plumb CMD: " and the message, escaped: messages quote names, values and
 * paths from files and the network. */
static void print_error(const char *cmd, const char *fmt, va_list ap)
{
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "plumb %s: %s", cmd, cli_esc(msg));
}

int cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error(cmd, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'plumb %s --help'.\n", cmd);
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

void cli_progress(uint64_t done, uint64_t total, const char *label)
{
    if (!cli_stderr_is_tty() || total == 0)
        return;
    const int width = 30;
    int fill = (int)((double)done / (double)total * width);
    char a[32], b[32];
    cli_fmt_bytes(done, a, sizeof a);
    cli_fmt_bytes(total, b, sizeof b);
    fprintf(stderr, "\r\033[K[%.*s%*s] %3d%% %s / %s  %.40s", fill, "##############################", width - fill, "",
            (int)(100.0 * (double)done / (double)total), a, b, label ? label : "");
    if (done >= total)
        fputc('\n', stderr);
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

json_t *cli_store_entry_json(const struct store_entry *e)
{
    char ref[STORE_NAME_MAX + STORE_TAG_MAX + 2], digest[80];
    store_ref_format(&e->ref, ref, sizeof ref);
    snprintf(digest, sizeof digest, "sha256:%s", e->digest);
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:s?,s:s?,s:I,s:o,s:o,s:o,s:I}", "name", ref, "model", e->ref.name, "tag",
                     e->ref.tag, "digest", digest, "size", (json_int_t)e->size, "architecture",
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
    FILE *f = fopen(path, "rb");
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
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}
