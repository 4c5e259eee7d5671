/* SentencePiece-style encoding by greedy bigram merging.
 *
 * The text is split into UTF-8 characters; every adjacent pair whose
 * concatenation is a token goes into a priority queue by that token's
 * score (ties: leftmost first). The best pair is merged repeatedly, new
 * pairs with its neighbours are queued, and stale entries (a side already
 * merged elsewhere) are skipped. What remains are tokens, or single
 * characters that are not, which fall back to their <0xXX> byte tokens.
 */
#include "tokenizer/tokenizer_internal.h"

#include "base/heap.h"

#include <stdlib.h>
#include <string.h>

struct sym {
    int prev, next;
    const char *text;
    size_t n; /* 0 once merged into its left neighbour */
};

struct bigram {
    int left, right;
    float score;
    size_t size;
};

static bool before(const void *pa, const void *pb)
{
    const struct bigram *a = pa, *b = pb;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int try_pair(const struct tokenizer *t, const struct sym *s, int left, int right, struct heap *h)
{
    if (left < 0 || right < 0)
        return PB_OK;
    size_t size = s[left].n + s[right].n; /* adjacent: the text is contiguous */
    int32_t id = tok_lookup(t, s[left].text, size);
    if (id < 0)
        return PB_OK;
    struct bigram b = {left, right, t->tok[id].score, size};
    return heap_push(h, &b);
}

static int emit(const struct tokenizer *t, const struct sym *s, struct tok_ids *ids)
{
    int32_t id = tok_lookup(t, s->text, s->n);
    if (id >= 0)
        return tok_ids_push(ids, id);
    /* not a token: byte fallback, one token per byte */
    for (size_t i = 0; i < s->n; i++) {
        int32_t b = t->byte_id[(unsigned char)s->text[i]];
        if (b < 0)
            b = t->unk;
        if (b >= 0) {
            int rc = tok_ids_push(ids, b);
            if (rc)
                return rc;
        }
    }
    return PB_OK;
}

int spm_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_ids *ids)
{
    if (len == 0)
        return PB_OK;
    /* spaces become U+2581 (3 bytes), so the buffer is at most 3x */
    char *buf = malloc(len * 3);
    struct sym *s = malloc(len * 3 * sizeof *s);
    struct heap h;
    heap_init(&h, sizeof(struct bigram), before);
    int rc = PB_OK;
    if (!buf || !s) {
        rc = PB_ENOMEM;
        goto done;
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    int n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t k = utf8_seq_len((unsigned char)buf[off]);
        if (k > n - off)
            k = n - off;
        s[n_sym] = (struct sym){n_sym - 1, off + k == n ? -1 : n_sym + 1, buf + off, k};
        n_sym++;
        off += k;
    }
    for (int i = 1; i < n_sym && rc == PB_OK; i++)
        rc = try_pair(t, s, i - 1, i, &h);
    while (h.n > 0 && rc == PB_OK) {
        struct bigram b;
        heap_pop(&h, &b);
        struct sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue; /* stale: one side changed since this pair was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = b.left;
        rc = try_pair(t, s, l->prev, b.left, &h);
        if (rc == PB_OK)
            rc = try_pair(t, s, b.left, l->next, &h);
    }
    for (int i = 0; i != -1 && rc == PB_OK; i = s[i].next)
        rc = emit(t, &s[i], ids);
done:
    free(buf);
    free(s);
    heap_free(&h);
    return rc;
}
