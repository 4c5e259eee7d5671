#include "base/sbuf.h"

#include "base/err.h"
#include "base/vec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    void *d = b->data;
    if (vec_reserve(&d, &b->cap, b->len + n + 1, 1))
        return PB_ENOMEM;
    b->data = d;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return PB_OK;
}

int sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PB_EINVAL;
    void *d = b->data;
    if (vec_reserve(&d, &b->cap, b->len + (size_t)n + 1, 1))
        return PB_ENOMEM;
    b->data = d;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PB_OK;
}

void sbuf_free(struct sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
