/* Durations and sizes as people write them (units.h). */
#include "base/units.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DURATION_S (10.0 * 365 * 86400)

/* A non-negative decimal number at *p (digits, an optional fraction; no
 * sign, no exponent, no spaces), advancing *p. */
static bool number(const char **p, double *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s) && !(*s == '.' && isdigit((unsigned char)s[1])))
        return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    /* strtod also takes exponents, hex and inf: only digits and a point */
    for (const char *q = s; q < end; q++)
        if (!isdigit((unsigned char)*q) && *q != '.')
            return false;
    if (errno || !isfinite(x))
        return false;
    *p = end;
    *out = x;
    return true;
}

bool units_parse_duration(const char *s, double *out)
{
    if (!s)
        return false;
    if (!strcasecmp(s, "forever")) {
        *out = -1;
        return true;
    }
    const char *p = s;
    bool neg = *p == '-';
    if (neg)
        p++;
    double total = 0, x;
    if (!number(&p, &x))
        return false;
    if (!*p) { /* plain seconds */
        total = x;
    } else {
        for (;;) {
            double unit;
            if (!strncmp(p, "ms", 2))
                unit = 0.001, p += 2;
            else if (*p == 'h')
                unit = 3600, p++;
            else if (*p == 'm')
                unit = 60, p++;
            else if (*p == 's')
                unit = 1, p++;
            else
                return false;
            total += x * unit;
            if (!*p)
                break;
            if (!number(&p, &x) || !*p) /* every number after the first has its unit */
                return false;
        }
    }
    if (neg && total > 0) {
        *out = -1;
        return true;
    }
    if (total > MAX_DURATION_S)
        return false;
    *out = total;
    return true;
}

bool units_parse_size(const char *s, uint64_t *out)
{
    if (!s)
        return false;
    const char *p = s;
    double x;
    if (!number(&p, &x))
        return false;
    if (*p == ' ' && p[1])
        p++;
    static const struct {
        const char *name;
        double factor;
    } units[] = {
        {"", 1},           {"b", 1},
        {"k", 0x1p10},     {"kib", 0x1p10}, {"kb", 1e3},
        {"m", 0x1p20},     {"mib", 0x1p20}, {"mb", 1e6},
        {"g", 0x1p30},     {"gib", 0x1p30}, {"gb", 1e9},
        {"t", 0x1p40},     {"tib", 0x1p40}, {"tb", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(p, units[i].name) != 0)
            continue;
        if (units[i].factor == 1 && x != floor(x))
            return false; /* bytes are whole */
        const double v = x * units[i].factor;
        if (!(v <= 0x1p62))
            return false;
        *out = (uint64_t)llround(v);
        return true;
    }
    return false;
}
