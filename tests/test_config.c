/* The INI configuration: a full file, and every kind of mistake named
 * with its line. */
#include "testutil.h"

#include "plumb/config.h"
#include "kv/kv.h"

#include <jansson.h>

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

/* The keys of models on demand and presets, as read. */
static void test_presets(void **state)
{
    (void)state;
    const char *text = "[server]\n"
                       "memory_limit = 2GiB\n"
                       "[model terse]\n"
                       "source = /m.gguf\n"
                       "load = demand\n"
                       "keep_alive = 1h30m\n"
                       "system = You are terse;\\n no #tags.\n"
                       "  Answer in one line.\n"
                       "\n"
                       "  \\sEnds with a space:\\s\n"
                       "temperature = 0.2\n"
                       "top_p = 0.9\n"
                       "top_k = 40\n"
                       "min_p = 0.05\n"
                       "repeat_penalty = 1.1\n"
                       "seed = -42\n"
                       "stop = \"<|end|>\", \"\\nUser:\",\"say \\\"hi\\\" \\; now\"\n"
                       "max_tokens = 512\n"
                       "reasoning = off\n"
                       "fixed = temperature,system , stop\n"
                       "[model plain]\n"
                       "source = /m.gguf\n"
                       "stop = ###\n"
                       "keep_alive = forever\n"
                       "[model joined]\n"
                       "source = /m.gguf\n"
                       "system = one \\\n"
                       "  line\n"
                       "keep_alive = 0\n";
    struct config c;
    pb_err err = {0};
    if (load_text(text, &c, &err) != PB_OK)
        fail_msg("%s", err.msg);
    assert_true(c.memory_limit == 2ull << 30);
    const struct config_model *m = &c.models[0];
    assert_int_equal(m->load, SERVER_LOAD_DEMAND);
    assert_true(m->keep_alive_s == 5400);
    assert_string_equal(m->system, "You are terse;\n no #tags.\nAnswer in one line.\n Ends with a space: ");
    assert_true(m->temperature == 0.2 && m->top_p == 0.9 && m->min_p == 0.05 && m->repeat_penalty == 1.1);
    assert_int_equal(m->top_k, 40);
    assert_int_equal(m->seed, -42);
    assert_int_equal(m->n_stop, 3);
    assert_string_equal(m->stop[0], "<|end|>");
    assert_string_equal(m->stop[1], "\nUser:");
    assert_string_equal(m->stop[2], "say \"hi\" ; now");
    assert_int_equal(m->max_tokens, 512);
    assert_false(m->reasoning);
    assert_int_equal(m->preset_set, SERVER_PRESET_SYSTEM | SERVER_PRESET_TEMPERATURE | SERVER_PRESET_TOP_P |
                                        SERVER_PRESET_TOP_K | SERVER_PRESET_MIN_P | SERVER_PRESET_REPEAT_PENALTY |
                                        SERVER_PRESET_SEED | SERVER_PRESET_STOP | SERVER_PRESET_MAX_TOKENS |
                                        SERVER_PRESET_REASONING);
    assert_int_equal(m->preset_fixed, SERVER_PRESET_TEMPERATURE | SERVER_PRESET_SYSTEM | SERVER_PRESET_STOP);
    /* as the server takes it */
    const struct server_preset ps = config_model_preset(m);
    assert_string_equal(ps.system, m->system);
    assert_int_equal(ps.n_stop, 3);
    assert_string_equal(ps.stop[1], "\nUser:");
    assert_true(ps.temperature == 0.2);
    json_t *j = server_preset_json(&ps);
    assert_string_equal(json_string_value(json_object_get(j, "stop") ? json_array_get(json_object_get(j, "stop"), 0)
                                                                      : NULL), "<|end|>");
    assert_int_equal(json_array_size(json_object_get(j, "fixed")), 3);
    json_decref(j);
    /* an unquoted stop string is one, as written */
    assert_int_equal(c.models[1].n_stop, 1);
    assert_string_equal(c.models[1].stop[0], "###");
    assert_true(c.models[1].keep_alive_s == -1);
    assert_int_equal(c.models[1].load, SERVER_LOAD_DEFAULT);
    assert_int_equal(c.models[1].preset_set, SERVER_PRESET_STOP);
    /* a backslash at the end of a line joins the next without a break */
    assert_string_equal(c.models[2].system, "one line");
    assert_true(c.models[2].keep_alive_s == 0);
    /* the defaults */
    config_defaults(&c);
    assert_true(c.memory_limit == 0);
    assert_int_equal(load_text("[model a]\nsource = x\n", &c, &err), PB_OK);
    assert_int_equal(c.models[0].load, SERVER_LOAD_DEFAULT);
    assert_true(c.models[0].keep_alive_s == SERVER_KEEP_ALIVE_DEFAULT);
    assert_int_equal(c.models[0].preset_set, 0);
    /* the units, as the command line takes them too */
    double d;
    uint64_t z;
    assert_true(config_parse_duration("300", &d) && d == 300);
    assert_true(config_parse_duration("2.5", &d) && d == 2.5);
    assert_true(config_parse_duration("5m", &d) && d == 300);
    assert_true(config_parse_duration("1h30m15s", &d) && d == 5415);
    assert_true(config_parse_duration("250ms", &d) && d == 0.25);
    assert_true(config_parse_duration("-1", &d) && d == -1);
    assert_true(config_parse_duration("-5m", &d) && d == -1);
    assert_true(config_parse_duration("Forever", &d) && d == -1);
    const char *bad_d[] = {"", "m", "5x", "5 m", "1e3", "5m3", "inf", "nan", "0x10", "99999999999", "-", "+5"};
    for (size_t i = 0; i < sizeof bad_d / sizeof bad_d[0]; i++)
        if (config_parse_duration(bad_d[i], &d))
            fail_msg("duration '%s' taken", bad_d[i]);
    assert_true(config_parse_size("1500000000", &z) && z == 1500000000ull);
    assert_true(config_parse_size("2GiB", &z) && z == 2ull << 30);
    assert_true(config_parse_size("512M", &z) && z == 512ull << 20);
    assert_true(config_parse_size("1.5 gb", &z) && z == 1500000000ull);
    assert_true(config_parse_size("4KB", &z) && z == 4000);
    const char *bad_z[] = {"", "GiB", "1.5", "2 ", "-1G", "1e9", "2XB", "99999999T"};
    for (size_t i = 0; i < sizeof bad_z / sizeof bad_z[0]; i++)
        if (config_parse_size(bad_z[i], &z))
            fail_msg("size '%s' taken", bad_z[i]);
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
        /* models on demand, presets */
        {"[server]\nmemory_limit = lots\n", ":2: bad value 'lots' for 'memory_limit' in [server] (bytes"},
        {"[server]\nmemory_limit = 2 GiBs\n", ":2: bad value"},
        {"[model a]\nsource = x\nload = lazy\n", ":3: bad value 'lazy' for 'load' in [model a] (start or demand)"},
        {"[model a]\nsource = x\nkeep_alive = 5 parsecs\n", ":3: bad value '5 parsecs' for 'keep_alive'"},
        {"[model a]\nsource = x\nkeep_alive = 5mins\n", ":3: bad value"},
        {"[model a]\nsource = x\ntemperature = 3\n", ":3: bad value '3' for 'temperature' in [model a] (0 to 2)"},
        {"[model a]\nsource = x\ntop_p = 1.5\n", ":3: bad value '1.5' for 'top_p' in [model a] (0 to 1)"},
        {"[model a]\nsource = x\nmin_p = -0.1\n", ":3: bad value"},
        {"[model a]\nsource = x\ntop_k = -1\n", ":3: bad value"},
        {"[model a]\nsource = x\nrepeat_penalty = 0\n", ":3: bad value"},
        {"[model a]\nsource = x\nseed = 1.5\n", ":3: bad value '1.5' for 'seed' in [model a] (an integer)"},
        {"[model a]\nsource = x\nmax_tokens = 0\n", ":3: bad value"},
        {"[model a]\nsource = x\nreasoning = maybe\n", ":3: bad value 'maybe' for 'reasoning' in [model a] (on or off)"},
        {"[model a]\nsource = x\nfixed = temperature, colour\n", ":3: bad value for 'fixed' in [model a]: 'colour' is not"},
        {"[model a]\nsource = x\nfixed = max_tokens\n", "max_tokens is always a cap"},
        {"[model a]\nsource = x\nstop = \"abc\n", ":3: bad value for 'stop' in [model a]: a string without its closing"},
        {"[model a]\nsource = x\nstop = \"a\" \"b\"\n", "expected ',' between the strings"},
        {"[model a]\nsource = x\nstop = \"a\", \"b\", \"c\", \"d\", \"e\"\n", "more than 4 strings"},
        {"[model a]\nsource = x\nstop = \"\"\n", "an empty string"},
        {"[model a]\nsource = x\nstop = \"a\\qb\"\n", "unknown escape '\\q'"},
        {"[model a]\nsource = x\nsystem = Be \\q.\nparallel = 2\n", ":3: bad 'system' in [model a]: unknown escape"},
        {"[model a]\nsource = x\nsystem = ends in \\\n", ":3: bad 'system' in [model a]: a backslash ends it"},
        {"[model a]\nsource = x\nsystem =\n", ":3: bad 'system' in [model a]: it is empty"},
        {"[model a]\nsource = x\nparallel = 2\n  3\n", ":4: an indented line goes on with 'parallel' in [model a]"},
        {"[model a]\nsource = x\ntemperature = 0.5\ntemperature = 0.7\n", ":4: 'temperature' is set twice"},
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
                       "load = start\n"
                       "keep_alive = 90.5\n"
                       "system = Be brief;\\t#1\\\\ rule.\n"
                       "  Second line.\n"
                       "temperature = 0.7\n"
                       "top_p = 0.95\n"
                       "top_k = 20\n"
                       "min_p = 0.01\n"
                       "repeat_penalty = 1.05\n"
                       "seed = 9007199254740993\n"
                       "stop = \"<|im_end|>\", \"a;b #c \\\"d\\\"\", \"\\n\\n\"\n"
                       "max_tokens = 64\n"
                       "reasoning = on\n"
                       "fixed = seed, reasoning\n"
                       "[model b]\n"
                       "source = /models/bot.gguf\n"
                       "keep_alive = forever\n"
                       "load = demand\n"
                       "fixed = system\n"
                       "[server]\n"
                       "memory_limit = 24GiB\n";
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
    assert_true(back.memory_limit == 24ull << 30);
    assert_string_equal(back.models[0].system, "Be brief;\t#1\\ rule.\nSecond line.");
    assert_string_equal(back.models[0].stop[1], "a;b #c \"d\"");
    assert_int_equal(back.models[0].seed, 9007199254740993ll);
    assert_int_equal(back.models[1].preset_fixed, SERVER_PRESET_SYSTEM);
    /* system prompts INI would mangle: long lines, spaces at the ends of
     * lines, blank lines, comment characters, backslashes */
    static const char *const prompts[] = {
        " leading and trailing ",
        "line\n\nafter a blank line\n indented\ntrailing \nend\n",
        "; a comment?\n# another?\n[section]?\n\\\\ two backslashes \\",
        "tab\there",
    };
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0] + 1; i++) {
        config_defaults(&c);
        c.n_models = 1;
        snprintf(c.models[0].alias, sizeof c.models[0].alias, "m");
        snprintf(c.models[0].source, sizeof c.models[0].source, "/m.gguf");
        c.models[0].parallel = 1;
        c.models[0].batch = 512;
        c.models[0].step_ms = 150;
        c.models[0].prefill_chunk = 256;
        c.models[0].keep_alive_s = SERVER_KEEP_ALIVE_DEFAULT;
        c.models[0].preset_set = SERVER_PRESET_SYSTEM;
        if (i < sizeof prompts / sizeof prompts[0]) {
            snprintf(c.models[0].system, sizeof c.models[0].system, "%s", prompts[i]);
        } else { /* 3000 characters without a line break, spaces where lines would break */
            for (int k = 0; k < 3000; k++)
                c.models[0].system[k] = k % 7 == 6 ? ' ' : (char)('a' + k % 26);
        }
        assert_int_equal(config_format(&c, &out, &err), PB_OK);
        for (const char *line = out; *line; line = strchr(line, '\n') + 1) {
            assert_true(strchr(line, '\n') - line < 190); /* libinih reads lines of 196 characters */
            if (!strchr(line, '\n'))
                break;
        }
        if (load_text(out, &back, &err) != PB_OK)
            fail_msg("prompt %zu: %s\n%s", i, err.msg, out);
        if (strcmp(back.models[0].system, c.models[0].system) != 0)
            fail_msg("prompt %zu came back as '%s'\n%s", i, back.models[0].system, out);
        expect_same(&c, &back);
        free(out);
    }
    /* a control character in a preset string cannot be written */
    config_defaults(&c);
    c.n_models = 1;
    snprintf(c.models[0].alias, sizeof c.models[0].alias, "m");
    snprintf(c.models[0].source, sizeof c.models[0].source, "/m.gguf");
    c.models[0].preset_set = SERVER_PRESET_STOP;
    c.models[0].n_stop = 1;
    snprintf(c.models[0].stop[0], sizeof c.models[0].stop[0], "a\x01b");
    assert_int_equal(config_format(&c, &out, &err), PB_EINVAL);
    assert_non_null(strstr(err.msg, "stop"));
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
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
