/* Model names, the store's home, and the MODEL resolver. */
#define _GNU_SOURCE
#include "store/store_internal.h"
#include "base/err.h"

#include <ctype.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

/* Checks one part (name or tag) of len bytes and copies it lower-cased. */
static int part_parse(const char *text, const char *p, size_t len, size_t max, const char *what, char *out,
                      pb_err *err)
{
    if (len == 0)
        return pb_fail(err, PB_EINVAL, "model name '%.200s': empty %s", text, what);
    if (len > max)
        return pb_fail(err, PB_EINVAL, "model name '%.40s...': the %s is %zu bytes, at most %zu", text, what, len,
                       max);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!name_char((char)c)) {
            if (c < 0x20 || c == 0x7f)
                return pb_fail(err, PB_EINVAL, "model name: control character 0x%02x in the %s", c, what);
            if (c >= 0x80)
                return pb_fail(err, PB_EINVAL, "model name '%.200s': non-ASCII byte in the %s", text, what);
            return pb_fail(err, PB_EINVAL,
                           "model name '%.200s': '%c' is not allowed in the %s (letters, digits, '.', '_' and '-')",
                           text, c, what);
        }
        out[i] = (char)tolower(c);
    }
    out[len] = 0;
    if (!isalnum((unsigned char)p[0]))
        return pb_fail(err, PB_EINVAL, "model name '%.200s': the %s must start with a letter or digit", text, what);
    if (strstr(out, ".."))
        return pb_fail(err, PB_EINVAL, "model name '%.200s': '..' is not allowed", text);
    return PB_OK;
}

int store_ref_parse(const char *text, struct store_ref *out, pb_err *err)
{
    if (!text)
        return pb_fail(err, PB_EINVAL, "no model name");
    size_t n = strnlen(text, STORE_NAME_MAX + STORE_TAG_MAX + 2);
    if (n > STORE_NAME_MAX + STORE_TAG_MAX + 1)
        return pb_fail(err, PB_EINVAL, "model name '%.40s...' is too long (at most %d bytes and a %d-byte tag)", text,
                       STORE_NAME_MAX, STORE_TAG_MAX);
    const char *colon = memchr(text, ':', n);
    size_t name_len = colon ? (size_t)(colon - text) : n;
    int rc = part_parse(text, text, name_len, STORE_NAME_MAX, "name", out->name, err);
    if (rc)
        return rc;
    if (!colon) {
        strcpy(out->tag, STORE_DEFAULT_TAG);
        return PB_OK;
    }
    return part_parse(text, colon + 1, n - name_len - 1, STORE_TAG_MAX, "tag", out->tag, err);
}

void store_ref_format(const struct store_ref *r, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%s", r->name, r->tag);
}

int store_default_home(char *buf, size_t size, pb_err *err)
{
    const char *env = getenv("PLUMB_HOME");
    int n;
    if (env && *env) {
        n = snprintf(buf, size, "%s", env);
    } else if ((env = getenv("XDG_DATA_HOME")) && *env == '/') {
        n = snprintf(buf, size, "%s/plumb", env);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home || !*home)
            return pb_fail(err, PB_EINVAL, "no store home: set PLUMB_HOME (HOME is not set either)");
        n = snprintf(buf, size, "%s/.local/share/plumb", home);
    }
    if (n < 0 || (size_t)n >= size)
        return pb_fail(err, PB_EINVAL, "store home path is too long");
    return PB_OK;
}

int store_resolve(const char *home_in, const char *model, char *path, size_t size, struct store_entry *entry,
                  pb_err *err)
{
    struct stat st;
    if (entry)
        memset(entry, 0, sizeof *entry);
    if (!model || !*model)
        return pb_fail(err, PB_EINVAL, "no model given");
    bool is_file = stat(model, &st) == 0 && S_ISREG(st.st_mode);
    if (strchr(model, '/') || is_file) {
        if (strlen(model) >= size)
            return pb_fail(err, PB_EINVAL, "path too long: %.100s...", model);
        strcpy(path, model); /* opening it says what is wrong with it, if anything */
        return PB_OK;
    }
    struct store_ref ref;
    pb_err nerr = {0};
    if (store_ref_parse(model, &ref, &nerr))
        return pb_fail(err, PB_ENOTFOUND, "%.200s: no such file, nor a valid model name (%s)", model, nerr.msg);
    char home[STORE_PATH_MAX], db[STORE_PATH_MAX + 16];
    int rc = PB_OK;
    if (home_in && *home_in) {
        if (strlen(home_in) >= sizeof home)
            return pb_fail(err, PB_EINVAL, "store path too long: %.100s...", home_in);
        snprintf(home, sizeof home, "%s", home_in);
    } else if ((rc = store_default_home(home, sizeof home, err))) {
        return rc;
    }
    snprintf(db, sizeof db, "%s/registry.db", home);
    if (stat(db, &st) != 0)
        return pb_fail(err, PB_ENOTFOUND, "%.200s: no such file, and no model store at %s ('plumb pull' fills it)",
                       model, home);
    struct store *s = NULL;
    struct store_entry e;
    if ((rc = store_open_readonly(home, &s, err)))
        return rc;
    if ((rc = store_lookup(s, model, &e, err))) {
        if (rc == PB_ENOTFOUND)
            pb_wrap(err, rc, "%.200s is neither a file nor a model in the store at %s", model, home);
        goto fail;
    }
    store_blob_path(s, e.digest, path, size);
    /* the file as it was registered: a hard-linked original edited in
     * place changes the model under its name */
    char name[STORE_NAME_MAX + STORE_TAG_MAX + 2];
    store_ref_format(&e.ref, name, sizeof name);
    if (stat(path, &st) != 0) {
        rc = pb_fail(err, PB_EIO, "the file of %s is missing from the store (%s): plumb verify checks the store, "
                     "and plumb pull brings the model back", name, path);
        goto fail;
    }
    if ((uint64_t)st.st_size != e.size || (e.blob_mtime_ns && store_file_mtime_ns(&st) != e.blob_mtime_ns)) {
        char again[STORE_SOURCE_MAX + 200];
        if (e.source[0] && strncmp(e.source, "tag of ", 7) != 0)
            snprintf(again, sizeof again, "plumb pull %.300s --name %s", e.source, name);
        else
            snprintf(again, sizeof again, "plumb pull its source again (plumb show %s has its history)", name);
        rc = pb_fail(err, PB_EIO, "the file of %s changed since it was pulled (%s: %s; a hard-linked original "
                     "edited in place?): plumb verify %s says whether it is intact (and accepts it again if so); "
                     "else %s", name, path,
                     (uint64_t)st.st_size != e.size ? "its size differs" : "its modification time differs", name,
                     again);
        goto fail;
    }
    if (entry)
        *entry = e;
fail:
    store_close(s);
    return rc;
}
