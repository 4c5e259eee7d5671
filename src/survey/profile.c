/* The machine profile: running the survey, the JSON form, and where the
 * profile and the calibration records are kept. */
#define _GNU_SOURCE
#include "survey/survey_internal.h"

#include "plumb/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROFILE_VERSION 1

void survey_now_iso(char *buf, size_t size)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int survey_run(const struct survey_params *p, struct survey *s, pb_err *err)
{
    memset(s, 0, sizeof *s);
    survey_now_iso(s->created, sizeof s->created);
    int rc = survey_read_facts(p, s, err);
    if (rc)
        return rc;
    survey_read_gpus(p, s);
    return p->no_measure ? PB_OK : survey_measure(p, s, err);
}

/* ---- places ---- */

int survey_home(char *buf, size_t size, pb_err *err)
{
    return store_default_home(buf, size, err); /* the store owns the layout of plumb's home */
}

static int home_sub(char *buf, size_t size, const char *sub, pb_err *err)
{
    char home[512];
    int rc = survey_home(home, sizeof home, err);
    if (rc)
        return rc;
    int n = snprintf(buf, size, "%s/%s", home, sub);
    return n < 0 || (size_t)n >= size ? pb_fail(err, PB_EINVAL, "PLUMB_HOME is too long") : PB_OK;
}

int survey_dir(char *buf, size_t size, pb_err *err) { return home_sub(buf, size, "machine", err); }
int survey_models_dir(char *buf, size_t size, pb_err *err) { return home_sub(buf, size, "blobs", err); }

/* mkdir -p */
static int make_dirs(const char *dir, pb_err *err)
{
    char p[1024];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return pb_fail(err, PB_EINVAL, "path too long: %s", dir);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return pb_fail(err, PB_EIO, "cannot create %s: %s", p, strerror(errno));
            *s = c;
            if (!c)
                break;
        }
    }
    return PB_OK;
}

/* Writes v (stolen) to dir/name through a temporary file and a rename. */
static int write_json_atomic(const char *dir, const char *name, json_t *v, pb_err *err)
{
    if (!v)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    char path[1100], tmp[1200];
    int rc = make_dirs(dir, err);
    if (rc)
        goto done;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = pb_fail(err, PB_EIO, "cannot write in %s: %s", dir, strerror(errno));
        goto done;
    }
    if (json_dumpfd(v, fd, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
        rc = pb_fail(err, PB_EIO, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        rc = pb_fail(err, PB_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
    }
done:
    json_decref(v);
    return rc;
}

/* ---- JSON ---- */

json_t *survey_to_json(const struct survey *s)
{
    json_t *features = json_array(), *caches = json_array(), *gpus = json_array();
    for (int i = 0; i < s->cpu.n_features; i++)
        json_array_append_new(features, json_string(s->cpu.features[i]));
    for (int i = 0; i < s->cpu.n_caches; i++) {
        const struct survey_cache *c = &s->cpu.caches[i];
        json_array_append_new(caches, json_pack("{s:i,s:s,s:I,s:i}", "level", c->level, "type", c->type, "bytes",
                                                (json_int_t)c->bytes, "instances", c->instances));
    }
    for (int i = 0; i < s->n_gpus; i++) {
        const struct survey_gpu *g = &s->gpus[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s}", "name", g->name, "vendor", g->vendor, "source", g->source,
                              "memory_total_bytes", (json_int_t)g->mem_total, "memory_free_bytes",
                              (json_int_t)g->mem_free, "driver", g->driver);
        if (g->cc_major >= 0) {
            char cc[16];
            snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
            json_object_set_new(o, "compute_capability", json_string(cc));
        }
        if (g->bandwidth_gbs > 0)
            json_object_set_new(o, "bandwidth_gbs", json_real(g->bandwidth_gbs));
        if (g->power_limit_w > 0)
            json_object_set_new(o, "power_limit_w", json_real(g->power_limit_w));
        json_array_append_new(gpus, o);
    }
    json_t *cpu = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:f,s:o,s:s,s:o,s:i}", "model", s->cpu.model, "vendor",
                            s->cpu.vendor, "arch", s->cpu.arch, "sockets", s->cpu.sockets, "cores", s->cpu.cores,
                            "threads", s->cpu.threads, "threads_online", s->cpu.threads_online, "mhz_max",
                            s->cpu.mhz_max, "features", features, "kernels", s->cpu.kernels, "caches", caches,
                            "numa_nodes", s->cpu.numa_nodes);
    json_t *mem = json_pack("{s:I,s:I,s:{s:I,s:I,s:I},s:s,s:f,s:f,s:i,s:I}", "total_bytes",
                            (json_int_t)s->memory.total, "available_bytes", (json_int_t)s->memory.available,
                            "hugepages", "total", (json_int_t)s->memory.hugepages_total, "free",
                            (json_int_t)s->memory.hugepages_free, "size_bytes", (json_int_t)s->memory.hugepage_size,
                            "transparent_hugepages", s->memory.thp, "bandwidth_gbs", s->memory.bandwidth_gbs,
                            "triad_gbs", s->memory.triad_gbs, "bandwidth_threads", s->memory.bw_threads,
                            "bandwidth_buffer_bytes", (json_int_t)s->memory.bw_bytes);
    return json_pack("{s:i,s:s,s:s,s:s,s:s,s:o,s:o,s:{s:f,s:f,s:i},s:{s:s,s:I,s:I},s:o,s:s,s:f}", "version",
                     PROFILE_VERSION, "created", s->created, "plumb", s->plumb_version, "host", s->host, "kernel",
                     s->kernel, "cpu", cpu, "memory", mem, "compute", "int8_gops", s->compute.int8_gops, "f32_gflops",
                     s->compute.f32_gflops, "threads", s->compute.threads, "disk", "path", s->disk.path, "free_bytes",
                     (json_int_t)s->disk.free, "total_bytes", (json_int_t)s->disk.total, "gpus", gpus, "gpu_note",
                     s->gpu_note, "measure_s", s->measure_s);
}

/* Readers of one field at "obj.key"; a missing optional field leaves the
 * destination as it is. */
struct jread {
    const char *what; /* "profile", "calibration record 3" */
    pb_err *err;
    int rc;
};

static json_t *jfield(struct jread *r, const json_t *o, const char *obj, const char *key, bool required)
{
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    if (!v && required && r->rc == PB_OK)
        r->rc = pb_fail(r->err, PB_EFORMAT, "%s: field '%s%s%s' is missing", r->what, obj, *obj ? "." : "", key);
    return v;
}

static void jnum(struct jread *r, const json_t *o, const char *obj, const char *key, bool required, double lo,
                 double *out)
{
    json_t *v = jfield(r, o, obj, key, required);
    if (!v || r->rc)
        return;
    if (!json_is_number(v) || json_number_value(v) < lo)
        r->rc = pb_fail(r->err, PB_EFORMAT, "%s: field '%s%s%s' must be a number >= %g", r->what, obj, *obj ? "." : "",
                        key, lo);
    else
        *out = json_number_value(v);
}

static void jint(struct jread *r, const json_t *o, const char *obj, const char *key, bool required, long long lo,
                 long long *out)
{
    json_t *v = jfield(r, o, obj, key, required);
    if (!v || r->rc)
        return;
    if (!json_is_integer(v) || json_integer_value(v) < lo)
        r->rc = pb_fail(r->err, PB_EFORMAT, "%s: field '%s%s%s' must be an integer >= %lld", r->what, obj,
                        *obj ? "." : "", key, lo);
    else
        *out = json_integer_value(v);
}

static void jstr(struct jread *r, const json_t *o, const char *obj, const char *key, bool required, char *out,
                 size_t size)
{
    json_t *v = jfield(r, o, obj, key, required);
    if (!v || r->rc)
        return;
    if (!json_is_string(v))
        r->rc = pb_fail(r->err, PB_EFORMAT, "%s: field '%s%s%s' must be a string", r->what, obj, *obj ? "." : "", key);
    else
        snprintf(out, size, "%s", json_string_value(v));
}

#define JINT(r, o, obj, key, req, lo, dst)                                                                             \
    do {                                                                                                               \
        long long v_ = (long long)(dst);                                                                               \
        jint(r, o, obj, key, req, lo, &v_);                                                                            \
        (dst) = v_;                                                                                                    \
    } while (0)

int survey_from_json(const json_t *j, struct survey *s, pb_err *err)
{
    memset(s, 0, sizeof *s);
    struct jread r = {"machine profile", err, PB_OK};
    if (!json_is_object(j))
        return pb_fail(err, PB_EFORMAT, "machine profile: not a JSON object");
    long long version = 0;
    jint(&r, j, "", "version", true, 1, &version);
    if (r.rc == PB_OK && version != PROFILE_VERSION)
        return pb_fail(err, PB_EFORMAT, "machine profile: version %lld, this plumb reads version %d (run plumb survey)",
                       version, PROFILE_VERSION);
    jstr(&r, j, "", "created", true, s->created, sizeof s->created);
    jstr(&r, j, "", "host", false, s->host, sizeof s->host);
    jstr(&r, j, "", "kernel", false, s->kernel, sizeof s->kernel);
    jstr(&r, j, "", "plumb", false, s->plumb_version, sizeof s->plumb_version);
    const json_t *cpu = jfield(&r, j, "", "cpu", true), *mem = jfield(&r, j, "", "memory", true),
                 *comp = jfield(&r, j, "", "compute", true), *disk = json_object_get(j, "disk");
    jstr(&r, cpu, "cpu", "model", true, s->cpu.model, sizeof s->cpu.model);
    jstr(&r, cpu, "cpu", "vendor", false, s->cpu.vendor, sizeof s->cpu.vendor);
    jstr(&r, cpu, "cpu", "arch", false, s->cpu.arch, sizeof s->cpu.arch);
    jstr(&r, cpu, "cpu", "kernels", false, s->cpu.kernels, sizeof s->cpu.kernels);
    JINT(&r, cpu, "cpu", "threads", true, 1, s->cpu.threads);
    JINT(&r, cpu, "cpu", "threads_online", false, 1, s->cpu.threads_online);
    JINT(&r, cpu, "cpu", "sockets", false, 0, s->cpu.sockets);
    JINT(&r, cpu, "cpu", "cores", false, 0, s->cpu.cores);
    JINT(&r, cpu, "cpu", "numa_nodes", false, 0, s->cpu.numa_nodes);
    jnum(&r, cpu, "cpu", "mhz_max", false, 0, &s->cpu.mhz_max);
    const json_t *feat = cpu ? json_object_get(cpu, "features") : NULL;
    for (size_t i = 0; json_is_array(feat) && i < json_array_size(feat) && s->cpu.n_features < SURVEY_MAX_FEATURES; i++)
        if (json_is_string(json_array_get(feat, i)))
            snprintf(s->cpu.features[s->cpu.n_features++], sizeof s->cpu.features[0], "%s",
                     json_string_value(json_array_get(feat, i)));
    const json_t *caches = cpu ? json_object_get(cpu, "caches") : NULL;
    for (size_t i = 0; json_is_array(caches) && i < json_array_size(caches) && s->cpu.n_caches < SURVEY_MAX_CACHES;
         i++) {
        const json_t *c = json_array_get(caches, i);
        struct survey_cache *d = &s->cpu.caches[s->cpu.n_caches++];
        JINT(&r, c, "cpu.caches[]", "level", true, 0, d->level);
        JINT(&r, c, "cpu.caches[]", "bytes", true, 0, d->bytes);
        JINT(&r, c, "cpu.caches[]", "instances", false, 0, d->instances);
        jstr(&r, c, "cpu.caches[]", "type", false, d->type, sizeof d->type);
    }
    JINT(&r, mem, "memory", "total_bytes", true, 1, s->memory.total);
    JINT(&r, mem, "memory", "available_bytes", false, 0, s->memory.available);
    jnum(&r, mem, "memory", "bandwidth_gbs", true, 0, &s->memory.bandwidth_gbs);
    jnum(&r, mem, "memory", "triad_gbs", false, 0, &s->memory.triad_gbs);
    JINT(&r, mem, "memory", "bandwidth_threads", false, 0, s->memory.bw_threads);
    JINT(&r, mem, "memory", "bandwidth_buffer_bytes", false, 0, s->memory.bw_bytes);
    jstr(&r, mem, "memory", "transparent_hugepages", false, s->memory.thp, sizeof s->memory.thp);
    const json_t *hp = mem ? json_object_get(mem, "hugepages") : NULL;
    JINT(&r, hp, "memory.hugepages", "total", false, 0, s->memory.hugepages_total);
    JINT(&r, hp, "memory.hugepages", "free", false, 0, s->memory.hugepages_free);
    JINT(&r, hp, "memory.hugepages", "size_bytes", false, 0, s->memory.hugepage_size);
    jnum(&r, comp, "compute", "int8_gops", true, 0, &s->compute.int8_gops);
    jnum(&r, comp, "compute", "f32_gflops", true, 0, &s->compute.f32_gflops);
    JINT(&r, comp, "compute", "threads", false, 0, s->compute.threads);
    jstr(&r, disk, "disk", "path", false, s->disk.path, sizeof s->disk.path);
    JINT(&r, disk, "disk", "free_bytes", false, 0, s->disk.free);
    JINT(&r, disk, "disk", "total_bytes", false, 0, s->disk.total);
    const json_t *gpus = json_object_get(j, "gpus");
    for (size_t i = 0; json_is_array(gpus) && i < json_array_size(gpus) && s->n_gpus < SURVEY_MAX_GPUS; i++) {
        const json_t *g = json_array_get(gpus, i);
        struct survey_gpu *d = &s->gpus[s->n_gpus++];
        d->cc_major = d->cc_minor = -1;
        jstr(&r, g, "gpus[]", "name", true, d->name, sizeof d->name);
        jstr(&r, g, "gpus[]", "vendor", false, d->vendor, sizeof d->vendor);
        jstr(&r, g, "gpus[]", "source", false, d->source, sizeof d->source);
        jstr(&r, g, "gpus[]", "driver", false, d->driver, sizeof d->driver);
        JINT(&r, g, "gpus[]", "memory_total_bytes", false, 0, d->mem_total);
        JINT(&r, g, "gpus[]", "memory_free_bytes", false, 0, d->mem_free);
        jnum(&r, g, "gpus[]", "bandwidth_gbs", false, 0, &d->bandwidth_gbs);
        jnum(&r, g, "gpus[]", "power_limit_w", false, 0, &d->power_limit_w);
        char cc[16] = "";
        jstr(&r, g, "gpus[]", "compute_capability", false, cc, sizeof cc);
        if (cc[0] && sscanf(cc, "%d.%d", &d->cc_major, &d->cc_minor) != 2)
            d->cc_major = d->cc_minor = -1;
    }
    jstr(&r, j, "", "gpu_note", false, s->gpu_note, sizeof s->gpu_note);
    jnum(&r, j, "", "measure_s", false, 0, &s->measure_s);
    return r.rc;
}

int survey_save(const struct survey *s, const char *dir, pb_err *err)
{
    return write_json_atomic(dir, "profile.json", survey_to_json(s), err);
}

/* Parses dir/name; PB_EIO with "absent" when the file does not exist. */
static int read_json(const char *dir, const char *name, json_t **out, bool *absent, pb_err *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL;
    *absent = false;
    if (access(path, F_OK) != 0) {
        *absent = true;
        return pb_fail(err, PB_EIO, "%s does not exist", path);
    }
    json_error_t je;
    *out = json_load_file(path, 0, &je);
    if (!*out)
        return pb_fail(err, PB_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return PB_OK;
}

int survey_load(const char *dir, struct survey *s, pb_err *err)
{
    json_t *j;
    bool absent;
    int rc = read_json(dir, "profile.json", &j, &absent, err);
    if (rc)
        return absent ? pb_fail(err, PB_EIO, "no machine profile in %s yet (run plumb survey)", dir) : rc;
    rc = survey_from_json(j, s, err);
    json_decref(j);
    if (rc)
        pb_wrap(err, rc, "%s/profile.json", dir);
    return rc;
}

/* ---- calibration ---- */

int survey_calib_size_class(uint64_t weight_bytes)
{
    int c = 0;
    for (uint64_t edge = SURVEY_CALIB_MIN_WEIGHTS; weight_bytes >= edge && c < 30; edge *= 4)
        c++;
    return c;
}

bool survey_calib_applies(uint64_t record_weights, uint64_t model_weights)
{
    const int a = survey_calib_size_class(record_weights), b = survey_calib_size_class(model_weights);
    return a == b || (a > 0 && b > 0 && (a - b == 1 || b - a == 1));
}

bool survey_calib_representative(const struct survey_calib *c, char *why, size_t size)
{
    char buf[200];
    if (!why) {
        why = buf;
        size = sizeof buf;
    }
    if (c->weight_bytes < SURVEY_CALIB_MIN_WEIGHTS) {
        snprintf(why, size, "a model of %.1f MiB of weights runs from the CPU's caches: its speed says nothing of "
                 "models of %llu MiB and more", (double)c->weight_bytes / 1048576.0,
                 (unsigned long long)(SURVEY_CALIB_MIN_WEIGHTS >> 20));
        return false;
    }
    if ((c->tg_tps > 0 && c->tg_tokens < SURVEY_CALIB_MIN_TG) || (c->pp_tps > 0 && c->pp_tokens < SURVEY_CALIB_MIN_PP)) {
        snprintf(why, size, "the tests are short (calibration takes -p %d or more, -n %d or more)", SURVEY_CALIB_MIN_PP,
                 SURVEY_CALIB_MIN_TG);
        return false;
    }
    return true;
}

static json_t *calib_to_json(const struct survey_calib *c)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:f,s:f,s:i,s:f,s:i}", "created", c->created, "model", c->model,
                     "ftype", c->ftype, "kernels", c->kernels, "threads", c->threads, "model_bytes",
                     (json_int_t)c->model_bytes, "weight_bytes", (json_int_t)c->weight_bytes, "n_params",
                     (json_int_t)c->n_params, "bandwidth_gbs", c->bandwidth_gbs, "pp_tps", c->pp_tps, "pp_tokens",
                     c->pp_tokens, "tg_tps", c->tg_tps, "tg_tokens", c->tg_tokens);
}

static int calib_from_json(const json_t *o, int index, struct survey_calib *c, pb_err *err)
{
    char what[64];
    snprintf(what, sizeof what, "calibration record %d", index);
    struct jread r = {what, err, PB_OK};
    memset(c, 0, sizeof *c);
    if (!json_is_object(o))
        return pb_fail(err, PB_EFORMAT, "%s: not a JSON object", what);
    jstr(&r, o, "", "created", true, c->created, sizeof c->created);
    jstr(&r, o, "", "model", true, c->model, sizeof c->model);
    jstr(&r, o, "", "ftype", false, c->ftype, sizeof c->ftype);
    jstr(&r, o, "", "kernels", true, c->kernels, sizeof c->kernels);
    JINT(&r, o, "", "threads", true, 1, c->threads);
    JINT(&r, o, "", "model_bytes", false, 0, c->model_bytes);
    JINT(&r, o, "", "weight_bytes", true, 1, c->weight_bytes);
    JINT(&r, o, "", "n_params", true, 1, c->n_params);
    jnum(&r, o, "", "bandwidth_gbs", true, 0, &c->bandwidth_gbs);
    jnum(&r, o, "", "pp_tps", false, 0, &c->pp_tps);
    JINT(&r, o, "", "pp_tokens", false, 0, c->pp_tokens);
    jnum(&r, o, "", "tg_tps", false, 0, &c->tg_tps);
    JINT(&r, o, "", "tg_tokens", false, 0, c->tg_tokens);
    return r.rc;
}

int survey_calib_load(const char *dir, struct survey_calib *out, int max, int *n, pb_err *err)
{
    *n = 0;
    json_t *j;
    bool absent;
    int rc = read_json(dir, "calibration.json", &j, &absent, err);
    if (rc)
        return absent ? PB_OK : rc;
    const json_t *recs = json_object_get(j, "records");
    if (!json_is_array(recs)) {
        json_decref(j);
        return pb_fail(err, PB_EFORMAT, "%s/calibration.json: no 'records' array", dir);
    }
    size_t total = json_array_size(recs), first = total > (size_t)max ? total - (size_t)max : 0;
    for (size_t i = first; i < total && rc == PB_OK; i++)
        if ((rc = calib_from_json(json_array_get(recs, i), (int)i, &out[*n], err)) == PB_OK)
            (*n)++;
    json_decref(j);
    if (rc)
        pb_wrap(err, rc, "%s/calibration.json", dir);
    return rc;
}

int survey_calib_add(const char *dir, const struct survey_calib *r, pb_err *err)
{
    struct survey_calib *all = malloc(sizeof *all * (SURVEY_MAX_CALIB + 1));
    if (!all)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int n = 0;
    pb_err ignored = {0};
    /* a damaged file is replaced: the new record matters more than old ones */
    if (survey_calib_load(dir, all, SURVEY_MAX_CALIB, &n, &ignored))
        n = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(all[i].model, r->model) || strcmp(all[i].ftype, r->ftype) || strcmp(all[i].kernels, r->kernels) ||
            all[i].threads != r->threads)
            all[k++] = all[i];
    all[k++] = *r;
    int first = k > SURVEY_MAX_CALIB ? k - SURVEY_MAX_CALIB : 0;
    json_t *recs = json_array();
    for (int i = first; i < k; i++)
        json_array_append_new(recs, calib_to_json(&all[i]));
    free(all);
    return write_json_atomic(dir, "calibration.json", json_pack("{s:i,s:o}", "version", 1, "records", recs), err);
}
