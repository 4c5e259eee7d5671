/* HTTP request heads as the server's front door sees them
 * (gate_head_check, src/server/gate.c): the bytes a connection has sent
 * so far, judged incomplete, accepted (the head's length and its
 * Content-Length) or refused (400, 413, 431 and why) before
 * libmicrohttpd reads them. The input is those bytes, judged with the
 * server's limits (64 KiB of head, 1 MiB of body) and with small ones
 * (256 and 1024 bytes), whole and in pieces: a connection's bytes come a
 * segment at a time and the gate looks again at each, so every prefix
 * must be incomplete or get the whole input's verdict, and once a prefix
 * has one every longer one keeps it. An accepted head has a request line,
 * ends with a blank line within the input, and its Content-Length is the
 * number written. */
#include "fuzz.h"

#include "plumb/server.h"
#include "server/gate.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static bool same(enum gate_head a, const struct gate_verdict *va, enum gate_head b, const struct gate_verdict *vb)
{
    return a == b && va->head_len == vb->head_len && va->body_len == vb->body_len && va->status == vb->status &&
           !strcmp(va->message, vb->message) && (va->code == NULL) == (vb->code == NULL);
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Where the request line starts: after the CR and LF bytes before it. */
static size_t request_line(const char *h, size_t n)
{
    size_t i = 0;
    while (i < n && (h[i] == '\r' || h[i] == '\n'))
        i++;
    return i;
}

/* The value of the head's Content-Length line, read here without the
 * gate's code: 1 and the digits (leading zeros dropped) in buf, 0 when the
 * head has none, -1 when the line is not digits between blanks. */
static int content_length(const char *h, size_t n, char *buf, size_t size)
{
    static const char name[] = "content-length:";
    const size_t nl = sizeof name - 1;
    for (size_t i = request_line(h, n); i < n; i++) {
        if (h[i] != '\n')
            continue; /* a header line starts after a newline: the request line is not one */
        const char *line = h + i + 1;
        size_t ll = 0;
        while (i + 1 + ll < n && line[ll] != '\n')
            ll++;
        size_t k = 0;
        while (k < nl && k < ll && lower((unsigned char)line[k]) == name[k])
            k++;
        if (k < nl)
            continue;
        while (k < ll && (line[k] == ' ' || line[k] == '\t'))
            k++;
        while (k + 1 < ll && line[k] == '0' && line[k + 1] >= '0' && line[k + 1] <= '9')
            k++;
        size_t d = 0;
        while (k < ll && line[k] >= '0' && line[k] <= '9' && d + 1 < size)
            buf[d++] = line[k++];
        buf[d] = 0;
        while (k < ll && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        return d && k == ll ? 1 : -1;
    }
    return 0;
}

static void check_verdict(const uint8_t *data, size_t size, size_t max_head, uint64_t max_body, enum gate_head h,
                          const struct gate_verdict *v)
{
    const char *s = (const char *)data;
    switch (h) {
    case GATE_HEAD_INCOMPLETE:
        FUZZ_CHECK(size <= max_head, "%zu bytes without a blank line are still incomplete", size);
        break;
    case GATE_HEAD_REFUSED:
        FUZZ_CHECK(v->status == 400 || v->status == 413 || v->status == 431, "refused with status %d", v->status);
        FUZZ_CHECK(v->message && v->message[0], "refused (%d) without a message", v->status);
        FUZZ_CHECK((v->status == 413) == (v->code && !strcmp(v->code, "request_too_large")), "status %d, code %s",
                   v->status, v->code ? v->code : "(none)");
        break;
    case GATE_HEAD_OK: {
        const size_t e = v->head_len;
        FUZZ_CHECK(e >= 2 && e <= size && e <= max_head + 1, "head of %zu bytes in %zu", e, size);
        FUZZ_CHECK(s[e - 1] == '\n' && (s[e - 2] == '\n' || (e >= 3 && s[e - 2] == '\r' && s[e - 3] == '\n')),
                   "the head does not end with a blank line");
        /* libmicrohttpd skips empty lines before a request line: a head
         * of nothing else would let it read the next one unchecked */
        FUZZ_CHECK(request_line(s, e) < e, "accepted a head without a request line");
        FUZZ_CHECK(v->body_len <= max_body, "body of %" PRIu64 " bytes accepted (at most %" PRIu64 ")", v->body_len,
                   max_body);
        char digits[32], want[32];
        const int cl = content_length(s, e, digits, sizeof digits);
        FUZZ_CHECK(cl >= 0, "accepted a Content-Length that is not a number");
        snprintf(want, sizeof want, "%" PRIu64, v->body_len);
        FUZZ_CHECK(cl == 1 ? !strcmp(digits, want) : v->body_len == 0, "Content-Length %s read as %s",
                   cl == 1 ? digits : "(none)", want);
        break;
    }
    }
}

static void judge(const uint8_t *data, size_t size, size_t max_head, uint64_t max_body)
{
    const char *s = (const char *)data;
    struct gate_verdict v, pv;
    const enum gate_head h = gate_head_check(s, size, max_head, max_body, &v);
    fuzz_note("max_head %zu: %s %d %s (head %zu, body %" PRIu64 ")", max_head,
              h == GATE_HEAD_OK ? "ok" : h == GATE_HEAD_REFUSED ? "refused" : "incomplete", v.status, v.message,
              v.head_len, v.body_len);
    check_verdict(data, size, max_head, max_body, h, &v);

    /* in pieces: each byte of the first 256, then about 64 cuts, and the
     * bytes either side of the head's end */
    bool decided = false;
    const size_t step = size / 64 + 1;
    for (size_t k = 0; k <= size; k = k < 256 ? k + 1 : k + step) {
        const enum gate_head ph = gate_head_check(s, k, max_head, max_body, &pv);
        if (ph == GATE_HEAD_INCOMPLETE) {
            FUZZ_CHECK(!decided, "%zu bytes are incomplete after a shorter prefix was judged", k);
            continue;
        }
        decided = true;
        FUZZ_CHECK(same(ph, &pv, h, &v), "%zu bytes judged %d (%d %s), all %zu judged %d (%d %s)", k, ph, pv.status,
                   pv.message, size, h, v.status, v.message);
    }
    if (h == GATE_HEAD_OK) {
        FUZZ_CHECK(gate_head_check(s, v.head_len - 1, max_head, max_body, &pv) == GATE_HEAD_INCOMPLETE,
                   "the head without its last byte is not incomplete");
        const enum gate_head ph = gate_head_check(s, v.head_len, max_head, max_body, &pv);
        FUZZ_CHECK(same(ph, &pv, h, &v), "the head alone is judged otherwise than with what follows it");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    judge(data, size, SERVER_MAX_HEAD, SERVER_DEFAULT_MAX_BODY);
    judge(data, size, 256, 1024);
    return 0;
}
