/* The INI configuration: a full file, and every kind of mistake named
 * with its line. */
#include "testutil.h"

#include "plumb/config.h"
#include "kv/kv.h"

#include <stdio.h>
#include <stdlib.h>
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
                       "[store]\n"
                       "registry = http://artifactory.corp:8081/api/hf\n"
                       "registry_token_file = /etc/plumb/registry-token\n"
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
    assert_string_equal(c.registry, "http://artifactory.corp:8081/api/hf");
    assert_string_equal(c.registry_token_file, "/etc/plumb/registry-token");
    assert_string_equal(c.store, "/var/lib/plumb"); /* [server] store is another key */
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
        {"[server]\nui = yes\n", ":2: bad value 'yes' for 'ui'"},
        {"[server]\nport = 1\nport = 2\n", ":3: 'port' is set twice"},
        {"[servre]\nport = 1\n", ":2: unknown section [servre]"},
        {"[model bad/name]\nsource = x\n", ":2: bad model name"},
        {"[model a]\nsource = x\n[model a]\nsource = y\n", ":4: 'source' is set twice in [model a]"},
        {"[model a]\nsource = x\n[model b]\nsource = y\n[model a]\nctx = 64\n", ":6: model 'a' is configured twice"},
        {"[model a]\nsource = x\nkv_type = f8\n", ":3: bad value 'f8'"},
        {"[model a]\nparallel = 4\n", "has no 'source'"},
        {"[server]\nthis is not ini\n", ":2:"},
        {"[store]\nregistry = huggingface.co\n", ":2: bad value 'huggingface.co' for 'registry' in [store]"},
        {"[store]\nregistry = ftp://mirror\n", ":2: bad value"},
        {"[store]\nregistry = https://\n", ":2: bad value"},
        {"[store]\nregistry_token_file =\n", ":2: bad value"},
        {"[store]\nregistry = https://a\nregistry = https://b\n", ":3: 'registry' is set twice in [store]"},
        {"[store]\nhome = /x\n", ":2: unknown key 'home' in [store]"},
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

/* Two configurations hold the same values (the path aside). */
static void expect_same(const struct config *a, const struct config *b)
{
    struct config x = *a, y = *b;
    memset(x.path, 0, sizeof x.path);
    memset(y.path, 0, sizeof y.path);
    if (memcmp(&x, &y, sizeof x) != 0) {
        assert_string_equal(x.host, y.host);
        assert_int_equal(x.port, y.port);
        assert_true(x.header_timeout_s == y.header_timeout_s && x.min_rate == y.min_rate);
        assert_true(x.timeout_s == y.timeout_s && x.drain_timeout_s == y.drain_timeout_s);
        for (int i = 0; i < x.n_models; i++)
            assert_true(x.models[i].step_ms == y.models[i].step_ms);
        fail_msg("the configurations differ");
    }
}

/* config_format's text reads back into the same values (the Kubernetes
 * ConfigMap is made of it); what INI cannot carry is refused. */
static void test_format_round_trip(void **state)
{
    (void)state;
    const char *text = "[server]\n"
                       "host = 0.0.0.0\n"
                       "port = 9000\n"
                       "api_key_file = /etc/plumb/keys\n"
                       "max_queue = 8\n"
                       "max_body = 2048\n"
                       "max_tokens = 100\n"
                       "max_connections = 7\n"
                       "max_connections_per_client = 0\n"
                       "header_timeout = 2.25\n"
                       "min_rate = 100.1\n"
                       "insecure = yes\n"
                       "timeout = 30.5\n"
                       "drain_timeout = 0.3\n"
                       "threads = 3\n"
                       "log_format = json\n"
                       "store = /var/lib/plumb\n"
                       "pid_file = /run/plumb/plumb.pid\n"
                       "instance_id = box-1\n"
                       "cors_origins = https://a.example\n"
                       "ui = off\n"
                       "[store]\n"
                       "registry = https://mirror.example/hf\n"
                       "registry_token_file = /etc/plumb/token\n"
                       "[model assistant]\n"
                       "source = qwen2.5-7b:q4_k_m\n"
                       "parallel = 16\n"
                       "ctx = 8192\n"
                       "kv_type = q8_0\n"
                       "batch = 64\n"
                       "step_ms = 33.3\n"
                       "prefill_chunk = 3\n"
                       "chat_format = chatml\n"
                       "[model b]\n"
                       "source = /models/bot.gguf\n";
    struct config c, back;
    pb_err err = {0};
    if (load_text(text, &c, &err) != PB_OK)
        fail_msg("%s", err.msg);
    char *out = NULL;
    assert_int_equal(config_format(&c, &out, &err), PB_OK);
    assert_int_equal(load_text(out, &back, &err), PB_OK);
    expect_same(&c, &back);
    assert_int_equal(back.ui, SERVER_UI_OFF);
    assert_string_equal(back.registry, "https://mirror.example/hf");
    assert_string_equal(back.registry_token_file, "/etc/plumb/token");
    free(out);
    /* [store] with one key of the two */
    config_defaults(&c);
    snprintf(c.registry, sizeof c.registry, "http://10.0.0.5/models");
    assert_int_equal(config_format(&c, &out, &err), PB_OK);
    assert_non_null(strstr(out, "[store]\nregistry = http://10.0.0.5/models\n"));
    assert_null(strstr(out, "registry_token_file"));
    assert_int_equal(load_text(out, &back, &err), PB_OK);
    expect_same(&c, &back);
    free(out);
    /* a registry that is no URL is refused, not written */
    config_defaults(&c);
    snprintf(c.registry, sizeof c.registry, "mirror.corp");
    assert_int_equal(config_format(&c, &out, &err), PB_EINVAL);
    assert_null(out);
    /* the defaults alone */
    config_defaults(&c);
    assert_int_equal(config_format(&c, &out, &err), PB_OK);
    assert_int_equal(load_text(out, &back, &err), PB_OK);
    expect_same(&c, &back);
    free(out);
    /* values INI cannot carry */
    const char *bad[] = {"/a;b", "/a#b", "/a\nport = 1", " /a", "/a "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config_defaults(&c);
        snprintf(c.store, sizeof c.store, "%s", bad[i]);
        assert_int_equal(config_format(&c, &out, &err), PB_EINVAL);
        assert_null(out);
        assert_non_null(strstr(err.msg, "store"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_mistakes),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
