/* GPUs and other accelerators.
 *
 * NVIDIA GPUs through NVML, the library the driver installs
 * (libnvidia-ml.so.1), opened with dlopen so that plumb builds and runs
 * on machines without it; $PLUMB_NVML_LIB names another file (tests use a
 * stand-in). The few NVML entry points used are declared here with the
 * types of NVML's public header.
 *
 * Other devices come from the kernel: DRM cards of AMD and Intel (and
 * NVIDIA ones when NVML is missing) and /sys/class/accel devices (NPUs).
 */
#define _GNU_SOURCE
#include "survey/survey_internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct nvml_device *nvml_device_t; /* nvmlDevice_t: opaque */
struct nvml_memory {                       /* nvmlMemory_t */
    unsigned long long total, free, used;
};
enum { NVML_OK = 0, NVML_CLOCK_MEM = 2 };

struct nvml {
    void *lib;
    int (*init)(void);
    int (*shutdown)(void);
    int (*driver_version)(char *, unsigned);
    int (*count)(unsigned *);
    int (*handle)(unsigned, nvml_device_t *);
    int (*name)(nvml_device_t, char *, unsigned);
    int (*memory)(nvml_device_t, struct nvml_memory *);
    int (*cc)(nvml_device_t, int *, int *);
    int (*max_clock)(nvml_device_t, int, unsigned *);
    int (*bus_width)(nvml_device_t, unsigned *);
    int (*power_limit)(nvml_device_t, unsigned *);
};

/* Resolves sym into *fn; the optional ones may be missing in old drivers. */
static bool load_sym(void *lib, const char *sym, void *fn, bool required)
{
    void *p = dlsym(lib, sym);
    memcpy(fn, &p, sizeof p);
    return p || !required;
}

static bool nvml_open(struct nvml *n, const char *path, struct survey *s)
{
    memset(n, 0, sizeof *n);
    n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        snprintf(s->gpu_note, sizeof s->gpu_note, "%s not found: no NVIDIA driver", path);
        return false;
    }
    bool ok = load_sym(n->lib, "nvmlInit_v2", &n->init, true) && load_sym(n->lib, "nvmlShutdown", &n->shutdown, true) &&
              load_sym(n->lib, "nvmlDeviceGetCount_v2", &n->count, true) &&
              load_sym(n->lib, "nvmlDeviceGetHandleByIndex_v2", &n->handle, true) &&
              load_sym(n->lib, "nvmlDeviceGetName", &n->name, true) &&
              load_sym(n->lib, "nvmlDeviceGetMemoryInfo", &n->memory, true) &&
              load_sym(n->lib, "nvmlSystemGetDriverVersion", &n->driver_version, false) &&
              load_sym(n->lib, "nvmlDeviceGetCudaComputeCapability", &n->cc, false) &&
              load_sym(n->lib, "nvmlDeviceGetMaxClockInfo", &n->max_clock, false) &&
              load_sym(n->lib, "nvmlDeviceGetMemoryBusWidth", &n->bus_width, false) &&
              load_sym(n->lib, "nvmlDeviceGetPowerManagementLimit", &n->power_limit, false);
    if (!ok) {
        snprintf(s->gpu_note, sizeof s->gpu_note, "%s lacks the NVML entry points plumb needs", path);
        dlclose(n->lib);
        n->lib = NULL;
        return false;
    }
    return true;
}

static void read_nvml(const char *path, struct survey *s)
{
    struct nvml n;
    if (!nvml_open(&n, path, s))
        return;
    int rc = n.init();
    if (rc != NVML_OK) {
        snprintf(s->gpu_note, sizeof s->gpu_note, "NVML did not start (error %d): no NVIDIA GPU or driver", rc);
        dlclose(n.lib);
        return;
    }
    char driver[80] = "";
    if (n.driver_version && n.driver_version(driver, sizeof driver) != NVML_OK)
        driver[0] = 0;
    unsigned count = 0;
    if (n.count(&count) != NVML_OK)
        count = 0;
    for (unsigned i = 0; i < count && s->n_gpus < SURVEY_MAX_GPUS; i++) {
        nvml_device_t d;
        if (n.handle(i, &d) != NVML_OK)
            continue;
        struct survey_gpu *g = &s->gpus[s->n_gpus];
        memset(g, 0, sizeof *g);
        snprintf(g->vendor, sizeof g->vendor, "NVIDIA");
        snprintf(g->source, sizeof g->source, "nvml");
        snprintf(g->driver, sizeof g->driver, "%.47s", driver);
        char name[96] = "";
        if (n.name(d, name, sizeof name) != NVML_OK)
            snprintf(name, sizeof name, "NVIDIA GPU %u", i);
        name[sizeof name - 1] = 0;
        snprintf(g->name, sizeof g->name, "%s", name);
        struct nvml_memory m;
        if (n.memory(d, &m) == NVML_OK) {
            g->mem_total = m.total;
            g->mem_free = m.free;
        }
        g->cc_major = g->cc_minor = -1;
        if (n.cc && n.cc(d, &g->cc_major, &g->cc_minor) != NVML_OK)
            g->cc_major = g->cc_minor = -1;
        /* NVML's memory clock counts one transfer per edge of a DDR clock:
         * bytes/s = 2 x clock x bus width / 8 */
        unsigned mhz = 0, bits = 0;
        if (n.max_clock && n.bus_width && n.max_clock(d, NVML_CLOCK_MEM, &mhz) == NVML_OK &&
            n.bus_width(d, &bits) == NVML_OK)
            g->bandwidth_gbs = 2.0 * mhz * 1e6 * bits / 8.0 / 1e9;
        unsigned mw = 0;
        if (n.power_limit && n.power_limit(d, &mw) == NVML_OK)
            g->power_limit_w = mw / 1000.0;
        s->n_gpus++;
    }
    if (count == 0)
        snprintf(s->gpu_note, sizeof s->gpu_note, "NVML found no NVIDIA GPU");
    n.shutdown();
    dlclose(n.lib);
}

/* basename of the link target, or "" */
static void link_name(const char *path, char *out, size_t size)
{
    char buf[PATH_MAX];
    ssize_t k = readlink(path, buf, sizeof buf - 1);
    out[0] = 0;
    if (k <= 0)
        return;
    buf[k] = 0;
    const char *b = strrchr(buf, '/');
    snprintf(out, size, "%.*s", (int)size - 1, b ? b + 1 : buf);
}

/* A PCI device under sysfs (a DRM card's or an accel device's "device"). */
static void add_sysfs_device(struct survey *s, const char *dev, bool drm, bool nvml_listed)
{
    /* dev is under 384 bytes, path holds it and the longest attribute */
    char path[512], vendor[16], device[16];
    snprintf(path, sizeof path, "%.383s/vendor", dev);
    survey_read_text(path, vendor, sizeof vendor);
    snprintf(path, sizeof path, "%.383s/device", dev);
    survey_read_text(path, device, sizeof device);
    const char *vname = !strcmp(vendor, "0x1002")   ? "AMD"
                        : !strcmp(vendor, "0x8086") ? "Intel"
                        : !strcmp(vendor, "0x10de") ? "NVIDIA"
                                                    : NULL;
    /* a DRM card of another vendor is a display adapter (virtual ones in
     * particular), not something to run models on */
    if ((drm && !vname) || (vname && !strcmp(vname, "NVIDIA") && nvml_listed) || s->n_gpus >= SURVEY_MAX_GPUS)
        return;
    struct survey_gpu *g = &s->gpus[s->n_gpus];
    memset(g, 0, sizeof *g);
    g->cc_major = g->cc_minor = -1;
    snprintf(g->vendor, sizeof g->vendor, "%s", vname ? vname : vendor);
    snprintf(g->source, sizeof g->source, "sysfs");
    snprintf(path, sizeof path, "%.383s/driver", dev);
    link_name(path, g->driver, sizeof g->driver);
    char product[96] = "";
    snprintf(path, sizeof path, "%.383s/product_name", dev);
    survey_read_text(path, product, sizeof product);
    if (product[0])
        snprintf(g->name, sizeof g->name, "%s", product);
    else
        snprintf(g->name, sizeof g->name, "%s %s %s", vname ? vname : vendor, drm ? "GPU" : "accelerator", device);
    char v[32];
    snprintf(path, sizeof path, "%.383s/mem_info_vram_total", dev); /* amdgpu */
    if (survey_read_text(path, v, sizeof v) > 0)
        g->mem_total = strtoull(v, NULL, 10);
    snprintf(path, sizeof path, "%.383s/mem_info_vram_used", dev);
    if (g->mem_total && survey_read_text(path, v, sizeof v) > 0)
        g->mem_free = g->mem_total - strtoull(v, NULL, 10);
    s->n_gpus++;
}

static void scan_class(struct survey *s, const char *dir, const char *prefix, bool drm, bool nvml_listed)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    size_t k = strlen(prefix);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        /* cardN, accelN: not the connectors (card0-HDMI-A-1) */
        if (strncmp(e->d_name, prefix, k) != 0 || e->d_name[k] == 0 || strspn(e->d_name + k, "0123456789") != strlen(e->d_name + k))
            continue;
        char dev[384];
        snprintf(dev, sizeof dev, "%.64s/%.256s/device", dir, e->d_name);
        add_sysfs_device(s, dev, drm, nvml_listed);
    }
    closedir(d);
}

void survey_read_gpus(const struct survey_params *p, struct survey *s)
{
    const char *path = p->nvml_path ? p->nvml_path : getenv("PLUMB_NVML_LIB");
    read_nvml(path && *path ? path : "libnvidia-ml.so.1", s);
    bool nvml_listed = s->n_gpus > 0;
    scan_class(s, "/sys/class/drm", "card", true, nvml_listed);
    scan_class(s, "/sys/class/accel", "accel", false, nvml_listed);
}
