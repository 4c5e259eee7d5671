/* Process-level facts the tools report: wall time and peak memory. */
#ifndef PLUMB_BASE_SYS_H
#define PLUMB_BASE_SYS_H

#include "plumb/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic time in seconds. */
double sys_now(void);
/* Seconds since the epoch (wall clock, for records and logs). */
double sys_wall_now(void);
/* Peak resident set size: pb_peak_rss (plumb/base.h). */
/* Memory the kernel says can be given to a new program without
 * swapping (/proc/meminfo's MemAvailable), in bytes; 0 if unknown. */
uint64_t sys_mem_available(void);

/* Large zeroed allocations (weights repacked at load time): mapped
 * anonymous memory the kernel may back with huge pages, which spares the
 * TLB misses of streaming gigabytes through 4 KiB pages. NULL on failure. */
void *sys_alloc_large(size_t n);
void sys_free_large(void *p, size_t n);

/* The process listening on TCP port (IPv4 or IPv6), from /proc/net/tcp*
 * and the processes' open files: its pid and command name (comm). false
 * when nobody listens there or the owner cannot be seen (another user's
 * process, without root). */
bool sys_port_owner(int port, int *pid, char *comm, size_t comm_size);

#endif
