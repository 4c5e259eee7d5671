/* Error reporting for libplumb.
 *
 * Every function that can fail returns a status (PB_OK, or a negative
 * PB_E* code) and, when given a non-NULL pb_err, writes a message the caller
 * can print. The library never prints and never exits.
 */
#ifndef PLUMB_BASE_ERR_H
#define PLUMB_BASE_ERR_H

#include <stddef.h>

enum pb_status {
    PB_OK = 0,
    PB_EIO = -1,          /* open/read/write/mmap failed */
    PB_EFORMAT = -2,      /* malformed input (file, text, JSON) */
    PB_ENOMEM = -3,       /* allocation failed */
    PB_EINVAL = -4,       /* bad argument from the caller */
    PB_EUNSUPPORTED = -5, /* valid but not implemented (type, architecture) */
    PB_ERANGE = -6,       /* a limit was reached (context full, too many tokens) */
    PB_ENOTFOUND = -7,    /* no such name (a model in the store) */
};

typedef struct pb_err {
    int code;
    char msg[512];
} pb_err;

/* Formats a message into e (when non-NULL), sets e->code and returns code.
 * Typical use: return pb_fail(err, PB_EFORMAT, "%s: bad magic", path); */
int pb_fail(pb_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with more context ("loading x: <old>"). */
int pb_wrap(pb_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Short name of a status code ("format error", ...). */
const char *pb_status_str(int code);

#endif
