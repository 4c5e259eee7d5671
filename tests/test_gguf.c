/* GGUF: writer/reader round trip, real files, and hostile input: crafted
 * headers, every truncation, bit flips. Every malformed file must be
 * refused with a message (never a crash, hang or huge allocation; the
 * sanitizer run checks the "never"). */
#include "testutil.h"

#include "base/rng.h"
#include "gguf/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a byte builder for hand-made files ---- */

struct bytes {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct bytes *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
static void put_u8(struct bytes *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(struct bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct bytes *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(struct bytes *b, size_t align)
{
    while (b->n % align)
        put_u8(b, 0);
}

static void header(struct bytes *b, uint64_t n_tensors, uint64_t n_kv)
{
    put_u32(b, GGUF_MAGIC);
    put_u32(b, 3);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void kv_u32(struct bytes *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, GGUF_U32);
    put_u32(b, v);
}

/* One tensor info (name, dims, type, offset). */
static void tinfo(struct bytes *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}

/* Parses b; returns the status, and checks a failure's message names the
 * file. */
static int parse(const struct bytes *b, pb_err *err)
{
    struct gguf_file *f = NULL;
    memset(err, 0, sizeof *err);
    int rc = gguf_open_memory(b->p, b->n, "crafted.gguf", &f, err);
    if (rc == 0) {
        assert_non_null(f);
        gguf_close(f);
    } else {
        assert_null(f);
        assert_non_null(strstr(err->msg, "crafted.gguf"));
    }
    return rc;
}

#define EXPECT_REFUSED(b, needle)                                                                                      \
    do {                                                                                                               \
        pb_err e_;                                                                                                     \
        int rc_ = parse((b), &e_);                                                                                     \
        if (rc_ == 0)                                                                                                  \
            fail_msg("accepted a malformed file (expected: %s)", needle);                                               \
        if (!strstr(e_.msg, needle))                                                                                   \
            fail_msg("message '%s' does not mention '%s'", e_.msg, needle);                                           \
    } while (0)

/* ---- round trip ---- */

static const char *write_sample(const char *name, uint32_t alignment)
{
    static char path[512];
    test_tmpfile(name, path, sizeof path);
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_u32(w, "test.u32", 0xDEADBEEF);
    gguf_set_i32(w, "test.i32", -42);
    gguf_set_u64(w, "test.u64", 1ull << 40);
    gguf_set_f32(w, "test.f32", 1.5f);
    gguf_set_bool(w, "test.bool", true);
    gguf_set_strn(w, "test.binary", "a\0b\xff", 4);
    gguf_set_u32(w, "test.replaced", 1);
    gguf_set_u32(w, "test.replaced", 2);
    if (alignment)
        gguf_set_u32(w, "general.alignment", alignment);
    float fa[3] = {1, 2, 3};
    int32_t ia[4] = {-1, 0, 1, 2};
    struct gguf_str sa[3] = {{3, "one"}, {0, ""}, {5, "three"}};
    gguf_set_arr(w, "test.f32s", GGUF_F32, fa, 3);
    gguf_set_arr(w, "test.i32s", GGUF_I32, ia, 4);
    gguf_set_arr_str(w, "test.strs", sa, 3);
    gguf_set_arr(w, "test.empty", GGUF_U8, NULL, 0);
    int64_t ne_a[2] = {64, 3}, ne_b[1] = {5}, ne_c[2] = {32, 2};
    assert_int_equal(gguf_writer_add_tensor(w, "a", PB_TYPE_F32, 2, ne_a, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "b", PB_TYPE_F16, 1, ne_b, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "c", PB_TYPE_Q8_0, 2, ne_c, &err), 0);
    assert_int_not_equal(gguf_writer_add_tensor(w, "a", PB_TYPE_F32, 1, ne_b, &err), 0); /* duplicate */
    int64_t bad[1] = {33};
    assert_int_not_equal(gguf_writer_add_tensor(w, "d", PB_TYPE_Q4_0, 1, bad, &err), 0); /* not whole blocks */
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    float a[192];
    for (int i = 0; i < 192; i++)
        a[i] = (float)i * 0.5f;
    uint16_t bdata[5] = {0x3C00, 0x4000, 0x4200, 0x4400, 0x4500};
    uint8_t cdata[68];
    for (int i = 0; i < 68; i++)
        cdata[i] = (uint8_t)(i * 3);
    /* data may come in any pieces, across tensor boundaries */
    assert_int_equal(gguf_writer_write(w, a, 100 * 4, &err), 0);
    assert_int_equal(gguf_writer_write(w, a + 100, 92 * 4, &err), 0);
    assert_int_equal(gguf_writer_write(w, bdata, sizeof bdata, &err), 0);
    assert_int_equal(gguf_writer_write(w, cdata, sizeof cdata, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    return path;
}

static void check_sample(const char *path, uint64_t alignment)
{
    struct gguf_file *f;
    pb_err err;
    if (gguf_open(path, &f, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(gguf_version(f), 3);
    assert_int_equal(gguf_alignment(f), alignment);
    int64_t iv;
    double fv;
    bool bv;
    struct gguf_str sv;
    struct gguf_arr av;
    assert_int_equal(gguf_get_int(f, "test.u32", &iv, &err), 1);
    assert_int_equal(iv, 0xDEADBEEF);
    assert_int_equal(gguf_get_int(f, "test.i32", &iv, &err), 1);
    assert_int_equal(iv, -42);
    assert_int_equal(gguf_get_int(f, "test.u64", &iv, &err), 1);
    assert_int_equal(iv, 1ll << 40);
    assert_int_equal(gguf_get_float(f, "test.f32", &fv, &err), 1);
    assert_true(fv == 1.5);
    assert_int_equal(gguf_get_bool(f, "test.bool", &bv, &err), 1);
    assert_true(bv);
    assert_int_equal(gguf_get_int(f, "test.replaced", &iv, &err), 1);
    assert_int_equal(iv, 2);
    assert_int_equal(gguf_get_str(f, "test.binary", &sv, &err), 1);
    assert_int_equal(sv.len, 4);
    assert_memory_equal(sv.data, "a\0b\xff", 4);
    assert_int_equal(gguf_get_int(f, "missing.key", &iv, &err), 0);
    /* wrong type: refused with a message naming the key */
    assert_int_equal(gguf_get_int(f, "test.binary", &iv, &err), PB_EFORMAT);
    assert_non_null(strstr(err.msg, "test.binary"));
    assert_int_equal(gguf_get_arr(f, "test.f32s", &av, &err), 1);
    assert_int_equal(av.type, GGUF_F32);
    assert_int_equal(av.n, 3);
    assert_true(gguf_arr_float(&av, 2) == 3.0);
    assert_int_equal(gguf_get_arr(f, "test.i32s", &av, &err), 1);
    assert_int_equal(gguf_arr_int(&av, 0), -1);
    assert_int_equal(gguf_arr_int(&av, 3), 2);
    assert_int_equal(gguf_get_arr(f, "test.strs", &av, &err), 1);
    assert_int_equal(av.type, GGUF_STRING);
    assert_true(gguf_str_eq(gguf_arr_str(&av, 0), "one"));
    assert_true(gguf_str_eq(gguf_arr_str(&av, 1), ""));
    assert_true(gguf_str_eq(gguf_arr_str(&av, 2), "three"));
    assert_int_equal(gguf_get_arr(f, "test.empty", &av, &err), 1);
    assert_int_equal(av.n, 0);

    assert_int_equal(gguf_n_tensors(f), 3);
    const struct gguf_tensor *a = gguf_find_tensor(f, "a"), *b = gguf_find_tensor(f, "b"), *c = gguf_find_tensor(f, "c");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(gguf_find_tensor(f, "nope"));
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->ne[0], 64);
    assert_int_equal(a->ne[1], 3);
    assert_int_equal(a->ne[2], 1);
    assert_int_equal(b->type, PB_TYPE_F16);
    assert_int_equal(c->nbytes, 68);
    for (int i = 0; i < 192; i++)
        assert_true(((const float *)a->data)[i] == (float)i * 0.5f);
    assert_int_equal(((const uint16_t *)b->data)[4], 0x4500);
    assert_int_equal(((const uint8_t *)c->data)[67], (67 * 3) & 0xff);
    /* mapped, not copied: data points into the file image, aligned */
    const uint8_t *base = gguf_base(f);
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        assert_ptr_equal(t->data, base + gguf_data_offset(f) + t->offset);
        assert_int_equal(t->offset % alignment, 0);
        assert_int_equal(((uintptr_t)t->data) % alignment, 0);
    }
    assert_int_equal(gguf_data_offset(f) % alignment, 0);
    /* read through the file: the bytes the mapping holds; outside the image: refused */
    uint8_t got[68];
    assert_int_equal(gguf_read_at(f, c->data, c->nbytes, got), 0);
    assert_memory_equal(got, c->data, c->nbytes);
    assert_int_equal(gguf_read_at(f, (const uint8_t *)a->data + 8, 10, got), 0);
    assert_memory_equal(got, (const uint8_t *)a->data + 8, 10);
    assert_int_equal(gguf_read_at(f, c->data, gguf_file_size(f), got), -1);
    assert_int_equal(gguf_read_at(f, base + gguf_file_size(f), 1, got), -1);
    assert_int_equal(gguf_read_at(f, (const void *)((uintptr_t)base - 1), 1, got), -1);
    gguf_close(f);
}

static void test_round_trip(void **state)
{
    (void)state;
    check_sample(write_sample("sample.gguf", 0), 32);
    check_sample(write_sample("sample64.gguf", 64), 64);
}

static void test_writer_failures_leave_no_file(void **state)
{
    (void)state;
    char path[512], dir[512];
    test_tmpfile("partial.gguf", path, sizeof path);
    struct gguf_writer *w;
    pb_err err;
    int64_t ne[1] = {8};
    /* missing data */
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", PB_TYPE_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    float x[16] = {0};
    assert_int_equal(gguf_writer_write(w, x, 4 * 4, &err), 0);
    assert_int_not_equal(gguf_writer_finish(w, &err), 0);
    assert_non_null(strstr(err.msg, "missing"));
    gguf_writer_free(w);
    assert_int_equal(access(path, F_OK), -1);
    /* too much data */
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "t", PB_TYPE_F32, 1, ne, &err), 0);
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    assert_int_not_equal(gguf_writer_write(w, x, sizeof x, &err), 0);
    gguf_writer_free(w);
    assert_int_equal(access(path, F_OK), -1);
    /* abandoned after begin */
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    gguf_writer_free(w);
    assert_int_equal(access(path, F_OK), -1);
    /* unwritable place */
    snprintf(dir, sizeof dir, "%s/no/such/dir/x.gguf", test_tmpdir());
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    assert_int_equal(gguf_writer_begin(w, dir, &err), PB_EIO);
    gguf_writer_free(w);
    /* nothing else was left behind in the temp dir by these */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp- >/dev/null", test_tmpdir());
    assert_int_not_equal(system(cmd), 0);
}

/* ---- real files ---- */

static void test_reads_reference_files(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(path, "stories260K.gguf");
    struct gguf_file *f;
    pb_err err;
    if (gguf_open(path, &f, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(gguf_n_tensors(f), 48);
    assert_int_equal(gguf_n_kv(f), 19);
    int64_t v;
    assert_int_equal(gguf_get_int(f, "llama.embedding_length", &v, &err), 1);
    assert_int_equal(v, 64);
    struct gguf_arr toks;
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, &err), 1);
    assert_int_equal(toks.n, 512);
    assert_true(gguf_str_eq(gguf_arr_str(&toks, 1), "<s>"));
    const struct gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    gguf_close(f);

    REQUIRE_TESTDATA(vocab, "ggml-vocab-llama-bpe.gguf");
    if (gguf_open(vocab, &f, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(gguf_n_tensors(f), 0);
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.merges", &toks, &err), 1);
    assert_int_equal(toks.n, 280147);
    gguf_close(f);
}

static void test_open_errors(void **state)
{
    (void)state;
    struct gguf_file *f;
    pb_err err;
    char path[512];
    assert_int_equal(gguf_open("/nonexistent/model.gguf", &f, &err), PB_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/model.gguf"));
    assert_int_equal(gguf_open(test_tmpdir(), &f, &err), PB_EIO);
    test_tmpfile("empty.gguf", path, sizeof path);
    assert_int_equal(test_write_file(path, "", 0), 0);
    assert_int_equal(gguf_open(path, &f, &err), PB_EFORMAT);
    test_tmpfile("text.gguf", path, sizeof path);
    assert_int_equal(test_write_file(path, "hello, world, this is not a model\n", 34), 0);
    assert_int_equal(gguf_open(path, &f, &err), PB_EFORMAT);
    assert_non_null(strstr(err.msg, "not a GGUF file"));
}

/* ---- crafted hostile headers ---- */

static void test_hostile_headers(void **state)
{
    (void)state;
    struct bytes b = {0};
    uint64_t ne2[2] = {32, 4};

#define FRESH() (b.n = 0)
    FRESH();
    put_u32(&b, 0x46554746);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    EXPECT_REFUSED(&b, "not a GGUF file");

    FRESH();
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 1);
    put_u64(&b, 0);
    put_u64(&b, 0);
    EXPECT_REFUSED(&b, "version 1");

    FRESH();
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 0x03000000); /* big-endian 3 */
    put_u64(&b, 0);
    put_u64(&b, 0);
    EXPECT_REFUSED(&b, "big-endian");

    FRESH();
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 3);
    EXPECT_REFUSED(&b, "file ends inside");

    /* counts near 2^64 */
    FRESH();
    header(&b, 0, UINT64_MAX);
    EXPECT_REFUSED(&b, "metadata entries");
    FRESH();
    header(&b, 1ull << 62, 0);
    EXPECT_REFUSED(&b, "tensors");

    /* key and string lengths near 2^64 */
    FRESH();
    header(&b, 0, 1);
    put_u64(&b, UINT64_MAX - 3);
    put(&b, "abcdefgh", 8);
    EXPECT_REFUSED(&b, "length");
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_STRING);
    put_u64(&b, UINT64_MAX);
    put(&b, "abcdefghijklmnop", 16);
    EXPECT_REFUSED(&b, "length");

    /* array counts near 2^64, for a fixed and a variable element type */
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_U64);
    put_u64(&b, UINT64_MAX / 4);
    put_u64(&b, 7);
    EXPECT_REFUSED(&b, "elements");
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, 1ull << 61);
    put_str(&b, "x");
    EXPECT_REFUSED(&b, "elements");

    /* arrays nested without end */
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_ARRAY);
    for (int i = 0; i < 100; i++) {
        put_u32(&b, GGUF_ARRAY);
        put_u64(&b, 1);
    }
    put_u32(&b, GGUF_U8);
    put_u64(&b, 0);
    EXPECT_REFUSED(&b, "deeper");

    /* unknown value and element types, bad bool */
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13);
    put_u32(&b, 0);
    EXPECT_REFUSED(&b, "unknown value type");
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, 99);
    put_u64(&b, 0);
    EXPECT_REFUSED(&b, "unknown element type");
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_BOOL);
    put_u8(&b, 2);
    EXPECT_REFUSED(&b, "not a bool");

    /* duplicate key, key with a NUL byte, empty key */
    FRESH();
    header(&b, 0, 2);
    kv_u32(&b, "k", 1);
    kv_u32(&b, "k", 2);
    EXPECT_REFUSED(&b, "duplicate metadata key");
    FRESH();
    header(&b, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3);
    put_u32(&b, GGUF_U8);
    put_u8(&b, 0);
    EXPECT_REFUSED(&b, "NUL");
    FRESH();
    header(&b, 0, 1);
    put_u64(&b, 0);
    put_u32(&b, GGUF_U8);
    put_u8(&b, 0);
    EXPECT_REFUSED(&b, "empty");

    /* bad alignment values */
    uint32_t aligns[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        FRESH();
        header(&b, 0, 1);
        kv_u32(&b, "general.alignment", aligns[i]);
        EXPECT_REFUSED(&b, "power of two");
    }
    FRESH();
    header(&b, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_STRING);
    put_str(&b, "32");
    EXPECT_REFUSED(&b, "general.alignment");

    /* tensor dimensions */
    FRESH();
    header(&b, 1, 0);
    tinfo(&b, "t", 0, NULL, PB_TYPE_F32, 0);
    EXPECT_REFUSED(&b, "dimensions");
    FRESH();
    header(&b, 1, 0);
    {
        uint64_t ne5[5] = {1, 1, 1, 1, 1};
        tinfo(&b, "t", 5, ne5, PB_TYPE_F32, 0);
    }
    EXPECT_REFUSED(&b, "dimensions");
    FRESH();
    header(&b, 1, 0);
    {
        uint64_t big[2] = {1ull << 32, 1ull << 32};
        tinfo(&b, "t", 2, big, PB_TYPE_F32, 0);
    }
    EXPECT_REFUSED(&b, "overflows");
    FRESH();
    header(&b, 1, 0);
    {
        uint64_t huge[1] = {UINT64_MAX};
        tinfo(&b, "t", 1, huge, PB_TYPE_F32, 0);
    }
    EXPECT_REFUSED(&b, "2^63");
    FRESH();
    header(&b, 1, 0);
    {
        uint64_t big[2] = {1ull << 62, 1};
        tinfo(&b, "t", 2, big, PB_TYPE_F64, 0); /* elements fit int64, bytes (2^65) do not fit uint64 */
    }
    EXPECT_REFUSED(&b, "overflows");
    FRESH();
    header(&b, 1, 0);
    {
        uint64_t zero[3] = {32, 0, 1ull << 62}; /* a 0 must not disable the overflow check */
        tinfo(&b, "t", 3, zero, PB_TYPE_F32, 0);
    }
    EXPECT_REFUSED(&b, "is 0");
    FRESH();
    header(&b, 1, 0);
    {
        uint64_t odd[1] = {33};
        tinfo(&b, "t", 1, odd, PB_TYPE_Q4_0, 0);
    }
    EXPECT_REFUSED(&b, "block size");

    /* tensor types */
    uint32_t bad_types[] = {4, 5, 31, 99, 0xFFFFFFFF};
    for (int i = 0; i < 5; i++) {
        FRESH();
        header(&b, 1, 0);
        tinfo(&b, "t", 2, ne2, bad_types[i], 0);
        EXPECT_REFUSED(&b, "unknown type");
    }

    /* offsets: misaligned, past the end, wrapping around */
    uint64_t offs[] = {1, 4096, UINT64_MAX - 31};
    const char *why[] = {"alignment", "past the end", "past the end"};
    for (int i = 0; i < 3; i++) {
        FRESH();
        header(&b, 1, 0);
        tinfo(&b, "t", 2, ne2, PB_TYPE_F32, offs[i]);
        pad_to(&b, 32);
        for (int k = 0; k < 32 * 4; k++)
            put_u32(&b, 0);
        EXPECT_REFUSED(&b, why[i]);
    }

    /* duplicate tensor names; empty name */
    FRESH();
    header(&b, 2, 0);
    tinfo(&b, "t", 2, ne2, PB_TYPE_F32, 0);
    tinfo(&b, "t", 2, ne2, PB_TYPE_F32, 512);
    pad_to(&b, 32);
    for (int k = 0; k < 256; k++)
        put_u32(&b, 0);
    EXPECT_REFUSED(&b, "duplicate tensor");
    FRESH();
    header(&b, 1, 0);
    tinfo(&b, "", 2, ne2, PB_TYPE_F32, 0);
    EXPECT_REFUSED(&b, "empty");

    /* and a well-formed file of the same kind is accepted */
    FRESH();
    header(&b, 1, 1);
    kv_u32(&b, "general.alignment", 64);
    tinfo(&b, "t", 2, ne2, PB_TYPE_F32, 0);
    pad_to(&b, 64);
    for (int k = 0; k < 128; k++)
        put_u32(&b, 0);
    pb_err e;
    assert_int_equal(parse(&b, &e), 0);
#undef FRESH
    free(b.p);
}

/* ---- truncation and corruption ---- */

/* Hundreds of thousands of keys and tensors: duplicate checks must not be
 * quadratic (a quadratic check takes minutes here and hits the timeout). */
static void test_many_names(void **state)
{
    (void)state;
    struct bytes b = {0};
    const uint32_t n = 300000;
    header(&b, n, n);
    char key[32];
    for (uint32_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k%u", i);
        kv_u32(&b, key, i);
    }
    uint64_t ne[1] = {1};
    for (uint32_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "t%u", i);
        tinfo(&b, key, 1, ne, PB_TYPE_I8, 0);
    }
    pad_to(&b, 32);
    put_u64(&b, 0);
    struct gguf_file *f;
    pb_err err;
    if (gguf_open_memory(b.p, b.n, "many.gguf", &f, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(gguf_find(f, "k299999"), 299999);
    assert_non_null(gguf_find_tensor(f, "t123456"));
    assert_null(gguf_find_tensor(f, "t300000"));
    gguf_close(f);
    /* and one duplicate among them is still found */
    memcpy(b.p + 24 + 8, "k1", 2); /* the first key "k0" becomes "k1" */
    EXPECT_REFUSED(&b, "duplicate metadata key 'k1'");
    free(b.p);
}

static void test_every_truncation(void **state)
{
    (void)state;
    size_t len;
    char *img = test_read_file(write_sample("trunc.gguf", 0), &len);
    assert_non_null(img);
    struct gguf_file *f;
    pb_err err;
    assert_int_equal(gguf_open_memory(img, len, "trunc.gguf", &f, &err), 0);
    /* the end of the last tensor's data: anything shorter must fail */
    uint64_t data_end = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const struct gguf_tensor *t = gguf_tensor(f, i);
        uint64_t end = gguf_data_offset(f) + t->offset + t->nbytes;
        if (end > data_end)
            data_end = end;
    }
    gguf_close(f);
    for (size_t n = 0; n < len; n++) {
        /* a copy of exactly n bytes, so ASan sees any read past it */
        char *cut = malloc(n ? n : 1);
        memcpy(cut, img, n);
        int rc = gguf_open_memory(cut, n, "trunc.gguf", &f, &err);
        if (n < data_end) {
            if (rc == 0)
                fail_msg("accepted a file truncated to %zu of %zu bytes", n, len);
            assert_true(err.msg[0] != 0);
        }
        if (rc == 0)
            gguf_close(f);
        free(cut);
    }
    free(img);
}

static void test_bit_flips(void **state)
{
    (void)state;
    size_t len;
    char *img = test_read_file(write_sample("flip.gguf", 0), &len);
    assert_non_null(img);
    struct gguf_file *f;
    pb_err err;
    assert_int_equal(gguf_open_memory(img, len, "flip.gguf", &f, &err), 0);
    size_t header_len = (size_t)gguf_data_offset(f);
    gguf_close(f);
    char *copy = malloc(len);
    int accepted = 0, refused = 0;
    /* every bit of the header, one at a time */
    for (size_t i = 0; i < header_len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, img, len);
            copy[i] ^= (char)(1 << bit);
            if (gguf_open_memory(copy, len, "flip.gguf", &f, &err) == 0) {
                /* accepted: whatever it says must be readable in bounds */
                for (uint64_t t = 0; t < gguf_n_tensors(f); t++) {
                    const struct gguf_tensor *ti = gguf_tensor(f, t);
                    volatile uint8_t sink = 0;
                    if (ti->nbytes)
                        sink ^= ((const uint8_t *)ti->data)[ti->nbytes - 1];
                    (void)sink;
                }
                gguf_close(f);
                accepted++;
            } else {
                assert_true(err.msg[0] != 0);
                refused++;
            }
        }
    }
    /* and random multi-byte damage */
    struct rng r;
    rng_seed(&r, 99);
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(copy, img, len);
        int n = 1 + (int)(rng_u64(&r) % 8);
        for (int k = 0; k < n; k++)
            copy[rng_u64(&r) % header_len] = (char)rng_u64(&r);
        if (gguf_open_memory(copy, len, "flip.gguf", &f, &err) == 0)
            gguf_close(f);
    }
    print_message("  %zu header bytes: %d single-bit flips refused, %d harmless ones accepted\n", header_len, refused,
                  accepted);
    assert_true(refused > 0);
    free(copy);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_writer_failures_leave_no_file),
        cmocka_unit_test(test_reads_reference_files),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_many_names),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_bit_flips),
    };
    return cmocka_run_group_tests_name("gguf", tests, NULL, NULL);
}
