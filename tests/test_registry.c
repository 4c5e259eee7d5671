#define _GNU_SOURCE
/* plumb pull NAME[:QUANT] and plumb search, as a technician uses them:
 * the real plumb binary (argv[1]) with a catalog of its own ($PLUMB_CATALOG)
 * whose model's GGUF repository is served by a loopback mirror in Hugging
 * Face's layout ({base}/{repo}/resolve/{revision}/{file}): the registry
 * chosen by --registry, $PLUMB_REGISTRY and [store] registry; a redirect
 * to a second, CDN-like server, with the bearer token sent to the mirror
 * and not to the CDN; a 404 for a quantization the mirror lacks; an
 * unknown quantization refused before any request; a pinned SHA-256 that
 * does not match; a mirror that wants a token. */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *plumb_bin;

#define REPO "org/tiny-GGUF"
#define FILE_Q8 "tiny-Q8_0.gguf"
#define PATH_Q8 "/" REPO "/resolve/main/" FILE_Q8

/* ---- a loopback server: the mirror, or the CDN it redirects to ---- */

struct server {
    int lfd, port;
    pthread_t th;
    atomic_bool stop;
    const char *path;        /* the one file it has (under prefix) */
    char prefix[64];         /* "/hf": a mirror below a path */
    const char *body;
    size_t len;
    char redirect[256];      /* non-empty: answer the file's path with a 302 to this URL */
    const char *token;       /* non-NULL: every request needs "Authorization: Bearer TOKEN" */
    atomic_int requests, with_auth;
    pthread_mutex_t mu;
    char last_auth[256];     /* the Authorization header last received ("" none) */
    char last_path[512];
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

static void answer(struct server *sv, int fd)
{
    char req[8192];
    size_t got = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < sizeof req - 1) {
        ssize_t r = recv(fd, req + got, sizeof req - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = 0;
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = 0;
    char path[512] = "", auth[256] = "";
    sscanf(req, "GET %511s", path);
    const char *a = strcasestr(req, "\r\nAuthorization: ");
    if (a)
        sscanf(a + 17, "%255[^\r\n]", auth);
    atomic_fetch_add(&sv->requests, 1);
    if (auth[0])
        atomic_fetch_add(&sv->with_auth, 1);
    pthread_mutex_lock(&sv->mu);
    snprintf(sv->last_auth, sizeof sv->last_auth, "%s", auth);
    snprintf(sv->last_path, sizeof sv->last_path, "%s", path);
    pthread_mutex_unlock(&sv->mu);
    char want[600], head[1024], expect_auth[300];
    snprintf(want, sizeof want, "%s%s", sv->prefix, sv->path);
    if (sv->token)
        snprintf(expect_auth, sizeof expect_auth, "Bearer %s", sv->token);
    if (sv->token && strcmp(auth, expect_auth) != 0) {
        snprintf(head, sizeof head, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n"
                                    "Connection: close\r\n\r\n");
        send_all(fd, head, strlen(head));
    } else if (strcmp(path, want) != 0) {
        snprintf(head, sizeof head, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        send_all(fd, head, strlen(head));
    } else if (sv->redirect[0]) {
        snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 sv->redirect);
        send_all(fd, head, strlen(head));
    } else {
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                 sv->len);
        if (send_all(fd, head, strlen(head)))
            send_all(fd, sv->body, sv->len);
    }
    close(fd);
}

static void *accept_loop(void *arg)
{
    struct server *sv = arg;
    while (!atomic_load(&sv->stop)) {
        struct pollfd p = {sv->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(sv->lfd, NULL, NULL);
        if (fd >= 0)
            answer(sv, fd); /* one at a time: plumb makes one request at a time */
    }
    return NULL;
}

static void server_start(struct server *sv, const char *path, const char *body, size_t len)
{
    memset(sv, 0, sizeof *sv);
    pthread_mutex_init(&sv->mu, NULL);
    sv->path = path;
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
    pthread_mutex_destroy(&sv->mu);
}

/* http://HOST:PORT + prefix */
static void server_base(const struct server *sv, const char *host, char *buf, size_t size)
{
    snprintf(buf, size, "http://%s:%d%s", host, sv->port, sv->prefix);
}

/* ---- running plumb ---- */

struct run {
    int status;
    char *out, *err;
};

static void run_args(struct run *r, const char *const *args)
{
    static int counter;
    char out_path[600], err_path[600], name[64];
    snprintf(name, sizeof name, "out-%d.txt", counter);
    test_tmpfile(name, out_path, sizeof out_path);
    snprintf(name, sizeof name, "err-%d.txt", counter++);
    test_tmpfile(name, err_path, sizeof err_path);
    const char *argv[32] = {plumb_bin};
    int n = 1;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        execv(plumb_bin, (char *const *)argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = test_read_file(out_path, NULL);
    r->err = test_read_file(err_path, NULL);
    assert_non_null(r->out);
    assert_non_null(r->err);
}

#define PLUMB(r, ...)                                                                                                  \
    do {                                                                                                               \
        const char *args_[] = {__VA_ARGS__, NULL};                                                                     \
        run_args((r), args_);                                                                                          \
    } while (0)

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* Fails unless the run failed with status 1 and its stderr holds each
 * of the NULL-terminated strings. */
static void expect_failure(struct run *r, const char *const *says)
{
    EXPECT_STATUS(*r, 1);
    for (int i = 0; says[i]; i++)
        if (!strstr(r->err, says[i]))
            fail_msg("stderr does not say '%s': %s", says[i], r->err);
}

#define EXPECT_FAILURE(r, ...)                                                                                         \
    do {                                                                                                               \
        const char *says_[] = {__VA_ARGS__, NULL};                                                                     \
        expect_failure((r), says_);                                                                                    \
    } while (0)

/* ---- the model, the catalog, the store ---- */

static char *model_data;
static size_t model_len;
static char model_digest[65];

static void sha256_hex(const void *p, size_t n, char hex[65])
{
    unsigned char md[32];
    unsigned len = 0;
    assert_int_equal(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

#define MODEL_DIMS                                                                                                     \
    "\"arch\":\"llama\",\"layers\":2,\"hidden\":64,\"ffn\":128,\"heads\":4,\"kv_heads\":2,\"head_dim\":16,"           \
    "\"vocab\":100,\"context\":512,\"tied_embeddings\":true,\"params_b\":0.0001,\"license\":\"mit\","                 \
    "\"source\":\"https://example.org/config.json\""

/* A catalog folder ($PLUMB_CATALOG) whose models.json holds:
 *   tiny        Q8_0 (on the mirror) and Q4_0 (not on it), no Q4_K_M
 *   tiny-pinned Q8_0, pinned to the file's real digest
 *   tiny-wrong  Q8_0, pinned to another digest
 *   big-model   a shape no machine holds, no repository */
static void write_catalog(void)
{
    char dir[600], path[700];
    test_tmpfile("catalog", dir, sizeof dir);
    mkdir(dir, 0755);
    char *text = NULL;
    int n = asprintf(
        &text,
        "{\"models\":["
        "{\"id\":\"tiny\",\"name\":\"Tiny Test\"," MODEL_DIMS ",\"gguf\":{\"repo\":\"" REPO "\",\"files\":{"
        "\"Q8_0\":{\"file\":\"" FILE_Q8 "\"},\"Q4_0\":{\"file\":\"tiny-Q4_0.gguf\"}}}},"
        "{\"id\":\"tiny-pinned\",\"name\":\"Tiny Pinned\"," MODEL_DIMS ",\"gguf\":{\"repo\":\"" REPO "\",\"files\":{"
        "\"Q8_0\":{\"file\":\"" FILE_Q8 "\",\"sha256\":\"%s\"}}}},"
        "{\"id\":\"tiny-wrong\",\"name\":\"Tiny Wrong\"," MODEL_DIMS ",\"gguf\":{\"repo\":\"" REPO "\",\"files\":{"
        "\"Q8_0\":{\"file\":\"" FILE_Q8 "\",\"sha256\":\"%064d\"}}}},"
        "{\"id\":\"big-model\",\"name\":\"Big\",\"arch\":\"llama\",\"layers\":200,\"hidden\":32768,\"ffn\":131072,"
        "\"heads\":256,\"kv_heads\":8,\"head_dim\":128,\"vocab\":200000,\"context\":8192,\"tied_embeddings\":false,"
        "\"params_b\":3100,\"license\":\"mit\",\"source\":\"https://example.org/big.json\"}"
        "]}",
        model_digest, 0);
    assert_true(n > 0);
    snprintf(path, sizeof path, "%s/models.json", dir);
    assert_int_equal(test_write_file(path, text, strlen(text)), 0);
    free(text);
    setenv("PLUMB_CATALOG", dir, 1);
}

static void new_home(const char *name)
{
    char home[600];
    test_tmpfile(name, home, sizeof home);
    setenv("PLUMB_HOME", home, 1);
    unsetenv("PLUMB_REGISTRY");
    unsetenv("PLUMB_REGISTRY_TOKEN_FILE");
}

/* The digest `plumb ls --json` shows for name ("" when absent), and how
 * many names the store holds. */
static int ls_digest(const char *name, char out[80])
{
    struct run r;
    PLUMB(&r, "ls", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out), *m;
    out[0] = 0;
    size_t i;
    json_array_foreach(json_object_get(v, "models"), i, m) {
        if (!strcmp(json_string_value(json_object_get(m, "name")), name))
            snprintf(out, 80, "%s", json_string_value(json_object_get(m, "digest")));
    }
    int n = (int)json_array_size(json_object_get(v, "models"));
    json_decref(v);
    run_free(&r);
    return n;
}

static void expect_registered(const char *name)
{
    char d[80], want[80];
    ls_digest(name, d);
    snprintf(want, sizeof want, "sha256:%s", model_digest);
    if (strcmp(d, want) != 0)
        fail_msg("%s: digest '%s', expected %s", name, d, want);
}

static void expect_empty_store(void)
{
    char d[80];
    assert_int_equal(ls_digest("-", d), 0);
}

static void write_token(const char *name, const char *token, char *path, size_t size)
{
    test_tmpfile(name, path, size);
    assert_int_equal(test_write_file(path, token, strlen(token)), 0);
}

/* ---- tests ---- */

/* By name, from the registry chosen by --registry, $PLUMB_REGISTRY or a
 * configuration's [store] registry, in that order. */
static void test_pull_by_name(void **state)
{
    (void)state;
    new_home("byname");
    struct server sv;
    server_start(&sv, PATH_Q8, model_data, model_len);
    snprintf(sv.prefix, sizeof sv.prefix, "/hf");
    char base[128];
    server_base(&sv, "127.0.0.1", base, sizeof base);
    struct run r;
    /* any case; registered NAME:quant in lower case */
    PLUMB(&r, "pull", "TINY:q8_0", "--registry", base);
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "tiny:q8_0"));
    assert_non_null(strstr(r.err, PATH_Q8)); /* it says which URL */
    run_free(&r);
    expect_registered("tiny:q8_0");
    pthread_mutex_lock(&sv.mu);
    assert_string_equal(sv.last_path, "/hf" PATH_Q8);
    assert_string_equal(sv.last_auth, ""); /* no token, none sent */
    pthread_mutex_unlock(&sv.mu);

    /* $PLUMB_REGISTRY, --name, --json (the source is the URL) */
    setenv("PLUMB_REGISTRY", base, 1);
    PLUMB(&r, "pull", "tiny:Q8_0", "--name", "assistant:1", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out);
    assert_string_equal(json_string_value(json_object_get(v, "name")), "assistant:1");
    assert_non_null(strstr(json_string_value(json_object_get(v, "source")), "/hf" PATH_Q8));
    json_decref(v);
    run_free(&r);
    expect_registered("assistant:1");

    /* --registry wins over $PLUMB_REGISTRY (a dead one here) */
    setenv("PLUMB_REGISTRY", "http://127.0.0.1:9/nothing", 1);
    int before = atomic_load(&sv.requests);
    PLUMB(&r, "pull", "tiny:q8_0", "--name", "b", "--registry", base);
    EXPECT_STATUS(r, 0);
    run_free(&r);
    assert_int_equal(atomic_load(&sv.requests), before + 1);
    unsetenv("PLUMB_REGISTRY");

    /* a configuration's [store] registry */
    char ini[600], text[300];
    test_tmpfile("pull.ini", ini, sizeof ini);
    snprintf(text, sizeof text, "[store]\nregistry = %s/\n", base); /* a trailing slash is fine */
    assert_int_equal(test_write_file(ini, text, strlen(text)), 0);
    PLUMB(&r, "pull", "tiny:q8_0", "--name", "c", "--config", ini);
    EXPECT_STATUS(r, 0);
    run_free(&r);
    expect_registered("c:latest");
    /* ... which $PLUMB_REGISTRY overrides */
    setenv("PLUMB_REGISTRY", "http://127.0.0.1:9/nothing", 1);
    PLUMB(&r, "pull", "tiny:q8_0", "--name", "d", "--config", ini, "--retries", "0");
    EXPECT_FAILURE(&r, "127.0.0.1:9/nothing");
    run_free(&r);
    unsetenv("PLUMB_REGISTRY");

    /* --registry is for names */
    char url[256];
    snprintf(url, sizeof url, "%s%s", base, PATH_Q8);
    PLUMB(&r, "pull", url, "--registry", base);
    EXPECT_STATUS(r, 2);
    run_free(&r);
    server_stop(&sv);
}

/* The mirror redirects to a CDN on another host: the file comes from
 * the CDN; the bearer token goes to the mirror, never to the CDN. */
static void test_redirect_token(void **state)
{
    (void)state;
    new_home("redirect");
    struct server cdn, mirror;
    server_start(&cdn, "/cdn/blobs/abc123", model_data, model_len);
    server_start(&mirror, PATH_Q8, NULL, 0);
    mirror.token = "s3cret-Token_1";
    /* another host name for the same loopback address, and another port */
    snprintf(mirror.redirect, sizeof mirror.redirect, "http://localhost:%d/cdn/blobs/abc123", cdn.port);
    char base[128], tok[600];
    server_base(&mirror, "127.0.0.1", base, sizeof base);
    write_token("token", "s3cret-Token_1\n", tok, sizeof tok);
    struct run r;
    PLUMB(&r, "pull", "tiny:q8_0", "--registry", base, "--token-file", tok);
    EXPECT_STATUS(r, 0);
    run_free(&r);
    expect_registered("tiny:q8_0");
    assert_int_equal(atomic_load(&mirror.requests), 1);
    assert_int_equal(atomic_load(&mirror.with_auth), 1);
    pthread_mutex_lock(&mirror.mu);
    assert_string_equal(mirror.last_auth, "Bearer s3cret-Token_1");
    pthread_mutex_unlock(&mirror.mu);
    assert_int_equal(atomic_load(&cdn.requests), 1);
    assert_int_equal(atomic_load(&cdn.with_auth), 0); /* the token stayed with the mirror */

    /* the same from $PLUMB_REGISTRY and $PLUMB_REGISTRY_TOKEN_FILE */
    setenv("PLUMB_REGISTRY", base, 1);
    setenv("PLUMB_REGISTRY_TOKEN_FILE", tok, 1);
    PLUMB(&r, "pull", "tiny:q8_0", "--name", "env");
    EXPECT_STATUS(r, 0);
    run_free(&r);
    expect_registered("env:latest");
    assert_int_equal(atomic_load(&mirror.with_auth), 2);
    assert_int_equal(atomic_load(&cdn.requests), 2);
    assert_int_equal(atomic_load(&cdn.with_auth), 0);
    unsetenv("PLUMB_REGISTRY");
    unsetenv("PLUMB_REGISTRY_TOKEN_FILE");
    server_stop(&mirror);
    server_stop(&cdn);
}

/* A mirror that wants a token: refused without one (saying how to give
 * one), refused with a wrong one (saying so), taken with the right one;
 * nothing registered by the refusals. */
static void test_auth(void **state)
{
    (void)state;
    new_home("auth");
    struct server sv;
    server_start(&sv, PATH_Q8, model_data, model_len);
    sv.token = "right";
    char base[128], good[600], bad[600];
    server_base(&sv, "127.0.0.1", base, sizeof base);
    write_token("good-token", "  right  \n", good, sizeof good);
    write_token("bad-token", "wrong\n", bad, sizeof bad);
    struct run r;
    PLUMB(&r, "pull", "tiny:q8_0", "--registry", base);
    EXPECT_FAILURE(&r, "HTTP 401", "--token-file", "the store is unchanged");
    run_free(&r);
    PLUMB(&r, "pull", "tiny:q8_0", "--registry", base, "--token-file", bad);
    EXPECT_FAILURE(&r, "HTTP 401", "refused the token");
    run_free(&r);
    expect_empty_store();
    /* a token file that holds no token */
    char empty[600];
    write_token("empty-token", "\n\n", empty, sizeof empty);
    int before = atomic_load(&sv.requests);
    PLUMB(&r, "pull", "tiny:q8_0", "--registry", base, "--token-file", empty);
    EXPECT_FAILURE(&r, "expected one token");
    run_free(&r);
    assert_int_equal(atomic_load(&sv.requests), before);
    PLUMB(&r, "pull", "tiny:q8_0", "--registry", base, "--token-file", good);
    EXPECT_STATUS(r, 0);
    run_free(&r);
    expect_registered("tiny:q8_0");
    server_stop(&sv);
}

/* Mistakes: a quantization the mirror lacks (404, which URL), one the
 * catalog does not list and a model without a default (refused before any
 * request, listing those it has), an unknown name (close ones), a pinned
 * digest that does not match (nothing registered) and one that does. */
static void test_mistakes(void **state)
{
    (void)state;
    new_home("mistakes");
    struct server sv;
    server_start(&sv, PATH_Q8, model_data, model_len);
    char base[128];
    server_base(&sv, "127.0.0.1", base, sizeof base);
    setenv("PLUMB_REGISTRY", base, 1);
    struct run r;
    PLUMB(&r, "pull", "tiny:q4_0");
    EXPECT_FAILURE(&r, "HTTP 404", "/" REPO "/resolve/main/tiny-Q4_0.gguf", "may lack tiny:Q4_0");
    run_free(&r);
    assert_int_equal(atomic_load(&sv.requests), 1);

    PLUMB(&r, "pull", "tiny:q5_k_m");
    EXPECT_FAILURE(&r, "no q5_k_m file", "it lists Q8_0, Q4_0");
    run_free(&r);
    PLUMB(&r, "pull", "tiny");
    EXPECT_FAILURE(&r, "no Q4_K_M file", "Q8_0, Q4_0");
    run_free(&r);
    PLUMB(&r, "pull", "tinny:q8_0");
    EXPECT_FAILURE(&r, "'tinny' is not a model of the catalog", "did you mean tiny");
    run_free(&r);
    PLUMB(&r, "pull", "big-model");
    EXPECT_FAILURE(&r, "no GGUF repository for big-model");
    run_free(&r);
    PLUMB(&r, "pull", "nothing-like-it");
    EXPECT_FAILURE(&r, "neither a file, a directory, a URL nor a catalog model");
    run_free(&r);
    assert_int_equal(atomic_load(&sv.requests), 1); /* none of those asked the mirror */

    PLUMB(&r, "pull", "tiny-wrong:q8_0");
    EXPECT_FAILURE(&r, "SHA-256 mismatch", "the catalog pins", "the store is unchanged");
    run_free(&r);
    expect_empty_store();
    PLUMB(&r, "pull", "tiny-pinned:q8_0");
    EXPECT_STATUS(r, 0);
    run_free(&r);
    expect_registered("tiny-pinned:q8_0");
    /* a pinned digest is what --if-absent looks for: no download */
    int before = atomic_load(&sv.requests);
    PLUMB(&r, "pull", "tiny-pinned:q8_0", "--name", "again", "--if-absent");
    EXPECT_STATUS(r, 0);
    run_free(&r);
    expect_registered("again:latest");
    assert_int_equal(atomic_load(&sv.requests), before);
    PLUMB(&r, "pull", "tiny:q8_0", "--if-absent");
    EXPECT_STATUS(r, 2);
    assert_non_null(strstr(r.err, "pins no digest"));
    run_free(&r);
    unsetenv("PLUMB_REGISTRY");
    server_stop(&sv);
}

/* plumb search: the JSON's shape, the fit verdicts, a word with no
 * match, the table. */
static void test_search(void **state)
{
    (void)state;
    new_home("search"); /* no machine profile: fits from free memory */
    struct run r;
    PLUMB(&r, "search", "TINY", "--json");
    EXPECT_STATUS(r, 0);
    json_t *v = test_parse_json(r.out), *m;
    assert_true(json_is_array(v));
    assert_int_equal(json_array_size(v), 3);
    size_t i;
    json_array_foreach(v, i, m) {
        assert_non_null(strstr(json_string_value(json_object_get(m, "id")), "tiny"));
        assert_string_equal(json_string_value(json_object_get(m, "fit_from")), "memory");
        assert_string_equal(json_string_value(json_object_get(json_object_get(m, "gguf"), "repo")), REPO);
        json_t *qs = json_object_get(m, "quants"), *q;
        assert_true(json_array_size(qs) >= 8);
        size_t k;
        bool q8 = false;
        json_array_foreach(qs, k, q) {
            const char *name = json_string_value(json_object_get(q, "quant"));
            assert_non_null(name);
            assert_true(json_integer_value(json_object_get(q, "size_bytes")) > 0);
            assert_true(json_real_value(json_object_get(q, "size_gib")) > 0);
            assert_true(json_is_boolean(json_object_get(q, "fits")));
            assert_true(json_is_true(json_object_get(q, "fits"))); /* a 0.0001 B model fits anywhere */
            assert_string_equal(json_string_value(json_object_get(q, "verdict")), "fits");
            if (!strcmp(name, "Q8_0")) {
                q8 = true;
                assert_string_equal(json_string_value(json_object_get(q, "file")), FILE_Q8);
            }
            if (!strcmp(name, "Q6_K"))
                assert_true(json_is_null(json_object_get(q, "file")));
        }
        assert_true(q8);
    }
    json_decref(v);
    run_free(&r);

    /* a model no machine holds, without a repository */
    PLUMB(&r, "search", "big", "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_int_equal(json_array_size(v), 1);
    m = json_array_get(v, 0);
    assert_true(json_is_null(json_object_get(m, "gguf")));
    json_t *q0 = json_array_get(json_object_get(m, "quants"), 0);
    assert_true(json_is_false(json_object_get(q0, "fits")));
    assert_string_equal(json_string_value(json_object_get(q0, "verdict")), "too big");
    json_decref(v);
    run_free(&r);

    /* no match: an empty array, and a sentence */
    PLUMB(&r, "search", "zzz-none", "--json");
    EXPECT_STATUS(r, 0);
    v = test_parse_json(r.out);
    assert_true(json_is_array(v) && json_array_size(v) == 0);
    json_decref(v);
    run_free(&r);
    PLUMB(&r, "search", "zzz-none");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "no catalog model matches 'zzz-none'"));
    run_free(&r);

    /* the table: the repository's files only, with sizes and verdicts */
    PLUMB(&r, "search", "tiny-pinned");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "GGUF: " REPO));
    assert_non_null(strstr(r.out, FILE_Q8));
    assert_non_null(strstr(r.out, "fits"));
    assert_non_null(strstr(r.out, "GiB"));
    assert_null(strstr(r.out, "Q6_K"));
    run_free(&r);
    PLUMB(&r, "search");
    EXPECT_STATUS(r, 2);
    run_free(&r);
    PLUMB(&r, "search", "--help");
    EXPECT_STATUS(r, 0);
    assert_non_null(strstr(r.out, "Examples:"));
    run_free(&r);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_registry PATH_TO_PLUMB\n");
        return 2;
    }
    plumb_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const char *path = test_tiny_model("Q8_0");
    model_data = test_read_file(path, &model_len);
    assert_non_null(model_data);
    sha256_hex(model_data, model_len, model_digest);
    write_catalog();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pull_by_name), cmocka_unit_test(test_redirect_token), cmocka_unit_test(test_auth),
        cmocka_unit_test(test_mistakes),     cmocka_unit_test(test_search),
    };
    int rc = cmocka_run_group_tests_name("registry", tests, NULL, NULL);
    free(model_data);
    return rc;
}
