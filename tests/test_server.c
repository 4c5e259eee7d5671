/* plumb serve as a real process on loopback: the API's answers and
 * errors, 16 streamed requests at once, the same answer alone and among
 * others, disconnects, limits, hostile clients, the SIGTERM drain, and a
 * model given by its store name.
 * argv[1] is the plumb binary. */
#define _GNU_SOURCE
#include "testutil.h"

#include "plumb/engine.h"
#include "plumb/tokenizer.h"
#include "server/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *plumb_bin;

/* ---- a server process ---- */

struct server {
    pid_t pid;
    int port;
    int out_fd;
    char log[512]; /* its stderr */
};

/* Starts plumb serve on a free port with extra arguments; waits for its
 * "listening on" line. */
static struct server start_server(const char *model, const char *extra)
{
    static int count;
    struct server s = {0};
    snprintf(s.log, sizeof s.log, "%s/server-%d.log", test_tmpdir(), ++count);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s serve %s --port 0 %s 2>%s", plumb_bin, model, extra, s.log);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    test_track_process(pid);
    s.pid = pid;
    s.out_fd = pipefd[0];
    char line[256];
    size_t n = 0;
    struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
    while (n < sizeof line - 1 && poll(&pfd, 1, 30000) > 0) {
        ssize_t k = read(pipefd[0], line + n, 1);
        if (k <= 0)
            break;
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    const char *colon = strrchr(line, ':');
    if (!strstr(line, "listening on") || !colon)
        fail_msg("plumb serve did not start (see %s): '%s'", s.log, line);
    s.port = atoi(colon + 1);
    return s;
}

static int stop_server(struct server *s, int sig)
{
    test_untrack_process(s->pid);
    kill(s->pid, sig);
    int status = 0;
    for (int i = 0; i < 600; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            close(s->out_fd);
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    close(s->out_fd);
    fail_msg("plumb serve did not exit within 30 s of signal %d", sig);
    return -1;
}

/* ---- a minimal HTTP/1.1 client ---- */

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return;
        p += k;
        n -= (size_t)k;
    }
}

struct response {
    int status;
    char headers[4096];
    char *body;
    size_t body_len;
};

static void response_free(struct response *r)
{
    free(r->body);
    r->body = NULL;
}

/* Reads a whole response (Content-Length, chunked, or until close). */
static struct response read_response(int fd)
{
    struct response r = {0};
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    char *hdr_end = NULL;
    for (;;) {
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = '\0';
        if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
            size_t hl = (size_t)(hdr_end - buf);
            snprintf(r.headers, sizeof r.headers, "%.*s", (int)hl, buf);
            sscanf(buf, "HTTP/1.%*d %d", &r.status);
        }
        if (hdr_end) {
            const char *body = hdr_end + 4;
            size_t have = len - (size_t)(body - buf);
            const char *cl = strcasestr(r.headers, "\r\nContent-Length:");
            if (cl && have >= strtoull(cl + 17, NULL, 10))
                break;
            if (strcasestr(r.headers, "chunked") && have >= 5 && !memcmp(buf + len - 5, "0\r\n\r\n", 5))
                break;
        }
    }
    if (hdr_end) {
        const char *body = hdr_end + 4;
        size_t have = len - (size_t)(body - buf);
        r.body = malloc(have + 1);
        if (strcasestr(r.headers, "chunked")) { /* de-chunk */
            size_t o = 0;
            const char *p = body, *end = body + have;
            while (p < end) {
                char *e;
                unsigned long n = strtoul(p, &e, 16);
                const char *data = strstr(e, "\r\n");
                if (!data || n == 0)
                    break;
                data += 2;
                if (data + n > end)
                    n = (unsigned long)(end - data);
                memcpy(r.body + o, data, n);
                o += n;
                p = data + n + 2;
            }
            r.body_len = o;
        } else {
            memcpy(r.body, body, have);
            r.body_len = have;
        }
        r.body[r.body_len] = '\0';
    }
    free(buf);
    return r;
}

static struct response request(int port, const char *method, const char *path, const char *extra_headers,
                               const char *body)
{
    int fd = connect_to(port);
    char head[8192];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s", method, path,
                     extra_headers ? extra_headers : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                      strlen(body));
    snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    send_all(fd, head, strlen(head));
    if (body)
        send_all(fd, body, strlen(body));
    struct response r = read_response(fd);
    close(fd);
    return r;
}

static json_t *body_json(const struct response *r)
{
    json_error_t e;
    json_t *v = json_loadb(r->body ? r->body : "", r->body_len, JSON_ALLOW_NUL, &e);
    if (!v)
        fail_msg("not JSON (%s): %.300s", e.text, r->body ? r->body : "");
    return v;
}

/* The error object's type and code, checked against an OpenAI shape. */
static void expect_error(int port, const char *method, const char *path, const char *headers, const char *body,
                         int status, const char *code)
{
    struct response r = request(port, method, path, headers, body);
    if (r.status != status)
        fail_msg("%s %s: status %d, expected %d: %.300s", method, path, r.status, status, r.body ? r.body : "");
    json_t *v = body_json(&r);
    json_t *err = json_object_get(v, "error");
    assert_true(json_is_object(err));
    assert_true(json_is_string(json_object_get(err, "message")));
    assert_true(json_is_string(json_object_get(err, "type")));
    if (code) {
        const char *got = json_string_value(json_object_get(err, "code"));
        if (!got || strcmp(got, code) != 0)
            fail_msg("%s %s: code '%s', expected '%s'", method, path, got ? got : "(none)", code);
    }
    json_decref(v);
    response_free(&r);
}

/* The text of a chat completion (or of a completion). */
static char *answer_text(const struct response *r, const char **finish)
{
    json_t *v = body_json(r);
    json_t *c = json_array_get(json_object_get(v, "choices"), 0);
    json_t *msg = json_object_get(c, "message");
    const char *t = json_string_value(msg ? json_object_get(msg, "content") : json_object_get(c, "text"));
    assert_non_null(t);
    char *out = strdup(t);
    static char fin[32];
    snprintf(fin, sizeof fin, "%s", json_string_value(json_object_get(c, "finish_reason")));
    if (finish)
        *finish = fin;
    json_decref(v);
    return out;
}

/* The text of a streamed answer, checking the SSE framing. */
static char *stream_text(const struct response *r, bool chat, int *n_events, json_t **usage)
{
    assert_int_equal(r->status, 200);
    assert_non_null(strcasestr(r->headers, "text/event-stream"));
    size_t cap = r->body_len + 1, o = 0;
    char *text = calloc(1, cap);
    *n_events = 0;
    if (usage)
        *usage = NULL;
    bool done = false, finished = false;
    for (const char *p = r->body; p && *p;) {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_true(!strncmp(p, "data: ", 6));
        assert_false(done); /* nothing after [DONE] */
        if (!strncmp(p + 6, "[DONE]", 6)) {
            done = true;
        } else {
            json_error_t e;
            json_t *ev = json_loadb(p + 6, (size_t)(end - p - 6), JSON_ALLOW_NUL, &e);
            if (!ev)
                fail_msg("bad event: %.*s", (int)(end - p), p);
            (*n_events)++;
            assert_string_equal(json_string_value(json_object_get(ev, "object")),
                                chat ? "chat.completion.chunk" : "text_completion");
            json_t *c = json_array_get(json_object_get(ev, "choices"), 0);
            if (c) {
                json_t *d = chat ? json_object_get(json_object_get(c, "delta"), "content") : json_object_get(c, "text");
                if (json_is_string(d)) {
                    memcpy(text + o, json_string_value(d), json_string_length(d));
                    o += json_string_length(d);
                }
                if (json_is_string(json_object_get(c, "finish_reason")))
                    finished = true;
            } else if (usage) {
                *usage = json_incref(json_object_get(ev, "usage"));
            }
            json_decref(ev);
        }
        p = end + 2;
    }
    assert_true(done);
    assert_true(finished);
    text[o] = '\0';
    return text;
}

static const char *model_path(void)
{
    return test_tiny_model("Q8_0");
}

static char *chat_body(const char *content, int max_tokens, bool stream, const char *more)
{
    char *b = malloc(4096);
    snprintf(b, 4096,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\",\"content\":\"%s\"}],"
             "\"max_tokens\":%d%s%s}",
             content, max_tokens, stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}" : "",
             more ? more : ",\"temperature\":0");
    return b;
}

/* GET /v1/models lists one model, id. */
static void expect_model_id(int port, const char *id)
{
    struct response r = request(port, "GET", "/v1/models", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    json_t *data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(data, 0), "id")), id);
    json_decref(v);
    response_free(&r);
}

/* ---- tests ---- */

static void test_api_shapes(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 2 --ctx 256 --alias tiny");
    struct response r = request(s.port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    response_free(&r);
    r = request(s.port, "GET", "/ready", NULL, NULL);
    assert_int_equal(r.status, 200);
    response_free(&r);
    expect_model_id(s.port, "tiny");
    r = request(s.port, "GET", "/v1/models/tiny", NULL, NULL);
    assert_int_equal(r.status, 200);
    response_free(&r);

    /* a chat completion, whole */
    char *b = chat_body("Hello", 12, false, NULL);
    r = request(s.port, "POST", "/v1/chat/completions", NULL, b);
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(v, "model")), "tiny");
    json_t *usage = json_object_get(v, "usage");
    const json_int_t pt = json_integer_value(json_object_get(usage, "prompt_tokens")),
                     ct = json_integer_value(json_object_get(usage, "completion_tokens"));
    assert_true(pt > 5 && ct >= 1 && ct <= 12);
    assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")), pt + ct);
    json_t *choice = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(choice, "message"), "role")), "assistant");
    const char *fr = json_string_value(json_object_get(choice, "finish_reason"));
    assert_true(!strcmp(fr, ct == 12 ? "length" : "stop"));
    char *whole = answer_text(&r, NULL);
    json_decref(v);
    response_free(&r);

    /* the same, streamed: the same text, usage at the end */
    char *bs = chat_body("Hello", 12, true, NULL);
    r = request(s.port, "POST", "/v1/chat/completions", NULL, bs);
    int n_events;
    json_t *su;
    char *streamed = stream_text(&r, true, &n_events, &su);
    assert_string_equal(streamed, whole);
    assert_non_null(su);
    assert_int_equal(json_integer_value(json_object_get(su, "completion_tokens")), ct);
    json_decref(su);
    response_free(&r);
    free(streamed);
    free(bs);

    /* the second request's prompt prefix came from the cache (and the
     * request is counted before its [DONE] goes out: no waiting here) */
    r = request(s.port, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    const char *names[] = {"plumb_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2",
                           "plumb_generated_tokens_total", "plumb_queue_depth 0", "plumb_slots_active 0",
                           "plumb_time_to_first_token_seconds_bucket", "plumb_inter_token_latency_seconds_count",
                           "plumb_kv_cache_usage_ratio", "plumb_prompt_tokens_reused_total"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strstr(r.body, names[i]))
            fail_msg("/metrics lacks '%s':\n%s", names[i], r.body);
    const char *reused = strstr(r.body, "\nplumb_prompt_tokens_reused_total ");
    assert_non_null(reused);
    assert_true(atoll(reused + 34) >= pt - 1);
    /* the passes' time part by part: each part counted, Q/K/V and attention
     * really, together within the passes' time */
    const char *fwd = strstr(r.body, "\nplumb_forward_seconds_total ");
    assert_non_null(fwd);
    double parts = 0;
    const char *part_names[] = {"qkv", "attention", "ffn_gate_up", "ffn_down", "norms", "output", "quantize"};
    for (size_t i = 0; i < sizeof part_names / sizeof part_names[0]; i++) {
        char key[128];
        snprintf(key, sizeof key, "plumb_forward_part_seconds_total{part=\"%s\",kind=", part_names[i]);
        const char *at = strstr(r.body, key);
        if (!at)
            fail_msg("/metrics lacks '%s':\n%s", key, r.body);
        const double secs = atof(strchr(at, '}') + 2);
        assert_true(secs > 0);
        parts += secs;
    }
    assert_true(parts <= atof(fwd + 30) + 1e-6);
    response_free(&r);

    /* a completion, with a stop string that cuts the text */
    r = request(s.port, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once upon\",\"max_tokens\":16,\"temperature\":0}");
    assert_int_equal(r.status, 200);
    const char *finish;
    char *full = answer_text(&r, &finish);
    response_free(&r);
    if (strlen(full) > 4) {
        char stop[8], body[512];
        snprintf(stop, sizeof stop, "%.2s", full + strlen(full) / 2);
        json_t *js = json_string(stop);
        char *jstop = json_dumps(js, JSON_ENCODE_ANY);
        snprintf(body, sizeof body, "{\"prompt\":\"Once upon\",\"max_tokens\":16,\"temperature\":0,\"stop\":[%s]}", jstop);
        r = request(s.port, "POST", "/v1/completions", NULL, body);
        char *cut = answer_text(&r, &finish);
        assert_string_equal(finish, "stop");
        assert_true(strncmp(full, cut, strlen(cut)) == 0 && strstr(cut, stop) == NULL);
        assert_true(strstr(full + strlen(cut), stop) == full + strlen(cut));
        free(cut);
        free(jstop);
        json_decref(js);
        response_free(&r);
    }
    free(full);

    /* JSON mode gives a JSON object (or its beginning, cut by max_tokens) */
    r = request(s.port, "POST", "/v1/chat/completions", NULL,
                "{\"messages\":[{\"role\":\"user\",\"content\":\"json please\"}],\"max_tokens\":300,"
                "\"response_format\":{\"type\":\"json_object\"},\"seed\":3}");
    assert_int_equal(r.status, 200);
    char *js = answer_text(&r, &finish);
    size_t w = strspn(js, " \t\r\n");
    assert_true(js[w] == '{');
    if (!strcmp(finish, "stop")) {
        json_error_t e;
        json_t *obj = json_loads(js, 0, &e);
        if (!json_is_object(obj))
            fail_msg("JSON mode answered '%s'", js);
        json_decref(obj);
    }
    free(js);
    response_free(&r);
    free(whole);
    free(b);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

static void test_errors(void **state)
{
    (void)state;
    char keyfile[512];
    test_tmpfile("keys.txt", keyfile, sizeof keyfile);
    const char *keys = "# keys\nalice sk-test-alice-0001\nsk-test-anon-0002\n";
    test_write_file(keyfile, keys, strlen(keys));
    char extra[1024];
    snprintf(extra, sizeof extra, "-np 1 --max-queue 0 --ctx 128 --max-body 4096 --api-key-file %s", keyfile);
    struct server s = start_server(model_path(), extra);
    const char *auth = "Authorization: Bearer sk-test-alice-0001\r\n";
    const char *ok = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}";
    /* keys: none, wrong, right (either key); /health stays open */
    expect_error(s.port, "POST", "/v1/chat/completions", NULL, ok, 401, "invalid_api_key");
    expect_error(s.port, "POST", "/v1/chat/completions", "Authorization: Bearer sk-test-alice-0002\r\n", ok, 401,
                 "invalid_api_key");
    expect_error(s.port, "GET", "/v1/models", "Authorization: Basic Zm9vOmJhcg==\r\n", NULL, 401, "invalid_api_key");
    struct response r = request(s.port, "POST", "/v1/chat/completions", "Authorization: Bearer sk-test-anon-0002\r\n", ok);
    assert_int_equal(r.status, 200);
    response_free(&r);
    r = request(s.port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    response_free(&r);
    /* 400: bad JSON and bad parameters */
    expect_error(s.port, "POST", "/v1/chat/completions", auth, "{\"messages\": [", 400, NULL);
    expect_error(s.port, "POST", "/v1/chat/completions", auth, "[1,2]", 400, NULL);
    expect_error(s.port, "POST", "/v1/chat/completions", auth, "{}", 400, NULL);
    expect_error(s.port, "POST", "/v1/chat/completions", auth, "{\"messages\":[]}", 400, NULL);
    expect_error(s.port, "POST", "/v1/chat/completions", auth, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
                 400, NULL);
    const char *bad_params[] = {"\"temperature\":5", "\"temperature\":\"hot\"", "\"top_p\":2", "\"max_tokens\":0",
                                "\"max_tokens\":1.5", "\"n\":17", "\"n\":0", "\"stop\":[1]", "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]",
                                "\"presence_penalty\":3", "\"seed\":\"x\"", "\"stream\":\"yes\"",
                                "\"response_format\":{\"type\":\"xml\"}", "\"stream_options\":3"};
    for (size_t i = 0; i < sizeof bad_params / sizeof bad_params[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s}", bad_params[i]);
        expect_error(s.port, "POST", "/v1/chat/completions", auth, body, 400, NULL);
    }
    expect_error(s.port, "POST", "/v1/completions", auth, "{\"prompt\":42}", 400, NULL);
    expect_error(s.port, "POST", "/v1/completions", auth, "{\"prompt\":[1,2,999999]}", 400, NULL);
    /* a prompt beyond the context */
    char *big = malloc(8192);
    strcpy(big, "{\"prompt\":\"");
    for (int i = 0; i < 300; i++)
        strcat(big, "ab ");
    strcat(big, "\"}");
    expect_error(s.port, "POST", "/v1/completions", auth, big, 400, "context_length_exceeded");
    /* 413: a body over --max-body */
    char *huge = malloc(10000);
    memset(huge, ' ', 9999);
    huge[0] = '{';
    huge[9998] = '}';
    huge[9999] = '\0';
    expect_error(s.port, "POST", "/v1/chat/completions", auth, huge, 413, NULL);
    /* 404: unknown model, route; 405: wrong method */
    expect_error(s.port, "POST", "/v1/chat/completions", auth,
                 "{\"model\":\"gpt-9\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404, "model_not_found");
    expect_error(s.port, "GET", "/v1/models/gpt-9", auth, NULL, 404, "model_not_found");
    expect_error(s.port, "GET", "/v1/nothing", auth, NULL, 404, NULL);
    expect_error(s.port, "GET", "/nothing", NULL, NULL, 404, NULL);
    expect_error(s.port, "GET", "/v1/chat/completions", auth, NULL, 405, NULL);

    r = request(s.port, "GET", "/metrics", NULL, NULL);
    assert_non_null(strstr(r.body, "endpoint=\"/v1/chat/completions\",status=\"401\"} 2"));
    assert_non_null(strstr(r.body, "endpoint=\"/v1/models\",status=\"401\"} 1"));
    response_free(&r);
    free(big);
    free(huge);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    /* keys never reach the log */
    size_t ll;
    char *text = test_read_file(s.log, &ll);
    assert_non_null(text);
    assert_null(strstr(text, "sk-test-alice-0001"));
    assert_null(strstr(text, "sk-test-anon-0002"));
    free(text);
}

/* 503 with Retry-After when the one slot is busy and nothing may wait;
 * the client going away frees the slot. */
static void test_busy(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 1 --max-queue 0 --ctx 65536");
    const char *auth = "";
    const char *ok = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}";
    struct response r;
    /* 503 with Retry-After: the one slot busy, no queue */
    int fd = connect_to(s.port);
    const char *longreq = "{\"prompt\":\"a\",\"max_tokens\":65000,\"stream\":true,\"ignore_eos\":true}";
    char head[1024];
    snprintf(head, sizeof head,
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             auth, strlen(longreq), longreq);
    send_all(fd, head, strlen(head));
    /* it is generating once text comes (the headers come before the
     * request has even left the queue) */
    char first[4096] = "";
    size_t got = 0;
    while (got < sizeof first - 1 && !strstr(first, "\"text\"")) {
        ssize_t k = recv(fd, first + got, sizeof first - 1 - got, 0);
        assert_true(k > 0);
        got += (size_t)k;
        first[got] = '\0';
    }
    r = request(s.port, "POST", "/v1/chat/completions", auth, ok);
    assert_int_equal(r.status, 503);
    assert_non_null(strcasestr(r.headers, "\r\nRetry-After: "));
    response_free(&r);
    /* the client going away frees the slot within moments (its answer of
     * 65000 tokens would take far longer) */
    close(fd);
    bool freed = false;
    for (int i = 0; i < 40 && !freed; i++) {
        r = request(s.port, "GET", "/metrics", NULL, NULL);
        freed = strstr(r.body, "\nplumb_slots_active 0\n") != NULL;
        response_free(&r);
        if (!freed)
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    assert_true(freed);
    r = request(s.port, "POST", "/v1/chat/completions", auth, ok);
    if (r.status != 200) {
        struct response m = request(s.port, "GET", "/metrics", NULL, NULL);
        fail_msg("after the slot was freed: %d %s\n%s", r.status, r.body ? r.body : "", m.body);
    }
    response_free(&r);
    r = request(s.port, "GET", "/metrics", NULL, NULL);
    assert_non_null(strstr(r.body, "status=\"503\"} 1"));
    assert_non_null(strstr(r.body, "plumb_requests_rejected_busy_total 1"));
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

struct client {
    int port;
    const char *body;
    bool stream;
    char *text;
};

static void *client_thread(void *arg)
{
    struct client *c = arg;
    struct response r = request(c->port, "POST", "/v1/chat/completions", NULL, c->body);
    if (c->stream) {
        int n;
        c->text = stream_text(&r, true, &n, NULL);
    } else {
        assert_int_equal(r.status, 200);
        c->text = answer_text(&r, NULL);
    }
    response_free(&r);
    return NULL;
}

/* 16 streamed requests at once all complete, each with the text it gets
 * alone (temperature 0, and a fixed seed). */
static void test_concurrent_streams(void **state)
{
    (void)state;
    enum { N = 16 };
    struct server s = start_server(model_path(), "-np 16 --ctx 256");
    char *bodies[N], *alone[N];
    for (int k = 0; k < N; k++) {
        char content[64];
        snprintf(content, sizeof content, "question number %d, about %s", k, k % 2 ? "cats" : "dogs");
        bodies[k] = chat_body(content, 24, true, k % 3 == 0 ? ",\"temperature\":0.9,\"seed\":77" : NULL);
        struct client c = {s.port, bodies[k], true, NULL};
        client_thread(&c);
        alone[k] = c.text;
    }
    struct client cs[N];
    pthread_t th[N];
    for (int k = 0; k < N; k++) {
        cs[k] = (struct client){s.port, bodies[k], true, NULL};
        pthread_create(&th[k], NULL, client_thread, &cs[k]);
    }
    for (int k = 0; k < N; k++) {
        pthread_join(th[k], NULL);
        if (strcmp(cs[k].text, alone[k]) != 0)
            fail_msg("request %d: '%s' among 15 others, '%s' alone", k, cs[k].text, alone[k]);
        free(cs[k].text);
        free(alone[k]);
        free(bodies[k]);
    }
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* Garbage, slow and half-closed clients, oversized headers: the server
 * answers (or drops) them and keeps serving. */
static void test_hostile_clients(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 2 --ctx 128 --timeout 5");
    /* garbage bytes */
    int fd = connect_to(s.port);
    const char junk[] = "\x01\x02\xff\xfe GARBAGE\r\n\r\n\x00\x00 more junk\r\n\r\n";
    send_all(fd, junk, sizeof junk);
    struct response r = read_response(fd);
    assert_true(r.status == 400 || r.status == 0);
    response_free(&r);
    close(fd);
    /* a request line far too long, and too many header bytes */
    fd = connect_to(s.port);
    char *longline = malloc(200000);
    memcpy(longline, "GET /", 5);
    memset(longline + 5, 'a', 199990);
    memcpy(longline + 199995, "\r\n\r\n", 5);
    send_all(fd, longline, 199999);
    r = read_response(fd);
    assert_true(r.status == 414 || r.status == 431 || r.status == 400 || r.status == 413 || r.status == 0);
    response_free(&r);
    close(fd);
    free(longline);
    /* a slow client: a request a few bytes at a time */
    fd = connect_to(s.port);
    const char *slow = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (size_t i = 0; i < strlen(slow); i++) {
        send_all(fd, slow + i, 1);
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    r = read_response(fd);
    assert_int_equal(r.status, 200);
    response_free(&r);
    close(fd);
    /* a client that sends half a request and goes quiet is timed out */
    fd = connect_to(s.port);
    send_all(fd, "POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{", 56);
    /* a half-closed connection after a whole request still gets an answer or a close */
    int fd2 = connect_to(s.port);
    const char *req = "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd2, req, strlen(req));
    shutdown(fd2, SHUT_WR);
    r = read_response(fd2);
    assert_true(r.status == 200 || r.status == 0);
    response_free(&r);
    close(fd2);
    /* through all of that the server serves */
    r = request(s.port, "POST", "/v1/completions", NULL, "{\"prompt\":\"hello\",\"max_tokens\":3}");
    assert_int_equal(r.status, 200);
    response_free(&r);
    close(fd);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* --timeout bounds a request's run: a long answer ends as "length". */
static void test_request_timeout(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 1 --ctx 16384 --timeout 1");
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct response r = request(s.port, "POST", "/v1/completions", NULL,
                                "{\"prompt\":\"go\",\"max_tokens\":16000,\"ignore_eos\":true}");
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double dt = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    const json_int_t n = json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(v, "choices"), 0),
                                                          "finish_reason")), "length");
    print_message("  stopped after %.2f s with %lld tokens\n", dt, (long long)n);
    assert_true(n > 0 && n < 16000);
    assert_true(dt >= 0.9 && dt < 10);
    json_decref(v);
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* MODEL may be a store name: the name, as given, is the model's id */
static int run_plumb(const char *args, char **out);

static void test_store_name(void **state)
{
    (void)state;
    char home[600], cmd[2048];
    test_tmpfile("store-home", home, sizeof home);
    setenv("PLUMB_HOME", home, 1);
    snprintf(cmd, sizeof cmd, "%s pull '%s' --name tiny:q8 --copy >/dev/null", plumb_bin, model_path());
    assert_int_equal(system(cmd), 0);
    struct server s = start_server("tiny:q8", "-np 1 --ctx 128");
    expect_model_id(s.port, "tiny:q8");
    /* the status names the store name and the digest plumb ls shows */
    char *ls;
    assert_int_equal(run_plumb("ls --json", &ls), 0);
    json_t *lv = test_parse_json(ls);
    free(ls);
    struct response sr = request(s.port, "GET", "/v1/plumb/status", NULL, NULL);
    assert_int_equal(sr.status, 200);
    json_t *sv = body_json(&sr), *m0 = json_array_get(json_object_get(sv, "models"), 0);
    response_free(&sr);
    assert_string_equal(json_string_value(json_object_get(m0, "source")), "tiny:q8");
    assert_string_equal(json_string_value(json_object_get(m0, "digest")),
                        json_string_value(json_object_get(json_array_get(json_object_get(lv, "models"), 0), "digest")));
    assert_int_equal(strlen(json_string_value(json_object_get(m0, "digest"))), 7 + 64);
    json_decref(sv);
    json_decref(lv);
    char *b = chat_body("Hello", 4, false, NULL);
    struct response r = request(s.port, "POST", "/v1/chat/completions", NULL, b);
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(v, "model")), "tiny:q8");
    json_decref(v);
    response_free(&r);
    free(b);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    /* an unknown name is an error before anything listens */
    snprintf(cmd, sizeof cmd, "%s serve nope:1 --port 0 >/dev/null 2>%s/serve-nope.err", plumb_bin, test_tmpdir());
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    snprintf(cmd, sizeof cmd, "%s/serve-nope.err", test_tmpdir());
    char *err = test_read_file(cmd, NULL);
    assert_non_null(err);
    assert_non_null(strstr(err, "neither a file nor a model in the store"));
    free(err);
    unsetenv("PLUMB_HOME");
}

/* Runs a plumb command line; its stdout in *out. */
static int run_plumb(const char *args, char **out)
{
    char path[600], cmd[4096];
    snprintf(path, sizeof path, "%s/plumb-out.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>&1", plumb_bin, args, path);
    int st = system(cmd);
    *out = test_read_file(path, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* bench --serve with serve's key file, and a failed request saying why
 * (docs/cli.md: one name per idea, --api-key-file). */
static void test_bench_keys(void **state)
{
    (void)state;
    char keyfile[600];
    test_tmpfile("bench-keys", keyfile, sizeof keyfile);
    const char *keys = "# the bench's key, an admin's\nbench sk-bench-key-0001 admin\n";
    test_write_file(keyfile, keys, strlen(keys));
    char extra[800], args[800];
    snprintf(extra, sizeof extra, "-np 2 --ctx 128 --api-key-file %s", keyfile);
    struct server s = start_server(model_path(), extra);
    char *out;
    snprintf(args, sizeof args, "bench --serve http://127.0.0.1:%d --concurrency 1 --requests 1 --gen-tokens 4 "
             "--api-key-file %s", s.port, keyfile);
    if (run_plumb(args, &out) != 0)
        fail_msg("%s", out);
    free(out);
    snprintf(args, sizeof args, "bench --serve http://127.0.0.1:%d --concurrency 1 --requests 1 --gen-tokens 4 "
             "--api-key sk-wrong", s.port);
    assert_int_equal(run_plumb(args, &out), 1);
    if (!strstr(out, "1 of 1 requests failed at 1 user; the first: status 401"))
        fail_msg("%s", out);
    free(out);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* bench --serve --shared-prefix: every prompt begins with the same ids,
 * which the server evaluates once and then reuses (its slots share the
 * prefix another holds): every request after a client's first reports
 * at least the prefix as cached, the level's figures add up, and the
 * status counts the positions held once for several slots. */
static void test_bench_shared_prefix(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 3 --ctx 512");
    char args[800], *out;
    snprintf(args, sizeof args, "bench --serve http://127.0.0.1:%d --concurrency 1,3 --requests 2 --shared-prefix 96 "
             "--prompt-tokens 8 --gen-tokens 4 --per-request --json", s.port);
    if (run_plumb(args, &out) != 0)
        fail_msg("%s", out);
    json_t *v = test_parse_json(out);
    free(out);
    assert_int_equal(json_integer_value(json_object_get(v, "shared_prefix")), 96);
    json_t *levels = json_object_get(v, "levels");
    long long cached = 0;
    for (size_t i = 0; i < json_array_size(levels); i++) {
        json_t *l = json_array_get(levels, i);
        const long long users = json_integer_value(json_object_get(l, "concurrency"));
        assert_int_equal(json_integer_value(json_object_get(l, "failed")), 0);
        assert_int_equal(json_integer_value(json_object_get(l, "prompt_tokens")), users * 2 * (96 + 8));
        cached += json_integer_value(json_object_get(l, "cached_tokens"));
    }
    json_t *reqs = json_object_get(v, "requests");
    long long per_request = 0;
    assert_int_equal(json_array_size(reqs), 2 + 6);
    for (size_t i = 0; i < json_array_size(reqs); i++) {
        json_t *q = json_array_get(reqs, i);
        const long long c = json_integer_value(json_object_get(q, "cached_tokens"));
        per_request += c;
        if (json_integer_value(json_object_get(q, "index")) > 0 && c < 96)
            fail_msg("request %zu reused %lld prompt tokens, not the shared 96", i, c);
        assert_true(c <= 96 + 8 - 1); /* its own tokens differ: at most the prefix and a chance match */
    }
    assert_int_equal(cached, per_request);
    json_decref(v);
    /* the slots that took the prefix from another read its rows, not a
     * copy: at least one slot's 96 positions are held once */
    struct response sr = request(s.port, "GET", "/v1/plumb/status", NULL, NULL);
    assert_int_equal(sr.status, 200);
    json_t *sv = body_json(&sr);
    response_free(&sr);
    const long long shared = json_integer_value(json_object_get(sv, "kv_shared"));
    if (shared < 96 || shared > json_integer_value(json_object_get(sv, "kv_used")))
        fail_msg("kv_shared %lld of kv_used %lld", shared, (long long)json_integer_value(json_object_get(sv, "kv_used")));
    json_decref(sv);
    /* the table says how much was reused */
    snprintf(args, sizeof args, "bench --serve http://127.0.0.1:%d --concurrency 1 --requests 2 --shared-prefix 96 "
             "--prompt-tokens 8 --gen-tokens 4", s.port);
    if (run_plumb(args, &out) != 0 || !strstr(out, "| prompt reused |"))
        fail_msg("%s", out);
    free(out);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* Usage accounting: what `plumb usage` reports per key and per model is
 * what the server's answers said in their usage fields. */
static void test_usage_accounting(void **state)
{
    (void)state;
    char home[600], keyfile[600];
    snprintf(home, sizeof home, "%s/usage-home", test_tmpdir());
    setenv("PLUMB_HOME", home, 1);
    test_tmpfile("usage-keys", keyfile, sizeof keyfile);
    const char *keys = "alice sk-usage-alice-1\nbob sk-usage-bob-22\n";
    test_write_file(keyfile, keys, strlen(keys));
    char extra[800];
    snprintf(extra, sizeof extra, "-np 2 --ctx 256 --alias tiny --api-key-file %s", keyfile);
    struct server s = start_server(model_path(), extra);
    long long want[2][2] = {{0, 0}, {0, 0}}; /* [key][prompt, completion] */
    const char *auth[2] = {"Authorization: Bearer sk-usage-alice-1\r\n", "Authorization: Bearer sk-usage-bob-22\r\n"};
    for (int i = 0; i < 7; i++) {
        const int k = i % 3 == 0;
        char body[256];
        snprintf(body, sizeof body, "{\"prompt\":\"request %d says\",\"max_tokens\":%d,\"temperature\":0}", i, 3 + i);
        struct response r = request(s.port, "POST", "/v1/completions", auth[k], body);
        assert_int_equal(r.status, 200);
        json_t *v = body_json(&r);
        json_t *u = json_object_get(v, "usage");
        want[k][0] += json_integer_value(json_object_get(u, "prompt_tokens"));
        want[k][1] += json_integer_value(json_object_get(u, "completion_tokens"));
        json_decref(v);
        response_free(&r);
    }
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    char *out;
    assert_int_equal(run_plumb("usage --by key --json", &out), 0);
    json_t *v = test_parse_json(out);
    json_t *rows = json_object_get(v, "usage");
    assert_int_equal(json_array_size(rows), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *row = json_array_get(rows, i);
        const char *key = json_string_value(json_object_get(row, "key"));
        const int k = !strcmp(key, "bob");
        assert_true(k || !strcmp(key, "alice"));
        assert_int_equal(json_integer_value(json_object_get(row, "prompt_tokens")), want[k][0]);
        assert_int_equal(json_integer_value(json_object_get(row, "completion_tokens")), want[k][1]);
        assert_int_equal(json_integer_value(json_object_get(row, "requests")), k ? 3 : 4);
    }
    json_decref(v);
    free(out);
    assert_int_equal(run_plumb("usage --by model --json", &out), 0);
    v = test_parse_json(out);
    rows = json_object_get(v, "usage");
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "model")), "tiny");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "total_tokens")),
                     want[0][0] + want[0][1] + want[1][0] + want[1][1]);
    json_decref(v);
    free(out);
    /* plumb tco takes the measured volume: minutes of traffic count as a
     * day's, a --since span divides by its days */
    const long long in = want[0][0] + want[1][0], outt = want[0][1] + want[1][1];
    const char *tco = "tco --capex 5000 --power 300W --no-chart --json --from-usage";
    assert_int_equal(run_plumb(tco, &out), 0);
    v = test_parse_json(out);
    json_t *inputs = json_object_get(v, "inputs");
    assert_string_equal(json_string_value(json_object_get(inputs, "volume_source")), "usage");
    assert_true(fabs(json_real_value(json_object_get(inputs, "tokens_in_day")) - (double)in) < 1e-6);
    assert_true(fabs(json_real_value(json_object_get(inputs, "tokens_out_day")) - (double)outt) < 1e-6);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(inputs, "usage"), "requests")), 7);
    json_decref(v);
    free(out);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "%s --since 4d", tco);
    assert_int_equal(run_plumb(cmd, &out), 0);
    v = test_parse_json(out);
    inputs = json_object_get(v, "inputs");
    assert_true(fabs(json_real_value(json_object_get(inputs, "tokens_in_day")) - (double)in / 4) < 1e-3 * in);
    assert_true(fabs(json_real_value(json_object_get(inputs, "tokens_out_day")) - (double)outt / 4) < 1e-3 * outt);
    json_decref(v);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --since 2999-01-01", tco);
    assert_int_equal(run_plumb(cmd, &out), 2); /* in the future */
    free(out);
    snprintf(cmd, sizeof cmd, "%s --tokens-in 5M", tco);
    assert_int_equal(run_plumb(cmd, &out), 2);
    free(out);
    assert_int_equal(run_plumb("usage --since 2999-01-01 --json", &out), 0);
    v = test_parse_json(out);
    assert_int_equal(json_array_size(json_object_get(v, "usage")), 0);
    json_decref(v);
    free(out);
    assert_int_equal(run_plumb("usage --since yesterday", &out), 2);
    free(out);
    assert_int_equal(run_plumb("usage --by colour", &out), 2);
    free(out);
    unsetenv("PLUMB_HOME");
}

struct drain_client {
    int port;
    struct response r;
};

static void *drain_thread(void *arg)
{
    struct drain_client *d = arg;
    d->r = request(d->port, "POST", "/v1/completions", NULL,
                   "{\"prompt\":\"a long story\",\"max_tokens\":1500,\"ignore_eos\":true,\"temperature\":0}");
    return NULL;
}

/* SIGTERM: /ready turns 503, a running answer completes, exit 0. */
static void test_sigterm_drain(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 2 --ctx 2048 --drain-timeout 60");
    struct drain_client d = {s.port, {0}};
    pthread_t th;
    pthread_create(&th, NULL, drain_thread, &d);
    /* wait until it runs */
    for (int i = 0; i < 200; i++) {
        struct response m = request(s.port, "GET", "/metrics", NULL, NULL);
        bool running = strstr(m.body, "\nplumb_slots_active 1\n") != NULL;
        response_free(&m);
        if (running)
            break;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    kill(s.pid, SIGTERM);
    /* no new requests now: the connection is refused, or answered 503 */
    nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        close(fd);
        struct response late = request(s.port, "GET", "/ready", NULL, NULL);
        assert_int_equal(late.status, 503);
        response_free(&late);
    } else {
        close(fd);
    }
    pthread_join(th, NULL);
    /* the answer that was running came out whole */
    assert_int_equal(d.r.status, 200);
    json_t *v = body_json(&d.r);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")), 1500);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(v, "choices"), 0),
                                                          "finish_reason")), "length");
    json_decref(v);
    response_free(&d.r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    /* and it was still running when the signal came */
    size_t ll;
    char *log = test_read_file(s.log, &ll);
    const char *sig = strstr(log, "SIGTERM: draining"), *done = strstr(log, "completion=1500");
    if (!sig || !done || sig > done)
        fail_msg("the request did not run across the drain:\n%s", log);
    free(log);
}

struct loop_client {
    int port;
    atomic_bool stop;
    int ok, failed;
    char last[512]; /* the last answer */
};

static void *loop_thread(void *arg)
{
    struct loop_client *l = arg;
    while (!atomic_load(&l->stop)) {
        struct response r = request(l->port, "POST", "/v1/completions", NULL,
                                    "{\"model\":\"assistant\",\"prompt\":\"Once\",\"max_tokens\":8,\"temperature\":0}");
        if (r.status == 200) {
            l->ok++;
            char *t = answer_text(&r, NULL);
            snprintf(l->last, sizeof l->last, "%s", t);
            free(t);
        } else {
            l->failed++;
        }
        response_free(&r);
    }
    return NULL;
}

static char *completion_of(int port)
{
    struct response r = request(port, "POST", "/v1/completions", NULL,
                                "{\"model\":\"assistant\",\"prompt\":\"Once\",\"max_tokens\":8,\"temperature\":0}");
    assert_int_equal(r.status, 200);
    char *t = answer_text(&r, NULL);
    response_free(&r);
    return t;
}

/* --config and SIGHUP: the alias moves to another file while a client
 * runs throughout; no request fails, a request running across the swap
 * ends on the old model, new ones get the new model, and the old one is
 * unloaded once its requests are done. */
static void test_config_hot_swap(void **state)
{
    (void)state;
    const char *a = test_tiny_model("Q8_0"), *b = test_tiny_model("Q4_0");
    char cfg[512], text[2048];
    test_tmpfile("serve.ini", cfg, sizeof cfg);
    snprintf(text, sizeof text, "[server]\nlog_format = json\n[model assistant]\nsource = %s\nparallel = 2\nctx = 4096\n", a);
    test_write_file(cfg, text, strlen(text));
    char extra[600];
    snprintf(extra, sizeof extra, "--config %s", cfg);
    struct server s = start_server("", extra);
    char *before = completion_of(s.port);

    struct loop_client l = {.port = s.port};
    atomic_init(&l.stop, false);
    pthread_t th;
    pthread_create(&th, NULL, loop_thread, &l);
    struct drain_client longreq = {s.port, {0}};
    pthread_t th2;
    pthread_create(&th2, NULL, drain_thread, &longreq); /* 1500 tokens, across the swap */
    nanosleep(&(struct timespec){0, 150 * 1000 * 1000}, NULL);

    snprintf(text, sizeof text, "[server]\nlog_format = json\n[model assistant]\nsource = %s\nparallel = 2\nctx = 4096\n", b);
    test_write_file(cfg, text, strlen(text));
    kill(s.pid, SIGHUP);
    /* until the new model answers */
    char *after = NULL;
    for (int i = 0; i < 200; i++) {
        after = completion_of(s.port);
        if (strcmp(after, before) != 0)
            break;
        free(after);
        after = NULL;
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    assert_non_null(after); /* the two models answer differently */
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    atomic_store(&l.stop, true);
    pthread_join(th, NULL);
    pthread_join(th2, NULL);
    print_message("  %d requests during the swap, %d failed\n", l.ok, l.failed);
    assert_int_equal(l.failed, 0);
    assert_true(l.ok > 3);
    assert_string_equal(l.last, after);
    assert_int_equal(longreq.r.status, 200);
    response_free(&longreq.r);
    /* a broken file changes nothing */
    test_write_file(cfg, "[model assistant]\nsource = /nonexistent.gguf\n", 45);
    kill(s.pid, SIGHUP);
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    char *still = completion_of(s.port);
    assert_string_equal(still, after);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    size_t ll;
    char *log = test_read_file(s.log, &ll);
    const char *unloaded = strstr(log, "unloaded 'assistant'");
    if (!unloaded || !strstr(log, "reload failed, serving as before") || !strstr(log, "\"event\":\"request\""))
        fail_msg("log:\n%s", log);
    /* every event: an RFC 3339 time and a level (docs/cli.md) */
    if (!strstr(log, "{\"event\":\"request\",\"time\":\"20") || !strstr(log, "\"level\":\"error\",\"message\":\"reload failed") ||
        !strstr(log, "\"level\":\"info\",\"id\":\""))
        fail_msg("log:\n%s", log);
    /* the old model left only after the long request was logged */
    const char *long_done = strstr(log, "\"completion_tokens\":1500");
    assert_non_null(long_done);
    assert_true(long_done < unloaded);
    free(log);
    free(before);
    free(after);
    free(still);
}

/* Models whose estimates exceed the memory available are refused before
 * loading, with the figures and the way to override. */
static void test_memory_refused(void **state)
{
    (void)state;
    char args[1024], *out;
    snprintf(args, sizeof args, "serve %s --ctx 16000000 -np 256 --port 0", model_path());
    assert_int_equal(run_plumb(args, &out), 1);
    assert_non_null(strstr(out, "GiB"));
    assert_non_null(strstr(out, "256 x 16000000 tokens"));
    assert_non_null(strstr(out, "--ignore-memory"));
    free(out);
}

/* A thinking model's reasoning comes as reasoning_content (whole and
 * streamed), the same text reasoning_format "none" leaves in the content;
 * chat_template_kwargs.enable_thinking reaches the template. A random
 * model writes no </think>: with DeepSeek-R1's format, which opens the
 * block in the prompt, its whole answer is reasoning. */
static void test_reasoning_content(void **state)
{
    (void)state;
    /* the reference tiny llama writes text, not only newlines */
    REQUIRE_TESTDATA(model, "tiny-llama-q8_0.gguf");
    struct server s = start_server(model, "--ctx 256 --chat-format deepseek-r1");
    char *split = chat_body("think about dogs", 16, false, ",\"temperature\":0");
    char *raw = chat_body("think about dogs", 16, false, ",\"temperature\":0,\"reasoning_format\":\"none\"");
    struct response r = request(s.port, "POST", "/v1/chat/completions", NULL, split);
    json_t *a = body_json(&r);
    response_free(&r);
    r = request(s.port, "POST", "/v1/chat/completions", NULL, raw);
    json_t *b = body_json(&r);
    response_free(&r);
    json_t *ma = json_object_get(json_array_get(json_object_get(a, "choices"), 0), "message");
    json_t *mb = json_object_get(json_array_get(json_object_get(b, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(ma, "content")), "");
    const char *reasoning = json_string_value(json_object_get(ma, "reasoning_content"));
    const char *content = json_string_value(json_object_get(mb, "content"));
    assert_non_null(reasoning);
    assert_null(json_object_get(mb, "reasoning_content"));
    /* the thinking is trimmed of newlines around it */
    size_t lo = strspn(content, "\n"), hi = strlen(content);
    while (hi > lo && content[hi - 1] == '\n')
        hi--;
    assert_true(strlen(reasoning) > 0);
    assert_int_equal(strlen(reasoning), hi - lo);
    assert_memory_equal(reasoning, content + lo, hi - lo);
    /* streamed: the deltas' reasoning_content adds up to the same */
    char *streamed = chat_body("think about dogs", 16, true, ",\"temperature\":0");
    r = request(s.port, "POST", "/v1/chat/completions", NULL, streamed);
    char all[4096] = "";
    size_t n = 0;
    for (const char *p = strstr(r.body, "data: {"); p; p = strstr(p + 1, "data: {")) {
        const char *end = strstr(p, "\n\n");
        json_t *ev = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        json_t *d = json_object_get(json_object_get(json_array_get(json_object_get(ev, "choices"), 0), "delta"),
                                    "reasoning_content");
        if (json_is_string(d) && n + json_string_length(d) < sizeof all) {
            memcpy(all + n, json_string_value(d), json_string_length(d));
            n += json_string_length(d);
        }
        json_decref(ev);
    }
    response_free(&r);
    assert_int_equal(n, strlen(reasoning));
    assert_memory_equal(all, reasoning, n);
    /* the template's switches: bad ones refused, enable_thinking reaches it */
    expect_error(s.port, "POST", "/v1/chat/completions", NULL,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"foo\":1}}", 400,
                 "invalid_value");
    expect_error(s.port, "POST", "/v1/chat/completions", NULL,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"huge\"}", 400,
                 "invalid_value");
    json_decref(a);
    json_decref(b);
    free(split);
    free(raw);
    free(streamed);
    assert_int_equal(stop_server(&s, SIGTERM), 0);

    /* Qwen3's format: thinking off renders an empty thinking block */
    s = start_server(model, "--ctx 256 --chat-format qwen3");
    int prompt[2];
    for (int k = 0; k < 2; k++) {
        char *body = chat_body("hello", 2, false,
                               k ? ",\"temperature\":0,\"chat_template_kwargs\":{\"enable_thinking\":false}"
                                 : ",\"temperature\":0");
        r = request(s.port, "POST", "/v1/chat/completions", NULL, body);
        json_t *v = body_json(&r);
        prompt[k] = (int)json_integer_value(json_object_get(json_object_get(v, "usage"), "prompt_tokens"));
        json_decref(v);
        response_free(&r);
        free(body);
    }
    print_message("  qwen3 format: %d prompt tokens thinking, %d without\n", prompt[0], prompt[1]);
    assert_true(prompt[1] > prompt[0]);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* ---- one engine behind every way of generating ---- */

/* Runs a shell command line; stdout parsed as JSON (the last line). */
static json_t *json_of(const char *cmdline)
{
    char path[600], cmd[4096];
    snprintf(path, sizeof path, "%s/same-out.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s >%s 2>/dev/null", cmdline, path);
    int st = system(cmd);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s: exit status %d", cmdline, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    char *text = test_read_file(path, NULL);
    json_t *v = test_parse_json(text);
    free(text);
    return v;
}

/* serve's answer (chat, logprobs with 5 alternatives) against run's
 * tokens and top logits: the same tokens and text, and each step's
 * alternatives in the same order with the same differences between
 * them (a log-probability is a logit less one constant per step). */
static void expect_same_as_run(json_t *answer, json_t *run, const struct tokenizer *tok)
{
    json_t *c = json_array_get(json_object_get(answer, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "message"), "content")),
                        json_string_value(json_object_get(run, "text")));
    json_t *content = json_object_get(json_object_get(c, "logprobs"), "content");
    json_t *tokens = json_object_get(run, "tokens"), *top = json_object_get(run, "top");
    assert_int_equal(json_array_size(content), json_array_size(tokens));
    for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *entry = json_array_get(content, k), *alts = json_object_get(entry, "top_logprobs");
        json_t *run_top = json_array_get(top, k);
        char piece[256];
        size_t n = tok_piece(tok, (int32_t)json_integer_value(json_array_get(tokens, k)), false, piece, sizeof piece);
        json_t *bytes = json_object_get(entry, "bytes");
        assert_int_equal(json_array_size(bytes), n);
        for (size_t b = 0; b < n; b++)
            assert_int_equal(json_integer_value(json_array_get(bytes, b)), (unsigned char)piece[b]);
        assert_int_equal(json_array_size(alts), 5);
        const double lp0 = json_number_value(json_object_get(json_array_get(alts, 0), "logprob"));
        const double lg0 = json_number_value(json_array_get(json_array_get(run_top, 0), 1));
        assert_true(fabs(json_number_value(json_object_get(entry, "logprob")) - lp0) < 1e-9); /* greedy: the first */
        for (size_t i = 0; i < 5; i++) {
            json_t *alt = json_array_get(alts, i), *pair = json_array_get(run_top, i);
            n = tok_piece(tok, (int32_t)json_integer_value(json_array_get(pair, 0)), false, piece, sizeof piece);
            json_t *ab = json_object_get(alt, "bytes");
            assert_int_equal(json_array_size(ab), n);
            for (size_t b = 0; b < n; b++)
                assert_int_equal(json_integer_value(json_array_get(ab, b)), (unsigned char)piece[b]);
            const double d_serve = json_number_value(json_object_get(alt, "logprob")) - lp0;
            const double d_run = json_number_value(json_array_get(pair, 1)) - lg0;
            if (fabs(d_serve - d_run) > 1e-4)
                fail_msg("step %zu alternative %zu: %.6f below the first through serve, %.6f through run", k, i,
                         -d_serve, -d_run);
        }
    }
}

/* The same request through plumb run, plumb chat --json and plumb serve
 * (alone, then among three other streams) gives the same tokens, text
 * and logits. */
static void test_same_through_every_path(void **state)
{
    (void)state;
    const char *model = model_path();
    char cmd[2048];
    const char *opts = "--system 'You are terse.' --temp 0 -n 12 --ctx 256 --json --top 5";
    snprintf(cmd, sizeof cmd, "%s run %s --chat -p 'tell me about dogs' %s", plumb_bin, model, opts);
    json_t *run = json_of(cmd);
    snprintf(cmd, sizeof cmd, "echo 'tell me about dogs' | %s chat %s %s", plumb_bin, model, opts);
    json_t *chat = json_of(cmd);
    assert_true(json_equal(json_object_get(run, "tokens"), json_object_get(chat, "tokens")));
    assert_true(json_equal(json_object_get(run, "top"), json_object_get(chat, "top")));
    assert_string_equal(json_string_value(json_object_get(run, "text")),
                        json_string_value(json_object_get(chat, "content")));
    assert_int_equal(json_array_size(json_object_get(run, "tokens")), 12);

    struct tokenizer *tok;
    pb_err err;
    assert_int_equal(tok_open(model, &tok, &err), 0);
    struct server s = start_server(model, "-np 4 --ctx 256");
    char *body = chat_body("tell me about dogs", 12, false, ",\"temperature\":0,\"logprobs\":true,\"top_logprobs\":5");
    struct response r = request(s.port, "POST", "/v1/chat/completions", NULL, body);
    assert_int_equal(r.status, 200);
    json_t *alone = body_json(&r);
    response_free(&r);
    expect_same_as_run(alone, run, tok);

    /* among others: three streams with other prompts and sampling */
    struct client cs[3];
    pthread_t th[3];
    char *others[3];
    for (int k = 0; k < 3; k++) {
        char content[64];
        snprintf(content, sizeof content, "another question, number %d", k);
        others[k] = chat_body(content, 40, true, ",\"temperature\":0.8,\"seed\":5");
        cs[k] = (struct client){s.port, others[k], true, NULL};
        pthread_create(&th[k], NULL, client_thread, &cs[k]);
    }
    r = request(s.port, "POST", "/v1/chat/completions", NULL, body);
    assert_int_equal(r.status, 200);
    json_t *among = body_json(&r);
    response_free(&r);
    for (int k = 0; k < 3; k++) {
        pthread_join(th[k], NULL);
        free(cs[k].text);
        free(others[k]);
    }
    expect_same_as_run(among, run, tok);
    json_t *c = json_array_get(json_object_get(among, "choices"), 0);
    assert_true(json_equal(json_object_get(c, "logprobs"),
                           json_object_get(json_array_get(json_object_get(alone, "choices"), 0), "logprobs")));
    json_decref(alone);
    json_decref(among);
    free(body);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    tok_free(tok);
    json_decref(run);
    json_decref(chat);
}

/* ---- connections that lock others out (issue 15) ---- */

static double seconds_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

/* A connection from a loopback address of our choice (127.0.0.X): the
 * server counts connections per client address. */
static int connect_from(int port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in b = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &b.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&b, sizeof b), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Everything a connection receives until the server closes it (or
 * seconds pass: *closed false then). */
static char *read_until_close(int fd, double seconds, bool *closed)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *closed = false;
    for (;;) {
        double left = seconds - seconds_since(&t0);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            break;
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0) {
            *closed = true; /* end of stream, or a reset: closed either way */
            break;
        }
        len += (size_t)k;
    }
    buf[len] = '\0';
    return buf;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* /health, /ready and a short completion, each answered within a second. */
static void expect_prompt_answers(int port)
{
    const char *paths[] = {"/health", "/ready", "/v1/completions"};
    for (int i = 0; i < 3; i++) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct response r = i < 2 ? request(port, "GET", paths[i], NULL, NULL)
                                  : request(port, "POST", paths[i], NULL, "{\"prompt\":\"hi\",\"max_tokens\":2}");
        double dt = seconds_since(&t0);
        if (r.status != 200 || dt > 1.0)
            fail_msg("%s: status %d after %.2f s, expected 200 within a second", paths[i], r.status, dt);
        response_free(&r);
    }
}

/* Hundreds of connections that send nothing, or a byte now and then, while
 * a normal client still gets its answers within a second; such
 * connections are closed at the header deadline, and one address cannot
 * hold more than its share. Before the fix 256 idle connections took every
 * connection slot (and thread) until they closed by themselves. */
static void test_idle_and_dripping_connections(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    enum { IDLE = 300, DRIP = 100 };
    struct server s = start_server(model_path(), "-np 2 --ctx 128");
    int idle[IDLE], drip[DRIP];
    char src[32];
    for (int i = 0; i < IDLE; i++) {
        snprintf(src, sizeof src, "127.0.0.%d", 2 + i / 30);
        idle[i] = connect_from(s.port, src);
    }
    for (int i = 0; i < DRIP; i++) {
        snprintf(src, sizeof src, "127.0.0.%d", 20 + i / 25);
        drip[i] = connect_from(s.port, src);
        send(drip[i], "GET /health HTTP/1.1\r\n", 22, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    for (int round = 0; round < 4; round++) {
        expect_prompt_answers(s.port);
        for (int i = 0; i < DRIP; i++)
            send(drip[i], "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    }
    for (int i = 0; i < IDLE; i++)
        close(idle[i]);
    for (int i = 0; i < DRIP; i++)
        close(drip[i]);
    assert_int_equal(stop_server(&s, SIGTERM), 0);

    /* the deadline: dripping a byte every 0.2 s does not keep a connection
     * past --header-timeout, nor does sending nothing */
    s = start_server(model_path(), "-np 1 --ctx 128 --header-timeout 1.5 --max-connections-per-client 8");
    int d = connect_from(s.port, "127.0.0.40"), q = connect_from(s.port, "127.0.0.41");
    send(d, "GET /health HTTP/1.1\r\n", 22, MSG_NOSIGNAL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool closed = false;
    char *got = NULL;
    while (!closed && seconds_since(&t0) < 6) {
        send(d, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        free(got);
        got = read_until_close(d, 0.2, &closed);
    }
    double dt = seconds_since(&t0);
    if (!closed || dt < 1.2 || dt > 3.5)
        fail_msg("a dripping connection: %s after %.2f s (header timeout 1.5 s)", closed ? "closed" : "still open", dt);
    assert_non_null(strstr(got, "HTTP/1.1 408"));
    free(got);
    got = read_until_close(q, 3, &closed);
    assert_true(closed);
    assert_non_null(strstr(got, "HTTP/1.1 408"));
    free(got);
    close(d);
    close(q);
    /* a body dripped a byte every 0.2 s (100 bytes would take 20 s): cut
     * off at the header timeout plus its length at --min-rate */
    int b = connect_from(s.port, "127.0.0.43");
    const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
    send(b, head, strlen(head), MSG_NOSIGNAL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    closed = false;
    got = NULL;
    while (!closed && seconds_since(&t0) < 8) {
        send(b, " ", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        free(got);
        got = read_until_close(b, 0.2, &closed);
    }
    dt = seconds_since(&t0);
    if (!closed || dt > 4.5)
        fail_msg("a dripping body: %s after %.2f s (header timeout 1.5 s)", closed ? "closed" : "still open", dt);
    free(got);
    close(b);
    /* one address beyond its 8 waiting connections: the new one is refused
     * (the others have waited less than a second), another address is not */
    int mine[8];
    for (int i = 0; i < 8; i++)
        mine[i] = connect_from(s.port, "127.0.0.42");
    int extra = connect_from(s.port, "127.0.0.42");
    got = read_until_close(extra, 3, &closed);
    assert_true(closed);
    assert_non_null(strstr(got, "HTTP/1.1 429"));
    free(got);
    close(extra);
    expect_prompt_answers(s.port);
    for (int i = 0; i < 8; i++)
        close(mine[i]);
    struct response r = request(s.port, "GET", "/metrics", NULL, NULL);
    assert_non_null(strstr(r.body, "plumb_connections_dropped_total{reason=\"header_timeout\"} 2\n"));
    assert_non_null(strstr(r.body, "plumb_connections_dropped_total{reason=\"per_client\"} 1\n"));
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* Two requests back to back on one connection: the first is answered, the
 * connection ends, and the second is never run (it was run and its answer
 * lost, or the client waited forever). */
static void test_pipelined_requests(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 2 --ctx 128");
    const char *get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *body = "{\"prompt\":\"hi\",\"max_tokens\":3}";
    char post[256];
    snprintf(post, sizeof post, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    const char *pairs[][2] = {{get, get}, {post, post}, {post, get}};
    for (int k = 0; k < 3; k++) {
        char both[600];
        snprintf(both, sizeof both, "%s%s", pairs[k][0], pairs[k][1]);
        int fd = connect_to(s.port);
        send_all(fd, both, strlen(both));
        bool closed;
        char *got = read_until_close(fd, 10, &closed);
        close(fd);
        if (count_of(got, "HTTP/1.1 ") != 1 || !closed || !strstr(got, "HTTP/1.1 200"))
            fail_msg("pair %d: %d answers, connection %s:\n%.600s", k, count_of(got, "HTTP/1.1 "),
                     closed ? "closed" : "left open", got);
        free(got);
    }
    /* the second POST of the POST+POST pair never ran */
    struct response r = request(s.port, "GET", "/metrics", NULL, NULL);
    if (!strstr(r.body, "plumb_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2\n"))
        fail_msg("completions run:\n%s", r.body);
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* A second server on a port in use does not start, and names the holder
 * (it used to share the port and take most of the first one's requests). */
static void test_port_in_use(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 1 --ctx 128");
    char out[600], cmd[2048];
    test_tmpfile("second-server.txt", out, sizeof out);
    snprintf(cmd, sizeof cmd, "timeout -s KILL 20 %s serve %s --port %d -np 1 --ctx 128 >'%s' 2>&1", plumb_bin,
             model_path(), s.port, out);
    int st = system(cmd);
    char *text = test_read_file(out, NULL);
    char want[128];
    snprintf(want, sizeof want, "port %d is in use by pid %d", s.port, (int)s.pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || !strstr(text, want))
        fail_msg("the second server (exit %d) said:\n%s\nexpected exit 1 and '%s'",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1, text, want);
    free(text);
    struct response r = request(s.port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* A bad Content-Length gets one status line and one set of headers (it got
 * them twice), then the connection closes; also after empty lines before
 * the request line, which libmicrohttpd skips (the gate took them for a
 * whole head and let what followed through unchecked). */
static void test_bad_content_length(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 1 --ctx 128");
    struct {
        const char *before, *headers;
        int status;
    } cases[] = {
        {"", "Content-Length: -1\r\n", 400},
        {"", "Content-Length: 99999999999999999999\r\n", 413},
        {"", "Content-Length: 12abc\r\n", 400},
        {"", "Content-Length: 5\r\nContent-Length: 6\r\n", 400},
        {"", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400},
        {"\r\n\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n", 400},
        {"\n\n\r\n", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char head[512];
        snprintf(head, sizeof head, "%sPOST /v1/completions HTTP/1.1\r\nHost: x\r\n%s\r\n", cases[i].before,
                 cases[i].headers);
        int fd = connect_to(s.port);
        send_all(fd, head, strlen(head));
        bool closed;
        char *got = read_until_close(fd, 10, &closed);
        close(fd);
        char want[32];
        snprintf(want, sizeof want, "HTTP/1.1 %d ", cases[i].status);
        if (count_of(got, "HTTP/1.1 ") != 1 || strncmp(got, want, strlen(want)) || !closed ||
            count_of(got, "Content-Length:") != 1)
            fail_msg("%s: expected one '%s' response and a close:\n%s", cases[i].headers, want, got);
        free(got);
    }
    expect_prompt_answers(s.port);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* Fields plumb does not honour are a 400 naming the field, never ignored. */
static void test_unsupported_fields(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 1 --ctx 128");
    const char *fields[][2] = {
        {"functions", "[{\"name\":\"f\",\"parameters\":{}}]"},
        {"function_call", "\"auto\""},
        {"audio", "{\"voice\":\"alloy\"}"},
        {"modalities", "[\"text\",\"audio\"]"},
        {"prediction", "{\"type\":\"content\",\"content\":\"x\"}"},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char body[512], quoted[64];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,\"%s\":%s}",
                 fields[i][0], fields[i][1]);
        struct response r = request(s.port, "POST", "/v1/chat/completions", NULL, body);
        snprintf(quoted, sizeof quoted, "'%s'", fields[i][0]);
        if (r.status != 400 || !strstr(r.body, quoted))
            fail_msg("%s: status %d: %s", fields[i][0], r.status, r.body ? r.body : "");
        response_free(&r);
    }
    assert_int_equal(stop_server(&s, SIGTERM), 0);
}

/* What applications send (issue 17): a required tool call comes back as
 * tool_calls whose arguments follow the schema; a JSON Schema answer
 * validates; schema keywords plumb cannot follow, bad logit_bias, n and
 * tool_choice are 400s naming them; /tokenize and /detokenize round-trip;
 * embeddings of a decoder are normalized and a text beyond the context is
 * context_length_exceeded; X-Request-Id comes back (the client's, or one
 * made) and is logged; CORS answers an allowed origin and its preflight,
 * and nothing for another; the per-model metrics carry the model label. */
static void test_applications(void **state)
{
    (void)state;
    struct server s = start_server(model_path(), "-np 2 --ctx 1024 --cors-origins https://app.example");
    const char *tool = "[{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":{\"type\":\"object\","
                       "\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9},\"b\":{\"enum\":[\"x\",\"y\"]}},"
                       "\"required\":[\"a\",\"b\"],\"additionalProperties\":false}}}]";
    char body[2048];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"add\"}],\"max_tokens\":120,\"seed\":3,"
             "\"tools\":%s,\"tool_choice\":\"required\",\"parallel_tool_calls\":false}", tool);
    struct response r = request(s.port, "POST", "/v1/chat/completions", "X-Request-Id: tools-1\r\n", body);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "X-Request-Id: tools-1"));
    json_t *v = body_json(&r);
    const json_t *choice = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(choice, "finish_reason")), "tool_calls");
    const json_t *calls = json_object_get(json_object_get(choice, "message"), "tool_calls");
    assert_int_equal(json_array_size(calls), 1);
    const json_t *fn = json_object_get(json_array_get(calls, 0), "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "add");
    json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
    const json_int_t a = json_integer_value(json_object_get(args, "a"));
    const char *b = json_string_value(json_object_get(args, "b"));
    assert_true(json_is_integer(json_object_get(args, "a")) && a >= 0 && a <= 9 && b && (!strcmp(b, "x") || !strcmp(b, "y")));
    assert_int_equal(json_object_size(args), 2);
    json_decref(args);
    json_decref(v);
    response_free(&r);

    /* a schema answer */
    const char *sch = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":200,\"seed\":4,"
                      "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\",\"schema\":"
                      "{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"minItems\":2,\"maxItems\":3}}}}";
    r = request(s.port, "POST", "/v1/chat/completions", NULL, sch);
    assert_int_equal(r.status, 200);
    v = body_json(&r);
    json_t *arr = json_loads(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(v, "choices"), 0), "message"), "content")), 0, NULL);
    assert_true(json_is_array(arr) && json_array_size(arr) >= 2 && json_array_size(arr) <= 3);
    for (size_t i = 0; i < json_array_size(arr); i++)
        assert_true(json_is_boolean(json_array_get(arr, i)));
    assert_non_null(strstr(r.headers, "X-Request-Id: req-"));
    json_decref(arr);
    json_decref(v);
    response_free(&r);

    /* refused, naming what is wrong */
    static const struct {
        const char *field, *says;
    } bad[] = {
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\",\"schema\":{\"type\":\"string\",\"format\":\"uri\"}}}", "format 'uri'"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\",\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"if\":{}}}}}}", "'if'"},
        {"\"grammar\":\"root ::= missing\"", "'missing'"},
        {"\"logit_bias\":{\"abc\":1}", "logit_bias"},
        {"\"logit_bias\":{\"5\":101}", "-100 to 100"},
        {"\"tool_choice\":\"required\"", "needs 'tools'"},
        {"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"bad name\"}}]", "tools[0].function.name"},
        {"\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]", "tool_call_id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":4,%s}",
                 bad[i].field);
        if (!strncmp(bad[i].field, "\"messages\"", 11))
            snprintf(body, sizeof body, "{%s}", bad[i].field);
        r = request(s.port, "POST", "/v1/chat/completions", NULL, body);
        if (r.status != 400 || !strstr(r.body, bad[i].says))
            fail_msg("%s: %d %s", bad[i].field, r.status, r.body ? r.body : "");
        response_free(&r);
    }

    /* /tokenize and /detokenize */
    r = request(s.port, "POST", "/tokenize", NULL, "{\"content\":\"Once upon a time\"}");
    assert_int_equal(r.status, 200);
    v = body_json(&r);
    char *toks = json_dumps(json_object_get(v, "tokens"), JSON_COMPACT);
    json_decref(v);
    response_free(&r);
    snprintf(body, sizeof body, "{\"tokens\":%s}", toks);
    free(toks);
    r = request(s.port, "POST", "/detokenize", NULL, body);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "Once upon a time"));
    response_free(&r);

    /* embeddings of the decoder: normalized; too long is refused */
    r = request(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":[\"a b c\",[1,2,3]]}");
    assert_int_equal(r.status, 200);
    v = body_json(&r);
    const json_t *data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 2);
    for (size_t i = 0; i < 2; i++) {
        const json_t *emb = json_object_get(json_array_get(data, i), "embedding");
        double ss = 0;
        for (size_t k = 0; k < json_array_size(emb); k++)
            ss += json_number_value(json_array_get(emb, k)) * json_number_value(json_array_get(emb, k));
        assert_true(json_array_size(emb) == 256 && fabs(ss - 1) < 1e-4);
    }
    json_decref(v);
    response_free(&r);
    char *big = malloc(20000);
    int o = snprintf(big, 20000, "{\"input\":[[");
    for (int i = 0; i < 1100; i++)
        o += snprintf(big + o, 20000 - (size_t)o, "%s5", i ? "," : "");
    snprintf(big + o, 20000 - (size_t)o, "]]}");
    expect_error(s.port, "POST", "/v1/embeddings", NULL, big, 400, "context_length_exceeded");
    free(big);

    /* CORS: the allowed origin gets its headers and a preflight; another none */
    r = request(s.port, "OPTIONS", "/v1/chat/completions",
                "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n", NULL);
    assert_int_equal(r.status, 204);
    assert_non_null(strstr(r.headers, "Access-Control-Allow-Origin: https://app.example"));
    assert_non_null(strstr(r.headers, "Access-Control-Allow-Methods:"));
    response_free(&r);
    r = request(s.port, "GET", "/v1/models", "Origin: https://evil.example\r\n", NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.headers, "Access-Control-Allow-Origin"));
    v = body_json(&r);
    const json_t *m0 = json_array_get(json_object_get(v, "data"), 0);
    assert_int_equal(json_integer_value(json_object_get(m0, "context_length")), 1024);
    assert_true(json_array_size(json_object_get(m0, "capabilities")) == 4);
    json_decref(v);
    response_free(&r);

    /* per-model metrics */
    r = request(s.port, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    char want[256];
    const char *series[] = {"plumb:num_requests_running{model=\"%s\"}", "plumb:request_success_total{model=\"%s\",finished_reason=\"tool_calls\"} 1",
                            "plumb:time_to_first_token_seconds_count{model=\"%s\"}", "plumb:e2e_request_latency_seconds_count{model=\"%s\"} 3"};
    char id[64];
    const char *base = strrchr(model_path(), '/');
    snprintf(id, sizeof id, "%s", base ? base + 1 : model_path());
    if (strstr(id, ".gguf"))
        *strstr(id, ".gguf") = 0;
    for (size_t i = 0; i < 4; i++) {
        snprintf(want, sizeof want, series[i], id);
        if (!strstr(r.body, want))
            fail_msg("no '%s' in the metrics", want);
    }
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    char *log = test_read_file(s.log, NULL);
    assert_non_null(strstr(log, "id=tools-1 "));
    free(log);
}

/* The console: the page and its files under a strict policy (and off when
 * configured so), the operations API for admin keys only, its status
 * agreeing with /metrics, and the reports the page shows. */
static void test_console(void **state)
{
    (void)state;
    char home[600], keyfile[600];
    snprintf(home, sizeof home, "%s/console-home", test_tmpdir());
    setenv("PLUMB_HOME", home, 1);
    test_tmpfile("console-keys", keyfile, sizeof keyfile);
    const char *keys = "boss sk-console-boss-1 admin\nclerk sk-console-clerk-2\n";
    test_write_file(keyfile, keys, strlen(keys));
    char extra[800];
    snprintf(extra, sizeof extra, "-np 2 --ctx 256 --alias tiny --api-key-file %s", keyfile);
    struct server s = start_server(model_path(), extra);
    const char *boss = "Authorization: Bearer sk-console-boss-1\r\n", *clerk = "Authorization: Bearer sk-console-clerk-2\r\n";

    /* the page needs no key (it holds nothing); its files, with the policy */
    static const struct {
        const char *path, *type, *needle;
    } pages[] = {{"/", "text/html", "/ui/app.js"}, {"/ui/app.js", "text/javascript", "/v1/chat/completions"},
                 {"/ui/app.css", "text/css", "#messages"}};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        struct response r = request(s.port, "GET", pages[i].path, NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_non_null(strcasestr(r.headers, pages[i].type));
        assert_non_null(strcasestr(r.headers, "Content-Security-Policy: default-src 'none'; script-src 'self'"));
        assert_non_null(strcasestr(r.headers, "X-Content-Type-Options: nosniff"));
        assert_non_null(r.body);
        assert_non_null(strstr(r.body, pages[i].needle));
        response_free(&r);
    }
    expect_error(s.port, "GET", "/ui/missing.js", NULL, NULL, 404, "not_found");
    expect_error(s.port, "POST", "/", NULL, "{}", 405, NULL);

    /* the operations API: a key, and the admin flag */
    expect_error(s.port, "GET", "/v1/plumb/status", NULL, NULL, 401, "invalid_api_key");
    expect_error(s.port, "GET", "/v1/plumb/status", clerk, NULL, 403, "admin_required");
    expect_error(s.port, "GET", "/v1/plumb/usage", clerk, NULL, 403, "admin_required");
    expect_error(s.port, "POST", "/v1/plumb/status", boss, "{}", 405, NULL);
    expect_error(s.port, "GET", "/v1/plumb/nothing", boss, NULL, 404, "not_found");

    /* a request, then the status counts it as /metrics does */
    struct response r = request(s.port, "POST", "/v1/completions", clerk,
                                "{\"prompt\":\"the console\",\"max_tokens\":5,\"temperature\":0}");
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    const json_int_t made = json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens"));
    assert_true(made > 0);
    json_decref(v);
    response_free(&r);
    r = request(s.port, "GET", "/v1/plumb/status", boss, NULL);
    assert_int_equal(r.status, 200);
    json_t *st = body_json(&r);
    response_free(&r);
    assert_int_equal(json_integer_value(json_object_get(st, "generated_tokens")), made);
    assert_int_equal(json_integer_value(json_object_get(st, "slots")), 2);
    assert_true(json_is_true(json_object_get(st, "ready")));
    assert_true(json_is_true(json_object_get(st, "keys")));
    json_t *models = json_object_get(st, "models");
    assert_int_equal(json_array_size(models), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(models, 0), "id")), "tiny");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(models, 0), "generated_tokens")), made);
    /* what the command line named, and no digest for a file outside a store */
    assert_string_equal(json_string_value(json_object_get(json_array_get(models, 0), "source")), model_path());
    assert_true(json_is_null(json_object_get(json_array_get(models, 0), "digest")));
    /* the tokens just made, over the last minute and the last 5 */
    const double tps1 = json_real_value(json_object_get(st, "tokens_per_s_1m")),
                 tps5 = json_real_value(json_object_get(st, "tokens_per_s_5m"));
    assert_true(tps1 >= (double)made / 60 && tps1 <= (double)made / 50);
    assert_true(tps5 >= (double)made / 300 && tps5 <= (double)made / 290);
    json_t *ttft = json_object_get(st, "ttft");
    assert_int_equal(json_integer_value(json_object_get(ttft, "count")), 1);
    const double p50 = json_real_value(json_object_get(ttft, "p50")), sum = json_real_value(json_object_get(ttft, "sum"));
    assert_true(sum > 0 && p50 > 0 && p50 <= json_real_value(json_object_get(ttft, "p95")));
    bool seen = false, refused = false;
    json_t *q;
    size_t i;
    json_array_foreach(json_object_get(st, "requests"), i, q) {
        const char *ep = json_string_value(json_object_get(q, "endpoint"));
        const json_int_t status = json_integer_value(json_object_get(q, "status"));
        seen |= !strcmp(ep, "/v1/completions") && status == 200 && json_integer_value(json_object_get(q, "count")) == 1;
        refused |= !strcmp(ep, "/v1/plumb") && status == 403 && json_integer_value(json_object_get(q, "count")) == 2;
    }
    assert_true(seen && refused);
    json_decref(st);
    r = request(s.port, "GET", "/metrics", NULL, NULL);
    char want[128];
    snprintf(want, sizeof want, "plumb_generated_tokens_total %lld\n", (long long)made);
    assert_non_null(strstr(r.body, want));
    response_free(&r);

    /* the reports: usage from the store, doctor, the machine */
    r = request(s.port, "GET", "/v1/plumb/usage", boss, NULL);
    assert_int_equal(r.status, 200);
    v = body_json(&r);
    response_free(&r);
    json_t *by_key = json_object_get(v, "by_key");
    assert_int_equal(json_array_size(by_key), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(by_key, 0), "key")), "clerk");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(by_key, 0), "completion_tokens")), made);
    assert_int_equal(json_array_size(json_object_get(v, "by_model")), 1);
    assert_int_equal(json_array_size(json_object_get(v, "by_day")), 1);
    json_decref(v);
    r = request(s.port, "GET", "/v1/plumb/doctor", boss, NULL);
    assert_int_equal(r.status, 200);
    v = body_json(&r);
    response_free(&r);
    assert_true(json_array_size(json_object_get(v, "checks")) > 0);
    assert_true(json_is_string(json_object_get(v, "status")));
    json_decref(v);
    r = request(s.port, "GET", "/v1/plumb/machine", boss, NULL);
    assert_int_equal(r.status, 200);
    v = body_json(&r);
    response_free(&r);
    assert_true(json_integer_value(json_object_get(json_object_get(v, "memory"), "total_bytes")) > 0);
    assert_true(json_integer_value(json_object_get(json_object_get(v, "cpu"), "threads")) > 0);
    json_decref(v);
    assert_int_equal(stop_server(&s, SIGTERM), 0);

    /* --ui off: no page; a key file's third word must be "admin" */
    s = start_server(model_path(), "--ctx 256 --ui off");
    expect_error(s.port, "GET", "/", NULL, NULL, 404, "not_found");
    expect_error(s.port, "GET", "/ui/app.js", NULL, NULL, 404, "not_found");
    r = request(s.port, "GET", "/v1/plumb/status", NULL, NULL); /* no keys: whoever reaches it */
    assert_int_equal(r.status, 200);
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    const char *bad = "boss sk-console-boss-1 root\n";
    test_write_file(keyfile, bad, strlen(bad));
    char cmd[1200], *out;
    snprintf(cmd, sizeof cmd, "serve %s --port 0 --api-key-file %s", model_path(), keyfile);
    assert_int_equal(run_plumb(cmd, &out), 1);
    assert_non_null(strstr(out, "expected KEY, ID KEY or ID KEY admin"));
    free(out);
    unsetenv("PLUMB_HOME");
}

/* The tokens/s window: 10-second periods over 5 minutes, counted by when
 * the tokens came, old periods forgotten without a sweep. */
static void test_token_rate(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m);
    const double t0 = 100000.0; /* a period's start */
    assert_true(metrics_rate(&m, t0, 60) == 0);
    metrics_generated(&m, t0 + 1, 60);  /* period 0 */
    metrics_generated(&m, t0 + 25, 40); /* period 2 */
    /* at t0 + 30 (period 3 just begun): 100 tokens over the last 5 whole periods and 0 s of the current */
    assert_float_equal(metrics_rate(&m, t0 + 30, 60), 100.0 / 50, 1e-9);
    assert_float_equal(metrics_rate(&m, t0 + 30, 300), 100.0 / 290, 1e-9);
    /* 5 s into period 3: the current period counts for the 5 s that passed */
    metrics_generated(&m, t0 + 35, 10);
    assert_float_equal(metrics_rate(&m, t0 + 35, 60), 110.0 / 55, 1e-9);
    /* a minute on, period 0 has left the 1-minute window, not the 5-minute one */
    assert_float_equal(metrics_rate(&m, t0 + 65, 60), 50.0 / 55, 1e-9);
    assert_float_equal(metrics_rate(&m, t0 + 65, 300), 110.0 / 295, 1e-9);
    /* 5 minutes on, the ring slot of period 0 is reused: its old count is gone */
    metrics_generated(&m, t0 + 301, 7); /* period 30: period 0's slot */
    assert_float_equal(metrics_rate(&m, t0 + 305, 300), (40.0 + 10 + 7) / 295, 1e-9);
    assert_float_equal(metrics_rate(&m, t0 + 305, 10), 7.0 / 5, 1e-9);
    /* after a quiet hour, nothing */
    assert_true(metrics_rate(&m, t0 + 3600, 300) == 0);
    metrics_destroy(&m);
}

static int cpus_usable(void)
{
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

/* Unsafe settings: a host beyond loopback without keys is refused unless
 * --insecure (it was served silently); with it, more threads than CPUs, a
 * context beyond the model's training context and a key file others can
 * read are warned about in the log. */
static void test_unsafe_settings(void **state)
{
    (void)state;
    char out[600], cmd[2048];
    test_tmpfile("exposed.txt", out, sizeof out);
    snprintf(cmd, sizeof cmd, "timeout -s KILL 20 %s serve %s --host 0.0.0.0 --port 0 -np 1 --ctx 128 >'%s' 2>&1",
             plumb_bin, model_path(), out);
    int st = system(cmd);
    char *text = test_read_file(out, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || !strstr(text, "--insecure") || !strstr(text, "--api-key-file"))
        fail_msg("serve --host 0.0.0.0 without keys: exit %d:\n%s", WIFEXITED(st) ? WEXITSTATUS(st) : -1, text);
    free(text);

    char extra[1024];
    snprintf(extra, sizeof extra, "--host 0.0.0.0 --insecure -np 1 --ctx 1024 -t %d", 4 * cpus_usable());
    struct server s = start_server(model_path(), extra);
    struct response r = request(s.port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.status, 200);
    response_free(&r);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    text = test_read_file(s.log, NULL);
    const char *want[] = {"without API keys (--insecure)", "threads on", "exceeds the model's training context 512"};
    for (size_t i = 0; i < 3; i++)
        if (!strstr(text, want[i]))
            fail_msg("the log does not warn '%s':\n%s", want[i], text);
    free(text);

    char keyfile[512];
    test_tmpfile("open-keys.txt", keyfile, sizeof keyfile);
    test_write_file(keyfile, "k sk-test-open-0001\n", 19);
    chmod(keyfile, 0644);
    snprintf(extra, sizeof extra, "-np 1 --ctx 128 --api-key-file %s", keyfile);
    s = start_server(model_path(), extra);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    text = test_read_file(s.log, NULL);
    if (!strstr(text, "mode 644") || !strstr(text, "chmod 600"))
        fail_msg("the log does not warn of the key file's mode:\n%s", text);
    free(text);
}

/* ---- models on demand, presets (issue 19) ---- */

/* plumb ps --json against the server on port (with args, e.g. a key
 * file), parsed; fails the test unless it exits 0. */
static json_t *ps_json(int port, const char *args)
{
    char cmd[1200], *out;
    snprintf(cmd, sizeof cmd, "ps --json --url http://127.0.0.1:%d %s", port, args ? args : "");
    if (run_plumb(cmd, &out) != 0)
        fail_msg("plumb ps: %s", out);
    json_t *v = test_parse_json(out);
    free(out);
    return v;
}

/* The object of model id in plumb ps's list. */
static json_t *ps_model(json_t *ps, const char *id)
{
    json_t *list = json_object_get(ps, "models");
    for (size_t i = 0; i < json_array_size(list); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(list, i), "id")), id))
            return json_array_get(list, i);
    fail_msg("plumb ps has no model '%s'", id);
    return NULL;
}

static const char *ps_state(json_t *ps, const char *id)
{
    return json_string_value(json_object_get(ps_model(ps, id), "state"));
}

/* Fails unless plumb ps shows the three models in these states (and
 * what the models use within the limit). */
static void expect_states(int port, const char *a, const char *b, const char *c)
{
    json_t *ps = ps_json(port, NULL);
    const char *want[3] = {a, b, c}, *ids[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        if (strcmp(ps_state(ps, ids[i]), want[i]) != 0)
            fail_msg("model %s is %s, expected %s", ids[i], ps_state(ps, ids[i]), want[i]);
    json_t *mem = json_object_get(ps, "memory");
    assert_true(json_integer_value(json_object_get(mem, "used_bytes")) <=
                json_integer_value(json_object_get(mem, "limit_bytes")));
    json_decref(ps);
}

/* Polls plumb ps until model id is in state with busy slots busy (-1:
 * any), 10 s at most. */
static void wait_state(int port, const char *id, const char *state, int busy)
{
    for (int i = 0; i < 200; i++) {
        json_t *ps = ps_json(port, NULL);
        json_t *m = ps_model(ps, id);
        bool ok = !strcmp(json_string_value(json_object_get(m, "state")), state) &&
                  (busy < 0 || json_integer_value(json_object_get(m, "slots_busy")) == busy);
        json_decref(ps);
        if (ok)
            return;
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    fail_msg("model %s never became %s (%d busy)", id, state, busy);
}

/* A short completion of model (more: fields to add); its status. */
static int complete(int port, const char *model, const char *more)
{
    char body[512];
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"Once\",\"max_tokens\":3%s}", model, more ? more : "");
    struct response r = request(port, "POST", "/v1/completions", NULL, body);
    int st = r.status;
    response_free(&r);
    return st;
}

/* A streamed completion left running: the connection, once its answer
 * has begun (close it to cancel the request). */
static int open_stream(int port, const char *model)
{
    int fd = connect_to(port);
    char body[300], head[600];
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"a long story\",\"max_tokens\":8000,\"ignore_eos\":true,"
             "\"stream\":true}", model);
    snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    send_all(fd, head, strlen(head));
    char buf[64];
    ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(k > 12);
    buf[k] = '\0';
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
        fail_msg("the stream did not start: %s", buf);
    return fd;
}

/* Three models loaded on demand within a memory limit that holds two:
 * each loads at its first request, the third unloads the least recently
 * used, a 503 (model_memory) when the two loaded are busy, keep_alive 0
 * in a request unloads after it, plumb load / unload, and plumb ps shows
 * the state at each point. */
static void test_models_on_demand(void **state)
{
    (void)state;
    const char *files[3] = {test_tiny_model("Q8_0"), test_tiny_model("Q4_0"), test_tiny_model("F16")};
    char ini[512], text[4096], extra[700];
    test_tmpfile("demand.ini", ini, sizeof ini);
    uint64_t limit = 1ull << 40;
    json_int_t mem[3] = {0};
    struct server s;
    for (int round = 0; round < 2; round++) {
        int n = snprintf(text, sizeof text, "[server]\nmemory_limit = %llu\n", (unsigned long long)limit);
        for (int i = 0; i < 3; i++)
            n += snprintf(text + n, sizeof text - (size_t)n, "[model %c]\nsource = %s\nctx = 8192\nparallel = 1\n",
                          'a' + i, files[i]);
        test_write_file(ini, text, strlen(text));
        snprintf(extra, sizeof extra, "--config %s --threads 1", ini);
        s = start_server("", extra);
        /* nothing loaded at first: every model listed, with its estimate */
        json_t *ps = ps_json(s.port, NULL);
        for (int i = 0; i < 3; i++) {
            char id[2] = {(char)('a' + i), 0};
            json_t *m = ps_model(ps, id);
            assert_string_equal(json_string_value(json_object_get(m, "state")), "unloaded");
            assert_string_equal(json_string_value(json_object_get(m, "load")), "demand");
            assert_true(json_is_null(json_object_get(m, "idle_s")));
            assert_true(json_real_value(json_object_get(m, "keep_alive_s")) == 300);
            mem[i] = json_integer_value(json_object_get(m, "memory_bytes"));
            assert_true(mem[i] > 0);
        }
        const json_int_t base = json_integer_value(json_object_get(json_object_get(ps, "memory"), "used_bytes"));
        assert_true(base > 0); /* the process's own */
        json_decref(ps);
        if (round == 1)
            break;
        assert_int_equal(stop_server(&s, SIGTERM), 0);
        /* the limit: any two fit, not three */
        json_int_t lo = mem[0] < mem[1] ? (mem[0] < mem[2] ? mem[0] : mem[2]) : (mem[1] < mem[2] ? mem[1] : mem[2]);
        limit = (uint64_t)(base + mem[0] + mem[1] + mem[2] - lo + lo / 2);
    }
    struct response r = request(s.port, "GET", "/v1/models", NULL, NULL);
    json_t *v = body_json(&r);
    assert_int_equal(json_array_size(json_object_get(v, "data")), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(v, "data"), 0), "status")),
                        "unloaded");
    json_decref(v);
    response_free(&r);

    assert_int_equal(complete(s.port, "a", NULL), 200);
    expect_states(s.port, "loaded", "unloaded", "unloaded");
    json_t *ps = ps_json(s.port, NULL);
    json_t *ma = ps_model(ps, "a");
    assert_true(json_is_number(json_object_get(ma, "idle_s")));
    assert_true(json_real_value(json_object_get(ma, "expires_in_s")) <= 300);
    assert_int_equal(json_integer_value(json_object_get(ma, "slots")), 1);
    json_decref(ps);
    assert_int_equal(complete(s.port, "b", NULL), 200);
    expect_states(s.port, "loaded", "loaded", "unloaded");
    /* the third: a, the least recently used, makes room */
    assert_int_equal(complete(s.port, "c", NULL), 200);
    expect_states(s.port, "unloaded", "loaded", "loaded");

    /* b and c busy: nothing can be freed for a */
    int fb = open_stream(s.port, "b"), fc = open_stream(s.port, "c");
    wait_state(s.port, "b", "loaded", 1);
    wait_state(s.port, "c", "loaded", 1);
    ps = ps_json(s.port, NULL);
    assert_true(json_is_null(json_object_get(ps_model(ps, "b"), "idle_s")));
    assert_true(json_is_null(json_object_get(ps_model(ps, "c"), "expires_in_s")));
    json_decref(ps);
    r = request(s.port, "POST", "/v1/completions", NULL, "{\"model\":\"a\",\"prompt\":\"Once\",\"max_tokens\":3}");
    if (r.status != 503 || !strstr(r.body, "\"model_memory\"") || !strcasestr(r.headers, "\r\nRetry-After:"))
        fail_msg("status %d: %s\n%s", r.status, r.headers, r.body);
    response_free(&r);
    expect_states(s.port, "unloaded", "loaded", "loaded");
    /* the CLI says so too */
    char args[600], *out;
    snprintf(args, sizeof args, "load a --url http://127.0.0.1:%d", s.port);
    assert_int_equal(run_plumb(args, &out), 1);
    if (!strstr(out, "needs about"))
        fail_msg("%s", out);
    free(out);
    close(fb);
    close(fc);
    wait_state(s.port, "b", "loaded", 0);
    wait_state(s.port, "c", "loaded", 0);

    /* keep_alive 0: unloaded once the request has ended */
    assert_int_equal(complete(s.port, "a", ",\"keep_alive\":0"), 200);
    wait_state(s.port, "a", "unloaded", -1);
    /* a duration string sets how long it stays */
    assert_int_equal(complete(s.port, "a", ",\"keep_alive\":\"1h\""), 200);
    /* it counts from the request's end, when its connection is done (a
     * moment after the client has the answer): until then no expiry */
    for (int i = 0;; i++) {
        ps = ps_json(s.port, NULL);
        const json_t *exp = json_object_get(ps_model(ps, "a"), "expires_in_s");
        if (!json_is_null(exp) || i == 200) {
            assert_true(json_real_value(exp) > 3000);
            json_decref(ps);
            break;
        }
        json_decref(ps);
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    r = request(s.port, "POST", "/v1/completions", NULL,
                "{\"model\":\"a\",\"prompt\":\"Once\",\"max_tokens\":3,\"keep_alive\":\"soon\"}");
    if (r.status != 400 || !strstr(r.body, "'keep_alive'"))
        fail_msg("status %d: %s", r.status, r.body);
    response_free(&r);

    /* plumb unload and load, by hand */
    snprintf(args, sizeof args, "unload a --url http://127.0.0.1:%d", s.port);
    if (run_plumb(args, &out) != 0)
        fail_msg("%s", out);
    free(out);
    wait_state(s.port, "a", "unloaded", -1);
    snprintf(args, sizeof args, "load a --url http://127.0.0.1:%d --json", s.port);
    if (run_plumb(args, &out) != 0)
        fail_msg("%s", out);
    v = test_parse_json(out);
    assert_string_equal(json_string_value(json_object_get(v, "state")), "loaded");
    json_decref(v);
    free(out);
    json_t *after = ps_json(s.port, NULL);
    int n_loaded = 0;
    for (int i = 0; i < 3; i++) {
        char id[2] = {(char)('a' + i), 0};
        n_loaded += !strcmp(ps_state(after, id), "loaded");
    }
    assert_int_equal(n_loaded, 2);
    json_decref(after);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    char *log = test_read_file(s.log, NULL);
    if (!strstr(log, "unloaded 'a'") || !strstr(log, "to make room for 'c'") || !strstr(log, "keep_alive 0"))
        fail_msg("log:\n%s", log);
    free(log);
}

/* The chat completion of a model's answer text (temperature and so on in
 * more, after the messages). */
static char *chat_of(int port, const char *model, const char *system, const char *more)
{
    char body[1024], sys[300] = "";
    if (system)
        snprintf(sys, sizeof sys, "{\"role\":\"system\",\"content\":\"%s\"},", system);
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"messages\":[%s{\"role\":\"user\",\"content\":\"Hello there\"}],"
             "\"max_tokens\":8%s}", model, sys, more ? more : "");
    struct response r = request(port, "POST", "/v1/chat/completions", NULL, body);
    if (r.status != 200)
        fail_msg("%s: %d %s", model, r.status, r.body);
    char *t = answer_text(&r, NULL);
    response_free(&r);
    return t;
}

/* Presets: a model's system prompt and sampling apply to requests that
 * leave them out, a request's own values win unless fixed, max_tokens
 * caps; four names on one file share one loaded copy (loaded once,
 * counted once). */
static void test_presets(void **state)
{
    (void)state;
    const char *f = test_tiny_model("Q8_0");
    char ini[512], text[2048], extra[700];
    test_tmpfile("presets.ini", ini, sizeof ini);
    snprintf(text, sizeof text,
             "[model plain]\nsource = %s\nctx = 256\nparallel = 2\n"
             "[model terse]\nsource = %s\nctx = 256\nparallel = 2\nsystem = You are terse.\ntemperature = 0\n"
             "fixed = temperature, system\n"
             "[model warm]\nsource = %s\nctx = 256\nparallel = 2\nsystem = You are terse.\ntemperature = 1.5\n"
             "seed = 5\n"
             "[model capped]\nsource = %s\nctx = 256\nparallel = 2\nmax_tokens = 3\nstop = \"zzzz\", \"yyyy\"\n",
             f, f, f, f);
    test_write_file(ini, text, strlen(text));
    snprintf(extra, sizeof extra, "--config %s", ini);
    struct server s = start_server("", extra);
    char *ref = chat_of(s.port, "plain", "You are terse.", ",\"temperature\":0");
    /* the preset's system prompt, and its fixed temperature over the request's */
    char *t1 = chat_of(s.port, "terse", NULL, ",\"temperature\":2,\"seed\":1");
    assert_string_equal(t1, ref);
    /* a fixed system prompt replaces the request's */
    char *t2 = chat_of(s.port, "terse", "Be verbose.", ",\"temperature\":2");
    assert_string_equal(t2, ref);
    /* not fixed: the request's temperature wins, the preset's system applies */
    char *t3 = chat_of(s.port, "warm", NULL, ",\"temperature\":0");
    assert_string_equal(t3, ref);
    /* nothing asked: the preset's temperature and seed */
    char *t4 = chat_of(s.port, "warm", NULL, NULL);
    char *t5 = chat_of(s.port, "plain", "You are terse.", ",\"temperature\":1.5,\"seed\":5");
    assert_string_equal(t4, t5);
    assert_string_not_equal(t4, ref);
    /* max_tokens caps */
    struct response r = request(s.port, "POST", "/v1/completions", NULL,
                                "{\"model\":\"capped\",\"prompt\":\"Once\",\"max_tokens\":50,\"ignore_eos\":true}");
    assert_int_equal(r.status, 200);
    json_t *v = body_json(&r);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")), 3);
    json_decref(v);
    response_free(&r);

    /* one copy for the four names */
    json_t *ps = ps_json(s.port, NULL);
    const char *names[] = {"plain", "terse", "warm", "capped"};
    const json_int_t one = json_integer_value(json_object_get(ps_model(ps, "plain"), "memory_bytes"));
    for (int i = 0; i < 4; i++) {
        json_t *m = ps_model(ps, names[i]);
        assert_string_equal(json_string_value(json_object_get(m, "state")), "loaded");
        assert_int_equal(json_integer_value(json_object_get(m, "memory_bytes")), one);
    }
    const json_int_t used = json_integer_value(json_object_get(json_object_get(ps, "memory"), "used_bytes"));
    assert_int_equal(used, ENGINE_PROCESS_BYTES + one); /* the process's own and one copy */
    json_t *preset = json_object_get(ps_model(ps, "terse"), "preset");
    assert_string_equal(json_string_value(json_object_get(preset, "system")), "You are terse.");
    assert_true(json_real_value(json_object_get(preset, "temperature")) == 0);
    assert_true(json_is_null(json_object_get(preset, "top_p")));
    json_t *fixed = json_object_get(preset, "fixed");
    assert_int_equal(json_array_size(fixed), 2);
    assert_string_equal(json_string_value(json_array_get(fixed, 0)), "system");
    assert_string_equal(json_string_value(json_array_get(fixed, 1)), "temperature");
    json_t *stop = json_object_get(json_object_get(ps_model(ps, "capped"), "preset"), "stop");
    assert_int_equal(json_array_size(stop), 2);
    assert_string_equal(json_string_value(json_array_get(stop, 1)), "yyyy");
    json_decref(ps);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    char *log = test_read_file(s.log, NULL);
    const char *first = strstr(log, "loaded 'plain'");
    if (!first || strstr(first + 1, "plumb serve: loaded '"))
        fail_msg("the file was not loaded exactly once:\n%s", log);
    free(log);
    free(ref);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
    free(t5);
}

/* The operations API and its CLI with keys: no key 401, a key without the
 * admin flag 403, an admin key (or the configuration's key file) lists;
 * a model loaded at start can be unloaded and comes back on demand;
 * unknown names 404; no server is an error that says so. */
static void test_ps_keys(void **state)
{
    (void)state;
    char keys[600], user[600], ini[600], text[1200], extra[800], args[1600], *out;
    test_tmpfile("ops-keys", keys, sizeof keys);
    test_tmpfile("ops-user-key", user, sizeof user);
    const char *k = "user sk-user-0000001\nboss sk-boss-0000001 admin\n";
    test_write_file(keys, k, strlen(k));
    chmod(keys, 0600);
    test_write_file(user, "user sk-user-0000001\n", 21);
    snprintf(extra, sizeof extra, "-np 1 --ctx 128 --alias tiny --api-key-file %s", keys);
    struct server s = start_server(model_path(), extra);
    snprintf(args, sizeof args, "ps --url http://127.0.0.1:%d", s.port);
    assert_int_equal(run_plumb(args, &out), 1);
    if (!strstr(out, "needs an API key"))
        fail_msg("%s", out);
    free(out);
    snprintf(args, sizeof args, "ps --url http://127.0.0.1:%d --api-key-file %s", s.port, user);
    assert_int_equal(run_plumb(args, &out), 1);
    if (!strstr(out, "not an admin key"))
        fail_msg("%s", out);
    free(out);
    char keyarg[700];
    snprintf(keyarg, sizeof keyarg, "--api-key-file %s", keys);
    json_t *ps = ps_json(s.port, keyarg);
    json_t *m = ps_model(ps, "tiny");
    assert_string_equal(json_string_value(json_object_get(m, "state")), "loaded");
    assert_string_equal(json_string_value(json_object_get(m, "load")), "start");
    assert_true(json_real_value(json_object_get(m, "keep_alive_s")) == -1);
    assert_true(json_is_null(json_object_get(m, "expires_in_s")));
    json_decref(ps);
    /* the table, from the configuration's address and key file */
    test_tmpfile("ops.ini", ini, sizeof ini);
    snprintf(text, sizeof text, "[server]\nport = %d\napi_key_file = %s\n[model tiny]\nsource = %s\n", s.port, keys,
             model_path());
    test_write_file(ini, text, strlen(text));
    snprintf(args, sizeof args, "ps --config %s", ini);
    if (run_plumb(args, &out) != 0 || !strstr(out, "MODEL") || !strstr(out, "tiny ") || !strstr(out, "loaded"))
        fail_msg("%s", out);
    free(out);
    snprintf(args, sizeof args, "load nope --config %s", ini);
    assert_int_equal(run_plumb(args, &out), 1);
    if (!strstr(out, "serves no model 'nope'"))
        fail_msg("%s", out);
    free(out);
    /* unloaded by hand, back at the next request */
    snprintf(args, sizeof args, "unload tiny --config %s", ini);
    if (run_plumb(args, &out) != 0 || !strstr(out, "tiny: unloaded"))
        fail_msg("%s", out);
    free(out);
    const char *hdr = "Authorization: Bearer sk-user-0000001\r\n";
    struct response r = request(s.port, "POST", "/v1/completions", hdr, "{\"prompt\":\"Once\",\"max_tokens\":2}");
    assert_int_equal(r.status, 200);
    response_free(&r);
    r = request(s.port, "GET", "/v1/plumb/models", hdr, NULL);
    assert_int_equal(r.status, 403);
    response_free(&r);
    ps = ps_json(s.port, keyarg);
    assert_string_equal(ps_state(ps, "tiny"), "loaded");
    json_decref(ps);
    assert_int_equal(stop_server(&s, SIGTERM), 0);
    /* nothing listening there now */
    snprintf(args, sizeof args, "ps --url http://127.0.0.1:%d --json", s.port);
    assert_int_equal(run_plumb(args, &out), 1);
    if (!strstr(out, "nothing answers at") || !strstr(out, "\"code\":\"failed\""))
        fail_msg("%s", out);
    free(out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_server PATH_TO_PLUMB\n");
        return 2;
    }
    plumb_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_shapes),         cmocka_unit_test(test_errors),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_concurrent_streams), cmocka_unit_test(test_hostile_clients),
        cmocka_unit_test(test_request_timeout),    cmocka_unit_test(test_sigterm_drain),
        cmocka_unit_test(test_config_hot_swap),
        cmocka_unit_test(test_store_name),
        cmocka_unit_test(test_bench_keys),
        cmocka_unit_test(test_bench_shared_prefix), cmocka_unit_test(test_usage_accounting),
        cmocka_unit_test(test_same_through_every_path),
        cmocka_unit_test(test_memory_refused),
        cmocka_unit_test(test_reasoning_content),
        cmocka_unit_test(test_idle_and_dripping_connections),
        cmocka_unit_test(test_pipelined_requests),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_bad_content_length),
        cmocka_unit_test(test_unsupported_fields),
        cmocka_unit_test(test_applications),
        cmocka_unit_test(test_unsafe_settings),
        cmocka_unit_test(test_console),
        cmocka_unit_test(test_token_rate),
        cmocka_unit_test(test_models_on_demand),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_ps_keys),
    };
    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
