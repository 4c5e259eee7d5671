/* Strict URL and address parsing (url.h). */
#include "tools/url.h"

#include "base/err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A DNS name: labels of 1-63 letters, digits and '-' (not at either end),
 * separated by dots, 253 characters at most; a trailing dot is refused. */
static bool dns_name(const char *h)
{
    size_t n = strlen(h), label = 0;
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i <= n; i++) {
        const char c = h[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || h[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)c) || (c == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
    }
    /* all digits and dots: a malformed IPv4 address, not a name */
    return strspn(h, "0123456789.") != n;
}

static int parse_port(const char *p, size_t len, const char *what, const char *s, int *out, pb_err *err)
{
    if (len == 0 || len > 5 || strspn(p, "0123456789") < len)
        return pb_fail(err, PB_EINVAL, "%s '%s': the port must be a number 1-65535", what, s);
    int v = 0;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (p[i] - '0');
    if (v < 1 || v > 65535)
        return pb_fail(err, PB_EINVAL, "%s '%s': port %d is not 1-65535", what, s, v);
    *out = v;
    return PB_OK;
}

/* host[:port] of len bytes at h into u. */
static int parse_hostport(const char *h, size_t len, bool host_optional, const char *what, const char *s,
                          struct url *u, pb_err *err)
{
    const char *port = NULL;
    size_t hl;
    if (len && h[0] == '[') {
        const char *close = memchr(h, ']', len);
        if (!close)
            return pb_fail(err, PB_EINVAL, "%s '%s': an IPv6 address without its ']'", what, s);
        hl = (size_t)(close - h - 1);
        if (hl == 0 || hl >= sizeof u->host)
            return pb_fail(err, PB_EINVAL, "%s '%s': no IPv6 address in the brackets", what, s);
        memcpy(u->host, h + 1, hl);
        u->host[hl] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, u->host, &a6) != 1)
            return pb_fail(err, PB_EINVAL, "%s '%s': '%s' is not an IPv6 address", what, s, u->host);
        u->v6 = true;
        const char *after = close + 1;
        if (after < h + len) {
            if (*after != ':')
                return pb_fail(err, PB_EINVAL, "%s '%s': ':PORT' expected after the address", what, s);
            port = after + 1;
        }
    } else {
        const char *colon = memchr(h, ':', len);
        hl = (size_t)((colon ? colon : h + len) - h);
        if (hl >= sizeof u->host)
            return pb_fail(err, PB_EINVAL, "%s '%s': the host name is too long", what, s);
        memcpy(u->host, h, hl);
        u->host[hl] = '\0';
        if (colon)
            port = colon + 1;
        struct in_addr a4;
        if (hl == 0 && !host_optional)
            return pb_fail(err, PB_EINVAL, "%s '%s': no host", what, s);
        if (hl && inet_pton(AF_INET, u->host, &a4) != 1 && !dns_name(u->host))
            return pb_fail(err, PB_EINVAL, "%s '%s': '%s' is neither a host name (letters, digits, '-' and dots) nor "
                           "an IP address (IPv6 in brackets)", what, s, u->host);
    }
    if (port) {
        int rc = parse_port(port, (size_t)(h + len - port), what, s, &u->port, err);
        if (rc)
            return rc;
        u->port_given = true;
    }
    return PB_OK;
}

int url_parse(const char *s, const char *what, const char *schemes, struct url *u, pb_err *err)
{
    memset(u, 0, sizeof *u);
    const char *sep = s ? strstr(s, "://") : NULL;
    if (!sep)
        return pb_fail(err, PB_EINVAL, "%s '%s': not a URL (%s://HOST:PORT)", what, s ? s : "", schemes);
    size_t sl = (size_t)(sep - s);
    if (sl >= sizeof u->scheme)
        return pb_fail(err, PB_EINVAL, "%s '%s': scheme not one of %s", what, s, schemes);
    for (size_t i = 0; i < sl; i++)
        u->scheme[i] = (char)tolower((unsigned char)s[i]);
    u->scheme[sl] = '\0';
    bool ok = false;
    for (const char *p = schemes; *p;) {
        size_t n = strcspn(p, ",");
        ok |= n == sl && !strncmp(p, u->scheme, n);
        p += n + (p[n] == ',');
    }
    if (!ok)
        return pb_fail(err, PB_EINVAL, "%s '%s': scheme not one of %s", what, s, schemes);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            return pb_fail(err, PB_EINVAL, "%s '%s': a space or control character", what, s);
    const char *auth = sep + 3, *end = auth + strcspn(auth, "/?#");
    if (memchr(auth, '@', (size_t)(end - auth)))
        return pb_fail(err, PB_EINVAL, "%s '%s': user information in the URL is not supported", what, s);
    int rc = parse_hostport(auth, (size_t)(end - auth), false, what, s, u, err);
    if (rc)
        return rc;
    if (!u->port_given)
        u->port = !strcmp(u->scheme, "https") ? 443 : 80;
    if (*end == '?' || *end == '#' || strpbrk(end, "?#"))
        return pb_fail(err, PB_EINVAL, "%s '%s': a query or fragment is not supported", what, s);
    for (const char *c = end; *c; c++) {
        if (*c == '%') {
            if (!isxdigit((unsigned char)c[1]) || !isxdigit((unsigned char)c[2]))
                return pb_fail(err, PB_EINVAL, "%s '%s': a '%%' not followed by two hex digits", what, s);
            c += 2;
        } else if (!isalnum((unsigned char)*c) && !strchr("-._~!&()*+,=:@/", *c)) {
            return pb_fail(err, PB_EINVAL, "%s '%s': '%c' in the path", what, s, *c);
        }
    }
    if (strlen(end) >= sizeof u->path)
        return pb_fail(err, PB_EINVAL, "%s '%s': the path is too long", what, s);
    snprintf(u->path, sizeof u->path, "%s", end);
    return PB_OK;
}

int url_parse_listen(const char *s, const char *what, struct url *u, pb_err *err)
{
    memset(u, 0, sizeof *u);
    if (!s || !*s)
        return pb_fail(err, PB_EINVAL, "%s: empty (HOST:PORT or PORT)", what);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            return pb_fail(err, PB_EINVAL, "%s '%s': a space or control character", what, s);
    if (strspn(s, "0123456789") == strlen(s)) { /* PORT */
        int rc = parse_port(s, strlen(s), what, s, &u->port, err);
        u->port_given = rc == PB_OK;
        return rc;
    }
    int rc = parse_hostport(s, strlen(s), true, what, s, u, err);
    if (rc == PB_OK && !u->port_given)
        rc = pb_fail(err, PB_EINVAL, "%s '%s': no port (HOST:PORT)", what, s);
    return rc;
}

const char *url_host_bracketed(const struct url *u, char *buf, size_t size)
{
    snprintf(buf, size, u->v6 ? "[%s]" : "%s", u->host);
    return buf;
}
