/* Inside the store module: the handle, SQL helpers, temporary files and
 * hashing shared by registry.c, pull.c and files.c. */
#ifndef PLUMB_STORE_INTERNAL_H
#define PLUMB_STORE_INTERNAL_H

#include "plumb/store.h"

#include <sqlite3.h>
#include <stdio.h>

#define STORE_PATH_MAX 4096

struct store {
    /* shorter than STORE_PATH_MAX: a file name under them always fits */
    char home[STORE_PATH_MAX - 256];
    char blobs[STORE_PATH_MAX - 240]; /* home/blobs */
    char tmp[STORE_PATH_MAX - 240];   /* home/tmp */
    sqlite3 *db;
    int tmp_removed;
    bool readonly;  /* store_open_readonly: nothing is written (st_begin refuses) */
};

/* ---- SQL (registry.c) ---- */

/* Fills err with "registry: what: sqlite's message" and returns PB_EIO. */
int st_fail(struct store *s, pb_err *err, const char *what);
int st_exec(struct store *s, const char *sql, pb_err *err);
int st_prepare(struct store *s, const char *sql, sqlite3_stmt **st, pb_err *err);
/* BEGIN IMMEDIATE (waits for other writers up to the busy timeout). */
int st_begin(struct store *s, pb_err *err);
int st_commit(struct store *s, pb_err *err);
void st_rollback(struct store *s);
/* Copies column i (NULL: "") into buf. */
void st_text(sqlite3_stmt *st, int i, char *buf, size_t size);
/* The registry's current time (Unix seconds). */
int64_t st_now(void);

/* Model facts recorded with a blob. */
struct blob_meta {
    uint64_t size;
    char arch[64];
    char quant[32];
    uint64_t n_params;
};

/* In one transaction: renames tmp_path to the blob of digest, records the
 * blob and points ref at it (a new revision when it moves). A blob file
 * already in place (of the registered size) is replaced too, which
 * repairs a damaged one, unless keep_existing (tmp_path is a hard link to
 * a user's file: a private copy is better). On failure the store is as
 * before; tmp_path, when not renamed, is the caller's to remove. */
int reg_add(struct store *s, const struct store_ref *ref, const char *digest, const struct blob_meta *m,
            const char *tmp_path, bool keep_existing, const char *source, struct store_pull_result *res,
            pb_err *err);

/* With the blob of digest registered and its file in place as registered
 * (size, modification time): points ref at it, in one transaction, and
 * fills res (new_blob false). PB_ENOTFOUND, changing nothing, otherwise. */
int reg_point_known(struct store *s, const struct store_ref *ref, const char *digest, const char *source,
                    struct store_pull_result *res, pb_err *err);

/* The general form of reg_add (an import): in one transaction, every
 * blob's temporary file renamed into place and recorded (known: the
 * registry had it already; renamed: its file moved), then every name
 * pointed at its digest (changed: it moved), with action and source in the
 * names' histories. On failure the store is as before and every
 * temporary file that was moved is back at its tmp_path. */
struct reg_blob {
    const char *digest;
    const struct blob_meta *m;
    const char *tmp_path;
    bool keep_existing;
    bool known, renamed;       /* out */
};
struct reg_name {
    const struct store_ref *ref;
    const char *digest;
    bool changed;              /* out */
};
int reg_add_set(struct store *s, struct reg_blob *b, size_t nb, struct reg_name *names, size_t nn,
                const char *action, const char *source, pb_err *err);

/* A file's modification time in nanoseconds since the epoch, as the
 * registry records it. */
struct stat;
int64_t store_file_mtime_ns(const struct stat *st);

/* Checks the GGUF file open at fd (PB_EFORMAT with the reason when it is
 * not one) and reads the facts recorded with its blob (pull.c). */
int blob_read_meta(int fd, const char *source, struct blob_meta *m, pb_err *err);

/* ---- files (files.c) ---- */

/* mkdir -p of path (mode 0755). */
int files_mkdirs(const char *path, pb_err *err);
/* Creates home/tmp/PREFIX-PID-RANDOM.SUFFIX exclusively and holds a
 * shared flock on it: the file is this process's until closed. */
int files_tmp_create(struct store *s, const char *prefix, const char *suffix, char *path, size_t size, int *fd,
                     pb_err *err);
/* Takes a shared flock on the file fd opened at path and checks that path
 * still names it (a cleaner may have removed it in between): 1 when
 * claimed, 0 when it is gone, negative on error. */
int files_claim(int fd, const char *path);
/* Moves the file at path onto a new temporary name in tmp/ (as
 * files_tmp_create names it), holding a shared flock on the file itself,
 * taken before the rename: no cleaner takes it while *fd stays open.
 * PB_ENOTFOUND when path does not exist (nothing is created). */
int files_move_aside(struct store *s, const char *path, const char *prefix, const char *suffix, char *tmp,
                     size_t size, int *fd, pb_err *err);
/* Removes the stale files in tmp/ (no process holds their lock);
 * removals of blobs interrupted before their commit are put back. */
int files_clean_tmp(struct store *s);
/* write() of all n bytes, retried on EINTR: 0, or the errno (ENOSPC for
 * a write that stopped short). */
int files_write_all(int fd, const void *p, size_t n);
/* fsync of a directory (a rename in it is durable). */
void files_sync_dir(const char *dir);

/* SHA-256 over a stream (OpenSSL's EVP interface). */
struct sha256;
int sha256_new(struct sha256 **out, pb_err *err);
void sha256_reset(struct sha256 *h);
void sha256_update(struct sha256 *h, const void *p, size_t n);
void sha256_final_hex(struct sha256 *h, char hex[65]);
void sha256_free(struct sha256 *h);

/* Hashes fd from its start to its end, streaming (1 MiB reads, no map).
 * progress may be NULL; cancel (may be NULL) stops it. */
int files_hash_fd(int fd, const char *name, char hex[65], uint64_t *size, store_progress_fn progress, void *user,
                  const volatile sig_atomic_t *cancel, pb_err *err);

/* true for 64 lower-case hex digits. */
bool files_is_digest(const char *s);

#endif
