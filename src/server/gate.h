/* The server's front door: it accepts connections itself and holds each
 * one, in a single poll() loop and without a thread, until its request
 * head (request line and headers) has arrived; only then is it handed to
 * libmicrohttpd, which gives it a thread. A connection that sends nothing,
 * or a byte now and then, costs a file descriptor for at most
 * header_timeout_s and never a thread or one of max_connections: /health
 * answers while hundreds of them are open.
 *
 * Limits, each answered once (status line, headers, a JSON error) and
 * closed:
 *   - the head must arrive within header_timeout_s of the accept (408);
 *   - one client address may have max_per_client connections waiting for
 *     their heads (a new one closes the oldest of them that has waited a
 *     second or more, else it is refused with 429);
 *   - at most max_waiting connections wait in all (the oldest is closed,
 *     503, to make room);
 *   - a head longer than max_head (431), a Content-Length that is not one
 *     plain decimal number (400; also two of them, or one beside
 *     Transfer-Encoding), one above max_body (413).
 *
 * The head is read with MSG_PEEK (libmicrohttpd reads it again), and
 * SO_RCVLOWAT makes poll() wait for bytes beyond those already seen, so a
 * dripping connection costs a wake-up per segment, not a spin.
 */
#ifndef PLUMB_SERVER_GATE_H
#define PLUMB_SERVER_GATE_H

#include "plumb/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct gate;

struct gate_params {
    int listen_fd;            /* bound and listening; the gate closes it */
    double header_timeout_s;
    int max_per_client;       /* waiting connections of one address (0: no limit) */
    int max_waiting;          /* waiting connections in all */
    size_t max_head;          /* bytes of a request head */
    uint64_t max_body;        /* bytes of a request body (Content-Length) */
    /* A connection whose head has arrived: admit takes fd over (and closes
     * it when it cannot serve it). Called on the gate's thread. */
    void (*admit)(void *user, int fd, const struct sockaddr *addr, socklen_t len);
    void *user;
};

enum gate_drop {
    GATE_DROP_HEADER_TIMEOUT, /* no whole head in time */
    GATE_DROP_PER_CLIENT,     /* over max_per_client */
    GATE_DROP_FULL,           /* the oldest, closed for a new one beyond max_waiting */
    GATE_DROP_BAD_HEAD,       /* too long, or a bad Content-Length */
    GATE_DROP_N
};

struct gate_stats {
    int waiting;                   /* connections waiting for their heads now */
    uint64_t dropped[GATE_DROP_N]; /* connections closed, by reason */
};

/* Starts the gate's thread on p->listen_fd. */
int gate_start(const struct gate_params *p, struct gate **out, pb_err *err);
/* Stops accepting (closes the listening socket); waiting connections
 * still get their chance. */
void gate_stop_listening(struct gate *g);
/* Stops the thread and closes every waiting connection. */
void gate_free(struct gate *g);
void gate_get_stats(struct gate *g, struct gate_stats *st);
/* The name of a reason, for metrics ("header_timeout", ...). */
const char *gate_drop_name(enum gate_drop d);

/* What a connection's first bytes say about its request head. */
enum gate_head {
    GATE_HEAD_INCOMPLETE, /* no blank line yet, and not too long: wait for more */
    GATE_HEAD_OK,         /* a whole head, its framing acceptable: hand it over */
    GATE_HEAD_REFUSED     /* answer with v->status and close */
};
struct gate_verdict {
    size_t head_len;      /* OK: bytes of the head, its blank line included */
    uint64_t body_len;    /* OK: the Content-Length (0 without one) */
    int status;           /* REFUSED: 400, 413 or 431 */
    const char *code;     /* REFUSED: the error's code ("request_too_large") or NULL */
    const char *message;  /* REFUSED: why, a static string */
};
/* Judges the bytes a connection has sent so far, buf[0..n), as the gate
 * does (only the first max_head + 1 of them count). The head starts at
 * its request line (CR and LF bytes before it are skipped: libmicrohttpd
 * skips empty lines there) and ends at the first blank line (CRLF or bare
 * LF). A head longer than max_head is refused (431), and so is a
 * Content-Length that is empty, not one plain decimal number, repeated,
 * beside Transfer-Encoding (400) or above max_body (413); the request
 * line is libmicrohttpd's to judge. A pure function of the bytes: a
 * prefix of what gets a verdict gets the same verdict or
 * GATE_HEAD_INCOMPLETE. */
enum gate_head gate_head_check(const char *buf, size_t n, size_t max_head, uint64_t max_body, struct gate_verdict *v);

/* Writes one small HTTP response (JSON error body, Connection: close) to
 * a connection the caller is about to close, best effort. */
void gate_reply(int fd, int status, const char *code, const char *message);

#endif
