/* Usage accounting in the registry (store.h: store_usage_add, _query). */
#include "store/store_internal.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>

int store_usage_add(struct store *s, const struct store_usage_row *r, pb_err *err)
{
    sqlite3_stmt *q;
    int rc = st_prepare(s,
                        "INSERT INTO usage(at, key, model, endpoint, status, prompt_tokens, completion_tokens, "
                        "cached_tokens, duration) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        &q, err);
    if (rc)
        return rc;
    sqlite3_bind_double(q, 1, r->at);
    sqlite3_bind_text(q, 2, r->key ? r->key : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, r->model ? r->model : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 4, r->endpoint ? r->endpoint : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(q, 5, r->status);
    sqlite3_bind_int(q, 6, r->prompt_tokens);
    sqlite3_bind_int(q, 7, r->completion_tokens);
    sqlite3_bind_int(q, 8, r->cached_tokens);
    sqlite3_bind_double(q, 9, r->duration_s);
    rc = sqlite3_step(q) == SQLITE_DONE ? PB_OK : st_fail(s, err, "recording usage");
    sqlite3_finalize(q);
    return rc;
}

int store_usage_query(struct store *s, double since, enum store_usage_by by, struct store_usage_sum **out, size_t *n,
                      pb_err *err)
{
    *out = NULL;
    *n = 0;
    static const char *const groups[] = {
        [STORE_USAGE_TOTAL] = "''",
        [STORE_USAGE_KEY] = "key",
        [STORE_USAGE_MODEL] = "model",
        [STORE_USAGE_DAY] = "strftime('%Y-%m-%d', at, 'unixepoch')",
    };
    if ((unsigned)by > STORE_USAGE_DAY)
        return pb_fail(err, PB_EINVAL, "unknown grouping %d", (int)by);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT %s AS g, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), min(at), "
             "max(at) FROM usage WHERE at >= ? GROUP BY g ORDER BY g",
             groups[by]);
    sqlite3_stmt *q;
    int rc = st_prepare(s, sql, &q, err);
    if (rc)
        return rc;
    sqlite3_bind_double(q, 1, since);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (sqlite3_column_int64(q, 1) == 0)
            continue; /* the empty total */
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            struct store_usage_sum *g = realloc(*out, cap * sizeof *g);
            if (!g) {
                rc = pb_fail(err, PB_ENOMEM, "out of memory");
                break;
            }
            *out = g;
        }
        struct store_usage_sum *u = &(*out)[(*n)++];
        memset(u, 0, sizeof *u);
        st_text(q, 0, u->group, sizeof u->group);
        u->requests = (uint64_t)sqlite3_column_int64(q, 1);
        u->prompt_tokens = (uint64_t)sqlite3_column_int64(q, 2);
        u->completion_tokens = (uint64_t)sqlite3_column_int64(q, 3);
        u->cached_tokens = (uint64_t)sqlite3_column_int64(q, 4);
        u->first = sqlite3_column_double(q, 5);
        u->last = sqlite3_column_double(q, 6);
    }
    if (!rc && step != SQLITE_DONE)
        rc = st_fail(s, err, "reading usage");
    sqlite3_finalize(q);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}
