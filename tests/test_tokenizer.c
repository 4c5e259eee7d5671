/* Tokenizer: llama.cpp's test vectors, decoding round trips, special
 * tokens, streaming UTF-8, malformed vocabularies. */
#include "testutil.h"

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tokenizer *load(const char *path, struct gguf_file **f)
{
    pb_err err;
    struct tokenizer *t = NULL;
    if (gguf_open(path, f, &err) || tok_load(*f, &t, &err))
        fail_msg("%s", err.msg);
    return t;
}

/* Decodes ids back to bytes (special tokens rendered). */
static char *decode(const struct tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t cap = 64, o = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        char piece[512];
        size_t k = tok_piece(t, ids[i], true, piece, sizeof piece);
        assert_true(k <= sizeof piece);
        if (o + k + 1 > cap) {
            cap = (o + k + 1) * 2;
            s = realloc(s, cap);
        }
        memcpy(s + o, piece, k);
        o += k;
    }
    s[o] = 0;
    *len = o;
    return s;
}

/* Runs every vector of ggml-vocab-NAME.gguf.inp/.out (add_special false,
 * parse_special false, as llama.cpp's test-tokenizer-0 does) and checks
 * each decodes back to its text. Returns how many ran. */
static int run_vectors(const char *vocab)
{
    char name[128];
    snprintf(name, sizeof name, "ggml-vocab-%s.gguf", vocab);
    char gbuf[1024], ibuf[1024], obuf[1024];
    const char *gpath = testdata_file(name, gbuf, sizeof gbuf);
    snprintf(name, sizeof name, "ggml-vocab-%s.gguf.inp", vocab);
    const char *ipath = testdata_file(name, ibuf, sizeof ibuf);
    snprintf(name, sizeof name, "ggml-vocab-%s.gguf.out", vocab);
    const char *opath = testdata_file(name, obuf, sizeof obuf);
    if (!gpath || !ipath || !opath)
        return -1;
    struct gguf_file *f;
    struct tokenizer *t = load(gpath, &f);
    size_t inp_len;
    char *inp = test_read_file(ipath, &inp_len), *out = test_read_file(opath, NULL);
    assert_non_null(inp);
    assert_non_null(out);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *cur = inp, *line = out;
    int n = 0;
    for (char *end; (end = strstr(cur, sep)); cur = end + strlen(sep), n++) {
        size_t len = (size_t)(end - cur);
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t *ids;
        size_t n_ids;
        pb_err err;
        assert_int_equal(tok_encode(t, cur, len, false, false, &ids, &n_ids, &err), 0);
        char got[8192] = "";
        size_t o = 0;
        for (size_t i = 0; i < n_ids; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, " %d", (int)ids[i]);
        char expect[8192];
        snprintf(expect, sizeof expect, "%s%s", line[0] == ' ' || !line[0] ? "" : " ", line);
        /* .out lines are " id id id" (leading space) or empty */
        if (strcmp(got, expect) != 0)
            fail_msg("%s vector %d '%.*s':\n got     %s\n expected %s", vocab, n, (int)len, cur, got, expect);
        /* and back: the pieces spell the text (SentencePiece adds the
         * space prefix, so the decoded text starts with one more space) */
        size_t dlen;
        char *dec = decode(t, ids, n_ids, &dlen);
        size_t skip = tok_kind(t) == TOK_KIND_SPM && len > 0 ? 1 : 0;
        if (dlen != len + skip || memcmp(dec + skip, cur, len) != 0)
            fail_msg("%s vector %d does not decode back: '%s'", vocab, n, dec);
        free(dec);
        free(ids);
        line = nl + 1;
    }
    free(inp);
    free(out);
    tok_free(t);
    gguf_close(f);
    return n;
}

static void test_vectors_llama_spm(void **state)
{
    (void)state;
    int n = run_vectors("llama-spm");
    if (n < 0)
        skip();
    print_message("  %d vectors\n", n);
    assert_int_equal(n, 46);
}

static void test_vectors_gpt2(void **state)
{
    (void)state;
    int n = run_vectors("gpt-2");
    if (n < 0)
        skip();
    print_message("  %d vectors\n", n);
    assert_int_equal(n, 46);
}

static void test_vectors_llama_bpe(void **state)
{
    (void)state;
    int n = run_vectors("llama-bpe");
    if (n < 0)
        skip();
    print_message("  %d vectors\n", n);
    assert_int_equal(n, 46);
}

/* A minimal byte-level BPE vocabulary (the 256 byte symbols, one merge)
 * with the given pre-tokenizer, written to the temp dir. */
static const char *bpe_vocab(const char *pre)
{
    static char path[512];
    char name[96];
    snprintf(name, sizeof name, "bpe-%s.gguf", pre);
    test_tmpfile(name, path, sizeof path);
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    static char texts[257][4];
    struct gguf_str toks[258];
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) { /* GPT-2's byte symbols, spelled out here */
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra++;
        int len = cp < 0x80 ? 1 : 2;
        if (len == 1)
            texts[n][0] = (char)cp;
        else {
            texts[n][0] = (char)(0xC0 | (cp >> 6));
            texts[n][1] = (char)(0x80 | (cp & 0x3F));
        }
        toks[n] = (struct gguf_str){(uint64_t)len, texts[n]};
        n++;
    }
    toks[n++] = (struct gguf_str){2, "he"};
    toks[n++] = (struct gguf_str){13, "<|endoftext|>"};
    int32_t types[258];
    for (int i = 0; i < n; i++)
        types[i] = i == n - 1 ? TOK_CONTROL : TOK_NORMAL;
    struct gguf_str merges[1] = {{3, "h e"}};
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)n);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(n - 1));
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    return path;
}

/* The pre-tokenizers split as their regexes define; expectations worked
 * out by hand from the patterns (matches and the gaps between them). Note
 * the Llama 3 family glues one leading non-letter to a word ("+b"). */
static void test_pretokenizers(void **state)
{
    (void)state;
    const char *text = "Hello world's 12345 HelloWorld a+b\n\n  x";
    struct {
        const char *pre;
        const char *expect[24];
    } cases[] = {
        {"gpt-2", {"Hello", " world", "'s", " 12345", " HelloWorld", " a", "+", "b", "\n\n ", " x"}},
        {"llama-bpe",
         {"Hello", " world", "'s", " ", "123", "45", " HelloWorld", " a", "+b", "\n\n", " ", " x"}},
        {"qwen2",
         {"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " HelloWorld", " a", "+b", "\n\n", " ", " x"}},
        {"smollm",
         {"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " HelloWorld", " a", "+", "b", "\n\n ", " x"}},
        {"default",
         {"Hello", " world", "'", "s", " ", "123", "45", " HelloWorld", " a", "+", "b", "\n\n ", " x"}},
        {"tekken",
         {"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " Hello", "World", " a", "+b", "\n\n", " ", " x"}},
        {"gpt-4o",
         {"Hello", " world's", " ", "123", "45", " Hello", "World", " a", "+b", "\n\n", " ", " x"}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct gguf_file *f;
        struct tokenizer *t = load(bpe_vocab(cases[k].pre), &f);
        char *pieces;
        size_t n;
        assert_int_equal(bpe_pretokenize(t, text, strlen(text), &pieces, &n), 0);
        const char *p = pieces;
        if (n >= 24)
            fail_msg("%s: %zu pieces, more than any case expects", cases[k].pre, n);
        for (size_t i = 0; i < n; i++, p += strlen(p) + 1) {
            if (!cases[k].expect[i] || strcmp(p, cases[k].expect[i]) != 0)
                fail_msg("%s: piece %zu is '%s', expected '%s'", cases[k].pre, i, p,
                         cases[k].expect[i] ? cases[k].expect[i] : "(none)");
        }
        assert_null(cases[k].expect[n]);
        free(pieces);
        /* and encoding round-trips through the byte symbols, merging "he" */
        int32_t *ids;
        size_t n_ids, dlen;
        pb_err err;
        assert_int_equal(tok_encode(t, text, strlen(text), true, false, &ids, &n_ids, &err), 0);
        assert_int_equal(ids[0], 'H'); /* token i is byte i here */
        assert_int_equal(ids[1], 'e');
        char *dec = decode(t, ids, n_ids, &dlen);
        assert_int_equal(dlen, strlen(text));
        assert_memory_equal(dec, text, dlen);
        free(dec);
        free(ids);
        /* the one merge applies; special text is a token only when parsed */
        assert_int_equal(tok_encode(t, "the<|endoftext|>", 16, false, true, &ids, &n_ids, &err), 0);
        assert_int_equal(n_ids, 3);
        assert_int_equal(ids[0], 't');
        assert_int_equal(ids[1], 256);
        assert_int_equal(ids[2], 257);
        free(ids);
        assert_int_equal(tok_encode(t, "the<|endoftext|>", 16, false, false, &ids, &n_ids, &err), 0);
        assert_true(n_ids > 10);
        free(ids);
        /* invalid UTF-8 becomes U+FFFD, as in the reference */
        assert_int_equal(tok_encode(t, "a\xff", 2, false, false, &ids, &n_ids, &err), 0);
        dec = decode(t, ids, n_ids, &dlen);
        assert_int_equal(dlen, 4);
        assert_memory_equal(dec, "a\xef\xbf\xbd", 4);
        free(dec);
        free(ids);
        tok_free(t);
        gguf_close(f);
    }
    /* an unknown pre-tokenizer is refused by name */
    struct gguf_file *f;
    struct tokenizer *t = NULL;
    pb_err err;
    assert_int_equal(gguf_open(bpe_vocab("no-such-pre"), &f, &err), 0);
    assert_int_equal(tok_load(f, &t, &err), PB_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "no-such-pre"));
    gguf_close(f);
}

/* Generation ends at EOS, EOT, EOM and the turn-end control tokens of
 * chat vocabularies, even when the metadata names only some of them. */
static void test_end_of_generation(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(path, "ggml-vocab-llama-bpe.gguf");
    struct gguf_file *f;
    struct tokenizer *t = load(path, &f);
    assert_true(tok_is_eog(t, 128001));  /* <|end_of_text|>, the EOS */
    assert_true(tok_is_eog(t, 128009));  /* <|eot_id|>, the EOT */
    assert_false(tok_is_eog(t, 128000)); /* <|begin_of_text|> */
    assert_false(tok_is_eog(t, 128006)); /* <|start_header_id|> */
    assert_false(tok_is_eog(t, 9906));
    tok_free(t);
    gguf_close(f);
}

/* A chat turn-end token the metadata does not name still ends generation
 * when it is a control token (and only then). */
static void test_end_of_generation_by_text(void **state)
{
    (void)state;
    char path[512];
    test_tmpfile("eog.gguf", path, sizeof path);
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    struct gguf_str toks[4] = {{1, "a"}, {10, "<|im_end|>"}, {13, "<|endoftext|>"}, {3, "</s>"}};
    int32_t types[4] = {TOK_NORMAL, TOK_CONTROL, TOK_NORMAL, TOK_CONTROL};
    float scores[4] = {0};
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, 4);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, scores, 4);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 3);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 3);
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    struct gguf_file *f;
    struct tokenizer *t = load(path, &f);
    assert_true(tok_is_eog(t, 3));  /* the EOS */
    assert_true(tok_is_eog(t, 1));  /* <|im_end|>, a control token */
    assert_false(tok_is_eog(t, 2)); /* same text family, but a normal token */
    assert_false(tok_is_eog(t, 0));
    tok_free(t);
    gguf_close(f);
}

/* The Llama SentencePiece vocabulary of the test data with token types
 * changed: type[id] for each (id, type) pair (-1 ends the list). */
static const char *retyped_vocab(const char *name, const int32_t *changes)
{
    static char out[512];
    char buf[1024];
    const char *path = testdata_file("ggml-vocab-llama-spm.gguf", buf, sizeof buf);
    if (!path)
        return NULL;
    struct gguf_file *f;
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_open(path, &f, &err), 0);
    struct gguf_arr types;
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.token_type", &types, &err), 1);
    int32_t *ty = malloc(types.n * sizeof *ty);
    for (uint64_t i = 0; i < types.n; i++)
        ty[i] = (int32_t)gguf_arr_int(&types, i);
    for (int i = 0; changes[i] >= 0; i += 2)
        ty[changes[i]] = changes[i + 1];
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        if (strcmp(gguf_kv_key(f, i), "tokenizer.ggml.token_type") != 0)
            gguf_set_from(w, f, i);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, ty, types.n);
    test_tmpfile(name, out, sizeof out);
    assert_int_equal(gguf_writer_begin(w, out, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    gguf_close(f);
    free(ty);
    return out;
}

/* Phi-3's converter types an added token whose config says "special":
 * false as user-defined, and user-defined tokens are matched in plain text
 * (llama.cpp and Hugging Face alike). When such a token ends generation
 * (the vocabulary's EOS here, </s>), its text typed by a user must stay
 * text, as llama.cpp keeps it: a token that ends generation is a control
 * token whatever its stored type. Other user-defined tokens (here <s>,
 * which ends nothing) are still matched in plain text. */
static void test_end_of_generation_is_control(void **state)
{
    (void)state;
    const int32_t changes[] = {2, TOK_USER_DEFINED, 1, TOK_USER_DEFINED, -1};
    const char *path = retyped_vocab("phi3-like.gguf", changes);
    if (!path)
        skip();
    struct gguf_file *f;
    struct tokenizer *t = load(path, &f);
    assert_int_equal(tok_eos(t), 2);
    assert_true(tok_is_eog(t, 2));
    assert_int_equal(tok_attr(t, 2), TOK_CONTROL);
    assert_int_equal(tok_attr(t, 1), TOK_USER_DEFINED);
    const char *text = "Hi</s>there<s>";
    int32_t *ids;
    size_t n;
    pb_err err;
    /* plain text: </s> is characters; the user-defined <s> is matched */
    assert_int_equal(tok_encode(t, text, strlen(text), false, false, &ids, &n, &err), 0);
    bool eos = false, bos = false;
    for (size_t i = 0; i < n; i++) {
        eos |= ids[i] == 2;
        bos |= ids[i] == 1;
    }
    assert_false(eos);
    assert_true(bos);
    assert_int_equal(ids[n - 1], 1);
    free(ids);
    /* the same characters as the unmodified vocabulary gives for them */
    struct gguf_file *f0;
    char buf[1024];
    struct tokenizer *t0 = load(testdata_file("ggml-vocab-llama-spm.gguf", buf, sizeof buf), &f0);
    int32_t *ids0;
    size_t n0;
    assert_int_equal(tok_encode(t0, "Hi</s>there", 11, false, false, &ids0, &n0, &err), 0);
    assert_int_equal(tok_encode(t, "Hi</s>there", 11, false, false, &ids, &n, &err), 0);
    assert_int_equal(n, n0);
    assert_memory_equal(ids, ids0, n * sizeof *ids);
    free(ids);
    free(ids0);
    /* parsed (template markup), it is the EOS */
    assert_int_equal(tok_encode(t, text, strlen(text), false, true, &ids, &n, &err), 0);
    eos = false;
    for (size_t i = 0; i < n; i++)
        eos |= ids[i] == 2;
    assert_true(eos);
    free(ids);
    /* and it renders only on request */
    char piece[8];
    assert_int_equal(tok_piece(t, 2, false, piece, sizeof piece), 0);
    tok_free(t0);
    gguf_close(f0);
    tok_free(t);
    gguf_close(f);
}

/* gpt-oss's harmony vocabulary: <|return|> and <|call|> end generation,
 * <|end|> does not and, with the channel markup, is user-defined so that
 * it is rendered in the output. */
static void test_harmony_tokens(void **state)
{
    (void)state;
    char path[512];
    test_tmpfile("harmony.gguf", path, sizeof path);
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    struct gguf_str toks[8] = {{1, "a"},          {10, "<|return|>"}, {8, "<|call|>"},    {7, "<|end|>"},
                               {11, "<|channel|>"}, {11, "<|message|>"}, {9, "<|start|>"}, {13, "<|endoftext|>"}};
    int32_t types[8] = {TOK_NORMAL, TOK_CONTROL, TOK_CONTROL, TOK_CONTROL,
                        TOK_CONTROL, TOK_CONTROL, TOK_CONTROL, TOK_CONTROL};
    float scores[8] = {0};
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 8);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, 8);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, scores, 8);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 7);
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    struct gguf_file *f;
    struct tokenizer *t = load(path, &f);
    assert_true(tok_is_eog(t, 1));
    assert_true(tok_is_eog(t, 2));
    assert_false(tok_is_eog(t, 3));
    for (int id = 3; id <= 6; id++)
        assert_int_equal(tok_attr(t, id), TOK_USER_DEFINED);
    char piece[16];
    assert_int_equal(tok_piece(t, 4, false, piece, sizeof piece), 11);
    assert_memory_equal(piece, "<|channel|>", 11);
    tok_free(t);
    gguf_close(f);
}

/* The prompts of reference-greedy.json tokenize to its prompt_ids. */
static void test_reference_prompts(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(ref, "reference-greedy.json");
    json_error_t jerr;
    json_t *root = json_load_file(ref, 0, &jerr);
    assert_non_null(root);
    const char *models[] = {"stories260K", "tiny-llama-q8_0", "tiny-llama-q4_0", "tiny-qwen2-q8_0", "tiny-qwen3-q8_0"};
    for (int m = 0; m < 5; m++) {
        json_t *jm = json_object_get(json_object_get(root, "models"), models[m]);
        assert_non_null(jm);
        char buf[1024];
        const char *path = testdata_file(json_string_value(json_object_get(jm, "model_file")), buf, sizeof buf);
        assert_non_null(path);
        struct gguf_file *f;
        struct tokenizer *t = load(path, &f);
        const char *key;
        json_t *p;
        json_object_foreach(json_object_get(jm, "prompts"), key, p)
        {
            const char *text = json_string_value(json_object_get(p, "prompt"));
            json_t *expect = json_object_get(p, "prompt_ids");
            int32_t *ids;
            size_t n;
            pb_err err;
            assert_int_equal(tok_encode(t, text, strlen(text), true, false, &ids, &n, &err), 0);
            assert_int_equal(n, json_array_size(expect));
            for (size_t i = 0; i < n; i++)
                assert_int_equal(ids[i], json_integer_value(json_array_get(expect, i)));
            free(ids);
        }
        tok_free(t);
        gguf_close(f);
    }
    json_decref(root);
}

static void test_special_tokens(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(path, "ggml-vocab-llama-spm.gguf");
    struct gguf_file *f;
    struct tokenizer *t = load(path, &f);
    assert_int_equal(tok_bos(t), 1);
    assert_int_equal(tok_eos(t), 2);
    assert_true(tok_add_bos(t));
    assert_true(tok_is_eog(t, 2));
    assert_false(tok_is_eog(t, 1));
    const char *text = "<s>Hi</s>";
    int32_t *a, *b;
    size_t na, nb;
    pb_err err;
    /* parsed: control tokens become their ids */
    assert_int_equal(tok_encode(t, text, strlen(text), false, true, &a, &na, &err), 0);
    assert_true(na >= 3);
    assert_int_equal(a[0], 1);
    assert_int_equal(a[na - 1], 2);
    /* not parsed (user text): they are just characters */
    assert_int_equal(tok_encode(t, text, strlen(text), false, false, &b, &nb, &err), 0);
    for (size_t i = 0; i < nb; i++) {
        assert_int_not_equal(b[i], 1);
        assert_int_not_equal(b[i], 2);
    }
    assert_true(nb > na);
    free(a);
    free(b);
    /* control tokens decode to nothing unless asked */
    char piece[16];
    assert_int_equal(tok_piece(t, 1, false, piece, sizeof piece), 0);
    assert_int_equal(tok_piece(t, 1, true, piece, sizeof piece), 3);
    assert_memory_equal(piece, "<s>", 3);
    /* byte tokens decode to their byte */
    size_t len;
    const char *txt = tok_text(t, 3 + 0x41, &len);
    assert_int_equal(tok_attr(t, 3 + 0x41), TOK_BYTE);
    assert_memory_equal(txt, "<0x41>", 6);
    assert_int_equal(tok_piece(t, 3 + 0x41, false, piece, sizeof piece), 1);
    assert_int_equal(piece[0], 'A');
    /* empty text: nothing, or BOS alone */
    assert_int_equal(tok_encode(t, "", 0, false, false, &a, &na, &err), 0);
    assert_int_equal(na, 0);
    free(a);
    assert_int_equal(tok_encode(t, "", 0, true, false, &a, &na, &err), 0);
    assert_int_equal(na, 1);
    assert_int_equal(a[0], 1);
    free(a);
    /* out-of-range ids have no piece */
    assert_int_equal(tok_piece(t, -1, true, piece, sizeof piece), 0);
    assert_int_equal(tok_piece(t, 32000, true, piece, sizeof piece), 0);
    tok_free(t);
    gguf_close(f);
}

/* A vocabulary written by plumb synth (no reference data needed): any
 * valid UTF-8 survives encode + decode, through byte fallback. (Invalid
 * UTF-8 is split into characters by lead byte as the reference does, so a
 * space after a stray lead byte is not restored.) */
static void test_builtin_vocab_round_trip(void **state)
{
    (void)state;
    struct gguf_file *f;
    struct tokenizer *t = load(test_tiny_model("Q8_0"), &f);
    const char *texts[] = {"Once upon a time", "  two  spaces ", "tab\there\nnewline", "ünïcödé ✓ 🦙",
                           "\x01\x02 control bytes \x7f", "zzzz qqq xyzzy"};
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        int32_t *ids;
        size_t n, dlen;
        pb_err err;
        assert_int_equal(tok_encode(t, texts[k], strlen(texts[k]), false, false, &ids, &n, &err), 0);
        char *dec = decode(t, ids, n, &dlen);
        assert_int_equal(dlen, strlen(texts[k]) + 1);
        assert_memory_equal(dec + 1, texts[k], strlen(texts[k]));
        free(dec);
        free(ids);
    }
    tok_free(t);
    gguf_close(f);
}

static void test_utf8_complete(void **state)
{
    (void)state;
    assert_int_equal(tok_utf8_complete("abc", 3), 3);
    assert_int_equal(tok_utf8_complete("", 0), 0);
    assert_int_equal(tok_utf8_complete("a\xc3", 2), 1);           /* 2-byte start */
    assert_int_equal(tok_utf8_complete("a\xc3\xa9", 3), 3);       /* é */
    assert_int_equal(tok_utf8_complete("\xe2\x96", 2), 0);        /* 3-byte, 2 present */
    assert_int_equal(tok_utf8_complete("x\xf0\x9f\xa6", 4), 1);   /* 4-byte, 3 present */
    assert_int_equal(tok_utf8_complete("x\xf0\x9f\xa6\x99", 5), 5);
    assert_int_equal(tok_utf8_complete("\x80\x80\x80\x80", 4), 4); /* stray continuations pass */
}

/* Writes a vocabulary-only GGUF with the given damage. */
static const char *bad_vocab(const char *name, int damage)
{
    static char path[512];
    test_tmpfile(name, path, sizeof path);
    struct gguf_writer *w;
    pb_err err;
    assert_int_equal(gguf_writer_create(&w, &err), 0);
    struct gguf_str toks[4] = {{5, "<unk>"}, {3, "<s>"}, {4, "</s>"}, {1, "a"}};
    float scores[4] = {0};
    int32_t types[3] = {2, 3, 3};
    gguf_set_str(w, "tokenizer.ggml.model", damage == 1 ? "gpt2-unheard-of" : "llama");
    if (damage != 2)
        gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, scores, 4);
    if (damage == 3)
        gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, 3);
    if (damage == 4)
        gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 4);
    if (damage == 5)
        gguf_set_str(w, "tokenizer.ggml.eos_token_id", "2");
    assert_int_equal(gguf_writer_begin(w, path, &err), 0);
    assert_int_equal(gguf_writer_finish(w, &err), 0);
    gguf_writer_free(w);
    return path;
}

static void test_malformed_vocab(void **state)
{
    (void)state;
    struct {
        int damage;
        int code;
        const char *needle;
    } cases[] = {
        {0, 0, NULL},
        {1, PB_EUNSUPPORTED, "not supported"},
        {2, PB_EFORMAT, "tokenizer.ggml.tokens"},
        {3, PB_EFORMAT, "token_type"},
        {4, PB_EFORMAT, "bos_token_id"},
        {5, PB_EFORMAT, "eos_token_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "vocab%d.gguf", cases[i].damage);
        struct gguf_file *f;
        struct tokenizer *t = NULL;
        pb_err err = {0};
        assert_int_equal(gguf_open(bad_vocab(name, cases[i].damage), &f, &err), 0);
        int rc = tok_load(f, &t, &err);
        assert_int_equal(rc, cases[i].code);
        if (cases[i].needle)
            assert_non_null(strstr(err.msg, cases[i].needle));
        tok_free(t);
        gguf_close(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_llama_spm),
        cmocka_unit_test(test_vectors_gpt2),
        cmocka_unit_test(test_vectors_llama_bpe),
        cmocka_unit_test(test_pretokenizers),
        cmocka_unit_test(test_reference_prompts),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_end_of_generation),
        cmocka_unit_test(test_end_of_generation_by_text),
        cmocka_unit_test(test_end_of_generation_is_control),
        cmocka_unit_test(test_harmony_tokens),
        cmocka_unit_test(test_builtin_vocab_round_trip),
        cmocka_unit_test(test_utf8_complete),
        cmocka_unit_test(test_malformed_vocab),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
