#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int pb_fail(pb_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int pb_wrap(pb_err *e, int code, const char *fmt, ...)
{
    if (e) {
        char old[sizeof e->msg];
        memcpy(old, e->msg, sizeof old);
        old[sizeof old - 1] = 0;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        size_t at = n < 0 ? 0 : (size_t)n < sizeof e->msg ? (size_t)n : sizeof e->msg - 1;
        size_t room = sizeof e->msg - 1 - at;
        size_t olen = strlen(old);
        if (room >= 2) {
            memcpy(e->msg + at, ": ", 2);
            at += 2;
            room -= 2;
            if (olen > room)
                olen = room;
            memcpy(e->msg + at, old, olen);
            at += olen;
        }
        e->msg[at] = 0;
        e->code = code;
    }
    return code;
}
