/* Bump allocation in blocks, all freed at once. The limit turns a
 * template that would allocate without end into an error. */
#include "template/tmpl_internal.h"

#include <stdlib.h>
#include <string.h>

struct arena_block {
    struct arena_block *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

#define ARENA_BLOCK (64 * 1024)

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    if (a->limit && (n > a->limit || a->total > a->limit - n))
        return NULL;
    struct arena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = malloc(sizeof *b + size);
        if (!b)
            return NULL;
        b->used = 0;
        b->size = size;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->total += n;
    return p;
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

const struct tstr *tstr_new(struct arena *a, const char *s, size_t n)
{
    return tstr_new_marked(a, s, n, NULL, false);
}

const struct tstr *tstr_new_marked(struct arena *a, const char *s, size_t n, const uint8_t *taint, bool all)
{
    struct tstr *t = arena_alloc(a, sizeof *t + n + 1);
    if (!t)
        return NULL;
    t->len = n;
    t->taint = NULL;
    if (n)
        memcpy(t->s, s, n);
    t->s[n] = 0;
    bool any = all && n > 0;
    for (size_t i = 0; !any && taint && i < n; i++)
        any = taint[i];
    if (any) {
        uint8_t *m = arena_alloc(a, n);
        if (!m)
            return NULL;
        if (all)
            memset(m, 1, n);
        else
            memcpy(m, taint, n);
        t->taint = m;
    }
    return t;
}

bool tstr_marked(const struct tstr *s)
{
    return s->taint != NULL;
}
