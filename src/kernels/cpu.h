/* The CPU features the kernels can use, detected once at run time. */
#ifndef PLUMB_KERNELS_CPU_H
#define PLUMB_KERNELS_CPU_H

#include <stdbool.h>

struct cpu_features {
    bool avx2, fma, f16c;              /* the AVX2 kernel set needs all three */
    bool avx512f, avx512bw, avx512vl;  /* the AVX-512 set needs all three */
    bool avx512vnni, avxvnni, avx512bf16, amx;
    bool neon, dotprod;
};

/* What this CPU (and its OS, for the wide registers) supports. */
const struct cpu_features *cpu_detect(void);

#endif
