/* URLs and addresses as the service files carry them (plumb service lb,
 * plumb service k8s, bench --serve): parsed strictly, so that what goes
 * into a balancer's configuration or a manifest is exactly one host, one
 * port and a plain path, never a character that would be read otherwise. */
#ifndef PLUMB_TOOLS_URL_H
#define PLUMB_TOOLS_URL_H

#include "plumb/base.h"

#include <stdbool.h>

struct url {
    char scheme[8];   /* "http" or "https" */
    char host[256];   /* a DNS name, an IPv4 address, or an IPv6 address (without brackets) */
    bool v6;          /* host is an IPv6 address */
    int port;         /* 1-65535 (the scheme's default when none was given) */
    bool port_given;
    char path[1024];  /* "" or "/..." (no query, no fragment) */
};

/* what: how errors name the value ("backend", "mirror"). schemes: the
 * accepted ones, "http" or "http,https". Refused: other schemes, user
 * information, a host that is not a DNS name (letters, digits, '-', dots
 * between labels of 1-63) or an IP address, port 0 or beyond 65535, a
 * query or fragment, and any character outside RFC 3986's unreserved,
 * sub-delims (but $, ' and ;: kubelet expands $(VAR), configurations quote with them), ':', '@', '/' and %XX in the path. */
int url_parse(const char *s, const char *what, const char *schemes, struct url *u, pb_err *err);

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (host "" then: every
 * address). */
int url_parse_listen(const char *s, const char *what, struct url *u, pb_err *err);

/* host as a URL or a balancer writes it: IPv6 in brackets. */
const char *url_host_bracketed(const struct url *u, char *buf, size_t size);

#endif
