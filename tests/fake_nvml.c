/* A stand-in for the NVIDIA driver's libnvidia-ml.so.1 with one GPU of
 * known figures, so the survey's NVML path (dlopen, entry points, the
 * bandwidth arithmetic) is tested on machines without a GPU. Only the
 * entry points the survey uses, with NVML's calling conventions. */
#include <stdio.h>
#include <string.h>

typedef struct fake_device *nvmlDevice_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

static int fake_handle;

int nvmlInit_v2(void);
int nvmlShutdown(void);
int nvmlSystemGetDriverVersion(char *v, unsigned n);
int nvmlDeviceGetCount_v2(unsigned *n);
int nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *d);
int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned n);
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m);
int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor);
int nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned *mhz);
int nvmlDeviceGetMemoryBusWidth(nvmlDevice_t d, unsigned *bits);
int nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned *mw);

int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlSystemGetDriverVersion(char *v, unsigned n) { snprintf(v, n, "555.42.06"); return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 1; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *d)
{
    if (i != 0)
        return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *d = (nvmlDevice_t)&fake_handle;
    return 0;
}
int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned n) { (void)d; snprintf(name, n, "Fake H100 80GB HBM3"); return 0; }
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m)
{
    (void)d;
    m->total = 85520809984ull; /* what an H100 80GB reports */
    m->used = 1ull << 30;
    m->free = m->total - m->used;
    return 0;
}
int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) { (void)d; *major = 9; *minor = 0; return 0; }
int nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned *mhz) { (void)d; *mhz = type == 2 ? 2619 : 1980; return 0; }
int nvmlDeviceGetMemoryBusWidth(nvmlDevice_t d, unsigned *bits) { (void)d; *bits = 5120; return 0; }
int nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned *mw) { (void)d; *mw = 700000; return 0; }
