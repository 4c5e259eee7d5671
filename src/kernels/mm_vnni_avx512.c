/* The VNNI matrix kernels (mm_vnni.inc) with AVX-512 F/BW/VL + VNNI:
 * EVEX-encoded 256-bit vpdpbusd, 32 vector registers. Built with
 * -mavx512f -mavx512bw -mavx512vl -mavx512vnni (and AVX2/FMA/F16C), called
 * only after a CPU check (kernels.c). */
#define VNNI_NAME avx512vnni
#include "kernels/mm_vnni.inc"
