/* Chat templates (src/template): the lexer, the parser and the
 * interpreter under its own limits (output, values, iterations, macro
 * depth). The input is a template's source, optionally followed by a NUL
 * byte and JSON: an array is the messages, an object the whole set of
 * user variables. Without it the template is rendered twice, with
 * well-formed turns (and tools) and with hostile ones. */
#include "fuzz.h"

#include "template/template.h"

#include <stdlib.h>
#include <string.h>

static void render(const struct tmpl *t, const json_t *user)
{
    json_t *plain = json_pack("{s:b, s:s, s:s}", "add_generation_prompt", 1, "bos_token", "<s>", "eos_token", "</s>");
    FUZZ_CHECK(plain, "out of memory");
    const struct tmpl_vars vars = {plain, user};
    /* a fixed clock: strftime_now gives the same text every run */
    const struct tmpl_opts opts = {.now = 1700000000};
    struct tmpl_output out;
    pb_err err = {0};
    int rc = tmpl_render(t, &vars, &opts, &out, &err);
    fuzz_note("render: %s", rc ? err.msg : "ok");
    if (rc == PB_OK) {
        FUZZ_CHECK(out.text && out.user && out.text[out.len] == 0, "output not terminated");
        FUZZ_CHECK(out.len <= 16u << 20, "output of %zu bytes past the limit", out.len);
        tmpl_output_free(&out);
    } else {
        FUZZ_CHECK(err.msg[0], "a failed render says nothing");
    }
    json_decref(plain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const char *nul = memchr(src, 0, size);
    size_t len = nul ? (size_t)(nul - src) : size;
    struct tmpl *t;
    pb_err err = {0};
    if (tmpl_parse(src, len, &t, &err) != PB_OK) {
        fuzz_note("parse: %s", err.msg);
        FUZZ_CHECK(err.msg[0], "a failed parse says nothing");
        return 0;
    }
    if (nul) {
        json_t *j = json_loadb(nul + 1, size - len - 1, JSON_ALLOW_NUL, NULL);
        json_t *user = json_is_object(j) ? json_incref(j) : json_pack("{s:O?}", "messages", j);
        if (user)
            render(t, user);
        json_decref(user);
        json_decref(j);
    } else {
        json_t *user = json_pack("{s:O, s:O}", "messages", fuzz_messages_plain(), "tools", fuzz_tools());
        render(t, user);
        json_decref(user);
        user = json_pack("{s:O}", "messages", fuzz_messages_hostile());
        render(t, user);
        json_decref(user);
    }
    tmpl_free(t);
    return 0;
}
