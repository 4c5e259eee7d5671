/* Error reporting inside libplumb: the public status codes and pb_err
 * (plumb/base.h), and the helpers that fill a pb_err. */
#ifndef PLUMB_BASE_ERR_H
#define PLUMB_BASE_ERR_H

#include "plumb/base.h"

/* Formats a message into e (when non-NULL), sets e->code and returns code.
 * Typical use: return pb_fail(err, PB_EFORMAT, "%s: bad magic", path); */
int pb_fail(pb_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with more context ("loading x: <old>"). */
int pb_wrap(pb_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
