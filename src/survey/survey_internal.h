/* Pieces of the survey shared between its files. */
#ifndef PLUMB_SURVEY_INTERNAL_H
#define PLUMB_SURVEY_INTERNAL_H

#include "base/err.h"
#include "plumb/survey.h"

/* Reads a small text file whole, trailing white space removed. Returns
 * its length, or -1 (buf "") when it cannot be read. */
int survey_read_text(const char *path, char *buf, size_t size);
/* CPUs in a kernel CPU list such as "0-3,8,10-11". */
int survey_cpulist_count(const char *list);

/* CPU, memory and disk facts (facts.c). */
int survey_read_facts(const struct survey_params *p, struct survey *s, pb_err *err);
/* GPUs: NVML, then the other accelerators sysfs shows (gpu.c). */
void survey_read_gpus(const struct survey_params *p, struct survey *s);
/* Bandwidth and kernel throughput (measure.c). */
int survey_measure(const struct survey_params *p, struct survey *s, pb_err *err);

#endif
