/* Shared by the tokenizer module's files: the vocabulary and its lookup. */
#ifndef PLUMB_TOKENIZER_INTERNAL_H
#define PLUMB_TOKENIZER_INTERNAL_H

#include "tokenizer/tokenizer.h"

struct tok_entry {
    const char *text; /* in the tokenizer's arena, NUL-terminated */
    uint32_t len;
    float score;
    uint8_t attr;     /* enum tok_attr */
};

struct tokenizer {
    enum tok_kind kind;
    int32_t n;
    struct tok_entry *tok;
    char *arena;
    /* open-addressing hash: text -> id; -1 marks an empty slot */
    int32_t *slots;
    uint64_t n_slots; /* power of two */
    int32_t byte_id[256]; /* <0xXX> tokens, -1 when missing */
    int32_t bos, eos, unk, eot, eom;
    bool add_bos, add_eos, add_space_prefix;
    int32_t *specials; /* ids matched in text, longest text first */
    int32_t n_specials;
};

/* Id of the token with exactly this text, or -1. */
int32_t tok_lookup(const struct tokenizer *t, const char *text, size_t len);

/* Growable id list used while encoding. */
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};
int tok_ids_push(struct tok_ids *ids, int32_t id);

/* SentencePiece encoding of one run of raw text (no special tokens),
 * appended to ids. */
int spm_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_ids *ids);

/* Byte length of the UTF-8 sequence starting with byte c, as the
 * reference tokenizer counts it (continuation bytes count 1). */
static inline size_t utf8_seq_len(unsigned char c)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

#endif
