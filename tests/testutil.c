#define _GNU_SOURCE
#include "testutil.h"

#include "model/model.h"
#include "plumb/synth.h"
#include "base/rng.h"
#include "base/fp16.h"
#include "quant/blocks.h"

#include <ftw.h>
#include <math.h>
#include <stddef.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

const char *testdata_dir(void)
{
    static char dir[4096];
    static int state = 0; /* 0 unknown, 1 found, -1 absent */
    if (state == 0) {
        const char *env = getenv("PLUMB_TESTDATA");
        if (env && *env)
            snprintf(dir, sizeof dir, "%s", env);
        else
            snprintf(dir, sizeof dir, "%s/../shared/testdata", PLUMB_SOURCE_DIR);
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
            state = 1;
        } else {
            state = -1;
            printf("SKIP: reference data not found at %s (set PLUMB_TESTDATA); tests that need it are skipped\n",
                   dir);
        }
    }
    return state == 1 ? dir : NULL;
}

const char *testdata_file(const char *name, char *buf, size_t size)
{
    const char *dir = testdata_dir();
    if (!dir)
        return NULL;
    snprintf(buf, size, "%s/%s", dir, name);
    if (access(buf, R_OK) != 0) {
        printf("SKIP: %s is missing\n", buf);
        return NULL;
    }
    return buf;
}

static char tmpdir[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tmpdir(void)
{
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* PLUMB_TEST_FILTER=PATTERN runs only the tests whose names match (cmocka's
 * wildcards): one test of a long program while working on it. */
__attribute__((constructor)) static void test_filter_from_env(void)
{
    const char *f = getenv("PLUMB_TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

const char *test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/plumb-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *test_tmpfile(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", test_tmpdir(), name);
    return buf;
}

int test_special_files(const char *name, char paths[2][600])
{
    char f[128];
    snprintf(f, sizeof f, "%s.fifo", name);
    test_tmpfile(f, paths[0], 600);
    unlink(paths[0]);
    assert_int_equal(mkfifo(paths[0], 0644), 0);
    snprintf(f, sizeof f, "%s.null", name);
    test_tmpfile(f, paths[1], 600);
    unlink(paths[1]);
    return geteuid() == 0 && mknod(paths[1], S_IFCHR | 0666, makedev(1, 3)) == 0 ? 2 : 1;
}

void test_expect_special(char paths[2][600], int k)
{
    struct stat st;
    assert_int_equal(stat(paths[k], &st), 0);
    if (k == 0 ? !S_ISFIFO(st.st_mode) : !S_ISCHR(st.st_mode))
        fail_msg("%s was replaced by a file of mode %o", paths[k], (unsigned)st.st_mode);
}

char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

int test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

const char *test_tiny_model(const char *ftype_name)
{
    static char paths[8][512];
    static char names[8][16];
    for (int i = 0; i < 8; i++)
        if (names[i][0] && strcmp(names[i], ftype_name) == 0)
            return paths[i];
    int slot = 0;
    while (slot < 8 && names[slot][0])
        slot++;
    assert_true(slot < 8);
    struct synth_params sp = {.seed = 42, .n_threads = 1};
    sp.shape = *synth_shape_find("tiny");
    sp.shape.n_vocab = 1000; /* small and fast */
    sp.shape.n_layer = 2;
    assert_true(pb_ftype_from_name(ftype_name, &sp.ftype));
    char name[64];
    snprintf(name, sizeof name, "tiny-%s.gguf", ftype_name);
    test_tmpfile(name, paths[slot], sizeof paths[slot]);
    pb_err err = {0};
    uint64_t bytes;
    if (synth_write(paths[slot], &sp, &bytes, &err) != 0)
        fail_msg("synth_write: %s", err.msg);
    snprintf(names[slot], sizeof names[slot], "%s", ftype_name);
    return paths[slot];
}

void test_random_blocks(enum pb_type t, void *out, int64_t n, uint64_t seed)
{
    const struct pb_type_traits *tr = pb_type_get(t);
    uint8_t *buf = out;
    struct rng r;
    rng_seed(&r, seed);
    size_t bytes = pb_row_size(t, n);
    for (size_t i = 0; i < bytes; i++)
        buf[i] = (uint8_t)(uint32_t)rng_u64(&r);
    /* the offsets of each block type's fp16 fields */
    size_t at[2] = {0, 0};
    int nf = 1;
    switch (t) {
    case PB_TYPE_Q4_0: case PB_TYPE_Q5_0: case PB_TYPE_Q8_0: case PB_TYPE_IQ4_NL: case PB_TYPE_IQ4_XS: break;
    case PB_TYPE_Q4_1: case PB_TYPE_Q5_1: case PB_TYPE_Q4_K: case PB_TYPE_Q5_K: at[1] = 2; nf = 2; break;
    case PB_TYPE_Q6_K: at[0] = offsetof(struct block_q6_K, d); break;
    case PB_TYPE_Q2_K: at[0] = offsetof(struct block_q2_K, d); at[1] = offsetof(struct block_q2_K, dmin); nf = 2; break;
    case PB_TYPE_Q3_K: at[0] = offsetof(struct block_q3_K, d); break;
    case PB_TYPE_MXFP4: nf = 0; break;
    default: fail_msg("test_random_blocks: no layout known for %s", pb_type_name(t));
    }
    for (int64_t b = 0; b < n / tr->block; b++) {
        uint8_t *blk = buf + (size_t)b * tr->size;
        for (int f = 0; f < nf; f++) {
            uint16_t h = f32_to_fp16(rng_normal(&r) * 0.01f);
            memcpy(blk + at[f], &h, sizeof h);
        }
        if (t == PB_TYPE_MXFP4) /* subnormal scales too, none that overflow a product */
            blk[0] = (uint8_t)(b % 7 == 0 ? (uint32_t)rng_u64(&r) % 3 : 100 + (uint32_t)rng_u64(&r) % 40);
    }
}

void test_randn(float *x, size_t n, uint64_t seed, float scale)
{
    struct rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = rng_normal(&r) * scale;
}

json_t *test_parse_json(const char *s)
{
    json_error_t e;
    /* generated text may hold any byte, NUL included; "\u0000" is valid JSON */
    json_t *v = json_loads(s, JSON_ALLOW_NUL, &e);
    if (!v)
        fail_msg("not JSON (%s): %.300s", e.text, s);
    return v;
}

static int tracked[64];
static int n_tracked;

static void kill_tracked(void)
{
    for (int i = 0; i < n_tracked; i++)
        if (tracked[i] > 0) {
            kill(tracked[i], SIGKILL);
            waitpid(tracked[i], NULL, 0);
        }
}

void test_track_process(int pid)
{
    if (n_tracked == 0)
        atexit(kill_tracked);
    for (int i = 0; i < n_tracked; i++)
        if (tracked[i] == 0) {
            tracked[i] = pid;
            return;
        }
    if (n_tracked < 64)
        tracked[n_tracked++] = pid;
}

void test_untrack_process(int pid)
{
    for (int i = 0; i < n_tracked; i++)
        if (tracked[i] == pid)
            tracked[i] = 0;
}

int test_listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

void test_feed_seq(struct model_ctx *c, int seq, const int32_t *toks, int n, int n_batch, float *lg)
{
    pb_err err;
    for (int i = 0; i < n; i += n_batch) {
        const int k = n - i < n_batch ? n - i : n_batch;
        struct model_seg sg = {seq, k, i + k == n && lg};
        if (model_eval_batch(c, toks + i, &sg, 1, lg, &err))
            fail_msg("sequence %d at %d: %s", seq, i, err.msg);
    }
}

void test_continues_as_alone(const struct model *m, struct model_ctx *c, int kv, int seq, const int32_t *toks,
                             int from, int to, int n_batch, const char *what)
{
    assert_int_equal(model_seq_pos(c, seq), from);
    const int64_t nv = model_hparams(m)->n_vocab;
    float *lg = malloc((size_t)nv * sizeof *lg), *ref = malloc((size_t)nv * sizeof *ref);
    struct model_ctx_params cp = {.n_ctx = to, .n_batch = n_batch, .n_threads = 2, .kv_type = (enum pb_kv_type)kv};
    struct model_ctx *alone;
    pb_err err;
    if (model_ctx_create(m, &cp, &alone, &err))
        fail_msg("%s", err.msg);
    test_feed_seq(alone, 0, toks, to, n_batch, ref);
    model_ctx_free(alone);
    test_feed_seq(c, seq, toks + from, to - from, n_batch, lg);
    for (int64_t i = 0; i < nv; i++)
        if (!isfinite(lg[i]) || lg[i] != ref[i])
            fail_msg("%s (%s cache): logit %lld is %.9g, %.9g alone", what, pb_kv_type_name((enum pb_kv_type)kv),
                     (long long)i, lg[i], ref[i]);
    free(lg);
    free(ref);
}
