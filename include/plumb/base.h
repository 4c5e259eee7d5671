/* libplumb's public basics: the version, errors, and the types several
 * parts of the API share.
 *
 * Every function that can fail returns a status (PB_OK, or a negative
 * PB_E* code) and, when given a non-NULL pb_err, writes a message the
 * caller can print. The library never prints and never exits.
 */
#ifndef PLUMB_BASE_H
#define PLUMB_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLUMB_VERSION "0.2.0"

enum pb_status {
    PB_OK = 0,
    PB_EIO = -1,          /* open/read/write/mmap failed */
    PB_EFORMAT = -2,      /* malformed input (file, text, JSON) */
    PB_ENOMEM = -3,       /* allocation failed, or a model does not fit in memory */
    PB_EINVAL = -4,       /* bad argument from the caller (bad input of a request) */
    PB_EUNSUPPORTED = -5, /* valid but not implemented (type, architecture) */
    PB_ERANGE = -6,       /* a limit was reached (context full, too many items) */
    PB_ENOTFOUND = -7,    /* no such name (a model in the store) */
    PB_EBUSY = -8,        /* a request: every slot busy and the queue full; try again later */
    PB_ETOOLONG = -9,     /* a request: the prompt leaves no room for an answer in the context */
    PB_ESTOPPING = -10,   /* a request: the engine is shutting down */
    PB_ENOSPC = -11,      /* no space left where a file had to be written (a full disk) */
};

typedef struct pb_err {
    int code;
    char msg[512];
} pb_err;

/* The KV cache's element type (the numbers never change: configuration
 * files and records store them by name, not number, but keep them). */
enum pb_kv_type {
    PB_KV_F16, /* the default: half of F32's memory and traffic, what llama.cpp keeps */
    PB_KV_F32,
    PB_KV_Q8_0, /* blocks of 32 along each row; needs a head size that is a multiple of 32 */
};

/* "f16", "f32", "q8_0". */
const char *pb_kv_type_name(enum pb_kv_type t);
/* The same names, any case; false when unknown. */
bool pb_kv_type_parse(const char *name, enum pb_kv_type *out);

/* File types (general.file_type): the named mixes a whole model is
 * quantized to. The numbers are the ecosystem's (llama.cpp's
 * LLAMA_FTYPE_*) and are written into files. */
enum pb_ftype {
    PB_FTYPE_F32 = 0,
    PB_FTYPE_F16 = 1,
    PB_FTYPE_Q4_0 = 2,
    PB_FTYPE_Q4_1 = 3,
    PB_FTYPE_Q8_0 = 7,
    PB_FTYPE_Q5_0 = 8,
    PB_FTYPE_Q5_1 = 9,
    PB_FTYPE_Q2_K = 10,
    PB_FTYPE_Q3_K_S = 11,
    PB_FTYPE_Q3_K_M = 12,
    PB_FTYPE_Q3_K_L = 13,
    PB_FTYPE_Q4_K_S = 14,
    PB_FTYPE_Q4_K_M = 15,
    PB_FTYPE_Q5_K_S = 16,
    PB_FTYPE_Q5_K_M = 17,
    PB_FTYPE_Q6_K = 18,
    PB_FTYPE_IQ4_NL = 25,
    PB_FTYPE_IQ4_XS = 30,
    PB_FTYPE_BF16 = 32,
    PB_FTYPE_MXFP4_MOE = 38,
};

/* Name of any known file type number ("Q4_K_M"), or NULL. */
const char *pb_ftype_name(int64_t ftype);
/* The file types plumb can write, by name (case-insensitive). */
bool pb_ftype_from_name(const char *name, enum pb_ftype *out);
/* Comma-separated list of those names, for help and errors. */
const char *pb_ftype_names(void);

/* Progress of long work: done of total (bytes, tensors, ...) and what is
 * being worked on. Called on the worker's thread. */
typedef void (*pb_progress_fn)(void *user, uint64_t done, uint64_t total, const char *label);

/* A JSON string (jansson's json_t) of bytes that may not be valid UTF-8
 * (model output, file metadata): each invalid byte becomes U+FFFD. NULL
 * when out of memory. */
struct json_t;
struct json_t *pb_json_text(const char *s, size_t len);

/* ---- files given by the user ----
 * Outputs are written under a temporary name and renamed over the path,
 * which would replace a device node or a FIFO with a regular file; inputs
 * that are not regular files (a FIFO, /dev/zero) would block or never end.
 * These refuse such paths with a message naming what the path is. */

/* PB_OK when path is missing or a regular file (a symbolic link to one
 * counts): something a rename may replace. PB_EINVAL otherwise. */
int pb_check_output(const char *path, pb_err *err);
/* PB_OK when path is a regular file; PB_EINVAL for anything else (a
 * directory, a device, a FIFO), PB_EIO when it cannot be looked at. */
int pb_check_input(const char *path, pb_err *err);
/* Opens a regular file for reading (a FIFO is refused without waiting for
 * a writer) into *fd; the same errors as pb_check_input. */
int pb_open_input(const char *path, int *fd, pb_err *err);
/* Reads a whole regular file of at most max bytes into a malloc'ed,
 * NUL-terminated buffer (*len without the NUL; len may be NULL).
 * PB_ERANGE when it is larger. */
int pb_read_small(const char *path, size_t max, char **out, size_t *len, pb_err *err);
/* Writes len bytes as path, whole or not at all: into PATH.tmp (mode),
 * flushed to disk, then renamed over path (which pb_check_output must
 * accept). PB_ENOSPC on a full disk, PB_EIO otherwise. */
int pb_write_small(const char *path, const void *data, size_t len, int mode, pb_err *err);

/* Text read from a file or the network (metadata, names, messages) made
 * safe to print on a terminal: control characters (C0, DEL, C1 such as
 * CSI) and bytes that are not UTF-8 become \xHH. Writes
 * at most size - 1 bytes and a NUL (whole escapes only); returns the
 * length written. */
size_t pb_escape_text(const char *s, char *out, size_t size);

/* Unix seconds as RFC 3339 in UTC with milliseconds,
 * "2026-12-05T07:57:11.123Z" (at least 25 bytes): the one timestamp of
 * logs and events. */
void pb_time_rfc3339(double unix_s, char *buf, size_t size);

/* Peak resident set size of this process in bytes (0 if unknown). */
uint64_t pb_peak_rss(void);

#endif
