/* plumb doctor: checks of an installation, each with a verdict and the
 * fix: the CPU features the engine uses, that each configured model
 * exists and fits in memory with its context and slots, the store (sizes,
 * or full hashes with deep), permissions of the store and the key file,
 * the port, the service, disk space, and the clock. */
#ifndef PLUMB_DOCTOR_H
#define PLUMB_DOCTOR_H

#include "plumb/base.h"
#include "plumb/config.h"

#include <stdbool.h>

enum doctor_verdict { DOCTOR_OK, DOCTOR_WARN, DOCTOR_ERROR, DOCTOR_SKIP };

#define DOCTOR_MAX_CHECKS 64

struct doctor_check {
    char name[48];     /* "cpu", "model assistant", "store", "key file", "port", ... */
    enum doctor_verdict verdict;
    char detail[512];  /* what was found */
    char fix[512];     /* what to do ("" when ok) */
};

struct doctor_report {
    struct doctor_check checks[DOCTOR_MAX_CHECKS];
    int n;
    int n_warn, n_error;
};

struct doctor_params {
    const struct config *config; /* NULL: no configuration (store and machine only) */
    const char *config_error;    /* the configuration could not be read: the first finding */
    bool deep;                   /* re-hash every blob */
    const char *service;         /* the systemd unit's name (NULL: plumb.service) */
};

/* Runs every check; fails only when it cannot run at all. The store
 * checked is the configuration's ('store'), else store_default_home()'s. */
int doctor_run(const struct doctor_params *p, struct doctor_report *r, pb_err *err);
const char *doctor_verdict_name(enum doctor_verdict v);

#endif
