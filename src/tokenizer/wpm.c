/* WordPiece (tokenizer.ggml.model = "bert"), as BERT-style encoders use
 * it: the text is split into words at whitespace and around punctuation
 * (each punctuation character a word of its own), ASCII letters are
 * lowercased, and each word becomes the longest vocabulary pieces from
 * its start: the first with the word-start mark (U+2581, as GGUF files
 * store BERT's pieces that have no "##"), the rest without; a word that
 * cannot be covered, or longer than 100 characters, is the unknown token.
 *
 * Known weakness: no Unicode normalization (NFD, accent stripping) and no
 * splitting of CJK characters into words of their own, which BERT's
 * uncased tokenizers do: text beyond ASCII may tokenize differently. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define WPM_MAX_WORD_CHARS 100

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_punct(unsigned char c)
{
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

/* The pieces of one word (w[0..n): the mark and the word's bytes). */
static int encode_word(const struct tokenizer *t, const char *w, size_t n, size_t n_chars, struct tok_ids *ids)
{
    if (n_chars > WPM_MAX_WORD_CHARS)
        return t->unk >= 0 ? tok_ids_push(ids, t->unk) : PB_OK;
    const size_t start = ids->n;
    size_t at = 0;
    while (at < n) {
        size_t end = n;
        int32_t id = -1;
        for (; end > at; end--) {
            if (end < n && ((unsigned char)w[end] & 0xc0) == 0x80)
                continue; /* whole characters only */
            if ((id = tok_lookup(t, w + at, end - at)) >= 0)
                break;
        }
        if (id < 0) { /* the word cannot be covered: unknown */
            ids->n = start;
            return t->unk >= 0 ? tok_ids_push(ids, t->unk) : PB_OK;
        }
        int rc = tok_ids_push(ids, id);
        if (rc)
            return rc;
        at = end;
    }
    return PB_OK;
}

int wpm_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_ids *ids)
{
    static const char MARK[] = "\xe2\x96\x81";
    char *w = malloc(len + sizeof MARK);
    if (!w)
        return PB_ENOMEM;
    size_t n = 0, chars = 0;
    int rc = PB_OK;
    for (size_t i = 0; i <= len && rc == PB_OK; i++) {
        const unsigned char c = i < len ? (unsigned char)text[i] : ' ';
        const bool cut = is_space(c) || is_punct(c);
        if (cut && n) {
            rc = encode_word(t, w, n, chars, ids);
            n = chars = 0;
        }
        if (rc || is_space(c))
            continue;
        if (n == 0) {
            memcpy(w, MARK, 3);
            n = 3;
        }
        w[n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        chars += (c & 0xc0) != 0x80;
        if (is_punct(c)) { /* a word of its own */
            rc = encode_word(t, w, n, chars, ids);
            n = chars = 0;
        }
    }
    free(w);
    return rc;
}
