/* plumb serve replicas behind a real load balancer (plumb service lb):
 * three replicas of a tiny model on loopback behind HAProxy, then behind
 * nginx (the Debian packages scripts/install-deps.sh installs), under
 * plumb's own serving bench:
 *
 * - the load spreads over the replicas, and nothing fails;
 * - a replica drained (SIGTERM) under load: nothing fails, the streams it
 *   was serving finish, and it takes no request after the signal;
 * - a replica restarted under load: nothing fails, and it answers again
 *   once /ready (HAProxy's check) or once its rest is over (nginx);
 * - a replica killed (SIGKILL) under load: only the streams it was
 *   serving fail, each counted, and every request sent afterwards
 *   succeeds;
 * - with affinity on a session header, each session's requests land on
 *   one replica and reuse its cached prefix (cached_tokens > 0).
 *
 * Each scenario prints its figures (requests sent, failed, retried by the
 * balancer: from HAProxy's log, a retry count per request; from nginx's
 * access log, requests that went to more than one replica).
 *
 * Also, without processes: the configurations for every option pass
 * `haproxy -c` and `nginx -t`, and bad input is refused with a message.
 *
 * argv[1] is the plumb binary. */
#define _GNU_SOURCE
#include "testutil.h"

#include "plumb/bench.h"
#include "plumb/service.h"
#include "plumb/synth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *plumb_bin;

#define N_REPLICAS 3
#define DIRLEN 3600  /* folders (test_tmpdir() is up to 3500 bytes) */
#define PATHLEN 4096 /* a folder and a file name */

/* snprintf for paths and commands, failing the test when it would cut. */
static void pathf(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        fail_msg("a path or command longer than %zu bytes", size);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* A port nobody listens on now (the kernel's pick). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts argv with stdout and stderr into log and extra_env added to the
 * environment. Everything the child needs is prepared before fork: the
 * load's threads run meanwhile. */
static pid_t spawn(char *const argv[], const char *log, const char *extra_env)
{
    int n_env = 0;
    while (environ[n_env])
        n_env++;
    char **envp = calloc((size_t)n_env + 2, sizeof *envp);
    assert_non_null(envp);
    memcpy(envp, environ, (size_t)n_env * sizeof *envp);
    envp[n_env] = (char *)extra_env; /* NULL: none */
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        setpgid(0, 0); /* not in the test's process group */
        execve(argv[0], argv, envp);
        _exit(127);
    }
    close(fd);
    free(envp);
    test_track_process(pid);
    return pid;
}

/* Signals pid and waits for it; its exit status, or 128 + the signal. */
static int stop_proc(pid_t pid, int sig, double timeout_s)
{
    kill(pid, sig);
    int status = 0;
    for (double t = 0; t < timeout_s; t += 0.02) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            test_untrack_process(pid);
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        sleep_s(0.02);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    test_untrack_process(pid);
    fail_msg("process %d did not end within %.0f s of signal %d", (int)pid, timeout_s, sig);
    return -1;
}

/* GET path on 127.0.0.1:port (one connection, two seconds at most); the
 * status, or 0 when nothing answered. body: the response (may be NULL). */
static int http_get(int port, const char *path, char *body, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 0;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return 0;
    }
    char local[8192];
    char *buf = body ? body : local;
    size_t cap = body ? size : sizeof local, len = 0;
    ssize_t k;
    while (len + 1 < cap && (k = recv(fd, buf + len, cap - 1 - len, 0)) > 0)
        len += (size_t)k;
    buf[len] = '\0';
    close(fd);
    int status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    return status;
}

/* The value of a Prometheus gauge or counter without labels, or -1. */
static double metric(int port, const char *name)
{
    static char body[1 << 16];
    if (http_get(port, "/metrics", body, sizeof body) != 200)
        return -1;
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(body, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* ---- replicas ---- */

struct replica {
    char id[8];
    int port;
    pid_t pid;
    char log[PATHLEN], home[PATHLEN];
    double ready_at; /* when /ready first answered 200 */
};

static struct replica reps[N_REPLICAS];
static const char *model;

static void replica_start(struct replica *r)
{
    char port[16], env[PATHLEN + 16];
    snprintf(port, sizeof port, "%d", r->port);
    pathf(env, sizeof env, "PLUMB_HOME=%s", r->home);
    char *const argv[] = {(char *)plumb_bin, "serve", (char *)model, "--port", port, "--instance-id", r->id,
                          "--parallel", "8", "--ctx", "512", "--threads", "1", "--max-connections-per-client", "0",
                          "--drain-timeout", "20", NULL};
    r->pid = spawn(argv, r->log, env);
    for (double t0 = now_s(); now_s() - t0 < 30;) {
        if (http_get(r->port, "/ready", NULL, 0) == 200) {
            r->ready_at = now_s();
            return;
        }
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
            test_untrack_process(r->pid);
            fail_msg("replica %s did not start (see %s)", r->id, r->log);
        }
        sleep_s(0.02);
    }
    fail_msg("replica %s not ready within 30 s (see %s)", r->id, r->log);
}

/* Waits until replica r has a request generating (so that a signal finds
 * streams in flight); false after timeout_s. */
static bool replica_busy(const struct replica *r, double timeout_s)
{
    for (double t0 = now_s(); now_s() - t0 < timeout_s; sleep_s(0.01))
        if (metric(r->port, "plumb_slots_active") >= 1)
            return true;
    return false;
}

/* ---- the balancer ---- */

struct balancer {
    enum lb_kind kind;
    int port, stats_port;
    pid_t pid;
    char dir[DIRLEN], conf[PATHLEN], log[PATHLEN], access[PATHLEN];
};

static struct balancer lb;

/* Writes the balancer's configuration with plumb service lb (affinity:
 * NULL or the header), around it what a test run needs (HAProxy: a stats
 * page; nginx: a main file with paths in the test folder and an access
 * log of the replicas each request tried), and starts it. */
static void balancer_start(enum lb_kind kind, const char *affinity)
{
    struct balancer *b = &lb;
    b->kind = kind;
    pathf(b->dir, sizeof b->dir, "%s/%s%s", test_tmpdir(), service_lb_kind_name(kind), affinity ? "-aff" : "");
    mkdir(b->dir, 0755);
    pathf(b->conf, sizeof b->conf, "%s/plumb.%s", b->dir, kind == LB_HAPROXY ? "cfg" : "conf");
    pathf(b->log, sizeof b->log, "%s/balancer.log", b->dir);
    pathf(b->access, sizeof b->access, "%s/access.log", b->dir);
    char cmd[3 * PATHLEN];
    pathf(cmd, sizeof cmd, "%s service lb --kind %s --listen 127.0.0.1:%d --force -o '%s' --check 0.5", plumb_bin,
          service_lb_kind_name(kind), b->port, b->conf);
    size_t n = strlen(cmd);
    for (int i = 0; i < N_REPLICAS; i++, n = strlen(cmd))
        pathf(cmd + n, sizeof cmd - n, " --backend http://127.0.0.1:%d", reps[i].port);
    if (affinity)
        pathf(cmd + n, sizeof cmd - n, " --affinity header --affinity-header %s", affinity);
    pathf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " > '%s/lb.out' 2>&1", b->dir);
    if (system(cmd) != 0)
        fail_msg("plumb service lb failed: %s (see %s/lb.out)", cmd, b->dir);
    char extra[PATHLEN], text[5 * PATHLEN];
    if (kind == LB_HAPROXY) {
        pathf(extra, sizeof extra, "%s/stats.cfg", b->dir);
        pathf(text, sizeof text,
                 "listen stats\n    bind 127.0.0.1:%d\n    mode http\n    stats enable\n    stats uri /stats\n",
                 b->stats_port);
        assert_int_equal(test_write_file(extra, text, strlen(text)), 0);
        char *const argv[] = {"/usr/sbin/haproxy", "-db", "-f", b->conf, "-f", extra, NULL};
        b->pid = spawn(argv, b->log, NULL);
    } else {
        pathf(extra, sizeof extra, "%s/nginx.conf", b->dir);
        pathf(text, sizeof text,
                 "worker_processes 1;\n"
                 "daemon off;\n"
                 "pid %s/nginx.pid;\n"
                 "error_log %s info;\n"
                 "events { worker_connections 1024; }\n"
                 "http {\n"
                 "    log_format plumbtest '$msec $status \"$upstream_addr\" \"$upstream_status\"';\n"
                 "    access_log %s plumbtest;\n"
                 "    client_body_temp_path %s/body;\n"
                 "    proxy_temp_path %s/proxy;\n"
                 "    fastcgi_temp_path %s/fastcgi;\n"
                 "    uwsgi_temp_path %s/uwsgi;\n"
                 "    scgi_temp_path %s/scgi;\n"
                 "    include %s;\n"
                 "}\n",
                 b->dir, b->log, b->access, b->dir, b->dir, b->dir, b->dir, b->dir, b->conf);
        assert_int_equal(test_write_file(extra, text, strlen(text)), 0);
        char *const argv[] = {"/usr/sbin/nginx", "-p", b->dir, "-c", extra, "-e", b->log, NULL};
        b->pid = spawn(argv, b->log, NULL);
    }
    /* up: answers through to a replica (HAProxy: every replica UP too) */
    for (double t0 = now_s(); now_s() - t0 < 15; sleep_s(0.05)) {
        if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
            test_untrack_process(b->pid);
            fail_msg("%s did not start (see %s)", service_lb_kind_name(kind), b->log);
        }
        if (http_get(b->port, "/ready", NULL, 0) != 200)
            continue;
        if (kind == LB_NGINX)
            return;
        static char csv[1 << 16];
        if (http_get(b->stats_port, "/stats;csv", csv, sizeof csv) != 200)
            continue;
        int up = 0;
        for (const char *p = csv; (p = strstr(p, "\nplumb_replicas,r")); p++)
            up += strstr(p, ",UP,") && strstr(p, ",UP,") < strchr(p + 1, '\n');
        if (up == N_REPLICAS)
            return;
    }
    fail_msg("%s: not up within 15 s (see %s)", service_lb_kind_name(kind), b->log);
}

static void balancer_stop(void)
{
    int st = stop_proc(lb.pid, SIGTERM, 10);
    (void)st; /* HAProxy ends a SIGTERM with status 0 or 143 by version: either is a stop */
}

/* Requests the balancer retried on another replica, in its log from offset
 * on (HAProxy's httplog: the retries field of ".../.../.../.../RETRIES";
 * nginx's access log: more than one upstream address). */
static long log_size(void)
{
    struct stat st;
    return stat(lb.kind == LB_HAPROXY ? lb.log : lb.access, &st) == 0 ? (long)st.st_size : 0;
}

static int retried_since(long offset)
{
    sleep_s(0.2); /* the last lines */
    size_t len;
    char *text = test_read_file(lb.kind == LB_HAPROXY ? lb.log : lb.access, &len);
    if (!text)
        return 0;
    int n = 0;
    for (char *line = text + (offset < (long)len ? offset : (long)len); *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        if (lb.kind == LB_NGINX) {
            n += strstr(line, ", ") != NULL;
        } else {
            /* the timers "TR/Tw/Tc/Tr/Ta", then the counters "ac/fc/bc/sc/rc"
             * (rc with a '+' when redispatched): the second such field */
            int seen = 0;
            for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) {
                int a, f, bc, sc, rc;
                char plus = 0;
                if (sscanf(tok, "%d/%d/%d/%d/%d", &a, &f, &bc, &sc, &rc) == 5 ||
                    (sscanf(tok, "%d/%d/%d/%d/%c%d", &a, &f, &bc, &sc, &plus, &rc) == 6 && plus == '+')) {
                    if (++seen == 2) {
                        n += rc > 0;
                        break;
                    }
                }
            }
        }
        if (!end)
            break;
        line = end + 1;
    }
    free(text);
    return n;
}

/* Requests the balancer has logged as ended since offset. */
static int logged_since(long offset)
{
    size_t len;
    char *text = test_read_file(lb.kind == LB_HAPROXY ? lb.log : lb.access, &len);
    int n = 0;
    for (const char *p = text && offset < (long)len ? text + offset : ""; (p = strchr(p, '\n')); p++)
        n++;
    if (text && lb.kind == LB_HAPROXY) { /* its log has events too: the requests' lines only */
        n = 0;
        for (const char *p = text + (offset < (long)len ? offset : (long)len); (p = strstr(p, "\"POST /v1/")); p++)
            n++;
    }
    free(text);
    return n;
}

/* ---- load ---- */

struct load {
    struct servebench_params p;
    struct servebench_report r;
    atomic_int stop;
    pthread_t th;
    int rc;
    pb_err err;
    long log_at;
};

static char lb_url[64];
static uint64_t load_seed = 1;

static void *load_main(void *arg)
{
    struct load *l = arg;
    l->rc = servebench_run(&l->p, &l->r, &l->err);
    return NULL;
}

/* clients x requests streamed completions of gen tokens through the
 * balancer, on a thread; an open load (requests large) ends at load_end. */
static void load_start(struct load *l, int clients, int requests, int gen)
{
    memset(l, 0, sizeof *l);
    atomic_init(&l->stop, 0);
    l->p = (struct servebench_params){.url = lb_url, .levels = {clients}, .n_levels = 1, .prompt_tokens = 16,
                                      .gen_tokens = gen, .requests_per_client = requests, .vocab_lo = 100,
                                      .vocab_hi = 1000, .keep_requests = true, .seed = load_seed++,
                                      .stop = &l->stop};
    l->log_at = log_size();
    assert_int_equal(pthread_create(&l->th, NULL, load_main, l), 0);
}

static void load_end(struct load *l)
{
    atomic_store(&l->stop, 1);
    pthread_join(l->th, NULL);
    if (l->rc)
        fail_msg("the load did not run: %s", l->err.msg);
}

struct figures {
    int sent, failed, retried;
};

static struct figures figures_of(struct load *l, const char *scenario)
{
    struct figures f = {l->r.n_requests, 0, retried_since(l->log_at)};
    for (int i = 0; i < l->r.n_requests; i++)
        f.failed += !l->r.requests[i].ok;
    printf("figures %-8s %-8s requests sent %3d, failed %2d, retried by the balancer %2d\n",
           service_lb_kind_name(lb.kind), scenario, f.sent, f.failed, f.retried);
    fflush(stdout);
    return f;
}

static int answered_by(const struct load *l, const char *id)
{
    int n = 0;
    for (int i = 0; i < l->r.n_requests; i++)
        n += l->r.requests[i].ok && !strcmp(l->r.requests[i].instance, id);
    return n;
}

/* The failed requests, and the balancer's log lines of errors since the
 * load began (what a failure is explained by). */
static void print_failures(const struct load *l)
{
    for (int i = 0; i < l->r.n_requests; i++) {
        const struct servebench_request *q = &l->r.requests[i];
        if (!q->ok)
            printf("  failed: client %d request %d, %s, from '%s', %.3f-%.3f\n", q->client, q->index, q->error,
                   q->instance, q->start, q->end);
    }
    size_t len;
    char *text = test_read_file(lb.kind == LB_HAPROXY ? lb.log : lb.access, &len);
    for (char *line = text ? text + (l->log_at < (long)len ? l->log_at : (long)len) : NULL; line && *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        if (strstr(line, " 502 ") || strstr(line, " 503 ") || strstr(line, " 504 ") || strstr(line, "SD--") ||
            strstr(line, "SH--") || strstr(line, ", "))
            printf("  balancer: %s\n", line);
        line = end ? end + 1 : NULL;
    }
    free(text);
}

/* ---- the scenarios (each leaves three replicas up) ---- */

/* Every request succeeds and each replica answers some (the CLI's
 * per-request JSON). */
static void scenario_spread(void)
{
    char cmd[3 * PATHLEN], out[PATHLEN];
    pathf(out, sizeof out, "%s/spread.json", lb.dir);
    pathf(cmd, sizeof cmd,
             "%s bench --serve %s --concurrency 6 --requests 4 --prompt-tokens 16 --gen-tokens 32 --per-request "
             "--json > '%s'",
             plumb_bin, lb_url, out);
    long at = log_size();
    if (system(cmd) != 0)
        fail_msg("plumb bench --serve failed: see %s", out);
    char *text = test_read_file(out, NULL);
    json_t *o = test_parse_json(text);
    free(text);
    json_t *reqs = json_object_get(o, "requests");
    assert_int_equal(json_array_size(reqs), 24);
    int per[N_REPLICAS] = {0}, failed = 0;
    for (size_t i = 0; i < json_array_size(reqs); i++) {
        json_t *q = json_array_get(reqs, i);
        failed += !json_is_true(json_object_get(q, "ok"));
        const char *id = json_string_value(json_object_get(q, "instance"));
        for (int k = 0; k < N_REPLICAS; k++)
            per[k] += id && !strcmp(id, reps[k].id);
    }
    json_decref(o);
    printf("figures %-8s %-8s requests sent  24, failed %2d, retried by the balancer %2d (r1 %d, r2 %d, r3 %d)\n",
           service_lb_kind_name(lb.kind), "spread", failed, retried_since(at), per[0], per[1], per[2]);
    assert_int_equal(failed, 0);
    assert_int_equal(per[0] + per[1] + per[2], 24);
    for (int k = 0; k < N_REPLICAS; k++)
        if (per[k] < 2)
            fail_msg("replica %s answered %d of 24 requests: not spread", reps[k].id, per[k]);
}

/* SIGTERM to r2 while it streams: no request fails, the streams finish on
 * it, it exits 0, and it answers no request sent after the signal. */
static void scenario_drain(void)
{
    struct replica *r = &reps[1];
    struct load l;
    load_start(&l, 6, 1000, 192);
    if (!replica_busy(r, 10))
        fail_msg("replica %s got no request within 10 s", r->id);
    const double t_term = now_s();
    const int st = stop_proc(r->pid, SIGTERM, 25);
    const double t_gone = now_s();
    sleep_s(0.5); /* load without it */
    load_end(&l);
    struct figures f = figures_of(&l, "drain");
    printf("  %s drained in %.2f s, exit status %d\n", r->id, t_gone - t_term, st);
    if (f.failed)
        print_failures(&l);
    assert_int_equal(st, 0);
    assert_int_equal(f.failed, 0);
    int through = 0; /* streams on r2 across the signal */
    for (int i = 0; i < l.r.n_requests; i++) {
        const struct servebench_request *q = &l.r.requests[i];
        if (strcmp(q->instance, r->id))
            continue;
        through += q->start < t_term && q->end > t_term;
        if (q->start > t_term)
            fail_msg("%s answered a request sent %.3f s after its SIGTERM", r->id, q->start - t_term);
    }
    printf("  %d streams on %s were running at the signal and finished\n", through, r->id);
    assert_true(through >= 1);
    servebench_report_free(&l.r);
    replica_start(r);
}

/* r2 down, then started again under load: no request fails, and it
 * answers again once ready. */
static void scenario_restart(void)
{
    struct replica *r = &reps[1];
    int st = stop_proc(r->pid, SIGTERM, 25);
    assert_int_equal(st, 0);
    struct load l;
    load_start(&l, 6, 1000, 32);
    sleep_s(1.0); /* load on two replicas: requests to r2 are refused and retried */
    const double t_start = now_s();
    replica_start(r);
    /* until it has answered a request (at most 15 s), then a little more load */
    for (double t0 = now_s(); now_s() - t0 < 15 && metric(r->port, "plumb_generated_tokens_total") <= 0;)
        sleep_s(0.05);
    sleep_s(0.3);
    load_end(&l);
    struct figures f = figures_of(&l, "restart");
    if (f.failed)
        print_failures(&l);
    assert_int_equal(f.failed, 0);
    double first = 0;
    for (int i = 0; i < l.r.n_requests; i++) {
        const struct servebench_request *q = &l.r.requests[i];
        if (!strcmp(q->instance, r->id) && q->ok && (first == 0 || q->start < first))
            first = q->start;
    }
    if (first == 0)
        fail_msg("%s answered nothing within 15 s of being ready again", r->id);
    printf("  %s ready %.2f s after its start; the first request it answered was sent %.2f s after that\n", r->id,
           r->ready_at - t_start, first - r->ready_at);
    assert_true(answered_by(&l, r->id) >= 1);
    servebench_report_free(&l.r);
}

/* SIGKILL to r3 while it streams: the failures are exactly streams r3 was
 * serving at that moment, and every request sent afterwards succeeds. */
static void scenario_kill(void)
{
    struct replica *r = &reps[2];
    struct load l;
    load_start(&l, 6, 1000, 192);
    if (!replica_busy(r, 10))
        fail_msg("replica %s got no request within 10 s", r->id);
    const double t_kill = now_s();
    const long at_kill = log_size();
    stop_proc(r->pid, SIGKILL, 5);
    /* load after it: a dozen requests ended, however fast they go */
    for (double t0 = now_s(); now_s() - t0 < 20 && logged_since(at_kill) < 12;)
        sleep_s(0.1);
    load_end(&l);
    struct figures f = figures_of(&l, "kill");
    int in_flight = 0, after = 0;
    for (int i = 0; i < l.r.n_requests; i++) {
        const struct servebench_request *q = &l.r.requests[i];
        const bool on_it = !strcmp(q->instance, r->id) && q->status == 200 && q->start < t_kill && q->end >= t_kill;
        in_flight += on_it;
        after += q->start > t_kill;
        if (!q->ok && !on_it) {
            print_failures(&l);
            fail_msg("a request failed that %s was not streaming when killed: client %d request %d (%s, from '%s')",
                     r->id, q->client, q->index, q->error, q->instance);
        }
        if (q->start > t_kill && !q->ok)
            fail_msg("a request sent after the kill failed: %s", q->error);
    }
    print_failures(&l);
    printf("  %d streams were running on %s when it was killed (%d failed); %d requests sent afterwards, all "
           "answered\n", in_flight, r->id, f.failed, after);
    /* it was busy: its streams were cut, failing, or retried on another
     * replica by a balancer that had sent nothing of them yet (nginx does,
     * when the kill lands in a stream's prompt) */
    assert_true(f.failed + f.retried >= 1);
    assert_true(after >= 6);
    servebench_report_free(&l.r);
    replica_start(r);
}

/* With affinity on X-Session-Id: each session (a client repeating its
 * prompt) on one replica, and every request after its first reuses the
 * prompt that replica cached. As many sessions as a replica has slots, so
 * that no session's cached prompt is evicted by another's, whatever the
 * hash does. */
static void scenario_affinity(void)
{
    struct load l;
    memset(&l, 0, sizeof l);
    l.p = (struct servebench_params){.url = lb_url, .levels = {8}, .n_levels = 1, .prompt_tokens = 48,
                                     .gen_tokens = 8, .requests_per_client = 4, .vocab_lo = 100, .vocab_hi = 1000,
                                     .keep_requests = true, .seed = load_seed++, .session_header = "X-Session-Id",
                                     .repeat_prompt = true};
    l.log_at = log_size();
    pb_err err = {0};
    if (servebench_run(&l.p, &l.r, &err))
        fail_msg("the load did not run: %s", err.msg);
    struct figures f = figures_of(&l, "affinity");
    assert_int_equal(f.failed, 0);
    char where[8][72] = {{0}};
    int used[N_REPLICAS] = {0};
    for (int i = 0; i < l.r.n_requests; i++) {
        const struct servebench_request *q = &l.r.requests[i];
        assert_true(q->client < 8);
        if (!where[q->client][0])
            snprintf(where[q->client], sizeof where[0], "%s", q->instance);
        if (strcmp(where[q->client], q->instance))
            fail_msg("session %d went to %s and to %s", q->client, where[q->client], q->instance);
        if (q->index > 0 && q->cached_tokens <= 0)
            fail_msg("session %d request %d on %s reused no cached prefix", q->client, q->index, q->instance);
        for (int k = 0; k < N_REPLICAS; k++)
            used[k] += !strcmp(q->instance, reps[k].id);
    }
    printf("  8 sessions x 4 requests: each on one replica (r1 %d, r2 %d, r3 %d requests), every later request "
           "reused its cached prompt\n", used[0], used[1], used[2]);
    servebench_report_free(&l.r);
}

static void run_all(enum lb_kind kind)
{
    /* a scenario that failed may have left a replica down */
    for (int i = 0; i < N_REPLICAS; i++)
        if (reps[i].pid <= 0 || waitpid(reps[i].pid, NULL, WNOHANG) != 0 || kill(reps[i].pid, 0) != 0) {
            test_untrack_process(reps[i].pid);
            replica_start(&reps[i]);
        }
    lb.port = free_port();
    lb.stats_port = free_port();
    snprintf(lb_url, sizeof lb_url, "http://127.0.0.1:%d", lb.port);
    balancer_start(kind, NULL);
    scenario_spread();
    scenario_drain();
    scenario_restart();
    scenario_kill();
    balancer_stop();
    balancer_start(kind, "X-Session-Id");
    scenario_affinity();
    balancer_stop();
}

/* The "tiny" shape whole (4 layers, a 32000-token vocabulary): about a
 * thousand tokens a second on a shared core, so that a stream of a few
 * hundred tokens is still running when a replica is signalled. */
static const char *stream_model(void)
{
    static char path[PATHLEN];
    pathf(path, sizeof path, "%s/tiny-shape-q8_0.gguf", test_tmpdir());
    struct synth_params sp = {.seed = 42, .n_threads = 1, .ftype = PB_FTYPE_Q8_0};
    sp.shape = *synth_shape_find("tiny");
    pb_err err = {0};
    uint64_t bytes;
    if (synth_write(path, &sp, &bytes, &err))
        fail_msg("synth_write: %s", err.msg);
    return path;
}

static int setup_replicas(void **state)
{
    (void)state;
    model = stream_model();
    for (int i = 0; i < N_REPLICAS; i++) {
        struct replica *r = &reps[i];
        pathf(r->id, sizeof r->id, "r%d", i + 1);
        r->port = free_port();
        pathf(r->log, sizeof r->log, "%s/%s.log", test_tmpdir(), r->id);
        pathf(r->home, sizeof r->home, "%s/home-%s", test_tmpdir(), r->id);
        replica_start(r);
    }
    return 0;
}

static int teardown_replicas(void **state)
{
    (void)state;
    for (int i = 0; i < N_REPLICAS; i++)
        if (reps[i].pid > 0 && kill(reps[i].pid, 0) == 0)
            stop_proc(reps[i].pid, SIGTERM, 25);
    return 0;
}

static void test_haproxy(void **state)
{
    (void)state;
    run_all(LB_HAPROXY);
}

static void test_nginx(void **state)
{
    (void)state;
    run_all(LB_NGINX);
}

/* ---- the configurations, without processes ---- */

static char *render(enum lb_kind kind, const char *const *backends, int n, const char *listen,
                    enum lb_affinity aff, const char *header, pb_err *err)
{
    struct lb_params p = {.kind = kind, .n_backends = n, .listen = listen, .affinity = aff, .affinity_header = header};
    for (int i = 0; i < n; i++)
        p.backends[i] = backends[i];
    char *text = NULL;
    return service_lb(&p, &text, err) == PB_OK ? text : NULL;
}

/* Runs the balancer's own check on text; its output on failure. */
static void check_config(enum lb_kind kind, const char *text)
{
    static int count;
    char dir[DIRLEN], file[PATHLEN], cmd[4 * PATHLEN];
    pathf(dir, sizeof dir, "%s/check-%d", test_tmpdir(), ++count);
    mkdir(dir, 0755);
    if (kind == LB_HAPROXY) {
        pathf(file, sizeof file, "%s/haproxy.cfg", dir);
        assert_int_equal(test_write_file(file, text, strlen(text)), 0);
        pathf(cmd, sizeof cmd, "/usr/sbin/haproxy -c -q -f '%s' > '%s/out' 2>&1", file, dir);
    } else {
        pathf(file, sizeof file, "%s/plumb.conf", dir);
        assert_int_equal(test_write_file(file, text, strlen(text)), 0);
        char main_conf[PATHLEN], wrap[3 * PATHLEN];
        pathf(main_conf, sizeof main_conf, "%s/nginx.conf", dir);
        pathf(wrap, sizeof wrap, "pid %s/pid;\nevents {}\nhttp {\n    include %s;\n}\n", dir, file);
        assert_int_equal(test_write_file(main_conf, wrap, strlen(wrap)), 0);
        pathf(cmd, sizeof cmd, "/usr/sbin/nginx -t -q -p '%s' -c '%s' -e '%s/error.log' > '%s/out' 2>&1", dir,
                 main_conf, dir, dir);
    }
    if (system(cmd) != 0) {
        pathf(file, sizeof file, "%s/out", dir);
        char *out = test_read_file(file, NULL);
        fail_msg("%s refuses the configuration:\n%s\n%s", service_lb_kind_name(kind), out ? out : "", text);
    }
}

static void test_configs(void **state)
{
    (void)state;
    /* loopback replicas, IPv4 and IPv6 (the checks resolve names, so a name
     * is rendered below but not checked) */
    const char *be[] = {"http://127.0.0.1:18081", "http://[::1]:18082/"};
    const enum lb_affinity affs[] = {LB_AFFINITY_NONE, LB_AFFINITY_HEADER, LB_AFFINITY_API_KEY};
    const char *listens[] = {NULL, "0.0.0.0:8000", "[::1]:8000", "8000"};
    for (int k = 0; k < 2; k++)
        for (int a = 0; a < 3; a++)
            for (int li = 0; li < 4; li++) {
                pb_err err = {0};
                char *text = render((enum lb_kind)k, be, 2, listens[li], affs[a], a == 1 ? "X-Conversation" : NULL,
                                    &err);
                if (!text)
                    fail_msg("%s", err.msg);
                check_config((enum lb_kind)k, text);
                /* what matters, in the text */
                if (a == 0)
                    assert_non_null(strstr(text, k == LB_HAPROXY ? "balance leastconn" : "least_conn;"));
                if (a == 1)
                    assert_non_null(strstr(text, k == LB_HAPROXY ? "balance hdr(X-Conversation)"
                                                                 : "map $http_x_conversation $plumb_affinity"));
                if (a == 2)
                    assert_non_null(strstr(text, k == LB_HAPROXY ? "balance hdr(Authorization)"
                                                                 : "map $http_authorization $plumb_affinity"));
                if (k == LB_HAPROXY) {
                    assert_non_null(strstr(text, "server r2 [::1]:18082\n"));
                    assert_non_null(strstr(text, "http-check send meth GET uri /ready"));
                    assert_non_null(strstr(text, "retry-on conn-failure empty-response 503"));
                    assert_non_null(strstr(text, "option http-buffer-request"));
                    assert_non_null(strstr(text, "timeout server 600s"));
                } else {
                    assert_non_null(strstr(text, "server [::1]:18082 "));
                    assert_non_null(strstr(text, "proxy_buffering off;"));
                    assert_non_null(strstr(text, "proxy_next_upstream error timeout http_503 non_idempotent;"));
                    assert_non_null(strstr(text, "proxy_read_timeout 600s;"));
                }
                free(text);
            }
    for (int k = 0; k < 2; k++) {
        pb_err err = {0};
        const char *named[] = {"http://replica-3.example:8080"};
        char *text = render((enum lb_kind)k, named, 1, NULL, LB_AFFINITY_NONE, NULL, &err);
        assert_non_null(text);
        assert_non_null(strstr(text, k == LB_HAPROXY ? "server r1 replica-3.example:8080\n"
                                                     : "server replica-3.example:8080 "));
        free(text);
    }

    /* refused, each with a message naming the problem */
    static const struct {
        const char *backend, *listen, *header, *expect;
    } bad[] = {
        {"https://127.0.0.1:8080", NULL, NULL, "scheme"},
        {"127.0.0.1:8080", NULL, NULL, "not a URL"},
        {"http://127.0.0.1", NULL, NULL, "port"},
        {"http://127.0.0.1:0", NULL, NULL, "port 0"},
        {"http://127.0.0.1:65536", NULL, NULL, "port 65536"},
        {"http://127.0.0.1:80x", NULL, NULL, "port"},
        {"http://127.0.0.1:8080/v1", NULL, NULL, "not a path"},
        {"http://127.0.0.1:8080?x=1", NULL, NULL, "query"},
        {"http://user@127.0.0.1:8080", NULL, NULL, "user information"},
        {"http://bad_host:8080", NULL, NULL, "neither a host name"},
        {"http://-bad.example:8080", NULL, NULL, "neither a host name"},
        {"http://256.1.1.1:8080", NULL, NULL, "neither a host name"},
        {"http://[::1:8080", NULL, NULL, "']'"},
        {"http://[fe80::zz]:8080", NULL, NULL, "not an IPv6 address"},
        {"http://a.example:8080;\n", NULL, NULL, "control character"},
        {"http://a b:8080", NULL, NULL, "space"},
        {"http://127.0.0.1:8080", "127.0.0.1", NULL, "no port"},
        {"http://127.0.0.1:8080", "127.0.0.1:99999", NULL, "port"},
        {"http://127.0.0.1:8080", "x;y:80", NULL, "neither a host name"},
        {"http://127.0.0.1:8080", "", NULL, "empty"},
        {"http://127.0.0.1:8080", NULL, "X Session", "affinity header"},
        {"http://127.0.0.1:8080", NULL, "X_Session", "affinity header"},
        {"http://127.0.0.1:8080", NULL, "", "affinity header"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int k = 0; k < 2; k++) {
            pb_err err = {0};
            const char *b1[] = {bad[i].backend};
            char *text = render((enum lb_kind)k, b1, 1, bad[i].listen,
                                bad[i].header ? LB_AFFINITY_HEADER : LB_AFFINITY_NONE, bad[i].header, &err);
            if (text)
                fail_msg("accepted: backend '%s' listen '%s' header '%s':\n%s", bad[i].backend,
                         bad[i].listen ? bad[i].listen : "", bad[i].header ? bad[i].header : "", text);
            if (!strstr(err.msg, bad[i].expect))
                fail_msg("'%s' refused with '%s', expected a mention of '%s'", bad[i].backend, err.msg,
                         bad[i].expect);
        }
    /* twice the same replica; none; too many */
    pb_err err = {0};
    const char *twice[] = {"http://127.0.0.1:8080", "http://127.0.0.1:8080/"};
    assert_null(render(LB_HAPROXY, twice, 2, NULL, LB_AFFINITY_NONE, NULL, &err));
    assert_non_null(strstr(err.msg, "twice"));
    assert_null(render(LB_NGINX, twice, 0, NULL, LB_AFFINITY_NONE, NULL, &err));
    assert_non_null(strstr(err.msg, "no backend"));

    /* the command line: refusals and --print */
    char cmd[3 * PATHLEN], out[PATHLEN];
    pathf(out, sizeof out, "%s/cli.out", test_tmpdir());
    pathf(cmd, sizeof cmd, "%s service lb --kind envoy --backend http://127.0.0.1:1 > '%s' 2>&1", plumb_bin, out);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    pathf(cmd, sizeof cmd, "%s service lb --kind nginx --backend ftp://x:1 > '%s' 2>&1", plumb_bin, out);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    char *text = test_read_file(out, NULL);
    assert_non_null(strstr(text, "scheme"));
    free(text);
    char file[PATHLEN];
    pathf(file, sizeof file, "%s/exists.cfg", test_tmpdir());
    assert_int_equal(test_write_file(file, "x", 1), 0);
    pathf(cmd, sizeof cmd, "%s service lb --kind haproxy --backend http://127.0.0.1:1 -o '%s' > '%s' 2>&1",
             plumb_bin, file, out);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1); /* exists: --force */
    text = test_read_file(file, NULL);
    assert_string_equal(text, "x");
    free(text);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH_TO_PLUMB\n", argv[0]);
        return 1;
    }
    plumb_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    /* the balancers come from the Debian packages scripts/install-deps.sh installs */
    struct stat st;
    if (stat("/usr/sbin/haproxy", &st) != 0 || stat("/usr/sbin/nginx", &st) != 0) {
        fprintf(stderr, "test_scale: /usr/sbin/haproxy and /usr/sbin/nginx are needed (scripts/install-deps.sh "
                        "installs them: make deps)\n");
        return 1;
    }
    const struct CMUnitTest configs[] = {cmocka_unit_test(test_configs)};
    const struct CMUnitTest live_tests[] = {cmocka_unit_test(test_haproxy), cmocka_unit_test(test_nginx)};
    int failed = cmocka_run_group_tests_name("configurations", configs, NULL, NULL);
    failed += cmocka_run_group_tests_name("replicas behind balancers", live_tests, setup_replicas, teardown_replicas);
    return failed ? 1 : 0;
}
