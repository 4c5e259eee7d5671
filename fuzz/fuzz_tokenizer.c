/* Tokenizers on arbitrary bytes: encoding (special-token splitting, the
 * SentencePiece bigram merges with byte fallback, the BPE pre-tokenizer
 * regexes, UTF-8 repair and merges) and decoding every id, for each kind
 * of vocabulary: SentencePiece with and without the space prefix, and
 * byte-level BPE with each pre-tokenizer plumb knows.
 *
 * Input: byte 0 picks the vocabulary, byte 1 the options (bit 0: add BOS
 * and EOS, bit 1: parse special tokens, bit 2: mark the second half of the
 * text as user text, where special tokens are not matched); the rest is
 * the text.
 *
 * Where it must hold, decoding gives the text back: valid UTF-8 without
 * '<' (no user-defined token), encoded without BOS/EOS and without
 * parsing special tokens (after one the space prefix comes again, as in
 * llama.cpp), decodes to itself
 * (BPE), or to itself with U+2581 read as a space and the space prefix
 * (SentencePiece). */
#include "fuzz.h"

#include "base/utf8.h"

#include <stdlib.h>
#include <string.h>

static const struct fuzz_vocab vocabs[] = {
    {.bpe = false, .add_space_prefix = -1, .add_bos = -1},
    {.bpe = false, .add_space_prefix = 0, .add_bos = 0},
    {.bpe = true, .pre = NULL, .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "gpt-2", .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "llama-bpe", .add_space_prefix = -1, .add_bos = 1},
    {.bpe = true, .pre = "dbrx", .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "qwen2", .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "smollm", .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "falcon", .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "tekken", .add_space_prefix = -1, .add_bos = -1},
    {.bpe = true, .pre = "gpt-4o", .add_space_prefix = -1, .add_bos = -1},
};
#define N_VOCABS (sizeof vocabs / sizeof vocabs[0])

static struct tokenizer *toks[N_VOCABS];

static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_valid_len((const unsigned char *)s + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* text as SentencePiece gives it back: U+2581 as a space, and the space
 * prefix when the vocabulary adds one. */
static char *spm_expected(const struct fuzz_vocab *v, const char *text, size_t len, size_t *out_len)
{
    char *e = malloc(len + 2);
    FUZZ_CHECK(e, "out of memory");
    size_t o = 0;
    if (v->add_space_prefix != 0 && len)
        e[o++] = ' ';
    for (size_t i = 0; i < len;) {
        if (len - i >= 3 && !memcmp(text + i, "\xe2\x96\x81", 3)) {
            e[o++] = ' ';
            i += 3;
        } else {
            e[o++] = text[i++];
        }
    }
    *out_len = o;
    return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const size_t which = data[0] % N_VOCABS;
    if (!toks[which])
        toks[which] = fuzz_tokenizer(&vocabs[which]);
    const struct tokenizer *t = toks[which];
    const bool add_special = data[1] & 1, parse_special = data[1] & 2, mark = data[1] & 4;
    const char *text = (const char *)data + 2;
    const size_t len = size - 2;
    uint8_t *literal = NULL;
    if (mark) {
        literal = calloc(len ? len : 1, 1);
        FUZZ_CHECK(literal, "out of memory");
        memset(literal + len / 2, 1, len - len / 2);
    }
    int32_t *ids;
    size_t n;
    pb_err err = {0};
    int rc = tok_encode_ex(t, text, len, add_special, parse_special, literal, &ids, &n, &err);
    free(literal);
    if (rc != PB_OK) {
        FUZZ_CHECK(rc == PB_ERANGE || rc == PB_ENOMEM, "encoding failed: %s", err.msg);
        return 0;
    }
    const int32_t n_vocab = tok_n_vocab(t);
    char *dec = malloc(len * 4 + 64), small[4];
    size_t cap = len * 4 + 64, dl = 0;
    FUZZ_CHECK(dec, "out of memory");
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab, "token id %d out of range", ids[i]);
        size_t k = tok_piece(t, ids[i], true, dec + dl, cap - dl);
        FUZZ_CHECK(k <= cap - dl, "decoded text longer than the input allows");
        FUZZ_CHECK(tok_piece(t, ids[i], true, small, sizeof small) == k, "piece length depends on the buffer");
        (void)tok_piece(t, ids[i], false, small, sizeof small);
        dl += k;
    }
    (void)tok_utf8_complete(dec, dl);
    if (!add_special && !parse_special && valid_utf8(text, len) && !memchr(text, '<', len)) {
        size_t el = len;
        char *exp = vocabs[which].bpe ? NULL : spm_expected(&vocabs[which], text, len, &el);
        const char *want = exp ? exp : text;
        FUZZ_CHECK(dl == el && !memcmp(dec, want, el), "vocabulary %zu: %zu bytes decode to %zu bytes, not the text",
                   which, len, dl);
        free(exp);
    }
    free(dec);
    free(ids);
    return 0;
}
