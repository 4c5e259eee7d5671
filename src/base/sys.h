/* Process-level facts the tools report: wall time and peak memory. */
#ifndef PLUMB_BASE_SYS_H
#define PLUMB_BASE_SYS_H

#include <stdint.h>

/* Monotonic time in seconds. */
double sys_now(void);
/* Peak resident set size of this process in bytes (0 if unknown). */
uint64_t sys_peak_rss(void);
/* Current resident set size in bytes (0 if unknown). */
uint64_t sys_current_rss(void);

#endif
