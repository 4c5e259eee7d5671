/* Shared by the tokenizer module's files: the vocabulary and its lookup. */
#ifndef PLUMB_TOKENIZER_INTERNAL_H
#define PLUMB_TOKENIZER_INTERNAL_H

#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* A byte string (not NUL-terminated in general). */
struct tok_str {
    const char *p;
    uint32_t len;
};

/* Open-addressing hash index over an array of records that each begin
 * with a struct tok_str key (records `stride` bytes apart). */
struct str_index {
    int32_t *slots; /* record index, -1 for empty */
    uint64_t n_slots;
};

/* Indexes n records; with duplicate keys the first record wins when
 * keep_first, else the last. */
int str_index_build(struct str_index *ix, const void *records, size_t stride, int32_t n, bool keep_first);
void str_index_free(struct str_index *ix);
/* Record index of key s, or -1. */
int32_t str_index_find(const struct str_index *ix, const void *records, size_t stride, const char *s, size_t len);

struct tok_entry {
    struct tok_str s; /* in the tokenizer's arena */
    float score;
    uint8_t attr;     /* enum tok_attr */
};

#define BPE_MAX_REGEX 4

struct tokenizer {
    enum tok_kind kind;
    int32_t n;
    struct tok_entry *tok;
    char *arena;
    struct str_index index; /* text -> id */
    int32_t byte_id[256];   /* SPM: <0xXX> tokens, -1 when missing */
    int32_t bos, eos, unk, eot, eom;
    int32_t eog[16]; /* every id that ends generation */
    int n_eog;
    bool add_bos, add_eos, add_space_prefix;
    int32_t *specials; /* ids matched in text, longest text first */
    int32_t n_specials;
    uint8_t special_first[32]; /* bitset of first bytes of specials */

    /* byte-level BPE */
    char pre[32];                 /* tokenizer.ggml.pre */
    pcre2_code *re[BPE_MAX_REGEX];/* pre-split regexes, applied in order */
    int n_re;
    bool ignore_merges;           /* a whole pre-token in the vocabulary is kept */
    struct tok_str *merges;       /* "left right", rank = index */
    char *merges_arena;
    int32_t n_merges;
    struct str_index merge_index;
    char byte_enc[256][3];        /* byte -> its code point, as UTF-8 (1-2 bytes) */
    uint8_t byte_enc_len[256];
    int16_t cp_byte[324];         /* code point -> byte, -1 if it stands for none */
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

/* WordPiece (BERT): one run of raw text, appended to ids. */
int wpm_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_ids *ids);

/* Byte-level BPE: loading the merges and pre-tokenizer, encoding one run of
 * raw text, decoding a normal token's text back to bytes, freeing. */
int bpe_load(struct tokenizer *t, const struct gguf_file *f, pb_err *err);
int bpe_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_ids *ids);
size_t bpe_decode_text(const struct tokenizer *t, const char *text, size_t len, char *buf, size_t size);
/* The pre-tokens of text (before byte encoding), NUL-separated in one
 * allocated buffer: for tests and diagnostics. */
int bpe_pretokenize(const struct tokenizer *t, const char *text, size_t len, char **out, size_t *n_pieces);
void bpe_free(struct tokenizer *t);

/* Byte length of the UTF-8 sequence starting with byte c, as the
 * reference tokenizer counts it (continuation bytes count 1). */
static inline size_t utf8_seq_len(unsigned char c)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

#endif
