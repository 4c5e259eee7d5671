/* JSON mode (response_format json_object): the grammar of one JSON object
 * (sampler_json_grammar) run by the grammar matcher on a model's output,
 * which is arbitrary bytes. The input's first byte says where to cut the
 * rest into pieces; the rest is the output.
 *
 * Two properties: feeding the text in pieces (as the engine feeds it,
 * token by token) reaches the same verdict and the same completeness as
 * feeding it whole; and text the matcher takes as a complete object is
 * one for a JSON parser too (jansson), since that is JSON mode's promise
 * to clients. Only jansson's own limits are forgiven: numbers too large
 * for it, "\u0000" in a key. */
#include "fuzz.h"

#include "plumb/sampler.h"
#include "sampler/grammar.h"

#include <string.h>

static struct grammar *json_grammar;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pb_err err = {0};
    if (!json_grammar) {
        const char *g = sampler_json_grammar();
        FUZZ_CHECK(grammar_parse(g, strlen(g), &json_grammar, &err) == PB_OK, "%s", err.msg);
    }
    const size_t step = 1 + data[0] % 7;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    struct gmatch *whole, *pieces;
    FUZZ_CHECK(gmatch_create(json_grammar, &whole, &err) == PB_OK, "%s", err.msg);
    FUZZ_CHECK(gmatch_create(json_grammar, &pieces, &err) == PB_OK, "%s", err.msg);
    const bool ok = gmatch_feed(whole, text, len);
    bool ok_pieces = true;
    for (size_t i = 0; i < len && ok_pieces; i += step)
        ok_pieces = gmatch_feed(pieces, text + i, len - i < step ? len - i : step);
    FUZZ_CHECK(ok == ok_pieces, "whole: %d, in pieces of %zu: %d", ok, step, ok_pieces);
    const bool complete = ok && gmatch_complete(whole);
    if (ok)
        FUZZ_CHECK(complete == gmatch_complete(pieces), "completeness depends on how the text was cut");
    gmatch_free(whole);
    gmatch_free(pieces);
    if (!complete)
        return 0;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!j && (strstr(je.text, "too big") || strstr(je.text, "overflow") || strstr(je.text, "NUL byte in object key")))
        return 0; /* jansson's limits, not JSON's */
    FUZZ_CHECK(json_is_object(j), "JSON mode accepts %zu bytes that are not a JSON object: %s", len,
               j ? "another value" : je.text);
    json_decref(j);
    return 0;
}
