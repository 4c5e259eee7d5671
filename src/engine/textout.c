#define _GNU_SOURCE /* memmem */
/* Streaming text with stop strings (textout.h). */
#include "engine/textout.h"
#include "base/err.h"

#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int textout_init(struct textout *t, const char *const *stops, int n, pb_err *err)
{
    memset(t, 0, sizeof *t);
    if (n < 0 || n > TEXTOUT_MAX_STOPS)
        return pb_fail(err, PB_EINVAL, "at most %d stop sequences", TEXTOUT_MAX_STOPS);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0)
            continue; /* an empty stop string matches nothing */
        if (!(t->stops[t->n_stops] = malloc(len + 1))) {
            textout_free(t);
            return pb_fail(err, PB_ENOMEM, "out of memory");
        }
        memcpy(t->stops[t->n_stops], stops[i], len + 1);
        t->stop_len[t->n_stops++] = len;
    }
    return PB_OK;
}

void textout_free(struct textout *t)
{
    for (int i = 0; i < t->n_stops; i++)
        free(t->stops[i]);
    sbuf_free(&t->held);
    t->n_stops = 0;
}

/* The length of the longest suffix of s[0..n) that is a proper prefix of
 * some stop string: those bytes may still become a stop. */
static size_t stop_prefix_tail(const struct textout *t, const char *s, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < t->n_stops; i++) {
        size_t max = t->stop_len[i] - 1 < n ? t->stop_len[i] - 1 : n;
        for (size_t k = max; k > best; k--)
            if (memcmp(s + n - k, t->stops[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

bool textout_push(struct textout *t, const char *bytes, size_t n, struct sbuf *out, int *rc)
{
    *rc = PB_OK;
    if (t->stopped)
        return true;
    if ((*rc = sbuf_add(&t->held, bytes, n)))
        return false;
    const char *h = t->held.data;
    size_t len = t->held.len;
    /* the earliest complete stop string */
    size_t cut = len;
    for (int i = 0; i < t->n_stops; i++) {
        const char *at = memmem(h, len, t->stops[i], t->stop_len[i]);
        if (at && (size_t)(at - h) < cut)
            cut = (size_t)(at - h);
    }
    if (cut < len) {
        t->stopped = true;
        *rc = sbuf_add(out, h, cut);
        t->held.len = 0;
        return true;
    }
    size_t keep_stop = stop_prefix_tail(t, h, len);
    size_t ready = tok_utf8_complete(h, len - keep_stop);
    if (ready) {
        if ((*rc = sbuf_add(out, h, ready)))
            return false;
        memmove(t->held.data, h + ready, len - ready);
        t->held.len = len - ready;
    }
    return false;
}

int textout_flush(struct textout *t, struct sbuf *out)
{
    int rc = t->stopped || t->held.len == 0 ? PB_OK : sbuf_add(out, t->held.data, t->held.len);
    t->held.len = 0;
    return rc;
}
