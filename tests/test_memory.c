#define _GNU_SOURCE
/* The memory estimate against what an engine really takes.
 *
 * For several shapes, file types, contexts, slot counts and KV cache
 * types: a child process opens the engine and fills every slot's context
 * (a prompt of n_ctx - 1 tokens in each, all at once, so that every KV
 * page, activation buffer and scratch is touched as in the worst case),
 * then reports its peak resident set over the one it had before opening.
 * That growth must be within 10 % of the estimate less the process's own
 * share (PROCESS_BYTES, a constant of the engine: the test process is not
 * plumb, so it is checked on the plumb binary instead, by comparing
 * `plumb run`'s peak RSS with `plumb show`'s estimate for a small model).
 *
 * Skipped under the sanitizers (their shadow memory is in every figure).
 * argv[1] is the plumb binary. */
#include "testutil.h"

#include "plumb/engine.h"
#include "plumb/synth.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *plumb_bin;

/* A status line of /proc/self/status in bytes ("VmRSS:", "VmHWM:"). */
static uint64_t status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && sscanf(line + kl, " %llu", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return (uint64_t)kb * 1024;
}

struct filled {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
};

static void on_done(void *user, const struct engine_result *r)
{
    struct filled *f = user;
    (void)r;
    pthread_mutex_lock(&f->mu);
    f->left--;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* In the child: opens, fills, writes "growth estimate" to fd. */
static int child(const char *path, const struct engine_params *p, int fd)
{
    pb_err err;
    const uint64_t before = status_bytes("VmRSS:");
    struct engine *e;
    if (engine_open(path, p, &e, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    struct engine_info in;
    engine_get_info(e, &in);
    const int64_t n = in.n_ctx - 1;
    int32_t *prompt = malloc((size_t)n * sizeof *prompt);
    struct filled f = {.left = p->n_slots};
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    struct engine_request **r = calloc((size_t)p->n_slots, sizeof *r);
    const struct engine_events ev = {&f, NULL, on_done};
    for (int s = 0; s < p->n_slots; s++) {
        for (int64_t i = 0; i < n; i++) /* a prompt of its own per slot: nothing shared */
            prompt[i] = (int32_t)((i * 7919 + (int64_t)s * 104729 + 13) % in.n_vocab);
        struct engine_request_params rp = engine_request_defaults();
        rp.n_predict = 1;
        rp.sampling.temp = 0;
        if (engine_submit(e, prompt, (size_t)n, &rp, &ev, &r[s], &err)) {
            fprintf(stderr, "submit: %s\n", err.msg);
            return 1;
        }
    }
    pthread_mutex_lock(&f.mu);
    while (f.left > 0)
        pthread_cond_wait(&f.cv, &f.mu);
    pthread_mutex_unlock(&f.mu);
    struct engine_stats st;
    engine_get_stats(e, &st);
    const uint64_t peak = status_bytes("VmHWM:");
    char line[256];
    int len = snprintf(line, sizeof line, "%llu %lld\n", (unsigned long long)(peak - before), (long long)st.kv_used);
    (void)!write(fd, line, (size_t)len);
    for (int s = 0; s < p->n_slots; s++)
        engine_release(e, r[s]);
    engine_close(e);
    free(r);
    free(prompt);
    return 0;
}

/* Runs the child for one configuration and checks its figures. */
static void check_config(const char *path, const char *what, int64_t n_ctx, int slots, enum pb_kv_type kv)
{
    struct engine_params p = engine_defaults();
    p.n_ctx = n_ctx;
    p.n_slots = slots;
    p.kv_type = kv;
    p.n_threads = 2;
    struct engine_memory est;
    pb_err err;
    assert_int_equal(engine_estimate(path, &p, &est, &err), 0);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        _exit(child(path, &p, pfd[1]));
    }
    close(pfd[1]);
    char buf[256] = "";
    ssize_t got = read(pfd[0], buf, sizeof buf - 1);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0 && got > 0);
    buf[got] = 0;
    unsigned long long growth;
    long long kv_used;
    assert_int_equal(sscanf(buf, "%llu %lld", &growth, &kv_used), 2);
    /* the estimate less the process's constant share: what opening and
     * filling the engine adds to a process */
    const double want = (double)(est.total - ENGINE_PROCESS_BYTES);
    const double ratio = (double)growth / want;
    print_message("  %-34s ctx %5lld x %d %-4s: grew %7.1f MiB, estimate %7.1f MiB (weights %.1f, KV %.1f, "
                  "buffers %.1f, tokenizer %.1f): %+.1f %%\n",
                  what, (long long)n_ctx, slots, pb_kv_type_name(kv), growth / 1048576.0, want / 1048576.0,
                  est.weights / 1048576.0, est.kv / 1048576.0, est.compute / 1048576.0,
                  (est.runtime - ENGINE_PROCESS_BYTES) / 1048576.0, 100 * (ratio - 1));
    assert_int_equal(kv_used, (long long)slots * (n_ctx - 1)); /* every slot was filled */
    assert_true(ratio >= 0.9 && ratio <= 1.1);
}

static const char *make_model(const char *name, const char *dims, enum pb_ftype ft)
{
    static char paths[4][512];
    static int n;
    char *path = paths[n++ % 4];
    test_tmpfile(name, path, 512);
    struct synth_params sp = {.seed = 5, .n_threads = 2, .ftype = ft};
    sp.shape = *synth_shape_find("tiny");
    pb_err err;
    uint64_t bytes;
    if (synth_parse_dims(dims, &sp.shape, &err) || synth_write(path, &sp, &bytes, &err))
        fail_msg("%s", err.msg);
    return path;
}

static void test_estimate_against_rss(void **state)
{
    (void)state;
    const char *a8 = make_model("mem-a-q8.gguf", "dim=512,layers=8,heads=8,kv_heads=4,ffn=1536,vocab=4096,ctx=4096",
                                PB_FTYPE_Q8_0);
    check_config(a8, "llama 27M Q8_0", 1536, 1, PB_KV_F16);
    const char *a4 = make_model("mem-a-q4.gguf", "dim=512,layers=8,heads=8,kv_heads=4,ffn=1536,vocab=4096,ctx=4096",
                                PB_FTYPE_Q4_0);
    check_config(a4, "llama 27M Q4_0", 512, 4, PB_KV_Q8_0);
    const char *b = make_model("mem-b.gguf",
                               "arch=qwen3,dim=384,layers=6,heads=6,kv_heads=2,head_dim=64,ffn=1024,vocab=8192,ctx=4096",
                               PB_FTYPE_Q4_K_M);
    check_config(b, "qwen3 17M Q4_K_M", 1024, 2, PB_KV_F32);
    /* sliding-window layers hold a ring of their window (and a batch) */
    const char *g = make_model("mem-g.gguf",
                               "arch=gemma3,dim=512,layers=6,heads=8,kv_heads=4,head_dim=64,ffn=1536,vocab=4096,"
                               "ctx=4096,swa=256",
                               PB_FTYPE_Q8_0);
    check_config(g, "gemma3, 5 of 6 sliding, Q8_0", 2048, 2, PB_KV_F16);
    /* a mixture's grouped buffers (prompts fill the batch) */
    const char *e = make_model("mem-e.gguf",
                               "arch=qwen3moe,dim=512,layers=4,heads=8,kv_heads=4,head_dim=64,ffn=1536,"
                               "experts=16:4:512,vocab=4096,ctx=4096",
                               PB_FTYPE_Q8_0);
    check_config(e, "qwen3moe 16x4 experts, Q8_0", 1024, 2, PB_KV_F16);
}

/* Bytes of this process's memory that map `path` (/proc/self/smaps). */
static uint64_t mapped_rss(const char *path)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[4096];
    bool in = false;
    unsigned long long kb, total = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ')) { /* a mapping's first line */
            const char *name = strchr(line, '/');
            in = name && !strncmp(name, path, strlen(path)) && name[strlen(path)] == '\n';
        } else if (in && sscanf(line, "Rss: %llu kB", &kb) == 1) {
            total += kb;
        }
    }
    if (f)
        fclose(f);
    return (uint64_t)total * 1024;
}

/* Once loaded, the file's pages leave the process: the weights live in
 * the engine's own memory and the embedding rows are read through the
 * file. Read in place, a prompt's lookups map a page-cache folio around
 * each row and much of the table stays in the resident set, beside every
 * neighbour of the small tensors read in place. */
static void test_file_pages_leave(void **state)
{
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        char path[4096];
        assert_non_null(realpath(make_model(tied ? "mem-pages-tied.gguf" : "mem-pages.gguf",
                                            tied ? "dim=256,layers=2,heads=4,kv_heads=2,ffn=512,vocab=32000,ctx=1024,tied=1"
                                                 : "dim=256,layers=2,heads=4,kv_heads=2,ffn=512,vocab=32000,ctx=1024,tied=0",
                                            PB_FTYPE_Q8_0),
                                 path));
        struct engine_params p = engine_defaults();
        p.n_ctx = 1024;
        p.n_threads = 2;
        struct engine *e;
        pb_err err;
        if (engine_open(path, &p, &e, &err))
            fail_msg("%s", err.msg);
        enum { N = 1000 };
        int32_t prompt[N];
        for (int i = 0; i < N; i++) /* rows all over the table */
            prompt[i] = (int32_t)(((int64_t)i * 7919 + 13) % 32000);
        struct engine_request_params rp = engine_request_defaults();
        rp.n_predict = 4;
        rp.sampling.temp = 0;
        struct engine_result res;
        if (engine_generate(e, prompt, N, &rp, NULL, &res, &err))
            fail_msg("%s", err.msg);
        const uint64_t held = mapped_rss(path);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        print_message("  %s table, 32000 x 256 Q8_0: %.1f KiB of the %.1f MiB file mapped after a %d-token prompt\n",
                      tied ? "tied" : "untied", held / 1024.0, st.st_size / 1048576.0, N);
        assert_true(held <= 64 * 1024); /* a few pages, faulted back at most */
        engine_close(e);
    }
}

/* The process's own share, on the plumb binary: a small model's run
 * (whose weights and cache are a few MB) against its estimate. */
static void test_process_share(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(model, "stories260K.gguf");
    char out[512], cmd[2048];
    test_tmpfile("mem-run.json", out, sizeof out);
    snprintf(cmd, sizeof cmd, "'%s' run '%s' -p 'Once upon a time' -n 16 --temp 0 --json >'%s' 2>/dev/null",
             plumb_bin, model, out);
    assert_int_equal(system(cmd), 0);
    size_t len;
    char *text = test_read_file(out, &len);
    json_t *run = test_parse_json(text);
    free(text);
    snprintf(cmd, sizeof cmd, "'%s' show '%s' --json >'%s' 2>/dev/null", plumb_bin, model, out);
    assert_int_equal(system(cmd), 0);
    text = test_read_file(out, &len);
    json_t *show = test_parse_json(text);
    free(text);
    const double rss = (double)json_integer_value(json_object_get(json_object_get(run, "timings"), "peak_rss_bytes"));
    const double est = (double)json_integer_value(json_object_get(json_object_get(show, "memory"), "total_bytes"));
    print_message("  plumb run stories260K: peak RSS %.1f MiB, estimate %.1f MiB (%.1f of it the process's): %+.1f %%\n",
                  rss / 1048576.0, est / 1048576.0, ENGINE_PROCESS_BYTES / 1048576.0, 100 * (rss / est - 1));
    assert_true(rss >= 0.9 * est && rss <= 1.1 * est);
    json_decref(run);
    json_decref(show);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_memory PATH_TO_PLUMB\n");
        return 2;
    }
#ifdef MEMORY_SANITIZED
    printf("SKIP: a sanitizer build: its shadow memory is in every figure\n");
    return TEST_SKIP_CODE;
#endif
    plumb_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate_against_rss),
        cmocka_unit_test(test_process_share),
        cmocka_unit_test(test_file_pages_leave),
    };
    return cmocka_run_group_tests_name("memory", tests, NULL, NULL);
}
