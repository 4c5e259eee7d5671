/* Download responses as store_pull sees them over HTTP (src/store/pull.c:
 * libcurl, redirects, resumed transfers with Range and If-Range, retries).
 *
 * The input is up to three raw HTTP responses separated by the line
 * "--next--" (the bytes "\n--next--\n"; the third runs to the end of the
 * input, markers and all). A loopback server, started once per process,
 * answers each connection, in order, with the next response: it reads the
 * request head up to its blank line, sends the response's bytes as they
 * are and closes the connection; once they have run out it answers 404.
 * store_pull fetches http://127.0.0.1:PORT/model.gguf into a fresh store
 * with 3 attempts and 1 ms of back-off, so a cut first response can be
 * resumed by the second (206 with Content-Range and an ETag or
 * Last-Modified, or a 200 again, a 416, another version of the file) and
 * a redirect lands on the next one. http_proxy and https_proxy point at
 * the same server, so that every request, whatever host a Location names,
 * reaches it: nothing leaves the machine and no connect or name lookup
 * waits out a timeout (an https Location gets the next response to its
 * CONNECT, and then fails its TLS handshake). The bodies of the seeds are
 * a 144-byte GGUF file (fuzz/seeds.sh writes them).
 *
 * Checks: a refusal says why, names nothing, and leaves blobs/ and tmp/
 * empty; a pull that passes registered model:latest with a blob file of
 * the registered size whose SHA-256 (computed here, with libcrypto) is
 * its digest, and left tmp/ empty. Every request head plumb sends is
 * well-formed (each line ends with CRLF, no other control bytes but tab),
 * and one that asks for a range (Range: bytes=N-, N > 0) names the
 * version it resumes (a non-empty If-Range). */
#define _GNU_SOURCE
#include "fuzz.h"

#include "plumb/store.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_RESPONSES 3
#define INPUT_MAX 65536 /* run.sh gives at most 4096 bytes; replayed files are cut here */

static const char marker[] = "\n--next--\n";
static const char not_found[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/* What the server answers, shared with its thread under lock. */
static struct {
    pthread_mutex_t lock;
    uint8_t data[INPUT_MAX];   /* a copy of the input: libFuzzer frees its own */
    size_t off[MAX_RESPONSES], len[MAX_RESPONSES];
    int n;                     /* responses in the input */
    int next;                  /* the one the next connection gets */
    int requests;
    char bad[512];             /* the first malformed request plumb sent, "" when none */
} sv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static char url[96], root[4096];

static bool send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads a request head up to its blank line into buf (NUL-terminated);
 * its length, 0 when the peer sent nothing. */
static size_t read_head(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got < size - 1) {
        ssize_t r = recv(fd, buf + got, size - 1 - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = 0;
        if (memmem(buf, got, "\r\n\r\n", 4) || memmem(buf, got, "\n\n", 2))
            break;
    }
    buf[got] = 0;
    return got;
}

/* Why the request head h (n bytes) is not one plumb may send, or NULL. */
static const char *head_fault(const char *h, size_t n, char *why, size_t size)
{
    const char *end = memmem(h, n, "\r\n\r\n", 4);
    if (!end) {
        snprintf(why, size, "a request head without its blank line: '%.200s'", h);
        return why;
    }
    for (const char *p = h; p < end + 2; p++) {
        unsigned char c = (unsigned char)*p;
        bool crlf = c == '\r' && p[1] == '\n';
        if ((c < 0x20 && c != '\t' && !crlf && !(c == '\n' && p > h && p[-1] == '\r')) || c == 0x7f) {
            snprintf(why, size, "byte 0x%02x at offset %zu of the request head: '%.*s'", c, (size_t)(p - h),
                     (int)(end - h), h);
            return why;
        }
    }
    const char *range = strcasestr(h, "\r\nRange: bytes=");
    if (range && range < end && strtoull(range + 15, NULL, 10) > 0) {
        const char *ir = strcasestr(h, "\r\nIf-Range:");
        const char *v = ir ? ir + 11 : NULL;
        while (v && (*v == ' ' || *v == '\t'))
            v++;
        if (!v || v >= end || *v == '\r') {
            snprintf(why, size, "a range asked for without naming the version (If-Range): '%.*s'", (int)(end - h),
                     h);
            return why;
        }
    }
    return NULL;
}

static void *serve(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    static char head[8192];
    static uint8_t out[INPUT_MAX];
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        /* never wait long on a client: plumb sends its head at once */
        struct timeval tv = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        size_t got = read_head(fd, head, sizeof head), n = 0;
        if (got > 0) {
            char why[sizeof sv.bad];
            pthread_mutex_lock(&sv.lock);
            sv.requests++;
            if (!sv.bad[0] && head_fault(head, got, why, sizeof why))
                memcpy(sv.bad, why, sizeof why);
            if (sv.next < sv.n) {
                n = sv.len[sv.next];
                memcpy(out, sv.data + sv.off[sv.next], n);
            } else {
                n = sizeof not_found - 1;
                memcpy(out, not_found, n);
            }
            sv.next++;
            pthread_mutex_unlock(&sv.lock);
            send_all(fd, out, n);
        }
        /* the end of the response; what the client still sends is
         * dropped (a close with unread bytes would reset the connection
         * and could lose the response) */
        shutdown(fd, SHUT_WR);
        while (recv(fd, head, sizeof head, MSG_DONTWAIT) > 0)
            ;
        close(fd);
    }
    return NULL;
}

static void setup(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(lfd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    FUZZ_CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 16) == 0 &&
                       getsockname(lfd, (struct sockaddr *)&a, &al) == 0,
               "cannot listen on 127.0.0.1: %s", strerror(errno));
    pthread_t th;
    FUZZ_CHECK(pthread_create(&th, NULL, serve, (void *)(intptr_t)lfd) == 0, "cannot start the server");
    pthread_detach(th);
    char proxy[32];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", ntohs(a.sin_port));
    snprintf(url, sizeof url, "%s/model.gguf", proxy);
    static const char *const unset[] = {"no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "HTTPS_PROXY"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++)
        unsetenv(unset[i]);
    setenv("http_proxy", proxy, 1);
    setenv("https_proxy", proxy, 1);
    snprintf(root, sizeof root, "%s", fuzz_tmpdir("download"));
}

/* Splits the input into the server's responses. */
static void serve_input(const uint8_t *data, size_t size)
{
    if (size > INPUT_MAX)
        size = INPUT_MAX;
    pthread_mutex_lock(&sv.lock);
    memcpy(sv.data, data, size);
    size_t at = 0;
    sv.n = 0;
    while (sv.n < MAX_RESPONSES) {
        const uint8_t *m = sv.n < MAX_RESPONSES - 1 ? memmem(sv.data + at, size - at, marker, sizeof marker - 1) : NULL;
        size_t end = m ? (size_t)(m - sv.data) : size;
        sv.off[sv.n] = at;
        sv.len[sv.n++] = end - at;
        if (!m)
            break;
        at = end + sizeof marker - 1;
    }
    sv.next = 0;
    sv.requests = 0;
    sv.bad[0] = 0;
    pthread_mutex_unlock(&sv.lock);
}

/* Entries in dir other than . and .. (0 when it does not exist). */
static int count_entries(const char *dir, char *first, size_t size)
{
    DIR *d = opendir(dir);
    int n = 0;
    first[0] = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!n++)
            snprintf(first, size, "%s", e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* The SHA-256 of the file at path in hex, and its size. */
static void file_digest(const char *path, char hex[65], uint64_t *size)
{
    size_t len;
    char *buf = fuzz_read_file(path, &len);
    FUZZ_CHECK(buf, "cannot read %s", path);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    FUZZ_CHECK(EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32, "SHA-256 failed");
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    *size = len;
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    serve_input(data, size);
    char home[4200], tmp[4300], blobs[4300], first[256], path[4400];
    snprintf(home, sizeof home, "%s/home", root);
    snprintf(tmp, sizeof tmp, "%s/tmp", home);
    snprintf(blobs, sizeof blobs, "%s/blobs", home);
    struct store *s;
    pb_err err = {0};
    FUZZ_CHECK(store_open(home, &s, &err) == PB_OK, "%s", err.msg);
    const struct store_pull_opts o = {.max_attempts = 3, .retry_delay_ms = 1};
    struct store_pull_result res;
    int rc = store_pull(s, url, &o, &res, &err);
    pthread_mutex_lock(&sv.lock);
    char bad[sizeof sv.bad];
    memcpy(bad, sv.bad, sizeof bad);
    int requests = sv.requests;
    pthread_mutex_unlock(&sv.lock);
    fuzz_note("pull: %s (%d attempts, %d requests)", rc ? err.msg : "ok", res.attempts, requests);
    FUZZ_CHECK(!bad[0], "%s", bad);
    FUZZ_CHECK(res.attempts >= 0 && res.attempts <= o.max_attempts, "%d attempts of at most %d", res.attempts,
               o.max_attempts);
    struct store_entry e;
    pb_err lerr = {0};
    int lrc = store_lookup(s, "model", &e, &lerr);
    if (rc == PB_OK) {
        FUZZ_CHECK(res.attempts >= 1, "a download that made no request passed");
        FUZZ_CHECK(lrc == PB_OK, "the model pulled is not registered: %s", lerr.msg);
        FUZZ_CHECK(!strcmp(e.digest, res.entry.digest) && e.size == res.entry.size, "the registry has %s (%llu bytes),"
                   " the pull said %s (%llu bytes)", e.digest, (unsigned long long)e.size, res.entry.digest,
                   (unsigned long long)res.entry.size);
        store_blob_path(s, e.digest, path, sizeof path);
        char hex[65];
        uint64_t bytes;
        file_digest(path, hex, &bytes);
        FUZZ_CHECK(bytes == e.size, "the blob is %llu bytes, the registry says %llu", (unsigned long long)bytes,
                   (unsigned long long)e.size);
        FUZZ_CHECK(!strcmp(hex, e.digest), "the blob's SHA-256 is %s, its digest %s", hex, e.digest);
        FUZZ_CHECK(count_entries(blobs, first, sizeof first) == 1, "blobs/ holds another file: %s", first);
    } else {
        FUZZ_CHECK(err.msg[0], "a refused download says nothing (%d)", rc);
        FUZZ_CHECK(lrc == PB_ENOTFOUND, "a refused download registered a name (%d: %s)", lrc, lerr.msg);
        FUZZ_CHECK(count_entries(blobs, first, sizeof first) == 0, "a refused download left a blob: %s", first);
    }
    FUZZ_CHECK(count_entries(tmp, first, sizeof first) == 0, "tmp/ is not empty after the pull: %s", first);
    store_close(s);
    fuzz_rmtree(home);
    return 0;
}
