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

#include <jansson.h>
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

/* ---- Kubernetes ----
 * The manifests of plumb serve replicas on a cluster, in this order:
 * - a ConfigMap holding the configuration as the pods read it (listening
 *   on every address, the store on its volume, the keys from the Secret,
 *   threads = the CPUs requested);
 * - a Secret with the API keys (or a reference to an existing one);
 * - a Service (ClusterIP) on the configured port;
 * - a StatefulSet: each replica keeps its own store on a
 *   PersistentVolumeClaim (volumeClaimTemplates), filled by init containers
 *   running `plumb pull MIRROR/blobs/sha256-HEX --sha256 HEX --name NAME
 *   --if-absent` for each model, so a restart downloads nothing. (Not a
 *   Deployment: replicas of a Deployment share one claim, which would need
 *   ReadWriteMany storage, and the store's SQLite registry, written by
 *   every replica's usage accounting, must not be shared over a network
 *   file system.) Readiness on /ready, liveness on /health (a startup probe
 *   covers the model's loading), a preStop pause so that the endpoints
 *   stop sending before SIGTERM starts plumb's drain, and
 *   terminationGracePeriodSeconds = pause + drain_timeout + 5. Requests:
 *   the CPUs (threads) and memory from plumb's own estimate (the sum of
 *   engine_estimate over the models, as plumb serve checks it, at most the
 *   configuration's memory_limit), which the pods' configuration takes as
 *   its memory_limit (models loaded on demand stay within it); the memory
 *   limit 20 % above (the estimate holds within 10 % of the peak). Runs as
 *   user 10001 without privileges on a read-only root file system, with
 *   Prometheus scrape annotations and a checksum of the configuration that
 *   rolls the pods when it changes;
 * - a PodDisruptionBudget (one replica down at a time);
 * - optionally a HorizontalPodAutoscaler on CPU use.
 */

#define K8S_DEFAULT_IMAGE "localhost/plumb:" PLUMB_VERSION /* what make image builds */
#define K8S_DEFAULT_NAME "plumb"
#define K8S_STORE_DIR "/var/lib/plumb"
#define K8S_CONFIG_PATH "/etc/plumb/config/plumb.ini"
#define K8S_KEYS_PATH "/etc/plumb/keys/keys"
#define K8S_USER 10001
#define K8S_MAX_MODELS 16

/* What the manifests need of each configured model, from the store that
 * holds it here (service_k8s_models). */
struct k8s_model {
    char digest[65];       /* its file's SHA-256 */
    uint64_t file_bytes;
    uint64_t memory_bytes; /* engine_estimate's total with the model's settings */
};

struct config;

struct k8s_params {
    const struct config *cfg;     /* the configuration (its models: store names) */
    struct k8s_model models[K8S_MAX_MODELS]; /* one per cfg->models[i] */
    const char *name;             /* objects' name and label; NULL: K8S_DEFAULT_NAME */
    const char *namespace_;       /* NULL: none written (kubectl's current namespace) */
    const char *image;            /* NULL: K8S_DEFAULT_IMAGE */
    int replicas;                 /* >= 1 */
    int cpus;                     /* CPUs requested = plumb's threads (>= 1) */
    const char *mirror;           /* http(s) URL of a folder with blobs/sha256-HEX (a store's folder or an
                                   * unpacked plumb export bundle, served over HTTP) */
    const char *keys_text;        /* the key file's text (a Secret), or NULL */
    const char *keys_secret;      /* an existing Secret with the key "keys" instead, or NULL */
    const char *storage;          /* the claim's size ("40Gi"); NULL: the models' files + 20 % + 1 GiB */
    const char *storage_class;    /* NULL: the cluster's default */
    int hpa_min, hpa_max;         /* hpa_max 0: no autoscaler */
    int hpa_cpu_percent;          /* its target CPU use (0: 70) */
    double prestop_s;             /* the preStop pause (0: 5 s) */
};

/* Looks up each model of cfg in the store at home (cfg's store when home
 * is NULL, else the default one): its digest, size and memory estimate.
 * Refuses a model whose source is a file rather than a store name (the
 * pods pull store names from the mirror). */
int service_k8s_models(const struct config *cfg, const char *home, struct k8s_model *out, pb_err *err);

/* The manifests as YAML documents (json: a JSON List instead) into *out
 * (malloc'd). Refuses, naming what is wrong: a name that is not a DNS
 * label, a bad namespace, image reference, mirror URL, storage size or
 * class, out-of-range counts, a configuration without API keys that does
 * not say insecure = yes (the pods listen on their network), a port 0, or
 * a value the configuration file cannot carry. */
int service_k8s(const struct k8s_params *p, bool json, char **out, pb_err *err);

/* ---- a running server ----
 * One request to the operations API of a running plumb serve (plumb ps,
 * load, unload): METHOD url + path (url http(s)://HOST[:PORT], its path
 * ignored), with api_key (NULL: none) as a Bearer token, a POST with an
 * empty body, within timeout_s. *status is the HTTP status and *body the
 * answer parsed as JSON (NULL when it is not). Fails only when no answer
 * came: PB_EIO with a message that says when nothing listens at url
 * ("is plumb serve running?"), PB_EINVAL for a bad url. */
int service_call(const char *url, const char *api_key, const char *method, const char *path, double timeout_s,
                 int *status, json_t **body, pb_err *err);

#endif
