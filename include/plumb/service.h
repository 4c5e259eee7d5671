/* plumb as a systemd service: the unit file that runs
 * `plumb serve --config FILE`, restarts it on failure, logs to journald
 * and confines it (no new privileges, a read-only system, no home
 * directories, a private /tmp; writable only where the store and the
 * service's state live). */
#ifndef PLUMB_SERVICE_H
#define PLUMB_SERVICE_H

#include "plumb/base.h"

#include <stddef.h>

struct service_params {
    const char *binary;      /* absolute path of plumb */
    const char *config;      /* absolute path of the configuration file */
    const char *user;        /* NULL: root (no User=) */
    const char *store;       /* the store folder (PLUMB_HOME), writable */
    const char *state_dir;   /* more writable state (pid file, ...), or NULL */
    double drain_timeout_s;  /* how long a stop may take beyond that: TimeoutStopSec */
};

/* What the unit's sandbox does to path: "ProtectHome" when it is under
 * /home, /root or /run/user, "PrivateTmp" under /tmp or /var/tmp (the
 * service sees neither: an empty /home, a /tmp of its own), NULL when the
 * service sees it. */
const char *service_hidden(const char *path);

/* The unit's text into buf (size bytes); fails when a path is not
 * absolute or holds characters a unit file cannot carry. */
int service_unit(const struct service_params *p, char *buf, size_t size, pb_err *err);

#endif
