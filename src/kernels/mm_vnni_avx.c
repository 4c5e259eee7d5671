/* The VNNI matrix kernels (mm_vnni.inc) with AVX-VNNI: VEX-encoded
 * vpdpbusd on CPUs with AVX2 and AVX-VNNI but no AVX-512 (Intel cores
 * from Alder Lake on), 16 vector registers. Built with -mavxvnni (and
 * AVX2/FMA/F16C), called only after a CPU check (kernels.c). */
#define VNNI_NAME avxvnni
#include "kernels/mm_vnni.inc"
