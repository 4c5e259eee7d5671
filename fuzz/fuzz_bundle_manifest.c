/* Bundle manifests (src/store/bundle.c), deep: a mutated manifest rarely
 * survives inside a raw tar (its size is in the tar header) and never
 * names a real SHA-256, so here the input is the manifest's text alone and
 * the target builds a well-formed bundle around it. In the text, @D1@ and
 * @D2@ become the hex digests of two small GGUF blobs, @S1@ and @S2@ their
 * sizes; each blob whose digest the text mentions follows the manifest
 * in the tar, and the whole goes through store_import (check_only). */
#include "fuzz.h"

#include "store/store_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <string.h>

struct blob {
    uint8_t *data;
    size_t len;
    char hex[65], size[24];
};

static struct blob blobs[2];

static void setup(void)
{
    if (blobs[0].data)
        return;
    static const char *const archs[2] = {"llama", "qwen2"};
    for (int i = 0; i < 2; i++) {
        struct blob *b = &blobs[i];
        b->data = fuzz_vocab_bytes(&(struct fuzz_vocab){.bpe = i == 1, .add_space_prefix = -1, .add_bos = -1,
                                                        .arch = archs[i]},
                                   &b->len);
        struct sha256 *h;
        pb_err err = {0};
        FUZZ_CHECK(sha256_new(&h, &err) == PB_OK, "%s", err.msg);
        sha256_update(h, b->data, b->len);
        sha256_final_hex(h, b->hex);
        sha256_free(h);
        snprintf(b->size, sizeof b->size, "%zu", b->len);
    }
}

/* text with the placeholders replaced (malloc'd, *out_len). */
static char *substitute(const char *text, size_t len, size_t *out_len)
{
    static const char *const keys[4] = {"@D1@", "@D2@", "@S1@", "@S2@"};
    const char *vals[4] = {blobs[0].hex, blobs[1].hex, blobs[0].size, blobs[1].size};
    char *out = malloc(len * 17 + 1); /* 4 bytes become at most 64 */
    FUZZ_CHECK(out, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        int k = -1;
        for (int j = 0; j < 4 && k < 0; j++)
            if (len - i >= 4 && !memcmp(text + i, keys[j], 4))
                k = j;
        if (k < 0) {
            out[o++] = text[i++];
            continue;
        }
        size_t n = strlen(vals[k]);
        memcpy(out + o, vals[k], n);
        o += n;
        i += 4;
    }
    *out_len = o;
    return out;
}

static void add_entry(struct archive *a, const char *name, const void *data, size_t len)
{
    struct archive_entry *e = archive_entry_new();
    FUZZ_CHECK(e, "out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0444);
    archive_entry_set_size(e, (la_int64_t)len);
    FUZZ_CHECK(archive_write_header(a, e) == ARCHIVE_OK, "tar header: %s", archive_error_string(a));
    FUZZ_CHECK(archive_write_data(a, data, len) == (la_ssize_t)len, "tar data: %s", archive_error_string(a));
    archive_entry_free(e);
}

static bool mentions(const char *text, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(text + i, s, n))
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    size_t mlen;
    char *manifest = substitute((const char *)data, size, &mlen);
    size_t cap = mlen + blobs[0].len + blobs[1].len + 16384, used = 0;
    uint8_t *tar = malloc(cap);
    struct archive *a = archive_write_new();
    FUZZ_CHECK(tar && a, "out of memory");
    FUZZ_CHECK(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK && archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK &&
                   archive_write_open_memory(a, tar, cap, &used) == ARCHIVE_OK,
               "tar: %s", archive_error_string(a));
    add_entry(a, "manifest.json", manifest, mlen);
    for (int i = 0; i < 2; i++) {
        if (!mentions((const char *)data, size, i ? "@D2@" : "@D1@"))
            continue;
        char name[80];
        snprintf(name, sizeof name, "blobs/sha256-%s", blobs[i].hex);
        add_entry(a, name, blobs[i].data, blobs[i].len);
    }
    FUZZ_CHECK(archive_write_close(a) == ARCHIVE_OK, "tar: %s", archive_error_string(a));
    archive_write_free(a);
    fuzz_import_bundle(tar, used);
    free(tar);
    free(manifest);
    return 0;
}
