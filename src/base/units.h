/* Quantities as people write them in configurations, options and
 * requests: durations ("90", "5m", "1h30m", "forever") and sizes
 * ("2GiB", "512M", "1500000000"). */
#ifndef PLUMB_BASE_UNITS_H
#define PLUMB_BASE_UNITS_H

#include <stdbool.h>
#include <stdint.h>

/* A duration into seconds: a plain number of seconds ("300", "2.5"), or
 * numbers with units h, m, s, ms one after another ("1h30m", "90s",
 * "250ms"). A negative duration ("-1", "-1m") and "forever" mean never:
 * *out is -1. False (and *out untouched) for anything else: empty text,
 * an unknown unit, spaces, a number too large (beyond ten years). */
bool units_parse_duration(const char *s, double *out);

/* A size into bytes: a whole number of bytes, or a number (a fraction
 * allowed) with a unit: B; K, KiB, M, MiB, G, GiB, T, TiB (powers of
 * 1024); KB, MB, GB, TB (powers of 1000); any case, a space before the
 * unit allowed. False for anything else, or beyond 2^62 bytes. */
bool units_parse_size(const char *s, uint64_t *out);

#endif
