#define _GNU_SOURCE
/* Kubernetes manifests for plumb serve replicas (service.h): the objects
 * are built as JSON values, then written as YAML documents (or one JSON
 * List). Every name, reference and size that goes into them is checked
 * first, so that what kubectl receives is either right or never written. */
#include "plumb/service.h"

#include "base/err.h"
#include "base/sbuf.h"
#include "plumb/config.h"
#include "plumb/engine.h"
#include "plumb/store.h"
#include "tools/url.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the models, from the store here ---- */

int service_k8s_models(const struct config *cfg, const char *home, struct k8s_model *out, pb_err *err)
{
    if (cfg->n_models < 1)
        return pb_fail(err, PB_EINVAL, "%s: no [model NAME] section: the pods would serve nothing", cfg->path);
    if (cfg->n_models > K8S_MAX_MODELS)
        return pb_fail(err, PB_ERANGE, "more than %d models", K8S_MAX_MODELS);
    const char *store = home ? home : cfg->store[0] ? cfg->store : NULL;
    for (int i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        if (strchr(m->source, '/'))
            return pb_fail(err, PB_EINVAL, "[model %s] source %s is a file: the pods pull models by their store names "
                           "from the mirror; pull it into the store (plumb pull %s --name NAME) and name it in "
                           "'source'", m->alias, m->source, m->source);
        char path[4096];
        struct store_entry e;
        int rc = store_resolve(store, m->source, path, sizeof path, &e, err);
        if (rc)
            return pb_wrap(err, rc, "[model %s]", m->alias);
        if (!e.digest[0])
            return pb_fail(err, PB_EINVAL, "[model %s] %s is not a store name (a file of that name is here): name a "
                           "model of the store", m->alias, m->source);
        struct engine_params ep = config_engine_params(m);
        struct engine_memory mem;
        if ((rc = engine_estimate(path, &ep, &mem, err)))
            return pb_wrap(err, rc, "[model %s] %s", m->alias, m->source);
        memcpy(out[i].digest, e.digest, sizeof out[i].digest);
        out[i].file_bytes = e.size;
        out[i].memory_bytes = mem.total;
    }
    return PB_OK;
}

/* ---- checks ---- */

/* An RFC 1123 label: lowercase letters, digits and '-', a letter or digit
 * at both ends, at most max characters (dns1035: a letter first). */
static bool dns_label(const char *s, size_t max, bool dns1035)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || s[n - 1] == '-' || s[0] == '-' || (dns1035 && !islower((unsigned char)s[0])))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

/* A DNS subdomain: labels joined by dots, 253 characters at most. */
static bool dns_subdomain(const char *s)
{
    if (strlen(s) > 253)
        return false;
    char buf[254];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    int n = 0;
    for (char *t = strtok_r(buf, ".", &save); t; t = strtok_r(NULL, ".", &save), n++)
        if (!dns_label(t, 63, false))
            return false;
    return n > 0 && s[0] != '.' && s[strlen(s) - 1] != '.' && !strstr(s, "..");
}

/* A container image reference: [HOST[:PORT]/]PATH[:TAG][@sha256:HEX], its
 * path components lowercase letters and digits joined by '.', '_', '__'
 * or '-' (the distribution reference grammar). */
static bool image_ref(const char *ref)
{
    size_t n = strlen(ref);
    if (n == 0 || n > 255 || ref[0] == '/' || strstr(ref, "//"))
        return false;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", ref);
    char *at = strchr(buf, '@');
    if (at) {
        *at = '\0';
        const char *d = at + 1;
        if (strncmp(d, "sha256:", 7) || strlen(d + 7) != 64 || strspn(d + 7, "0123456789abcdef") != 64)
            return false;
    }
    char *slash = strrchr(buf, '/'), *colon = strrchr(buf, ':');
    if (colon && (!slash || colon > slash)) { /* the tag */
        *colon = '\0';
        const char *t = colon + 1;
        size_t tl = strlen(t);
        if (tl == 0 || tl > 128 || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
            return false;
        for (size_t i = 0; i < tl; i++)
            if (!isalnum((unsigned char)t[i]) && !strchr("_.-", t[i]))
                return false;
    }
    const size_t bl = strlen(buf); /* the name without tag and digest */
    if (bl == 0 || buf[0] == '/' || buf[bl - 1] == '/' || strstr(buf, "//"))
        return false;
    char *save = NULL;
    int k = 0;
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save), k++) {
        const bool host = k == 0 && strchr(ref, '/') && (strchr(c, '.') || strchr(c, ':') || !strcmp(c, "localhost"));
        if (host) {
            struct url u;
            char hp[300];
            snprintf(hp, sizeof hp, "http://%s", c);
            if (url_parse(hp, "registry", "http", &u, NULL) || u.path[0])
                return false;
            continue;
        }
        size_t cl = strlen(c);
        if (cl == 0 || (!islower((unsigned char)c[0]) && !isdigit((unsigned char)c[0])))
            return false;
        for (size_t i = 0; i < cl; i++) {
            const char ch = c[i];
            if (islower((unsigned char)ch) || isdigit((unsigned char)ch))
                continue;
            /* a separator: '.', '_', '__' or '-'s, between alphanumerics */
            if (!strchr("._-", ch) || i + 1 >= cl)
                return false;
            if (ch == '_' && c[i + 1] == '_')
                i++;
            else if (ch == '-')
                while (i + 1 < cl && c[i + 1] == '-')
                    i++;
            if (!islower((unsigned char)c[i + 1]) && !isdigit((unsigned char)c[i + 1]))
                return false;
        }
    }
    return k > 0;
}

/* A storage quantity: digits, an optional fraction, an optional binary or
 * decimal suffix ("40Gi", "500G", "1.5Ti"). */
static bool quantity(const char *q)
{
    size_t i = strspn(q, "0123456789");
    if (i == 0 || i > 12)
        return false;
    if (q[i] == '.') {
        size_t f = strspn(q + i + 1, "0123456789");
        if (f == 0)
            return false;
        i += 1 + f;
    }
    static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"};
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++)
        if (!strcmp(q + i, suffixes[k]))
            return true;
    return false;
}

/* ---- YAML ---- */

/* A mapping key written plainly: letters, digits, '_', '.', '/', '-',
 * beginning with a letter, and none of YAML 1.1's booleans or null. */
static bool plain_key(const char *k)
{
    static const char *const special[] = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"};
    if (!isalpha((unsigned char)k[0]))
        return false;
    for (const char *c = k; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("_./-", *c))
            return false;
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        if (!strcasecmp(k, special[i]))
            return false;
    return true;
}

/* Text a literal block (|) carries as it is: lines of printable characters
 * (no tab or control character), the first not starting with a space, and
 * exactly one line break at the end. */
static bool literal_block(const char *s)
{
    size_t n = strlen(s);
    if (n < 2 || s[n - 1] != '\n' || s[n - 2] == '\n' || s[0] == ' ' || s[0] == '\n')
        return false;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] < 0x20 && s[i] != '\n') || s[i] == 0x7f)
            return false;
    return true;
}

static int add_indent(struct sbuf *o, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++)
        rc |= sbuf_add(o, " ", 1);
    return rc;
}

/* A scalar: strings in JSON's double-quoted form (YAML reads it the same),
 * numbers, booleans and null as they are. */
static int yaml_scalar(struct sbuf *o, json_t *v)
{
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!t)
        return PB_ENOMEM;
    int rc = sbuf_add(o, t, strlen(t));
    free(t);
    return rc;
}

static int yaml_key(struct sbuf *o, const char *k)
{
    if (plain_key(k))
        return sbuf_add(o, k, strlen(k));
    json_t *s = json_string(k);
    int rc = s ? yaml_scalar(o, s) : PB_ENOMEM;
    json_decref(s);
    return rc;
}

static int yaml_value(struct sbuf *o, json_t *v, int indent);

/* The entries of a non-empty object, each on its own line at indent (the
 * first one's indentation already written when first_inline). */
static int yaml_object(struct sbuf *o, json_t *obj, int indent, bool first_inline)
{
    const char *k;
    json_t *v;
    int rc = 0;
    bool first = true;
    json_object_foreach(obj, k, v) {
        if (!(first && first_inline))
            rc |= add_indent(o, indent);
        first = false;
        rc |= yaml_key(o, k);
        rc |= sbuf_add(o, ":", 1);
        rc |= yaml_value(o, v, indent + 2);
    }
    return rc ? PB_ENOMEM : PB_OK;
}

/* What follows "key:" (or "- "): a scalar on the line, or a nested block. */
static int yaml_value(struct sbuf *o, json_t *v, int indent)
{
    int rc = 0;
    if (json_is_object(v) && json_object_size(v)) {
        rc |= sbuf_add(o, "\n", 1);
        rc |= yaml_object(o, v, indent, false);
    } else if (json_is_array(v) && json_array_size(v)) {
        rc |= sbuf_add(o, "\n", 1);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            rc |= add_indent(o, indent);
            rc |= sbuf_add(o, "- ", 2);
            if (json_is_object(e) && json_object_size(e)) {
                rc |= yaml_object(o, e, indent + 2, true);
            } else if (json_is_array(e) && json_array_size(e)) {
                rc = PB_EINVAL; /* not in these manifests */
            } else {
                rc |= yaml_scalar(o, e) | sbuf_add(o, "\n", 1);
            }
        }
    } else if (json_is_object(v)) {
        rc |= sbuf_add(o, " {}\n", 4);
    } else if (json_is_array(v)) {
        rc |= sbuf_add(o, " []\n", 4);
    } else if (json_is_string(v) && literal_block(json_string_value(v))) {
        rc |= sbuf_add(o, " |\n", 3);
        const char *s = json_string_value(v);
        while (*s) {
            const char *e = strchr(s, '\n');
            if (e != s) /* an empty line stays empty */
                rc |= add_indent(o, indent);
            rc |= sbuf_add(o, s, (size_t)(e - s + 1));
            s = e + 1;
        }
    } else {
        rc |= sbuf_add(o, " ", 1) | yaml_scalar(o, v) | sbuf_add(o, "\n", 1);
    }
    return rc ? PB_ENOMEM : PB_OK;
}

/* ---- the objects ---- */

/* 64-bit FNV-1a: a change detector for the configuration, not a digest. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void mebibytes(uint64_t bytes, char *buf, size_t size)
{
    snprintf(buf, size, "%lluMi", (unsigned long long)((bytes + (1u << 20) - 1) >> 20));
}

static json_t *metadata(const struct k8s_params *p, const char *name, const char *app)
{
    json_t *m = json_pack("{s:s, s:{s:s, s:s, s:s}}", "name", name, "labels", "app.kubernetes.io/name", "plumb",
                          "app.kubernetes.io/instance", app, "app.kubernetes.io/version", PLUMB_VERSION);
    if (m && p->namespace_)
        json_object_set_new(m, "namespace", json_string(p->namespace_));
    return m;
}

static json_t *selector_labels(const char *app)
{
    return json_pack("{s:s, s:s}", "app.kubernetes.io/name", "plumb", "app.kubernetes.io/instance", app);
}

static json_t *restricted(void)
{
    return json_pack("{s:b, s:b, s:{s:[s]}}", "allowPrivilegeEscalation", 0, "readOnlyRootFilesystem", 1,
                     "capabilities", "drop", "ALL");
}

int service_k8s(const struct k8s_params *p, bool json_out, char **out, pb_err *err)
{
    *out = NULL;
    const struct config *cfg = p->cfg;
    const char *app = p->name ? p->name : K8S_DEFAULT_NAME;
    const char *image = p->image ? p->image : K8S_DEFAULT_IMAGE;
    if (!dns_label(app, 40, true))
        return pb_fail(err, PB_EINVAL, "name '%s': 1-40 lowercase letters, digits and '-', a letter first, not "
                       "ending in '-' (a DNS label with room for the pods' suffixes)", app);
    if (p->namespace_ && !dns_label(p->namespace_, 63, false))
        return pb_fail(err, PB_EINVAL, "namespace '%s': 1-63 lowercase letters, digits and '-'", p->namespace_);
    if (!image_ref(image))
        return pb_fail(err, PB_EINVAL, "image '%s' is not an image reference ([HOST[:PORT]/]PATH[:TAG][@sha256:HEX], "
                       "the path in lowercase)", image);
    if (cfg->n_models < 1 || cfg->n_models > K8S_MAX_MODELS)
        return pb_fail(err, PB_EINVAL, "%d models: 1 to %d", cfg->n_models, K8S_MAX_MODELS);
    if (p->replicas < 1 || p->replicas > 1000)
        return pb_fail(err, PB_EINVAL, "replicas %d: 1 to 1000", p->replicas);
    if (p->cpus < 1 || p->cpus > 1024)
        return pb_fail(err, PB_EINVAL, "cpus %d: 1 to 1024", p->cpus);
    if (p->hpa_max && (p->hpa_min < 1 || p->hpa_max < p->hpa_min || p->hpa_max > 1000))
        return pb_fail(err, PB_EINVAL, "autoscaler %d:%d: 1 <= MIN <= MAX <= 1000", p->hpa_min, p->hpa_max);
    if (p->hpa_cpu_percent < 0 || p->hpa_cpu_percent > 1000)
        return pb_fail(err, PB_EINVAL, "autoscaler CPU target %d %%: 1 to 1000", p->hpa_cpu_percent);
    if (!(p->prestop_s >= 0 && p->prestop_s <= 3600))
        return pb_fail(err, PB_EINVAL, "preStop pause %g s: 0 to 3600", p->prestop_s);
    if (p->storage && !quantity(p->storage))
        return pb_fail(err, PB_EINVAL, "storage '%s' is not a size (40Gi, 500G, 1.5Ti)", p->storage);
    if (p->storage_class && !dns_subdomain(p->storage_class))
        return pb_fail(err, PB_EINVAL, "storage class '%s' is not a DNS name", p->storage_class);
    if (p->keys_secret && !dns_subdomain(p->keys_secret))
        return pb_fail(err, PB_EINVAL, "secret '%s' is not a DNS name", p->keys_secret);
    if (p->keys_text && p->keys_secret)
        return pb_fail(err, PB_EINVAL, "the keys come from the key file or from an existing secret, not both");
    const bool keys = p->keys_text || p->keys_secret;
    if (!keys && !cfg->insecure)
        return pb_fail(err, PB_EINVAL, "%s has no api_key_file: in a cluster plumb listens on the pod's network, "
                       "where anyone who reaches it could use the models; give it an api_key_file (rendered as a "
                       "Secret), name an existing secret, or say insecure = yes", cfg->path);
    if (cfg->port < 1 || cfg->port > 65535)
        return pb_fail(err, PB_EINVAL, "port %d: the pods need a fixed port (1-65535)", cfg->port);
    struct url mirror;
    int rc = url_parse(p->mirror, "mirror", "http,https", &mirror, err);
    if (rc)
        return rc;
    for (int i = 0; i < cfg->n_models; i++) {
        const struct k8s_model *m = &p->models[i];
        if (strlen(m->digest) != 64 || strspn(m->digest, "0123456789abcdef") != 64)
            return pb_fail(err, PB_EINVAL, "[model %s]: no SHA-256 digest", cfg->models[i].alias);
        if (strchr(cfg->models[i].source, '/'))
            return pb_fail(err, PB_EINVAL, "[model %s]: source %s is a file, not a store name", cfg->models[i].alias,
                           cfg->models[i].source);
    }

    /* resources: the estimate (at most memory_limit: models loaded on
     * demand take turns within it), the files */
    uint64_t mem = 0, files = 0;
    for (int i = 0; i < cfg->n_models; i++) {
        mem += p->models[i].memory_bytes;
        files += p->models[i].file_bytes;
    }
    if (cfg->memory_limit && cfg->memory_limit < mem)
        mem = cfg->memory_limit;

    /* the configuration as the pods read it: what the models may use is
     * the pod's memory request (the memory the node says is free is not
     * the pod's) */
    struct config pc = *cfg;
    pc.memory_limit = mem;
    snprintf(pc.host, sizeof pc.host, "0.0.0.0");
    snprintf(pc.store, sizeof pc.store, "%s", K8S_STORE_DIR);
    snprintf(pc.api_key_file, sizeof pc.api_key_file, "%s", keys ? K8S_KEYS_PATH : "");
    pc.insecure = !keys;
    pc.pid_file[0] = '\0';
    pc.instance_id[0] = '\0'; /* --instance-id $(POD_NAME) */
    pc.threads = p->cpus;
    char *ini = NULL;
    if ((rc = config_format(&pc, &ini, err)))
        return rc;
    const char *conf = "; plumb serve in a pod (written by plumb service k8s)\n";
    struct sbuf text = {0};
    if (sbuf_add(&text, conf, strlen(conf)) || sbuf_add(&text, ini, strlen(ini))) {
        free(ini);
        sbuf_free(&text);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    free(ini);

    char mem_req[32], mem_lim[32], storage[32], cpus[16], port_s[8], hash[24];
    mebibytes(mem, mem_req, sizeof mem_req);
    mebibytes(mem + mem / 5, mem_lim, sizeof mem_lim);
    if (p->storage)
        snprintf(storage, sizeof storage, "%s", p->storage);
    else
        snprintf(storage, sizeof storage, "%lluGi",
                 (unsigned long long)((files + files / 5 + (1ull << 30) + (1ull << 30) - 1) >> 30));
    snprintf(cpus, sizeof cpus, "%d", p->cpus);
    snprintf(port_s, sizeof port_s, "%d", cfg->port);
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)fnv1a(text.data));
    const double prestop = p->prestop_s > 0 ? p->prestop_s : 5;
    const long long grace = (long long)ceil(prestop + cfg->drain_timeout_s + 5);
    char cm_name[64], keys_name[300];
    snprintf(cm_name, sizeof cm_name, "%s-config", app);
    snprintf(keys_name, sizeof keys_name, "%s", p->keys_secret ? p->keys_secret : "");
    if (!p->keys_secret)
        snprintf(keys_name, sizeof keys_name, "%s-keys", app);

    json_t *items = json_array();
    /* ConfigMap */
    json_array_append_new(items, json_pack("{s:s, s:s, s:o, s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap",
                                           "metadata", metadata(p, cm_name, app), "data", "plumb.ini", text.data));
    sbuf_free(&text);
    /* Secret */
    if (p->keys_text) {
        json_t *sec = json_pack("{s:s, s:s, s:o, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Secret", "metadata",
                                metadata(p, keys_name, app), "type", "Opaque", "stringData", "keys", p->keys_text);
        if (!sec) {
            json_decref(items);
            return pb_fail(err, PB_EINVAL, "the key file is not text (UTF-8)");
        }
        json_array_append_new(items, sec);
    }
    /* Service */
    json_array_append_new(items, json_pack("{s:s, s:s, s:o, s:{s:s, s:o, s:[{s:s, s:i, s:s, s:s}]}}", "apiVersion",
                                           "v1", "kind", "Service", "metadata", metadata(p, app, app), "spec", "type",
                                           "ClusterIP", "selector", selector_labels(app), "ports", "name", "http",
                                           "port", cfg->port, "targetPort", "http", "protocol", "TCP"));
    /* the pulls: one init container per distinct model */
    json_t *inits = json_array();
    for (int i = 0; i < cfg->n_models; i++) {
        bool seen = false;
        for (int k = 0; k < i; k++)
            seen |= !strcmp(cfg->models[k].source, cfg->models[i].source);
        if (seen)
            continue;
        char url[1400], sha[80], cname[32];
        snprintf(url, sizeof url, "%s%sblobs/sha256-%s", p->mirror,
                 p->mirror[strlen(p->mirror) - 1] == '/' ? "" : "/", p->models[i].digest);
        snprintf(sha, sizeof sha, "%s", p->models[i].digest);
        snprintf(cname, sizeof cname, "pull-%d", i);
        json_array_append_new(
            inits, json_pack("{s:s, s:s, s:[s], s:[s, s, s, s, s, s, s], s:[{s:s, s:s}], s:{s:{s:s, s:s}}, "
                             "s:[{s:s, s:s}, {s:s, s:s}], s:o}",
                             "name", cname, "image", image, "command", "/usr/local/bin/plumb", "args", "pull", url,
                             "--sha256", sha, "--name", cfg->models[i].source, "--if-absent", "env", "name",
                             "PLUMB_HOME", "value", K8S_STORE_DIR, "resources", "requests", "cpu", "100m", "memory",
                             "128Mi", "volumeMounts", "name", "store", "mountPath", K8S_STORE_DIR, "name", "tmp",
                             "mountPath", "/tmp", "securityContext", restricted()));
    }
    /* the server */
    json_t *mounts = json_pack("[{s:s, s:s}, {s:s, s:s, s:b}, {s:s, s:s}]", "name", "store", "mountPath",
                               K8S_STORE_DIR, "name", "config", "mountPath", "/etc/plumb/config", "readOnly", 1,
                               "name", "tmp", "mountPath", "/tmp");
    json_t *volumes = json_pack("[{s:s, s:{s:s}}, {s:s, s:{}}]", "name", "config", "configMap", "name", cm_name,
                                "name", "tmp", "emptyDir");
    if (keys) {
        json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "name", "keys", "mountPath", "/etc/plumb/keys",
                                                "readOnly", 1));
        /* 0440 (group: the pods' fsGroup); plumb notes in its log that the
         * group can read it, which in a pod is plumb's own group */
        json_array_append_new(volumes, json_pack("{s:s, s:{s:s, s:i}}", "name", "keys", "secret", "secretName",
                                                 keys_name, "defaultMode", 0440));
    }
    json_t *container = json_pack(
        "{s:s, s:s, s:[s], s:[s, s, s, s, s], s:[{s:s, s:{s:{s:s}}}, {s:s, s:s}], s:[{s:s, s:i, s:s}], "
        "s:{s:{s:s, s:s, s:s}, s:i, s:i, s:i, s:i}, "
        "s:{s:{s:s, s:s}, s:i, s:i, s:i}, "
        "s:{s:{s:s, s:s}, s:i, s:i, s:i}, "
        "s:{s:{s:{s:I}}}, s:{s:{s:s, s:s}, s:{s:s, s:s}}, s:o, s:o}",
        "name", "plumb", "image", image, "command", "/usr/local/bin/plumb", "args", "serve", "--config",
        K8S_CONFIG_PATH, "--instance-id", "$(POD_NAME)", "env", "name", "POD_NAME", "valueFrom", "fieldRef",
        "fieldPath", "metadata.name", "name", "PLUMB_HOME", "value", K8S_STORE_DIR, "ports", "name", "http",
        "containerPort", cfg->port, "protocol", "TCP",
        /* ready: loaded and not draining; probes are new connections (plumb closes each) */
        "readinessProbe", "httpGet", "path", "/ready", "port", "http", "scheme", "HTTP", "periodSeconds", 2,
        "timeoutSeconds", 2, "failureThreshold", 2, "successThreshold", 1,
        /* the model's loading: up to ten minutes before liveness counts */
        "startupProbe", "httpGet", "path", "/health", "port", "http", "periodSeconds", 5, "timeoutSeconds", 2,
        "failureThreshold", 120, "livenessProbe", "httpGet", "path", "/health", "port", "http", "periodSeconds", 10,
        "timeoutSeconds", 5, "failureThreshold", 3,
        /* the endpoints stop sending first; then SIGTERM starts plumb's drain */
        "lifecycle", "preStop", "sleep", "seconds", (json_int_t)ceil(prestop), "resources", "requests", "cpu", cpus,
        "memory", mem_req, "limits", "cpu", cpus, "memory", mem_lim, "volumeMounts", mounts, "securityContext",
        restricted());
    json_t *pod_spec = json_pack("{s:I, s:b, s:{s:b, s:i, s:i, s:i, s:{s:s}}, s:o, s:[o], s:o}",
                                 "terminationGracePeriodSeconds", (json_int_t)grace, "enableServiceLinks", 0,
                                 "securityContext", "runAsNonRoot", 1, "runAsUser", K8S_USER, "runAsGroup", K8S_USER,
                                 "fsGroup", K8S_USER, "seccompProfile", "type", "RuntimeDefault", "initContainers",
                                 inits, "containers", container, "volumes", volumes);
    json_t *pvc = json_pack("{s:{s:s}, s:{s:[s], s:{s:{s:s}}}}", "metadata", "name", "store", "spec", "accessModes",
                            "ReadWriteOnce", "resources", "requests", "storage", storage);
    if (pvc && p->storage_class)
        json_object_set_new(json_object_get(pvc, "spec"), "storageClassName", json_string(p->storage_class));
    json_array_append_new(
        items,
        json_pack("{s:s, s:s, s:o, s:{s:i, s:s, s:s, s:{s:o}, s:{s:s}, s:{s:{s:o, s:{s:s, s:s, s:s, s:s}}, s:o}, "
                  "s:[o]}}",
                  "apiVersion", "apps/v1", "kind", "StatefulSet", "metadata", metadata(p, app, app), "spec",
                  "replicas", p->replicas, "serviceName", app, "podManagementPolicy", "Parallel", "selector",
                  "matchLabels", selector_labels(app), "updateStrategy", "type", "RollingUpdate", "template",
                  "metadata", "labels", selector_labels(app), "annotations", "prometheus.io/scrape", "true",
                  "prometheus.io/port", port_s, "prometheus.io/path", "/metrics", "plumb/config-hash", hash, "spec",
                  pod_spec, "volumeClaimTemplates", pvc));
    /* PodDisruptionBudget */
    json_array_append_new(items, json_pack("{s:s, s:s, s:o, s:{s:i, s:{s:o}}}", "apiVersion", "policy/v1", "kind",
                                           "PodDisruptionBudget", "metadata", metadata(p, app, app), "spec",
                                           "maxUnavailable", 1, "selector", "matchLabels", selector_labels(app)));
    if (p->hpa_max)
        json_array_append_new(
            items, json_pack("{s:s, s:s, s:o, s:{s:{s:s, s:s, s:s}, s:i, s:i, s:[{s:s, s:{s:s, s:{s:s, s:i}}}]}}",
                             "apiVersion", "autoscaling/v2", "kind", "HorizontalPodAutoscaler", "metadata",
                             metadata(p, app, app), "spec", "scaleTargetRef", "apiVersion", "apps/v1", "kind",
                             "StatefulSet", "name", app, "minReplicas", p->hpa_min, "maxReplicas", p->hpa_max,
                             "metrics", "type", "Resource", "resource", "name", "cpu", "target", "type",
                             "Utilization", "averageUtilization",
                             p->hpa_cpu_percent ? p->hpa_cpu_percent : 70));
    /* a json_pack that failed left a hole: its array is shorter */
    const size_t want = 4 + (p->keys_text ? 1 : 0) + (p->hpa_max ? 1 : 0);
    if (json_array_size(items) != want) {
        json_decref(items);
        return pb_fail(err, PB_ENOMEM, "out of memory building the manifests");
    }
    struct sbuf o = {0};
    rc = 0;
    if (json_out) {
        json_t *list = json_pack("{s:s, s:s, s:o}", "apiVersion", "v1", "kind", "List", "items", items);
        char *t = list ? json_dumps(list, JSON_INDENT(2)) : NULL;
        json_decref(list);
        rc = !t || sbuf_add(&o, t, strlen(t)) || sbuf_add(&o, "\n", 1);
        free(t);
    } else {
        rc |= sbuf_addf(&o, "# plumb serve on Kubernetes (written by plumb service k8s, plumb %s)\n", PLUMB_VERSION);
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            rc |= sbuf_add(&o, "---\n", 4);
            rc |= yaml_object(&o, it, 0, false);
        }
        json_decref(items);
    }
    if (rc) {
        sbuf_free(&o);
        return pb_fail(err, PB_ENOMEM, "out of memory writing the manifests");
    }
    *out = o.data;
    return PB_OK;
}
