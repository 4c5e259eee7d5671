/* Chat templates: the real templates of testdata/templates render every
 * case exactly; language features against Jinja2's documented results;
 * errors name their line; mutated templates never crash. */
#define _GNU_SOURCE
#include "testutil.h"

#include "base/rng.h"
#include "chat/chat.h"
#include "gguf/gguf.h"
#include "sampler/grammar.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Renders src with vars and user variables (JSON texts, may be NULL);
 * returns the output or NULL with err filled. With marks, *marks gets a
 * string of '0' and '1', one per output byte: 1 where user text. */
static char *render_marked(const char *src, const char *vars_json, const char *user_json, char **marks, pb_err *err)
{
    struct tmpl *t;
    if (tmpl_parse(src, strlen(src), &t, err))
        return NULL;
    json_error_t je;
    json_t *vars = json_loads(vars_json ? vars_json : "{}", 0, &je);
    json_t *user = user_json ? json_loads(user_json, 0, &je) : NULL;
    assert_non_null(vars);
    assert_true(!user_json || user);
    struct tmpl_opts o = {.now = 1720180800}; /* 2024-07-05T12:00:00Z */
    struct tmpl_vars v = {vars, user};
    struct tmpl_output r;
    char *out = NULL;
    if (tmpl_render(t, &v, &o, &r, err) == 0) {
        out = r.text;
        if (marks) {
            *marks = malloc(r.len + 1);
            for (size_t i = 0; i < r.len; i++)
                (*marks)[i] = r.user[i] ? '1' : '0';
            (*marks)[r.len] = 0;
        }
        free(r.user);
    }
    json_decref(vars);
    json_decref(user);
    tmpl_free(t);
    return out;
}

static char *render(const char *src, const char *vars_json, pb_err *err)
{
    return render_marked(src, vars_json, NULL, NULL, err);
}

#define EXPECT_RENDER(src, vars, want)                                                                                 \
    do {                                                                                                               \
        pb_err e_ = {0};                                                                                               \
        char *got_ = render((src), (vars), &e_);                                                                       \
        if (!got_)                                                                                                     \
            fail_msg("'%s' failed: %s", (src), e_.msg);                                                               \
        if (strcmp(got_, (want)) != 0)                                                                                 \
            fail_msg("'%s'\n rendered '%s'\n expected '%s'", (src), got_, (want));                                    \
        free(got_);                                                                                                    \
    } while (0)

#define EXPECT_ERROR(src, vars, needle)                                                                                \
    do {                                                                                                               \
        pb_err e_ = {0};                                                                                               \
        char *got_ = render((src), (vars), &e_);                                                                       \
        if (got_)                                                                                                      \
            fail_msg("'%s' rendered '%s', expected an error about '%s'", (src), got_, (needle));                     \
        if (!strstr(e_.msg, (needle)))                                                                                 \
            fail_msg("'%s': error '%s' does not mention '%s'", (src), e_.msg, (needle));                            \
    } while (0)

/* ---- the reference cases ---- */

static void test_reference_cases(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(cases_path, "templates/cases.json");
    json_error_t je;
    json_t *cases = json_load_file(cases_path, 0, &je);
    assert_non_null(cases);
    size_t i;
    json_t *cs;
    int passed = 0;
    json_array_foreach(cases, i, cs)
    {
        const char *name = json_string_value(json_object_get(cs, "name"));
        char tpath[1024];
        const char *tfile = json_string_value(json_object_get(cs, "template"));
        char rel[512];
        snprintf(rel, sizeof rel, "templates/%s", tfile);
        assert_non_null(testdata_file(rel, tpath, sizeof tpath));
        size_t len;
        char *src = test_read_file(tpath, &len);
        assert_non_null(src);
        struct tmpl *t;
        pb_err err = {0};
        if (tmpl_parse(src, len, &t, &err))
            fail_msg("%s: parse: %s", name, err.msg);
        /* the variables transformers gives a template */
        json_t *vars = json_pack("{s:O,s:O,s:O,s:O,s:n,s:n}", "messages", json_object_get(cs, "messages"),
                                 "add_generation_prompt", json_object_get(cs, "add_generation_prompt"), "bos_token",
                                 json_object_get(cs, "bos_token"), "eos_token", json_object_get(cs, "eos_token"),
                                 "tools", "documents");
        json_t *kwargs = json_object_get(cs, "template_kwargs");
        if (kwargs)
            json_object_update(vars, kwargs);
        struct tm tm = {0};
        const char *now = json_string_value(json_object_get(cs, "now"));
        assert_non_null(strptime(now, "%Y-%m-%dT%H:%M:%S", &tm));
        struct tmpl_opts o = {.now = timegm(&tm)};
        struct tmpl_vars tv = {vars, NULL};
        struct tmpl_output r = {0};
        int rc = tmpl_render(t, &tv, &o, &r, &err);
        const char *out = r.text;
        size_t out_len = r.len;
        json_t *expected = json_object_get(cs, "expected");
        if (json_is_null(expected)) {
            const char *want = json_string_value(json_object_get(cs, "expected_error"));
            if (rc == 0)
                fail_msg("%s: rendered, but the template should raise '%s'", name, want);
            if (!strstr(err.msg, want))
                fail_msg("%s: error '%s' is not '%s'", name, err.msg, want);
        } else {
            if (rc)
                fail_msg("%s: %s", name, err.msg);
            const char *want = json_string_value(expected);
            if (out_len != json_string_length(expected) || memcmp(out, want, out_len) != 0)
                fail_msg("%s:\n--- rendered\n%s\n--- expected\n%s\n---", name, out, want);
        }
        passed++;
        tmpl_output_free(&r);
        json_decref(vars);
        tmpl_free(t);
        free(src);
    }
    print_message("  %d cases\n", passed);
    assert_int_equal(passed, 36);
    json_decref(cases);
}

/* ---- language features (expected values as Jinja2 renders them) ---- */

static void test_whitespace_control(void **state)
{
    (void)state;
    /* trim_blocks: the newline after a block tag goes */
    EXPECT_RENDER("{% if true %}\nyes\n{% endif %}\nafter", NULL, "yes\nafter");
    /* lstrip_blocks: indentation before a block tag goes */
    EXPECT_RENDER("a\n    {% if true %}b{% endif %}\nc", NULL, "a\nbc");
    /* not for variable tags */
    EXPECT_RENDER("a\n    {{ 'b' }}\nc", NULL, "a\n    b\nc");
    /* - strips all whitespace, + keeps it */
    EXPECT_RENDER("a  \n {{- 'b' -}} \n  c", NULL, "abc");
    EXPECT_RENDER("a\n  {%+ if true %}b{% endif %}", NULL, "a\n  b");
    EXPECT_RENDER("{% if true +%}\nb{% endif %}", NULL, "\nb");
    /* comments are blocks for trimming */
    EXPECT_RENDER("a\n  {# note #}\nb", NULL, "a\nb");
    /* one trailing newline of the template is dropped */
    EXPECT_RENDER("x\n", NULL, "x");
    EXPECT_RENDER("x\n\n", NULL, "x\n");
    EXPECT_RENDER("a\r\nb", NULL, "a\nb");
    EXPECT_RENDER("{% raw %}{{ not parsed }}{% endraw %}", NULL, "{{ not parsed }}");
    /* trim_blocks does not apply after {% raw %}, does after endraw */
    EXPECT_RENDER("{% raw %}\nx{% endraw %}\ny", NULL, "\nxy");
    EXPECT_RENDER("{% raw -%}\n x{% endraw %}", NULL, "x");
}

static void test_expressions(void **state)
{
    (void)state;
    EXPECT_RENDER("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }}", NULL,
                  "7 9 3 -4 1 2");
    EXPECT_RENDER("{{ 1 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 1.5 }} {{ 100.0 }} {{ 0.1 + 0.2 }}", NULL,
                  "0.5 2.0 1024 1.5 100.0 0.30000000000000004");
    EXPECT_RENDER("{{ 'a' ~ 1 ~ none }} {{ 'x' * 3 }} {{ [1] + [2] }}", NULL, "a1None xxx [1, 2]");
    EXPECT_RENDER("{{ true and 'x' }} {{ false or 'y' }} {{ not 0 }} {{ 1 if 0 else 2 }} [{{ 1 if 0 }}]", NULL,
                  "x y True 2 []");
    EXPECT_RENDER("{{ 1 < 2 }} {{ 'a' == 'a' }} {{ 1 == 1.0 }} {{ 'b' in 'abc' }} {{ 3 not in [1, 2] }}", NULL,
                  "True True True True True");
    EXPECT_RENDER("{{ s[0] }}{{ s[-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ l[1:] }} {{ l[-2:] }}",
                  "{\"s\": \"h\\u00e9llo\", \"l\": [1, 2, 3]}", "ho él olléh [2, 3] [2, 3]");
    EXPECT_RENDER("{{ d.a }} {{ d['b'] }} [{{ d.c }}] {{ d.c is defined }} {{ {'k': 1}.k }}",
                  "{\"d\": {\"a\": 1, \"b\": \"two\"}}", "1 two [] False 1");
    EXPECT_RENDER("{{ 'a' 'b' }} {{ \"q\\\"\\n\" }}", NULL, "ab q\"\n");
    EXPECT_RENDER("{{ x }}{{ x is defined }}{{ x | length }}{{ 'k' in x }}", NULL, "False0False");
    EXPECT_RENDER("{{ -2 | abs }} {{ (1, 2) }} {{ none }} {{ True }} {{ [(1,)] }}", NULL,
                  "2 (1, 2) None True [(1,)]");
    /* chained comparisons, as Python */
    EXPECT_RENDER("{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1 == 1 }} {{ 3 > 2 > 1 > 0 }} {{ 1 < 2 == 2 }}", NULL,
                  "True False True True True");
    /* "}}" inside a dict literal does not end the tag */
    EXPECT_RENDER("{{ {'a': {'b': 1}} }}|{{ {'a': {'b': 1}}['a']['b'] }}", NULL, "{'a': {'b': 1}}|1");
    /* slices with extreme steps */
    EXPECT_RENDER("{{ [1, 2, 3][::-9223372036854775807] }} {{ [1, 2, 3][::(-9223372036854775807 - 1)] }} "
                  "{{ 'abc'[0:3:9223372036854775807] }} {{ 'héllo'[::2] }} {{ 'héllo'[4:0:-2] }}",
                  NULL, "[3] [3] a hlo ol");
}

static void test_statements(void **state)
{
    (void)state;
    EXPECT_RENDER("{% for x in [1, 2, 3] %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", NULL,
                  "11,22,33");
    EXPECT_RENDER("{% for x in [] %}a{% else %}empty{% endfor %}", NULL, "empty");
    EXPECT_RENDER("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{\"d\": {\"a\": 1, \"b\": 2}}",
                  "a=1;b=2;");
    EXPECT_RENDER("{% for x in range(10) if x is odd %}{{ x }}{% endfor %}", NULL, "13579");
    EXPECT_RENDER("{% for x in range(10) %}{% if x > 3 %}{% break %}{% endif %}{% if x is even %}{% continue %}"
                  "{% endif %}{{ x }}{% endfor %}",
                  NULL, "13");
    EXPECT_RENDER("{% for x in 'ab' %}{{ loop.revindex }}{{ loop.previtem }}{{ x }}{% endfor %}", NULL, "2a1ab");
    /* set in a loop does not leak; a namespace carries state */
    EXPECT_RENDER("{% set c = 0 %}{% for x in [1, 2] %}{% set c = c + x %}{{ c }}{% endfor %}{{ c }}", NULL, "120");
    EXPECT_RENDER("{% set ns = namespace(c=0) %}{% for x in [1, 2] %}{% set ns.c = ns.c + x %}{% endfor %}{{ ns.c }}",
                  NULL, "3");
    EXPECT_RENDER("{% if 0 %}a{% elif 1 %}b{% else %}c{% endif %}", NULL, "b");
    EXPECT_RENDER("{% set a, b = [1, 2] %}{{ b }}{{ a }}", NULL, "21");
    EXPECT_RENDER("{% set x %}in{{ 1 }}{% endset %}[{{ x }}]", NULL, "[in1]");
    EXPECT_RENDER("{% macro m(a, b='d') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b='x') }}", NULL,
                  "<1d><2x>");
    EXPECT_RENDER("{% generation %}kept{% endgeneration %}", NULL, "kept");
}

static void test_filters_and_methods(void **state)
{
    (void)state;
    EXPECT_RENDER("{{ '  x y  ' | trim }}|{{ 'ab' | upper }}|{{ 'hello world' | title }}|{{ 'aBc' | capitalize }}",
                  NULL, "x y|AB|Hello World|Abc");
    EXPECT_RENDER("{{ [3, 1, 2] | sort | join(',') }} {{ [1, 2] | length }} {{ 'héllo' | length }} {{ [1, 1, 2] | unique"
                  " | list }}",
                  NULL, "1,2,3 2 5 [1, 2]");
    EXPECT_RENDER("{{ x | default('d') }} {{ '' | default('e', true) }} {{ [1, 2] | first }}{{ [1, 2] | last }}",
                  NULL, "d e 12");
    EXPECT_RENDER("{{ m | selectattr('role', 'equalto', 'user') | map(attribute='c') | join }}",
                  "{\"m\": [{\"role\": \"user\", \"c\": \"a\"}, {\"role\": \"bot\", \"c\": \"b\"}, "
                  "{\"role\": \"user\", \"c\": \"c\"}]}",
                  "ac");
    EXPECT_RENDER("{{ [1, 2, 3, 4] | select('even') | list }} {{ [1, 2, 3] | reject('odd') | list }} {{ [1, 2] | "
                  "sum }}",
                  NULL, "[2, 4] [2] 3");
    EXPECT_RENDER("{{ {'b': [1, 'é'], 'a': none} | tojson }} {{ 'x\"<' | tojson }} {{ 1.0 | tojson }}", NULL,
                  "{\"b\": [1, \"é\"], \"a\": null} \"x\\\"<\" 1.0");
    EXPECT_RENDER("{{ {'b': 1, 'a': [2]} | tojson(indent=2, sort_keys=true) }}", NULL,
                  "{\n  \"a\": [\n    2\n  ],\n  \"b\": 1\n}");
    EXPECT_RENDER("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'xxhixx'.strip('x') }} {{ 'ab'.replace('a', "
                  "'c') }}",
                  NULL, "['a', 'b', '', 'c'] ['a', 'b'] hi cb");
    EXPECT_RENDER("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ '\\nx\\n'.lstrip('\\n') }}|{{ "
                  "'x'.rstrip() }}",
                  NULL, "True True x\n|x");
    EXPECT_RENDER("{{ d.get('a') }} {{ d.get('z', 0) }} {{ d.keys() | list }} {{ d | items | list }}",
                  "{\"d\": {\"a\": 1}}", "1 0 ['a'] [('a', 1)]");
    EXPECT_RENDER("{{ 'a b  c d'.split(None, 1) }} {{ 'a,b,c'.split(',', 1) }} {{ ' x '.split(' ') }}", NULL,
                  "['a', 'b  c d'] ['a', 'b,c'] ['', 'x', '']");
    /* Python rounds halves to even; Jinja's methods */
    EXPECT_RENDER("{{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 2.1 | round(method='ceil') }} "
                  "{{ 7 | round }}",
                  NULL, "2.0 4.0 2.67 3.0 7");
    /* sort, unique, min and max ignore case unless told */
    EXPECT_RENDER("{{ ['b', 'A', 'c'] | sort | join }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) | join }} "
                  "{{ ['a', 'A', 'b'] | unique | join }} {{ ['B', 'a'] | min }} {{ ['B', 'a'] | max }}",
                  NULL, "Abc Abc ab a B");
    EXPECT_RENDER("{{ 'é<' | tojson(ensure_ascii=true) }} {{ '😀' | tojson(ensure_ascii=true) }} "
                  "{{ {'a': [1, 2]} | tojson(separators=(',', ':')) }}",
                  NULL, "\"\\u00e9<\" \"\\ud83d\\ude00\" {\"a\":[1,2]}");
    EXPECT_RENDER("{{ 'x' is string }} {{ 1 is number }} {{ d is mapping }} {{ [1] is iterable }} {{ none is none }} "
                  "{{ 6 is divisibleby 3 }} {{ 1 is not false }}",
                  "{\"d\": {}}", "True True True True True True True");
    EXPECT_RENDER("{{ strftime_now('%d %b %Y') }} {{ '5' | int + 1 }} {{ 'x' | int }} {{ 2 | float }}", NULL,
                  "05 Jul 2024 6 0 2.0");
    EXPECT_RENDER("{{ \"it's\" | string }} {{ ['a', \"b'c\"] | string }} {{ 'l1\\nl2' | indent(2) }}", NULL,
                  "it's ['a', \"b'c\"] l1\n  l2");
}

static void test_errors(void **state)
{
    (void)state;
    /* syntax errors name the line and the construct */
    EXPECT_ERROR("line 1\n{% if x %}\nno end", NULL, "missing {% endif %}");
    EXPECT_ERROR("a\n\n{% frobnicate %}", NULL, "line 3: unknown or unsupported statement 'frobnicate'");
    EXPECT_ERROR("{{ 1 + }}", NULL, "line 1");
    EXPECT_ERROR("{{ 'unterminated }}", NULL, "unterminated string");
    EXPECT_ERROR("{% endfor %}", NULL, "unexpected 'endfor'");
    EXPECT_ERROR("{{ x", NULL, "not closed");
    EXPECT_ERROR("{# open", NULL, "comment is not closed");
    char parens[1024];
    int np = snprintf(parens, sizeof parens, "{{ ");
    for (int i = 0; i < 300; i++)
        parens[np++] = '(';
    parens[np++] = '1';
    for (int i = 0; i < 300; i++)
        parens[np++] = ')';
    snprintf(parens + np, sizeof parens - (size_t)np, " }}");
    EXPECT_ERROR(parens, NULL, "nested too deeply");
    /* run-time errors too */
    EXPECT_ERROR("\n{{ raise_exception('bad role') }}", NULL, "line 2: bad role");
    EXPECT_ERROR("{{ 1 / 0 }}", NULL, "division by zero");
    EXPECT_ERROR("{{ x.y.z }}", NULL, "undefined");
    EXPECT_ERROR("{{ 'a' + 1 }}", NULL, "unsupported operands");
    EXPECT_ERROR("{{ nosuch(1) }}", NULL, "'nosuch' is undefined");
    EXPECT_ERROR("{{ [1].append(2) }}", NULL, "cannot be modified");
    EXPECT_ERROR("{{ x | nosuchfilter }}", NULL, "unknown filter 'nosuchfilter'");
    EXPECT_ERROR("{% set l = [1] %}{% set l.x = 1 %}", NULL, "namespace");
    /* and bounds: no template runs forever or grows without end */
    EXPECT_ERROR("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", NULL, "too long");
    EXPECT_ERROR("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
                 NULL, "memory");
    EXPECT_ERROR("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", NULL, "recurses");
    EXPECT_ERROR("{{ 'x' * 100000000 }}", NULL, "too large");
    EXPECT_ERROR("{{ range(100000000) }}", NULL, "too large");
    /* work is counted by size too: many large strings built is too long */
    EXPECT_ERROR("{% for i in range(100000) %}{{ ('x' * 10000) | length }}{% endfor %}", NULL, "too long");
    EXPECT_ERROR("{% for i in range(200000) %}{% set s = 'x' * 5000 %}{{ s[::-1][0] }}{% endfor %}", NULL,
                 "too long");
    /* nesting through macros is bounded as well as nesting in the text */
    char deep[2048];
    int o = snprintf(deep, sizeof deep, "{%% macro f(n) %%}{{ ");
    for (int i = 0; i < 60; i++)
        deep[o++] = '[';
    o += snprintf(deep + o, sizeof deep - (size_t)o, "f(n + 1)");
    for (int i = 0; i < 60; i++)
        deep[o++] = ']';
    snprintf(deep + o, sizeof deep - (size_t)o, " }}{%% endmacro %%}{{ f(0) }}");
    EXPECT_ERROR(deep, NULL, "nests deeper");
    EXPECT_ERROR("{{ not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not not "
                 "not not not not not not not not not not not not not not not not not not not not not not not not 1 }}",
                 NULL, "nested too deeply");
}

/* Which output bytes came from user text: kept through the operations
 * templates apply to message contents. */
static void test_user_marks(void **state)
{
    (void)state;
    const char *user = "{\"u\": \"ab<x>\", \"m\": [{\"content\": \" hi \"}]}";
    struct {
        const char *src, *text, *marks;
    } cases[] = {
        {"[{{ u }}]", "[ab<x>]", "0111110"},
        {"{{ u[1:] }}|{{ u[0] }}|{{ u[::-1] }}", "b<x>|a|>x<ba", "111101011111"},
        {"{{ u | upper }}{{ u ~ 'k' }}", "AB<X>ab<x>k", "11111111110"},
        {"{{ m[0].content | trim }}.{{ m[0]['content'].strip() }}", "hi.hi", "11011"},
        {"{% set x %}<{{ u }}>{% endset %}{{ x }}", "<ab<x>>", "0111110"},
        {"{% macro w(s) %}({{ s }}){% endmacro %}{{ w(u) }}", "(ab<x>)", "0111110"},
        {"{{ u.replace('a', 'Z') }}|{{ u.split('<')[1] }}", "Zb<x>|x>", "01111011"},
        {"{{ [u] }}", "['ab<x>']", "011111110"},
        {"{{ u * 2 }}", "ab<x>ab<x>", "1111111111"},
        {"{{ 'lit' }}{{ u | length }}", "lit5", "0000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pb_err err = {0};
        char *marks = NULL;
        char *out = render_marked(cases[i].src, NULL, user, &marks, &err);
        if (!out)
            fail_msg("'%s': %s", cases[i].src, err.msg);
        if (strcmp(out, cases[i].text) || strcmp(marks, cases[i].marks))
            fail_msg("'%s'\n rendered '%s' marks %s\n expected '%s' marks %s", cases[i].src, out, marks,
                     cases[i].text, cases[i].marks);
        free(out);
        free(marks);
    }
}

/* Random damage to the real templates: parsing and rendering must fail
 * cleanly or succeed, never crash (the sanitizer run checks). */
static void test_fuzz_templates(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(path, "templates/Qwen-Qwen3-0.6B.jinja");
    char other[1024];
    const char *paths[2] = {path, testdata_file("templates/mistralai-Mistral-Nemo-Instruct-2407.jinja", other,
                                                sizeof other)};
    json_t *vars = json_loads("{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", "
                              "\"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"<think>x</think>y\"}],"
                              "\"add_generation_prompt\": true, \"tools\": [{\"function\": {\"name\": \"f\"}}]}",
                              0, NULL);
    struct rng g;
    rng_seed(&g, 7);
    int parsed = 0, rendered = 0;
    static const char pieces[][8] = {"{{", "}}", "{%", "%}", "{#", "#}", "-", "(", ")", "[", "]", "'", "\"",
                                     "|", ".", ",", "if", "for", "end", "endif", "endfor", "in", "not", "\n", "\\"};
    for (int k = 0; k < 2; k++) {
        if (!paths[k])
            continue;
        size_t len;
        char *src = test_read_file(paths[k], &len);
        char *buf = malloc(len + 64);
        for (int trial = 0; trial < 400; trial++) {
            size_t n = len;
            memcpy(buf, src, len);
            int edits = 1 + (int)(rng_u64(&g) % 4);
            for (int e = 0; e < edits; e++) {
                size_t at = rng_u64(&g) % n;
                switch (rng_u64(&g) % 3) {
                case 0: buf[at] = (char)(rng_u64(&g) % 256); break;     /* flip a byte */
                case 1: n = at + (n - at) / 2; break;                  /* truncate */
                default: {                                             /* insert a token */
                    const char *p = pieces[rng_u64(&g) % (sizeof pieces / sizeof pieces[0])];
                    size_t pl = strlen(p);
                    if (n + pl <= len + 60) {
                        memmove(buf + at + pl, buf + at, n - at);
                        memcpy(buf + at, p, pl);
                        n += pl;
                    }
                }
                }
            }
            struct tmpl *t;
            pb_err err = {0};
            if (tmpl_parse(buf, n, &t, &err)) {
                assert_true(err.msg[0] != 0);
                continue;
            }
            parsed++;
            struct tmpl_opts o = {.now = 1, .max_output = 1 << 20};
            struct tmpl_vars tv = {NULL, vars};
            struct tmpl_output r;
            if (tmpl_render(t, &tv, &o, &r, &err) == 0)
                rendered++;
            else
                assert_true(err.msg[0] != 0);
            tmpl_output_free(&r);
            tmpl_free(t);
        }
        free(buf);
        free(src);
    }
    print_message("  800 mutated templates: %d parsed, %d rendered\n", parsed, rendered);
    json_decref(vars);
}

/* ---- chat formats ---- */

static const char *CONVERSATION = "[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", "
                                  "\"content\": \"U\"}, {\"role\": \"assistant\", \"content\": \"A\"}, "
                                  "{\"role\": \"user\", \"content\": \"U2\"}]";

/* A copy of the tiny model with a chat template added (NULL: none). */
static const char *model_with_template(const char *name, const char *tmpl_src)
{
    static char out[512];
    test_tmpfile(name, out, sizeof out);
    struct gguf_file *f;
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_open(test_tiny_model("Q8_0"), &f, &err), 0);
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    if (tmpl_src)
        gguf_set_str(w, "tokenizer.chat_template", tmpl_src);
    assert_int_equal(gguf_writer_begin(w, out, &err), 0); /* metadata only is enough here */
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    gguf_close(f);
    return out;
}

static char *chat_text(const char *model, const char *format, char *notice, size_t notice_size)
{
    struct gguf_file *f = NULL;
    struct tokenizer *tok = NULL;
    struct chat *c = NULL;
    pb_err err = {0};
    if (gguf_open(model, &f, &err) || tok_load(f, &tok, &err) ||
        chat_open(f, tok, format, &c, notice, notice_size, &err))
        fail_msg("%s", err.msg);
    json_t *msgs = json_loads(CONVERSATION, 0, NULL);
    struct tmpl_output r;
    if (chat_render(c, msgs, true, NULL, &r, &err))
        fail_msg("%s: %s", format ? format : "model", err.msg);
    char *out = r.text;
    free(r.user);
    json_decref(msgs);
    chat_free(c);
    tok_free(tok);
    gguf_close(f);
    return out;
}

static void test_chat_formats(void **state)
{
    (void)state;
    const char *m = model_with_template("formats.gguf", NULL);
    struct {
        const char *name, *want;
    } cases[] = {
        {"chatml", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA"
                   "<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n"},
        {"llama3", "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user"
                   "<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|><|start_header_id|>assistant"
                   "<|end_header_id|>\n\n"},
        {"llama2", "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U2 [/INST]"},
        {"mistral", "<s>[INST] S\n\nU[/INST]A</s>[INST] U2[/INST]"},
        {"gemma", "<s><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
                  "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\n"},
        {"phi3", "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n<|user|>\nU2<|end|>\n"
                 "<|assistant|>\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = chat_text(m, cases[i].name, NULL, 0);
        if (strcmp(got, cases[i].want))
            fail_msg("%s:\n rendered %s\n expected %s", cases[i].name, got, cases[i].want);
        free(got);
    }
    /* no template: chatml, said so */
    char notice[600];
    free(chat_text(m, NULL, notice, sizeof notice));
    assert_non_null(strstr(notice, "no chat template"));
    assert_non_null(strstr(notice, "chatml"));
    /* a template that does not parse: its error, and the family it names */
    const char *broken = model_with_template(
        "broken.gguf", "{% for m in messages %}\n<|start_header_id|>{{ m.role }}\n{% endfor");
    char *got = chat_text(broken, NULL, notice, sizeof notice);
    assert_non_null(strstr(notice, "line 3"));
    assert_non_null(strstr(notice, "'llama3'"));
    assert_non_null(strstr(got, "<|start_header_id|>user<|end_header_id|>"));
    free(got);
    /* a working model template is used as it is */
    const char *own = model_with_template("own.gguf", "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}");
    got = chat_text(own, NULL, notice, sizeof notice);
    assert_string_equal(got, "[system:S][user:U][assistant:A][user:U2]");
    assert_string_equal(notice, "");
    free(got);
}

/* ---- the newer families' formats and reasoning ---- */

/* A chat over the tiny model for the testdata template `file` (NULL:
 * built-in format `format`). */
static struct chat *open_chat(const char *file, const char *format, struct tokenizer **tok, struct gguf_file **f)
{
    const char *model = NULL;
    if (file) {
        char rel[256], path[1024];
        snprintf(rel, sizeof rel, "templates/%s", file);
        if (!testdata_file(rel, path, sizeof path))
            return NULL;
        char *src = test_read_file(path, NULL);
        /* Jinja drops one trailing newline of the source */
        size_t n = strlen(src);
        if (n && src[n - 1] == '\n')
            src[n - 1] = 0;
        model = model_with_template("with-template.gguf", src);
        free(src);
    } else {
        model = model_with_template("no-template.gguf", NULL);
    }
    struct chat *c = NULL;
    pb_err err = {0};
    if (gguf_open(model, f, &err) || tok_load(*f, tok, &err) || chat_open(*f, *tok, format, &c, NULL, 0, &err))
        fail_msg("%s", err.msg);
    return c;
}

static void close_chat(struct chat *c, struct tokenizer *tok, struct gguf_file *f)
{
    chat_free(c);
    tok_free(tok);
    gguf_close(f);
}

/* The built-in qwen3 and deepseek-r1 formats give what the models' own
 * templates give on the reference conversations of cases.json (with
 * llama.cpp's enable_thinking = true unless the case sets it). */
static void test_builtin_reasoning_formats(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(cases_path, "templates/cases.json");
    json_t *cases = json_load_file(cases_path, 0, NULL);
    assert_non_null(cases);
    size_t i;
    json_t *cs;
    int checked = 0;
    json_array_foreach(cases, i, cs)
    {
        const char *tfile = json_string_value(json_object_get(cs, "template"));
        const char *format = !strcmp(tfile, "Qwen-Qwen3-0.6B.jinja") ? "qwen3"
                             : !strcmp(tfile, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja") ? "deepseek-r1"
                                                                                               : NULL;
        if (!format)
            continue;
        struct tokenizer *tok;
        struct gguf_file *f;
        struct chat *c = open_chat(NULL, format, &tok, &f);
        json_t *kw = json_object_get(cs, "template_kwargs");
        struct chat_opts o = {.no_thinking = kw && json_is_false(json_object_get(kw, "enable_thinking"))};
        json_t *vars = chat_opts_vars(&o);
        /* the tiny model's BOS text stands in for the model's */
        json_object_set(vars, "bos_token", json_object_get(cs, "bos_token"));
        struct tmpl_output r;
        pb_err err;
        if (chat_render(c, json_object_get(cs, "messages"), json_is_true(json_object_get(cs, "add_generation_prompt")),
                        vars, &r, &err))
            fail_msg("%s: %s", format, err.msg);
        json_t *want = json_object_get(cs, "llamacpp_chat_expected");
        if (!want || kw)
            want = json_object_get(cs, "expected");
        if (strcmp(r.text, json_string_value(want)))
            fail_msg("%s built-in on %s:\n--- rendered\n%s\n--- expected\n%s", format,
                     json_string_value(json_object_get(cs, "name")), r.text, json_string_value(want));
        checked++;
        tmpl_output_free(&r);
        json_decref(vars);
        close_chat(c, tok, f);
    }
    print_message("  %d cases of Qwen3's and DeepSeek-R1's templates match the built-ins\n", checked);
    assert_int_equal(checked, 10);
    json_decref(cases);
}

struct parts {
    char reasoning[512], answer[512];
    size_t nr, na;
    int calls;
};

static void collect(void *user, enum chat_part part, const char *text, size_t len)
{
    struct parts *p = user;
    assert_true(len > 0);
    char *dst = part == CHAT_PART_REASONING ? p->reasoning + p->nr : p->answer + p->na;
    size_t *n = part == CHAT_PART_REASONING ? &p->nr : &p->na;
    assert_true(*n + len < sizeof p->answer);
    memcpy(dst, text, len);
    *n += len;
    dst[len] = 0;
    p->calls++;
}

/* Feeds output to a splitter for prompt in pieces of `piece` bytes and
 * checks the reasoning and answer it gives. */
static void check_split(const struct chat *c, const char *prompt, const char *output, const char *reasoning,
                        const char *answer)
{
    const size_t n = strlen(output);
    for (size_t piece = 1; piece <= n; piece++) {
        struct chat_reasoning *r;
        pb_err err;
        assert_int_equal(chat_reasoning_open(c, prompt, strlen(prompt), &r, &err), 0);
        struct parts p = {0};
        for (size_t i = 0; i < n; i += piece)
            chat_reasoning_feed(r, output + i, n - i < piece ? n - i : piece, collect, &p);
        chat_reasoning_finish(r, collect, &p);
        if (strcmp(p.reasoning, reasoning) || strcmp(p.answer, answer))
            fail_msg("output %s in pieces of %zu:\n reasoning '%s' (expected '%s')\n answer '%s' (expected '%s')",
                     output, piece, p.reasoning, reasoning, p.answer, answer);
        chat_reasoning_free(r);
    }
}

/* Renders the reference conversation (a) through c with opts and returns
 * the prompt (caller frees). */
static char *prompt_of(const struct chat *c, const struct chat_opts *o)
{
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},"
                              "{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]", 0, NULL);
    json_t *vars = chat_opts_vars(o);
    struct tmpl_output r;
    pb_err err;
    if (chat_render(c, msgs, true, vars, &r, &err))
        fail_msg("%s", err.msg);
    free(r.user);
    json_decref(vars);
    json_decref(msgs);
    return r.text;
}

/* Gemma's template raises on a system message: the chat folds it into the
 * first user turn, as llama.cpp's chat layer does (its expected output in
 * cases.json); without a system message nothing changes. */
static void test_system_folded(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(cases_path, "templates/cases.json");
    json_t *cases = json_load_file(cases_path, 0, NULL);
    size_t i;
    json_t *cs;
    int checked = 0;
    json_array_foreach(cases, i, cs)
    {
        if (strcmp(json_string_value(json_object_get(cs, "template")), "google-gemma-2-2b-it.jinja"))
            continue;
        struct tokenizer *tok;
        struct gguf_file *f;
        struct chat *c = open_chat("google-gemma-2-2b-it.jinja", NULL, &tok, &f);
        json_t *vars = json_pack("{s:O}", "bos_token", json_object_get(cs, "bos_token"));
        struct tmpl_output r;
        pb_err err;
        if (chat_render(c, json_object_get(cs, "messages"), json_is_true(json_object_get(cs, "add_generation_prompt")),
                        vars, &r, &err))
            fail_msg("%s", err.msg);
        json_t *want = json_object_get(cs, "llamacpp_chat_expected");
        if (!want)
            want = json_object_get(cs, "expected");
        assert_string_equal(r.text, json_string_value(want));
        checked++;
        tmpl_output_free(&r);
        json_decref(vars);
        close_chat(c, tok, f);
    }
    assert_int_equal(checked, 3);
    json_decref(cases);
}

/* Reasoning separated from the answer as text streams in, split at every
 * possible place: Qwen3's template with thinking on (the model opens
 * <think>) and off (the prompt closes an empty block), DeepSeek-R1's (the
 * prompt opens the block), gpt-oss's harmony channels; a model without
 * reasoning gives everything as answer. */
static void test_reasoning_split(void **state)
{
    (void)state;
    struct tokenizer *tok;
    struct gguf_file *f;
    struct chat *c = open_chat("Qwen-Qwen3-0.6B.jinja", NULL, &tok, &f);
    if (!c)
        skip();
    assert_int_equal(chat_reasoning_style(c), CHAT_REASONING_THINK);
    struct chat_opts on = {0}, off = {.no_thinking = true};
    char *p = prompt_of(c, &on);
    check_split(c, p, "<think>\nParis is the capital.\n</think>\n\nParis.", "Paris is the capital.", "Paris.");
    check_split(c, p, "<think>\n\n</think>\n\nThe <think> tag stays.", "", "The <think> tag stays.");
    check_split(c, p, "\n<think>a<b</thin</think>x</think>y", "a<b</thin", "x</think>y");
    check_split(c, p, "<think>\nunfinished\n", "unfinished", "");
    free(p);
    p = prompt_of(c, &off);
    assert_non_null(strstr(p, "<think>\n\n</think>\n\n"));
    check_split(c, p, "Paris.", "", "Paris.");
    free(p);
    close_chat(c, tok, f);

    c = open_chat("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", NULL, &tok, &f);
    p = prompt_of(c, &on);
    check_split(c, p, "The user asks.\n</think>\n\nParis.", "The user asks.", "Paris.");
    free(p);
    p = prompt_of(c, &off);
    check_split(c, p, "Paris.", "", "Paris.");
    free(p);
    close_chat(c, tok, f);

    c = open_chat(NULL, "harmony", &tok, &f);
    assert_int_equal(chat_reasoning_style(c), CHAT_REASONING_HARMONY);
    struct chat_opts high = {.reasoning_effort = "high"};
    p = prompt_of(c, &high);
    assert_non_null(strstr(p, "Reasoning: high"));
    assert_non_null(strstr(p, "<|start|>developer<|message|># Instructions\n\nYou are a helpful assistant."));
    assert_true(strlen(p) > 18 && !strcmp(p + strlen(p) - 18, "<|start|>assistant"));
    check_split(c, p,
                "<|channel|>analysis<|message|>User asks about <|end of France.<|end|>"
                "<|start|>assistant<|channel|>final<|message|>Paris, <|start the capital.",
                "User asks about <|end of France.", "Paris, <|start the capital.");
    check_split(c, p, "<|channel|>final<|message|>Paris.", "", "Paris.");
    check_split(c, p, "Plain text.", "", "Plain text.");
    free(p);
    close_chat(c, tok, f);

    c = open_chat(NULL, "chatml", &tok, &f);
    assert_int_equal(chat_reasoning_style(c), CHAT_REASONING_NONE);
    check_split(c, "", "<think>x</think>y", "", "<think>x</think>y");
    close_chat(c, tok, f);
}

/* ---- tool calls ---- */

static const char tools_json[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":10}},\"required\":[\"city\"],"
    "\"additionalProperties\":false}}}]";

/* The real templates render tools, an assistant's tool_calls and the tool
 * result (Mistral's with the 9-character ids it insists on; templates
 * without tools get them in the system message), and each family's style
 * is found from its markers. */
static void test_tool_templates(void **state)
{
    (void)state;
    static const struct {
        const char *file, *style;
        bool knows;
    } cases[] = {
        {"Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", true},
        {"Qwen-Qwen3-0.6B.jinja", "hermes", true},
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", true},
        {"meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3", true},
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", true},
        {"ibm-granite-granite-3.3-2B-Instruct.jinja", "generic", true},
        {"google-gemma-2-2b-it.jinja", "generic", false},
        {"microsoft-Phi-3.5-mini-instruct.jinja", "generic", false},
        {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "generic", false},
        {NULL, "hermes", true}, /* the built-in ChatML */
    };
    json_t *tools = json_loads(tools_json, 0, NULL);
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":"
                              "\"Weather in Paris?\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
                              "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
                              "\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_1\","
                              "\"content\":\"21 C\"}]", 0, NULL);
    assert_non_null(tools);
    assert_non_null(msgs);
    int rendered = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tokenizer *tok;
        struct gguf_file *f;
        struct chat *c = open_chat(cases[i].file, cases[i].file ? NULL : "chatml", &tok, &f);
        if (!c)
            continue;
        bool knows;
        const enum chat_tool_style st = chat_tool_style(c, &knows);
        assert_string_equal(chat_tool_style_name(st), cases[i].style);
        assert_int_equal(knows, cases[i].knows);
        json_t *m = chat_tool_messages(msgs, tools, knows, st);
        struct tmpl_output out;
        pb_err err = {0};
        if (chat_render_tools(c, m, knows ? tools : NULL, true, NULL, &out, &err))
            fail_msg("%s: %s", cases[i].file ? cases[i].file : "chatml", err.msg);
        if (!strstr(out.text, "get_weather") || !strstr(out.text, "Paris") || !strstr(out.text, "21 C"))
            fail_msg("%s: the tools, the call or its result are missing:\n%s", cases[i].file, out.text);
        tmpl_output_free(&out);
        json_decref(m);
        close_chat(c, tok, f);
        rendered++;
    }
    print_message("  %d templates render tools, calls and results\n", rendered);
    json_decref(msgs);
    json_decref(tools);
}

/* Each family's output read back into calls (the text before them kept),
 * what is not a call to an offered tool left as text, the grammar of each
 * format taking its own canonical call, and streaming's safe prefix. */
static void test_tool_parsing(void **state)
{
    (void)state;
    json_t *tools = json_loads(tools_json, 0, NULL);
    static const struct {
        enum chat_tool_style style;
        const char *text;
        int calls;      /* -1: none */
        size_t content; /* bytes of text before the calls */
    } cases[] = {
        {CHAT_TOOLS_HERMES, "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", 1, 5},
        {CHAT_TOOLS_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}\n</tool_call>\n"
                            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}\n</tool_call>", 2, 0},
        {CHAT_TOOLS_LLAMA3, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", 1, 0},
        {CHAT_TOOLS_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"A\"}}; {\"name\": \"get_weather\", \"parameters\": {}}", 2, 0},
        {CHAT_TOOLS_MISTRAL, "[TOOL_CALLS][{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"},\"id\":\"abcdefghi\"}]", 1, 0},
        {CHAT_TOOLS_HARMONY, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}", 1, 0},
        {CHAT_TOOLS_GENERIC, "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}", 1, 0},
        {CHAT_TOOLS_GENERIC, "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]", 1, 0},
        {CHAT_TOOLS_HERMES, "Hello, no call here.", -1, 20},
        {CHAT_TOOLS_HERMES, "<tool_call>\n{\"name\": \"launch_rockets\", \"arguments\": {}}\n</tool_call>", -1, 68},
        {CHAT_TOOLS_GENERIC, "{\"answer\": 42}", -1, 14},
        {CHAT_TOOLS_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"argu", -1, 37},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *calls = NULL;
        size_t content = 0;
        const size_t n = strlen(cases[i].text);
        assert_int_equal(chat_tool_parse(cases[i].style, tools, cases[i].text, n, &calls, &content), PB_OK);
        if (cases[i].calls < 0) {
            if (calls)
                fail_msg("case %zu: calls read from '%s'", i, cases[i].text);
            assert_int_equal(content, n);
            continue;
        }
        if (!calls || (int)json_array_size(calls) != cases[i].calls)
            fail_msg("case %zu: %d calls expected from '%s'", i, cases[i].calls, cases[i].text);
        assert_int_equal(content, cases[i].content);
        for (size_t k = 0; k < json_array_size(calls); k++) {
            const json_t *c = json_array_get(calls, k);
            assert_string_equal(json_string_value(json_object_get(c, "name")), "get_weather");
            json_t *args = json_loads(json_string_value(json_object_get(c, "arguments")), 0, NULL);
            assert_true(json_is_object(args));
            json_decref(args);
        }
        json_decref(calls);
    }
    /* each format's grammar takes its own call */
    static const struct {
        enum chat_tool_style style;
        const char *call;
    } canon[] = {
        {CHAT_TOOLS_GENERIC, "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}"},
        {CHAT_TOOLS_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"},
        {CHAT_TOOLS_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"},
        {CHAT_TOOLS_MISTRAL, "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]"},
        {CHAT_TOOLS_HARMONY, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}"},
    };
    for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
        char *gbnf;
        pb_err err;
        struct grammar *g;
        struct gmatch *m;
        if (chat_tool_grammar(canon[i].style, tools, "get_weather", true, &gbnf, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(grammar_parse(gbnf, strlen(gbnf), &g, &err), 0);
        assert_int_equal(gmatch_create(g, &m, &err), 0);
        if (!gmatch_feed(m, canon[i].call, strlen(canon[i].call)) || !gmatch_complete(m))
            fail_msg("%s's grammar refuses %s", chat_tool_style_name(canon[i].style), canon[i].call);
        json_t *calls;
        size_t content;
        chat_tool_parse(canon[i].style, tools, canon[i].call, strlen(canon[i].call), &calls, &content);
        assert_int_equal(json_array_size(calls), 1); /* what the grammar makes reads back */
        json_decref(calls);
        gmatch_free(m);
        grammar_free(g);
        free(gbnf);
    }
    /* a name that is not a tool is refused */
    char *gbnf;
    pb_err err;
    assert_int_equal(chat_tool_grammar(CHAT_TOOLS_HERMES, tools, "nope", false, &gbnf, &err), PB_EINVAL);
    /* streaming: text before a marker goes out, a marker's start is held */
    assert_int_equal(chat_tool_safe(CHAT_TOOLS_HERMES, "Hi <tool", 8), 3);
    assert_int_equal(chat_tool_safe(CHAT_TOOLS_HERMES, "Hi <tool_call>{", 15), 3);
    assert_int_equal(chat_tool_safe(CHAT_TOOLS_HERMES, "Hi there", 8), 8);
    assert_int_equal(chat_tool_safe(CHAT_TOOLS_GENERIC, "  {\"tool", 8), 0);
    assert_int_equal(chat_tool_safe(CHAT_TOOLS_GENERIC, "Hello", 5), 5);
    json_decref(tools);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_cases), cmocka_unit_test(test_whitespace_control),
        cmocka_unit_test(test_expressions),     cmocka_unit_test(test_statements),
        cmocka_unit_test(test_filters_and_methods), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_user_marks),
        cmocka_unit_test(test_fuzz_templates),
        cmocka_unit_test(test_chat_formats),
        cmocka_unit_test(test_builtin_reasoning_formats),
        cmocka_unit_test(test_reasoning_split),
        cmocka_unit_test(test_system_folded),
        cmocka_unit_test(test_tool_templates),
        cmocka_unit_test(test_tool_parsing),
    };
    return cmocka_run_group_tests_name("template", tests, NULL, NULL);
}
