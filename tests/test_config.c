/* The INI configuration: a full file, and every kind of mistake named
 * with its line. */
#include "testutil.h"

#include "plumb/config.h"
#include "kv/kv.h"

#include <string.h>

static int load_text(const char *text, struct config *c, pb_err *err)
{
    char path[512];
    test_tmpfile("plumb.ini", path, sizeof path);
    test_write_file(path, text, strlen(text));
    config_defaults(c);
    return config_load(path, c, err);
}

static void test_full_file(void **state)
{
    (void)state;
    const char *text = "; plumb serve\n"
                       "[server]\n"
                       "host = 0.0.0.0\n"
                       "port = 9000\n"
                       "api_key_file = /etc/plumb/keys\n"
                       "max_queue = 8\n"
                       "timeout = 30.5\n"
                       "log_format = json\n"
                       "store = /var/lib/plumb\n"
                       "\n"
                       "[model assistant]\n"
                       "source = qwen2.5-7b:q4_k_m\n"
                       "parallel = 16\n"
                       "ctx = 8192\n"
                       "kv_type = q8_0\n"
                       "[model support-bot:2]\n"
                       "source = /models/bot.gguf ; inline comment\n";
    struct config c;
    pb_err err;
    assert_int_equal(load_text(text, &c, &err), PB_OK);
    assert_string_equal(c.host, "0.0.0.0");
    assert_int_equal(c.port, 9000);
    assert_int_equal(c.max_queue, 8);
    assert_true(c.timeout_s == 30.5);
    assert_true(c.log_json);
    assert_int_equal(c.drain_timeout_s, 30); /* a default kept */
    assert_int_equal(c.n_models, 2);
    assert_string_equal(c.models[0].alias, "assistant");
    assert_string_equal(c.models[0].source, "qwen2.5-7b:q4_k_m");
    assert_int_equal(c.models[0].parallel, 16);
    assert_int_equal(c.models[0].ctx, 8192);
    assert_int_equal(c.models[0].kv_type, PB_KV_Q8_0);
    assert_string_equal(c.models[1].alias, "support-bot:2");
    assert_string_equal(c.models[1].source, "/models/bot.gguf");
    assert_int_equal(c.models[1].parallel, 4);

    /* from memory, without the final newline */
    struct config m;
    config_defaults(&m);
    assert_int_equal(config_parse("mem.ini", text, strlen(text) - 1, &m, &err), PB_OK);
    assert_string_equal(m.path, "mem.ini");
    assert_int_equal(m.n_models, 2);
    assert_string_equal(m.models[1].source, "/models/bot.gguf");
    assert_int_equal(m.models[0].kv_type, PB_KV_Q8_0);
}

static void test_mistakes(void **state)
{
    (void)state;
    static const struct {
        const char *text, *expect; /* expect: in the message, with its line */
    } cases[] = {
        {"[server]\nport = 8080\nprot = 1\n", ":3: unknown key 'prot'"},
        {"[server]\nport = 99999\n", ":2: bad value '99999' for 'port'"},
        {"[server]\nport = 80x\n", ":2: bad value"},
        {"[server]\ntimeout = -1\n", ":2: bad value"},
        {"[server]\nlog_format = xml\n", ":2: bad value 'xml'"},
        {"[server]\nport = 1\nport = 2\n", ":3: 'port' is set twice"},
        {"[servre]\nport = 1\n", ":2: unknown section [servre]"},
        {"[model bad/name]\nsource = x\n", ":2: bad model name"},
        {"[model a]\nsource = x\n[model a]\nsource = y\n", ":4: 'source' is set twice in [model a]"},
        {"[model a]\nsource = x\n[model b]\nsource = y\n[model a]\nctx = 64\n", ":6: model 'a' is configured twice"},
        {"[model a]\nsource = x\nkv_type = f8\n", ":3: bad value 'f8'"},
        {"[model a]\nparallel = 4\n", "has no 'source'"},
        {"[server]\nthis is not ini\n", ":2:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config c;
        pb_err err = {0};
        int rc = load_text(cases[i].text, &c, &err);
        if (rc == PB_OK || !strstr(err.msg, cases[i].expect))
            fail_msg("case %zu: rc %d, message '%s', expected '%s'", i, rc, err.msg, cases[i].expect);
        /* the same text from memory: the same verdict, the same line */
        pb_err merr = {0};
        config_defaults(&c);
        int mrc = config_parse("mem.ini", cases[i].text, strlen(cases[i].text), &c, &merr);
        if (mrc != rc || strncmp(merr.msg, "mem.ini:", 8) || !strstr(merr.msg, cases[i].expect))
            fail_msg("case %zu from memory: rc %d, message '%s', expected '%s'", i, mrc, merr.msg, cases[i].expect);
    }
    struct config c;
    pb_err err;
    config_defaults(&c);
    assert_int_equal(config_load("/nonexistent/plumb.ini", &c, &err), PB_EIO);
    assert_true(config_alias_valid("qwen2.5-7b:q4_k_m"));
    assert_false(config_alias_valid("../x"));
    assert_false(config_alias_valid(""));
    assert_false(config_alias_valid("-x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_mistakes),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
