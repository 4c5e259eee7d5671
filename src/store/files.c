/* The store's files: directories, locked temporary files, hashing. */
#define _GNU_SOURCE
#include "store/store_internal.h"
#include "base/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int files_mkdirs(const char *path, pb_err *err)
{
    char buf[STORE_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return pb_fail(err, PB_EINVAL, "path too long: %.100s...", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return pb_fail(err, PB_EIO, "cannot create %s: %s", buf, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return pb_fail(err, PB_EIO, "%s is not a directory", buf);
    return PB_OK;
}

int files_claim(int fd, const char *path)
{
    if (flock(fd, LOCK_SH) != 0)
        return -errno;
    struct stat a, b;
    if (fstat(fd, &a) != 0)
        return -errno;
    if (stat(path, &b) != 0)
        return errno == ENOENT ? 0 : -errno;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int files_tmp_create(struct store *s, const char *prefix, const char *suffix, char *path, size_t size, int *fd,
                     pb_err *err)
{
    static unsigned counter;
    for (int attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned r = (unsigned)ts.tv_nsec ^ (++counter * 2654435761u);
        if (snprintf(path, size, "%s/%s-%ld-%08x.%s", s->tmp, prefix, (long)getpid(), r, suffix) >= (int)size)
            return pb_fail(err, PB_EINVAL, "temporary path too long under %s", s->tmp);
        int f = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f < 0) {
            if (errno == EEXIST)
                continue;
            return pb_fail(err, PB_EIO, "cannot create %s: %s", path, strerror(errno));
        }
        int c = files_claim(f, path);
        if (c == 1) {
            *fd = f;
            return PB_OK;
        }
        close(f);
        if (c < 0)
            return pb_fail(err, PB_EIO, "cannot lock %s: %s", path, strerror(-c));
    }
    return pb_fail(err, PB_EIO, "cannot create a temporary file in %s", s->tmp);
}

int files_move_aside(struct store *s, const char *path, const char *prefix, const char *suffix, char *tmp,
                     size_t size, int *fd, pb_err *err)
{
    int f = open(path, O_RDONLY | O_CLOEXEC), placeholder = -1;
    if (f < 0)
        return pb_fail(err, errno == ENOENT ? PB_ENOTFOUND : PB_EIO, "cannot open %s: %s", path, strerror(errno));
    /* the lock goes with the file (its inode), not with the name */
    if (flock(f, LOCK_SH) != 0) {
        int e = errno;
        close(f);
        return pb_fail(err, PB_EIO, "cannot lock %s: %s", path, strerror(e));
    }
    /* a locked placeholder reserves the name; the rename replaces it */
    int rc = files_tmp_create(s, prefix, suffix, tmp, size, &placeholder, err);
    if (rc) {
        close(f);
        return rc;
    }
    if (rename(path, tmp) != 0) {
        rc = pb_fail(err, errno == ENOENT ? PB_ENOTFOUND : PB_EIO, "cannot move %s aside: %s", path,
                     strerror(errno));
        unlink(tmp);
        close(placeholder);
        close(f);
        return rc;
    }
    close(placeholder);
    *fd = f;
    return PB_OK;
}

/* A stale "rm-DIGEST-..." file: a removal that died before its commit
 * leaves the registry still naming the blob; put the file back then. */
static void restore_removed(struct store *s, const char *name, const char *path)
{
    char digest[65];
    if (strncmp(name, "rm-", 3) != 0 || strlen(name) < 3 + 64)
        return;
    memcpy(digest, name + 3, 64);
    digest[64] = 0;
    if (!files_is_digest(digest))
        return;
    char blob[STORE_PATH_MAX];
    struct stat st;
    store_blob_path(s, digest, blob, sizeof blob);
    if (stat(blob, &st) == 0)
        return;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM blobs WHERE digest = ?", -1, &q, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(q, 1, digest, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW)
        (void)rename(path, blob);
    sqlite3_finalize(q);
}

int files_clean_tmp(struct store *s)
{
    DIR *d = opendir(s->tmp);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[STORE_PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", s->tmp, de->d_name);
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        /* a live process holds its lock: only the dead's files are taken */
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            restore_removed(s, de->d_name, path);
            if (unlink(path) == 0)
                removed++;
        }
        close(fd);
    }
    closedir(d);
    return removed;
}

int files_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : ENOSPC;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

void files_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

bool files_is_digest(const char *s)
{
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[64] == 0;
}

/* ---- SHA-256 ---- */

struct sha256 {
    EVP_MD_CTX *ctx;
};

int sha256_new(struct sha256 **out, pb_err *err)
{
    struct sha256 *h = calloc(1, sizeof *h);
    if (!h || !(h->ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        sha256_free(h);
        return pb_fail(err, PB_ENOMEM, "cannot set up SHA-256 (libcrypto)");
    }
    *out = h;
    return PB_OK;
}

void sha256_reset(struct sha256 *h)
{
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void sha256_update(struct sha256 *h, const void *p, size_t n)
{
    EVP_DigestUpdate(h->ctx, p, n);
}

void sha256_final_hex(struct sha256 *h, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, md, &n);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[64] = 0;
}

void sha256_free(struct sha256 *h)
{
    if (h) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
    }
}

int files_hash_fd(int fd, const char *name, char hex[65], uint64_t *size, store_progress_fn progress, void *user,
                  const volatile sig_atomic_t *cancel, pb_err *err)
{
    enum { CHUNK = 1 << 20 };
    struct sha256 *h = NULL;
    unsigned char *buf = malloc(CHUNK);
    uint64_t done = 0, total = 0;
    struct stat st;
    int rc = PB_OK;
    if (!buf) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory hashing %s", name);
        goto fail;
    }
    if ((rc = sha256_new(&h, err)))
        goto fail;
    if (fstat(fd, &st) == 0)
        total = (uint64_t)st.st_size;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (lseek(fd, 0, SEEK_SET) < 0) {
        rc = pb_fail(err, PB_EIO, "%s: %s", name, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (cancel && *cancel) {
            rc = pb_fail(err, PB_EIO, "interrupted");
            goto fail;
        }
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pb_fail(err, PB_EIO, "reading %s: %s", name, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        sha256_update(h, buf, (size_t)n);
        done += (uint64_t)n;
        /* pages read once need not crowd the cache */
        (void)posix_fadvise(fd, (off_t)(done - (uint64_t)n), n, POSIX_FADV_DONTNEED);
        if (progress && (done % (64u << 20) == 0 || done == total))
            progress(user, done, total > done ? total : done, name);
    }
    sha256_final_hex(h, hex);
    if (size)
        *size = done;
fail:
    sha256_free(h);
    free(buf);
    return rc;
}
