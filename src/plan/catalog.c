/* Catalog loading: built-in JSON (generated from the files in catalog/ at
 * build time, see cmake/embed.cmake), overridable file by file, every entry
 * checked against a field table. */
#define _GNU_SOURCE
#include "plumb/plan.h"

#include "base/err.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* generated: catalog_data.c */
extern const char plumb_catalog_models[], plumb_catalog_hardware[], plumb_catalog_prices[];
extern const size_t plumb_catalog_models_len, plumb_catalog_hardware_len, plumb_catalog_prices_len;

enum ftype { F_STR, F_INT, F_NUM, F_BOOL, F_KIND, F_URL, F_DATE, F_GGUF };

struct field {
    const char *name;
    enum ftype type;
    size_t off, size; /* in the entry struct; size: of a string buffer */
    bool required;
    double lo, hi;    /* numbers: allowed range */
};

#define S(st, f, req) {#f, F_STR, offsetof(struct st, f), sizeof(((struct st *)0)->f), req, 0, 0}
#define U(st, f) {#f, F_URL, offsetof(struct st, f), sizeof(((struct st *)0)->f), true, 0, 0}
#define D(st, f, req) {#f, F_DATE, offsetof(struct st, f), sizeof(((struct st *)0)->f), req, 0, 0}
#define I(st, f, req, lo, hi) {#f, F_INT, offsetof(struct st, f), 0, req, lo, hi}
#define N(st, f, req, lo, hi) {#f, F_NUM, offsetof(struct st, f), 0, req, lo, hi}
#define B(st, f) {#f, F_BOOL, offsetof(struct st, f), 0, true, 0, 0}

static const struct field model_fields[] = {
    S(cat_model, id, true),
    S(cat_model, name, true),
    S(cat_model, arch, true),
    I(cat_model, layers, true, 1, 1024),
    I(cat_model, hidden, true, 1, 1 << 17),
    I(cat_model, ffn, true, 1, 1 << 20),
    I(cat_model, heads, true, 1, 1024),
    I(cat_model, kv_heads, true, 1, 1024),
    I(cat_model, head_dim, true, 1, 1024),
    I(cat_model, vocab, true, 1, 1 << 22),
    I(cat_model, context, true, 1, 1 << 24),
    B(cat_model, tied_embeddings),
    N(cat_model, params_b, true, 1e-4, 1e4),
    I(cat_model, experts, false, 1, 1024),
    I(cat_model, experts_used, false, 1, 1024),
    I(cat_model, expert_ffn, false, 1, 1 << 20),
    N(cat_model, active_params_b, false, 1e-4, 1e4),
    I(cat_model, sliding_window, false, 1, 1 << 24),
    I(cat_model, swa_pattern, false, 1, 1024),
    S(cat_model, license, true),
    S(cat_model, note, false),
    U(cat_model, source),
    {"gguf", F_GGUF, offsetof(struct cat_model, gguf), 0, false, 0, 0},
};

static const struct field device_fields[] = {
    S(cat_device, id, true),
    S(cat_device, name, true),
    {"kind", F_KIND, offsetof(struct cat_device, kind), 0, true, 0, 0},
    S(cat_device, vendor, true),
    N(cat_device, memory_gb, true, 0.1, 1e6),
    N(cat_device, usable_fraction, false, 0.05, 1),
    N(cat_device, bandwidth_gbs, true, 0.1, 1e6),
    N(cat_device, fp16_tflops, true, 1e-3, 1e6),
    N(cat_device, int8_tops, true, 1e-3, 1e6),
    N(cat_device, power_w, true, 0.1, 1e6),
    N(cat_device, price_usd, true, 0, 1e9),
    D(cat_device, price_date, true),
    S(cat_device, price_note, false),
    S(cat_device, note, false),
    U(cat_device, source),
};

static const struct field price_fields[] = {
    S(cat_price, id, true),
    S(cat_price, provider, true),
    S(cat_price, model, true),
    N(cat_price, input_per_mtok, true, 0, 1e6),
    N(cat_price, output_per_mtok, true, 0, 1e6),
    S(cat_price, currency, true),
    D(cat_price, date, true),
    U(cat_price, source),
};

static const char *kind_names[] = {[CAT_GPU] = "gpu", [CAT_APPLE] = "apple", [CAT_APU] = "apu", [CAT_CPU] = "cpu"};

const char *cat_kind_name(enum cat_kind k)
{
    return (unsigned)k < sizeof kind_names / sizeof kind_names[0] ? kind_names[k] : "?";
}

struct table {
    const char *file;   /* "models.json" */
    const char *array;  /* its top-level array */
    const struct field *fields;
    size_t n_fields;
    size_t entry_size;
};

static const struct table tables[] = {
    [CAT_MODELS] = {"models.json", "models", model_fields, sizeof model_fields / sizeof model_fields[0],
                    sizeof(struct cat_model)},
    [CAT_DEVICES] = {"hardware.json", "devices", device_fields, sizeof device_fields / sizeof device_fields[0],
                     sizeof(struct cat_device)},
    [CAT_PRICES] = {"api-prices.json", "prices", price_fields, sizeof price_fields / sizeof price_fields[0],
                    sizeof(struct cat_price)},
};

static bool valid_id(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_')
            return false;
    return true;
}

/* "2024-06" or "2024-06-30" */
static bool valid_date(const char *s)
{
    int y, m, d, n = 0;
    size_t len = strlen(s);
    if (len == 7 && sscanf(s, "%4d-%2d%n", &y, &m, &n) == 2 && n == 7)
        return y >= 1990 && y <= 2100 && m >= 1 && m <= 12;
    if (len == 10 && sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) == 3 && n == 10)
        return y >= 1990 && y <= 2100 && m >= 1 && m <= 12 && d >= 1 && d <= 31;
    return false;
}

/* ---- "gguf": where a model's files live ---- */

const char *const cat_gguf_quants[] = {"F16",    "Q8_0",   "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_NL",
                                       "IQ4_XS", "Q3_K_M", "Q2_K", "MXFP4",  NULL};

static const char *gguf_quant_canonical(const char *name)
{
    for (int i = 0; cat_gguf_quants[i]; i++)
        if (!strcasecmp(cat_gguf_quants[i], name))
            return cat_gguf_quants[i];
    return NULL;
}

/* A path segment list of a URL as it is, without escaping: letters,
 * digits and "-._" (plus '/' between segments when slash), no empty
 * segment, none that is "." or "..", none starting with '.' or '-'. */
static bool url_path_ok(const char *s, bool slash)
{
    if (!*s)
        return false;
    const char *seg = s;
    for (const char *p = s;; p++) {
        if (*p == '/' || !*p) {
            size_t n = (size_t)(p - seg);
            if (n == 0 || seg[0] == '.' || seg[0] == '-')
                return false;
            if (!*p)
                return true;
            if (!slash)
                return false;
            seg = p + 1;
        } else if (!isalnum((unsigned char)*p) && !strchr("-._", *p)) {
            return false;
        }
    }
}

static bool hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s) && !(*s >= 'a' && *s <= 'f'))
            return false;
    return true;
}

/* A JSON string member into buf; false (err set) when absent and
 * required, not a string, empty or too long. */
static int gguf_str(const json_t *o, const char *key, bool required, char *buf, size_t size, const char *where,
                    pb_err *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        buf[0] = 0;
        return required ? pb_fail(err, PB_EFORMAT, "%s: '%s' is missing", where, key) : PB_OK;
    }
    if (!json_is_string(v) || !*json_string_value(v))
        return pb_fail(err, PB_EFORMAT, "%s: '%s' must be a non-empty string", where, key);
    if (strlen(json_string_value(v)) >= size)
        return pb_fail(err, PB_EFORMAT, "%s: '%s' is longer than %zu characters", where, key, size - 1);
    strcpy(buf, json_string_value(v));
    return PB_OK;
}

static int only_keys(const json_t *o, const char *const *keys, const char *where, pb_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        bool known = false;
        for (int i = 0; keys[i] && !known; i++)
            known = !strcmp(keys[i], key);
        if (!known)
            return pb_fail(err, PB_EFORMAT, "%s: unknown field '%s'", where, key);
    }
    return PB_OK;
}

/* {"repo": "owner/name", "revision": "main", "files": {"Q4_K_M":
 * {"file": "x-Q4_K_M.gguf", "sha256": "..."}, ...}} */
static int parse_gguf(const json_t *v, struct cat_gguf *g, const char *entry, pb_err *err)
{
    static const char *const top[] = {"repo", "revision", "files", NULL}, *const per[] = {"file", "sha256", NULL};
    char where[480];
    snprintf(where, sizeof where, "%s: gguf", entry);
    int rc;
    if (!json_is_object(v))
        return pb_fail(err, PB_EFORMAT, "%s: must be an object {\"repo\", \"revision\", \"files\"}", where);
    if ((rc = only_keys(v, top, where, err)) || (rc = gguf_str(v, "repo", true, g->repo, sizeof g->repo, where, err)) ||
        (rc = gguf_str(v, "revision", false, g->revision, sizeof g->revision, where, err)))
        return rc;
    const char *slash = strchr(g->repo, '/');
    if (!slash || strchr(slash + 1, '/') || !url_path_ok(g->repo, true))
        return pb_fail(err, PB_EFORMAT, "%s: 'repo' must be OWNER/NAME (letters, digits, '-', '.', '_'), got '%s'",
                       where, g->repo);
    if (!g->revision[0])
        strcpy(g->revision, "main");
    else if (!url_path_ok(g->revision, true))
        return pb_fail(err, PB_EFORMAT, "%s: 'revision' '%s' must be a branch, tag or commit (letters, digits, "
                       "'-', '.', '_', '/')", where, g->revision);
    const json_t *files = json_object_get(v, "files");
    if (!json_is_object(files) || json_object_size(files) == 0)
        return pb_fail(err, PB_EFORMAT, "%s: 'files' must be an object with a file per quantization", where);
    if (json_object_size(files) > CAT_GGUF_MAX_FILES)
        return pb_fail(err, PB_EFORMAT, "%s: more than %d files", where, CAT_GGUF_MAX_FILES);
    const char *q;
    json_t *f;
    json_object_foreach((json_t *)files, q, f) {
        char w[560];
        snprintf(w, sizeof w, "%s: files: %.40s", where, q);
        const char *canon = gguf_quant_canonical(q);
        if (!canon || strcmp(canon, q)) {
            char list[200];
            size_t n = 0;
            for (int i = 0; cat_gguf_quants[i] && n < sizeof list; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", cat_gguf_quants[i]);
            return pb_fail(err, PB_EFORMAT, "%s: not a quantization name (one of %s, upper case)", w, list);
        }
        struct cat_gguf_file *e = &g->files[g->n_files];
        snprintf(e->quant, sizeof e->quant, "%s", canon);
        if (!json_is_object(f))
            return pb_fail(err, PB_EFORMAT, "%s: must be an object {\"file\", \"sha256\"}", w);
        if ((rc = only_keys(f, per, w, err)) || (rc = gguf_str(f, "file", true, e->file, sizeof e->file, w, err)) ||
            (rc = gguf_str(f, "sha256", false, e->sha256, sizeof e->sha256, w, err)))
            return rc;
        size_t n = strlen(e->file);
        if (!url_path_ok(e->file, true) || n < 6 || strcasecmp(e->file + n - 5, ".gguf"))
            return pb_fail(err, PB_EFORMAT, "%s: 'file' must be a .gguf file name (letters, digits, '-', '.', '_', "
                           "'/' between folders), got '%s'", w, e->file);
        if (e->sha256[0] && !hex64(e->sha256))
            return pb_fail(err, PB_EFORMAT, "%s: 'sha256' must be 64 lower-case hexadecimal digits", w);
        g->n_files++;
    }
    return PB_OK;
}

/* One field of entry (a JSON object) into dst. */
static int parse_field(const struct field *f, const json_t *v, void *dst, const char *where, pb_err *err)
{
    char *p = (char *)dst + f->off;
    switch (f->type) {
    case F_STR:
    case F_URL:
    case F_DATE: {
        if (!json_is_string(v))
            return pb_fail(err, PB_EFORMAT, "%s: '%s' must be a string", where, f->name);
        const char *s = json_string_value(v);
        if (strlen(s) >= f->size)
            return pb_fail(err, PB_EFORMAT, "%s: '%s' is longer than %zu characters", where, f->name, f->size - 1);
        if (f->type == F_URL && strncmp(s, "https://", 8) && strncmp(s, "http://", 7))
            return pb_fail(err, PB_EFORMAT, "%s: '%s' must be a URL (http:// or https://), got '%s'", where, f->name, s);
        if (f->type == F_DATE && !valid_date(s))
            return pb_fail(err, PB_EFORMAT, "%s: '%s' must be a date YYYY-MM or YYYY-MM-DD, got '%s'", where, f->name,
                           s);
        if (f->required && !*s)
            return pb_fail(err, PB_EFORMAT, "%s: '%s' is empty", where, f->name);
        strcpy(p, s);
        return PB_OK;
    }
    case F_INT: {
        if (!json_is_integer(v) || json_integer_value(v) < f->lo || json_integer_value(v) > f->hi)
            return pb_fail(err, PB_EFORMAT, "%s: '%s' must be an integer in %.0f..%.0f", where, f->name, f->lo, f->hi);
        *(int64_t *)p = json_integer_value(v);
        return PB_OK;
    }
    case F_NUM: {
        double x = json_is_number(v) ? json_number_value(v) : NAN;
        if (!isfinite(x) || x < f->lo || x > f->hi)
            return pb_fail(err, PB_EFORMAT, "%s: '%s' must be a number in %g..%g", where, f->name, f->lo, f->hi);
        *(double *)p = x;
        return PB_OK;
    }
    case F_BOOL:
        if (!json_is_boolean(v))
            return pb_fail(err, PB_EFORMAT, "%s: '%s' must be true or false", where, f->name);
        *(bool *)p = json_is_true(v);
        return PB_OK;
    case F_KIND:
        for (size_t k = 0; k < sizeof kind_names / sizeof kind_names[0]; k++)
            if (json_is_string(v) && !strcmp(json_string_value(v), kind_names[k])) {
                *(enum cat_kind *)p = (enum cat_kind)k;
                return PB_OK;
            }
        return pb_fail(err, PB_EFORMAT, "%s: 'kind' must be one of gpu, apple, apu, cpu", where);
    case F_GGUF:
        return parse_gguf(v, (struct cat_gguf *)p, where, err);
    }
    return PB_OK;
}

/* Rules across fields, after every field is read. */
static int check_entry(enum cat_table t, const void *e, const char *where, pb_err *err)
{
    if (!valid_id((const char *)e)) /* id is the first member of each struct */
        return pb_fail(err, PB_EFORMAT, "%s: 'id' must be lower-case letters, digits, '-', '.' or '_'", where);
    if (t == CAT_MODELS) {
        const struct cat_model *m = e;
        if (m->heads % m->kv_heads)
            return pb_fail(err, PB_EFORMAT, "%s: heads (%lld) must be a multiple of kv_heads (%lld)", where,
                           (long long)m->heads, (long long)m->kv_heads);
        if ((m->experts > 0) != (m->experts_used > 0) || (m->experts > 0) != (m->expert_ffn > 0) ||
            (m->experts > 0) != (m->active_params_b > 0))
            return pb_fail(err, PB_EFORMAT, "%s: a mixture of experts needs all of experts, experts_used, expert_ffn "
                           "and active_params_b", where);
        if (m->experts_used > m->experts)
            return pb_fail(err, PB_EFORMAT, "%s: experts_used (%lld) is more than experts (%lld)", where,
                           (long long)m->experts_used, (long long)m->experts);
        if ((m->sliding_window > 0) != (m->swa_pattern > 0))
            return pb_fail(err, PB_EFORMAT, "%s: sliding_window and swa_pattern go together", where);
    } else if (t == CAT_DEVICES) {
        struct cat_device *d = (struct cat_device *)e;
        if (d->usable_fraction == 0)
            d->usable_fraction = 1;
    }
    return PB_OK;
}

static int parse_entry(enum cat_table t, const json_t *o, void *e, const char *where, pb_err *err)
{
    const struct table *tb = &tables[t];
    if (!json_is_object(o))
        return pb_fail(err, PB_EFORMAT, "%s: not a JSON object", where);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        bool known = false;
        for (size_t i = 0; i < tb->n_fields && !known; i++)
            known = !strcmp(tb->fields[i].name, key);
        if (!known) {
            char list[600];
            size_t n = 0;
            for (size_t i = 0; i < tb->n_fields && n < sizeof list; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", tb->fields[i].name);
            return pb_fail(err, PB_EFORMAT, "%s: unknown field '%s' (known: %s)", where, key, list);
        }
    }
    for (size_t i = 0; i < tb->n_fields; i++) {
        const struct field *f = &tb->fields[i];
        json_t *fv = json_object_get(o, f->name);
        if (!fv) {
            if (f->required)
                return pb_fail(err, PB_EFORMAT, "%s: '%s' is missing", where, f->name);
            continue;
        }
        int rc = parse_field(f, fv, e, where, err);
        if (rc)
            return rc;
    }
    return check_entry(t, e, where, err);
}

int catalog_parse(struct catalog *c, const char *which, const char *text, size_t len, const char *origin,
                  pb_err *err)
{
    enum cat_table t;
    for (t = CAT_MODELS; t <= CAT_PRICES; t++)
        if (!strcmp(tables[t].file, which))
            break;
    if (t > CAT_PRICES)
        return pb_fail(err, PB_EINVAL, "no catalog named '%s'", which);
    const struct table *tb = &tables[t];
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return pb_fail(err, PB_EFORMAT, "%s:%d:%d: %s", origin, je.line, je.column, je.text);
    json_t *arr = json_object_get(root, tb->array);
    int rc = PB_OK;
    char *entries = NULL;
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!json_is_array(arr)) {
        rc = pb_fail(err, PB_EFORMAT, "%s: expected an object with a '%s' array", origin, tb->array);
        goto done;
    }
    if (n == 0 || n > 100000) {
        rc = pb_fail(err, PB_EFORMAT, "%s: '%s' has %zu entries", origin, tb->array, n);
        goto done;
    }
    if (!(entries = calloc(n, tb->entry_size))) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && rc == PB_OK; i++) {
        const json_t *o = json_array_get(arr, i);
        const json_t *id = json_object_get(o, "id");
        char where[400];
        snprintf(where, sizeof where, "%s: %s entry %zu%s%.60s%s", origin, tb->array, i, json_is_string(id) ? " ('" : "",
                 json_is_string(id) ? json_string_value(id) : "", json_is_string(id) ? "')" : "");
        char *e = entries + i * tb->entry_size;
        rc = parse_entry(t, o, e, where, err);
        for (size_t j = 0; j < i && rc == PB_OK; j++)
            if (!strcmp(entries + j * tb->entry_size, e))
                rc = pb_fail(err, PB_EFORMAT, "%s: id '%s' is used twice (entries %zu and %zu)", origin, e, j, i);
    }
    if (rc)
        goto done;
    switch (t) {
    case CAT_MODELS:
        free(c->models);
        c->models = (struct cat_model *)entries;
        c->n_models = (int)n;
        break;
    case CAT_DEVICES:
        free(c->devices);
        c->devices = (struct cat_device *)entries;
        c->n_devices = (int)n;
        break;
    case CAT_PRICES:
        free(c->prices);
        c->prices = (struct cat_price *)entries;
        c->n_prices = (int)n;
        break;
    }
    entries = NULL;
    snprintf(c->origin[t], sizeof c->origin[t], "%s", origin);
done:
    free(entries);
    json_decref(root);
    return rc;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n < (64l << 20) && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *len = fread(buf, 1, (size_t)n, f);
            buf[*len] = 0;
        }
    }
    fclose(f);
    return buf;
}

int catalog_load(const char *dir, struct catalog **out, pb_err *err)
{
    *out = NULL;
    struct catalog *c = calloc(1, sizeof *c);
    if (!c)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    const char *data[] = {plumb_catalog_models, plumb_catalog_hardware, plumb_catalog_prices};
    const size_t lens[] = {plumb_catalog_models_len, plumb_catalog_hardware_len, plumb_catalog_prices_len};
    if (!dir)
        dir = getenv("PLUMB_CATALOG");
    if (dir && !*dir)
        dir = NULL;
    int rc = PB_OK;
    int found = 0;
    for (int t = CAT_MODELS; t <= CAT_PRICES && rc == PB_OK; t++) {
        char path[1024], origin[1100];
        snprintf(origin, sizeof origin, "%s (built in)", tables[t].file);
        if (dir) {
            snprintf(path, sizeof path, "%s/%s", dir, tables[t].file);
            size_t len = 0;
            char *text = read_file(path, &len);
            if (text) {
                found++;
                rc = catalog_parse(c, tables[t].file, text, len, path, err);
                free(text);
                continue;
            }
            if (errno != ENOENT) {
                rc = pb_fail(err, PB_EIO, "cannot read %s: %s", path, strerror(errno));
                break;
            }
        }
        rc = catalog_parse(c, tables[t].file, data[t], lens[t], origin, err);
    }
    if (rc == PB_OK && dir && found == 0)
        rc = pb_fail(err, PB_EIO, "catalog folder %s holds none of models.json, hardware.json, api-prices.json", dir);
    if (rc) {
        catalog_free(c);
        return rc;
    }
    *out = c;
    return PB_OK;
}

void catalog_free(struct catalog *c)
{
    if (!c)
        return;
    free(c->models);
    free(c->devices);
    free(c->prices);
    free(c);
}

static const char *entry_id(const struct catalog *c, enum cat_table t, int i)
{
    return t == CAT_MODELS ? c->models[i].id : t == CAT_DEVICES ? c->devices[i].id : c->prices[i].id;
}

static int table_size(const struct catalog *c, enum cat_table t)
{
    return t == CAT_MODELS ? c->n_models : t == CAT_DEVICES ? c->n_devices : c->n_prices;
}

static int find(const struct catalog *c, enum cat_table t, const char *id)
{
    for (int i = 0; i < table_size(c, t); i++)
        if (!strcasecmp(entry_id(c, t, i), id))
            return i;
    return -1;
}

const struct cat_model *catalog_model(const struct catalog *c, const char *id)
{
    int i = find(c, CAT_MODELS, id);
    return i < 0 ? NULL : &c->models[i];
}

const struct cat_device *catalog_device(const struct catalog *c, const char *id)
{
    int i = find(c, CAT_DEVICES, id);
    return i < 0 ? NULL : &c->devices[i];
}

const struct cat_price *catalog_price(const struct catalog *c, const char *id)
{
    int i = find(c, CAT_PRICES, id);
    return i < 0 ? NULL : &c->prices[i];
}

/* Levenshtein distance, case-insensitive, of strings up to 63 bytes. */
static int edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63)
        return 99;
    int row[64];
    for (size_t j = 0; j <= m; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int up = row[j];
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

void catalog_near(const struct catalog *c, enum cat_table t, const char *name, char *buf, size_t size)
{
    /* candidates: close spellings and ids containing the name or sharing
     * its first four letters; the latter first, then by distance */
    struct {
        int score, i;
    } best[5];
    int n = 0, limit = (int)strlen(name) / 3 + 1;
    for (int i = 0; i < table_size(c, t); i++) {
        const char *id = entry_id(c, t, i);
        int d = edit_distance(name, id);
        bool related = strlen(name) >= 3 && (strcasestr(id, name) || !strncasecmp(id, name, 4));
        if (d > limit && !related)
            continue;
        int score = (related ? 0 : 100) + d, k;
        if (n < 5)
            k = n++;
        else if (best[4].score > score)
            k = 4; /* replaces the worst */
        else
            continue;
        for (; k > 0 && best[k - 1].score > score; k--)
            best[k] = best[k - 1];
        best[k].score = score;
        best[k].i = i;
    }
    buf[0] = 0;
    size_t o = 0;
    for (int k = 0; k < n && o < size; k++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", k ? ", " : "", entry_id(c, t, best[k].i));
}

/* ---- GGUF files by name ---- */

const struct cat_gguf_file *cat_gguf_file_of(const struct cat_model *m, const char *quant)
{
    for (int i = 0; i < m->gguf.n_files; i++)
        if (!strcasecmp(m->gguf.files[i].quant, quant))
            return &m->gguf.files[i];
    return NULL;
}

int catalog_registry_check(const char *registry, pb_err *err)
{
    size_t skip = !strncasecmp(registry, "https://", 8) ? 8 : !strncasecmp(registry, "http://", 7) ? 7 : 0;
    if (!skip)
        return pb_fail(err, PB_EINVAL, "registry '%.200s' is not an http:// or https:// URL", registry);
    if (!registry[skip] || registry[skip] == '/')
        return pb_fail(err, PB_EINVAL, "registry '%.200s' names no host", registry);
    for (const char *p = registry; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
            return pb_fail(err, PB_EINVAL, "registry '%.200s': a base URL holds no spaces, control characters, "
                           "query or fragment", registry);
    if (strlen(registry) > 600)
        return pb_fail(err, PB_EINVAL, "registry URL longer than 600 characters");
    return PB_OK;
}

static void quant_list(const struct cat_model *m, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < m->gguf.n_files && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? ", " : "", m->gguf.files[i].quant);
}

int catalog_gguf_resolve(const struct catalog *c, const char *spec, const char *registry, struct cat_gguf_ref *out,
                         pb_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = catalog_registry_check(registry, err);
    if (rc)
        return rc;
    char name[128], list[400];
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (len == 0 || len >= sizeof name)
        return pb_fail(err, PB_ENOTFOUND, "'%.200s' is not a catalog model name", spec);
    memcpy(name, spec, len);
    name[len] = 0;
    const struct cat_model *m = catalog_model(c, name);
    if (!m) {
        char near[300];
        catalog_near(c, CAT_MODELS, name, near, sizeof near);
        return pb_fail(err, PB_ENOTFOUND, "'%s' is not a model of the catalog%s%s%s (plumb search WORD finds them)",
                       name, near[0] ? "; did you mean " : "", near, near[0] ? "?" : "");
    }
    if (!m->gguf.repo[0])
        return pb_fail(err, PB_EUNSUPPORTED, "the catalog knows no GGUF repository for %s: pull its file by URL",
                       m->id);
    const char *quant = colon ? colon + 1 : CAT_GGUF_DEFAULT_QUANT;
    const struct cat_gguf_file *f = cat_gguf_file_of(m, quant);
    quant_list(m, list, sizeof list);
    if (!f && !colon)
        return pb_fail(err, PB_EINVAL, "%s has no %s file in %s: name one of %s (%s:QUANT)", m->id,
                       CAT_GGUF_DEFAULT_QUANT, m->gguf.repo, list, m->id);
    if (!f)
        return pb_fail(err, PB_EINVAL, "%s: the catalog lists no %.40s file in %s; it lists %s", m->id, quant,
                       m->gguf.repo, list);
    size_t rl = strlen(registry);
    while (rl > 0 && registry[rl - 1] == '/')
        rl--;
    if ((size_t)snprintf(out->url, sizeof out->url, "%.*s/%s/resolve/%s/%s", (int)rl, registry, m->gguf.repo,
                         m->gguf.revision, f->file) >= sizeof out->url)
        return pb_fail(err, PB_EINVAL, "the URL of %s is too long", m->id);
    snprintf(out->name, sizeof out->name, "%s:%s", m->id, f->quant);
    for (char *p = out->name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    out->m = m;
    out->f = f;
    return PB_OK;
}
