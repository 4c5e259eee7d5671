/* JSON mode's guard (src/sampler/json_guard.c), the byte-level check that
 * decides which tokens a response_format json_object answer may take:
 * the model's output is arbitrary bytes. The input is such output.
 *
 * Two properties: feeding the text in pieces (split where the input's
 * first byte says) ends in the same verdict and state as feeding it
 * whole, since the engine feeds token by token; and text the guard
 * accepts as a complete object is one for a JSON parser too (jansson),
 * since that is the promise JSON mode makes to clients. Only jansson's
 * own limits are forgiven: numbers too large for it, "\u0000" in a key. */
#include "fuzz.h"

#include "sampler/json_guard.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const size_t step = 1 + data[0] % 7;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    struct json_guard whole, pieces;
    json_guard_init(&whole);
    json_guard_init(&pieces);
    const bool ok = json_guard_feed(&whole, text, len);
    bool ok_pieces = true;
    for (size_t i = 0; i < len && ok_pieces; i += step)
        ok_pieces = json_guard_feed(&pieces, text + i, len - i < step ? len - i : step);
    FUZZ_CHECK(ok == ok_pieces, "whole: %d, in pieces of %zu: %d", ok, step, ok_pieces);
    if (!ok)
        return 0;
    FUZZ_CHECK(!memcmp(&whole, &pieces, sizeof whole), "the state depends on how the text was cut");
    if (!json_guard_complete(&whole))
        return 0;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!j && (strstr(je.text, "too big") || strstr(je.text, "overflow") || strstr(je.text, "NUL byte in object key")))
        return 0; /* jansson's limits, not JSON's */
    FUZZ_CHECK(json_is_object(j), "the guard accepts %zu bytes that are not a JSON object: %s", len,
               j ? "another value" : je.text);
    json_decref(j);
    return 0;
}
