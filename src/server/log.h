/* The server's log lines (server.c and models.c write them), through the
 * owner's callback (server_params.log). */
#ifndef PLUMB_SERVER_LOG_H
#define PLUMB_SERVER_LOG_H

#include <stdarg.h>

/* Formats one line (at most 1023 bytes) and hands it to log; nothing when
 * log is NULL. */
void server_vlog(void (*log)(void *user, const char *line), void *user, const char *fmt, va_list ap);

#endif
