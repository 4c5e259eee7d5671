/* plumb fleet against real plumb serve processes on loopback: the list
 * (add, rm, ls, its checks and its file), status of three sites with
 * admin keys beside one stopped, one that never answers and two with
 * wrong keys (each reported for what it is, the whole within about the
 * timeout, exit 1), and check telling two digests of one model apart and
 * the site that does not serve it.
 * argv[1] is the plumb binary. */
#define _GNU_SOURCE
#include "testutil.h"

#include "plumb/base.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *plumb_bin;

struct run {
    int status;
    char *out, *err;
};

/* plumb ARGS with PLUMB_HOME=home (the fleet's list); both outputs. */
static struct run plumb(const char *home, double *seconds, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static struct run plumb(const char *home, double *seconds, const char *fmt, ...)
{
    char args[2048], cmd[4096], out[600], err[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    test_tmpfile("run.out", out, sizeof out);
    test_tmpfile("run.err", err, sizeof err);
    snprintf(cmd, sizeof cmd, "PLUMB_HOME='%s' %s %s >%s 2>%s", home, plumb_bin, args, out, err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int st = system(cmd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (seconds)
        *seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    struct run r = {WIFEXITED(st) ? WEXITSTATUS(st) : -1, test_read_file(out, NULL), test_read_file(err, NULL)};
    assert_non_null(r.out);
    assert_non_null(r.err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

#define EXPECT_RUN(r, code)                                                                                            \
    do {                                                                                                               \
        if ((r).status != (code))                                                                                      \
            fail_msg("exit status %d, expected %d\nstdout: %s\nstderr: %s", (r).status, (code), (r).out, (r).err);   \
    } while (0)

/* ---- sites ---- */

struct site {
    pid_t pid;
    int port, out_fd;
};

/* plumb serve MODEL (with the store at home) on a free port; waits for its
 * "listening on" line. */
static struct site start_site(const char *home, const char *model, const char *extra)
{
    static int count;
    struct site s = {0};
    char cmd[4096], log[600];
    snprintf(log, sizeof log, "%s/site-%d.log", test_tmpdir(), ++count);
    snprintf(cmd, sizeof cmd, "PLUMB_HOME='%s' exec %s serve %s --port 0 -np 1 --ctx 128 %s 2>%s", home, plumb_bin,
             model, extra, log);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    test_track_process(pid);
    s.pid = pid;
    s.out_fd = fds[0];
    char line[256];
    size_t n = 0;
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    while (n < sizeof line - 1 && poll(&p, 1, 30000) > 0 && read(fds[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    const char *colon = strrchr(line, ':');
    if (!strstr(line, "listening on") || !colon)
        fail_msg("plumb serve did not start (see %s): '%s'", log, line);
    s.port = atoi(colon + 1);
    return s;
}

static void stop_site(struct site *s)
{
    test_untrack_process(s->pid);
    kill(s->pid, SIGTERM);
    int st;
    waitpid(s->pid, &st, 0);
    close(s->out_fd);
}

/* One completion on a site (a clerk's key): 200 or the test fails. */
static void complete_once(int port)
{
    const char *body = "{\"prompt\":\"hello\",\"max_tokens\":4,\"temperature\":0}";
    char req[1024], resp[8192];
    snprintf(req, sizeof req,
             "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-fleet-clerk-2\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    ssize_t k;
    while (n < sizeof resp - 1 && (k = read(fd, resp + n, sizeof resp - 1 - n)) > 0)
        n += (size_t)k;
    resp[n] = '\0';
    close(fd);
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0)
        fail_msg("the completion failed: %s", resp);
}

/* A loopback port that takes connections and never answers: listening,
 * never accepting (the kernel completes the handshakes). */
static int silent_listener(int *port)
{
    return test_listen_loopback(port);
}

/* A loopback port nothing listens on (bound, then closed). */
static int dead_port(void)
{
    int port, fd = silent_listener(&port);
    close(fd);
    return port;
}

static json_t *site_named(json_t *sites, const char *name)
{
    json_t *s;
    size_t i;
    json_array_foreach(sites, i, s)
        if (!strcmp(json_string_value(json_object_get(s, "name")), name))
            return s;
    fail_msg("no site '%s' in the answer", name);
    return NULL;
}

static bool has_name(json_t *names, const char *name)
{
    json_t *n;
    size_t i;
    json_array_foreach(names, i, n)
        if (!strcmp(json_string_value(n), name))
            return true;
    return false;
}

/* The digest ("sha256:HEX") of name in the store at home, from plumb ls. */
static char *digest_in(const char *home, const char *name)
{
    struct run r = plumb(home, NULL, "ls --json");
    EXPECT_RUN(r, 0);
    json_t *v = test_parse_json(r.out), *m;
    size_t i;
    char *d = NULL;
    json_array_foreach(json_object_get(v, "models"), i, m)
        if (!strcmp(json_string_value(json_object_get(m, "name")), name))
            d = strdup(json_string_value(json_object_get(m, "digest")));
    json_decref(v);
    run_free(&r);
    assert_non_null(d);
    return d;
}

/* ---- the list ---- */

static void test_list(void **state)
{
    (void)state;
    char home[600], keys[600], path[700];
    test_tmpfile("list-home", home, sizeof home);
    test_tmpfile("list-keys", keys, sizeof keys);
    const char *k = "# the technician's key for acme\ntech sk-acme-secret-1 admin\n";
    test_write_file(keys, k, strlen(k));

    struct run r = plumb(home, NULL, "fleet ls");
    EXPECT_RUN(r, 0);
    assert_non_null(strstr(r.err, "no sites"));
    run_free(&r);
    r = plumb(home, NULL, "fleet add acme https://llm.acme.example:8443/ --api-key-file %s", keys);
    EXPECT_RUN(r, 0);
    assert_non_null(strstr(r.out, "added acme https://llm.acme.example:8443"));
    run_free(&r);
    r = plumb(home, NULL, "fleet add lab http://127.0.0.1:9");
    EXPECT_RUN(r, 0);
    run_free(&r);

    /* refused: bad names and URLs (usage), a name taken, a key file that is missing or holds no key */
    static const struct {
        const char *args, *why;
        int status;
    } bad[] = {
        {"fleet add 'a b' http://x:1", "bad site name", 2},
        {"fleet add -x http://x:1", "unknown option", 2},
        {"fleet add ../up http://x:1", "bad site name", 2},
        {"fleet add ok ftp://x:1", "scheme not one of http,https", 2},
        {"fleet add ok http://user@x:1", "user information", 2},
        {"fleet add ok http://x:0", "port", 2},
        {"fleet add ok", "needs NAME URL", 2},
        {"fleet add acme http://x:1", "there is a site 'acme' already", 1},
        {"fleet add ok http://x:1 --api-key-file /nonexistent/keys", "/nonexistent/keys", 1},
        {"fleet add ok http://x:1 --api-key-file /dev/null", "not a regular file", 1},
        {"fleet rm nope", "there is no site 'nope'", 1},
        {"fleet frob", "unknown action 'frob'", 2},
        {"fleet ls --timeout 3", "--timeout belongs to", 2},
        {"fleet status --timeout 0", "--timeout", 2},
        {"fleet check 'bad name!'", "", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = plumb(home, NULL, "%s", bad[i].args);
        if (r.status != bad[i].status || !strstr(r.err, bad[i].why))
            fail_msg("'plumb %s': status %d (expected %d), stderr: %s", bad[i].args, r.status, bad[i].status, r.err);
        run_free(&r);
    }

    /* the file: 0600, the key file's path and never the key */
    snprintf(path, sizeof path, "%s/fleet.json", home);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *text = test_read_file(path, NULL);
    assert_null(strstr(text, "sk-acme-secret-1"));
    assert_non_null(strstr(text, keys));
    free(text);

    r = plumb(home, NULL, "fleet ls --json");
    EXPECT_RUN(r, 0);
    json_t *v = test_parse_json(r.out), *sites = json_object_get(v, "sites");
    assert_int_equal(json_array_size(sites), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(sites, 0), "url")),
                        "https://llm.acme.example:8443");
    assert_string_equal(json_string_value(json_object_get(json_array_get(sites, 0), "api_key_file")), keys);
    assert_true(json_is_null(json_object_get(json_array_get(sites, 1), "api_key_file")));
    json_decref(v);
    run_free(&r);
    r = plumb(home, NULL, "fleet rm acme");
    EXPECT_RUN(r, 0);
    run_free(&r);
    r = plumb(home, NULL, "fleet ls");
    EXPECT_RUN(r, 0);
    assert_null(strstr(r.out, "acme"));
    assert_non_null(strstr(r.out, "http://127.0.0.1:9"));
    run_free(&r);

    /* a damaged list is an error naming the file, and is left alone */
    test_write_file(path, "{\"sites\":[{\"name\":1}]}", 22);
    r = plumb(home, NULL, "fleet ls");
    EXPECT_RUN(r, 1);
    assert_non_null(strstr(r.err, "sites[0].name"));
    run_free(&r);
}

/* ---- status and check ---- */

static void test_status_and_check(void **state)
{
    (void)state;
    char home[600], store[3][600], keys[600], clerk[600], wrong[600];
    test_tmpfile("fleet-home", home, sizeof home);
    const char *names[3] = {"alpha", "beta", "gamma"};
    /* alpha and beta serve support-bot:2 as "assistant", each from its own
     * store and of another digest (Q8_0, Q4_0); gamma serves another model */
    const char *files[3] = {test_tiny_model("Q8_0"), test_tiny_model("Q4_0"), test_tiny_model("Q8_0")};
    const char *refs[3] = {"support-bot:2", "support-bot:2", "other:1"};
    test_tmpfile("fleet-keys", keys, sizeof keys);
    test_tmpfile("fleet-clerk", clerk, sizeof clerk);
    test_tmpfile("fleet-wrong", wrong, sizeof wrong);
    const char *k = "tech sk-fleet-tech-1 admin\nclerk sk-fleet-clerk-2\n";
    test_write_file(keys, k, strlen(k));
    chmod(keys, 0600);
    test_write_file(clerk, "clerk sk-fleet-clerk-2\n", 23);
    test_write_file(wrong, "sk-not-a-key\n", 13);
    struct site sites[3];
    char *digests[3];
    for (int i = 0; i < 3; i++) {
        char sub[64], extra[800];
        snprintf(sub, sizeof sub, "fleet-store-%d", i);
        test_tmpfile(sub, store[i], sizeof store[i]);
        struct run r = plumb(store[i], NULL, "pull '%s' --name %s", files[i], refs[i]);
        EXPECT_RUN(r, 0);
        run_free(&r);
        digests[i] = digest_in(store[i], refs[i]);
        snprintf(extra, sizeof extra, "--api-key-file %s%s", keys, i < 2 ? " --alias assistant" : "");
        sites[i] = start_site(store[i], refs[i], extra);
        r = plumb(home, NULL, "fleet add %s http://127.0.0.1:%d --api-key-file %s", names[i], sites[i].port, keys);
        EXPECT_RUN(r, 0);
        run_free(&r);
    }
    assert_string_not_equal(digests[0], digests[1]);

    /* a request on alpha, for its usage today and its tokens/s */
    complete_once(sites[0].port);

    /* beside them: a stopped site, one that never answers, a key without the admin flag, a wrong key */
    int slow_port, slow_fd = silent_listener(&slow_port);
    struct run r = plumb(home, NULL, "fleet add stopped http://127.0.0.1:%d", dead_port());
    EXPECT_RUN(r, 0);
    run_free(&r);
    r = plumb(home, NULL, "fleet add slow http://127.0.0.1:%d", slow_port);
    EXPECT_RUN(r, 0);
    run_free(&r);
    r = plumb(home, NULL, "fleet add clerk http://127.0.0.1:%d --api-key-file %s", sites[0].port, clerk);
    EXPECT_RUN(r, 0);
    run_free(&r);
    r = plumb(home, NULL, "fleet add wrong http://127.0.0.1:%d --api-key-file %s", sites[1].port, wrong);
    EXPECT_RUN(r, 0);
    run_free(&r);

    /* all at once: the silent site costs the timeout, not more */
    double took;
    r = plumb(home, &took, "fleet status --json --timeout 2");
    EXPECT_RUN(r, 1);
    if (took > 4.5)
        fail_msg("fleet status took %.2f s with a 2 s timeout", took);
    json_t *v = test_parse_json(r.out), *e = test_parse_json(r.err); /* and one JSON error line */
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "code")), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(e, "error"), "message")),
                           "4 sites did not answer"));
    json_decref(e);
    run_free(&r);
    assert_int_equal(json_array_size(v), 7);
    for (int i = 0; i < 3; i++) {
        json_t *s = site_named(v, names[i]);
        if (!json_is_true(json_object_get(s, "reachable")))
            fail_msg("%s: %s", names[i], json_string_value(json_object_get(s, "error")));
        assert_true(json_is_null(json_object_get(s, "error")));
        assert_string_equal(json_string_value(json_object_get(s, "version")), PLUMB_VERSION);
        json_t *models = json_object_get(s, "models"), *m = json_array_get(models, 0);
        assert_int_equal(json_array_size(models), 1);
        assert_string_equal(json_string_value(json_object_get(m, "id")), i < 2 ? "assistant" : "other:1");
        assert_string_equal(json_string_value(json_object_get(m, "source")), refs[i]);
        assert_string_equal(json_string_value(json_object_get(m, "digest")), digests[i]);
        json_t *load = json_object_get(s, "load");
        assert_int_equal(json_integer_value(json_object_get(load, "slots")), 1);
        assert_int_equal(json_integer_value(json_object_get(load, "running")), 0);
        assert_int_equal(json_integer_value(json_object_get(load, "waiting")), 0);
        const double tps = json_real_value(json_object_get(load, "tokens_per_s_1m"));
        assert_true(i == 0 ? tps > 0 : tps == 0);
        assert_true(json_real_value(json_object_get(load, "tokens_per_s_5m")) <= tps + 1e-9);
        json_t *today = json_object_get(s, "usage_today");
        assert_int_equal(json_integer_value(json_object_get(today, "requests")), i == 0 ? 1 : 0);
        assert_int_equal(json_integer_value(json_object_get(today, "total_tokens")) > 0, i == 0);
        json_t *doc = json_object_get(s, "doctor");
        const char *verdict = json_string_value(json_object_get(doc, "status"));
        assert_non_null(verdict);
        assert_true(!strcmp(verdict, "ok") || !strcmp(verdict, "warnings") || !strcmp(verdict, "errors"));
        assert_true(json_is_integer(json_object_get(doc, "warnings")));
        if (json_array_size(json_object_get(s, "problems")))
            fail_msg("%s: %s", names[i], json_dumps(json_object_get(s, "problems"), 0));
    }
    static const struct {
        const char *site, *why;
    } down[] = {
        {"stopped", "onnect"}, /* libcurl: "Failed to connect to 127.0.0.1 port N ...: Connection refused" */
        {"slow", "no answer within 2 s"},
        {"clerk", "HTTP 403"},
        {"wrong", "HTTP 401"},
    };
    for (size_t i = 0; i < sizeof down / sizeof down[0]; i++) {
        json_t *s = site_named(v, down[i].site);
        const char *why = json_string_value(json_object_get(s, "error"));
        assert_true(json_is_false(json_object_get(s, "reachable")));
        if (!why || !strstr(why, down[i].why))
            fail_msg("%s: error '%s', expected '%s'", down[i].site, why ? why : "(none)", down[i].why);
        assert_int_equal(json_array_size(json_object_get(s, "models")), 0);
        assert_true(json_is_null(json_object_get(s, "version")));
    }
    assert_non_null(strstr(json_string_value(json_object_get(site_named(v, "clerk"), "error")), "admin flag"));
    json_decref(v);

    /* the table says the same */
    r = plumb(home, NULL, "fleet status --timeout 1");
    EXPECT_RUN(r, 1);
    assert_non_null(strstr(r.out, "SITE"));
    assert_non_null(strstr(r.out, "unreachable"));
    char want[64];
    snprintf(want, sizeof want, "%.19s", digests[1]);
    assert_non_null(strstr(r.out, want));
    assert_non_null(strstr(r.err, "4 sites did not answer"));
    run_free(&r);

    /* check: two digests of support-bot, gamma without it, the others silent */
    r = plumb(home, NULL, "fleet check support-bot:2 --json --timeout 1");
    EXPECT_RUN(r, 1);
    v = test_parse_json(r.out);
    run_free(&r);
    json_t *groups = json_object_get(v, "digests");
    assert_int_equal(json_array_size(groups), 2);
    for (int i = 0; i < 2; i++) {
        json_t *g = json_array_get(groups, (size_t)i);
        assert_string_equal(json_string_value(json_object_get(g, "digest")), digests[i]);
        assert_int_equal(json_array_size(json_object_get(g, "sites")), 1);
        assert_true(has_name(json_object_get(g, "sites"), names[i]));
    }
    assert_int_equal(json_array_size(json_object_get(v, "not_served")), 1);
    assert_true(has_name(json_object_get(v, "not_served"), "gamma"));
    assert_int_equal(json_array_size(json_object_get(v, "unreachable")), 4);
    json_decref(v);

    /* without the silent ones every site answers: exit 0; a tag no site runs; by the model's id */
    static const char *const gone[] = {"stopped", "slow", "clerk", "wrong"};
    for (size_t i = 0; i < 4; i++) {
        r = plumb(home, NULL, "fleet rm %s", gone[i]);
        EXPECT_RUN(r, 0);
        run_free(&r);
    }
    r = plumb(home, NULL, "fleet check support-bot");
    EXPECT_RUN(r, 0);
    assert_non_null(strstr(r.out, "(not served)"));
    assert_non_null(strstr(r.out, "not served on gamma"));
    snprintf(want, sizeof want, "%.19s on alpha", digests[0]);
    assert_non_null(strstr(r.out, want));
    run_free(&r);
    r = plumb(home, NULL, "fleet check support-bot:3 --json");
    EXPECT_RUN(r, 0);
    v = test_parse_json(r.out);
    assert_int_equal(json_array_size(json_object_get(v, "digests")), 0);
    assert_int_equal(json_array_size(json_object_get(v, "not_served")), 3);
    json_decref(v);
    run_free(&r);
    r = plumb(home, NULL, "fleet check other --json");
    EXPECT_RUN(r, 0);
    v = test_parse_json(r.out);
    assert_true(has_name(json_object_get(json_array_get(json_object_get(v, "digests"), 0), "sites"), "gamma"));
    json_decref(v);
    run_free(&r);
    r = plumb(home, NULL, "fleet status");
    EXPECT_RUN(r, 0);
    run_free(&r);

    close(slow_fd);
    for (int i = 0; i < 3; i++) {
        stop_site(&sites[i]);
        free(digests[i]);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_fleet PATH_TO_PLUMB\n");
        return 2;
    }
    plumb_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_status_and_check),
    };
    return cmocka_run_group_tests_name("fleet", tests, NULL, NULL);
}
