/* Hash index from byte strings to record numbers (vocabulary, merges). */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static const struct tok_str *key_at(const void *records, size_t stride, int32_t i)
{
    return (const struct tok_str *)(const void *)((const char *)records + (size_t)i * stride);
}

int str_index_build(struct str_index *ix, const void *records, size_t stride, int32_t n, bool keep_first)
{
    ix->n_slots = 16;
    while (ix->n_slots < 2 * (uint64_t)n)
        ix->n_slots <<= 1;
    ix->slots = malloc(ix->n_slots * sizeof *ix->slots);
    if (!ix->slots)
        return PB_ENOMEM;
    memset(ix->slots, 0xff, ix->n_slots * sizeof *ix->slots);
    const uint64_t mask = ix->n_slots - 1;
    for (int32_t id = 0; id < n; id++) {
        const struct tok_str *k = key_at(records, stride, id);
        for (uint64_t i = hash_bytes(k->p, k->len) & mask;; i = (i + 1) & mask) {
            int32_t cur = ix->slots[i];
            const struct tok_str *c = cur >= 0 ? key_at(records, stride, cur) : NULL;
            if (!c) {
                ix->slots[i] = id;
                break;
            }
            if (c->len == k->len && memcmp(c->p, k->p, k->len) == 0) {
                if (!keep_first)
                    ix->slots[i] = id;
                break;
            }
        }
    }
    return PB_OK;
}

void str_index_free(struct str_index *ix)
{
    free(ix->slots);
    ix->slots = NULL;
}

int32_t str_index_find(const struct str_index *ix, const void *records, size_t stride, const char *s, size_t len)
{
    const uint64_t mask = ix->n_slots - 1;
    for (uint64_t i = hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = ix->slots[i];
        if (id < 0)
            return -1;
        const struct tok_str *k = key_at(records, stride, id);
        if (k->len == len && memcmp(k->p, s, len) == 0)
            return id;
    }
}
