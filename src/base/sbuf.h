/* A growable byte string, always NUL-terminated after its bytes. */
#ifndef PLUMB_BASE_SBUF_H
#define PLUMB_BASE_SBUF_H

#include <stddef.h>

struct sbuf {
    char *data;
    size_t len, cap;
};

/* Appends n bytes; PB_ENOMEM (b unchanged) when memory runs out. */
int sbuf_add(struct sbuf *b, const void *p, size_t n);
/* Appends printf-formatted text (any length). */
int sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

#endif
