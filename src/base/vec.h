/* Growable arrays: a buffer of elements that doubles as it grows. */
#ifndef PLUMB_BASE_VEC_H
#define PLUMB_BASE_VEC_H

#include "base/err.h"

#include <stdint.h>
#include <stdlib.h>

/* Ensures *data (of *cap elements of elem bytes) holds at least need
 * elements, doubling as it grows. Returns PB_OK or PB_ENOMEM (the old
 * buffer stays valid). */
static inline int vec_reserve(void **data, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return PB_OK;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    if (n > SIZE_MAX / elem)
        return PB_ENOMEM;
    void *p = realloc(*data, n * elem);
    if (!p)
        return PB_ENOMEM;
    *data = p;
    *cap = n;
    return PB_OK;
}

#endif
