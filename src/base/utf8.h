/* UTF-8 checks for text that crosses into JSON (model output may hold
 * any bytes). */
#ifndef PLUMB_BASE_UTF8_H
#define PLUMB_BASE_UTF8_H

#include "plumb/base.h"

#include <jansson.h>
#include <stddef.h>

/* The length of the valid UTF-8 character at s (n bytes available), 0
 * when it is not one (bad lead, truncated, overlong, surrogate, beyond
 * U+10FFFF). */
size_t utf8_valid_len(const unsigned char *s, size_t n);
/* pb_json_text (plumb/base.h): a JSON string of bytes, each invalid byte
 * as U+FFFD. */

#endif
