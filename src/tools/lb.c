/* A load balancer's configuration for plumb serve replicas (service.h):
 * HAProxy (a whole haproxy.cfg) or nginx (a file of the http context).
 *
 * What both do, and why:
 * - least connections: a replica's cost is the answers it is generating,
 *   which a count of open connections follows (every request is one
 *   connection: plumb closes each after its response);
 * - with affinity, consistent hashing of a header instead, so that the
 *   requests of one conversation reach the replica that holds its prefix
 *   in its KV cache, and only 1/N of the sessions move when a replica
 *   comes or goes; requests without the header are spread as usual;
 * - a retry on another replica when one refuses the connection, closes it
 *   without a response (killed, or its listening socket closed by a drain)
 *   or answers 503 (every slot and the queue full, or draining): none of
 *   these has sent a byte to the client. A stream cut after its first
 *   bytes is never retried (the client has part of an answer);
 * - no buffering of responses (server-sent events reach the client token
 *   by token) and read timeouts as long as a request may run.
 */
#include "plumb/service.h"

#include "base/err.h"
#include "base/sbuf.h"
#include "plumb/server.h"
#include "tools/url.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *service_lb_kind_name(enum lb_kind k) { return k == LB_NGINX ? "nginx" : "haproxy"; }

bool service_lb_kind_parse(const char *name, enum lb_kind *out)
{
    if (!strcmp(name, "haproxy"))
        return *out = LB_HAPROXY, true;
    if (!strcmp(name, "nginx"))
        return *out = LB_NGINX, true;
    return false;
}

/* A header name both balancers can hash: letters, digits and '-' (nginx
 * reads it as $http_NAME, lowercase with '_' for '-'). */
static bool header_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 64 || h[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '-')
            return false;
    return true;
}

struct lb {
    const struct lb_params *p;
    struct url be[LB_MAX_BACKENDS];
    struct url listen;
    const char *header;
    double timeout_s, check_s;
    size_t max_body;
    int tries; /* replicas tried per request, the first included */
};

static int check(const struct lb_params *p, struct lb *b, pb_err *err)
{
    memset(b, 0, sizeof *b);
    b->p = p;
    if (p->kind != LB_HAPROXY && p->kind != LB_NGINX)
        return pb_fail(err, PB_EINVAL, "unknown balancer kind %d", (int)p->kind);
    if (p->n_backends < 1)
        return pb_fail(err, PB_EINVAL, "no backend: give each replica as http://HOST:PORT");
    if (p->n_backends > LB_MAX_BACKENDS)
        return pb_fail(err, PB_ERANGE, "%d backends: at most %d", p->n_backends, LB_MAX_BACKENDS);
    int rc;
    for (int i = 0; i < p->n_backends; i++) {
        struct url *u = &b->be[i];
        if ((rc = url_parse(p->backends[i], "backend", "http", u, err)))
            return rc;
        if (!u->port_given)
            return pb_fail(err, PB_EINVAL, "backend '%s': give the replica's port (http://HOST:PORT)", p->backends[i]);
        if (u->path[0] && strcmp(u->path, "/"))
            return pb_fail(err, PB_EINVAL, "backend '%s': a replica is a server, not a path: http://HOST:PORT",
                           p->backends[i]);
        for (int k = 0; k < i; k++)
            if (!strcasecmp(b->be[k].host, u->host) && b->be[k].port == u->port)
                return pb_fail(err, PB_EINVAL, "backend '%s' is given twice", p->backends[i]);
    }
    const char *listen = p->listen ? p->listen : LB_DEFAULT_LISTEN;
    if ((rc = url_parse_listen(listen, "listen address", &b->listen, err)))
        return rc;
    b->header = p->affinity == LB_AFFINITY_API_KEY ? "Authorization"
                : p->affinity_header                ? p->affinity_header
                                                    : LB_DEFAULT_AFFINITY_HEADER;
    if (p->affinity != LB_AFFINITY_NONE && p->affinity != LB_AFFINITY_HEADER && p->affinity != LB_AFFINITY_API_KEY)
        return pb_fail(err, PB_EINVAL, "unknown affinity %d", (int)p->affinity);
    if (p->affinity == LB_AFFINITY_HEADER && !header_ok(b->header))
        return pb_fail(err, PB_EINVAL, "affinity header '%s': 1-64 letters, digits and '-'", b->header);
    b->timeout_s = p->timeout_s > 0 ? p->timeout_s : SERVER_DEFAULT_TIMEOUT_S;
    b->check_s = p->check_s > 0 ? p->check_s : LB_DEFAULT_CHECK_S;
    b->max_body = p->max_body ? p->max_body : SERVER_DEFAULT_MAX_BODY;
    if (!(b->timeout_s >= 1 && b->timeout_s <= 1e6))
        return pb_fail(err, PB_EINVAL, "timeout %g s: 1 to 1000000", p->timeout_s);
    if (!(b->check_s >= 0.1 && b->check_s <= 3600))
        return pb_fail(err, PB_EINVAL, "check interval %g s: 0.1 to 3600", p->check_s);
    if (b->max_body < 1024 || b->max_body > (1ull << 32))
        return pb_fail(err, PB_EINVAL, "max body %zu bytes: 1 KiB to 4 GiB", b->max_body);
    b->tries = p->n_backends < 4 ? p->n_backends : 4;
    return PB_OK;
}

/* Milliseconds, as both balancers take them. */
static long long ms(double s) { return (long long)(s * 1000 + 0.5); }

static int haproxy(const struct lb *b, struct sbuf *o)
{
    const struct lb_params *p = b->p;
    char host[300];
    int rc = 0;
    rc |= sbuf_addf(o,
                    "# plumb serve replicas behind HAProxy (written by plumb service lb; HAProxy 2.6+)\n"
                    "# Check it with: haproxy -c -f FILE. Replicas behind it: set max_connections_per_client = 0\n"
                    "# in their configuration (every connection comes from this balancer's address).\n"
                    "global\n"
                    "    maxconn 4096\n"
                    "    log stdout format raw local0 info\n"
                    "    # a request is retried (retry-on below) only when it fits in one buffer:\n"
                    "    # bodies up to 64 KiB (larger prompts are sent once, not retried)\n"
                    "    tune.bufsize 65536\n"
                    "\n"
                    "defaults\n"
                    "    mode http\n"
                    "    log global\n"
                    "    option httplog\n"
                    "    option dontlognull\n"
                    "    timeout connect 2s\n"
                    "    # streams: as long as a request may run on a replica\n"
                    "    timeout client %llds\n"
                    "    timeout server %llds\n"
                    "    timeout http-request 10s\n"
                    "    timeout queue 30s\n"
                    "    timeout check 2s\n"
                    "    # another replica when one refuses, closes without answering or answers 503\n"
                    "    # (busy or draining): nothing has reached the client then. A request is\n"
                    "    # retried only when it was whole in the buffer: wait for the body first\n"
                    "    retries %d\n"
                    "    retry-on conn-failure empty-response 503\n"
                    "    option redispatch 1\n"
                    "    option http-buffer-request\n"
                    "\n"
                    "frontend plumb\n"
                    "    bind %s:%d\n"
                    "    default_backend plumb_replicas\n"
                    "\n"
                    "backend plumb_replicas\n",
                    (long long)(b->timeout_s + 0.999), (long long)(b->timeout_s + 0.999), b->tries - 1,
                    b->listen.host[0] ? url_host_bracketed(&b->listen, host, sizeof host) : "", b->listen.port);
    if (p->affinity == LB_AFFINITY_NONE)
        rc |= sbuf_addf(o, "    balance leastconn\n");
    else
        rc |= sbuf_addf(o,
                        "    # one session (the %s header) stays on one replica and reuses its cached\n"
                        "    # prefix; without the header, round robin\n"
                        "    balance hdr(%s)\n"
                        "    hash-type consistent\n",
                        b->header, b->header);
    rc |= sbuf_addf(o,
                    "    # ready: loaded and not draining (a drained replica answers 503); a replica\n"
                    "    # that refuses connections (stopped, killed) is out at once, not at its next check\n"
                    "    option httpchk\n"
                    "    http-check send meth GET uri /ready ver HTTP/1.1 hdr Host plumb\n"
                    "    http-check expect status 200\n"
                    "    default-server check inter %lldms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down\n",
                    ms(b->check_s));
    for (int i = 0; i < p->n_backends; i++)
        rc |= sbuf_addf(o, "    server r%d %s:%d\n", i + 1, url_host_bracketed(&b->be[i], host, sizeof host),
                        b->be[i].port);
    return rc ? PB_ENOMEM : PB_OK;
}

static int nginx(const struct lb *b, struct sbuf *o)
{
    const struct lb_params *p = b->p;
    char host[300], var[80];
    int rc = 0;
    rc |= sbuf_addf(o, "# plumb serve replicas behind nginx (written by plumb service lb; for the http context,\n"
                       "# e.g. /etc/nginx/conf.d/plumb.conf). Check it with: nginx -t. Replicas behind it: set\n"
                       "# max_connections_per_client = 0 (every connection comes from this balancer's address).\n"
                       "#\n"
                       "# nginx (open source) has no active health checks: a replica that refuses a request,\n"
                       "# closes it without answering or answers 503 is skipped for %llds (fail_timeout), and\n"
                       "# the request goes to another one. When every replica is so marked, nginx itself\n"
                       "# answers 502 until one is tried again.\n",
                    (long long)(b->check_s + 0.999));
    if (p->affinity != LB_AFFINITY_NONE) {
        /* $http_x_session_id: lowercase, '_' for '-' */
        size_t n = 0;
        for (const char *c = b->header; *c && n < sizeof var - 1; c++)
            var[n++] = *c == '-' ? '_' : (char)tolower((unsigned char)*c);
        var[n] = '\0';
        rc |= sbuf_addf(o,
                        "\n# one session (the %s header) stays on one replica and reuses its cached\n"
                        "# prefix; without the header a request hashes on its own id (spread)\n"
                        "map $http_%s $plumb_affinity {\n"
                        "    \"\"      $request_id;\n"
                        "    default $http_%s;\n"
                        "}\n",
                        b->header, var, var);
    }
    rc |= sbuf_addf(o, "\nupstream plumb_replicas {\n");
    rc |= sbuf_addf(o, p->affinity == LB_AFFINITY_NONE ? "    least_conn;\n" : "    hash $plumb_affinity consistent;\n");
    for (int i = 0; i < p->n_backends; i++)
        rc |= sbuf_addf(o, "    server %s:%d max_fails=1 fail_timeout=%llds;\n",
                        url_host_bracketed(&b->be[i], host, sizeof host), b->be[i].port,
                        (long long)(b->check_s + 0.999));
    rc |= sbuf_addf(o,
                    "}\n"
                    "\n"
                    "server {\n"
                    "    listen %s%s%d;\n"
                    "    client_max_body_size %zu;\n"
                    "    client_body_buffer_size %zu;\n"
                    "\n"
                    "    location / {\n"
                    "        proxy_pass http://plumb_replicas;\n"
                    "        proxy_http_version 1.1;\n"
                    "        proxy_set_header Host $host;\n"
                    "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                    "        # server-sent events go to the client as they come\n"
                    "        proxy_buffering off;\n"
                    "        proxy_cache off;\n"
                    "        proxy_connect_timeout 2s;\n"
                    "        proxy_read_timeout %llds;\n"
                    "        proxy_send_timeout %llds;\n"
                    "        # another replica when one refuses, closes without answering or answers 503\n"
                    "        # (busy or draining): nothing has reached the client then. POST is retried\n"
                    "        # too (non_idempotent): a completion has no effect beyond its answer.\n"
                    "        proxy_next_upstream error timeout http_503 non_idempotent;\n"
                    "        proxy_next_upstream_tries %d;\n"
                    "    }\n"
                    "}\n",
                    b->listen.host[0] ? url_host_bracketed(&b->listen, host, sizeof host) : "",
                    b->listen.host[0] ? ":" : "", b->listen.port, b->max_body,
                    b->max_body < (1u << 20) ? b->max_body : (size_t)(1u << 20), (long long)(b->timeout_s + 0.999),
                    (long long)(b->timeout_s + 0.999), b->tries);
    return rc ? PB_ENOMEM : PB_OK;
}

int service_lb(const struct lb_params *p, char **out, pb_err *err)
{
    *out = NULL;
    struct lb b;
    int rc = check(p, &b, err);
    if (rc)
        return rc;
    struct sbuf o = {0};
    rc = p->kind == LB_HAPROXY ? haproxy(&b, &o) : nginx(&b, &o);
    if (rc) {
        sbuf_free(&o);
        return pb_fail(err, rc, "out of memory");
    }
    *out = o.data;
    return PB_OK;
}
