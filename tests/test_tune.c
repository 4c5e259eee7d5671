/* plumb tune on a tiny model: it tries settings within its budget, names
 * one that meets loose targets, writes it into a configuration, and a
 * server started from that file then meets the same targets under the
 * same load; targets nothing can meet write nothing and fail. */
#define _GNU_SOURCE
#include "plumb/config.h"
#include "testutil.h"

#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *plumb_bin;

/* plumb ARGS..., its stdout into *out (stderr into a log); the exit status. */
static int run_plumb(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_plumb(char **out, const char *fmt, ...)
{
    char args[2048], path[600], cmd[3072];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "%s/tune-out.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s/tune-err.txt", plumb_bin, args, path, test_tmpdir());
    int st = system(cmd);
    *out = test_read_file(path, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double num(const json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

/* plumb serve --config cfg on a free port; its pid and port. */
static pid_t serve(const char *cfg, int *port)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        char log[700];
        snprintf(log, sizeof log, "%s/tune-serve.log", test_tmpdir());
        if (!freopen(log, "w", stderr))
            _exit(127);
        execl(plumb_bin, plumb_bin, "serve", "--config", cfg, "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    test_track_process(pid);
    char line[256];
    size_t n = 0;
    struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
    while (n < sizeof line - 1 && poll(&pfd, 1, 30000) > 0 && read(pipefd[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = 0;
    close(pipefd[0]);
    const char *colon = strrchr(line, ':');
    if (!strstr(line, "listening on") || !colon)
        fail_msg("plumb serve --config %s did not start: '%s'", cfg, line);
    *port = atoi(colon + 1);
    return pid;
}

static void test_tune_writes_what_serves(void **state)
{
    (void)state;
    const char *model = test_tiny_model("Q8_0");
    char cfg[600], home[600];
    test_tmpfile("tuned.ini", cfg, sizeof cfg);
    unlink(cfg);
    snprintf(home, sizeof home, "%s/tune-home", test_tmpdir());
    setenv("PLUMB_HOME", home, 1);
    /* loose targets a tiny model meets on any machine, in a short budget */
    const char *load = "--users 2 --prompt-tokens 32 --gen-tokens 8 --requests 1";
    char *out;
    const double t0 = now_s();
    assert_int_equal(run_plumb(&out, "tune %s %s --slo-ttft 20 --slo-tps 1 --budget 8s --write %s --alias tiny --json",
                               model, load, cfg),
                     0);
    const double took = now_s() - t0;
    json_t *v = test_parse_json(out);
    free(out);
    json_t *trials = json_object_get(v, "trials");
    const size_t n = json_array_size(trials);
    assert_true(n >= 2);
    double longest = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(trials, i);
        assert_true(json_is_true(json_object_get(t, "ran")));
        assert_int_equal(json_integer_value(json_object_get(t, "requests")), 2);
        assert_true(num(t, "memory_bytes") > 0);
        if (num(t, "seconds") > longest)
            longest = num(t, "seconds");
    }
    /* no trial starts once the budget is spent */
    assert_true(took < 8 + 2 * longest + 5);
    assert_true(json_is_true(json_object_get(v, "met")));
    json_t *best = json_array_get(trials, (size_t)json_integer_value(json_object_get(v, "best")));
    assert_true(json_is_true(json_object_get(best, "meets")));
    assert_true(num(best, "t_s_per_user") >= 1 && num(best, "ttft_p95_s") <= 20);
    json_t *written = json_object_get(v, "written");
    assert_string_equal(json_string_value(json_object_get(written, "file")), cfg);
    assert_string_equal(json_string_value(json_object_get(written, "section")), "tiny");

    /* the file holds the winner */
    static struct config c;
    pb_err err = {0};
    config_defaults(&c);
    if (config_load(cfg, &c, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(c.n_models, 1);
    assert_string_equal(c.models[0].alias, "tiny");
    assert_int_equal(c.models[0].parallel, json_integer_value(json_object_get(best, "slots")));
    assert_int_equal(c.models[0].batch, json_integer_value(json_object_get(best, "batch")));
    assert_true(c.models[0].step_ms == num(best, "step_ms"));
    assert_string_equal(pb_kv_type_name((enum pb_kv_type)c.models[0].kv_type),
                        json_string_value(json_object_get(best, "kv_type")));
    assert_int_equal(c.threads, json_integer_value(json_object_get(best, "threads")));
    char real[4096];
    assert_non_null(realpath(model, real));
    assert_string_equal(c.models[0].source, real);
    json_decref(v);

    /* served from the file, the same load meets the same targets */
    int port;
    pid_t pid = serve(cfg, &port);
    assert_int_equal(run_plumb(&out, "bench --serve http://127.0.0.1:%d --concurrency 2 --prompt-tokens 32 "
                                     "--gen-tokens 8 --requests 2 --json", port),
                     0);
    v = test_parse_json(out);
    free(out);
    json_t *level = json_array_get(json_object_get(v, "levels"), 0);
    assert_non_null(level);
    assert_int_equal(json_integer_value(json_object_get(level, "failed")), 0);
    assert_int_equal(json_integer_value(json_object_get(level, "requests")), 4);
    assert_true(num(level, "t_s_per_user") >= 1 && num(level, "ttft_p95_s") <= 20);
    json_decref(v);
    test_untrack_process(pid);
    kill(pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* a target nothing meets: exit 1, nothing written */
    char cfg2[600];
    test_tmpfile("never.ini", cfg2, sizeof cfg2);
    unlink(cfg2);
    assert_int_equal(run_plumb(&out, "tune %s %s --slo-tps 1000000 --budget 2s --write %s", model, load, cfg2), 1);
    assert_non_null(strstr(out, "no setting met the targets"));
    assert_non_null(strstr(out, "not written"));
    free(out);
    assert_int_equal(access(cfg2, F_OK), -1);
    unsetenv("PLUMB_HOME");
}

static void test_tune_usage(void **state)
{
    (void)state;
    char *out;
    const char *bad[] = {"tune", "tune m.gguf --users 0", "tune m.gguf --budget 0", "tune m.gguf --budget 5x",
                         "tune m.gguf --gen-tokens 1", "tune m.gguf --write -", "tune m.gguf --alias 'a b'",
                         "tune a.gguf b.gguf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_plumb(&out, "%s", bad[i]);
        if (rc != 2)
            fail_msg("'%s': exit %d, expected 2", bad[i], rc);
        free(out);
    }
    assert_int_equal(run_plumb(&out, "tune /nonexistent/m.gguf --budget 1s"), 1);
    free(out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tune PATH_TO_PLUMB\n");
        return 2;
    }
    plumb_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tune_usage),
        cmocka_unit_test(test_tune_writes_what_serves),
    };
    return cmocka_run_group_tests_name("tune", tests, NULL, NULL);
}
