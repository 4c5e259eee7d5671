/* plumb export / import: air-gap bundles (store.h has the format). The
 * tar is written and read with libarchive, streaming: a bundle of a 40 GB
 * model never sits in memory, and an import holds each blob only in its
 * temporary file in the store until every one has been verified. */
#define _GNU_SOURCE
#include "store/store_internal.h"
#include "base/err.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUNDLE_FORMAT "plumb-bundle"
#define BUNDLE_FORMAT_VERSION 1
#define MANIFEST_NAME "manifest.json"
#define MANIFEST_MAX (4u << 20) /* bytes: far more than thousands of names need */
#define BUNDLE_MAX_ITEMS 4096   /* blobs, and names, in one bundle */
#define CHUNK (1u << 20)
#define REF_LEN (STORE_NAME_MAX + STORE_TAG_MAX + 2)

void store_bundle_result_free(struct store_bundle_result *res)
{
    if (!res)
        return;
    free(res->models);
    res->models = NULL;
    res->n_models = 0;
}

/* "blobs/sha256-HEX": a blob's name inside a bundle. */
static void blob_entry_name(const char *digest, char *buf, size_t size)
{
    snprintf(buf, size, "blobs/sha256-%s", digest);
}

static bool cancelled(const struct store_bundle_opts *o)
{
    return o->cancel && *o->cancel;
}

/* Bytes from a bundle in a message: printable, shortened. */
static void printable(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    for (; s && *s && o + 1 < size && o < 120; s++)
        buf[o++] = isprint((unsigned char)*s) ? *s : '?';
    buf[o] = 0;
}

/* ---- export ---- */

struct out_blob {
    char digest[65];
    uint64_t size;
    int fd;
    const struct store_entry *e; /* the first name using it (metadata, progress label) */
};

static json_t *manifest_json(const struct store_entry *e, size_t n, const struct out_blob *b, size_t nb,
                             const char *version)
{
    char when[32], name[80];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    json_t *blobs = json_array(), *models = json_array();
    for (size_t i = 0; i < nb; i++) {
        char d[72];
        snprintf(d, sizeof d, "sha256:%s", b[i].digest);
        blob_entry_name(b[i].digest, name, sizeof name);
        json_array_append_new(blobs, json_pack("{s:s,s:I,s:s,s:s,s:s,s:I}", "digest", d, "size",
                                               (json_int_t)b[i].size, "path", name, "architecture", b[i].e->arch,
                                               "quantization", b[i].e->quant, "parameters",
                                               (json_int_t)b[i].e->n_params));
    }
    for (size_t i = 0; i < n; i++) {
        char d[72];
        snprintf(d, sizeof d, "sha256:%s", e[i].digest);
        json_array_append_new(models, json_pack("{s:s,s:s,s:s}", "name", e[i].ref.name, "tag", e[i].ref.tag,
                                                "digest", d));
    }
    return json_pack("{s:s,s:i,s:s,s:s,s:o,s:o}", "format", BUNDLE_FORMAT, "format_version", BUNDLE_FORMAT_VERSION,
                     "plumb_version", version ? version : "", "created", when, "blobs", blobs, "models", models);
}

static int arch_fail(struct archive *a, pb_err *err, const char *path, const char *what)
{
    return pb_fail(err, PB_EIO, "%s: %s: %s", path, what, archive_error_string(a) ? archive_error_string(a) : "error");
}

static int write_header(struct archive *a, const char *name, uint64_t size, const char *path, pb_err *err)
{
    struct archive_entry *h = archive_entry_new();
    if (!h)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    archive_entry_set_pathname(h, name);
    archive_entry_set_filetype(h, AE_IFREG);
    archive_entry_set_perm(h, 0444);
    archive_entry_set_size(h, (la_int64_t)size);
    archive_entry_set_mtime(h, time(NULL), 0);
    int r = archive_write_header(a, h);
    archive_entry_free(h);
    return r == ARCHIVE_OK ? PB_OK : arch_fail(a, err, path, "writing");
}

static int write_data(struct archive *a, const void *p, size_t n, const char *path, pb_err *err)
{
    la_ssize_t w = archive_write_data(a, p, n);
    return w == (la_ssize_t)n ? PB_OK : arch_fail(a, err, path, "writing");
}

/* Copies a blob into the bundle, re-hashing it: a blob that no longer
 * matches its name is not exported. */
static int write_blob(struct archive *a, const struct out_blob *b, char *buf, struct sha256 *h, const char *path,
                      const struct store_bundle_opts *o, pb_err *err)
{
    char name[80], label[REF_LEN];
    blob_entry_name(b->digest, name, sizeof name);
    store_ref_format(&b->e->ref, label, sizeof label);
    int rc = write_header(a, name, b->size, path, err);
    if (rc)
        return rc;
    sha256_reset(h);
    (void)posix_fadvise(b->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint64_t done = 0;
    while (done < b->size) {
        if (cancelled(o))
            return pb_fail(err, PB_EIO, "interrupted");
        size_t want = b->size - done < CHUNK ? (size_t)(b->size - done) : CHUNK;
        ssize_t n = pread(b->fd, buf, want, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pb_fail(err, PB_EIO, "reading the file of %s: %s", label, strerror(errno));
        if (n == 0)
            return pb_fail(err, PB_EIO, "the file of %s is shorter than registered: run plumb verify", label);
        sha256_update(h, buf, (size_t)n);
        if ((rc = write_data(a, buf, (size_t)n, path, err)))
            return rc;
        done += (uint64_t)n;
        if (o->progress)
            o->progress(o->user, done, b->size, label);
    }
    char got[65];
    sha256_final_hex(h, got);
    if (strcmp(got, b->digest))
        return pb_fail(err, PB_EIO, "the file of %s does not match its SHA-256 (the store is damaged): run plumb "
                       "verify and pull it again", label);
    return PB_OK;
}

/* The entries of refs, each name once, and the distinct blobs they use,
 * each opened (an open file survives a concurrent rm). */
static int export_collect(struct store *s, const char *const *refs, size_t n_refs, struct store_entry *e, size_t *ne,
                          struct out_blob *b, size_t *nb, pb_err *err)
{
    *ne = *nb = 0;
    for (size_t i = 0; i < n_refs; i++) {
        struct store_entry x;
        int rc = store_lookup(s, refs[i], &x, err);
        if (rc)
            return rc;
        bool dup = false;
        for (size_t j = 0; j < *ne && !dup; j++)
            dup = !strcmp(e[j].ref.name, x.ref.name) && !strcmp(e[j].ref.tag, x.ref.tag);
        if (dup)
            continue;
        e[(*ne)++] = x;
    }
    for (size_t i = 0; i < *ne; i++) {
        bool have = false;
        for (size_t j = 0; j < *nb && !have; j++)
            have = !strcmp(b[j].digest, e[i].digest);
        if (have)
            continue;
        struct out_blob *o = &b[(*nb)++];
        memcpy(o->digest, e[i].digest, sizeof o->digest);
        o->size = e[i].size;
        o->e = &e[i];
        char path[STORE_PATH_MAX];
        store_blob_path(s, o->digest, path, sizeof path);
        struct stat st;
        o->fd = open(path, O_RDONLY | O_CLOEXEC);
        char label[REF_LEN];
        store_ref_format(&e[i].ref, label, sizeof label);
        if (o->fd < 0 || fstat(o->fd, &st) != 0)
            return pb_fail(err, PB_EIO, "the file of %s: %s: run plumb verify", label, strerror(errno));
        if ((uint64_t)st.st_size != o->size)
            return pb_fail(err, PB_EIO, "the file of %s has %lld bytes, not the %llu registered: run plumb verify",
                           label, (long long)st.st_size, (unsigned long long)o->size);
    }
    return PB_OK;
}

int store_export(struct store *s, const char *const *refs, size_t n_refs, const char *path,
                 const struct store_bundle_opts *o, struct store_bundle_result *res, pb_err *err)
{
    static const struct store_bundle_opts defaults;
    if (!o)
        o = &defaults;
    memset(res, 0, sizeof *res);
    if (!n_refs)
        return pb_fail(err, PB_EINVAL, "no models named");
    if (n_refs > BUNDLE_MAX_ITEMS)
        return pb_fail(err, PB_ERANGE, "at most %d models in one bundle", BUNDLE_MAX_ITEMS);
    if (!path || !*path)
        return pb_fail(err, PB_EINVAL, "no output file given");
    /* "-": standard output, a stream (no temporary file, no rename);
     * anything else is written beside path and renamed over it, which
     * must not replace a device node or a FIFO */
    const bool to_stdout = !strcmp(path, "-");
    int rc;
    if (!to_stdout && (rc = pb_check_output(path, err)))
        return rc;
    char tmp[STORE_PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.partial-%d", path, (int)getpid()) >= sizeof tmp)
        return pb_fail(err, PB_EINVAL, "output path too long");
    if (to_stdout)
        snprintf(tmp, sizeof tmp, "(standard output)");
    struct store_entry *e = calloc(n_refs, sizeof *e);
    struct out_blob *b = calloc(n_refs, sizeof *b);
    char *buf = malloc(CHUNK);
    struct sha256 *h = NULL;
    struct archive *a = NULL;
    char *manifest = NULL;
    size_t ne = 0, nb = 0;
    bool opened = false;
    if (!e || !b || !buf) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_refs; i++)
        b[i].fd = -1;
    if ((rc = export_collect(s, refs, n_refs, e, &ne, b, &nb, err)) || (rc = sha256_new(&h, err)))
        goto out;
    json_t *m = manifest_json(e, ne, b, nb, o->plumb_version);
    manifest = m ? json_dumps(m, JSON_INDENT(2)) : NULL;
    json_decref(m);
    if (!manifest) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory writing the manifest");
        goto out;
    }
    a = archive_write_new();
    if (!a) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto out;
    }
    /* pax where a size needs it (files over 8 GiB), plain ustar otherwise:
     * any tar reads the result */
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_add_filter_none(a) != ARCHIVE_OK) {
        rc = arch_fail(a, err, path, "setting up");
        goto out;
    }
    if ((to_stdout ? archive_write_open_fd(a, STDOUT_FILENO) : archive_write_open_filename(a, tmp)) != ARCHIVE_OK) {
        rc = arch_fail(a, err, tmp, "creating");
        goto out;
    }
    opened = true;
    if ((rc = write_header(a, MANIFEST_NAME, strlen(manifest), tmp, err)) ||
        (rc = write_data(a, manifest, strlen(manifest), tmp, err)))
        goto out;
    for (size_t i = 0; i < nb; i++) {
        if ((rc = write_blob(a, &b[i], buf, h, tmp, o, err)))
            goto out;
        res->blob_bytes += b[i].size;
    }
    opened = false;
    if (archive_write_close(a) != ARCHIVE_OK) {
        rc = arch_fail(a, err, tmp, "writing");
        goto out;
    }
    if (!to_stdout) {
        /* durable before it takes the final name */
        int fd = open(tmp, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            rc = pb_fail(err, PB_EIO, "%s: %s", tmp, strerror(errno));
            if (fd >= 0)
                close(fd);
            goto out;
        }
        close(fd);
        if ((rc = pb_check_output(path, err))) /* it may have changed meanwhile */
            goto out;
        if (rename(tmp, path) != 0) {
            rc = pb_fail(err, PB_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
            goto out;
        }
    }
    res->models = calloc(ne, sizeof *res->models);
    if (!res->models) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ne; i++) {
        res->models[i].ref = e[i].ref;
        memcpy(res->models[i].digest, e[i].digest, sizeof res->models[i].digest);
        res->models[i].size = e[i].size;
    }
    res->n_models = ne;
    res->n_blobs = nb;
    snprintf(res->plumb_version, sizeof res->plumb_version, "%s", o->plumb_version ? o->plumb_version : "");
out:
    if (a) {
        if (opened)
            (void)archive_write_close(a);
        archive_write_free(a);
    }
    if (rc && !to_stdout)
        unlink(tmp);
    for (size_t i = 0; b && i < nb; i++)
        if (b[i].fd >= 0)
            close(b[i].fd);
    free(manifest);
    sha256_free(h);
    free(buf);
    free(b);
    free(e);
    return rc;
}

/* ---- import ---- */

struct in_blob {
    char digest[65];
    uint64_t size;
    char entry[80];             /* blobs/sha256-HEX */
    char tmp[STORE_PATH_MAX];   /* its temporary file in the store, "" until written */
    int fd;
    bool seen;
    struct blob_meta meta;
    char label[REF_LEN];        /* the first name using it */
};

struct in_name {
    struct store_ref ref;
    int blob;                   /* index into the blobs */
};

struct manifest {
    struct in_blob *blobs;
    size_t n_blobs;
    struct in_name *names;
    size_t n_names;
    char version[32], created[32];
};

static int bad(pb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(pb_err *err, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pb_fail(err, PB_EFORMAT, "not a valid plumb bundle: %s", msg);
}

/* A list of the manifest (what: "blobs", "models"): 1 to BUNDLE_MAX_ITEMS
 * items, and an array of as many zeroed elements into *out. */
static int manifest_list(json_t *arr, const char *what, size_t elem, void **out, size_t *n, pb_err *err)
{
    *n = json_array_size(arr);
    if (!json_is_array(arr) || *n == 0)
        return bad(err, "the manifest lists no %s", what);
    if (*n > BUNDLE_MAX_ITEMS)
        return bad(err, "the manifest lists %zu %s (at most %d)", *n, what, BUNDLE_MAX_ITEMS);
    if (!(*out = calloc(*n, elem)))
        return pb_fail(err, PB_ENOMEM, "out of memory");
    return PB_OK;
}

static int manifest_blobs(json_t *arr, struct manifest *m, pb_err *err)
{
    size_t n;
    void *items = NULL;
    int rc = manifest_list(arr, "blobs", sizeof *m->blobs, &items, &n, err);
    if (rc)
        return rc;
    m->blobs = items;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i), *d = json_object_get(o, "digest"), *sz = json_object_get(o, "size"),
               *p = json_object_get(o, "path");
        struct in_blob *b = &m->blobs[i];
        b->fd = -1;
        if (!json_is_string(d) || store_digest_parse(json_string_value(d), b->digest, NULL))
            return bad(err, "blob %zu: 'digest' is not a SHA-256 digest", i + 1);
        if (!json_is_integer(sz) || json_integer_value(sz) <= 0)
            return bad(err, "blob %zu: 'size' is not a positive integer", i + 1);
        b->size = (uint64_t)json_integer_value(sz);
        blob_entry_name(b->digest, b->entry, sizeof b->entry);
        if (p && (!json_is_string(p) || strcmp(json_string_value(p), b->entry)))
            return bad(err, "blob %zu: 'path' must be %s", i + 1, b->entry);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m->blobs[j].digest, b->digest))
                return bad(err, "blob sha256:%s is listed twice", b->digest);
        m->n_blobs = i + 1;
    }
    return PB_OK;
}

static int manifest_names(json_t *arr, struct manifest *m, pb_err *err)
{
    size_t n;
    void *items = NULL;
    int rc = manifest_list(arr, "models", sizeof *m->names, &items, &n, err);
    if (rc)
        return rc;
    m->names = items;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i), *nm = json_object_get(o, "name"), *tg = json_object_get(o, "tag"),
               *d = json_object_get(o, "digest");
        struct in_name *x = &m->names[i];
        char text[2 * REF_LEN], digest[65], shown[128];
        if (!json_is_string(nm) || (tg && !json_is_string(tg)))
            return bad(err, "model %zu: 'name' and 'tag' must be strings", i + 1);
        snprintf(text, sizeof text, "%s:%s", json_string_value(nm), tg ? json_string_value(tg) : STORE_DEFAULT_TAG);
        pb_err e2 = {0};
        if (store_ref_parse(text, &x->ref, &e2)) {
            printable(text, shown, sizeof shown);
            return bad(err, "model %zu: '%s': %s", i + 1, shown, e2.msg);
        }
        if (!json_is_string(d) || store_digest_parse(json_string_value(d), digest, NULL))
            return bad(err, "model %zu: 'digest' is not a SHA-256 digest", i + 1);
        x->blob = -1;
        for (size_t j = 0; j < m->n_blobs; j++)
            if (!strcmp(m->blobs[j].digest, digest))
                x->blob = (int)j;
        if (x->blob < 0)
            return bad(err, "model %s:%s points at sha256:%.12s, which the bundle does not hold", x->ref.name,
                       x->ref.tag, digest);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m->names[j].ref.name, x->ref.name) && !strcmp(m->names[j].ref.tag, x->ref.tag))
                return bad(err, "model %s:%s is listed twice", x->ref.name, x->ref.tag);
        struct in_blob *b = &m->blobs[x->blob];
        if (!b->label[0])
            store_ref_format(&x->ref, b->label, sizeof b->label);
        m->n_names = i + 1;
    }
    for (size_t j = 0; j < m->n_blobs; j++)
        if (!m->blobs[j].label[0])
            return bad(err, "blob sha256:%.12s is used by no model", m->blobs[j].digest);
    return PB_OK;
}

static int manifest_parse(const char *text, size_t len, struct manifest *m, pb_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bad(err, "manifest.json, line %d: %s", je.line, je.text);
    int rc;
    json_t *f = json_object_get(root, "format"), *fv = json_object_get(root, "format_version"),
           *v = json_object_get(root, "plumb_version"), *c = json_object_get(root, "created");
    if (!json_is_object(root) || !json_is_string(f) || strcmp(json_string_value(f), BUNDLE_FORMAT)) {
        rc = bad(err, "manifest.json does not say \"format\": \"%s\"", BUNDLE_FORMAT);
    } else if (!json_is_integer(fv) || json_integer_value(fv) != BUNDLE_FORMAT_VERSION) {
        rc = pb_fail(err, PB_EUNSUPPORTED, "bundle format version %lld: this plumb reads version %d (a newer plumb "
                     "wrote it?)", json_is_integer(fv) ? (long long)json_integer_value(fv) : -1LL,
                     BUNDLE_FORMAT_VERSION);
    } else {
        printable(json_is_string(v) ? json_string_value(v) : "", m->version, sizeof m->version);
        printable(json_is_string(c) ? json_string_value(c) : "", m->created, sizeof m->created);
        rc = manifest_blobs(json_object_get(root, "blobs"), m, err);
        if (!rc)
            rc = manifest_names(json_object_get(root, "models"), m, err);
    }
    json_decref(root);
    return rc;
}

static int read_fail(struct archive *a, pb_err *err)
{
    const char *why = archive_error_string(a);
    return bad(err, "the tar is truncated or damaged (%s)", why ? why : "read error");
}

/* The first entry: manifest.json, read whole. */
static int read_manifest(struct archive *a, struct manifest *m, pb_err *err)
{
    struct archive_entry *h;
    int r = archive_read_next_header(a, &h);
    if (r == ARCHIVE_EOF)
        return bad(err, "the tar is empty");
    if (r < ARCHIVE_WARN)
        return bad(err, "not a tar file (%s)", archive_error_string(a) ? archive_error_string(a) : "?");
    char shown[128];
    printable(archive_entry_pathname(h), shown, sizeof shown);
    if (!archive_entry_pathname(h) || strcmp(archive_entry_pathname(h), MANIFEST_NAME))
        return bad(err, "its first entry is '%s', not %s", shown, MANIFEST_NAME);
    if (archive_entry_filetype(h) != AE_IFREG || !archive_entry_size_is_set(h) ||
        archive_entry_size(h) > (la_int64_t)MANIFEST_MAX)
        return bad(err, "%s is not a file of at most %u bytes", MANIFEST_NAME, MANIFEST_MAX);
    size_t size = (size_t)archive_entry_size(h), got = 0;
    char *text = malloc(size + 1);
    if (!text)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    while (got < size) {
        la_ssize_t n = archive_read_data(a, text + got, size - got);
        if (n < 0) {
            free(text);
            return read_fail(a, err);
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    int rc = got == size ? manifest_parse(text, size, m, err) : bad(err, "%s is truncated", MANIFEST_NAME);
    free(text);
    return rc;
}

/* One blob entry into its temporary file, hashed and checked. */
static int read_blob(struct store *s, struct archive *a, struct in_blob *b, char *buf, struct sha256 *h,
                     const struct store_bundle_opts *o, pb_err *err)
{
    int rc = files_tmp_create(s, "import", "part", b->tmp, sizeof b->tmp, &b->fd, err);
    if (rc)
        return rc;
    sha256_reset(h);
    uint64_t have = 0;
    for (;;) {
        if (cancelled(o))
            return pb_fail(err, PB_EIO, "interrupted");
        la_ssize_t n = archive_read_data(a, buf, CHUNK);
        if (n < 0)
            return read_fail(a, err);
        if (n == 0)
            break;
        if (have + (uint64_t)n > b->size)
            return bad(err, "%s is longer than the manifest says", b->entry);
        int e = files_write_all(b->fd, buf, (size_t)n);
        if (e)
            return pb_fail(err, PB_EIO, "writing %s: %s", b->tmp, strerror(e));
        sha256_update(h, buf, (size_t)n);
        have += (uint64_t)n;
        if (o->progress)
            o->progress(o->user, have, b->size, b->label);
    }
    if (have != b->size)
        return bad(err, "%s (%s) is truncated: %llu of %llu bytes", b->entry, b->label, (unsigned long long)have,
                   (unsigned long long)b->size);
    char got[65];
    sha256_final_hex(h, got);
    if (strcmp(got, b->digest))
        return bad(err, "%s (%s) does not match its SHA-256 (it is sha256:%.12s...): the bundle was altered or "
                   "damaged", b->entry, b->label, got);
    if (fsync(b->fd) != 0)
        return pb_fail(err, PB_EIO, "writing %s: %s", b->tmp, strerror(errno));
    pb_err gerr = {0};
    if (blob_read_meta(b->fd, b->label, &b->meta, &gerr))
        return bad(err, "%s (%s): %s", b->entry, b->label, gerr.msg);
    (void)fchmod(b->fd, 0444);
    b->seen = true;
    return PB_OK;
}

/* Every entry after the manifest: each a blob it lists, once. */
static int read_blobs(struct store *s, struct archive *a, struct manifest *m, const struct store_bundle_opts *o,
                      pb_err *err)
{
    char *buf = malloc(CHUNK);
    struct sha256 *h = NULL;
    int rc = buf ? sha256_new(&h, err) : pb_fail(err, PB_ENOMEM, "out of memory");
    while (!rc) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            rc = read_fail(a, err);
            break;
        }
        const char *name = archive_entry_pathname(e);
        struct in_blob *b = NULL;
        for (size_t i = 0; name && i < m->n_blobs && !b; i++)
            if (!strcmp(m->blobs[i].entry, name))
                b = &m->blobs[i];
        char shown[128];
        printable(name, shown, sizeof shown);
        if (!b)
            rc = bad(err, "it holds '%s', which its manifest does not list", shown);
        else if (b->seen || b->tmp[0])
            rc = bad(err, "it holds %s twice", shown);
        else if (archive_entry_filetype(e) != AE_IFREG)
            rc = bad(err, "%s is not a regular file", shown);
        else if (archive_entry_size_is_set(e) && (uint64_t)archive_entry_size(e) != b->size)
            rc = bad(err, "%s has %lld bytes; the manifest says %llu", shown, (long long)archive_entry_size(e),
                     (unsigned long long)b->size);
        else
            rc = read_blob(s, a, b, buf, h, o, err);
    }
    for (size_t i = 0; !rc && i < m->n_blobs; i++)
        if (!m->blobs[i].seen)
            rc = bad(err, "it is truncated: %s (%s) is missing", m->blobs[i].entry, m->blobs[i].label);
    sha256_free(h);
    free(buf);
    return rc;
}

static int import_register(struct store *s, const char *path, struct manifest *m, struct store_bundle_result *res,
                           pb_err *err)
{
    struct reg_blob *rb = calloc(m->n_blobs, sizeof *rb);
    struct reg_name *rn = calloc(m->n_names, sizeof *rn);
    int rc = PB_OK;
    if (!rb || !rn) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->n_blobs; i++)
        rb[i] = (struct reg_blob){.digest = m->blobs[i].digest, .m = &m->blobs[i].meta, .tmp_path = m->blobs[i].tmp};
    for (size_t i = 0; i < m->n_names; i++)
        rn[i] = (struct reg_name){.ref = &m->names[i].ref, .digest = m->blobs[m->names[i].blob].digest};
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char source[STORE_SOURCE_MAX];
    snprintf(source, sizeof source, "import of %.600s (written %s by plumb %s)", base,
             m->created[0] ? m->created : "?", m->version[0] ? m->version : "?");
    if ((rc = reg_add_set(s, rb, m->n_blobs, rn, m->n_names, "import", source, err)))
        goto out;
    for (size_t i = 0; i < m->n_names; i++) {
        res->models[i].new_blob = !rb[m->names[i].blob].known;
        res->models[i].changed = rn[i].changed;
    }
out:
    free(rb);
    free(rn);
    return rc;
}

int store_import(struct store *s, const char *path, const struct store_bundle_opts *o,
                 struct store_bundle_result *res, pb_err *err)
{
    static const struct store_bundle_opts defaults;
    if (!o)
        o = &defaults;
    memset(res, 0, sizeof *res);
    if (!path || !*path)
        return pb_fail(err, PB_EINVAL, "no bundle given");
    struct manifest m = {0};
    struct archive *a = archive_read_new();
    int rc = PB_OK;
    if (!a)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    /* a bundle compressed on its way (gzip, xz, zstd) reads as well */
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    struct stat st;
    if (strcmp(path, "-") && stat(path, &st) != 0) {
        rc = pb_fail(err, PB_EIO, "%s", strerror(errno));
        goto out;
    }
    if (strcmp(path, "-") && S_ISDIR(st.st_mode)) {
        rc = pb_fail(err, PB_EINVAL, "a directory, not a bundle (plumb pull imports a directory of GGUF files)");
        goto out;
    }
    if (archive_read_open_filename(a, strcmp(path, "-") ? path : NULL, CHUNK) != ARCHIVE_OK) {
        const char *why = archive_error_string(a);
        rc = bad(err, "%s", why ? why : "cannot open it");
        goto out;
    }
    if ((rc = read_manifest(a, &m, err)) || (rc = read_blobs(s, a, &m, o, err)))
        goto out;
    res->models = calloc(m.n_names, sizeof *res->models);
    if (!res->models) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto out;
    }
    res->n_models = m.n_names;
    res->n_blobs = m.n_blobs;
    for (size_t i = 0; i < m.n_blobs; i++)
        res->blob_bytes += m.blobs[i].size;
    for (size_t i = 0; i < m.n_names; i++) {
        res->models[i].ref = m.names[i].ref;
        memcpy(res->models[i].digest, m.blobs[m.names[i].blob].digest, 65);
        res->models[i].size = m.blobs[m.names[i].blob].size;
    }
    snprintf(res->plumb_version, sizeof res->plumb_version, "%s", m.version);
    snprintf(res->created, sizeof res->created, "%s", m.created);
    if (!o->check_only)
        rc = import_register(s, path, &m, res, err);
out:
    archive_read_free(a);
    for (size_t i = 0; i < m.n_blobs; i++) {
        if (m.blobs[i].tmp[0])
            unlink(m.blobs[i].tmp); /* moved into blobs/ already, or not wanted */
        if (m.blobs[i].fd >= 0)
            close(m.blobs[i].fd);
    }
    free(m.blobs);
    free(m.names);
    if (rc)
        store_bundle_result_free(res);
    return rc;
}
