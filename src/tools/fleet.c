/* plumb fleet: the list of sites and what they say (fleet.h). */
#define _GNU_SOURCE
#include "plumb/fleet.h"
#include "plumb/server.h"

#include "base/err.h"
#include "base/sbuf.h"
#include "plumb/config.h"
#include "plumb/store.h"
#include "tools/url.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the list ---- */

int fleet_default_path(char *buf, size_t size, pb_err *err)
{
    char home[FLEET_PATH_MAX];
    int rc = store_default_home(home, sizeof home, err);
    if (rc)
        return rc;
    if ((size_t)snprintf(buf, size, "%s/fleet.json", home) >= size)
        return pb_fail(err, PB_ERANGE, "%s/fleet.json: path too long", home);
    return PB_OK;
}

void fleet_free(struct fleet *f)
{
    free(f->sites);
    f->sites = NULL;
    f->n = 0;
}

static int site_field(json_t *o, const char *key, bool required, char *out, size_t size, const char *path, int i,
                      pb_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v && !required) {
        out[0] = '\0';
        return PB_OK;
    }
    if (!json_is_string(v) || json_string_length(v) >= size)
        return pb_fail(err, PB_EFORMAT, "%s: sites[%d].%s: a string of at most %zu bytes expected", path, i, key,
                       size - 1);
    snprintf(out, size, "%s", json_string_value(v));
    return PB_OK;
}

int fleet_load(const char *path, struct fleet *f, pb_err *err)
{
    f->sites = NULL;
    f->n = 0;
    char *text = NULL;
    size_t len;
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return PB_OK;
    int rc = pb_read_small(path, 4u << 20, &text, &len, err);
    if (rc)
        return rc;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    json_t *sites = json_object_get(root, "sites");
    if (!root || !json_is_array(sites)) {
        rc = root ? pb_fail(err, PB_EFORMAT, "%s: no \"sites\" array", path)
                  : pb_fail(err, PB_EFORMAT, "%s: line %d: %s", path, je.line, je.text);
        json_decref(root);
        return rc;
    }
    const size_t n = json_array_size(sites);
    if (n > FLEET_MAX_SITES) {
        json_decref(root);
        return pb_fail(err, PB_EFORMAT, "%s: %zu sites, at most %d", path, n, FLEET_MAX_SITES);
    }
    f->sites = calloc(n ? n : 1, sizeof *f->sites);
    if (!f->sites) {
        json_decref(root);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *o = json_array_get(sites, i);
        struct fleet_site *s = &f->sites[i];
        rc = site_field(o, "name", true, s->name, sizeof s->name, path, (int)i, err);
        if (!rc)
            rc = site_field(o, "url", true, s->url, sizeof s->url, path, (int)i, err);
        if (!rc)
            rc = site_field(o, "api_key_file", false, s->key_file, sizeof s->key_file, path, (int)i, err);
        if (!rc && !config_alias_valid(s->name))
            rc = pb_fail(err, PB_EFORMAT, "%s: sites[%zu]: bad name '%s'", path, i, s->name);
        f->n = (int)i + 1;
    }
    json_decref(root);
    if (rc)
        fleet_free(f);
    return rc;
}

/* mkdir -p of path's folder (mode 0755 for what it makes, as the store's). */
static int make_parent(const char *path, pb_err *err)
{
    char dir[FLEET_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return PB_OK;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            const char c = *p;
            *p = '\0';
            if (mkdir(dir, 0755) != 0 && errno != EEXIST)
                return pb_fail(err, PB_EIO, "cannot create %s: %s", dir, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return PB_OK;
}

int fleet_save(const char *path, const struct fleet *f, pb_err *err)
{
    json_t *sites = json_array();
    for (int i = 0; i < f->n; i++) {
        json_t *o = json_pack("{s:s, s:s}", "name", f->sites[i].name, "url", f->sites[i].url);
        if (f->sites[i].key_file[0])
            json_object_set_new(o, "api_key_file", json_string(f->sites[i].key_file));
        json_array_append_new(sites, o);
    }
    json_t *root = json_pack("{s:o}", "sites", sites);
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (!text)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int rc = make_parent(path, err);
    if (!rc) {
        struct sbuf b = {0};
        rc = sbuf_addf(&b, "%s\n", text);
        if (!rc)
            rc = pb_write_small(path, b.data, b.len, 0600, err);
        else
            pb_fail(err, rc, "out of memory");
        sbuf_free(&b);
    }
    free(text);
    return rc;
}

int fleet_read_key(const char *path, char *key, size_t size, pb_err *err)
{
    char *text;
    size_t len;
    int rc = pb_read_small(path, 64u << 10, &text, &len, err);
    if (rc)
        return rc;
    const bool found = server_key_pick(text, true, key, size);
    explicit_bzero(text, len);
    free(text);
    if (!found)
        return pb_fail(err, PB_EINVAL, "%s holds no key (a line KEY, ID KEY or ID KEY admin)", path);
    return PB_OK;
}

int fleet_site_valid(const char *name, const char *url, pb_err *err)
{
    if (!config_alias_valid(name))
        return pb_fail(err, PB_EINVAL, "bad site name '%s' (1-64 of letters, digits, . _ : -, starting with a "
                       "letter or digit)", name);
    struct url u;
    return url_parse(url, "URL", "http,https", &u, err);
}

int fleet_add(struct fleet *f, const char *name, const char *url, const char *key_file, pb_err *err)
{
    int rc = fleet_site_valid(name, url, err);
    if (rc)
        return rc;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->sites[i].name, name))
            return pb_fail(err, PB_EINVAL, "there is a site '%s' already (%s): plumb fleet rm %s first", name,
                           f->sites[i].url, name);
    if (f->n >= FLEET_MAX_SITES)
        return pb_fail(err, PB_ERANGE, "%d sites already, the most a fleet holds", f->n);
    struct fleet_site s = {0};
    snprintf(s.name, sizeof s.name, "%s", name);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n >= sizeof s.url)
        return pb_fail(err, PB_EINVAL, "URL '%s': too long", url);
    memcpy(s.url, url, n);
    s.url[n] = '\0';
    if (key_file) {
        char abs[PATH_MAX], key[512];
        if (!realpath(key_file, abs))
            return pb_fail(err, PB_EINVAL, "%s: %s", key_file, strerror(errno));
        if (strlen(abs) >= sizeof s.key_file)
            return pb_fail(err, PB_EINVAL, "%s: path too long", abs);
        if ((rc = fleet_read_key(abs, key, sizeof key, err)))
            return rc;
        explicit_bzero(key, sizeof key);
        memcpy(s.key_file, abs, strlen(abs) + 1); /* its length checked above */
    }
    struct fleet_site *more = realloc(f->sites, (size_t)(f->n + 1) * sizeof *more);
    if (!more)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    f->sites = more;
    f->sites[f->n++] = s;
    return PB_OK;
}

int fleet_rm(struct fleet *f, const char *name, pb_err *err)
{
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->sites[i].name, name) != 0)
            continue;
        memmove(&f->sites[i], &f->sites[i + 1], (size_t)(f->n - i - 1) * sizeof f->sites[0]);
        f->n--;
        return PB_OK;
    }
    return pb_fail(err, PB_ENOTFOUND, "there is no site '%s' (plumb fleet ls lists them)", name);
}

/* ---- asking the sites ---- */

enum { ASK_STATUS, ASK_USAGE, ASK_DOCTOR, ASK_N };
static const char *const ask_path[ASK_N] = {"/v1/plumb/status", "/v1/plumb/usage", "/v1/plumb/doctor"};
static const char *const ask_name[ASK_N] = {"status", "usage", "doctor"};

#define FLEET_MAX_ANSWER (8u << 20) /* a status or report larger than this is not plumb's */

struct xfer {
    CURL *h;
    struct sbuf body;
    bool too_big, started, done;
    CURLcode cc;
    long http;
    double seconds;
    char errbuf[CURL_ERROR_SIZE];
};

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    struct xfer *x = user;
    if (x->body.len + size * n > FLEET_MAX_ANSWER || sbuf_add(&x->body, p, size * n)) {
        x->too_big = true;
        return 0;
    }
    return size * n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Why a transfer gave no usable answer, into buf; "" when it did (200
 * with a JSON object, parsed into *out). */
static void outcome(struct xfer *x, double timeout_s, json_t **out, char *buf, size_t size)
{
    *out = NULL;
    buf[0] = '\0';
    if (!x->started) {
        snprintf(buf, size, "not asked (%s)", x->errbuf[0] ? x->errbuf : "no transfer");
        return;
    }
    if (x->too_big) {
        snprintf(buf, size, "an answer over %u MiB: not a plumb server", FLEET_MAX_ANSWER >> 20);
        return;
    }
    if (x->cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(buf, size, "no answer within %g s", timeout_s);
        return;
    }
    if (x->cc != CURLE_OK) {
        snprintf(buf, size, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->cc));
        return;
    }
    json_t *v = json_loadb(x->body.data ? x->body.data : "", x->body.len, 0, NULL);
    if (x->http != 200) {
        json_t *e = json_object_get(v, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *hint = x->http == 401 ? "; the key was refused: check the site's --api-key-file"
                           : x->http == 403 ? "; the key needs the admin flag (a line 'ID KEY admin' in the site's key file)"
                           : x->http == 404 ? "; is it plumb serve?" : "";
        snprintf(buf, size, "HTTP %ld%s%.300s%s", x->http, msg ? ": " : "", msg ? msg : "", hint);
        json_decref(v);
        return;
    }
    if (!json_is_object(v)) {
        snprintf(buf, size, "the answer is not a JSON object: is it plumb serve?");
        json_decref(v);
        return;
    }
    *out = v;
}

static json_t *jnum(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_incref(v) : json_null();
}

static json_t *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_incref(v) : json_null();
}

/* The site's object from its status answer. */
static void fill_status(json_t *site, json_t *st)
{
    json_object_set_new(site, "version", jstr(st, "version"));
    json_object_set_new(site, "instance_id", jstr(st, "instance_id"));
    json_object_set_new(site, "ready", json_is_boolean(json_object_get(st, "ready"))
                                           ? json_incref(json_object_get(st, "ready")) : json_null());
    json_object_set_new(site, "uptime_s", jnum(st, "uptime_s"));
    json_t *models = json_array(), *m;
    size_t i;
    json_array_foreach(json_object_get(st, "models"), i, m) {
        json_array_append_new(models, json_pack("{s:o, s:o, s:o, s:o, s:o}", "id", jstr(m, "id"), "source",
                                                jstr(m, "source"), "digest", jstr(m, "digest"), "running",
                                                jnum(m, "running"), "waiting", jnum(m, "waiting")));
    }
    json_object_set_new(site, "models", models);
    json_object_set_new(site, "load", json_pack("{s:o, s:o, s:o, s:o, s:o}", "slots", jnum(st, "slots"), "running",
                                                jnum(st, "slots_active"), "waiting", jnum(st, "queue_depth"),
                                                "tokens_per_s_1m", jnum(st, "tokens_per_s_1m"), "tokens_per_s_5m",
                                                jnum(st, "tokens_per_s_5m")));
}

/* Today's row of the site's usage by day: today by the site's clock (its
 * status "time") when known, else this machine's; UTC, as the store groups. */
static json_t *usage_today(json_t *usage, json_t *st)
{
    json_t *t = json_object_get(st, "time");
    time_t now = json_is_number(t) ? (time_t)json_number_value(t) : time(NULL);
    struct tm tm;
    char day[16];
    gmtime_r(&now, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    json_int_t req = 0, prompt = 0, completion = 0;
    json_t *row;
    size_t i;
    json_array_foreach(json_object_get(usage, "by_day"), i, row) {
        const char *d = json_string_value(json_object_get(row, "day"));
        if (!d || strcmp(d, day) != 0)
            continue;
        req += json_integer_value(json_object_get(row, "requests"));
        prompt += json_integer_value(json_object_get(row, "prompt_tokens"));
        completion += json_integer_value(json_object_get(row, "completion_tokens"));
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:I}", "date", day, "requests", req, "prompt_tokens", prompt,
                     "completion_tokens", completion, "total_tokens", prompt + completion);
}

static json_t *doctor_verdict(json_t *d)
{
    return json_pack("{s:o, s:o, s:o}", "status", jstr(d, "status"), "errors", jnum(d, "errors"), "warnings",
                     jnum(d, "warnings"));
}

json_t *fleet_poll(const struct fleet *f, double timeout_s, bool full, pb_err *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        pb_fail(err, PB_EIO, "libcurl: %s", curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    json_t *out = NULL;
    const int n_ask = full ? ASK_N : 1;
    struct xfer *x = calloc((size_t)(f->n ? f->n : 1) * ASK_N, sizeof *x);
    struct curl_slist **hdrs = calloc((size_t)(f->n ? f->n : 1), sizeof *hdrs);
    char (*why)[600] = calloc((size_t)(f->n ? f->n : 1), sizeof *why); /* a site's key file that failed */
    CURLM *multi = curl_multi_init();
    if (!x || !hdrs || !why || !multi) {
        pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    const long ms = (long)(timeout_s * 1000 + 0.5) > 0 ? (long)(timeout_s * 1000 + 0.5) : 1;
    for (int s = 0; s < f->n; s++) {
        const struct fleet_site *site = &f->sites[s];
        if (site->key_file[0]) {
            char key[512], line[600];
            pb_err kerr = {0};
            if (fleet_read_key(site->key_file, key, sizeof key, &kerr)) {
                snprintf(why[s], sizeof why[s], "its key file: %s", kerr.msg);
                continue;
            }
            snprintf(line, sizeof line, "Authorization: Bearer %s", key);
            hdrs[s] = curl_slist_append(NULL, line);
            explicit_bzero(key, sizeof key);
            explicit_bzero(line, sizeof line);
            if (!hdrs[s]) {
                pb_fail(err, PB_ENOMEM, "out of memory");
                goto done;
            }
        }
        for (int a = 0; a < n_ask; a++) {
            struct xfer *t = &x[s * ASK_N + a];
            char url[FLEET_URL_MAX + 32];
            snprintf(url, sizeof url, "%s%s", site->url, ask_path[a]);
            if (!(t->h = curl_easy_init())) {
                pb_fail(err, PB_ENOMEM, "libcurl: cannot create a transfer");
                goto done;
            }
            curl_easy_setopt(t->h, CURLOPT_URL, url);
            curl_easy_setopt(t->h, CURLOPT_PROTOCOLS_STR, "http,https");
            curl_easy_setopt(t->h, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(t->h, CURLOPT_USERAGENT, "plumb-fleet/" PLUMB_VERSION);
            curl_easy_setopt(t->h, CURLOPT_CONNECTTIMEOUT_MS, ms);
            curl_easy_setopt(t->h, CURLOPT_TIMEOUT_MS, ms);
            curl_easy_setopt(t->h, CURLOPT_ERRORBUFFER, t->errbuf);
            curl_easy_setopt(t->h, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(t->h, CURLOPT_WRITEDATA, t);
            curl_easy_setopt(t->h, CURLOPT_PRIVATE, t);
            if (hdrs[s])
                curl_easy_setopt(t->h, CURLOPT_HTTPHEADER, hdrs[s]);
            if (curl_multi_add_handle(multi, t->h) != CURLM_OK) {
                pb_fail(err, PB_EIO, "libcurl: cannot start a transfer");
                goto done;
            }
            t->started = true;
        }
    }
    /* every transfer at once; each ends by its own timeout at the latest */
    int running = 1;
    while (running) {
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc == CURLM_OK && running)
            mc = curl_multi_poll(multi, NULL, 0, 100, NULL);
        if (mc != CURLM_OK) {
            pb_fail(err, PB_EIO, "libcurl: %s", curl_multi_strerror(mc));
            goto done;
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            struct xfer *t = (struct xfer *)(void *)priv;
            t->done = true;
            t->cc = msg->data.result;
            curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &t->http);
            curl_easy_getinfo(t->h, CURLINFO_TOTAL_TIME, &t->seconds);
        }
    }
    out = json_array();
    for (int s = 0; s < f->n && out; s++) {
        const struct fleet_site *site = &f->sites[s];
        json_t *o = json_pack("{s:s, s:s}", "name", site->name, "url", site->url), *answer[ASK_N] = {0};
        char reason[ASK_N][640] = {{0}};
        if (why[s][0]) {
            snprintf(reason[ASK_STATUS], sizeof reason[0], "%s", why[s]);
        } else {
            for (int a = 0; a < n_ask; a++)
                outcome(&x[s * ASK_N + a], timeout_s, &answer[a], reason[a], sizeof reason[a]);
        }
        const bool ok = answer[ASK_STATUS] != NULL;
        json_object_set_new(o, "reachable", json_boolean(ok));
        json_object_set_new(o, "error", ok ? json_null() : json_string(reason[ASK_STATUS]));
        json_object_set_new(o, "elapsed_s", json_real(round(x[s * ASK_N].seconds * 1000) / 1000));
        json_t *problems = json_array();
        if (ok) {
            fill_status(o, answer[ASK_STATUS]);
        } else {
            json_object_update_new(o, json_pack("{s:n, s:n, s:n, s:n, s:[], s:n}", "version", "instance_id", "ready",
                                                "uptime_s", "models", "load"));
        }
        if (full && ok) {
            json_object_set_new(o, "usage_today", answer[ASK_USAGE] ? usage_today(answer[ASK_USAGE], answer[ASK_STATUS])
                                                                    : json_null());
            json_object_set_new(o, "doctor", answer[ASK_DOCTOR] ? doctor_verdict(answer[ASK_DOCTOR]) : json_null());
            for (int a = ASK_USAGE; a < ASK_N; a++)
                if (!answer[a])
                    json_array_append_new(problems, json_sprintf("%s: %s", ask_name[a], reason[a]));
        } else {
            json_object_update_new(o, json_pack("{s:n, s:n}", "usage_today", "doctor"));
        }
        json_object_set_new(o, "problems", problems);
        for (int a = 0; a < ASK_N; a++)
            json_decref(answer[a]);
        if (!o || json_array_append_new(out, o)) {
            json_decref(out);
            out = NULL;
            pb_fail(err, PB_ENOMEM, "out of memory");
        }
    }
done:
    for (int i = 0; x && i < f->n * ASK_N; i++) {
        if (x[i].h) {
            curl_multi_remove_handle(multi, x[i].h);
            curl_easy_cleanup(x[i].h);
        }
        sbuf_free(&x[i].body);
    }
    for (int s = 0; hdrs && s < f->n; s++)
        curl_slist_free_all(hdrs[s]); /* the key in them stays in freed memory: libcurl copies it anyway */
    if (multi)
        curl_multi_cleanup(multi);
    free(x);
    free(hdrs);
    free(why);
    return out;
}

/* ---- which sites run which digest of a model ---- */

/* Does a served model (its source and id) match the wanted ref? */
static bool serves(const char *source, const char *id, const struct store_ref *want, bool tag_given,
                   const char *text)
{
    struct store_ref r;
    if (source && store_ref_parse(source, &r, NULL) == PB_OK && !strcmp(r.name, want->name) &&
        (!tag_given || !strcmp(r.tag, want->tag)))
        return true;
    return id && !strcasecmp(id, text);
}

json_t *fleet_check(const json_t *sites, const char *model, pb_err *err)
{
    struct store_ref want;
    if (store_ref_parse(model, &want, err))
        return NULL;
    const bool tag_given = strchr(model, ':') != NULL;
    json_t *list = json_array(), *digests = json_array(), *not_served = json_array(), *unreachable = json_array();
    json_t *site;
    size_t i;
    json_array_foreach(sites, i, site) {
        json_t *name = json_object_get(site, "name");
        json_t *o = json_pack("{s:O, s:O, s:O, s:O}", "name", name, "url", json_object_get(site, "url"), "reachable",
                              json_object_get(site, "reachable"), "error", json_object_get(site, "error"));
        json_t *served = json_array(), *m;
        size_t k;
        json_array_foreach(json_object_get(site, "models"), k, m) {
            const char *src = json_string_value(json_object_get(m, "source")),
                       *id = json_string_value(json_object_get(m, "id"));
            if (!serves(src, id, &want, tag_given, model))
                continue;
            json_t *digest = json_object_get(m, "digest");
            json_array_append_new(served, json_pack("{s:O, s:O, s:O}", "id", json_object_get(m, "id"), "source",
                                                    json_object_get(m, "source"), "digest", digest));
            /* the digest's group (null: a file outside a store) */
            json_t *g = NULL, *d;
            size_t j;
            json_array_foreach(digests, j, d) {
                if (json_equal(json_object_get(d, "digest"), digest)) {
                    g = d;
                    break;
                }
            }
            if (!g) {
                g = json_pack("{s:O, s:[]}", "digest", digest ? digest : json_null(), "sites");
                json_array_append_new(digests, g);
            }
            json_t *names = json_object_get(g, "sites");
            if (!json_equal(json_array_get(names, json_array_size(names) - 1), name))
                json_array_append(names, name);
        }
        if (!json_is_true(json_object_get(site, "reachable")))
            json_array_append(unreachable, name);
        else if (json_array_size(served) == 0)
            json_array_append(not_served, name);
        json_object_set_new(o, "served", served);
        json_array_append_new(list, o);
    }
    json_t *v = json_pack("{s:s, s:o, s:o, s:o, s:o}", "model", model, "sites", list, "digests", digests,
                          "not_served", not_served, "unreachable", unreachable);
    if (!v)
        pb_fail(err, PB_ENOMEM, "out of memory");
    return v;
}
