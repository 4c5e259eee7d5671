/* What the kernel tells about this machine: CPU model and topology,
 * caches, NUMA nodes, memory, huge pages and disk space. Only reads files
 * under /proc and /sys; a file that is missing leaves its figure at 0
 * (containers and other kernels publish less). */
#define _GNU_SOURCE
#include "survey/survey_internal.h"

#include "base/pool.h"
#include "kernels/cpu.h"
#include "kernels/kernels.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

int survey_read_text(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        buf[0] = 0;
        return -1;
    }
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = 0;
    return (int)n;
}

/* A number from a one-line file; -1 when absent. */
static long long read_ll(const char *path)
{
    char buf[64];
    if (survey_read_text(path, buf, sizeof buf) <= 0)
        return -1;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return end == buf ? -1 : v;
}

int survey_cpulist_count(const char *list)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p)
            break;
        long b = a;
        if (*end == '-') {
            p = end + 1;
            b = strtol(p, &end, 10);
            if (end == p)
                break;
        }
        if (b >= a)
            n += (int)(b - a + 1);
        p = end;
        if (*p == ',')
            p++;
        else
            break;
    }
    return n;
}

/* The value after "key<spaces>: " on the first line of /proc/cpuinfo that
 * starts with key, or "" */
static void cpuinfo_field(const char *text, const char *key, char *out, size_t size)
{
    out[0] = 0;
    size_t k = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, k) != 0 || (line[k] != ' ' && line[k] != '\t' && line[k] != ':'))
            continue;
        const char *colon = strchr(line, ':'), *eol = strchr(line, '\n');
        if (!colon || (eol && colon > eol))
            continue;
        colon++;
        while (*colon == ' ' || *colon == '\t')
            colon++;
        size_t n = eol ? (size_t)(eol - colon) : strlen(colon);
        if (n >= size)
            n = size - 1;
        memcpy(out, colon, n);
        out[n] = 0;
        return;
    }
}

/* Whether a space-separated flag list holds flag as a whole word. */
static bool has_flag(const char *flags, const char *flag)
{
    size_t k = strlen(flag);
    for (const char *p = flags; (p = strstr(p, flag)) != NULL; p += k)
        if ((p == flags || p[-1] == ' ') && (p[k] == ' ' || p[k] == 0))
            return true;
    return false;
}

static void add_feature(struct survey *s, const char *name)
{
    if (s->cpu.n_features < SURVEY_MAX_FEATURES)
        snprintf(s->cpu.features[s->cpu.n_features++], sizeof s->cpu.features[0], "%s", name);
}

/* The ISA features that matter to inference. Those plumb's kernels detect
 * come from cpuid with the OS check (kernels/cpu.h); the rest from the
 * kernel's flag list. */
static void read_features(struct survey *s, const char *flags)
{
    const struct cpu_features *f = cpu_detect();
    const struct {
        bool on;
        const char *name;
    } known[] = {
        {f->avx2, "AVX2"},
        {f->fma, "FMA"},
        {f->f16c, "F16C"},
        {f->avx512f, "AVX-512F"},
        {f->avx512bw, "AVX-512BW"},
        {f->avx512vl, "AVX-512VL"},
        {f->avx512vnni, "AVX-512VNNI"},
        {f->avxvnni, "AVX-VNNI"},
        {f->avx512bf16, "AVX-512BF16"},
        {has_flag(flags, "avx512_fp16"), "AVX-512FP16"},
        {f->amx || has_flag(flags, "amx_tile"), "AMX-TILE"},
        {has_flag(flags, "amx_int8"), "AMX-INT8"},
        {has_flag(flags, "amx_bf16"), "AMX-BF16"},
        {f->neon || has_flag(flags, "asimd"), "NEON"},
        {f->dotprod || has_flag(flags, "asimddp"), "DOTPROD"},
        {has_flag(flags, "asimdhp"), "FP16"},
        {has_flag(flags, "i8mm"), "I8MM"},
        {has_flag(flags, "bf16"), "BF16"},
        {has_flag(flags, "sve"), "SVE"},
        {has_flag(flags, "sve2"), "SVE2"},
        {has_flag(flags, "sme"), "SME"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (known[i].on)
            add_feature(s, known[i].name);
}

static void read_topology(struct survey *s)
{
    /* distinct (package, core) pairs among the online CPUs */
    enum { MAXC = 4096 };
    long long *seen = malloc(MAXC * sizeof *seen);
    if (!seen)
        return;
    int n_seen = 0, n_pkg = 0;
    long long pkgs[256];
    for (int cpu = 0; cpu < MAXC; cpu++) {
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        long long pkg = read_ll(path);
        if (pkg < 0)
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        long long core = read_ll(path);
        long long key = pkg << 32 | (core < 0 ? cpu : core);
        bool dup = false;
        for (int i = 0; i < n_seen && !dup; i++)
            dup = seen[i] == key;
        if (!dup && n_seen < MAXC)
            seen[n_seen++] = key;
        dup = false;
        for (int i = 0; i < n_pkg && !dup; i++)
            dup = pkgs[i] == pkg;
        if (!dup && n_pkg < 256)
            pkgs[n_pkg++] = pkg;
    }
    free(seen);
    s->cpu.cores = n_seen;
    s->cpu.sockets = n_pkg;
    if (s->cpu.cores == 0)
        s->cpu.cores = s->cpu.threads_online;
    if (s->cpu.sockets == 0)
        s->cpu.sockets = 1;
}

static void read_caches(struct survey *s)
{
    for (int i = 0; i < 16 && s->cpu.n_caches < SURVEY_MAX_CACHES; i++) {
        char path[128], buf[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        long long level = read_ll(path);
        if (level < 0)
            break;
        struct survey_cache *c = &s->cpu.caches[s->cpu.n_caches];
        c->level = (int)level;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        survey_read_text(path, c->type, sizeof c->type);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        survey_read_text(path, buf, sizeof buf);
        char *end;
        unsigned long long v = strtoull(buf, &end, 10);
        c->bytes = v * (*end == 'K' ? 1024ull : *end == 'M' ? 1024ull * 1024 : 1);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/shared_cpu_list", i);
        survey_read_text(path, buf, sizeof buf);
        int sharing = survey_cpulist_count(buf);
        c->instances = sharing > 0 ? (s->cpu.threads_online + sharing - 1) / sharing : 1;
        if (c->bytes > 0)
            s->cpu.n_caches++;
    }
}

static int count_numa_nodes(void)
{
    DIR *d = opendir("/sys/devices/system/node");
    if (!d)
        return 1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, "node", 4) == 0 && isdigit((unsigned char)e->d_name[4]))
            n++;
    closedir(d);
    return n > 0 ? n : 1;
}

static void read_cpu(struct survey *s)
{
    s->cpu.threads_online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->cpu.threads_online < 1)
        s->cpu.threads_online = 1;
    s->cpu.threads = pool_cpu_count();
    snprintf(s->cpu.kernels, sizeof s->cpu.kernels, "%s", kern_level_name(kern_level()));

    size_t cap = 1 << 20;
    char *info = malloc(cap);
    if (info && survey_read_text("/proc/cpuinfo", info, cap) < 0)
        info[0] = 0;
    static const char *model_keys[] = {"model name", "Hardware", "Model", "cpu model", "Processor"};
    static const char *flag_keys[] = {"flags", "Features"};
    char flags[4096] = "", mhz[64];
    if (info) {
        for (size_t i = 0; i < sizeof model_keys / sizeof model_keys[0] && !s->cpu.model[0]; i++)
            cpuinfo_field(info, model_keys[i], s->cpu.model, sizeof s->cpu.model);
        cpuinfo_field(info, "vendor_id", s->cpu.vendor, sizeof s->cpu.vendor);
        if (!s->cpu.vendor[0])
            cpuinfo_field(info, "CPU implementer", s->cpu.vendor, sizeof s->cpu.vendor);
        for (size_t i = 0; i < 2 && !flags[0]; i++)
            cpuinfo_field(info, flag_keys[i], flags, sizeof flags);
        cpuinfo_field(info, "cpu MHz", mhz, sizeof mhz);
        s->cpu.mhz_max = atof(mhz);
    }
    free(info);
    long long khz = read_ll("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
    if (khz > 0)
        s->cpu.mhz_max = (double)khz / 1000.0;
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(s->cpu.arch, sizeof s->cpu.arch, "%.15s", u.machine);
        snprintf(s->kernel, sizeof s->kernel, "%.63s", u.release);
    }
    if (!s->cpu.model[0])
        snprintf(s->cpu.model, sizeof s->cpu.model, "%s CPU", s->cpu.arch[0] ? s->cpu.arch : "unknown");
    read_features(s, flags);
    read_topology(s);
    read_caches(s);
    s->cpu.numa_nodes = count_numa_nodes();
    if (gethostname(s->host, sizeof s->host) != 0)
        s->host[0] = 0;
    s->host[sizeof s->host - 1] = 0;
}

/* kB figure of a /proc/meminfo line, in bytes (0: absent). */
static uint64_t meminfo_bytes(const char *text, const char *key, bool is_count)
{
    char v[64];
    cpuinfo_field(text, key, v, sizeof v);
    unsigned long long n = strtoull(v, NULL, 10);
    return is_count ? n : n * 1024ull;
}

static void read_disk(struct survey *s, const char *dir)
{
    snprintf(s->disk.path, sizeof s->disk.path, "%s", dir);
    /* the store may not exist yet: its nearest existing parent holds it */
    char p[sizeof s->disk.path];
    snprintf(p, sizeof p, "%s", dir);
    for (;;) {
        struct statvfs v;
        if (statvfs(p, &v) == 0) {
            s->disk.free = (uint64_t)v.f_bavail * v.f_frsize;
            s->disk.total = (uint64_t)v.f_blocks * v.f_frsize;
            return;
        }
        char *slash = strrchr(p, '/');
        if (!slash || (slash == p && p[1] == 0))
            return;
        slash[slash == p] = 0; /* "/a" -> "/", "/a/b" -> "/a" */
    }
}

int survey_read_memory(struct survey *s, pb_err *err)
{
    char text[8192];
    if (survey_read_text("/proc/meminfo", text, sizeof text) < 0)
        return pb_fail(err, PB_EIO, "cannot read /proc/meminfo: %s", strerror(errno));
    s->memory.total = meminfo_bytes(text, "MemTotal", false);
    s->memory.available = meminfo_bytes(text, "MemAvailable", false);
    if (s->memory.available == 0) /* kernels before 3.14 */
        s->memory.available = meminfo_bytes(text, "MemFree", false) + meminfo_bytes(text, "Cached", false);
    s->memory.hugepages_total = meminfo_bytes(text, "HugePages_Total", true);
    s->memory.hugepages_free = meminfo_bytes(text, "HugePages_Free", true);
    s->memory.hugepage_size = meminfo_bytes(text, "Hugepagesize", false);
    char thp[128];
    s->memory.thp[0] = 0;
    if (survey_read_text("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof thp) > 0) {
        const char *a = strchr(thp, '['), *b = a ? strchr(a, ']') : NULL;
        if (a && b)
            snprintf(s->memory.thp, sizeof s->memory.thp, "%.*s", (int)(b - a - 1), a + 1);
    }
    if (s->memory.total == 0)
        return pb_fail(err, PB_EFORMAT, "/proc/meminfo has no MemTotal line");
    return PB_OK;
}

int survey_read_facts(const struct survey_params *p, struct survey *s, pb_err *err)
{
    read_cpu(s);
    int rc = survey_read_memory(s, err);
    if (rc)
        return rc;
    char models[512];
    if (p->models_dir)
        snprintf(models, sizeof models, "%s", p->models_dir);
    else if ((rc = survey_models_dir(models, sizeof models, err)))
        return rc;
    read_disk(s, models);
    return PB_OK;
}
