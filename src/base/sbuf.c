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

int sbuf_vaddf(struct sbuf *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    void *d = b->data;
    int rc = n < 0 ? PB_EINVAL : vec_reserve(&d, &b->cap, b->len + (size_t)n + 1, 1) ? PB_ENOMEM : PB_OK;
    if (rc == PB_OK) {
        b->data = d;
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
    return rc;
}

int sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sbuf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void sbuf_free(struct sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
