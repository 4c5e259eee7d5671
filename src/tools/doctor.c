/* The checks of plumb doctor (doctor.h). */
#define _GNU_SOURCE
#include "plumb/doctor.h"

#include "base/sys.h"
#include "kernels/cpu.h"
#include "kernels/kernels.h"
#include "plumb/engine.h"
#include "plumb/store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The store's file system: below this much free space, a pull cannot land. */
#define DISK_LOW (2ull << 30)

const char *doctor_verdict_name(enum doctor_verdict v)
{
    static const char *const n[] = {"ok", "warning", "error", "skipped"};
    return (unsigned)v < 4 ? n[v] : "?";
}

static struct doctor_check *add(struct doctor_report *r, const char *name, enum doctor_verdict v, const char *fix,
                                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static struct doctor_check *add(struct doctor_report *r, const char *name, enum doctor_verdict v, const char *fix,
                                const char *fmt, ...)
{
    if (r->n == DOCTOR_MAX_CHECKS)
        return NULL;
    struct doctor_check *c = &r->checks[r->n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->verdict = v;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    snprintf(c->fix, sizeof c->fix, "%s", v == DOCTOR_OK || v == DOCTOR_SKIP ? "" : fix ? fix : "");
    r->n_warn += v == DOCTOR_WARN;
    r->n_error += v == DOCTOR_ERROR;
    return c;
}

static void fmt_gib(double bytes, char *buf, size_t size)
{
    snprintf(buf, size, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
}

static void check_cpu(struct doctor_report *r)
{
    enum kern_level l = kern_level();
    const struct cpu_features *f = cpu_detect();
    if (l == KERN_SCALAR && f->avx2 && f->fma && f->f16c)
        add(r, "cpu", DOCTOR_WARN, "unset PLUMB_SIMD, or use a build with the SIMD kernels (the default: make)",
            "this CPU has AVX2, but this plumb runs its portable scalar kernels (%s), about 10x slower",
            kern_level_available(KERN_AVX2) ? "PLUMB_SIMD caps them" : "built without SIMD");
    else if (l == KERN_SCALAR)
        add(r, "cpu", DOCTOR_WARN, "use a CPU with AVX2 (x86-64) for usable speed; without it plumb runs its portable "
            "kernels, about 10x slower", "no SIMD kernel set this CPU supports: portable scalar kernels");
    else if (l == KERN_AVX2)
        add(r, "cpu", DOCTOR_OK, NULL, "kernels %s (no VNNI: prompt processing about half the speed of a VNNI CPU)",
            kern_level_name(l));
    else
        add(r, "cpu", DOCTOR_OK, NULL, "kernels %s", kern_level_name(l));
}

/* Each configured model: found, a valid GGUF, and within memory (the
 * engine's estimate, as plumb serve checks it). */
static void check_models(struct doctor_report *r, const struct config *c, const char *home, uint64_t available,
                         double *total, double *start_total, char (*paths)[4096])
{
    *total = *start_total = 0;
    for (int i = 0; i < c->n_models; i++) {
        const struct config_model *m = &c->models[i];
        char name[96], *path = paths[i];
        snprintf(name, sizeof name, "model %s", m->alias);
        pb_err err = {0};
        struct store_entry entry;
        path[0] = '\0';
        if (store_resolve(home, m->source, path, 4096, &entry, &err)) {
            path[0] = '\0';
            add(r, name, DOCTOR_ERROR, "pull it (plumb pull SOURCE --name NAME) or fix 'source' in the configuration",
                "%s", err.msg);
            continue;
        }
        const struct engine_params ep = config_engine_params(m);
        struct engine_memory mem;
        if (engine_estimate(path, &ep, &mem, &err)) {
            char fix[512];
            if (entry.digest[0])
                snprintf(fix, sizeof fix, "pull it again: plumb pull %.300s --name %.150s", entry.source[0] ? entry.source
                         : "SOURCE", m->source);
            else
                snprintf(fix, sizeof fix, "replace %.300s with a whole GGUF file, or point 'source' at one", path);
            add(r, name, DOCTOR_ERROR, fix, "%s", err.msg);
            continue;
        }
        const double need = (double)mem.total;
        *total += need;
        const int load = m->load != SERVER_LOAD_DEFAULT ? m->load : c->n_models > 1 ? SERVER_LOAD_DEMAND
                                                                                    : SERVER_LOAD_START;
        if (load == SERVER_LOAD_START)
            *start_total += need;
        char w[32], k[32], n[32], a[32];
        fmt_gib((double)mem.weights, w, sizeof w);
        fmt_gib((double)mem.kv, k, sizeof k);
        fmt_gib(need, n, sizeof n);
        fmt_gib((double)available, a, sizeof a);
        char ctx_warn[400];
        if (need > (double)available)
            add(r, name, DOCTOR_ERROR, "lower 'parallel' or 'ctx', use kv_type = q8_0, a smaller quantization "
                "(plumb plan MODEL), or more memory", "needs %s (weights %s + KV cache %s for %d x %lld tokens) but "
                "%s is available", n, w, k, m->parallel, (long long)mem.n_ctx, a);
        else if (need > 0.85 * (double)available)
            add(r, name, DOCTOR_WARN, "little room is left for the system: lower 'parallel' or 'ctx'",
                "needs %s of the %s available", n, a);
        else if (engine_ctx_advice(mem.n_ctx, mem.n_ctx_train, ctx_warn, sizeof ctx_warn))
            add(r, name, DOCTOR_WARN, "lower 'ctx' to the model's training context (or 0: the model's)", "%s",
                ctx_warn);
        else
            add(r, name, DOCTOR_OK, NULL, "%s needs %s (weights %s + KV %s for %d x %lld tokens) of %s available",
                m->source, n, w, k, m->parallel, (long long)mem.n_ctx, a);
    }
}

static void check_store(struct doctor_report *r, const char *home, bool deep)
{
    pb_err err = {0};
    struct stat st;
    if (stat(home, &st) != 0) {
        add(r, "store", DOCTOR_WARN, "create it with a first plumb pull", "no store at %s yet", home);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        add(r, "store", DOCTOR_ERROR, "move that file away, or point PLUMB_HOME at a folder", "%s is not a folder",
            home);
        return;
    }
    if (access(home, R_OK | W_OK | X_OK) != 0) {
        add(r, "store permissions", DOCTOR_ERROR, "give this user read and write access to the store, or run as its "
            "owner", "%s is not readable and writable by this user: %s", home, strerror(errno));
        return;
    }
    if (st.st_mode & S_IWOTH)
        add(r, "store permissions", DOCTOR_WARN, "chmod o-w on the store folder", "%s is writable by anyone", home);
    else
        add(r, "store permissions", DOCTOR_OK, NULL, "%s (mode %03o)", home, (unsigned)(st.st_mode & 0777));
    struct store *s;
    if (store_open_readonly(home, &s, &err)) {
        add(r, "store", DOCTOR_ERROR, "run plumb verify: it re-checks every file and repairs the registry where it can",
            "%s", err.msg);
        return;
    }
    if (deep) {
        struct store_verify_summary sum;
        if (store_verify(s, NULL, NULL, NULL, NULL, &sum, &err))
            add(r, "store", DOCTOR_ERROR, "run plumb verify, which says what it cannot read",
                "verification could not run: %s", err.msg);
        else if (sum.n_bad || !sum.registry_ok)
            add(r, "store", DOCTOR_ERROR, "pull the damaged models again; plumb verify NAME shows which",
                "%zu of %zu blobs do not match their SHA-256%s%s", sum.n_bad, sum.n_blobs,
                sum.registry_ok ? "" : "; registry: ", sum.registry_ok ? "" : sum.registry_msg);
        else
            add(r, "store", DOCTOR_OK, NULL, "%zu blobs match their SHA-256, registry consistent", sum.n_blobs);
    } else {
        struct store_entry *e;
        size_t n;
        if (store_list(s, &e, &n, &err)) {
            add(r, "store", DOCTOR_ERROR, "run plumb verify, which says what it cannot read", "%s", err.msg);
        } else {
            size_t bad = 0;
            char first[256] = "", fix[512] = "";
            for (size_t i = 0; i < n; i++) {
                char path[4200];
                store_blob_path(s, e[i].digest, path, sizeof path);
                struct stat bs;
                if (stat(path, &bs) != 0 || (uint64_t)bs.st_size != e[i].size) {
                    if (!bad++) {
                        snprintf(first, sizeof first, "%s:%s", e[i].ref.name, e[i].ref.tag);
                        snprintf(fix, sizeof fix, "pull it again: plumb pull %.250s --name %.150s (plumb verify lists "
                                 "the others)", e[i].source[0] ? e[i].source : "SOURCE", first);
                    }
                }
            }
            if (bad)
                add(r, "store", DOCTOR_ERROR, fix,
                    "%zu of %zu models have a missing or resized file (first: %s)", bad, n, first);
            else
                add(r, "store", DOCTOR_OK, NULL, "%zu model%s, files present with their sizes (--deep re-hashes)", n, n == 1 ? "" : "s");
            free(e);
        }
    }
    store_close(s);
}

static void check_disk(struct doctor_report *r, const char *home)
{
    char p[1024];
    snprintf(p, sizeof p, "%s", home);
    struct statvfs v;
    while (statvfs(p, &v) != 0) {
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) {
            snprintf(p, sizeof p, "/");
            if (statvfs(p, &v) != 0)
                return;
            break;
        }
        *slash = '\0';
    }
    const double free_b = (double)v.f_bavail * (double)v.f_frsize;
    char f[32];
    fmt_gib(free_b, f, sizeof f);
    if (free_b < (double)DISK_LOW)
        add(r, "disk", DOCTOR_ERROR, "free space on that file system, or move the store (PLUMB_HOME)",
            "%s free at %s: not enough for a model", f, p);
    else if (free_b < 0.05 * (double)v.f_blocks * (double)v.f_frsize)
        add(r, "disk", DOCTOR_WARN, "free space soon: pulls need room for a whole model", "only %s free at %s", f, p);
    else
        add(r, "disk", DOCTOR_OK, NULL, "%s free at %s", f, p);
}

static void check_key_file(struct doctor_report *r, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        add(r, "key file", DOCTOR_ERROR, "create it (one key per line, or ID KEY) or fix api_key_file", "%s: %s", path,
            strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        pb_err e = {0};
        pb_check_input(path, &e);
        add(r, "key file", DOCTOR_ERROR, "point api_key_file at a file of keys (one per line, or ID KEY)", "%s",
            e.msg);
        return;
    }
    if (access(path, R_OK) != 0) {
        add(r, "key file", DOCTOR_ERROR, "the server's user must read it", "%s is not readable by this user", path);
        return;
    }
    if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH))
        add(r, "key file", DOCTOR_WARN, "chmod 600 the key file (owned by the service's user)",
            "%s has mode %03o: other users can read the API keys", path, (unsigned)(st.st_mode & 0777));
    else
        add(r, "key file", DOCTOR_OK, NULL, "%s (mode %03o)", path, (unsigned)(st.st_mode & 0777));
}

/* Whether host resolves to a loopback address only (127.0.0.0/8, ::1). */
static bool loopback_host(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res, *a;
    if (getaddrinfo(host, "1", &hints, &res))
        return false;
    bool all = true;
    for (a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET)
            all &= (ntohl(((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
        else if (a->ai_family == AF_INET6)
            all &= IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
        else
            all = false;
    }
    freeaddrinfo(res);
    return all;
}

/* Whether a plumb server answers /health at host:port. */
static bool plumb_answers(const struct sockaddr *a, socklen_t len)
{
    int fd = socket(a->sa_family, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    bool yes = false;
    if (connect(fd, a, len) == 0) {
        const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
        if (send(fd, req, strlen(req), MSG_NOSIGNAL) > 0) {
            char buf[8192];
            size_t got = 0;
            ssize_t k;
            while (got < sizeof buf - 1 && (k = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
                got += (size_t)k;
            buf[got] = '\0';
            yes = strstr(buf, "plumb_slots") != NULL;
        }
    }
    close(fd);
    return yes;
}

static void check_port(struct doctor_report *r, const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res)) {
        add(r, "port", DOCTOR_ERROR, "set 'host' to an address of this machine: 127.0.0.1 (this machine only) or "
            "0.0.0.0 (every interface)", "cannot resolve host '%s'", host);
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int b = fd >= 0 ? bind(fd, res->ai_addr, res->ai_addrlen) : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (b == 0)
        add(r, "port", DOCTOR_OK, NULL, "%s:%d is free", host, port);
    else if (e == EADDRINUSE && plumb_answers(res->ai_addr, res->ai_addrlen))
        add(r, "port", DOCTOR_OK, NULL, "%s:%d is held by a running plumb serve", host, port);
    else if (e == EADDRINUSE) {
        int pid = 0;
        char comm[64] = "";
        if (sys_port_owner(port, &pid, comm, sizeof comm))
            add(r, "port", DOCTOR_ERROR, "stop that program or set another 'port'", "%s:%d is in use by pid %d (%s)",
                host, port, pid, comm[0] ? comm : "?");
        else
            add(r, "port", DOCTOR_ERROR, "stop that program or set another 'port' (ss -ltnp shows who holds it)",
                "%s:%d is taken by another program", host, port);
    }
    else if (e == EACCES)
        add(r, "port", DOCTOR_ERROR, "use a port above 1023, or give the service CAP_NET_BIND_SERVICE",
            "%s:%d needs privileges to listen on", host, port);
    else
        add(r, "port", DOCTOR_ERROR, "set 'host' to an address of this machine (127.0.0.1 or 0.0.0.0) and 'port' to a "
            "free one", "cannot listen on %s:%d: %s", host, port, strerror(e));
    freeaddrinfo(res);
}

static void check_service(struct doctor_report *r, const char *unit)
{
    struct stat st;
    if (stat("/run/systemd/system", &st) != 0) {
        add(r, "service", DOCTOR_SKIP, NULL, "systemd is not running here");
        return;
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "systemctl is-active --quiet '%s' 2>/dev/null", unit);
    int st_active = system(cmd);
    snprintf(cmd, sizeof cmd, "systemctl cat '%s' >/dev/null 2>&1", unit);
    int st_known = system(cmd);
    if (WIFEXITED(st_active) && WEXITSTATUS(st_active) == 0)
        add(r, "service", DOCTOR_OK, NULL, "%s is active", unit);
    else if (WIFEXITED(st_known) && WEXITSTATUS(st_known) == 0)
        add(r, "service", DOCTOR_WARN, "systemctl enable --now plumb.service; journalctl -u plumb shows why it stopped",
            "%s is installed but not running", unit);
    else
        add(r, "service", DOCTOR_WARN, "plumb service install --config FILE", "%s is not installed", unit);
}

static void check_clock(struct doctor_report *r)
{
    /* this binary cannot have been built in the future */
    struct tm built = {0};
    strptime(__DATE__, "%b %d %Y", &built);
    const time_t t_built = timegm(&built), now = time(NULL);
    struct tm tm;
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%d %H:%M UTC", gmtime_r(&now, &tm));
    if (now + 86400 < t_built)
        add(r, "clock", DOCTOR_ERROR, "set the time (timedatectl set-ntp true, or a local NTP server on air-gapped "
            "sites): logs, usage accounting and certificates of a proxy in front depend on it",
            "the clock says %s, before this plumb was built (%s)", s, __DATE__);
    else if (tm.tm_year + 1900 > 2100)
        add(r, "clock", DOCTOR_ERROR, "set the time", "the clock says %s", s);
    else
        add(r, "clock", DOCTOR_OK, NULL, "%s", s);
}

/* Whether a chat template reads system messages at all (a template that
 * never mentions "system" drops them); true when it cannot tell. */
static bool template_takes_system(const char *path)
{
    json_t *d = NULL;
    pb_err err = {0};
    if (engine_describe(path, false, true, &d, &err))
        return true;
    const char *t = json_string_value(json_object_get(json_object_get(d, "metadata"), "tokenizer.chat_template"));
    const bool takes = !t || strstr(t, "system") != NULL;
    json_decref(d);
    return takes;
}

/* Each model's preset, and models that share a file: a fixed field
 * without a value, sampling far from the usual, a system prompt the
 * template would drop, one file loaded twice for differing engine
 * settings. */
static void check_presets(struct doctor_report *r, const struct config *c, char (*paths)[4096])
{
    for (int i = 0; i < c->n_models; i++) {
        const struct config_model *m = &c->models[i];
        char name[96], problems[512] = "", fix[512] = "";
        size_t at = 0, fat = 0;
        bool bad = false;
#define NOTE(...) (at < sizeof problems ? at += (size_t)snprintf(problems + at, sizeof problems - at, __VA_ARGS__) : 0)
#define FIX(...) (fat < sizeof fix ? fat += (size_t)snprintf(fix + fat, sizeof fix - fat, __VA_ARGS__) : 0)
        snprintf(name, sizeof name, "preset %s", m->alias);
        const unsigned loose = m->preset_fixed & ~m->preset_set;
        for (int k = 0; k < SERVER_PRESET_FIELDS; k++)
            if (loose & (1u << k)) {
                const unsigned bit = 1u << k;
                NOTE("%s'%s' is fixed without a value: %s", at ? "; " : "", server_preset_field_name(bit),
                     bit == SERVER_PRESET_SYSTEM ? "every request's system messages are removed"
                                                 : "requests get the API's default and cannot change it");
                FIX("%sset %s or take it out of 'fixed'", fat ? "; " : "", server_preset_field_name(bit));
                bad = true;
            }
        if ((m->preset_set & SERVER_PRESET_TEMPERATURE) && m->temperature > 1.5) {
            NOTE("%stemperature %g: answers that high are mostly noise", at ? "; " : "", m->temperature);
            FIX("%suse a temperature of 0 to 1.2", fat ? "; " : "");
            bad = true;
        }
        if ((m->preset_set & SERVER_PRESET_TOP_P) && m->top_p == 0) {
            NOTE("%stop_p 0: only the most likely token (say temperature = 0 for that)", at ? "; " : "");
            FIX("%suse temperature = 0 instead", fat ? "; " : "");
            bad = true;
        }
        if ((m->preset_set & SERVER_PRESET_MAX_TOKENS) && m->ctx > 0 && m->max_tokens >= m->ctx) {
            NOTE("%smax_tokens %d is not below the context (%lld): it caps nothing", at ? "; " : "", m->max_tokens,
                 (long long)m->ctx);
            FIX("%slower max_tokens", fat ? "; " : "");
            bad = true;
        }
        if ((m->preset_set & SERVER_PRESET_SYSTEM) && !m->chat_format[0] && paths[i][0] &&
            !template_takes_system(paths[i])) {
            NOTE("%sthe model's chat template never reads a system message: the system prompt is dropped",
                 at ? "; " : "");
            FIX("%sset chat_format to a built-in format that has one, or leave 'system' out", fat ? "; " : "");
            bad = true;
        }
#undef NOTE
#undef FIX
        if (bad)
            add(r, name, DOCTOR_WARN, fix, "%s", problems);
        else if (m->preset_set || m->preset_fixed)
            add(r, name, DOCTOR_OK, NULL, "%d field%s set, %d fixed", __builtin_popcount(m->preset_set),
                __builtin_popcount(m->preset_set) == 1 ? "" : "s", __builtin_popcount(m->preset_fixed));
    }
    /* one file, several sections: one copy when their engine settings match */
    for (int i = 0; i < c->n_models; i++)
        for (int k = i + 1; k < c->n_models; k++) {
            if (!paths[i][0] || strcmp(paths[i], paths[k]) != 0)
                continue;
            const struct engine_params a = config_engine_params(&c->models[i]),
                                       b = config_engine_params(&c->models[k]);
            const bool same = a.n_slots == b.n_slots && a.n_ctx == b.n_ctx && a.n_batch == b.n_batch &&
                              a.kv_type == b.kv_type && a.prefill_chunk == b.prefill_chunk &&
                              a.step_target_s == b.step_target_s &&
                              !strcmp(a.chat_format ? a.chat_format : "", b.chat_format ? b.chat_format : "");
            char name[96];
            snprintf(name, sizeof name, "shared %.20s, %.20s", c->models[i].alias, c->models[k].alias);
            if (same)
                add(r, name, DOCTOR_OK, NULL, "[model %s] and [model %s] share one loaded copy of %s",
                    c->models[i].alias, c->models[k].alias, paths[i]);
            else
                add(r, name, DOCTOR_WARN, "give them the same parallel, ctx, kv_type, batch, step_ms, prefill_chunk "
                    "and chat_format to share one copy", "[model %s] and [model %s] name the same file with "
                    "different engine settings: it is loaded twice, in twice the memory", c->models[i].alias,
                    c->models[k].alias);
        }
}

int doctor_run(const struct doctor_params *p, struct doctor_report *r, pb_err *err)
{
    (void)err;
    memset(r, 0, sizeof *r);
    if (p->config_error)
        add(r, "configuration", DOCTOR_ERROR, "correct the line the message names (the settings: docs/configuration.md), "
            "then run plumb doctor --config FILE again", "%s", p->config_error);
    check_cpu(r);
    const uint64_t available = sys_mem_available();
    double need = 0, start_need = 0;
    const struct config *c = p->config;
    /* the store: the configuration's, else the default one */
    char home[1024];
    pb_err herr = {0};
    const char *cfg_store = c && c->store[0] ? c->store : NULL;
    bool have_home = true;
    if (cfg_store)
        snprintf(home, sizeof home, "%s", cfg_store);
    else if (store_default_home(home, sizeof home, &herr))
        have_home = false;
    if (c) {
        static char paths[CONFIG_MAX_MODELS][4096]; /* doctor runs once per process */
        /* what the models may use: memory_limit, else what is available */
        const uint64_t limit = c->memory_limit ? c->memory_limit : available;
        if (c->memory_limit && available && c->memory_limit > available)
            add(r, "memory limit", DOCTOR_WARN, "lower memory_limit to what the machine has free",
                "memory_limit %.2f GiB is more than the %.2f GiB available now", c->memory_limit / 1073741824.0,
                available / 1073741824.0);
        check_models(r, c, have_home ? home : NULL, limit, &need, &start_need, paths);
        check_presets(r, c, paths);
        if (c->n_models == 0)
            add(r, "models", DOCTOR_ERROR, "add a [model NAME] section with a source", "%s serves no model", c->path);
        else if (c->n_models > 1 && start_need > (double)(c->memory_limit ? c->memory_limit : available))
            add(r, "models", DOCTOR_ERROR, "load fewer at start (load = demand), or serve smaller ones",
                "the models loaded at start need more than the memory %s together",
                c->memory_limit ? "memory_limit allows" : "available");
        else if (c->n_models > 1 && need > (double)(c->memory_limit ? c->memory_limit : available))
            add(r, "models", DOCTOR_WARN, "lower their 'parallel' or 'ctx', or raise memory_limit, to keep them "
                "all loaded", "all %d models do not fit at once: those loaded on demand take turns (an idle one "
                "is unloaded, least recently used first, to load another; a request then waits for the load)",
                c->n_models);
    } else if (!p->config_error) {
        add(r, "models", DOCTOR_SKIP, NULL, "no configuration given (--config FILE)");
    }
    if (have_home) {
        check_store(r, home, p->deep);
        check_disk(r, home);
    } else {
        add(r, "store", DOCTOR_ERROR, "set PLUMB_HOME, or 'store' in the configuration", "%s", herr.msg);
    }
    if (c && c->api_key_file[0])
        check_key_file(r, c->api_key_file);
    else if (c && !loopback_host(c->host) && !c->insecure)
        add(r, "key file", DOCTOR_ERROR, "set api_key_file (or host = 127.0.0.1; insecure = yes serves without keys "
            "anyway)", "host %s is reachable from other machines without API keys: plumb serve refuses to start",
            c->host);
    else if (c && !loopback_host(c->host))
        add(r, "key file", DOCTOR_WARN, "set api_key_file: anyone who reaches the port can use the models",
            "the server listens on %s without API keys (insecure = yes)", c->host);
    char warn[400];
    if (c && engine_threads_advice(c->threads, warn, sizeof warn))
        add(r, "threads", DOCTOR_WARN, "lower 'threads' (0: every CPU)", "%s", warn);
    if (c)
        check_port(r, c->host, c->port);
    check_service(r, p->service ? p->service : "plumb.service");
    check_clock(r);
    return PB_OK;
}
