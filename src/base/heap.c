#include "base/heap.h"

#include "base/vec.h"

#include <string.h>

void heap_init(struct heap *h, size_t size, bool (*before)(const void *, const void *))
{
    h->v = NULL;
    h->n = h->cap = 0;
    h->size = size;
    h->before = before;
}

void heap_free(struct heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

#define AT(h, i) ((h)->v + (i) * (h)->size)

int heap_push(struct heap *h, const void *elem)
{
    if (vec_reserve((void **)&h->v, &h->cap, h->n + 1, h->size))
        return PB_ENOMEM;
    size_t i = h->n++;
    while (i > 0 && h->before(elem, AT(h, (i - 1) / 2))) { /* sift up */
        memcpy(AT(h, i), AT(h, (i - 1) / 2), h->size);
        i = (i - 1) / 2;
    }
    memcpy(AT(h, i), elem, h->size);
    return PB_OK;
}

void heap_pop(struct heap *h, void *out)
{
    memcpy(out, AT(h, 0), h->size);
    const unsigned char *last = AT(h, --h->n);
    size_t i = 0;
    for (;;) { /* sift the last element down from the root */
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const unsigned char *bv = last;
        if (l < h->n && h->before(AT(h, l), bv)) {
            best = l;
            bv = AT(h, l);
        }
        if (r < h->n && h->before(AT(h, r), bv))
            best = r;
        if (best == i)
            break;
        memcpy(AT(h, i), AT(h, best), h->size);
        i = best;
    }
    if (h->n)
        memmove(AT(h, i), last, h->size);
}
