/* The machine survey: what this computer is, measured where it matters.
 *
 * survey_run() reads the facts the kernel publishes (/proc/cpuinfo,
 * /proc/meminfo, /sys/devices/system/{cpu,node}, statvfs), the CPU features
 * (kernels/cpu.h and the kernel's flag list), NVIDIA GPUs through NVML
 * loaded at run time (no build-time dependency) and other accelerators the
 * kernel shows (/sys/class/drm, /sys/class/accel), and measures memory
 * bandwidth (tools/membw: read and triad) and the arithmetic throughput of
 * plumb's own matrix kernels (int8: the Q8_0 kernel; FP32 FMA: the F16
 * kernel), on the threads plumb would use.
 *
 * The result is the machine's profile: survey_save() writes it as JSON
 * under the profile directory (survey_dir()), survey_load() reads it back
 * for plumb plan. The JSON is the same as `plumb survey --json` prints.
 *
 * Calibration: plumb bench adds a record of a run that represents the
 * models it would calibrate (survey_calib_representative: not a model that
 * runs from the CPU's caches, not a short test; others only when asked),
 * from which plan derives the efficiency of the kernels on this machine
 * for models of the same size class (survey_calib_size_class).
 */
#ifndef PLUMB_SURVEY_H
#define PLUMB_SURVEY_H

#include "plumb/base.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SURVEY_MAX_CACHES 8
#define SURVEY_MAX_GPUS 16
#define SURVEY_MAX_FEATURES 32

struct survey_cache {
    int level;          /* 1, 2, 3 */
    char type[16];      /* "Data", "Instruction", "Unified" */
    uint64_t bytes;     /* one instance */
    int instances;      /* how many the machine has */
};

struct survey_gpu {
    char name[96];
    char vendor[16];     /* "NVIDIA", "AMD", "Intel", or the PCI vendor id */
    char source[16];     /* "nvml", "sysfs" */
    uint64_t mem_total;  /* bytes (0: unknown) */
    uint64_t mem_free;
    char driver[48];     /* driver version (NVML) or kernel driver name */
    int cc_major, cc_minor; /* CUDA compute capability (-1: unknown) */
    double bandwidth_gbs;   /* nominal, from memory clock x bus width (0: unknown) */
    double power_limit_w;   /* 0: unknown */
};

struct survey {
    char created[32];         /* UTC, ISO 8601 */
    char host[64];
    char kernel[64];          /* uname release */
    char plumb_version[16];   /* filled by the caller (CLI) */
    struct {
        char model[128];
        char vendor[32];
        char arch[16];        /* "x86_64", "aarch64" */
        int sockets, cores;   /* physical */
        int threads_online;   /* logical CPUs online */
        int threads;          /* logical CPUs this process may use (affinity) */
        double mhz_max;       /* 0: unknown */
        char features[SURVEY_MAX_FEATURES][16]; /* inference-relevant ISA features present */
        int n_features;
        char kernels[16];     /* plumb's kernel level in use */
        struct survey_cache caches[SURVEY_MAX_CACHES];
        int n_caches;
        int numa_nodes;
    } cpu;
    struct {
        uint64_t total, available; /* bytes (/proc/meminfo) */
        uint64_t hugepages_total, hugepages_free, hugepage_size;
        char thp[16];         /* transparent huge pages mode: "always", "madvise", "never" */
        double bandwidth_gbs; /* the read figure (what generation streams) */
        double triad_gbs;
        int bw_threads;
        uint64_t bw_bytes;    /* buffer measured */
    } memory;
    struct {
        char path[512];       /* where models are stored, or its nearest existing parent */
        uint64_t free, total;
    } disk;
    struct {
        double int8_gops;     /* Q8_0 x Q8_0 matrix kernel, cache-resident, all threads */
        double f32_gflops;    /* F16 weights x F32 FMA matrix kernel */
        int threads;
    } compute;
    struct survey_gpu gpus[SURVEY_MAX_GPUS];
    int n_gpus;
    char gpu_note[160];       /* why NVIDIA GPUs could not be listed, or "" */
    double measure_s;         /* seconds the measurements took */
};

struct survey_params {
    bool quick;          /* shorter measurements (fewer passes, less time) */
    bool no_measure;     /* facts only: no bandwidth or throughput runs */
    int n_threads;       /* 0: all CPUs this process may use */
    const char *models_dir; /* for disk free; NULL: survey_models_dir() */
    const char *nvml_path;  /* NULL: $PLUMB_NVML_LIB, else libnvidia-ml.so.1 */
};

int survey_run(const struct survey_params *p, struct survey *s, pb_err *err);

/* Only the quick facts: CPU counts, memory, disk (no measurement, no GPU). */
int survey_read_memory(struct survey *s, pb_err *err);

/* The profile as JSON (a new reference), and back. from_json checks the
 * fields plan needs and fails with a message naming the bad one. */
json_t *survey_to_json(const struct survey *s);
int survey_from_json(const json_t *j, struct survey *s, pb_err *err);

/* ---- where things live ----
 * $PLUMB_HOME (default $XDG_DATA_HOME/plumb, else ~/.local/share/plumb).
 * The profile and calibration records are in <home>/machine, models in
 * <home>/models. Written into buf; fails when no home can be found. */
int survey_home(char *buf, size_t size, pb_err *err);
int survey_dir(char *buf, size_t size, pb_err *err);
int survey_models_dir(char *buf, size_t size, pb_err *err);

/* <dir>/profile.json, written atomically (dir created when missing). */
int survey_save(const struct survey *s, const char *dir, pb_err *err);
/* PB_OK, or PB_EIO when there is no profile yet (err says so), or
 * PB_EFORMAT for a damaged one. */
int survey_load(const char *dir, struct survey *s, pb_err *err);

/* ---- calibration records (written by plumb bench) ---- */

#define SURVEY_MAX_CALIB 32

struct survey_calib {
    char created[32];
    char model[96];        /* what was benchmarked */
    char ftype[16];        /* file type ("Q4_0"), "" when unknown */
    char kernels[16];      /* kernel level */
    int threads;
    uint64_t model_bytes;  /* the file */
    uint64_t weight_bytes; /* weights read per generated token */
    uint64_t n_params;
    double bandwidth_gbs;  /* read bandwidth measured by the same run */
    double pp_tps;         /* prompt tokens/s (0: not measured) */
    int pp_tokens;
    double tg_tps;         /* generation tokens/s (0: not measured) */
    int tg_tokens;
};

/* Weights below this run from the CPU's caches, or nearly: their speed
 * says nothing of larger models. */
#define SURVEY_CALIB_MIN_WEIGHTS (256ull << 20)
#define SURVEY_CALIB_MIN_PP 32 /* prompt tokens of a test that calibrates */
#define SURVEY_CALIB_MIN_TG 16 /* generated tokens of a test that calibrates */

/* Whether a bench run represents the models it would calibrate: weights
 * of at least SURVEY_CALIB_MIN_WEIGHTS and tests at least as long as the
 * minimums above. False with the reason in why (may be NULL). */
bool survey_calib_representative(const struct survey_calib *c, char *why, size_t size);
/* The size class of weight_bytes: 0 below SURVEY_CALIB_MIN_WEIGHTS, then
 * 1, 2, 3, ... for 256 MiB-1 GiB, 1-4 GiB, 4-16 GiB, ... (each 4x). */
int survey_calib_size_class(uint64_t weight_bytes);
/* Whether a record of record_weights may calibrate a model of
 * model_weights: the same size class or a neighbouring one, and class 0
 * only its own. */
bool survey_calib_applies(uint64_t record_weights, uint64_t model_weights);

/* Adds r to <dir>/calibration.json, replacing a record of the same model,
 * type, kernels and threads, keeping the newest SURVEY_MAX_CALIB. */
int survey_calib_add(const char *dir, const struct survey_calib *r, pb_err *err);
/* Reads the records (newest last) into out[max]; *n = 0 when there is no
 * file yet. */
int survey_calib_load(const char *dir, struct survey_calib *out, int max, int *n, pb_err *err);

/* ---- memory bandwidth ---- */

enum membw_kind {
    MEMBW_READ,  /* sum every word: the access pattern of generation */
    MEMBW_TRIAD, /* a = b + s * c on doubles (STREAM's triad, 24 bytes per element) */
};

/* Median bandwidth (GB/s) of `passes` runs (at most 16) of the kernel by
 * n_threads over a buffer of `bytes` (use several times the last-level
 * cache), measured in a child process so the buffer never counts in the
 * caller's memory. */
int membw_measure_kind(enum membw_kind kind, int n_threads, size_t bytes, int passes, double *gbs, pb_err *err);
/* The read kernel, 5 passes: what plumb bench reports. */
int membw_measure(int n_threads, size_t bytes, double *gbs, pb_err *err);


/* Now as UTC ISO 8601 ("2026-11-28T02:03:04Z"). */
void survey_now_iso(char *buf, size_t size);

#endif
