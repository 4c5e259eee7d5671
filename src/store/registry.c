/* The registry (SQLite, WAL mode) and the operations on names: open,
 * lookup, list, history, register, tag, rollback, rm, verify. */
#define _GNU_SOURCE
#include "store/store_internal.h"
#include "base/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 60000
#define SCHEMA_VERSION 3 /* 2: usage; 3: blobs.mtime */

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS blobs("
    " digest TEXT PRIMARY KEY,"
    " size INTEGER NOT NULL,"
    " arch TEXT NOT NULL DEFAULT '',"
    " quant TEXT NOT NULL DEFAULT '',"
    " params INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL,"
    /* the file's modification time when it was registered (ns since the
     * epoch; 0: unknown, a registry older than the column) */
    " mtime INTEGER NOT NULL DEFAULT 0);"
    /* every digest a name has pointed at; parent: the revision it replaced */
    "CREATE TABLE IF NOT EXISTS revisions("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL,"
    " tag TEXT NOT NULL,"
    " digest TEXT NOT NULL REFERENCES blobs(digest),"
    " parent INTEGER,"
    " action TEXT NOT NULL,"
    " source TEXT NOT NULL DEFAULT '',"
    " at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS revisions_name ON revisions(name, tag);"
    "CREATE INDEX IF NOT EXISTS revisions_digest ON revisions(digest);"
    "CREATE TABLE IF NOT EXISTS names("
    " name TEXT NOT NULL,"
    " tag TEXT NOT NULL,"
    " rev INTEGER NOT NULL REFERENCES revisions(id),"
    " created INTEGER NOT NULL,"
    " PRIMARY KEY(name, tag));"
    /* the server's finished generation requests (usage accounting) */
    "CREATE TABLE IF NOT EXISTS usage("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " at REAL NOT NULL,"
    " key TEXT NOT NULL,"
    " model TEXT NOT NULL,"
    " endpoint TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " prompt_tokens INTEGER NOT NULL,"
    " completion_tokens INTEGER NOT NULL,"
    " cached_tokens INTEGER NOT NULL,"
    " duration REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS usage_at ON usage(at);";

/* ---- SQL helpers ---- */

/* Whether the last error of db is a full disk (or a file size limit):
 * SQLite needs room for its write-ahead log and its shared-memory index
 * even to read a database in WAL mode. */
static bool disk_full(sqlite3 *db)
{
    int e = sqlite3_system_errno(db);
    return db && ((sqlite3_errcode(db) & 0xff) == SQLITE_FULL || e == ENOSPC || e == EDQUOT || e == EFBIG);
}

int st_fail(struct store *s, pb_err *err, const char *what)
{
    if (disk_full(s->db))
        return pb_fail(err, PB_ENOSPC, "registry %s/registry.db: %s: the disk is full (%s): free some space (plumb rm "
                       "removes a model even now)", s->home, what, sqlite3_errmsg(s->db));
    return pb_fail(err, PB_EIO, "registry %s/registry.db: %s: %s", s->home, what, sqlite3_errmsg(s->db));
}

int st_exec(struct store *s, const char *sql, pb_err *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return st_fail(s, err, sql);
    return PB_OK;
}

int st_prepare(struct store *s, const char *sql, sqlite3_stmt **st, pb_err *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
        return st_fail(s, err, "preparing a query");
    return PB_OK;
}

int st_begin(struct store *s, pb_err *err)
{
    if (s->readonly)
        return pb_fail(err, PB_EINVAL, "the store at %s was opened read-only: nothing can change", s->home);
    return st_exec(s, "BEGIN IMMEDIATE", err);
}

int st_commit(struct store *s, pb_err *err)
{
    return st_exec(s, "COMMIT", err);
}

void st_rollback(struct store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

void st_text(sqlite3_stmt *st, int i, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
}

int64_t st_now(void)
{
    return (int64_t)time(NULL);
}

/* Runs a statement that returns no rows, binding text args (NULL ends). */
static int st_run(struct store *s, const char *sql, pb_err *err, ...) __attribute__((sentinel));
static int st_run(struct store *s, const char *sql, pb_err *err, ...)
{
    sqlite3_stmt *q;
    int rc = st_prepare(s, sql, &q, err);
    if (rc)
        return rc;
    va_list ap;
    va_start(ap, err);
    const char *a;
    for (int i = 1; (a = va_arg(ap, const char *)); i++)
        sqlite3_bind_text(q, i, a, -1, SQLITE_TRANSIENT);
    va_end(ap);
    if (sqlite3_step(q) != SQLITE_DONE)
        rc = st_fail(s, err, sql);
    sqlite3_finalize(q);
    return rc;
}

/* ---- opening ---- */

static int user_version(struct store *s, int *version, pb_err *err)
{
    sqlite3_stmt *q;
    int rc = st_prepare(s, "PRAGMA user_version", &q, err);
    if (rc)
        return rc;
    int step = sqlite3_step(q);
    *version = step == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
    sqlite3_finalize(q);
    return step == SQLITE_ROW ? PB_OK : st_fail(s, err, "reading the schema version");
}

static bool has_column(struct store *s, const char *table, const char *column)
{
    sqlite3_stmt *q;
    bool yes = false;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM pragma_table_info(?) WHERE name = ?", -1, &q, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, column, -1, SQLITE_STATIC);
    yes = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return yes;
}

static int db_open(struct store *s, pb_err *err)
{
    char path[STORE_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/registry.db", s->home);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return st_fail(s, err, "opening");
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_stmt *q;
    int rc = st_prepare(s, "PRAGMA journal_mode=WAL", &q, err);
    if (rc)
        return rc;
    /* Several plumb processes opening a new registry at once race to switch
     * it to WAL; SQLite answers the loser SQLITE_BUSY at once, without its
     * busy handler (waiting there could deadlock), so the wait is here. */
    int step;
    for (int waited_ms = 0;; waited_ms += 10) {
        step = sqlite3_step(q);
        if ((step & 0xff) != SQLITE_BUSY && (step & 0xff) != SQLITE_LOCKED)
            break;
        if (waited_ms >= BUSY_TIMEOUT_MS)
            break;
        sqlite3_reset(q);
        sqlite3_sleep(10);
    }
    bool wal = step == SQLITE_ROW && sqlite3_column_text(q, 0) &&
               strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
    sqlite3_finalize(q);
    if (!wal)
        return st_fail(s, err, "switching to WAL mode");
    /* a commit survives a power cut: pulls are rare, models are large */
    if ((rc = st_exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", err)))
        return rc;
    int version;
    if ((rc = user_version(s, &version, err)))
        return rc;
    if (version == SCHEMA_VERSION)
        return PB_OK;
    if (version > SCHEMA_VERSION)
        return pb_fail(err, PB_EUNSUPPORTED, "registry %s is of a newer plumb (schema %d, this one knows %d)", path,
                       version, SCHEMA_VERSION);
    if ((rc = st_begin(s, err)))
        return rc;
    /* every statement of the schema is IF NOT EXISTS: older registries gain
     * the newer tables, and the newer columns below */
    if ((rc = st_exec(s, schema, err)) ||
        (!has_column(s, "blobs", "mtime") &&
         (rc = st_exec(s, "ALTER TABLE blobs ADD COLUMN mtime INTEGER NOT NULL DEFAULT 0", err))) ||
        (rc = st_exec(s, "PRAGMA user_version=3", err)) || (rc = st_commit(s, err))) {
        st_rollback(s);
        return rc;
    }
    return PB_OK;
}

/* "file:" URI of path, with the characters a URI gives meaning escaped. */
static void file_uri(const char *path, const char *query, char *buf, size_t size)
{
    size_t o = (size_t)snprintf(buf, size, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p && o + 4 < size; p++) {
        if (*p == '%' || *p == '?' || *p == '#' || *p <= ' ' || *p >= 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "%%%02X", *p);
        else
            buf[o++] = (char)*p;
    }
    snprintf(buf + o, size - o, "?%s", query);
}

/* Opens the registry for reading only. SQLite reads a database in WAL
 * mode through a shared-memory index (registry.db-shm) that it creates,
 * 32 KiB, when nobody has the database open: on a full disk that fails.
 * Then, when no write-ahead log holds changes (registry.db-wal absent or
 * empty: the database file holds every commit), the file is opened as
 * immutable, which needs neither. */
static int db_open_readonly(struct store *s, pb_err *err)
{
    char path[STORE_PATH_MAX + 16], wal[STORE_PATH_MAX + 32], uri[3 * STORE_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/registry.db", s->home);
    snprintf(wal, sizeof wal, "%s-wal", path);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 0) {
            if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
                return st_fail(s, err, "opening");
        } else {
            struct stat st;
            if (stat(wal, &st) == 0 && st.st_size > 0)
                return PB_EIO; /* the first attempt's message stands */
            sqlite3_close(s->db);
            s->db = NULL;
            file_uri(path, "immutable=1", uri, sizeof uri);
            if (sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL) !=
                SQLITE_OK)
                return st_fail(s, err, "opening");
        }
        sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
        sqlite3_extended_result_codes(s->db, 1);
        int version;
        int rc = user_version(s, &version, err);
        if (rc == PB_OK)
            return version == SCHEMA_VERSION ? PB_OK : PB_EUNSUPPORTED; /* older: store_open migrates it */
    }
    return PB_EIO;
}

/* A handle for the store at home (NULL: the default), nothing opened yet;
 * NULL with *rc and err filled on failure. */
static struct store *store_new(const char *home, int *rc, pb_err *err)
{
    struct store *s = calloc(1, sizeof *s);
    *rc = PB_OK;
    if (!s) {
        *rc = pb_fail(err, PB_ENOMEM, "out of memory opening the store");
        return NULL;
    }
    if (!home) {
        if ((*rc = store_default_home(s->home, sizeof s->home, err))) {
            free(s);
            return NULL;
        }
    } else if (snprintf(s->home, sizeof s->home, "%s", home) >= (int)sizeof s->home) {
        free(s);
        *rc = pb_fail(err, PB_EINVAL, "store home path too long");
        return NULL;
    }
    snprintf(s->blobs, sizeof s->blobs, "%s/blobs", s->home);
    snprintf(s->tmp, sizeof s->tmp, "%s/tmp", s->home);
    return s;
}

int store_open_readonly(const char *home, struct store **out, pb_err *err)
{
    *out = NULL;
    int rc;
    struct store *s = store_new(home, &rc, err);
    if (!s)
        return rc;
    char path[STORE_PATH_MAX + 16];
    struct stat st;
    snprintf(path, sizeof path, "%s/registry.db", s->home);
    pb_err rerr = {0};
    s->readonly = true;
    if (stat(path, &st) == 0 && (rc = db_open_readonly(s, &rerr)) == PB_OK) {
        *out = s;
        return PB_OK;
    }
    /* no registry yet, or an older one: the ordinary open creates or
     * migrates it (and says what is wrong when it cannot) */
    store_close(s);
    rc = store_open(home, out, err);
    if (rc && rerr.msg[0] && rc != PB_ENOSPC)
        pb_fail(err, rc, "%s", rerr.msg);
    return rc;
}

int store_open(const char *home, struct store **out, pb_err *err)
{
    *out = NULL;
    int rc;
    struct store *s = store_new(home, &rc, err);
    if (!s)
        return rc;
    if ((rc = files_mkdirs(s->blobs, err)) || (rc = files_mkdirs(s->tmp, err)) || (rc = db_open(s, err)))
        goto fail;
    s->tmp_removed = files_clean_tmp(s);
    *out = s;
    return PB_OK;
fail:
    store_close(s);
    return rc;
}

void store_close(struct store *s)
{
    if (s) {
        sqlite3_close(s->db);
        free(s);
    }
}

const char *store_home(const struct store *s) { return s->home; }

void store_blob_path(const struct store *s, const char *digest, char *buf, size_t size)
{
    snprintf(buf, size, "%s/sha256-%s", s->blobs, digest);
}

bool store_blob_digest(const char *path, char out[65])
{
    static const char dir[] = "blobs/sha256-";
    const size_t n = strlen(path), dn = sizeof dir - 1;
    if (n < dn + 64 || strncmp(path + n - 64 - dn, dir, dn) != 0 || (n > dn + 64 && path[n - 65 - dn] != '/'))
        return false;
    memcpy(out, path + n - 64, 64);
    out[64] = '\0';
    return files_is_digest(out);
}

/* ---- reading ---- */

#define ENTRY_SELECT                                                                                                   \
    "SELECT n.name, n.tag, r.digest, b.size, b.arch, b.quant, b.params, r.source, n.created, r.at, n.rev,"            \
    " (SELECT count(*) FROM revisions h WHERE h.name = n.name AND h.tag = n.tag), b.mtime"                           \
    " FROM names n JOIN revisions r ON r.id = n.rev JOIN blobs b ON b.digest = r.digest"

static void entry_read(sqlite3_stmt *q, struct store_entry *e)
{
    memset(e, 0, sizeof *e);
    st_text(q, 0, e->ref.name, sizeof e->ref.name);
    st_text(q, 1, e->ref.tag, sizeof e->ref.tag);
    st_text(q, 2, e->digest, sizeof e->digest);
    e->size = (uint64_t)sqlite3_column_int64(q, 3);
    st_text(q, 4, e->arch, sizeof e->arch);
    st_text(q, 5, e->quant, sizeof e->quant);
    e->n_params = (uint64_t)sqlite3_column_int64(q, 6);
    st_text(q, 7, e->source, sizeof e->source);
    e->created = sqlite3_column_int64(q, 8);
    e->modified = sqlite3_column_int64(q, 9);
    e->rev = sqlite3_column_int64(q, 10);
    e->n_revisions = sqlite3_column_int(q, 11);
    e->blob_mtime_ns = sqlite3_column_int64(q, 12);
}

/* The other tags of a name, for a "not found" message. */
static void other_tags(struct store *s, const char *name, char *buf, size_t size)
{
    buf[0] = 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT tag FROM names WHERE name = ? ORDER BY tag", -1, &q, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    size_t o = 0;
    while (sqlite3_step(q) == SQLITE_ROW && o + 4 < size) {
        int n = snprintf(buf + o, size - o, "%s%s", o ? ", " : "", (const char *)sqlite3_column_text(q, 0));
        o = n < 0 ? o : o + (size_t)n < size ? o + (size_t)n : size - 1;
    }
    sqlite3_finalize(q);
}

static int lookup_ref(struct store *s, const struct store_ref *ref, struct store_entry *out, pb_err *err)
{
    sqlite3_stmt *q;
    int rc = st_prepare(s, ENTRY_SELECT " WHERE n.name = ? AND n.tag = ?", &q, err);
    if (rc)
        return rc;
    sqlite3_bind_text(q, 1, ref->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ref->tag, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        entry_read(q, out);
    } else if (step == SQLITE_DONE) {
        char tags[256];
        other_tags(s, ref->name, tags, sizeof tags);
        if (tags[0])
            rc = pb_fail(err, PB_ENOTFOUND, "%s:%s is not in the store (tags of %s: %s)", ref->name, ref->tag,
                         ref->name, tags);
        else
            rc = pb_fail(err, PB_ENOTFOUND, "%s:%s is not in the store", ref->name, ref->tag);
    } else {
        rc = st_fail(s, err, "looking up a name");
    }
    sqlite3_finalize(q);
    return rc;
}

int store_lookup(struct store *s, const char *ref, struct store_entry *out, pb_err *err)
{
    struct store_ref r;
    int rc = store_ref_parse(ref, &r, err);
    return rc ? rc : lookup_ref(s, &r, out, err);
}

int store_list(struct store *s, struct store_entry **out, size_t *n, pb_err *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *q;
    struct store_entry *v = NULL;
    size_t len = 0, cap = 0;
    int rc = st_prepare(s, ENTRY_SELECT " ORDER BY n.name, n.tag", &q, err);
    if (rc)
        return rc;
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? 2 * cap : 16;
            struct store_entry *nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                rc = pb_fail(err, PB_ENOMEM, "out of memory listing the store");
                goto fail;
            }
            v = nv;
        }
        entry_read(q, &v[len++]);
    }
    if (step != SQLITE_DONE) {
        rc = st_fail(s, err, "listing names");
        goto fail;
    }
    sqlite3_finalize(q);
    *out = v;
    *n = len;
    return PB_OK;
fail:
    sqlite3_finalize(q);
    free(v);
    return rc;
}

int store_history(struct store *s, const char *ref, struct store_revision **out, size_t *n, pb_err *err)
{
    *out = NULL;
    *n = 0;
    struct store_entry e;
    struct store_revision *v = NULL;
    sqlite3_stmt *q = NULL;
    int rc = store_lookup(s, ref, &e, err);
    if (rc)
        return rc;
    v = calloc((size_t)e.n_revisions + 1, sizeof *v);
    if (!v)
        return pb_fail(err, PB_ENOMEM, "out of memory reading a history");
    if ((rc = st_prepare(s,
                         "SELECT id, coalesce(parent, 0), digest, action, source, at FROM revisions"
                         " WHERE name = ? AND tag = ? ORDER BY id",
                         &q, err)))
        goto fail;
    sqlite3_bind_text(q, 1, e.ref.name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, e.ref.tag, -1, SQLITE_STATIC);
    size_t len = 0;
    while (len <= (size_t)e.n_revisions && sqlite3_step(q) == SQLITE_ROW) {
        struct store_revision *r = &v[len++];
        r->id = sqlite3_column_int64(q, 0);
        r->parent = sqlite3_column_int64(q, 1);
        st_text(q, 2, r->digest, sizeof r->digest);
        st_text(q, 3, r->action, sizeof r->action);
        st_text(q, 4, r->source, sizeof r->source);
        r->at = sqlite3_column_int64(q, 5);
        r->current = r->id == e.rev;
    }
    sqlite3_finalize(q);
    *out = v;
    *n = len;
    return PB_OK;
fail:
    free(v);
    return rc;
}

/* ---- changing names (each inside the caller's transaction) ---- */

/* Points ref at digest with a new revision (parent: the current one) when
 * it does not point there already; *moved tells which. */
static int point(struct store *s, const struct store_ref *ref, const char *digest, int64_t parent, const char *action,
                 const char *source, bool *moved, pb_err *err)
{
    struct store_entry cur;
    pb_err lerr = {0};
    int rc = lookup_ref(s, ref, &cur, &lerr);
    if (rc && rc != PB_ENOTFOUND)
        return pb_fail(err, rc, "%s", lerr.msg);
    bool exists = rc == PB_OK;
    *moved = !exists || strcmp(cur.digest, digest) != 0;
    if (!*moved)
        return PB_OK;
    sqlite3_stmt *q;
    if ((rc = st_prepare(s,
                         "INSERT INTO revisions(name, tag, digest, parent, action, source, at)"
                         " VALUES(?, ?, ?, ?, ?, ?, ?)",
                         &q, err)))
        return rc;
    sqlite3_bind_text(q, 1, ref->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ref->tag, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, digest, -1, SQLITE_STATIC);
    if (parent < 0)
        parent = exists ? cur.rev : 0;
    if (parent > 0)
        sqlite3_bind_int64(q, 4, parent);
    else
        sqlite3_bind_null(q, 4);
    sqlite3_bind_text(q, 5, action, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, source ? source : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, st_now());
    rc = sqlite3_step(q) == SQLITE_DONE ? PB_OK : st_fail(s, err, "adding a revision");
    sqlite3_finalize(q);
    if (rc)
        return rc;
    int64_t rev = sqlite3_last_insert_rowid(s->db);
    if ((rc = st_prepare(s,
                         "INSERT INTO names(name, tag, rev, created) VALUES(?, ?, ?, ?)"
                         " ON CONFLICT(name, tag) DO UPDATE SET rev = excluded.rev",
                         &q, err)))
        return rc;
    sqlite3_bind_text(q, 1, ref->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ref->tag, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, rev);
    sqlite3_bind_int64(q, 4, st_now());
    rc = sqlite3_step(q) == SQLITE_DONE ? PB_OK : st_fail(s, err, "pointing a name");
    sqlite3_finalize(q);
    return rc;
}

/* Whether the registry knows digest; *mtime (may be NULL) gets the
 * modification time recorded with it. */
static bool blob_known(struct store *s, const char *digest, int64_t *mtime, pb_err *err, int *rc)
{
    sqlite3_stmt *q;
    *rc = st_prepare(s, "SELECT mtime FROM blobs WHERE digest = ?", &q, err);
    if (*rc)
        return false;
    sqlite3_bind_text(q, 1, digest, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        *rc = st_fail(s, err, "looking up a blob");
    if (mtime)
        *mtime = step == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    return step == SQLITE_ROW;
}

int64_t store_file_mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Gives the file at path the modification time ns (nanoseconds). */
static int set_mtime(const char *path, int64_t ns)
{
    struct timespec t[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000}};
    return utimensat(AT_FDCWD, path, t, 0);
}

/* Records the blob file's modification time (after it took its place). */
static int record_mtime(struct store *s, const char *digest, pb_err *err)
{
    char blob[STORE_PATH_MAX];
    struct stat st;
    store_blob_path(s, digest, blob, sizeof blob);
    if (stat(blob, &st) != 0)
        return pb_fail(err, PB_EIO, "%s: %s", blob, strerror(errno));
    sqlite3_stmt *q;
    int rc = st_prepare(s, "UPDATE blobs SET mtime = ? WHERE digest = ?", &q, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(q, 1, store_file_mtime_ns(&st));
    sqlite3_bind_text(q, 2, digest, -1, SQLITE_STATIC);
    rc = sqlite3_step(q) == SQLITE_DONE ? PB_OK : st_fail(s, err, "recording a file's time");
    sqlite3_finalize(q);
    return rc;
}

int reg_add_set(struct store *s, struct reg_blob *b, size_t nb, struct reg_name *names, size_t nn,
                const char *action, const char *source, pb_err *err)
{
    char blob[STORE_PATH_MAX];
    for (size_t i = 0; i < nb; i++)
        b[i].known = b[i].renamed = false;
    int rc = st_begin(s, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < nb; i++) {
        store_blob_path(s, b[i].digest, blob, sizeof blob);
        int64_t mtime = 0;
        b[i].known = blob_known(s, b[i].digest, &mtime, err, &rc);
        if (rc)
            goto fail;
        struct stat st;
        if (b[i].known && b[i].keep_existing && stat(blob, &st) == 0 && (uint64_t)st.st_size == b[i].m->size &&
            (!mtime || mtime == store_file_mtime_ns(&st))) {
            /* the file in place stays, as it was registered */
        } else if ((b[i].keep_existing || !mtime || set_mtime(b[i].tmp_path, mtime) == 0) &&
                   rename(b[i].tmp_path, blob) == 0) {
            /* (a copy replacing a known blob takes the recorded time: the
             * registry's row stays as it was) */
            b[i].renamed = true;
        } else {
            rc = pb_fail(err, PB_EIO, "cannot move %s to %s: %s", b[i].tmp_path, blob, strerror(errno));
            goto fail;
        }
        if (b[i].known) {
            if (b[i].renamed && (b[i].keep_existing || !mtime) && (rc = record_mtime(s, b[i].digest, err)))
                goto fail; /* a link in place of the blob, or no time recorded yet: the file's time */
            continue;
        }
        sqlite3_stmt *q;
        if ((rc = st_prepare(s, "INSERT INTO blobs(digest, size, arch, quant, params, created) VALUES(?,?,?,?,?,?)",
                             &q, err)))
            goto fail;
        sqlite3_bind_text(q, 1, b[i].digest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, (sqlite3_int64)b[i].m->size);
        sqlite3_bind_text(q, 3, b[i].m->arch, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, b[i].m->quant, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 5, (sqlite3_int64)b[i].m->n_params);
        sqlite3_bind_int64(q, 6, st_now());
        rc = sqlite3_step(q) == SQLITE_DONE ? PB_OK : st_fail(s, err, "recording a blob");
        sqlite3_finalize(q);
        if (rc || (rc = record_mtime(s, b[i].digest, err)))
            goto fail;
    }
    for (size_t i = 0; i < nn; i++)
        if ((rc = point(s, names[i].ref, names[i].digest, -1, action, source, &names[i].changed, err)))
            goto fail;
    if ((rc = st_commit(s, err)))
        goto fail;
    files_sync_dir(s->blobs);
    return PB_OK;
fail:
    st_rollback(s);
    /* blobs no one knew go back to being the caller's temporary files */
    for (size_t i = 0; i < nb; i++) {
        if (b[i].renamed && !b[i].known) {
            store_blob_path(s, b[i].digest, blob, sizeof blob);
            (void)rename(blob, b[i].tmp_path);
        }
        b[i].renamed = false;
    }
    return rc;
}

int reg_add(struct store *s, const struct store_ref *ref, const char *digest, const struct blob_meta *m,
            const char *tmp_path, bool keep_existing, const char *source, struct store_pull_result *res,
            pb_err *err)
{
    struct reg_blob b = {.digest = digest, .m = m, .tmp_path = tmp_path, .keep_existing = keep_existing};
    struct reg_name n = {.ref = ref, .digest = digest};
    int rc = reg_add_set(s, &b, 1, &n, 1, "pull", source, err);
    if (rc)
        return rc;
    res->new_blob = !b.known;
    res->changed = n.changed;
    return lookup_ref(s, ref, &res->entry, err);
}

/* The end of tag and rollback, inside their transaction: points ref at
 * digest (point: parent < 0 for the current revision), commits, and reads
 * ref's entry into out (may be NULL). */
static int move_commit(struct store *s, const struct store_ref *ref, const char *digest, int64_t parent,
                       const char *action, const char *source, struct store_entry *out, pb_err *err)
{
    bool moved;
    int rc;
    if ((rc = point(s, ref, digest, parent, action, source, &moved, err)) || (rc = st_commit(s, err)))
        return rc;
    return out ? lookup_ref(s, ref, out, err) : PB_OK;
}

int store_tag(struct store *s, const char *src, const char *dst, struct store_entry *out, pb_err *err)
{
    struct store_ref from, to;
    struct store_entry e;
    int rc;
    if ((rc = store_ref_parse(src, &from, err)) || (rc = store_ref_parse(dst, &to, err)))
        return rc;
    if ((rc = st_begin(s, err)))
        return rc;
    char source[STORE_NAME_MAX + STORE_TAG_MAX + 16], fname[STORE_NAME_MAX + STORE_TAG_MAX + 2];
    store_ref_format(&from, fname, sizeof fname);
    snprintf(source, sizeof source, "tag of %s", fname);
    if ((rc = lookup_ref(s, &from, &e, err)) || (rc = move_commit(s, &to, e.digest, -1, "tag", source, out, err)))
        goto fail;
    return PB_OK;
fail:
    st_rollback(s);
    return rc;
}

int store_rollback(struct store *s, const char *ref, struct store_entry *out, pb_err *err)
{
    struct store_ref r;
    struct store_entry e;
    sqlite3_stmt *q = NULL;
    int rc = store_ref_parse(ref, &r, err);
    if (rc)
        return rc;
    if ((rc = st_begin(s, err)))
        return rc;
    if ((rc = lookup_ref(s, &r, &e, err)))
        goto fail;
    /* the revision the current one replaced, and what that one replaced */
    if ((rc = st_prepare(s,
                         "SELECT p.digest, coalesce(p.parent, 0), p.source FROM revisions c"
                         " JOIN revisions p ON p.id = c.parent WHERE c.id = ?",
                         &q, err)))
        goto fail;
    sqlite3_bind_int64(q, 1, e.rev);
    int step = sqlite3_step(q);
    if (step != SQLITE_ROW) {
        rc = step == SQLITE_DONE ? pb_fail(err, PB_ERANGE, "%s:%s has no earlier version to roll back to", r.name,
                                           r.tag)
                                 : st_fail(s, err, "reading a history");
        goto fail;
    }
    char digest[65], source[STORE_SOURCE_MAX];
    st_text(q, 0, digest, sizeof digest);
    int64_t grandparent = sqlite3_column_int64(q, 1);
    st_text(q, 2, source, sizeof source);
    sqlite3_finalize(q);
    q = NULL;
    /* the new revision takes the place of the one rolled back to: its
     * parent is that one's parent, so the next rollback goes further back */
    if ((rc = move_commit(s, &r, digest, grandparent, "rollback", source, out, err)))
        goto fail;
    return PB_OK;
fail:
    sqlite3_finalize(q);
    st_rollback(s);
    return rc;
}

/* ---- removing ---- */

struct removal {
    char digest[65];
    char path[STORE_PATH_MAX]; /* in tmp/ while the transaction runs; "" when the file was gone */
    int fd;                    /* holds the moved file's lock (files_move_aside), -1 with no file */
    uint64_t size;
};

/* A full disk: the registry could not be opened for writing (s is
 * read-only). The blob files only r's history uses are deleted first, which
 * makes room for SQLite's log and index; then the registry is opened for
 * writing again. */
static int rm_make_room(struct store *s, const struct store_ref *r, uint64_t *freed, pb_err *err)
{
    struct store_entry e;
    sqlite3_stmt *q;
    int rc;
    *freed = 0;
    if ((rc = lookup_ref(s, r, &e, err)) ||
        (rc = st_prepare(s,
                         "SELECT digest FROM blobs WHERE digest IN (SELECT digest FROM revisions WHERE name = ?1 AND"
                         " tag = ?2) AND digest NOT IN (SELECT digest FROM revisions WHERE name != ?1 OR tag != ?2)",
                         &q, err)))
        return rc;
    sqlite3_bind_text(q, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->tag, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW) {
        char digest[65], blob[STORE_PATH_MAX];
        struct stat st;
        st_text(q, 0, digest, sizeof digest);
        store_blob_path(s, digest, blob, sizeof blob);
        if (stat(blob, &st) == 0 && unlink(blob) == 0)
            *freed += (uint64_t)st.st_size;
    }
    sqlite3_finalize(q);
    files_sync_dir(s->blobs);
    sqlite3_close(s->db);
    s->db = NULL;
    s->readonly = false;
    if ((rc = db_open(s, err))) {
        char freed_s[32];
        snprintf(freed_s, sizeof freed_s, "%.1f MiB", (double)*freed / 1048576.0);
        pb_wrap(err, rc, "the disk is full: the files only %s:%s used were removed (%s freed), but the registry "
                "still names it (plumb verify shows its file missing); free more space and run plumb rm %s:%s "
                "again", r->name, r->tag, freed_s, r->name, r->tag);
        sqlite3_close(s->db);
        s->db = NULL;
        s->readonly = true;
        return rc;
    }
    return PB_OK;
}

int store_rm(struct store *s, const char *ref, struct store_rm_result *res, pb_err *err)
{
    struct store_ref r;
    struct store_entry e;
    struct removal *gone = NULL;
    size_t n_gone = 0;
    sqlite3_stmt *q = NULL;
    memset(res, 0, sizeof *res);
    int rc = store_ref_parse(ref, &r, err);
    if (rc)
        return rc;
    uint64_t freed_first = 0;
    if (s->readonly && (rc = rm_make_room(s, &r, &freed_first, err)))
        return rc;
    if ((rc = st_begin(s, err)))
        return rc;
    if ((rc = lookup_ref(s, &r, &e, err)) ||
        (rc = st_run(s, "DELETE FROM names WHERE name = ? AND tag = ?", err, r.name, r.tag, (char *)NULL)) ||
        (rc = st_run(s, "DELETE FROM revisions WHERE name = ? AND tag = ?", err, r.name, r.tag, (char *)NULL)))
        goto fail;
    snprintf(res->digest, sizeof res->digest, "%s", e.digest);
    if ((rc = st_prepare(s, "SELECT digest, size FROM blobs WHERE digest NOT IN (SELECT digest FROM revisions)", &q,
                         err)))
        goto fail;
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        struct removal *ng = realloc(gone, (n_gone + 1) * sizeof *gone);
        if (!ng) {
            rc = pb_fail(err, PB_ENOMEM, "out of memory removing blobs");
            goto fail;
        }
        gone = ng;
        struct removal *g = &gone[n_gone];
        st_text(q, 0, g->digest, sizeof g->digest);
        g->size = (uint64_t)sqlite3_column_int64(q, 1);
        g->fd = -1;
        g->path[0] = 0;
        char blob[STORE_PATH_MAX], prefix[80];
        store_blob_path(s, g->digest, blob, sizeof blob);
        snprintf(prefix, sizeof prefix, "rm-%s", g->digest);
        /* the blob moves onto a locked temporary name, so that a crash
         * before the commit can put it back (files_clean_tmp) */
        int m = files_move_aside(s, blob, prefix, "del", g->path, sizeof g->path, &g->fd, err);
        if (m == PB_ENOTFOUND) {
            g->path[0] = 0;
            g->size = 0; /* already gone: only the row goes */
        } else if (m) {
            rc = m;
            goto fail;
        }
        n_gone++;
    }
    if (step != SQLITE_DONE) {
        rc = st_fail(s, err, "finding unused blobs");
        goto fail;
    }
    sqlite3_finalize(q);
    q = NULL;
    if ((rc = st_exec(s, "DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM revisions)", err)) ||
        (rc = st_commit(s, err)))
        goto fail;
    for (size_t i = 0; i < n_gone; i++) {
        if (gone[i].path[0])
            unlink(gone[i].path);
        if (gone[i].fd >= 0)
            close(gone[i].fd);
        res->blobs_removed++;
        res->bytes_freed += gone[i].size;
    }
    res->bytes_freed += freed_first;
    files_sync_dir(s->blobs);
    free(gone);
    return PB_OK;
fail:
    sqlite3_finalize(q);
    st_rollback(s);
    for (size_t i = 0; i < n_gone; i++) {
        if (!gone[i].path[0])
            continue;
        char blob[STORE_PATH_MAX];
        store_blob_path(s, gone[i].digest, blob, sizeof blob);
        struct stat st;
        if (stat(blob, &st) != 0)
            (void)rename(gone[i].path, blob);
        else
            unlink(gone[i].path);
        close(gone[i].fd);
    }
    free(gone);
    return rc;
}

/* ---- verifying ---- */

/* Removes files in blobs/ the registry does not know (a pull killed
 * between its rename and its commit), under the write lock, so that no
 * live pull's blob is taken. */
static int remove_orphans(struct store *s, int *removed, pb_err *err)
{
    *removed = 0;
    int rc = st_begin(s, err);
    if (rc)
        return rc;
    DIR *d = opendir(s->blobs);
    if (!d) {
        rc = pb_fail(err, PB_EIO, "cannot read %s: %s", s->blobs, strerror(errno));
        goto fail;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "sha256-", 7) != 0 || !files_is_digest(de->d_name + 7))
            continue;
        int known_rc;
        bool known = blob_known(s, de->d_name + 7, NULL, err, &known_rc);
        if (known_rc) {
            rc = known_rc;
            break;
        }
        char path[STORE_PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", s->blobs, de->d_name);
        if (!known && unlink(path) == 0)
            (*removed)++;
    }
    closedir(d);
    if (rc)
        goto fail;
    return st_commit(s, err);
fail:
    st_rollback(s);
    return rc;
}

static void check_registry(struct store *s, struct store_verify_summary *sum)
{
    static const struct {
        const char *sql, *what;
    } checks[] = {
        {"PRAGMA quick_check", NULL},
        {"SELECT count(*) FROM names n LEFT JOIN revisions r ON r.id = n.rev"
         " WHERE r.id IS NULL OR r.name != n.name OR r.tag != n.tag",
         "names pointing at no revision of their own"},
        {"SELECT count(*) FROM revisions r LEFT JOIN blobs b ON b.digest = r.digest WHERE b.digest IS NULL",
         "revisions of unknown blobs"},
        {"SELECT count(*) FROM blobs WHERE digest NOT IN (SELECT digest FROM revisions)", "blobs no name uses"},
    };
    sum->registry_ok = true;
    snprintf(sum->registry_msg, sizeof sum->registry_msg, "ok");
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(s->db, checks[i].sql, -1, &q, NULL) != SQLITE_OK) {
            sum->registry_ok = false;
            snprintf(sum->registry_msg, sizeof sum->registry_msg, "%s", sqlite3_errmsg(s->db));
            return;
        }
        if (sqlite3_step(q) == SQLITE_ROW) {
            if (!checks[i].what) {
                const unsigned char *t = sqlite3_column_text(q, 0);
                if (!t || strcmp((const char *)t, "ok") != 0) {
                    sum->registry_ok = false;
                    snprintf(sum->registry_msg, sizeof sum->registry_msg, "%s", t ? (const char *)t : "?");
                }
            } else if (sqlite3_column_int64(q, 0) > 0) {
                sum->registry_ok = false;
                snprintf(sum->registry_msg, sizeof sum->registry_msg, "%lld %s",
                         (long long)sqlite3_column_int64(q, 0), checks[i].what);
            }
        }
        sqlite3_finalize(q);
        if (!sum->registry_ok)
            return;
    }
}

static void check_blob(struct store *s, struct store_blob_check *c, store_progress_fn progress, void *user)
{
    char path[STORE_PATH_MAX];
    store_blob_path(s, c->digest, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        c->state = STORE_BLOB_MISSING;
        return;
    }
    struct stat st;
    c->actual_size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (c->actual_size != c->size) {
        c->state = STORE_BLOB_SIZE;
        close(fd);
        return;
    }
    char label[32];
    snprintf(label, sizeof label, "sha256-%.12s", c->digest);
    pb_err herr;
    if (files_hash_fd(fd, label, c->actual, NULL, progress, user, NULL, &herr) != PB_OK ||
        strcmp(c->actual, c->digest) != 0)
        c->state = STORE_BLOB_CORRUPT;
    close(fd);
}

int store_verify(struct store *s, const char *ref, store_check_fn on_blob, store_progress_fn progress, void *user,
                 struct store_verify_summary *sum, pb_err *err)
{
    memset(sum, 0, sizeof *sum);
    sum->tmp_removed = s->tmp_removed;
    struct store_entry e;
    sqlite3_stmt *q = NULL, *nq = NULL;
    int rc;
    if (ref) {
        if ((rc = store_lookup(s, ref, &e, err)))
            return rc;
        sum->registry_ok = true;
        snprintf(sum->registry_msg, sizeof sum->registry_msg, "not checked");
    } else {
        /* (a read-only handle: a full disk; leftovers stay for later) */
        if (!s->readonly && (rc = remove_orphans(s, &sum->orphans_removed, err)))
            return rc;
        check_registry(s, sum);
    }
    if ((rc = st_prepare(s, ref ? "SELECT digest, size, mtime FROM blobs WHERE digest = ?"
                                : "SELECT digest, size, mtime FROM blobs ORDER BY digest",
                         &q, err)) ||
        (rc = st_prepare(s,
                         "SELECT n.name || ':' || n.tag FROM names n JOIN revisions r ON r.id = n.rev"
                         " WHERE r.digest = ? ORDER BY 1",
                         &nq, err)))
        goto fail;
    if (ref)
        sqlite3_bind_text(q, 1, e.digest, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        struct store_blob_check c = {0};
        st_text(q, 0, c.digest, sizeof c.digest);
        c.size = (uint64_t)sqlite3_column_int64(q, 1);
        sqlite3_reset(nq);
        sqlite3_bind_text(nq, 1, c.digest, -1, SQLITE_TRANSIENT);
        size_t o = 0;
        while (sqlite3_step(nq) == SQLITE_ROW && o + 4 < sizeof c.names) {
            int n = snprintf(c.names + o, sizeof c.names - o, "%s%s", o ? ", " : "",
                             (const char *)sqlite3_column_text(nq, 0));
            o = n < 0 ? o : o + (size_t)n < sizeof c.names ? o + (size_t)n : sizeof c.names - 1;
        }
        check_blob(s, &c, progress, user);
        /* intact with another modification time (touched, or an edit
         * undone): its time is recorded again, so that run accepts it */
        char path[STORE_PATH_MAX];
        struct stat st;
        store_blob_path(s, c.digest, path, sizeof path);
        if (c.state == STORE_BLOB_OK && !s->readonly && stat(path, &st) == 0 &&
            store_file_mtime_ns(&st) != sqlite3_column_int64(q, 2) && (rc = record_mtime(s, c.digest, err)))
            goto fail;
        sum->n_blobs++;
        if (c.state != STORE_BLOB_OK)
            sum->n_bad++;
        if (on_blob)
            on_blob(user, &c);
    }
    if (step != SQLITE_DONE)
        rc = st_fail(s, err, "listing blobs");
fail:
    sqlite3_finalize(q);
    sqlite3_finalize(nq);
    return rc;
}

int reg_point_known(struct store *s, const struct store_ref *ref, const char *digest, const char *source,
                    struct store_pull_result *res, pb_err *err)
{
    int rc = st_begin(s, err); /* the write lock: no removal between the look and the pointing */
    if (rc)
        return rc;
    sqlite3_stmt *q;
    if ((rc = st_prepare(s, "SELECT size, mtime FROM blobs WHERE digest = ?", &q, err))) {
        st_rollback(s);
        return rc;
    }
    sqlite3_bind_text(q, 1, digest, -1, SQLITE_STATIC);
    const int step = sqlite3_step(q);
    const uint64_t size = step == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(q, 0) : 0;
    const int64_t mtime = step == SQLITE_ROW ? sqlite3_column_int64(q, 1) : 0;
    sqlite3_finalize(q);
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = st_fail(s, err, "looking up a blob");
        st_rollback(s);
        return rc;
    }
    char blob[STORE_PATH_MAX];
    store_blob_path(s, digest, blob, sizeof blob);
    struct stat st;
    if (step != SQLITE_ROW || stat(blob, &st) != 0 || (uint64_t)st.st_size != size ||
        (mtime && mtime != store_file_mtime_ns(&st))) {
        st_rollback(s);
        return PB_ENOTFOUND;
    }
    memset(res, 0, sizeof *res);
    if ((rc = point(s, ref, digest, -1, "pull", source, &res->changed, err)) || (rc = st_commit(s, err))) {
        st_rollback(s);
        return rc;
    }
    return lookup_ref(s, ref, &res->entry, err);
}
