/* plumb as a service. Three ways, one module (src/tools):
 *
 * - systemd: the unit file that runs
 * `plumb serve --config FILE`, restarts it on failure, logs to journald
 * and confines it (no new privileges, a read-only system, no home
 * directories, a private /tmp; writable only where the store and the
 * service's state live);
 * - several replicas of plumb serve behind a load balancer (HAProxy or
 *   nginx): the balancer's configuration (service_lb);
 * - Kubernetes: the manifests of a StatefulSet of replicas with its
 *   configuration, keys, store, probes and drain (service_k8s).
 */
#ifndef PLUMB_SERVICE_H
#define PLUMB_SERVICE_H

#include "plumb/base.h"

#include <stddef.h>

struct service_params {
    const char *binary;      /* absolute path of plumb */
    const char *config;      /* absolute path of the configuration file */
    const char *user;        /* NULL: root (no User=) */
    const char *store;       /* the store folder (PLUMB_HOME), writable */
    const char *state_dir;   /* more writable state (pid file, ...), or NULL */
    double drain_timeout_s;  /* how long a stop may take beyond that: TimeoutStopSec */
};

/* What the unit's sandbox does to path: "ProtectHome" when it is under
 * /home, /root or /run/user, "PrivateTmp" under /tmp or /var/tmp (the
 * service sees neither: an empty /home, a /tmp of its own), NULL when the
 * service sees it. */
const char *service_hidden(const char *path);

/* The unit's text into buf (size bytes); fails when a path is not
 * absolute or holds characters a unit file cannot carry. */
int service_unit(const struct service_params *p, char *buf, size_t size, pb_err *err);

/* ---- load balancer ----
 * A configuration for a balancer in front of several plumb serve replicas:
 * least connections (or consistent hashing of a header, so that one
 * conversation stays on one replica and finds its prefix in that
 * replica's cache), no buffering of server-sent events, read timeouts as
 * long as a request may run, and a retry on another replica when one
 * refuses the connection, closes it without answering or answers 503
 * (busy or draining), which happens before any byte went to the client.
 * HAProxy checks /ready actively; nginx (open source) only notices a
 * replica that failed a real request and skips it for check_s seconds. */

enum lb_kind { LB_HAPROXY, LB_NGINX };
enum lb_affinity {
    LB_AFFINITY_NONE,    /* least connections */
    LB_AFFINITY_HEADER,  /* consistent hash of a header (without it: spread as usual) */
    LB_AFFINITY_API_KEY, /* consistent hash of the Authorization header */
};

#define LB_MAX_BACKENDS 64
#define LB_DEFAULT_LISTEN "127.0.0.1:8000"
#define LB_DEFAULT_AFFINITY_HEADER "X-Session-Id"
#define LB_DEFAULT_CHECK_S 1.0

struct lb_params {
    enum lb_kind kind;
    const char *backends[LB_MAX_BACKENDS]; /* http://HOST:PORT of each replica */
    int n_backends;
    const char *listen;          /* where the balancer listens: HOST:PORT, [V6]:PORT or PORT; NULL: the default */
    enum lb_affinity affinity;
    const char *affinity_header; /* LB_AFFINITY_HEADER's header; NULL: the default */
    double timeout_s;            /* longest a request may run (plumb's timeout); 0: plumb's default */
    size_t max_body;             /* largest request body (plumb's max_body); 0: plumb's default */
    double check_s;              /* HAProxy: /ready every check_s; nginx: a failed replica rests check_s; 0: default */
};

/* The names: "haproxy", "nginx". */
const char *service_lb_kind_name(enum lb_kind k);
bool service_lb_kind_parse(const char *name, enum lb_kind *out);

/* The configuration's text into *out (malloc'd): for HAProxy a whole
 * haproxy.cfg, for nginx a file of the http context (conf.d/). Refuses
 * backends that are not http://HOST:PORT (or are given twice), a bad
 * listen address, a header name beyond letters, digits and '-', and
 * values out of range, each with a message naming it. */
int service_lb(const struct lb_params *p, char **out, pb_err *err);

#endif
