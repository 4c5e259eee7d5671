/* The model store: model files named by their SHA-256, and a registry of
 * names pointing at them, with the history of every name.
 *
 * Layout under the store's home (store_default_home):
 *
 *   registry.db          SQLite in WAL mode: tables blobs (digest, size,
 *                        architecture, quantization, parameters), revisions
 *                        (every digest a name has pointed at, with its
 *                        parent, action, source and time) and names (the
 *                        current revision of each NAME:TAG)
 *   blobs/sha256-HEX     the model files: read-only copies (reflinks where the
 *                        file system can), or hard links when asked
 *   tmp/                 files being written or removed, each held under a
 *                        flock by its process; same file system as blobs/,
 *                        so the final rename is atomic
 *
 * Safety contract. Every change to the registry is one BEGIN IMMEDIATE
 * transaction. A pull writes to tmp/ (hashing as it writes), checks the
 * digest and the GGUF header, and only then renames the file into blobs/
 * and registers it, inside the same transaction; on any failure the store
 * is as it was. A blob is removed (rm) by renaming it into tmp/ inside the
 * transaction and unlinking it after the commit. A process killed at any
 * point leaves at most: a stale file in tmp/ (removed by the next
 * store_open: the lock of a dead process is gone, a live one's is not), or
 * a blob file the registry does not know (removed by store_verify, under
 * the write lock, so never one a live pull is registering). Readers (ls,
 * show, run) never see a model before its transaction commits.
 *
 * Names are NAME[:TAG] (the tag defaults to "latest"); they are checked by
 * store_ref_parse and never used as file names. A store handle is for one
 * thread at a time; several processes may use one store at once.
 *
 * A blob's size and modification time are recorded when it is
 * registered, and store_resolve refuses a blob whose file no longer has
 * them (a hard-linked file edited in place): run, serve and bench never
 * use a changed model silently.
 *
 * A full disk: SQLite needs room for its write-ahead log and, when nobody
 * has the registry open, for its 32 KiB shared-memory index, even to read.
 * Reading commands open the store read-only (store_open_readonly), which
 * then reads the database file as immutable (it holds every commit when
 * no write-ahead log is left); store_rm on such a handle frees space
 * first. Writes fail with PB_ENOSPC and a message that says so.
 *
 * Known weakness: a download is resumed (HTTP Range) only within one
 * process; a pull that was killed starts again from the first byte.
 */
#ifndef PLUMB_STORE_H
#define PLUMB_STORE_H

#include "plumb/base.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_NAME_MAX 128 /* bytes of a name, without the tag */
#define STORE_TAG_MAX 64
#define STORE_DEFAULT_TAG "latest"

struct store;

/* ---- names ---- */

struct store_ref {
    char name[STORE_NAME_MAX + 1];
    char tag[STORE_TAG_MAX + 1];
};

/* Parses "NAME" or "NAME:TAG" into *out, lower-cased. A name is 1 to 128
 * letters, digits, '.', '_' and '-', starting with a letter or digit, with
 * no ".."; a tag is the same, at most 64 bytes. Anything else (path
 * separators, control characters, spaces, over-long) is PB_EINVAL with
 * err saying which character or limit. */
int store_ref_parse(const char *text, struct store_ref *out, pb_err *err);

/* "name:tag" into buf. */
void store_ref_format(const struct store_ref *r, char *buf, size_t size);

/* A digest, "HEX" or "sha256:HEX" (64 hexadecimal digits, any case), into
 * 64 lower-case digits. PB_EINVAL when it is not one. */
int store_digest_parse(const char *text, char out[65], pb_err *err);

/* ---- opening ---- */

/* The store's home: $PLUMB_HOME, else $XDG_DATA_HOME/plumb, else
 * ~/.local/share/plumb. */
int store_default_home(char *buf, size_t size, pb_err *err);

/* Opens (creating when absent) the store at home (NULL: the default), and
 * removes the stale temporary files of dead processes. PB_ENOSPC when the
 * disk is too full for the registry to be opened for writing. */
int store_open(const char *home, struct store **out, pb_err *err);
/* Opens the store for reading only (ls, show, verify's checks, usage):
 * nothing is written, and it works on a full disk (see above). A store
 * without a registry yet, or with an older one, is opened by store_open
 * (created or migrated). Changing functions fail on such a handle, but
 * store_rm. */
int store_open_readonly(const char *home, struct store **out, pb_err *err);
void store_close(struct store *s);

const char *store_home(const struct store *s);
/* blobs/sha256-DIGEST under the home. */
void store_blob_path(const struct store *s, const char *digest, char *buf, size_t size);
/* The digest (64 lower-case hex digits) of a path that names a store's
 * model file, ".../blobs/sha256-DIGEST", as store_resolve gives it: what
 * plumb serve reports as the digest of a model it serves. False for any
 * other path (a GGUF file outside a store). */
bool store_blob_digest(const char *path, char out[65]);

/* ---- reading ---- */

#define STORE_SOURCE_MAX 1024

struct store_entry {
    struct store_ref ref;
    char digest[65];          /* lower-case hex */
    uint64_t size;            /* bytes */
    char arch[64];            /* general.architecture, "" when absent */
    char quant[32];           /* general.file_type as a name (Q4_K_M, ...), "" when absent */
    uint64_t n_params;        /* elements in all tensors */
    char source[STORE_SOURCE_MAX]; /* URL or path the current version came from, or "tag of NAME:TAG" */
    int64_t created;          /* when the name was first registered (Unix seconds) */
    int64_t modified;         /* when it took its current digest */
    int64_t rev;              /* id of the current revision */
    int n_revisions;          /* revisions in its history, the current one included */
    int64_t blob_mtime_ns;    /* the file's modification time when registered (0: not recorded) */
};

/* The entry of ref ("NAME[:TAG]"). PB_ENOTFOUND when absent (the message
 * lists the name's other tags, if any). */
int store_lookup(struct store *s, const char *ref, struct store_entry *out, pb_err *err);

/* Every name, sorted by name and tag, into a malloc'ed array (free()). */
int store_list(struct store *s, struct store_entry **out, size_t *n, pb_err *err);

struct store_revision {
    int64_t id, parent;       /* parent 0: none */
    char digest[65];
    char action[16];          /* "pull", "tag", "rollback" */
    char source[STORE_SOURCE_MAX];
    int64_t at;
    bool current;
};

/* The history of ref, oldest first, into a malloc'ed array (free()). */
int store_history(struct store *s, const char *ref, struct store_revision **out, size_t *n, pb_err *err);

/* ---- the resolver (every command that takes MODEL) ----
 *
 * Resolves MODEL as `run`, `chat`, `bench`, `show`, `serve` (and `plan`)
 * accept it: a file path, or a store name ("NAME" or "NAME:TAG"), into the
 * path of the file to open.
 *
 *   - MODEL holding a '/' is a path (names cannot hold one);
 *   - MODEL naming an existing regular file is that file;
 *   - otherwise it is looked up in the store at home (NULL: at
 *     store_default_home(); not created when absent), and the result is
 *     the blob's path.
 *
 * entry (may be NULL) receives the store entry; its digest is "" when
 * MODEL was a path. Fails with PB_ENOTFOUND ("neither a file nor a model
 * in the store at ...") or PB_EINVAL (not a valid name), and with PB_EIO
 * when the name's file is missing or changed since it was registered (its
 * size or modification time differs: a hard-linked original edited in
 * place), naming the model and plumb verify / plumb pull as the fix.
 * Opens the registry read-only and closes it; cheap enough to call once
 * per command. */
int store_resolve(const char *home, const char *model, char *path, size_t size, struct store_entry *entry,
                  pb_err *err);

/* ---- pulling ---- */

typedef void (*store_progress_fn)(void *user, uint64_t done, uint64_t total, const char *label);

struct store_pull_opts {
    const char *name;           /* NAME[:TAG]; NULL: the source's file name without .gguf, tag latest */
    const char *sha256;         /* expected digest (64 hex digits, "sha256:" prefix allowed), or NULL */
    bool if_absent;             /* with sha256 and a URL: when the store holds that digest intact (its file
                                 * in place with the size and time registered), point the name at it and
                                 * download nothing (an init container after a restart) */
    bool link;                  /* local files: hard-link when on the store's file system (the store
                                 * then shares the file: an edit of the original changes the model,
                                 * which store_resolve refuses); default: a copy (a reflink where the
                                 * file system can: instant, and an edit of either side stays there) */
    const char *bearer_token;   /* http(s), may be NULL: sent as "Authorization: Bearer TOKEN" to the URL's
                                 * own host only; a redirect to another host (a CDN) does not carry it */
    int max_attempts;           /* http(s): attempts in all; 0: 8 */
    int retry_delay_ms;         /* first back-off between attempts, doubling to at most 30 s; 0: 1000 */
    const volatile sig_atomic_t *cancel; /* when it becomes non-zero the pull stops (PB_EIO, "interrupted") */
    store_progress_fn progress; /* bytes written so far (throttled), may be NULL */
    void *user;
};

struct store_pull_result {
    struct store_entry entry;
    bool new_blob;              /* the store did not hold this digest before */
    bool changed;               /* the name moved to a new digest (false: it already pointed there) */
    bool linked;                /* a local file was hard-linked, not copied */
    bool reflinked;             /* a local file was cloned (FICLONE), not copied byte by byte */
    int attempts;               /* http(s) requests made */
    long http_status;           /* a failed download: the HTTP status that ended it (0: none, another error) */
};

/* Pulls SOURCE (an http:// or https:// URL, or a local GGUF file) into the
 * store and points the name at it (see the safety contract above). Fails
 * with PB_EFORMAT for a digest mismatch or a file that is not a valid
 * GGUF, PB_EIO for transfer and disk errors, PB_EINVAL for bad options
 * (a directory: see store_scan_dir). */
int store_pull(struct store *s, const char *source, const struct store_pull_opts *o, struct store_pull_result *res,
               pb_err *err);

/* A directory of GGUF files (a removable disk at an air-gapped site): the
 * *.gguf files in it, sorted, each with its expected digest when the
 * directory holds a SHA256SUMS file (sha256sum's format) that lists it. */
struct store_dir_item {
    char *path;                 /* dir/file */
    char sha256[65];            /* "" when not listed */
};

/* *have_sums tells whether SHA256SUMS was there. Free with store_dir_free. */
int store_scan_dir(const char *dir, struct store_dir_item **out, size_t *n, bool *have_sums, pb_err *err);
void store_dir_free(struct store_dir_item *items, size_t n);

/* ---- changing names ---- */

/* Points dst at src's current digest (a new revision in dst's history). */
int store_tag(struct store *s, const char *src, const char *dst, struct store_entry *out, pb_err *err);

/* Points ref again at the digest it had before its current revision was
 * made; rolling back again goes one further back (the chain of parents),
 * and every step is kept in the history. PB_ERANGE when there is no
 * earlier version. */
int store_rollback(struct store *s, const char *ref, struct store_entry *out, pb_err *err);

struct store_rm_result {
    char digest[65];            /* the digest the name pointed at */
    int blobs_removed;          /* blob files no name uses any more, removed */
    uint64_t bytes_freed;
};

/* Removes ref and its history; blobs that no name (nor any name's history)
 * uses any more are removed too. On a store opened read-only (after
 * store_open failed with PB_ENOSPC: a full disk) the files the removal
 * frees are deleted first, to make room for the registry's transaction;
 * if that still fails, the registry names ref with its file gone (plumb
 * verify shows it, and plumb rm again finishes) and the message says so. */
int store_rm(struct store *s, const char *ref, struct store_rm_result *res, pb_err *err);

/* ---- verifying ---- */

enum store_blob_state {
    STORE_BLOB_OK,
    STORE_BLOB_MISSING,         /* the registry names it, the file is gone */
    STORE_BLOB_SIZE,            /* the file's size is not the registered one */
    STORE_BLOB_CORRUPT,         /* its SHA-256 is not its name */
};

struct store_blob_check {
    char digest[65];
    char actual[65];            /* the digest computed (CORRUPT) */
    uint64_t size, actual_size;
    char names[256];            /* names currently pointing at it ("a:latest, b:2"), "" for history only */
    enum store_blob_state state;
};

struct store_verify_summary {
    size_t n_blobs, n_bad;
    int tmp_removed;            /* stale temporary files removed when the store was opened */
    int orphans_removed;        /* blob files the registry did not know, removed (whole-store checks) */
    bool registry_ok;           /* SQLite's integrity check and the tables' links */
    char registry_msg[256];
};

typedef void (*store_check_fn)(void *user, const struct store_blob_check *c);

/* Re-hashes (streaming) the blob of ref, or with ref NULL every blob and
 * the registry itself, calling on_blob for each. Returns PB_OK when the
 * check ran (summary says what it found), an error when it could not. */
int store_verify(struct store *s, const char *ref, store_check_fn on_blob, store_progress_fn progress, void *user,
                 struct store_verify_summary *sum, pb_err *err);

/* ---- bundles (air-gapped sites) ----
 *
 * A bundle is a tar file (pax format: no size limit) holding, in this
 * order:
 *
 *   manifest.json        {"format":"plumb-bundle","format_version":1,
 *                         "plumb_version","created" (RFC 3339, UTC),
 *                         "blobs":[{"digest":"sha256:HEX","size",
 *                         "path":"blobs/sha256-HEX","architecture",
 *                         "quantization","parameters"}],
 *                         "models":[{"name","tag","digest"}]}
 *   blobs/sha256-HEX     each model file once, however many names use it
 *
 * Export re-hashes every blob as it writes it (a damaged store does not
 * spread) and writes FILE under a temporary name, renamed when complete.
 * Import streams the bundle (it may be compressed) into temporary files in
 * the store, hashing each; only when every blob the manifest lists is
 * present, of its size, of its digest and a valid GGUF does anything enter
 * the store: all blobs and names in one transaction, each name's move
 * kept in its history (plumb rollback). Anything else (a truncated or
 * tampered bundle, an entry the manifest does not list, a duplicate) is
 * refused, and the store is as it was. */

struct store_bundle_opts {
    const char *plumb_version;  /* export: written in the manifest */
    bool check_only;            /* import: verify the bundle, register nothing */
    const volatile sig_atomic_t *cancel;
    store_progress_fn progress; /* bytes of the blob being copied; may be NULL */
    void *user;
};

struct store_bundle_model {
    struct store_ref ref;
    char digest[65];
    uint64_t size;
    bool new_blob;              /* import: the store did not hold this digest */
    bool changed;               /* import: the name moved (false: it pointed there already) */
};

struct store_bundle_result {
    struct store_bundle_model *models; /* malloc'ed; store_bundle_result_free */
    size_t n_models;
    size_t n_blobs;
    uint64_t blob_bytes;        /* bytes of model files in the bundle */
    char plumb_version[32];     /* import: the version that wrote it */
    char created[32];           /* import: when it was written */
};

/* Writes a bundle of the models refs (NAME[:TAG] each) to path: a new
 * file, or one that replaces a regular file (PB_EINVAL for a device, a
 * FIFO, a directory); "-" writes the tar to standard output as a stream. */
int store_export(struct store *s, const char *const *refs, size_t n_refs, const char *path,
                 const struct store_bundle_opts *o, struct store_bundle_result *res, pb_err *err);

/* Verifies the bundle at path ("-": standard input) and, unless
 * check_only, adds its models to the store. PB_EFORMAT for a bundle that
 * is not whole and genuine (the message says what is wrong), PB_EIO for
 * read and disk errors. */
int store_import(struct store *s, const char *path, const struct store_bundle_opts *o,
                 struct store_bundle_result *res, pb_err *err);

void store_bundle_result_free(struct store_bundle_result *res);

/* ---- usage accounting ----
 * plumb serve records each finished generation request: who (the key's
 * id, never the key), which model, how many tokens. */

struct store_usage_row {
    double at;            /* Unix seconds */
    const char *key;      /* key id, "" without keys */
    const char *model, *endpoint;
    int status;
    int prompt_tokens, completion_tokens, cached_tokens;
    double duration_s;
};

int store_usage_add(struct store *s, const struct store_usage_row *r, pb_err *err);

enum store_usage_by { STORE_USAGE_TOTAL, STORE_USAGE_KEY, STORE_USAGE_MODEL, STORE_USAGE_DAY };

struct store_usage_sum {
    char group[160];      /* the key id, model or UTC day (YYYY-MM-DD); "" for the total */
    uint64_t requests, prompt_tokens, completion_tokens, cached_tokens;
    double first, last;   /* Unix seconds of the first and last request */
};

/* Sums of the requests at or after since (0: all), grouped, into a
 * malloc'ed array (free()), in group order. */
int store_usage_query(struct store *s, double since, enum store_usage_by by, struct store_usage_sum **out, size_t *n,
                      pb_err *err);

#endif
