/* plumb pull: a URL (libcurl: redirects, resumed with Range requests,
 * retried with back-off) or a local file (copied, reflinked, or
 * hard-linked when asked) into a
 * locked temporary file, hashed as it is written, checked (digest, GGUF),
 * then registered (reg_add). Also the scan of a directory of models. */
#define _GNU_SOURCE
#include "store/store_internal.h"
#include "base/err.h"
#include "base/http.h"

#include "gguf/gguf.h"
#include "quant/ftype.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ATTEMPTS 8
#define DEFAULT_RETRY_MS 1000
#define MAX_RETRY_MS 30000
#define COPY_CHUNK (1u << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool is_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

int store_digest_parse(const char *text, char out[65], pb_err *err)
{
    const char *p = strncasecmp(text, "sha256:", 7) == 0 ? text + 7 : text;
    size_t n = strlen(p);
    for (size_t i = 0; i < n && i < 64; i++)
        out[i] = (char)tolower((unsigned char)p[i]);
    out[n < 64 ? n : 64] = 0;
    if (n != 64 || !files_is_digest(out))
        return pb_fail(err, PB_EINVAL, "'%.80s' is not a SHA-256 digest (64 hexadecimal digits)", text);
    return PB_OK;
}

/* The default name: the source's last path component without .gguf,
 * characters a name cannot hold replaced by '-'. */
static int default_ref(const char *source, struct store_ref *ref, pb_err *err)
{
    const char *end = source + strlen(source);
    if (is_url(source))
        end = source + strcspn(source, "?#");
    while (end > source && end[-1] == '/')
        end--;
    const char *base = end;
    while (base > source && base[-1] != '/')
        base--;
    size_t len = (size_t)(end - base);
    if (len > 5 && strncasecmp(end - 5, ".gguf", 5) == 0)
        len -= 5;
    char name[STORE_NAME_MAX + 1];
    size_t o = 0;
    for (size_t i = 0; i < len && o < STORE_NAME_MAX; i++) {
        char c = base[i];
        bool ok = isalnum((unsigned char)c) || c == '-' || c == '_' || (c == '.' && o > 0 && name[o - 1] != '.');
        if (o == 0 && !isalnum((unsigned char)c))
            continue;
        name[o++] = ok ? c : '-';
    }
    name[o] = 0;
    if (!o || store_ref_parse(name, ref, NULL) != PB_OK)
        return pb_fail(err, PB_EINVAL, "cannot make a model name from '%.200s': give one with --name", source);
    return PB_OK;
}

/* ---- writing the temporary file ---- */

struct sink {
    int fd;
    const char *path;
    struct sha256 *hash;
    uint64_t have;  /* bytes in the file */
    uint64_t total; /* expected size, 0 when unknown */
    int werr;       /* errno of a failed write */
    const struct store_pull_opts *o;
    const char *label;
    double last_progress;
};

static bool cancelled(const struct sink *k)
{
    return k->o->cancel && *k->o->cancel;
}

static void sink_progress(struct sink *k, bool force)
{
    if (!k->o->progress)
        return;
    double t = now_s();
    if (!force && t - k->last_progress < 0.1)
        return;
    k->last_progress = t;
    k->o->progress(k->o->user, k->have, k->total > k->have ? k->total : k->have, k->label);
}

static bool sink_write(struct sink *k, const void *p, size_t n)
{
    if ((k->werr = files_write_all(k->fd, p, n)))
        return false;
    sha256_update(k->hash, p, n);
    k->have += n;
    sink_progress(k, false);
    return true;
}

/* Empties the file: the transfer starts over from the first byte. */
static bool sink_restart(struct sink *k)
{
    if (ftruncate(k->fd, 0) != 0 || lseek(k->fd, 0, SEEK_SET) != 0) {
        k->werr = errno;
        return false;
    }
    sha256_reset(k->hash);
    k->have = 0;
    return true;
}

static int sink_write_fail(struct sink *k, pb_err *err)
{
    return pb_fail(err, PB_EIO, "writing %s: %s", k->path, strerror(k->werr));
}

/* ---- http(s) ---- */

/* A transfer resumes only when the origin names the version of the file
 * it sends (a strong ETag, else Last-Modified): the resumed request asks
 * for the rest of that version alone (If-Range), and a 206 whose total
 * length or validator differs from the first response's is refused. Else
 * two versions of a file (the origin changed, a mirror answered
 * differently) could be spliced into one that is neither. A transfer
 * without a validator starts over. */
struct dl {
    struct sink *k;
    CURL *h;
    uint64_t from;      /* offset this request asked for */
    bool started;       /* a body byte of this response was seen */
    bool bad_range;     /* the server answered another range than asked */
    bool changed;       /* the 206 is of another version of the file than the first response */
    int64_t range_start;/* Content-Range of the current response, -1 when none */
    uint64_t range_total;
    char etag[256], last_modified[256]; /* of the current response ("" when absent; weak ETags not kept) */
    /* the version the file being written is of, from the response that
     * began it */
    char validator[256];
    uint64_t first_total; /* its whole length, 0 when unknown */
};

/* The value of header line p (len bytes) named name, trimmed, into buf;
 * false when p is another header. A value too long to be of use, or
 * holding a control byte other than tab, is "": a validator is sent back
 * in If-Range, where a CR would end the line early (a server that takes a
 * bare CR for a line break reads the rest as a header of plumb's
 * request) and a NUL would cut it, so that two versions could share it. */
static bool header_value(const char *p, size_t len, const char *name, char *buf, size_t size)
{
    size_t n;
    const char *v = http_field_value(p, len, name, &n);
    if (!v)
        return false;
    for (size_t i = 0; i < n && n < size; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            n = size; /* not a field value */
    if (n >= size)
        n = 0; /* too long to be of use, or not a field value */
    memcpy(buf, v, n);
    buf[n] = 0;
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *user)
{
    struct dl *d = user;
    size_t len = size * n;
    char v[256];
    if (len >= 5 && strncasecmp(p, "HTTP/", 5) == 0) {
        d->range_start = -1; /* a new response (after a redirect) */
        d->range_total = 0;
        d->etag[0] = d->last_modified[0] = 0;
    } else if (header_value(p, len, "ETag", v, sizeof v)) {
        if (v[0] == '"') /* strong: W/"..." may not be used to resume */
            memcpy(d->etag, v, sizeof v);
    } else if (header_value(p, len, "Last-Modified", v, sizeof v)) {
        memcpy(d->last_modified, v, sizeof v);
    } else if (len > 14 && strncasecmp(p, "Content-Range:", 14) == 0) {
        char buf[128];
        snprintf(buf, sizeof buf, "%.*s", (int)(len - 14 < 127 ? len - 14 : 127), p + 14);
        unsigned long long a, b, t;
        if (sscanf(buf, " bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
            d->range_start = (int64_t)a;
            d->range_total = t;
        } else if (sscanf(buf, " bytes %llu-%llu/*", &a, &b) == 2) {
            d->range_start = (int64_t)a;
        }
    }
    return len;
}

/* The current response's validator: its strong ETag, else its
 * Last-Modified, else "". */
static const char *response_validator(const struct dl *d)
{
    return d->etag[0] ? d->etag : d->last_modified;
}

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    struct dl *d = user;
    struct sink *k = d->k;
    if (cancelled(k))
        return 0;
    if (!d->started) {
        d->started = true;
        long code = 0;
        curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &code);
        if (d->from > 0 && code == 206 && d->range_start != (int64_t)d->from) {
            d->bad_range = true; /* unusable: the next request starts over */
            return 0;
        }
        if (d->from > 0 && code == 206 &&
            ((d->first_total && d->range_total && d->range_total != d->first_total) ||
             (response_validator(d)[0] && strcmp(response_validator(d), d->validator) != 0))) {
            d->changed = true; /* the rest of another version: the next request starts over */
            return 0;
        }
        /* a server that ignores the range, or whose file changed (If-Range),
         * sends everything again */
        if (d->from > 0 && code != 206 && !sink_restart(k))
            return 0;
        curl_off_t cl = -1;
        curl_easy_getinfo(d->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (code == 206 && d->range_total)
            k->total = d->range_total;
        else if (cl >= 0)
            k->total = k->have + (uint64_t)cl;
        if (code != 206) { /* the file begins here: this response's version */
            memcpy(d->validator, response_validator(d), sizeof d->validator);
            d->first_total = cl >= 0 ? (uint64_t)cl : 0;
        }
    }
    return sink_write(k, p, size * n) ? size * n : 0;
}

static int on_xfer(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return cancelled(((struct dl *)user)->k);
}

static bool transient(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Sleeps ms milliseconds in small steps, false when cancelled. */
static bool backoff(const struct sink *k, int ms)
{
    for (int t = 0; t < ms; t += 50) {
        if (cancelled(k))
            return false;
        struct timespec ts = {0, (long)(ms - t < 50 ? ms - t : 50) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return !cancelled(k);
}

/* A transfer of url with plumb's options, reporting to d; NULL when
 * libcurl cannot make one. */
static CURL *transfer_new(const char *url, struct dl *d, char *errbuf)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "plumb/0.1");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L); /* stalled for a minute: try again */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, d);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, d);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    if (d->k->o->bearer_token) {
        /* libcurl's own authentication: sent to the URL's host, dropped
         * on a redirect to another host or port (CURLOPT_UNRESTRICTED_AUTH
         * stays off). Not a header of CURLOPT_HTTPHEADER: libcurl since
         * 7.58 drops a custom Authorization header there too, but any
         * other custom header follows the redirect. test_registry checks
         * that a CDN the registry redirects to gets no Authorization. */
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
        curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, d->k->o->bearer_token);
    }
    return h;
}

/* Each attempt is a transfer of its own (a new handle): libcurl 7.88
 * (Debian 12) keeps a pointer to the last response header of a handle's
 * previous transfer, freed when the next one begins, and a folded line
 * (one starting with a space) right after the next response's status
 * line is appended to it (a use after free, curl issue 11101, fixed in
 * 8.1.0). A server could reach it with any error, then such a line. */
static int download(const char *url, struct sink *k, int *attempts, long *http_status, pb_err *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return pb_fail(err, PB_EIO, "libcurl: %s", curl_easy_strerror(curl_init_rc));
    char errbuf[CURL_ERROR_SIZE];
    struct dl d = {.k = k, .range_start = -1};
    CURL *h = NULL;
    int max = k->o->max_attempts > 0 ? k->o->max_attempts : DEFAULT_ATTEMPTS;
    int delay = k->o->retry_delay_ms > 0 ? k->o->retry_delay_ms : DEFAULT_RETRY_MS;
    int rc = PB_OK;
    struct curl_slist *if_range = NULL;
    for (int attempt = 1;; attempt++) {
        *attempts = attempt;
        /* resume only the version begun, named by its validator */
        if (k->have > 0 && !d.validator[0] && !sink_restart(k)) {
            rc = sink_write_fail(k, err);
            break;
        }
        d.from = k->have;
        d.started = false;
        d.bad_range = false;
        d.changed = false;
        d.range_start = -1;
        curl_slist_free_all(if_range);
        if_range = NULL;
        if (d.from > 0) {
            char line[300];
            snprintf(line, sizeof line, "If-Range: %s", d.validator);
            if (!(if_range = curl_slist_append(NULL, line))) {
                rc = pb_fail(err, PB_ENOMEM, "out of memory");
                break;
            }
        }
        curl_easy_cleanup(h);
        if (!(d.h = h = transfer_new(url, &d, errbuf))) {
            rc = pb_fail(err, PB_ENOMEM, "libcurl: cannot create a transfer");
            break;
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, if_range);
        curl_easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)d.from);
        errbuf[0] = 0;
        CURLcode c = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (cancelled(k)) {
            rc = pb_fail(err, PB_EIO, "interrupted");
            break;
        }
        if (k->werr) {
            rc = sink_write_fail(k, err);
            break;
        }
        char why[CURL_ERROR_SIZE + 64];
        bool retry;
        if (c == CURLE_OK && (!k->total || k->have == k->total)) {
            break;
        } else if (c == CURLE_OK) {
            snprintf(why, sizeof why, "the server sent %llu of %llu bytes", (unsigned long long)k->have,
                     (unsigned long long)k->total);
            retry = true;
        } else if (c == CURLE_HTTP_RETURNED_ERROR) {
            snprintf(why, sizeof why, "HTTP %ld", code);
            *http_status = code;
            retry = code >= 500 || code == 408 || code == 429;
            if (code == 416 && d.from > 0) /* the range no longer fits: start over */
                retry = sink_restart(k);
        } else if (d.bad_range) {
            snprintf(why, sizeof why, "the server sent another part of the file than asked");
            retry = sink_restart(k);
        } else if (d.changed) {
            snprintf(why, sizeof why, "the file changed on the server while it was downloaded (its length or "
                     "version differs)");
            retry = sink_restart(k);
        } else if (c == CURLE_RANGE_ERROR) {
            snprintf(why, sizeof why, "the server does not resume downloads");
            retry = sink_restart(k);
        } else {
            snprintf(why, sizeof why, "%s", errbuf[0] ? errbuf : curl_easy_strerror(c));
            retry = transient(c);
        }
        if (c != CURLE_HTTP_RETURNED_ERROR)
            *http_status = 0;
        if (!retry || attempt >= max) {
            rc = pb_fail(err, PB_EIO, "downloading %.300s: %s%s", url, why,
                         retry ? " (gave up after the last attempt)" : "");
            if (attempt > 1)
                pb_wrap(err, PB_EIO, "after %d attempts", attempt);
            break;
        }
        if (!backoff(k, delay)) {
            rc = pb_fail(err, PB_EIO, "interrupted");
            break;
        }
        delay = delay * 2 < MAX_RETRY_MS ? delay * 2 : MAX_RETRY_MS;
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(if_range);
    return rc;
}

/* ---- local files ---- */

static int copy_file(int src, const char *name, struct sink *k, pb_err *err)
{
    char *buf = malloc(COPY_CHUNK);
    int rc = PB_OK;
    if (!buf)
        return pb_fail(err, PB_ENOMEM, "out of memory copying %s", name);
    (void)posix_fadvise(src, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (;;) {
        if (cancelled(k)) {
            rc = pb_fail(err, PB_EIO, "interrupted");
            break;
        }
        ssize_t n = read(src, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pb_fail(err, PB_EIO, "reading %s: %s", name, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (!sink_write(k, buf, (size_t)n)) {
            rc = sink_write_fail(k, err);
            break;
        }
    }
    free(buf);
    return rc;
}

/* Makes *tmp a hard link to src (same file system); true when it worked
 * and the link is claimed (else *tmp is left as it was). */
static bool link_file(const char *src, char *tmp, int *fd)
{
    char path[STORE_PATH_MAX];
    snprintf(path, sizeof path, "%s.lnk", tmp);
    if (link(src, path) != 0)
        return false;
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0 || files_claim(f, path) != 1) {
        if (f >= 0)
            close(f);
        unlink(path);
        return false;
    }
    /* the empty file goes; the link takes its place */
    unlink(tmp);
    close(*fd);
    *fd = f;
    strcpy(tmp, path);
    return true;
}

/* Makes the temporary file at fd a clone of src (FICLONE: the file
 * systems that share extents copy on write, so an edit of either file
 * stays in it); true when the file system did. */
static bool reflink_file(int src, int fd)
{
#ifdef FICLONE
    return ioctl(fd, FICLONE, src) == 0;
#else
    (void)src, (void)fd;
    return false;
#endif
}

/* ---- checking ---- */

int blob_read_meta(int fd, const char *source, struct blob_meta *m, pb_err *err)
{
    struct gguf_file *f;
    pb_err gerr = {0};
    memset(m, 0, sizeof *m);
    if (gguf_open_fd(fd, source, false, &f, &gerr))
        return pb_fail(err, PB_EFORMAT, "not a valid GGUF model: %s", gerr.msg);
    m->size = gguf_file_size(f);
    struct gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch, NULL) == 1) {
        size_t n = arch.len < sizeof m->arch - 1 ? (size_t)arch.len : sizeof m->arch - 1;
        for (size_t i = 0; i < n; i++)
            m->arch[i] = isprint((unsigned char)arch.data[i]) ? arch.data[i] : '?';
        m->arch[n] = 0;
    }
    int64_t ft;
    const char *ftn = gguf_get_int(f, "general.file_type", &ft, NULL) == 1 ? pb_ftype_name(ft) : NULL;
    if (ftn)
        snprintf(m->quant, sizeof m->quant, "%s", ftn);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        m->n_params += (uint64_t)gguf_tensor_nelements(gguf_tensor(f, i));
    gguf_close(f);
    return PB_OK;
}

int store_pull(struct store *s, const char *source, const struct store_pull_opts *o, struct store_pull_result *res,
               pb_err *err)
{
    static const struct store_pull_opts defaults;
    struct store_ref ref;
    char want[65] = "", got[65], tmp[STORE_PATH_MAX + 8] = "", label[STORE_NAME_MAX + STORE_TAG_MAX + 2];
    struct sink k = {.fd = -1};
    struct blob_meta meta;
    int src = -1, rc;
    if (!o)
        o = &defaults;
    memset(res, 0, sizeof *res);
    if (!source || !*source)
        return pb_fail(err, PB_EINVAL, "no source given");
    if (o->sha256 && (rc = store_digest_parse(o->sha256, want, err)))
        return pb_wrap(err, rc, "sha256");
    if ((rc = o->name ? store_ref_parse(o->name, &ref, err) : default_ref(source, &ref, err)))
        return rc;
    bool url = is_url(source);
    if (!url && strstr(source, "://"))
        return pb_fail(err, PB_EUNSUPPORTED, "%.200s: only http:// and https:// URLs, or local files", source);
    if (o->if_absent && !want[0])
        return pb_fail(err, PB_EINVAL, "if_absent needs the expected digest (sha256)");
    if (o->if_absent && url && (rc = reg_point_known(s, &ref, want, source, res, err)) != PB_ENOTFOUND)
        return rc; /* the file is here (PB_OK), or the registry failed */
    store_ref_format(&ref, label, sizeof label);
    k.o = o;
    k.label = label;
    if ((rc = sha256_new(&k.hash, err)) || (rc = files_tmp_create(s, "pull", "part", tmp, sizeof tmp - 4, &k.fd, err)))
        goto fail;
    k.path = tmp;
    if (url) {
        if ((rc = download(source, &k, &res->attempts, &res->http_status, err)))
            goto fail;
        sha256_final_hex(k.hash, got);
    } else {
        struct stat st;
        /* O_NONBLOCK: a FIFO without a writer must not block the open (it
         * is refused below); reads of a regular file are unaffected */
        src = open(source, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (src < 0 || fstat(src, &st) != 0) {
            rc = pb_fail(err, PB_EIO, "%.300s: %s", source, strerror(errno));
            goto fail;
        }
        if (S_ISDIR(st.st_mode)) {
            rc = pb_fail(err, PB_EINVAL, "%.300s is a directory (its models are pulled one by one)", source);
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            if (!(rc = pb_check_input(source, err))) /* says what it is */
                rc = pb_fail(err, PB_EINVAL, "%.300s is not a regular file", source);
            goto fail;
        }
        k.total = (uint64_t)st.st_size;
        if (o->link && link_file(source, tmp, &k.fd)) {
            res->linked = true;
            k.path = tmp;
            if ((rc = files_hash_fd(k.fd, source, got, &k.have, o->progress, o->user, o->cancel, err)))
                goto fail;
        } else if (reflink_file(src, k.fd)) {
            res->reflinked = true;
            if ((rc = files_hash_fd(k.fd, source, got, &k.have, o->progress, o->user, o->cancel, err)))
                goto fail;
        } else {
            if ((rc = copy_file(src, source, &k, err)))
                goto fail;
            sha256_final_hex(k.hash, got);
        }
    }
    sink_progress(&k, true);
    if (!res->linked && fsync(k.fd) != 0) {
        k.werr = errno;
        rc = sink_write_fail(&k, err);
        goto fail;
    }
    if (want[0] && strcmp(want, got) != 0) {
        rc = pb_fail(err, PB_EFORMAT, "%.300s: SHA-256 mismatch: expected %s, got %s", source, want, got);
        goto fail;
    }
    if ((rc = blob_read_meta(k.fd, source, &meta, err)))
        goto fail;
    if (meta.size != k.have) {
        rc = pb_fail(err, PB_EIO, "%.300s changed while it was read", source);
        goto fail;
    }
    if (!res->linked)
        (void)fchmod(k.fd, 0444); /* blobs are not edited in place */
    rc = reg_add(s, &ref, got, &meta, tmp, res->linked, source, res, err);
fail:
    if (tmp[0])
        unlink(tmp); /* renamed into blobs/ already, or not wanted */
    if (k.fd >= 0)
        close(k.fd);
    if (src >= 0)
        close(src);
    sha256_free(k.hash);
    return rc;
}

/* ---- a directory of models ---- */

static int cmp_items(const void *a, const void *b)
{
    return strcmp(((const struct store_dir_item *)a)->path, ((const struct store_dir_item *)b)->path);
}

/* Reads dir/SHA256SUMS ("HEX  NAME" or "HEX *NAME" lines) into items. */
static int read_sums(const char *dir, struct store_dir_item *items, size_t n, bool *have, pb_err *err)
{
    char path[STORE_PATH_MAX], line[4096 + 80];
    snprintf(path, sizeof path, "%s/SHA256SUMS", dir);
    FILE *f = fopen(path, "r");
    *have = f != NULL;
    if (!f)
        return errno == ENOENT ? PB_OK : pb_fail(err, PB_EIO, "%s: %s", path, strerror(errno));
    int rc = PB_OK;
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        size_t len = strcspn(line, "\r\n");
        if (line[len] == 0 && !feof(f)) {
            rc = pb_fail(err, PB_EFORMAT, "%s:%d: line too long", path, lineno);
            break;
        }
        line[len] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char digest[65];
        if (len < 66 || line[64] != ' ' || (line[65] != ' ' && line[65] != '*')) {
            rc = pb_fail(err, PB_EFORMAT, "%s:%d: expected 'SHA256  FILE'", path, lineno);
            break;
        }
        for (int i = 0; i < 64; i++)
            digest[i] = (char)tolower((unsigned char)line[i]);
        digest[64] = 0;
        if (!files_is_digest(digest)) {
            rc = pb_fail(err, PB_EFORMAT, "%s:%d: '%.64s' is not a SHA-256 digest", path, lineno, line);
            break;
        }
        const char *file = line + 66;
        for (size_t i = 0; i < n; i++) {
            const char *base = strrchr(items[i].path, '/');
            if (strcmp(base ? base + 1 : items[i].path, file) == 0)
                memcpy(items[i].sha256, digest, 65);
        }
    }
    fclose(f);
    return rc;
}

int store_scan_dir(const char *dir, struct store_dir_item **out, size_t *n, bool *have_sums, pb_err *err)
{
    *out = NULL;
    *n = 0;
    *have_sums = false;
    DIR *d = opendir(dir);
    if (!d)
        return pb_fail(err, PB_EIO, "%.300s: %s", dir, strerror(errno));
    struct store_dir_item *v = NULL;
    size_t len = 0;
    int rc = PB_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (de->d_name[0] == '.' || nl <= 5 || strcasecmp(de->d_name + nl - 5, ".gguf") != 0)
            continue;
        char path[STORE_PATH_MAX];
        struct stat st;
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path || stat(path, &st) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        struct store_dir_item *nv = realloc(v, (len + 1) * sizeof *v);
        if (!nv || !(nv[len].path = strdup(path))) {
            if (nv)
                v = nv;
            rc = pb_fail(err, PB_ENOMEM, "out of memory reading %s", dir);
            goto fail;
        }
        v = nv;
        v[len++].sha256[0] = 0;
    }
    closedir(d);
    d = NULL;
    if (len)
        qsort(v, len, sizeof *v, cmp_items);
    if ((rc = read_sums(dir, v, len, have_sums, err)))
        goto fail;
    *out = v;
    *n = len;
    return PB_OK;
fail:
    if (d)
        closedir(d);
    store_dir_free(v, len);
    return rc;
}

void store_dir_free(struct store_dir_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i].path);
    free(items);
}
