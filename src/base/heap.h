/* A binary heap of fixed-size elements: the priority queues of the
 * tokenizers' merge loops. before(a, b) says a leaves the heap first. */
#ifndef PLUMB_BASE_HEAP_H
#define PLUMB_BASE_HEAP_H

#include <stdbool.h>
#include <stddef.h>

struct heap {
    unsigned char *v;
    size_t n, cap, size;
    bool (*before)(const void *a, const void *b);
};

/* Element size and order; the heap starts empty and grows as needed. */
void heap_init(struct heap *h, size_t size, bool (*before)(const void *, const void *));
void heap_free(struct heap *h);
/* PB_OK or PB_ENOMEM. */
int heap_push(struct heap *h, const void *elem);
/* Removes the first element into out; h->n must be > 0. */
void heap_pop(struct heap *h, void *out);

#endif
