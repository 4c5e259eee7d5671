/* The INI configuration of plumb serve (src/config): every section and
 * key, value ranges, duplicates, model names. The input is the file's
 * text, read from memory through the same handler as a file
 * (config_parse). */
#include "fuzz.h"

#include "plumb/config.h"
#include "plumb/engine.h"

#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    pb_err err = {0};
    config_defaults(&c);
    if (config_parse("fuzz.ini", (const char *)data, size, &c, &err) != PB_OK) {
        FUZZ_CHECK(!strncmp(err.msg, "fuzz.ini", 8), "message does not name the file: %s", err.msg);
        return 0;
    }
    FUZZ_CHECK(c.n_models >= 0 && c.n_models <= CONFIG_MAX_MODELS, "%d models", c.n_models);
    FUZZ_CHECK(c.port >= 0 && c.port <= 65535, "port %d", c.port);
    FUZZ_CHECK(!c.registry[0] || !strncasecmp(c.registry, "http://", 7) || !strncasecmp(c.registry, "https://", 8),
               "registry '%s' accepted", c.registry);
    for (int i = 0; i < c.n_models; i++) {
        const struct config_model *m = &c.models[i];
        FUZZ_CHECK(config_alias_valid(m->alias), "model %d: alias '%s' accepted", i, m->alias);
        FUZZ_CHECK(m->source[0], "model %d without a source accepted", i);
        for (int k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(c.models[k].alias, m->alias), "model '%s' accepted twice", m->alias);
        struct engine_params ep = config_engine_params(m);
        FUZZ_CHECK(ep.n_slots >= 1, "model %d: %d slots", i, ep.n_slots);
    }
    return 0;
}
