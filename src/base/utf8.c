#include "base/utf8.h"

#include <stdlib.h>
#include <string.h>

size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len;
    unsigned min;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    unsigned cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

json_t *pb_json_text(const char *s, size_t len)
{
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_valid_len((const unsigned char *)s + i, len - i);
        if (k == 0) {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        }
    }
    json_t *v = json_stringn(buf, o);
    free(buf);
    return v;
}

size_t pb_escape_text(const char *s, char *out, size_t size)
{
    if (!size)
        return 0;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p), o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_valid_len(p + i, n - i);
        /* C0 controls, DEL, and U+0080..U+009F (C1: CSI and the like,
         * which some terminals obey) are written as \xHH, as is every byte
         * that is not UTF-8; the rest passes as it is */
        bool c1 = k == 2 && p[i] == 0xC2 && p[i + 1] < 0xA0;
        if (k == 0 || c1 || p[i] < 0x20 || p[i] == 0x7f) {
            size_t take = c1 ? 2 : 1;
            for (size_t j = 0; j < take; j++) {
                char esc[8];
                int m = snprintf(esc, sizeof esc, "\\x%02x", p[i + j]);
                if (o + (size_t)m >= size)
                    goto full;
                memcpy(out + o, esc, (size_t)m);
                o += (size_t)m;
            }
            i += take;
        } else {
            if (o + k >= size)
                goto full;
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        }
    }
full:
    out[o] = 0;
    return o;
}
