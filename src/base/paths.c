#define _GNU_SOURCE
/* What kind of file a path names, before plumb reads it or writes over it
 * (plumb/base.h: pb_check_input, pb_check_output, pb_read_small). */
#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "a character device", "a FIFO (named pipe)", ... for a mode that is not
 * a regular file. */
static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISFIFO(m))
        return "a FIFO (named pipe)";
    if (S_ISSOCK(m))
        return "a socket";
    return "not a regular file";
}

int pb_check_output(const char *path, pb_err *err)
{
    struct stat st;
    if (!path || !*path)
        return pb_fail(err, PB_EINVAL, "no output file given");
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return PB_OK; /* a new file */
        return pb_fail(err, PB_EIO, "%.300s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return pb_fail(err, PB_EINVAL,
                       "%.300s is %s: plumb writes a new file and renames it into place, so it replaces only a "
                       "regular file (or creates one); give a file path",
                       path, kind_of(st.st_mode));
    return PB_OK;
}

int pb_check_input(const char *path, pb_err *err)
{
    struct stat st;
    if (!path || !*path)
        return pb_fail(err, PB_EINVAL, "no file given");
    if (stat(path, &st) != 0)
        return pb_fail(err, PB_EIO, "%.300s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return pb_fail(err, PB_EINVAL, "%.300s is %s, not a regular file: give a file", path, kind_of(st.st_mode));
    return PB_OK;
}

int pb_open_input(const char *path, int *fd, pb_err *err)
{
    *fd = -1;
    /* O_NONBLOCK: opening a FIFO without a writer would wait forever */
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (f < 0)
        return pb_fail(err, PB_EIO, "%.300s: %s", path, strerror(errno));
    if (fstat(f, &st) != 0) {
        int e = errno;
        close(f);
        return pb_fail(err, PB_EIO, "%.300s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        return pb_fail(err, PB_EINVAL, "%.300s is %s, not a regular file: give a file", path, kind_of(st.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0)
        (void)fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    return PB_OK;
}

int pb_read_small(const char *path, size_t max, char **out, size_t *len, pb_err *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    int fd, rc = pb_open_input(path, &fd, err);
    if (rc)
        return rc;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return pb_fail(err, PB_ENOMEM, "out of memory reading %.300s", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                free(buf);
                close(fd);
                return pb_fail(err, PB_ERANGE, "%.300s is larger than %zu bytes: not a file plumb expects here",
                               path, max);
            }
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return pb_fail(err, PB_ENOMEM, "out of memory reading %.300s", path);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return pb_fail(err, PB_EIO, "%.300s: %s", path, strerror(e));
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    if (n > max) {
        free(buf);
        return pb_fail(err, PB_ERANGE, "%.300s is larger than %zu bytes: not a file plumb expects here", path, max);
    }
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return PB_OK;
}

int pb_write_small(const char *path, const void *data, size_t len, int mode, pb_err *err)
{
    int rc = pb_check_output(path, err);
    if (rc)
        return rc;
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return pb_fail(err, PB_EINVAL, "path too long: %.300s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
    if (fd < 0)
        return pb_fail(err, errno == ENOSPC ? PB_ENOSPC : PB_EIO, "cannot write %.300s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t done = 0;
    int e = 0;
    while (done < len && !e) {
        ssize_t k = write(fd, p + done, len - done);
        if (k < 0 && errno != EINTR)
            e = errno;
        else if (k > 0)
            done += (size_t)k;
    }
    if (!e && (fsync(fd) != 0 || fchmod(fd, (mode_t)mode) != 0))
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) != 0)
        e = errno;
    if (e) {
        unlink(tmp);
        return pb_fail(err, e == ENOSPC ? PB_ENOSPC : PB_EIO, "cannot write %.300s: %s", path, strerror(e));
    }
    return PB_OK;
}
