#define _GNU_SOURCE
/* The model store, as a technician uses it: the real plumb binary
 * (argv[1]) pulling from a loopback HTTP/1.1 server started here (Range
 * requests, cut connections, redirects, errors, slow transfers), from
 * files and from a directory; failures that must leave the store exactly
 * as it was (compared file by file and row by row); two pulls at once;
 * tag, rollback, rm and verify; a pull killed with SIGKILL; export and
 * import of bundles, whole, tampered and truncated. */
#include "testutil.h"

#include "plumb/store.h"
#include "store/store_internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *plumb_bin;
static char home[512]; /* PLUMB_HOME of the current test */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void sha256_hex(const void *p, size_t n, char hex[65])
{
    unsigned char md[32];
    unsigned len = 0;
    assert_int_equal(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* ---- a loopback HTTP/1.1 server ---- */

struct server {
    int lfd, port;
    pthread_t th;
    const char *body;
    size_t len;
    atomic_int cut_after; /* close a response after this many body bytes */
    atomic_int cut_times; /* ... this many times (-1: always, 0: never) */
    atomic_int fail_times;/* answer 500 this many times */
    atomic_int delay_us;  /* pause after each 16 KiB */
    atomic_int wrong_range_times; /* answer a Range request from half its start, this many times */
    atomic_int requests, range_requests;
    atomic_long last_range_from;
    atomic_int active;
    atomic_bool stop;
    /* the file changing on the origin: from request number swap_at on
     * (counting from 1; 0: never), body2 is served instead of body */
    const char *body2;
    size_t len2;
    atomic_int swap_at;
    atomic_int validators;     /* 0: ETag and Last-Modified, 1: none */
    atomic_bool ignore_if_range; /* a mirror that answers any Range with its own file */
    atomic_int if_range_requests;
};

struct conn {
    struct server *sv;
    int fd;
};

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static void *serve_conn(void *arg)
{
    struct conn *cn = arg;
    struct server *sv = cn->sv;
    char req[8192];
    size_t got = 0;
    struct timeval tv = {5, 0};
    setsockopt(cn->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < sizeof req - 1) {
        ssize_t r = recv(cn->fd, req + got, sizeof req - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = 0;
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = 0;
    char path[256] = "";
    sscanf(req, "GET %255s", path);
    const int nth = atomic_fetch_add(&sv->requests, 1) + 1;
    /* the version served: body ("v1"), or body2 once the origin changed */
    const bool second = sv->body2 && atomic_load(&sv->swap_at) > 0 && nth >= atomic_load(&sv->swap_at);
    const char *data = second ? sv->body2 : sv->body;
    const size_t size = second ? sv->len2 : sv->len;
    const char *etag = second ? "\"v2\"" : "\"v1\"";
    char validators[160] = "";
    if (atomic_load(&sv->validators) == 0)
        snprintf(validators, sizeof validators, "ETag: %s\r\nLast-Modified: %s\r\n", etag,
                 second ? "Tue, 01 Dec 2026 10:00:00 GMT" : "Mon, 30 Nov 2026 10:00:00 GMT");
    long from = 0;
    const char *range = strcasestr(req, "\r\nRange: bytes=");
    if (range) {
        from = atol(range + 15);
        atomic_fetch_add(&sv->range_requests, 1);
        atomic_store(&sv->last_range_from, from);
    }
    const char *if_range = strcasestr(req, "\r\nIf-Range: ");
    if (if_range) {
        atomic_fetch_add(&sv->if_range_requests, 1);
        /* RFC 9110: the range only of the version named, else the whole file */
        if (!atomic_load(&sv->ignore_if_range) && strncmp(if_range + 12, etag, strlen(etag)) != 0)
            from = 0;
    }
    char head[768];
    if (strcmp(path, "/r/model.gguf") == 0) {
        snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: /model.gguf\r\nContent-Length: 0\r\n"
                                    "Connection: close\r\n\r\n");
        send_all(cn->fd, head, strlen(head));
    } else if (strcmp(path, "/model.gguf") != 0) {
        snprintf(head, sizeof head, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        send_all(cn->fd, head, strlen(head));
    } else if (atomic_load(&sv->fail_times) > 0 && atomic_fetch_sub(&sv->fail_times, 1) > 0) {
        snprintf(head, sizeof head, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        send_all(cn->fd, head, strlen(head));
    } else if (from >= (long)size) {
        snprintf(head, sizeof head, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%zu\r\n"
                                    "Content-Length: 0\r\nConnection: close\r\n\r\n", size);
        send_all(cn->fd, head, strlen(head));
    } else {
        if (from > 0 && atomic_load(&sv->wrong_range_times) > 0 && atomic_fetch_sub(&sv->wrong_range_times, 1) > 0)
            from /= 2; /* a 206, but not of the part asked for */
        if (from > 0)
            snprintf(head, sizeof head, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %ld-%zu/%zu\r\n"
                                        "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                     from, size - 1, size, size - (size_t)from, validators);
        else
            snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nContent-Type: application/octet-stream\r\n"
                                        "%sConnection: close\r\n\r\n", size, validators);
        bool ok = send_all(cn->fd, head, strlen(head));
        size_t pos = (size_t)from, cut = (size_t)from + (size_t)atomic_load(&sv->cut_after);
        bool cutting = atomic_load(&sv->cut_times) != 0;
        if (cutting && atomic_load(&sv->cut_times) > 0)
            atomic_fetch_sub(&sv->cut_times, 1);
        while (ok && pos < size && !atomic_load(&sv->stop)) {
            size_t n = size - pos < 16384 ? size - pos : 16384;
            if (cutting && pos + n > cut)
                n = cut - pos;
            if (n == 0)
                break;
            ok = send_all(cn->fd, data + pos, n);
            pos += n;
            if (atomic_load(&sv->delay_us))
                usleep((useconds_t)atomic_load(&sv->delay_us));
        }
    }
    close(cn->fd);
    free(cn);
    atomic_fetch_sub(&sv->active, 1);
    return NULL;
}

static void *accept_loop(void *arg)
{
    struct server *sv = arg;
    while (!atomic_load(&sv->stop)) {
        struct pollfd p = {sv->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(sv->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct conn *cn = malloc(sizeof *cn);
        assert_non_null(cn);
        cn->sv = sv;
        cn->fd = fd;
        atomic_fetch_add(&sv->active, 1);
        pthread_t t;
        if (pthread_create(&t, NULL, serve_conn, cn) != 0) {
            close(fd);
            free(cn);
            atomic_fetch_sub(&sv->active, 1);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

static void server_start(struct server *sv, const char *body, size_t len)
{
    memset(sv, 0, sizeof *sv);
    sv->body = body;
    sv->len = len;
    sv->lfd = test_listen_loopback(&sv->port);
    assert_int_equal(pthread_create(&sv->th, NULL, accept_loop, sv), 0);
}

static void server_stop(struct server *sv)
{
    atomic_store(&sv->stop, true);
    pthread_join(sv->th, NULL);
    close(sv->lfd);
    for (int i = 0; i < 500 && atomic_load(&sv->active) > 0; i++)
        sleep_ms(10);
    assert_int_equal(atomic_load(&sv->active), 0);
}

static void server_url(const struct server *sv, const char *path, char *buf, size_t size)
{
    snprintf(buf, size, "http://127.0.0.1:%d%s", sv->port, path);
}

/* ---- running plumb ---- */

struct run {
    pid_t pid;
    int status;
    char out_path[600], err_path[600];
    char *out, *err;
};

/* Starts plumb with args (NULL-terminated); fsize_limit > 0 caps the size
 * of files it may write (RLIMIT_FSIZE, SIGXFSZ ignored): a full disk. */
static void spawn(struct run *r, long fsize_limit, const char *const *args)
{
    static int counter;
    memset(r, 0, sizeof *r);
    char name[64];
    snprintf(name, sizeof name, "out-%d.txt", counter);
    test_tmpfile(name, r->out_path, sizeof r->out_path);
    snprintf(name, sizeof name, "err-%d.txt", counter++);
    test_tmpfile(name, r->err_path, sizeof r->err_path);
    const char *argv[32] = {plumb_bin};
    int n = 1;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    r->pid = fork();
    assert_true(r->pid >= 0);
    if (r->pid == 0) {
        int o = open(r->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        if (fsize_limit > 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(plumb_bin, (char *const *)argv);
        _exit(127);
    }
}

/* The exit status and outputs of r, whose process ended with wait status st. */
static void collect(struct run *r, int st)
{
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = test_read_file(r->out_path, NULL);
    r->err = test_read_file(r->err_path, NULL);
    assert_non_null(r->out);
    assert_non_null(r->err);
}

/* Waits for r's process to end. */
static void finish(struct run *r)
{
    int st;
    assert_int_equal(waitpid(r->pid, &st, 0), r->pid);
    collect(r, st);
}

/* true (and r collected) once r's process has ended; does not wait. */
static bool finished(struct run *r)
{
    int st;
    pid_t p = waitpid(r->pid, &st, WNOHANG);
    assert_true(p >= 0);
    if (p == 0)
        return false;
    collect(r, st);
    return true;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

#define PLUMB(r, ...)                                                                                                  \
    do {                                                                                                               \
        const char *args_[] = {__VA_ARGS__, NULL};                                                                     \
        spawn((r), 0, args_);                                                                                          \
        finish(r);                                                                                                     \
    } while (0)

/* Runs plumb with the arguments, which must exit 0. */
#define PLUMB_OK(...)                                                                                                  \
    do {                                                                                                               \
        struct run ok_;                                                                                                \
        PLUMB(&ok_, __VA_ARGS__);                                                                                      \
        EXPECT_STATUS(ok_, 0);                                                                                         \
        run_free(&ok_);                                                                                                \
    } while (0)

/* A fresh, empty store for one test. */
static void new_home(const char *name)
{
    test_tmpfile(name, home, sizeof home);
    setenv("PLUMB_HOME", home, 1);
}

/* ---- the store's state ---- */

static void list_dir(const char *dir, char **buf, size_t *len, size_t *cap)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", home, dir);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char line[900], f[900];
            struct stat st;
            snprintf(f, sizeof f, "%s/%s", path, names[i]->d_name);
            snprintf(line, sizeof line, "%s/%s %lld\n", dir, names[i]->d_name,
                     stat(f, &st) == 0 ? (long long)st.st_size : -1LL);
            size_t l = strlen(line);
            if (*len + l + 1 > *cap) {
                *cap = 2 * (*len + l + 1);
                *buf = realloc(*buf, *cap);
                assert_non_null(*buf);
            }
            memcpy(*buf + *len, line, l + 1);
            *len += l;
        }
        free(names[i]);
    }
    free(names);
}

/* Every file in blobs/ and tmp/ with its size, and every row of the
 * registry: two snapshots are equal when the store did not change. */
static char *snapshot(void)
{
    size_t len = 0, cap = 1024;
    char *buf = calloc(1, cap);
    assert_non_null(buf);
    list_dir("blobs", &buf, &len, &cap);
    list_dir("tmp", &buf, &len, &cap);
    char db[600];
    snprintf(db, sizeof db, "%s/registry.db", home);
    sqlite3 *h;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    const char *tables[] = {"blobs", "revisions", "names"};
    for (int t = 0; t < 3; t++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT * FROM %s ORDER BY 1, 2", tables[t]);
        sqlite3_stmt *q;
        assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
        while (sqlite3_step(q) == SQLITE_ROW) {
            char line[4096];
            int o = snprintf(line, sizeof line, "%s:", tables[t]);
            for (int c = 0; c < sqlite3_column_count(q); c++) {
                const unsigned char *v = sqlite3_column_text(q, c);
                o += snprintf(line + o, sizeof line - (size_t)o, "|%s", v ? (const char *)v : "NULL");
            }
            snprintf(line + o, sizeof line - (size_t)o, "\n");
            size_t l = strlen(line);
            if (len + l + 1 > cap) {
                cap = 2 * (len + l + 1);
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            memcpy(buf + len, line, l + 1);
            len += l;
        }
        sqlite3_finalize(q);
    }
    sqlite3_close(h);
    return buf;
}

static int count_files(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", home, dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The digest `plumb ls --json` shows for name, or "" when absent. */
static void ls_digest(const char *name, char out[80])
{
    struct run r;
    PLUMB(&r, "ls", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    out[0] = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(v, "models"), i, m) {
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0)
            snprintf(out, 80, "%s", json_string_value(json_object_get(m, "digest")));
    }
    json_decref(v);
    run_free(&r);
}

/* ---- models ---- */

struct model {
    const char *path;
    char *data;
    size_t len;
    char digest[65];
    char tagged[80]; /* "sha256:" digest */
};

static void model_get(struct model *m, const char *ftype)
{
    m->path = test_tiny_model(ftype);
    m->data = test_read_file(m->path, &m->len);
    assert_non_null(m->data);
    sha256_hex(m->data, m->len, m->digest);
    snprintf(m->tagged, sizeof m->tagged, "sha256:%s", m->digest);
}

/* plumb pull SOURCE --name NAME --copy, which must work. */
static void pull_ok(const char *source, const char *name)
{
    PLUMB_OK("pull", source, "--name", name, "--copy");
}

/* Runs plumb with args, which must exit 0, print want and leave the store
 * exactly as it was. */
static void expect_ok_unchanged(const char *const *args, const char *want)
{
    char *before = snapshot();
    struct run r;
    spawn(&r, 0, args);
    finish(&r);
    EXPECT_STATUS(r, 0);
    if (!strstr(r.out, want))
        fail_msg("plumb %s: the output does not say '%s': %s", args[0], want, r.out);
    run_free(&r);
    char *after = snapshot();
    assert_string_equal(before, after);
    free(before);
    free(after);
}

/* ---- tests ---- */

static void test_names(void **state)
{
    (void)state;
    struct store_ref r;
    const char *good[][3] = {
        {"qwen2.5-7b:q4_k_m", "qwen2.5-7b", "q4_k_m"},
        {"support-bot:2", "support-bot", "2"},
        {"Llama_3", "llama_3", "latest"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        pb_err err = {0};
        if (store_ref_parse(good[i][0], &r, &err))
            fail_msg("%s: %s", good[i][0], err.msg);
        assert_string_equal(r.name, good[i][1]);
        assert_string_equal(r.tag, good[i][2]);
    }
    char longname[300];
    memset(longname, 'a', 200);
    longname[200] = 0;
    const char *bad[] = {"", "a/b", "../x", "a..b", "..", "x:", ":x", "a:b:c", "a b", "a\\b", "a\nb", "a\tb",
                         ".hidden", "-x", "x:../y", "x:a/b", "caf\xc3\xa9", longname};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb_err err = {0};
        if (store_ref_parse(bad[i], &r, &err) != PB_EINVAL)
            fail_msg("'%s' was accepted as a model name", bad[i]);
        assert_true(strlen(err.msg) > 0);
    }
    /* digests: either case, with or without "sha256:", exactly 64 digits */
    char hex[65];
    const char *upper = "sha256:E769F25099C6824C6D2771B81A720C2AEAE00A58E8E17A20B17585F26A16B419";
    assert_int_equal(store_digest_parse(upper, hex, NULL), PB_OK);
    assert_string_equal(hex, "e769f25099c6824c6d2771b81a720c2aeae00a58e8e17a20b17585f26a16b419");
    const char *bad_digests[] = {"", "sha256:", "e769f25099c6824c6d2771b81a720c2aeae00a58e8e17a20b17585f26a16b41",
                                 "e769f25099c6824c6d2771b81a720c2aeae00a58e8e17a20b17585f26a16b4190",
                                 "g769f25099c6824c6d2771b81a720c2aeae00a58e8e17a20b17585f26a16b419",
                                 "sha1:e769f25099c6824c6d2771b81a720c2aeae00a58e8e17a20b17585f26a16b4"};
    for (size_t i = 0; i < sizeof bad_digests / sizeof bad_digests[0]; i++) {
        pb_err err = {0};
        if (store_digest_parse(bad_digests[i], hex, &err) != PB_EINVAL)
            fail_msg("'%s' was accepted as a digest", bad_digests[i]);
    }
    /* the CLI refuses them before anything reaches the file system */
    new_home("names");
    struct run run;
    PLUMB(&run, "pull", "x.gguf", "--name", "../../etc/passwd");
    EXPECT_STATUS(run, 2);
    assert_non_null(strstr(run.err, "'/' is not allowed"));
    run_free(&run);
    PLUMB(&run, "rm", "a/b");
    EXPECT_STATUS(run, 2);
    run_free(&run);
    PLUMB(&run, "pull", "x.gguf", "--sha256", "abc");
    EXPECT_STATUS(run, 2);
    run_free(&run);
    const char *helps[] = {"pull", "ls", "rm", "verify", "tag", "rollback"};
    for (int i = 0; i < 6; i++) {
        PLUMB(&run, helps[i], "--help");
        EXPECT_STATUS(run, 0);
        assert_non_null(strstr(run.out, "Usage: plumb"));
        assert_non_null(strstr(run.out, "Example"));
        run_free(&run);
    }
}

static void test_pull_file_and_resolve(void **state)
{
    (void)state;
    struct model m;
    model_get(&m, "Q8_0");
    new_home("file");
    struct run r;
    PLUMB_OK("pull", m.path, "--name", "tiny:q8", "--copy", "--sha256", m.digest);
    char d[80];
    ls_digest("tiny:q8", d);
    assert_string_equal(d, m.tagged);
    /* the blob is named by its digest and holds the same bytes */
    char blob[700];
    snprintf(blob, sizeof blob, "%s/blobs/sha256-%s", home, m.digest);
    size_t len;
    char *data = test_read_file(blob, &len);
    assert_non_null(data);
    assert_int_equal(len, m.len);
    assert_memory_equal(data, m.data, len);
    free(data);

    /* the resolver: names (the tag defaults to latest), paths, neither */
    char path[4096];
    struct store_entry e;
    pb_err err = {0};
    assert_int_equal(store_resolve(NULL, "tiny:q8", path, sizeof path, &e, &err), PB_OK);
    assert_string_equal(path, blob);
    assert_string_equal(e.digest, m.digest);
    assert_int_equal(e.size, m.len);
    assert_string_equal(e.arch, "llama");
    assert_string_equal(e.quant, "Q8_0");
    assert_int_equal(store_resolve(NULL, m.path, path, sizeof path, &e, &err), PB_OK);
    assert_string_equal(path, m.path);
    assert_string_equal(e.digest, "");
    assert_int_equal(store_resolve(NULL, "tiny", path, sizeof path, NULL, &err), PB_ENOTFOUND);
    assert_non_null(strstr(err.msg, "tags of tiny: q8"));
    assert_int_equal(store_resolve(NULL, "no-such-model", path, sizeof path, NULL, &err), PB_ENOTFOUND);

    /* the commands that take MODEL take the name */
    PLUMB(&r, "run", "tiny:q8", "-p", "hello", "-n", "3", "--temp", "0", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    assert_int_equal(json_array_size(json_object_get(v, "tokens")), 3);
    json_decref(v);
    run_free(&r);
    PLUMB_OK("tokenize", "tiny:q8", "hello");
    PLUMB_OK("chat", "tiny:q8", "-n", "2"); /* stdin is empty: no turns */
    PLUMB(&r, "bench", "tiny:q8", "-p", "4", "-n", "2", "-r", "1", "-t", "1", "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_string_equal(json_string_value(json_object_get(v, "model")), "tiny:q8");
    assert_int_equal(json_integer_value(json_object_get(v, "model_bytes")), (json_int_t)m.len);
    json_decref(v);
    run_free(&r);
    PLUMB(&r, "plan", "tiny:q8", "--device", "rtx-4090", "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "model"), "id")), "tiny:q8");
    json_decref(v);
    run_free(&r);
    PLUMB(&r, "show", "tiny:q8", "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "store"), "digest")), m.tagged);
    assert_int_equal(json_array_size(json_object_get(json_object_get(v, "store"), "history")), 1);
    json_t *mem = json_object_get(v, "memory");
    assert_non_null(mem);
    assert_true(json_integer_value(json_object_get(mem, "total_bytes")) >
                json_integer_value(json_object_get(mem, "weights_bytes")));
    assert_true(json_integer_value(json_object_get(mem, "kv_cache_bytes")) > 0);
    json_decref(v);
    run_free(&r);
    PLUMB(&r, "show", "tiny:q8");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, m.digest));
    assert_non_null(strstr(r.out, "memory "));
    assert_non_null(strstr(r.out, "architecture    llama"));
    run_free(&r);
    PLUMB(&r, "show", "nope:1");
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "neither a file nor a model"));
    run_free(&r);

    /* the default name is the file's; the same file again changes nothing */
    PLUMB_OK("pull", m.path);
    ls_digest("tiny-q8_0:latest", d);
    assert_string_equal(d, m.tagged);
    {
        const char *a[] = {"pull", m.path, NULL};
        expect_ok_unchanged(a, "already there");
    }
    assert_int_equal(count_files("blobs"), 1);
    free(m.data);
}

static void test_http_resume(void **state)
{
    (void)state;
    struct model m;
    model_get(&m, "Q8_0");
    new_home("http");
    struct server sv;
    server_start(&sv, m.data, m.len);
    char url[256];
    /* cut off half way: the second request asks for the rest */
    atomic_store(&sv.cut_after, (int)(m.len / 2));
    atomic_store(&sv.cut_times, 1);
    server_url(&sv, "/model.gguf", url, sizeof url);
    struct run r;
    PLUMB_OK("pull", url, "--name", "web:1", "--retry-delay", "0.05", "--sha256", m.digest);
    assert_int_equal(atomic_load(&sv.requests), 2);
    assert_int_equal(atomic_load(&sv.range_requests), 1);
    assert_int_equal(atomic_load(&sv.last_range_from), (long)(m.len / 2));
    char d[80];
    ls_digest("web:1", d);
    assert_string_equal(d, m.tagged);

    /* a redirect, then a 500 once, then two cuts: still the same file */
    atomic_store(&sv.requests, 0);
    atomic_store(&sv.fail_times, 1);
    atomic_store(&sv.cut_after, (int)(m.len / 3));
    atomic_store(&sv.cut_times, 1);
    server_url(&sv, "/r/model.gguf", url, sizeof url);
    PLUMB(&r, "pull", url, "--name", "web:2", "--retry-delay", "0.05", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    assert_string_equal(json_string_value(json_object_get(v, "digest")), m.tagged);
    assert_false(json_is_true(json_object_get(v, "new_blob")));
    json_decref(v);
    run_free(&r);
    assert_int_equal(count_files("blobs"), 1);

    /* a 206 for another part than asked is not written as the rest of the
     * file: the next request starts over (libcurl itself refuses a 206 whose
     * Content-Range does not start where it asked, and pull's own check of
     * the range catches the rest) */
    atomic_store(&sv.requests, 0);
    atomic_store(&sv.range_requests, 0);
    atomic_store(&sv.cut_after, (int)(m.len / 2));
    atomic_store(&sv.cut_times, 1);
    atomic_store(&sv.wrong_range_times, 1);
    server_url(&sv, "/model.gguf", url, sizeof url);
    PLUMB_OK("pull", url, "--name", "web:3", "--retry-delay", "0.05", "--sha256", m.digest);
    assert_int_equal(atomic_load(&sv.requests), 3);
    assert_int_equal(atomic_load(&sv.range_requests), 1);
    assert_int_equal(atomic_load(&sv.wrong_range_times), 0);
    ls_digest("web:3", d);
    assert_string_equal(d, m.tagged);
    PLUMB_OK("verify");
    server_stop(&sv);
    free(m.data);
}

/* pull --if-absent (the Kubernetes init container's): with the file in the
 * store intact, the name points at it and nothing is downloaded; with its
 * blob gone, or another digest asked, the download happens. */
static void test_pull_if_absent(void **state)
{
    (void)state;
    struct model m;
    model_get(&m, "Q8_0");
    new_home("if-absent");
    struct server sv;
    server_start(&sv, m.data, m.len);
    char url[256], d[80];
    server_url(&sv, "/model.gguf", url, sizeof url);
    PLUMB_OK("pull", url, "--name", "a:1", "--sha256", m.digest, "--if-absent");
    assert_int_equal(atomic_load(&sv.requests), 1);
    PLUMB_OK("pull", url, "--name", "b:1", "--sha256", m.digest, "--if-absent");
    assert_int_equal(atomic_load(&sv.requests), 1); /* none more */
    ls_digest("b:1", d);
    assert_string_equal(d, m.tagged);
    /* the blob's file gone (a store half lost): downloaded again */
    char blob[700];
    snprintf(blob, sizeof blob, "%s/blobs/sha256-%s", home, m.digest);
    assert_int_equal(unlink(blob), 0);
    PLUMB_OK("pull", url, "--name", "c:1", "--sha256", m.digest, "--if-absent");
    assert_int_equal(atomic_load(&sv.requests), 2);
    PLUMB_OK("verify");
    /* another digest than the store's: a download, refused on mismatch */
    struct run r;
    PLUMB(&r, "pull", url, "--name", "d:1", "--sha256",
          "0000000000000000000000000000000000000000000000000000000000000000", "--if-absent");
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "mismatch"));
    run_free(&r);
    assert_int_equal(atomic_load(&sv.requests), 3);
    PLUMB(&r, "pull", url, "--if-absent");
    EXPECT_STATUS(r, 2);
    run_free(&r);
    server_stop(&sv);
    free(m.data);
}

/* A download cut off while the file changes on the origin (or resumed from
 * a mirror that holds another version) is never spliced from two versions:
 * such a file was registered, verify called it fine (it hashes what it
 * has) and run printed nothing. The resumed request names the version
 * begun (If-Range), a 206 of another version (validator or length) starts
 * the download over, and without a validator a cut download starts over. */
static void test_resume_changed_file(void **state)
{
    (void)state;
    struct model m, other;
    model_get(&m, "Q8_0");
    model_get(&other, "Q4_0");
    /* a second version of the same size, changed in both halves: a splice
     * of the two is a valid GGUF that is neither */
    char *v2 = malloc(m.len), d2[65], tagged2[80];
    memcpy(v2, m.data, m.len);
    v2[m.len * 3 / 8] ^= 0x55;
    v2[m.len * 7 / 8] ^= 0x55;
    sha256_hex(v2, m.len, d2);
    snprintf(tagged2, sizeof tagged2, "sha256:%s", d2);
    new_home("resume-changed");
    struct server sv;
    server_start(&sv, m.data, m.len);
    sv.body2 = v2;
    sv.len2 = m.len;
    char url[256], d[80];
    server_url(&sv, "/model.gguf", url, sizeof url);
    struct {
        const char *what;
        bool ignore_if_range;
        const char *body2;
        size_t len2;
        const char *want;
    } cases[] = {
        {"the origin changed (If-Range answers with the new version)", false, v2, m.len, tagged2},
        {"a mirror ignoring If-Range answers with another version", true, v2, m.len, tagged2},
        {"a mirror ignoring If-Range answers with a file of another length", true, other.data, other.len,
         other.tagged},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "web:%zu", i + 1);
        atomic_store(&sv.requests, 0);
        atomic_store(&sv.if_range_requests, 0);
        sv.body2 = cases[i].body2;
        sv.len2 = cases[i].len2;
        atomic_store(&sv.ignore_if_range, cases[i].ignore_if_range);
        atomic_store(&sv.swap_at, 2); /* the resumed request finds the other version */
        atomic_store(&sv.cut_after, (int)(m.len / 2));
        atomic_store(&sv.cut_times, 1);
        PLUMB_OK("pull", url, "--name", name, "--retry-delay", "0.05");
        ls_digest(name, d);
        if (strcmp(d, cases[i].want))
            fail_msg("%s: registered %s, expected %s (the whole new version)", cases[i].what, d, cases[i].want);
        assert_int_equal(atomic_load(&sv.if_range_requests), 1);
    }
    /* no validator: a cut download starts over instead of resuming */
    atomic_store(&sv.swap_at, 0);
    atomic_store(&sv.validators, 1);
    atomic_store(&sv.requests, 0);
    atomic_store(&sv.range_requests, 0);
    atomic_store(&sv.cut_after, (int)(m.len / 2));
    atomic_store(&sv.cut_times, 1);
    PLUMB_OK("pull", url, "--name", "web:4", "--retry-delay", "0.05");
    assert_int_equal(atomic_load(&sv.requests), 2);
    assert_int_equal(atomic_load(&sv.range_requests), 0);
    ls_digest("web:4", d);
    assert_string_equal(d, m.tagged);
    PLUMB_OK("verify");
    server_stop(&sv);
    free(v2);
    free(m.data);
    free(other.data);
}

/* Runs a pull that must fail and checks the store did not change. */
static void expect_clean_failure(const char *what, long fsize_limit, const char *const *args, const char *message)
{
    char *before = snapshot();
    struct run r;
    spawn(&r, fsize_limit, args);
    finish(&r);
    if (r.status != 1)
        fail_msg("%s: exit status %d, expected 1\nstderr: %s", what, r.status, r.err);
    if (!strstr(r.err, message))
        fail_msg("%s: the message does not say '%s': %s", what, message, r.err);
    assert_non_null(strstr(r.err, "the store is unchanged"));
    char *after = snapshot();
    if (strcmp(before, after) != 0)
        fail_msg("%s changed the store:\nbefore:\n%s\nafter:\n%s", what, before, after);
    free(before);
    free(after);
    run_free(&r);
}

static void test_failures_leave_store(void **state)
{
    (void)state;
    struct model m, other;
    model_get(&m, "Q8_0");
    model_get(&other, "Q4_0");
    new_home("failures");
    pull_ok(other.path, "keep:1");
    char trunc[600], junk[600];
    test_tmpfile("truncated.gguf", trunc, sizeof trunc);
    assert_int_equal(test_write_file(trunc, m.data, m.len / 2), 0);
    test_tmpfile("junk.gguf", junk, sizeof junk);
    assert_int_equal(test_write_file(junk, "not a model at all\n", 19), 0);
    const char *zeros = "0000000000000000000000000000000000000000000000000000000000000000";

    {
        const char *a[] = {"pull", m.path, "--name", "x:1", "--sha256", zeros, NULL};
        expect_clean_failure("wrong --sha256", 0, a, "SHA-256 mismatch");
    }
    {
        const char *a[] = {"pull", m.path, "--name", "keep:1", "--copy", "--sha256", zeros, NULL};
        expect_clean_failure("wrong --sha256 onto an existing name", 0, a, "SHA-256 mismatch");
    }
    {
        const char *a[] = {"pull", trunc, "--name", "x:1", "--copy", NULL};
        expect_clean_failure("truncated file", 0, a, "extends past the end of the file");
    }
    {
        const char *a[] = {"pull", trunc, "--name", "x:1", NULL}; /* hard-linked */
        expect_clean_failure("truncated file, linked", 0, a, "not a valid GGUF");
    }
    {
        const char *a[] = {"pull", junk, "--name", "x:1", NULL};
        expect_clean_failure("non-GGUF file", 0, a, "not a GGUF file");
    }
    {
        const char *a[] = {"pull", m.path, "--name", "x:1", "--copy", NULL};
        expect_clean_failure("full disk (copy)", (long)(m.len / 4), a, "File too large");
    }

    struct server sv;
    server_start(&sv, m.data, m.len);
    char url[256], missing[256];
    server_url(&sv, "/model.gguf", url, sizeof url);
    server_url(&sv, "/missing.gguf", missing, sizeof missing);
    {
        const char *a[] = {"pull", url, "--name", "x:1", "--sha256", zeros, NULL};
        expect_clean_failure("wrong --sha256 (http)", 0, a, "SHA-256 mismatch");
    }
    {
        const char *a[] = {"pull", url, "--name", "x:1", NULL};
        expect_clean_failure("full disk (http)", (long)(m.len / 4), a, "File too large");
    }
    {
        const char *a[] = {"pull", missing, "--name", "x:1", NULL};
        expect_clean_failure("404", 0, a, "HTTP 404");
    }
    /* a server that always cuts the file short: retries run out */
    atomic_store(&sv.cut_after, (int)(m.len / 10));
    atomic_store(&sv.cut_times, -1);
    atomic_store(&sv.requests, 0);
    {
        const char *a[] = {"pull", url, "--name", "x:1", "--retries", "2", "--retry-delay", "0.01", NULL};
        expect_clean_failure("truncated download", 0, a, "after 3 attempts");
    }
    assert_int_equal(atomic_load(&sv.requests), 3);
    server_stop(&sv);
    /* the truncated body served whole is a truncated GGUF */
    server_start(&sv, m.data, m.len / 2);
    server_url(&sv, "/model.gguf", url, sizeof url);
    {
        const char *a[] = {"pull", url, "--name", "x:1", NULL};
        expect_clean_failure("truncated file (http)", 0, a, "not a valid GGUF");
    }
    server_stop(&sv);
    char d[80];
    ls_digest("keep:1", d);
    assert_string_equal(d, other.tagged);
    PLUMB_OK("verify");
    free(m.data);
    free(other.data);
}

/* Every model `ls` shows is whole: the final digest and size, its file in place. */
static void check_ls_whole(const struct model *m)
{
    struct run r;
    PLUMB(&r, "ls", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(v, "models"), i, e) {
        assert_string_equal(json_string_value(json_object_get(e, "digest")), m->tagged);
        assert_int_equal(json_integer_value(json_object_get(e, "size")), (json_int_t)m->len);
        char blob[700];
        struct stat st;
        snprintf(blob, sizeof blob, "%s/blobs/sha256-%s", home, m->digest);
        assert_int_equal(stat(blob, &st), 0);
        assert_int_equal(st.st_size, (off_t)m->len);
    }
    json_decref(v);
    run_free(&r);
}

static void test_concurrent_pulls(void **state)
{
    (void)state;
    struct model m;
    model_get(&m, "Q8_0");
    new_home("concurrent");
    struct server sv;
    server_start(&sv, m.data, m.len);
    atomic_store(&sv.delay_us, 8000); /* about 2 MB/s: the pulls overlap */
    char url[256];
    server_url(&sv, "/model.gguf", url, sizeof url);
    struct run a, b;
    const char *args[] = {"pull", url, "--name", "same:1", NULL};
    spawn(&a, 0, args);
    spawn(&b, 0, args);
    /* ls while they run: never a half-written model */
    int checks = 0;
    bool a_done = false, b_done = false;
    while (!a_done || !b_done) {
        check_ls_whole(&m);
        checks++;
        a_done = a_done || finished(&a);
        b_done = b_done || finished(&b);
    }
    EXPECT_STATUS(a, 0);
    EXPECT_STATUS(b, 0);
    assert_non_null(strstr(a.out, "same:1"));
    assert_non_null(strstr(b.out, "same:1"));
    run_free(&a);
    run_free(&b);
    assert_true(checks > 2);
    assert_int_equal(atomic_load(&sv.requests), 2);
    server_stop(&sv);
    check_ls_whole(&m);
    assert_int_equal(count_files("blobs"), 1);
    assert_int_equal(count_files("tmp"), 0);
    char *snap = snapshot();
    /* one blob row, one revision, one name */
    int rows = 0;
    for (const char *p = snap; (p = strchr(p, '\n')); p++)
        rows++;
    if (rows != 4) /* blobs/FILE, blobs:, revisions:, names: */
        fail_msg("registry after two pulls:\n%s", snap);
    free(snap);
    PLUMB_OK("verify");
    free(m.data);
}

static void test_tag_rollback_rm_verify(void **state)
{
    (void)state;
    struct model v1, v2;
    model_get(&v1, "Q8_0");
    model_get(&v2, "Q4_0");
    new_home("names-ops");
    struct run r;
    char d[80];
    pull_ok(v1.path, "bot:2");
    PLUMB(&r, "rollback", "bot:2");
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "no earlier version"));
    run_free(&r);
    pull_ok(v2.path, "bot:2");
    ls_digest("bot:2", d);
    assert_string_equal(d, v2.tagged);
    assert_int_equal(count_files("blobs"), 2); /* the old version is kept for rollback */
    PLUMB_OK("rollback", "bot:2");
    ls_digest("bot:2", d);
    assert_string_equal(d, v1.tagged);
    PLUMB(&r, "rollback", "bot:2"); /* v1 had no earlier version */
    EXPECT_STATUS(r, 1);
    run_free(&r);
    PLUMB(&r, "show", "bot:2", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    json_t *hist = json_object_get(json_object_get(v, "store"), "history");
    assert_int_equal(json_array_size(hist), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(hist, 2), "action")), "rollback");
    /* revisions are numbered 1..n as the user sees them (not the registry's ids across names) */
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(hist, i), "revision")), (json_int_t)i + 1);
    json_decref(v);
    run_free(&r);

    /* tag: a second name for the same file; moving a name keeps its history */
    PLUMB_OK("tag", "bot:2", "bot:stable");
    ls_digest("bot:stable", d);
    assert_string_equal(d, v1.tagged);
    PLUMB(&r, "tag", "nope:1", "x:1");
    EXPECT_STATUS(r, 1);
    run_free(&r);

    /* verify finds a damaged file, and says which */
    PLUMB(&r, "verify");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "all good"));
    run_free(&r);
    char blob[700];
    snprintf(blob, sizeof blob, "%s/blobs/sha256-%s", home, v1.digest);
    chmod(blob, 0644);
    int fd = open(blob, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, (off_t)(v1.len / 2)), 1);
    close(fd);
    PLUMB(&r, "verify", "bot:stable", "--json");
    EXPECT_STATUS(r, 1);
    v = test_parse_json(r.out);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(v, "blobs"), 0), "state")),
                        "corrupt");
    json_decref(v);
    run_free(&r);
    /* pulling the file again repairs it */
    pull_ok(v1.path, "bot:2");
    PLUMB_OK("verify");

    /* a removal that died between moving the file aside and its commit:
     * the registry still names the file, so the next open puts it back */
    char aside[800];
    snprintf(aside, sizeof aside, "%s/tmp/rm-%s-999999-0.del", home, v1.digest);
    assert_int_equal(rename(blob, aside), 0);
    PLUMB_OK("verify");
    struct stat st;
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(count_files("tmp"), 0);

    /* rm: the file goes when no name (nor history) uses it */
    PLUMB(&r, "rm", "bot:stable");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "stays"));
    run_free(&r);
    assert_int_equal(count_files("blobs"), 2);
    PLUMB_OK("rm", "bot:2");
    assert_int_equal(count_files("blobs"), 0);
    PLUMB(&r, "rm", "bot:2");
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "not in the store"));
    run_free(&r);
    PLUMB(&r, "ls", "--json");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "\"models\": []"));
    run_free(&r);
    PLUMB_OK("verify");
    free(v1.data);
    free(v2.data);
}

/* A removal before its commit: the file moved aside into tmp/ is locked
 * (files_move_aside, as store_rm does it), so another process opening the
 * store, which cleans tmp/, leaves it alone; once the remover is gone, the
 * next open puts it back, as the registry still names it. */
static void test_removal_lock(void **state)
{
    (void)state;
    struct model m;
    model_get(&m, "Q8_0");
    new_home("rm-lock");
    pull_ok(m.path, "x:1");
    struct store *s;
    pb_err err = {0};
    assert_int_equal(store_open(home, &s, &err), PB_OK);
    char blob[4096], aside[4096], prefix[80];
    int fd = -1;
    store_blob_path(s, m.digest, blob, sizeof blob);
    snprintf(prefix, sizeof prefix, "rm-%s", m.digest);
    assert_int_equal(files_move_aside(s, blob, prefix, "del", aside, sizeof aside, &fd, &err), PB_OK);
    assert_int_equal(count_files("tmp"), 1);
    PLUMB_OK("ls");
    struct stat st;
    assert_int_equal(stat(aside, &st), 0);
    assert_int_equal((size_t)st.st_size, m.len);
    assert_int_not_equal(stat(blob, &st), 0);
    close(fd);
    PLUMB_OK("verify");
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(count_files("tmp"), 0);
    /* nothing to move: nothing created */
    assert_int_equal(files_move_aside(s, "/nonexistent/x", prefix, "del", aside, sizeof aside, &fd, &err),
                     PB_ENOTFOUND);
    assert_int_equal(count_files("tmp"), 0);
    store_close(s);
    free(m.data);
}

static void test_kill9(void **state)
{
    (void)state;
    struct model m, other;
    model_get(&m, "Q8_0");
    model_get(&other, "Q4_0");
    new_home("kill9");
    struct run r;
    pull_ok(other.path, "keep:1");
    char *before = snapshot();
    struct server sv;
    server_start(&sv, m.data, m.len);
    atomic_store(&sv.delay_us, 20000);
    char url[256];
    server_url(&sv, "/model.gguf", url, sizeof url);
    const char *args[] = {"pull", url, "--name", "killed:1", NULL};
    spawn(&r, 0, args);
    /* kill it once part of the file is written */
    char tmpdir[600];
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", home);
    bool writing = false;
    for (int i = 0; i < 1000 && !writing; i++) {
        sleep_ms(10);
        DIR *d = opendir(tmpdir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            char p[900];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
            if (de->d_name[0] != '.' && stat(p, &st) == 0 && st.st_size > 100000)
                writing = true;
        }
        if (d)
            closedir(d);
    }
    assert_true(writing);
    kill(r.pid, SIGKILL);
    finish(&r);
    assert_int_equal(r.status, 128 + SIGKILL);
    run_free(&r);
    server_stop(&sv);
    assert_int_equal(count_files("tmp"), 1); /* what it left */
    char d[80];
    ls_digest("killed:1", d);
    assert_string_equal(d, "");
    PLUMB(&r, "verify");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "all good"));
    run_free(&r);
    /* the next open removed the dead pull's file: the store is as before */
    char *after = snapshot();
    assert_string_equal(before, after);
    free(before);
    free(after);
    free(m.data);
    free(other.data);
}

static void test_directory(void **state)
{
    (void)state;
    struct model a, b;
    model_get(&a, "Q8_0");
    model_get(&b, "Q4_0");
    new_home("dir");
    char dir[600], p[700];
    test_tmpfile("usb", dir, sizeof dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/alpha.gguf", dir);
    assert_int_equal(test_write_file(p, a.data, a.len), 0);
    snprintf(p, sizeof p, "%s/beta.GGUF", dir);
    assert_int_equal(test_write_file(p, b.data, b.len), 0);
    snprintf(p, sizeof p, "%s/readme.txt", dir);
    assert_int_equal(test_write_file(p, "hi\n", 3), 0);
    /* without SHA256SUMS: both, named by their files */
    struct run r;
    PLUMB_OK("pull", dir);
    char d[80];
    ls_digest("alpha:latest", d);
    assert_string_equal(d, a.tagged);
    ls_digest("beta:latest", d);
    assert_string_equal(d, b.tagged);
    /* with SHA256SUMS: a wrong digest stops that file only */
    new_home("dir-sums");
    char sums[1024];
    snprintf(sums, sizeof sums, "%s  alpha.gguf\n%s *beta.GGUF\n", a.digest,
             "1111111111111111111111111111111111111111111111111111111111111111");
    snprintf(p, sizeof p, "%s/SHA256SUMS", dir);
    assert_int_equal(test_write_file(p, sums, strlen(sums)), 0);
    PLUMB(&r, "pull", dir);
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "SHA-256 mismatch"));
    assert_non_null(strstr(r.err, "1 of 2 models imported"));
    run_free(&r);
    ls_digest("alpha:latest", d);
    assert_string_equal(d, a.tagged);
    ls_digest("beta:latest", d);
    assert_string_equal(d, "");
    PLUMB(&r, "pull", dir, "--name", "x");
    EXPECT_STATUS(r, 2);
    run_free(&r);
    free(a.data);
    free(b.data);
}


/* ---- air-gap bundles ---- */

/* The entries of a ustar file: where each one's data starts and its size. */
static int tar_entries(const char *t, size_t len, size_t *data, size_t *size, char names[][128], int max)
{
    int n = 0;
    size_t off = 0;
    while (off + 512 <= len && t[off] && n < max) {
        snprintf(names[n], 128, "%.100s", t + off);
        size[n] = (size_t)strtoull(t + off + 124, NULL, 8);
        data[n] = off + 512;
        off = data[n] + (size[n] + 511) / 512 * 512;
        n++;
    }
    return n;
}

static void write_variant(const char *name, const char *data, size_t len, char *path, size_t size)
{
    test_tmpfile(name, path, size);
    assert_int_equal(test_write_file(path, data, len), 0);
}

static void test_bundles(void **state)
{
    (void)state;
    struct model m, other;
    model_get(&m, "Q8_0");
    model_get(&other, "Q4_0");
    char bundle[600];
    test_tmpfile("models.tar", bundle, sizeof bundle);
    unlink(bundle);

    /* the site with a network: two files, three names */
    new_home("bundle-src");
    char src_home[512];
    snprintf(src_home, sizeof src_home, "%s", home);
    pull_ok(m.path, "a:1");
    pull_ok(other.path, "b:1");
    PLUMB_OK("tag", "a:1", "a:prod");
    struct run r;
    PLUMB(&r, "export", "a:1", "a:prod", "b:1", "a:1", "-o", bundle, "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    assert_int_equal(json_array_size(json_object_get(v, "models")), 3); /* a:1 once */
    assert_int_equal(json_integer_value(json_object_get(v, "blobs")), 2);
    assert_int_equal(json_integer_value(json_object_get(v, "blob_bytes")), (json_int_t)(m.len + other.len));
    json_decref(v);
    run_free(&r);
    PLUMB(&r, "export", "a:1", "nothere", "-o", bundle);
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "nothere"));
    run_free(&r);
    PLUMB(&r, "export", "a:1");
    EXPECT_STATUS(r, 2);
    run_free(&r);

    /* its layout: the manifest first, then each file once under its digest */
    size_t len;
    char *tar = test_read_file(bundle, &len);
    assert_non_null(tar);
    size_t data[8], size[8];
    char names[8][128];
    assert_int_equal(tar_entries(tar, len, data, size, names, 8), 3);
    assert_string_equal(names[0], "manifest.json");
    json_error_t je;
    json_t *man = json_loadb(tar + data[0], size[0], 0, &je);
    assert_non_null(man);
    assert_string_equal(json_string_value(json_object_get(man, "format")), "plumb-bundle");
    assert_non_null(json_string_value(json_object_get(man, "plumb_version")));
    assert_int_equal(json_array_size(json_object_get(man, "models")), 3);
    json_decref(man);
    int im = !strcmp(names[1] + 13, m.digest) ? 1 : 2, io = 3 - im;
    assert_string_equal(names[im] + 13, m.digest);
    assert_string_equal(names[io] + 13, other.digest);
    assert_int_equal(size[im], m.len);
    assert_memory_equal(tar + data[im], m.data, m.len);

    /* the site without: b:1 exists there already, as another file */
    new_home("bundle-dst");
    pull_ok(m.path, "b:1");
    char p[600];
    {
        char *t = malloc(len);
        memcpy(t, tar, len);
        t[data[2] + size[2] / 2] ^= 0x20;
        write_variant("tampered.tar", t, len, p, sizeof p);
        const char *a[] = {"import", p, NULL};
        expect_clean_failure("a tampered file", 0, a, "does not match its SHA-256");
        /* the manifest altered to name other files */
        memcpy(t, tar, len);
        char *d = memmem(t + data[0], size[0], m.digest, 64);
        assert_non_null(d);
        while (d) {
            d[0] = d[0] == 'f' ? '0' : 'f';
            d = memmem(d + 64, (size_t)(t + data[0] + size[0] - (d + 64)), m.digest, 64);
        }
        write_variant("tampered-manifest.tar", t, len, p, sizeof p);
        expect_clean_failure("a tampered manifest", 0, a, "its manifest does not list");
        free(t);
    }
    const size_t cuts[] = {100, data[0] + size[0] / 2, data[1] + 1000, data[2] - 512, data[2] + size[2] / 2,
                           data[2] + size[2] - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "a bundle cut at byte %zu", cuts[i]);
        write_variant("truncated.tar", tar, cuts[i], p, sizeof p);
        const char *a[] = {"import", p, NULL};
        expect_clean_failure(what, 0, a, "truncated");
    }
    {
        write_variant("junk.tar", "this is not a tar file\n", 23, p, sizeof p);
        const char *a[] = {"import", p, NULL};
        expect_clean_failure("not a tar", 0, a, "not a valid plumb bundle");
        /* a tar of a model, without a manifest */
        char cmd[1400];
        test_tmpfile("plain.tar", p, sizeof p);
        snprintf(cmd, sizeof cmd, "tar -cf '%s' -C \"$(dirname '%s')\" \"$(basename '%s')\"", p, m.path, m.path);
        assert_int_equal(system(cmd), 0);
        expect_clean_failure("a tar without a manifest", 0, a, "not manifest.json");
        const char *full[] = {"import", bundle, NULL};
        expect_clean_failure("full disk", (long)(other.len / 2), full, "File too large");
    }
    /* random damage anywhere (tar headers, the manifest's JSON, the data):
     * refused or, where it hit nothing that matters (padding, a header's
     * mtime), verified; never a crash */
    {
        char *t = malloc(len);
        unsigned seed = 7;
        for (int i = 0; i < 48; i++) {
            memcpy(t, tar, len);
            size_t at = i < 24 ? data[0] - 512 + (size_t)rand_r(&seed) % (size[0] + 512)
                               : (size_t)rand_r(&seed) % len;
            bool in_model = false;
            for (int k = 0; k < 1 + i % 3; k++) {
                const size_t b = (at + (size_t)k * 7) % len;
                t[b] ^= (char)(1 + rand_r(&seed) % 255);
                for (int e = 1; e < 3; e++)
                    in_model |= b >= data[e] && b < data[e] + size[e];
            }
            write_variant("damaged.tar", t, len, p, sizeof p);
            PLUMB(&r, "import", p, "--check");
            if (r.status != 0 && r.status != 1)
                fail_msg("damage at byte %zu: exit status %d\n%s", at, r.status, r.err);
            if (r.status == 0 && in_model)
                fail_msg("damage at byte %zu, in a model file, was not noticed", at);
            run_free(&r);
        }
        free(t);
    }
    /* cut after the last file's data, before tar's end blocks: everything
     * the manifest lists is there and verified, so it is whole */
    write_variant("no-end.tar", tar, data[2] + (size[2] + 511) / 512 * 512, p, sizeof p);
    PLUMB(&r, "import", p, "--check");
    EXPECT_STATUS(r, 0);
    run_free(&r);
    /* --check verifies and changes nothing */
    {
        const char *a[] = {"import", bundle, "--check", NULL};
        expect_ok_unchanged(a, "verified");
    }

    /* the real import: all names, one file each, b:1 moved with its history kept */
    PLUMB(&r, "import", bundle, "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_int_equal(json_array_size(json_object_get(v, "models")), 3);
    json_decref(v);
    run_free(&r);
    char d[80];
    ls_digest("a:1", d);
    assert_string_equal(d, m.tagged);
    ls_digest("a:prod", d);
    assert_string_equal(d, m.tagged);
    ls_digest("b:1", d);
    assert_string_equal(d, other.tagged);
    assert_int_equal(count_files("blobs"), 2);
    assert_int_equal(count_files("tmp"), 0);
    PLUMB_OK("verify");
    PLUMB_OK("rollback", "b:1");
    ls_digest("b:1", d);
    assert_string_equal(d, m.tagged);
    /* importing again moves b:1 forward and changes nothing else */
    PLUMB(&r, "import", bundle);
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "a:1"));
    assert_non_null(strstr(r.out, "already there"));
    run_free(&r);
    ls_digest("b:1", d);
    assert_string_equal(d, other.tagged);

    /* a damaged store is not exported, and no partial bundle is left */
    new_home("bundle-src");
    assert_string_equal(home, src_home);
    char blob[700];
    snprintf(blob, sizeof blob, "%s/blobs/sha256-%s", home, other.digest);
    chmod(blob, 0644);
    char *bd = test_read_file(blob, &len);
    bd[len / 2] ^= 1;
    assert_int_equal(test_write_file(blob, bd, len), 0);
    free(bd);
    char out[600];
    test_tmpfile("damaged.tar", out, sizeof out);
    unlink(out);
    PLUMB(&r, "export", "b:1", "-o", out);
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "does not match its SHA-256"));
    run_free(&r);
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0);
    char dir[600];
    snprintf(dir, sizeof dir, "%s", out);
    *strrchr(dir, '/') = 0;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q 'damaged.tar.partial'", dir);
    assert_int_not_equal(system(cmd), 0);
    free(tar);
    free(m.data);
    free(other.data);
}

/* export -o PATH renames a finished tar over PATH: a FIFO or a device node
 * there is refused and left alone; -o - streams the tar to stdout. */
static void test_export_outputs(void **state)
{
    (void)state;
    struct model m;
    model_get(&m, "Q8_0");
    new_home("export-outputs");
    pull_ok(m.path, "a:1");
    char targets[2][600];
    const int n_targets = test_special_files("bundle", targets);
    for (int k = 0; k < n_targets; k++) {
        struct run r;
        PLUMB(&r, "export", "a:1", "-o", targets[k]);
        EXPECT_STATUS(r, 1);
        assert_non_null(strstr(r.err, "regular file"));
        run_free(&r);
        test_expect_special(targets, k);
    }
    /* standard output: the whole tar there, the summary on stderr */
    struct run r;
    PLUMB(&r, "export", "a:1", "-o", "-");
    EXPECT_STATUS(r, 0);
    run_free(&r);
    size_t len;
    char *tar = test_read_file(r.out_path, &len);
    assert_non_null(tar);
    size_t data[4], size[4];
    char names[4][128];
    assert_int_equal(tar_entries(tar, len, data, size, names, 4), 2);
    assert_string_equal(names[0], "manifest.json");
    assert_int_equal(size[1], m.len);
    assert_memory_equal(tar + data[1], m.data, m.len);
    free(tar);
    PLUMB(&r, "export", "a:1", "-o", "-", "--json");
    EXPECT_STATUS(r, 2);
    run_free(&r);
    for (int k = 0; k < n_targets; k++)
        unlink(targets[k]);
    free(m.data);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Waits up to seconds for r's process (then kills it: exit 137). */
static void finish_within(struct run *r, double seconds)
{
    for (int i = 0; i < (int)(seconds * 20); i++) {
        if (finished(r))
            return;
        sleep_ms(50);
    }
    kill(r->pid, SIGKILL);
    finish(r);
}

/* Writes byte x at offset off of path, in place (same inode, same size). */
static void poke(const char *path, size_t off, char x)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &x, 1, (off_t)off), 1);
    close(fd);
}

/* A local pull is a copy by default (an edit of the original stays out of
 * the store); --link hard-links, and then a model whose file was edited
 * in place is refused by run, serve and bench with a message naming it
 * and the fix (it was used silently); verify of an intact file accepts it
 * again. An older registry (schema 2) opens and is migrated. */
static void test_linked_pull_changed(void **state)
{
    (void)state;
    struct model m, m2;
    model_get(&m, "Q8_0");
    model_get(&m2, "Q4_0"); /* another file: a blob the store does not hold yet */
    new_home("linked");
    char orig[600], orig2[600];
    test_tmpfile("user-model.gguf", orig, sizeof orig);
    test_tmpfile("user-model2.gguf", orig2, sizeof orig2);
    assert_int_equal(test_write_file(orig, m.data, m.len), 0);
    assert_int_equal(test_write_file(orig2, m2.data, m2.len), 0);
    const size_t at = m.len * 3 / 4, at2 = m2.len * 3 / 4; /* tensor data */
    const char was = m.data[at], was2 = m2.data[at2];

    /* the default: a copy; editing the original does not touch it */
    struct run r;
    PLUMB(&r, "pull", orig, "--name", "copied", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    assert_false(json_is_true(json_object_get(v, "linked")));
    json_decref(v);
    run_free(&r);
    poke(orig, at, (char)(was ^ 0x40));
    PLUMB_OK("verify", "copied");
    PLUMB_OK("run", "copied", "-p", "hi", "-n", "1");

    /* --link: the store shares the file; an edit is refused at load */
    PLUMB(&r, "pull", orig2, "--name", "linked", "--link", "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_true(json_is_true(json_object_get(v, "linked")));
    json_decref(v);
    run_free(&r);
    PLUMB_OK("run", "linked", "-p", "hi", "-n", "1");
    sleep_ms(20); /* a modification time the file system tells apart */
    poke(orig2, at2, (char)(was2 ^ 0x40));
    const char *uses[][9] = {
        {"run", "linked", "-p", "hi", "-n", "1", NULL},
        {"serve", "linked", "--port", "0", NULL},
        {"bench", "linked", "-p", "8", "-n", "0", "-r", "1", NULL},
    };
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++) {
        spawn(&r, 0, uses[i]);
        finish_within(&r, 60);
        if (r.status != 1 || !strstr(r.err, "linked:latest changed since it was pulled") ||
            !strstr(r.err, "plumb verify"))
            fail_msg("plumb %s of an edited model: exit %d: %s", uses[i][0], r.status, r.err);
        run_free(&r);
    }
    PLUMB(&r, "verify", "linked");
    EXPECT_STATUS(r, 1);
    run_free(&r);
    /* the edit undone: verify finds it intact and accepts it again */
    poke(orig2, at2, was2);
    PLUMB(&r, "run", "linked", "-p", "hi", "-n", "1");
    EXPECT_STATUS(r, 1);
    run_free(&r);
    PLUMB_OK("verify", "linked");
    PLUMB_OK("run", "linked", "-p", "hi", "-n", "1");

    /* a registry of the previous schema (no recorded times) opens, is
     * migrated, and its models still load */
    char db[700];
    snprintf(db, sizeof db, "%s/registry.db", home);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "ALTER TABLE blobs DROP COLUMN mtime; PRAGMA user_version=2", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(h);
    PLUMB(&r, "ls");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "linked:latest"));
    run_free(&r);
    PLUMB_OK("run", "copied", "-p", "hi", "-n", "1");
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 3);
    sqlite3_finalize(q);
    sqlite3_close(h);
    free(m.data);
    free(m2.data);
}

/* A full disk: reading commands work (ls, show, verify), a change fails
 * saying the disk is full and leaves the store as it was, and rm frees
 * space even then. RLIMIT_FSIZE stands in for the full disk first (as in
 * test_failures_leave_store); then a full tmpfs, mounted in a private
 * mount namespace (unshare; skipped where that is not allowed). Before,
 * every one of them failed with "disk I/O error". */
static void test_full_disk(void **state)
{
    (void)state;
    struct model a, b;
    model_get(&a, "Q8_0");
    model_get(&b, "Q4_0");
    new_home("full-disk");
    pull_ok(a.path, "a");
    PLUMB_OK("tag", "a", "b");
    char *before = snapshot();
    const char *reads[][3] = {{"ls", NULL}, {"show", "a", NULL}, {"verify", NULL}};
    for (size_t i = 0; i < 3; i++) {
        struct run r;
        spawn(&r, 1024, reads[i]);
        finish(&r);
        if (r.status != 0 || !strstr(r.out, "a:latest"))
            fail_msg("plumb %s on a full disk: exit %d\n%s%s", reads[i][0], r.status, r.out, r.err);
        run_free(&r);
    }
    const char *tag[] = {"tag", "a", "c", NULL};
    struct run r;
    spawn(&r, 1024, tag);
    finish(&r);
    EXPECT_STATUS(r, 1);
    assert_non_null(strstr(r.err, "the disk is full"));
    run_free(&r);
    char *after = snapshot();
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* a file system really full: rm makes room */
    char dir[600], script[600], out[600], cmd[4096];
    test_tmpfile("full-mnt", dir, sizeof dir);
    mkdir(dir, 0755);
    test_tmpfile("full-disk.sh", script, sizeof script);
    test_tmpfile("full-disk.out", out, sizeof out);
    const char *sh =
        "D=$1; P=$2\n"
        "mount -t tmpfs -o size=24m tmpfs \"$D\" 2>/dev/null || exit 77\n"
        "export PLUMB_HOME=\"$D/home\"\n"
        "\"$P\" pull \"$3\" --name a >/dev/null && \"$P\" pull \"$4\" --name b >/dev/null || exit 3\n"
        "dd if=/dev/zero of=\"$D/fill\" bs=64k 2>/dev/null\n"
        "for c in ls 'show a' verify 'rm a' ls verify; do\n"
        "  echo \"== $c\"; \"$P\" $c 2>&1; echo \"-> $?\"\n"
        "done\n";
    assert_int_equal(test_write_file(script, sh, strlen(sh)), 0);
    snprintf(cmd, sizeof cmd, "unshare -m%s sh '%s' '%s' '%s' '%s' '%s' >'%s' 2>&1", geteuid() == 0 ? "" : "r",
             script, dir, plumb_bin, a.path, b.path, out);
    int st = system(cmd);
    char *text = test_read_file(out, NULL);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        print_message("  (no private tmpfs here: the full file system part is skipped)\n");
    } else {
        const char *want[] = {"== ls\nNAME", "== show a\nname            a:latest", "== verify\n",
                              "== rm a\nremoved a:latest (1 file", "== ls\nNAME"};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
            if (!strstr(text, want[i]))
                fail_msg("on a full file system, expected '%s':\n%s", want[i], text);
        assert_int_equal(count_of(text, "-> 0\n"), 6);
        char *second_ls = strstr(strstr(text, "== rm a"), "== ls"), *end = strstr(second_ls, "== verify");
        *end = 0;
        assert_null(strstr(second_ls, "a:latest"));
        assert_non_null(strstr(second_ls, "b:latest"));
    }
    free(text);
    free(a.data);
    free(b.data);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_store PATH_TO_PLUMB\n");
        return 2;
    }
    plumb_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_pull_file_and_resolve),
        cmocka_unit_test(test_http_resume),
        cmocka_unit_test(test_pull_if_absent),
        cmocka_unit_test(test_resume_changed_file),
        cmocka_unit_test(test_failures_leave_store),
        cmocka_unit_test(test_concurrent_pulls),
        cmocka_unit_test(test_tag_rollback_rm_verify),
        cmocka_unit_test(test_removal_lock),
        cmocka_unit_test(test_kill9),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_bundles),
        cmocka_unit_test(test_export_outputs),
        cmocka_unit_test(test_linked_pull_changed),
        cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
