/* The server's front door (gate.h). */
#define _GNU_SOURCE
#include "server/gate.h"
#include "base/err.h"
#include "base/http.h"
#include "base/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* A new connection over max_per_client closes the oldest waiting one of
 * its address only when that one has waited this long: a burst of honest
 * connections (a benchmark opening 64 at once) is not cut short. */
#define GATE_GRACE_S 1.0
/* A connection whose bytes did not grow when poll() said readable (no
 * SO_RCVLOWAT) is looked at again after this long. */
#define GATE_QUIET_S 0.05

struct waiting {
    int fd;                        /* -1: gone, removed at the end of the pass */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    unsigned char who[16];         /* the client's address (IPv4 as v4-mapped IPv6) */
    double t0;                     /* accepted */
    double quiet_until;            /* not polled before this */
    size_t seen;                   /* head bytes seen so far */
};

struct gate {
    struct gate_params p;
    int lfd;
    int wake[2];                   /* a byte: look at stop / stop_listening */
    pthread_t thread;
    bool started;
    atomic_bool stop, stop_listening;
    pthread_mutex_t mu;            /* the stats */
    struct waiting *w;
    int n_w;
    struct pollfd *pfd;
    int *pfd_of;                   /* pfd index -> waiting index */
    char *buf;                     /* max_head + 1 */
    int n_waiting;
    uint64_t dropped[GATE_DROP_N];
};

const char *gate_drop_name(enum gate_drop d)
{
    static const char *const names[GATE_DROP_N] = {"header_timeout", "per_client", "full", "bad_head"};
    return (unsigned)d < GATE_DROP_N ? names[d] : "?";
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

void gate_reply(int fd, int status, const char *code, const char *message)
{
    char body[512], msg[400], head[512];
    size_t o = 0;
    /* the message is ours, but keep JSON valid whatever it holds */
    for (const char *p = message; *p && o < sizeof msg - 2; p++)
        if ((unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
            msg[o++] = *p;
    msg[o] = 0;
    int bl = snprintf(body, sizeof body,
                      "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":%s%s%s}}",
                      msg, code ? "\"" : "", code ? code : "null", code ? "\"" : "");
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n",
                      status, reason_phrase(status), bl, status == 503 || status == 429 ? "Retry-After: 1\r\n" : "");
    /* what the client sent is read first: closing with unread bytes would
     * send a reset that can destroy the answer on its way */
    char sink[4096];
    for (int i = 0; i < 64 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
    struct iovec iov[2] = {{head, (size_t)hl}, {body, (size_t)bl}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    (void)sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
}

static void count_drop(struct gate *g, enum gate_drop d)
{
    pthread_mutex_lock(&g->mu);
    g->dropped[d]++;
    pthread_mutex_unlock(&g->mu);
}

/* Answers and closes waiting connection i (removed at the end of the pass). */
static void drop(struct gate *g, int i, enum gate_drop d, int status, const char *code, const char *msg)
{
    if (status)
        gate_reply(g->w[i].fd, status, code, msg);
    close(g->w[i].fd);
    g->w[i].fd = -1;
    count_drop(g, d);
}

static void set_lowat(int fd, size_t n)
{
    int v = n > (size_t)1 << 30 ? 1 << 30 : (int)n;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
}

/* Checks the framing of a whole head: 0 (and its Content-Length in
 * *body_len), or the status to answer with (and its message). */
static int check_head(const char *head, size_t len, uint64_t max_body, uint64_t *body_len, const char **msg)
{
    int n_cl = 0;
    bool te = false;
    uint64_t cl = 0;
    bool cl_big = false;
    const char *p = memchr(head, '\n', len); /* the request line is libmicrohttpd's to judge */
    while (p && (size_t)(p + 1 - head) < len) {
        const char *line = p + 1, *nl = memchr(line, '\n', len - (size_t)(line - head));
        size_t ll = nl ? (size_t)(nl - line) : len - (size_t)(line - head);
        size_t vl;
        const char *v;
        if ((v = http_field_value(line, ll, "Content-Length", &vl))) {
            n_cl++;
            if (vl == 0) {
                *msg = "Content-Length is empty";
                return 400;
            }
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9') {
                    *msg = "Content-Length must be a decimal number of bytes";
                    return 400;
                }
                if (cl > (UINT64_MAX - 9) / 10)
                    cl_big = true;
                else
                    cl = cl * 10 + (uint64_t)(v[i] - '0');
            }
        } else if (http_field_value(line, ll, "Transfer-Encoding", &vl)) {
            te = true;
        }
        p = nl;
    }
    if (n_cl > 1) {
        *msg = "more than one Content-Length";
        return 400;
    }
    if (n_cl && te) {
        *msg = "both Content-Length and Transfer-Encoding";
        return 400;
    }
    if (cl_big || cl > max_body) {
        *msg = "the request body is larger than the server accepts";
        return 413;
    }
    *body_len = cl;
    return 0;
}

/* The end of the head in buf[0..n) (the byte after its blank line), or 0. */
static size_t head_end(const char *buf, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

enum gate_head gate_head_check(const char *buf, size_t n, size_t max_head, uint64_t max_body, struct gate_verdict *v)
{
    *v = (struct gate_verdict){.message = ""};
    if (n > max_head && n - max_head > 1) /* what the gate peeks at */
        n = max_head + 1;
    /* libmicrohttpd skips empty lines before the request line: the head it
     * reads starts after them, and so must the one judged here (else
     * "\r\n\r\n" passed as a whole head, and the head that followed it
     * reached libmicrohttpd unchecked, with no deadline of the gate's) */
    size_t start = 0;
    while (start < n && (buf[start] == '\r' || buf[start] == '\n'))
        start++;
    const size_t end = start < n ? head_end(buf + start, n - start) : 0;
    if (!end) {
        if (n <= max_head)
            return GATE_HEAD_INCOMPLETE;
        v->status = 431;
        v->message = "the request's headers are too long";
        return GATE_HEAD_REFUSED;
    }
    uint64_t body_len = 0;
    const int status = check_head(buf + start, end, max_body, &body_len, &v->message);
    if (status) {
        v->status = status;
        v->code = status == 413 ? "request_too_large" : NULL;
        return GATE_HEAD_REFUSED;
    }
    v->head_len = start + end;
    v->body_len = body_len;
    return GATE_HEAD_OK;
}

/* Looks at what connection i has sent: nothing new, a whole head (handed
 * over or refused), or the end of the connection. */
static void examine(struct gate *g, int i, double now)
{
    struct waiting *w = &g->w[i];
    ssize_t n = recv(w->fd, g->buf, g->p.max_head + 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) { /* closed or broken before a head: nobody to answer */
        close(w->fd);
        w->fd = -1;
        return;
    }
    struct gate_verdict v;
    switch (gate_head_check(g->buf, (size_t)n, g->p.max_head, g->p.max_body, &v)) {
    case GATE_HEAD_INCOMPLETE:
        if ((size_t)n == w->seen)
            w->quiet_until = now + GATE_QUIET_S;
        w->seen = (size_t)n;
        set_lowat(w->fd, (size_t)n + 1); /* poll() again when more has come */
        return;
    case GATE_HEAD_REFUSED:
        drop(g, i, GATE_DROP_BAD_HEAD, v.status, v.code, v.message);
        return;
    case GATE_HEAD_OK:
        break;
    }
    set_lowat(w->fd, 1);
    int fd = w->fd;
    w->fd = -1;
    g->p.admit(g->p.user, fd, (const struct sockaddr *)&w->addr, w->addr_len);
}

static void client_of(const struct sockaddr_storage *a, unsigned char who[16])
{
    memset(who, 0, 16);
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        who[10] = who[11] = 0xff;
        memcpy(who + 12, &v4->sin_addr, 4);
    } else if (a->ss_family == AF_INET6) {
        memcpy(who, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    }
}

static int oldest(const struct gate *g, const unsigned char *who)
{
    int best = -1;
    for (int i = 0; i < g->n_w; i++)
        if (g->w[i].fd >= 0 && (!who || !memcmp(g->w[i].who, who, 16)) && (best < 0 || g->w[i].t0 < g->w[best].t0))
            best = i;
    return best;
}

/* Takes the connections waiting in the listening socket's backlog. */
static void accept_new(struct gate *g, double now)
{
    for (int k = 0; k < 256; k++) {
        struct waiting nw = {.fd = -1, .addr_len = sizeof nw.addr, .t0 = now};
        nw.fd = accept4(g->lfd, (struct sockaddr *)&nw.addr, &nw.addr_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nw.fd < 0) {
            int i;
            if ((errno == EMFILE || errno == ENFILE) && (i = oldest(g, NULL)) >= 0) {
                drop(g, i, GATE_DROP_FULL, 503, NULL, "the server has too many connections open: try again");
                continue;
            }
            return; /* EAGAIN, or nothing to free: the backlog waits */
        }
        client_of(&nw.addr, nw.who);
        if (g->p.max_per_client > 0) {
            int mine = 0, first = -1;
            for (int i = 0; i < g->n_w; i++)
                if (g->w[i].fd >= 0 && !memcmp(g->w[i].who, nw.who, 16)) {
                    mine++;
                    if (first < 0 || g->w[i].t0 < g->w[first].t0)
                        first = i;
                }
            if (mine >= g->p.max_per_client) {
                if (now - g->w[first].t0 < GATE_GRACE_S) {
                    gate_reply(nw.fd, 429, NULL, "too many connections from this address are waiting to send "
                                                 "their request");
                    close(nw.fd);
                    count_drop(g, GATE_DROP_PER_CLIENT);
                    continue;
                }
                drop(g, first, GATE_DROP_PER_CLIENT, 408, NULL, "the request did not come in time");
            }
        }
        int live = 0;
        for (int i = 0; i < g->n_w; i++)
            live += g->w[i].fd >= 0;
        if (live >= g->p.max_waiting)
            drop(g, oldest(g, NULL), GATE_DROP_FULL, 503, NULL, "the server has too many connections open: try again");
        if (g->n_w == g->p.max_waiting + 1) { /* compact: room for the new one */
            int o = 0;
            for (int i = 0; i < g->n_w; i++)
                if (g->w[i].fd >= 0)
                    g->w[o++] = g->w[i];
            g->n_w = o;
        }
        g->w[g->n_w++] = nw;
        examine(g, g->n_w - 1, now); /* the head is often there already */
    }
}

static void *gate_main(void *arg)
{
    struct gate *g = arg;
    while (!atomic_load(&g->stop)) {
        const double now0 = sys_now();
        int np = 0;
        g->pfd[np++] = (struct pollfd){.fd = g->wake[0], .events = POLLIN};
        const int lslot = g->lfd >= 0 ? np : -1;
        if (g->lfd >= 0)
            g->pfd[np++] = (struct pollfd){.fd = g->lfd, .events = POLLIN};
        double next = now0 + 1.0;
        for (int i = 0; i < g->n_w; i++) {
            const struct waiting *w = &g->w[i];
            const double deadline = w->t0 + g->p.header_timeout_s;
            if (deadline < next)
                next = deadline;
            if (w->quiet_until > now0) {
                if (w->quiet_until < next)
                    next = w->quiet_until;
                continue;
            }
            g->pfd_of[np] = i;
            g->pfd[np++] = (struct pollfd){.fd = w->fd, .events = POLLIN | POLLRDHUP};
        }
        int ms = (int)((next - now0) * 1000) + 1;
        int r = poll(g->pfd, (nfds_t)np, ms < 1 ? 1 : ms);
        if (r < 0 && errno != EINTR)
            break;
        const double now = sys_now();
        if (r > 0 && (g->pfd[0].revents & POLLIN)) {
            char b[64];
            while (read(g->wake[0], b, sizeof b) > 0)
                ;
        }
        if (atomic_load(&g->stop_listening) && g->lfd >= 0) {
            close(g->lfd);
            g->lfd = -1;
        }
        for (int k = lslot + 1 > 1 ? lslot + 1 : 1; r > 0 && k < np; k++)
            if (g->pfd[k].revents)
                examine(g, g->pfd_of[k], now);
        for (int i = 0; i < g->n_w; i++)
            if (g->w[i].fd >= 0 && now - g->w[i].t0 >= g->p.header_timeout_s)
                drop(g, i, GATE_DROP_HEADER_TIMEOUT, 408, NULL, "the request did not come in time");
        int o = 0;
        for (int i = 0; i < g->n_w; i++)
            if (g->w[i].fd >= 0)
                g->w[o++] = g->w[i];
        g->n_w = o;
        if (lslot >= 0 && g->lfd >= 0 && r > 0 && (g->pfd[lslot].revents & POLLIN))
            accept_new(g, now);
        pthread_mutex_lock(&g->mu);
        g->n_waiting = 0;
        for (int i = 0; i < g->n_w; i++)
            g->n_waiting += g->w[i].fd >= 0;
        pthread_mutex_unlock(&g->mu);
    }
    return NULL;
}

int gate_start(const struct gate_params *p, struct gate **out, pb_err *err)
{
    *out = NULL;
    if (p->max_waiting < 1 || p->max_head < 64 || !(p->header_timeout_s > 0) || !p->admit)
        return pb_fail(err, PB_EINVAL, "gate: bad parameters");
    struct gate *g = calloc(1, sizeof *g);
    if (!g)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    g->p = *p;
    g->lfd = p->listen_fd;
    g->wake[0] = g->wake[1] = -1;
    pthread_mutex_init(&g->mu, NULL);
    /* one spare entry: a new connection is added before the pass compacts */
    g->w = calloc((size_t)p->max_waiting + 2, sizeof *g->w);
    g->pfd = calloc((size_t)p->max_waiting + 4, sizeof *g->pfd);
    g->pfd_of = calloc((size_t)p->max_waiting + 4, sizeof *g->pfd_of);
    g->buf = malloc(p->max_head + 1);
    int rc = PB_OK;
    if (!g->w || !g->pfd || !g->pfd_of || !g->buf)
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
    else if (pipe2(g->wake, O_NONBLOCK | O_CLOEXEC) != 0)
        rc = pb_fail(err, PB_EIO, "pipe: %s", strerror(errno));
    else if (pthread_create(&g->thread, NULL, gate_main, g) != 0)
        rc = pb_fail(err, PB_EIO, "cannot start the connection thread");
    if (rc) {
        g->lfd = -1; /* the caller still owns it */
        gate_free(g);
        return rc;
    }
    g->started = true;
    *out = g;
    return PB_OK;
}

static void wake(struct gate *g)
{
    if (write(g->wake[1], "x", 1) < 0) {
        /* full: the thread has a wake-up pending anyway */
    }
}

void gate_stop_listening(struct gate *g)
{
    if (!g)
        return;
    atomic_store(&g->stop_listening, true);
    wake(g);
}

void gate_free(struct gate *g)
{
    if (!g)
        return;
    atomic_store(&g->stop, true);
    if (g->started) {
        wake(g);
        pthread_join(g->thread, NULL);
    }
    for (int i = 0; i < g->n_w; i++)
        if (g->w[i].fd >= 0)
            close(g->w[i].fd);
    if (g->lfd >= 0)
        close(g->lfd);
    for (int k = 0; k < 2; k++)
        if (g->wake[k] >= 0)
            close(g->wake[k]);
    pthread_mutex_destroy(&g->mu);
    free(g->w);
    free(g->pfd);
    free(g->pfd_of);
    free(g->buf);
    free(g);
}

void gate_get_stats(struct gate *g, struct gate_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    st->waiting = g->n_waiting;
    memcpy(st->dropped, g->dropped, sizeof st->dropped);
    pthread_mutex_unlock(&g->mu);
}
