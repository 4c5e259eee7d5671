/* Choosing the kernel level and the matrix kernels for a tensor. */
#include "kernels/kernels.h"

#include "kernels/cpu.h"
#include "quant/quant.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[KERN_LEVEL_COUNT] = {"scalar", "avx2", "avxvnni", "avx512vnni"};

const char *kern_level_name(enum kern_level l)
{
    return (unsigned)l < KERN_LEVEL_COUNT ? level_names[l] : "unknown";
}

int kern_level_available(enum kern_level l)
{
    const struct cpu_features *f = cpu_detect();
    switch (l) {
    case KERN_SCALAR: return 1;
#if defined(PLUMB_HAVE_AVX2)
    case KERN_AVX2: return f->avx2 && f->fma && f->f16c;
    case KERN_AVXVNNI: return kern_level_available(KERN_AVX2) && f->avxvnni;
    case KERN_AVX512VNNI:
        return kern_level_available(KERN_AVX2) && f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni;
#endif
    default: (void)f; return 0;
    }
}

static enum kern_level chosen;
static const char *ignored_env; /* a PLUMB_SIMD value that names no level */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    enum kern_level cap = KERN_LEVEL_COUNT - 1;
    const char *env = getenv("PLUMB_SIMD");
    if (env && *env) {
        bool known = false;
        for (int l = 0; l < KERN_LEVEL_COUNT; l++)
            if (!strcmp(env, level_names[l])) {
                cap = (enum kern_level)l;
                known = true;
            }
        if (!known)
            ignored_env = env;
    }
    chosen = KERN_SCALAR;
    for (int l = 0; l <= (int)cap; l++)
        if (kern_level_available((enum kern_level)l))
            chosen = (enum kern_level)l;
}

const char *kern_level_ignored_env(void)
{
    pthread_once(&once, choose);
    return ignored_env;
}

enum kern_level kern_level(void)
{
    pthread_once(&once, choose);
    return chosen;
}

static const struct kern_mm *level_table(enum pb_type t, enum kern_level l)
{
    switch (l) {
    case KERN_AVX2: return kern_mm_avx2(t);
    case KERN_AVXVNNI: return kern_mm_avxvnni(t);
    case KERN_AVX512VNNI: return kern_mm_avx512vnni(t);
    default: return NULL;
    }
}

const struct kern_mm *kern_mm_for(enum pb_type t, int64_t n_in, int64_t n_rows, enum kern_level l)
{
    /* the best level at or below l that this CPU runs and that has
     * kernels for this type and shape */
    for (int lv = (int)l; lv > KERN_SCALAR; lv--) {
        if (lv >= KERN_LEVEL_COUNT || !kern_level_available((enum kern_level)lv))
            continue;
        const struct kern_mm *k = level_table(t, (enum kern_level)lv);
        if (k && n_rows % k->group == 0 && n_in % (k->in_block ? k->in_block : pb_type_get(t)->block) == 0)
            return k;
    }
    return kern_mm_scalar(t);
}

#if !defined(PLUMB_HAVE_AVX2)
/* not in this build: the levels are never available, these are never called */
const struct kern_mm *kern_mm_avx2(enum pb_type t)
{
    (void)t;
    return NULL;
}

const struct kern_mm *kern_mm_avxvnni(enum pb_type t)
{
    (void)t;
    return NULL;
}

const struct kern_mm *kern_mm_avx512vnni(enum pb_type t)
{
    (void)t;
    return NULL;
}

void kern_attn_avx2(const struct kern_attn_args *a, int64_t i0, int64_t i1, float *scratch)
{
    kern_attn_scalar(a, i0, i1, scratch);
}

void kern_swiglu_avx2(float *g, const float *u, int64_t n)
{
    kern_swiglu_scalar(g, u, n);
}

void kern_to_f16_avx2(const float *src, void *dst, int64_t n)
{
    quant_row_f16(src, dst, n);
}
#endif

kern_attn_fn kern_attn_for(const struct kern_attn_args *a, enum kern_level l)
{
#if defined(PLUMB_HAVE_AVX2)
    if (l >= KERN_AVX2 && kern_level_available(KERN_AVX2) && a->head_dim % 8 == 0 &&
        (a->kv_type == PB_TYPE_F32 || a->kv_type == PB_TYPE_F16 || a->kv_type == PB_TYPE_Q8_0))
        return kern_attn_avx2;
#endif
    (void)a;
    (void)l;
    return kern_attn_scalar;
}

kern_to_f16_fn kern_to_f16_for(enum kern_level l)
{
#if defined(PLUMB_HAVE_AVX2)
    if (l >= KERN_AVX2 && kern_level_available(KERN_AVX2))
        return kern_to_f16_avx2;
#endif
    (void)l;
    return quant_row_f16;
}

kern_swiglu_fn kern_swiglu_for(enum kern_level l)
{
#if defined(PLUMB_HAVE_AVX2)
    if (l >= KERN_AVX2 && kern_level_available(KERN_AVX2))
        return kern_swiglu_avx2;
#endif
    (void)l;
    return kern_swiglu_scalar;
}
