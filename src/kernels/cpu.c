#include "kernels/cpu.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (unsigned long long)edx << 32 | eax;
}

static void detect(struct cpu_features *f)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    f->fma = c & (1u << 12);
    f->f16c = c & (1u << 29);
    /* the OS must save the wide registers: XCR0 bits for SSE/AVX state and,
     * for AVX-512, the opmask and upper-ZMM states */
    unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm = (xcr0 & 6) == 6, zmm = (xcr0 & 0xe6) == 0xe6;
    if (!avx || !ymm) {
        f->fma = f->f16c = false;
        return;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f->avx2 = b & (1u << 5);
        if (zmm) {
            f->avx512f = b & (1u << 16);
            f->avx512bw = b & (1u << 30);
            f->avx512vl = b & (1u << 31);
            f->avx512vnni = c & (1u << 11);
        }
        f->amx = d & (1u << 24);
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        f->avxvnni = a & (1u << 4);
        f->avx512bf16 = zmm && (a & (1u << 5));
    }
}
#elif defined(__aarch64__)
static void detect(struct cpu_features *f)
{
    f->neon = true;
#if defined(__ARM_FEATURE_DOTPROD)
    f->dotprod = true;
#endif
}
#else
static void detect(struct cpu_features *f)
{
    (void)f;
}
#endif

static struct cpu_features features;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    memset(&features, 0, sizeof features);
    detect(&features);
}

const struct cpu_features *cpu_detect(void)
{
    pthread_once(&once, init);
    return &features;
}
