/* plumb quantize: a model converted to another file type. It streams
 * tensor by tensor (memory stays at a few buffers, whatever the model
 * size), converts rows on all threads, reports progress after each
 * tensor and writes atomically (a failed run leaves no output file).
 */
#ifndef PLUMB_QUANTIZE_H
#define PLUMB_QUANTIZE_H

#include "plumb/base.h"

struct quantize_params {
    enum pb_ftype ftype;
    int n_threads; /* 0: all CPUs */
    pb_progress_fn progress;
    void *user;
};

struct quantize_report {
    uint64_t n_tensors, n_converted, n_params;
    uint64_t bytes_in, bytes_out; /* tensor data */
    bool requantized;             /* some source tensors were already quantized */
    char source_ftype[16];
};

int quantize_file(const char *in, const char *out, const struct quantize_params *p, struct quantize_report *r,
                  pb_err *err);

#endif
