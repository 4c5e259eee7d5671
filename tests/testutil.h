/* Helpers shared by the test programs (cmocka). */
#ifndef PLUMB_TESTUTIL_H
#define PLUMB_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>

#include "quant/types.h"

/* Exit status that tells ctest a whole program was skipped. */
#define TEST_SKIP_CODE 77

/* The reference data folder: $PLUMB_TESTDATA, else ../shared/testdata
 * beside the source tree; NULL (after printing why, once) when absent. */
const char *testdata_dir(void);
/* testdata_dir()/name, or NULL (and a printed reason) when missing. The
 * result is a static buffer per call site: copy it if kept. */
const char *testdata_file(const char *name, char *buf, size_t size);

/* In a test function: declares `const char *var`, the path of testdata
 * file `name`, or skips the test with a printed reason when it is absent. */
#define REQUIRE_TESTDATA(var, name)                                                                                    \
    char var##_buf[1024];                                                                                              \
    const char *var = testdata_file((name), var##_buf, sizeof var##_buf);                                              \
    if (!var)                                                                                                          \
        skip()

/* A fresh temporary directory for this process (removed at exit). */
const char *test_tmpdir(void);
/* test_tmpdir()/name into buf. */
const char *test_tmpfile(const char *name, char *buf, size_t size);

/* Files that are not regular, for the tests of outputs and inputs:
 * test_tmpdir()/NAME.fifo, a FIFO, into paths[0], and when running as root
 * test_tmpdir()/NAME.null, a character device like /dev/null, into
 * paths[1] (each size bytes). Returns how many were made (1 or 2). */
int test_special_files(const char *name, char paths[2][600]);
/* Fails unless paths[k] is still the FIFO (k 0) or the device (k 1). */
void test_expect_special(char paths[2][600], int k);

/* A socket listening on a free port of 127.0.0.1 (SO_REUSEADDR); its port
 * into *port. For the tests' own little servers. */
int test_listen_loopback(int *port);

/* Child processes a test starts (servers, balancers): each tracked one that
 * is still running when the program exits (a failed test leaves it
 * behind) is killed then. Untrack it once it has been waited for. */
void test_track_process(int pid);
void test_untrack_process(int pid);

/* Reads a whole file (NUL-terminated, *len without the NUL). */
char *test_read_file(const char *path, size_t *len);
int test_write_file(const char *path, const void *data, size_t len);

/* Writes a small random-weight llama model (built-in vocabulary) of the
 * given file type to the temp dir and returns its path (cached per type). */
const char *test_tiny_model(const char *ftype_name);

/* Sequences of a model context (model/model.h). */
struct model;
struct model_ctx;
/* Evaluates toks[0, n) into sequence seq after what it holds, n_batch per
 * call; the last token's logits into lg (NULL: none). Fails the test on an
 * error. */
void test_feed_seq(struct model_ctx *c, int seq, const int32_t *toks, int n, int n_batch, float *lg);
/* Sequence seq, holding toks[0, from), evaluates toks[from, to) n_batch at
 * a time: its last logits must be bit for bit (and finite) those of
 * toks[0, to) evaluated alone in a context of its own with cache type kv
 * (an int: enum pb_kv_type). */
void test_continues_as_alone(const struct model *m, struct model_ctx *c, int kv, int seq, const int32_t *toks,
                             int from, int to, int n_batch, const char *what);

/* In a test of a command's run r (fields status, out, err): fails with
 * both outputs unless it exited with code. */
#define EXPECT_STATUS(r, code)                                                                                         \
    do {                                                                                                               \
        if ((r).status != (code))                                                                                      \
            fail_msg("exit status %d, expected %d\nstdout: %s\nstderr: %s", (r).status, (code), (r).out, (r).err);   \
    } while (0)

/* Parses JSON (NUL bytes allowed: "\u0000") or fails the test. */
struct json_t;
struct json_t *test_parse_json(const char *s);

/* n elements of type t (a quantized type) as blocks of random bytes, with
 * only the float fields made finite (fp16 scales and minimums of either
 * sign; MXFP4 exponents that keep products finite, some subnormal), so
 * that every code, scale and minimum value a block can hold occurs. */
void test_random_blocks(enum pb_type t, void *out, int64_t n, uint64_t seed);

/* Fills x with normal(0, scale) values from a fixed seed. */
void test_randn(float *x, size_t n, uint64_t seed, float scale);

#endif
