/* JSON Schemas (response_format json_schema, tool parameters) turned
 * into grammars. The input is the schema's text.
 *
 * A schema that is not JSON, or uses what is not supported, is refused
 * with a message; one that is taken becomes GBNF that must compile (the
 * writer's output is the compiler's input: a schema plumb accepts must
 * never fail later, at a request's first token). */
#include "fuzz.h"

#include "plumb/sampler.h"
#include "sampler/grammar.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *schema = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!schema)
        return 0;
    char *gbnf = NULL;
    pb_err err = {0};
    int rc = sampler_schema_grammar(schema, &gbnf, &err);
    json_decref(schema);
    if (rc) {
        FUZZ_CHECK(err.msg[0], "a refusal without a message");
        fuzz_note("refused: %s", err.msg);
        return 0;
    }
    struct grammar *g = NULL;
    rc = grammar_parse(gbnf, strlen(gbnf), &g, &err);
    FUZZ_CHECK(rc == PB_OK, "the schema's grammar does not compile: %s\n%s", err.msg, gbnf);
    struct gmatch *m;
    FUZZ_CHECK(gmatch_create(g, &m, &err) == PB_OK, "%s", err.msg);
    gmatch_free(m);
    grammar_free(g);
    free(gbnf);
    return 0;
}
