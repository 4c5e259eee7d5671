/* Fixtures shared by the fuzz targets (fuzz.h). */
#define _GNU_SOURCE
#include "fuzz.h"

#include "plumb/store.h"

#include <dirent.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: fuzz invariant failed: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void fuzz_note(const char *fmt, ...)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("  ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- vocabularies ---- */

/* Words the merges and pieces spell out: common English, code and JSON
 * fragments, chat markup halves, digits and a few non-ASCII ones. */
static const char *const words[] = {
    "the", "hello", "world", "and", "ing", "tion", "token", "izer", "plumb", "of", "in", "to", "is", "it", "er",
    "an", "on", "re", "at", "you", "The", "I", "123", "2024", "'s", "'t", "'re", "{\"", "\":", "::", "==", "    ",
    "\n\n", "\t", "<|", "|>", "http", "://", "json", "null", "true", "false", "role", "content", "user",
    "assistant", "system", "think", "\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\xa6\x99", "na\xc3\xafve",
};

struct specials {
    const char *text;
    int type; /* enum tok_attr */
};

static const struct specials chat_specials[] = {
    {"<|im_start|>", TOK_CONTROL},    {"<|im_end|>", TOK_CONTROL},     {"<|eot_id|>", TOK_CONTROL},
    {"<|start_header_id|>", TOK_CONTROL}, {"<|end_header_id|>", TOK_CONTROL}, {"<start_of_turn>", TOK_CONTROL},
    {"<end_of_turn>", TOK_CONTROL},   {"[INST]", TOK_CONTROL},         {"[/INST]", TOK_CONTROL},
    {"<|assistant|>", TOK_CONTROL},   {"<|end|>", TOK_CONTROL},        {"<tool_call>", TOK_USER_DEFINED},
    {"</tool_call>", TOK_USER_DEFINED}, {"<think>", TOK_USER_DEFINED}, {"<unused0>", TOK_UNUSED},
};

struct vocab_build {
    char **text;
    float *score;
    int32_t *type;
    size_t n, cap;
    char **merges;
    size_t n_merges, cap_merges;
};

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    *cap = *cap ? *cap * 2 : 512;
    if (*cap < need)
        *cap = need;
    p = realloc(p, *cap * elem);
    FUZZ_CHECK(p, "out of memory");
    return p;
}

static int32_t find_token(const struct vocab_build *b, const char *s)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->text[i], s))
            return (int32_t)i;
    return -1;
}

/* Adds s (copied) unless present; returns its id. */
static int32_t add_token(struct vocab_build *b, const char *s, int type)
{
    int32_t id = find_token(b, s);
    if (id >= 0)
        return id;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 512;
        b->text = realloc(b->text, b->cap * sizeof *b->text);
        b->score = realloc(b->score, b->cap * sizeof *b->score);
        b->type = realloc(b->type, b->cap * sizeof *b->type);
        FUZZ_CHECK(b->text && b->score && b->type, "out of memory");
    }
    b->text[b->n] = strdup(s);
    FUZZ_CHECK(b->text[b->n], "out of memory");
    b->score[b->n] = -(float)b->n; /* earlier pieces merge first */
    b->type[b->n] = type;
    return (int32_t)b->n++;
}

static void add_merge(struct vocab_build *b, const char *left, const char *right)
{
    b->merges = grow(b->merges, &b->cap_merges, b->n_merges + 1, sizeof *b->merges);
    size_t n = strlen(left) + strlen(right) + 2;
    char *m = malloc(n);
    FUZZ_CHECK(m, "out of memory");
    snprintf(m, n, "%s %s", left, right);
    b->merges[b->n_merges++] = m;
}

/* GPT-2's bytes_to_unicode: byte b's printable stand-in as UTF-8. */
static void byte_char(unsigned b, char out[3])
{
    unsigned cp = b, extra = 0;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (!printable) {
        for (unsigned x = 0; x < b; x++)
            extra += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255));
        cp = 256 + extra;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* BPE: merges that build word (its bytes' stand-ins) left to right. */
static void bpe_word(struct vocab_build *b, const char *word)
{
    char acc[256] = "", ch[3];
    for (const unsigned char *p = (const unsigned char *)word; *p; p++) {
        byte_char(*p, ch);
        if (acc[0]) {
            add_merge(b, acc, ch);
            FUZZ_CHECK(strlen(acc) + strlen(ch) < sizeof acc, "word too long");
            strcat(acc, ch);
            add_token(b, acc, TOK_NORMAL);
        } else {
            snprintf(acc, sizeof acc, "%s", ch);
        }
    }
}

/* SentencePiece: every prefix of word as a piece. */
static void spm_word(struct vocab_build *b, const char *word)
{
    char acc[256];
    size_t n = strlen(word);
    FUZZ_CHECK(n < sizeof acc, "word too long");
    for (size_t k = 1; k <= n; k++) {
        memcpy(acc, word, k);
        acc[k] = 0;
        add_token(b, acc, TOK_NORMAL);
    }
}

static void build_tokens(const struct fuzz_vocab *v, struct vocab_build *b)
{
    char buf[300];
    if (v->bpe) {
        for (unsigned c = 0; c < 256; c++) {
            char ch[3];
            byte_char(c, ch);
            add_token(b, ch, TOK_NORMAL);
        }
        add_token(b, "<|endoftext|>", TOK_CONTROL);
        add_token(b, "<|begin_of_text|>", TOK_CONTROL);
        for (size_t i = 0; i < sizeof chat_specials / sizeof chat_specials[0]; i++)
            add_token(b, chat_specials[i].text, chat_specials[i].type);
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
            bpe_word(b, words[i]);
            snprintf(buf, sizeof buf, " %s", words[i]);
            bpe_word(b, buf);
        }
        return;
    }
    add_token(b, "<unk>", TOK_UNKNOWN);
    add_token(b, "<s>", TOK_CONTROL);
    add_token(b, "</s>", TOK_CONTROL);
    for (unsigned c = 0; c < 256; c++) {
        snprintf(buf, sizeof buf, "<0x%02X>", c);
        add_token(b, buf, TOK_BYTE);
    }
    for (size_t i = 0; i < sizeof chat_specials / sizeof chat_specials[0]; i++)
        add_token(b, chat_specials[i].text, chat_specials[i].type);
    add_token(b, "\xe2\x96\x81", TOK_NORMAL);
    for (unsigned c = 0x21; c < 0x7f; c++) {
        buf[0] = (char)c;
        buf[1] = 0;
        add_token(b, buf, TOK_NORMAL);
    }
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        spm_word(b, words[i]);
        snprintf(buf, sizeof buf, "\xe2\x96\x81%s", words[i]);
        spm_word(b, buf);
    }
}

static void vocab_build_free(struct vocab_build *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->text[i]);
    for (size_t i = 0; i < b->n_merges; i++)
        free(b->merges[i]);
    free(b->text);
    free(b->score);
    free(b->type);
    free(b->merges);
}

static struct gguf_str *str_array(char **s, size_t n)
{
    struct gguf_str *a = calloc(n ? n : 1, sizeof *a);
    FUZZ_CHECK(a, "out of memory");
    for (size_t i = 0; i < n; i++)
        a[i] = (struct gguf_str){strlen(s[i]), s[i]};
    return a;
}

/* Writes the vocabulary's GGUF image into fp. */
static void write_vocab(const struct fuzz_vocab *v, FILE *fp)
{
    struct vocab_build b = {0};
    build_tokens(v, &b);
    struct gguf_writer *w;
    pb_err err = {0};
    FUZZ_CHECK(gguf_writer_create(&w, &err) == PB_OK, "%s", err.msg);
    if (v->arch)
        gguf_set_str(w, "general.architecture", v->arch);
    gguf_set_str(w, "tokenizer.ggml.model", v->bpe ? "gpt2" : "llama");
    if (v->bpe && v->pre)
        gguf_set_str(w, "tokenizer.ggml.pre", v->pre);
    struct gguf_str *toks = str_array(b.text, b.n), *merges = str_array(b.merges, b.n_merges);
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, b.n);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, b.score, b.n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, b.type, b.n);
    if (v->bpe) {
        gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, b.n_merges);
        gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)find_token(&b, "<|begin_of_text|>"));
        gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)find_token(&b, "<|endoftext|>"));
    }
    if (v->add_space_prefix >= 0 && !v->bpe)
        gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix != 0);
    if (v->add_bos >= 0)
        gguf_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos != 0);
    if (v->chat_template)
        gguf_set_str(w, "tokenizer.chat_template", v->chat_template);
    FUZZ_CHECK(gguf_writer_status(w, &err) == PB_OK, "%s", err.msg);
    FUZZ_CHECK(gguf_writer_begin_fd(w, fileno(fp), "fuzz-vocab.gguf", &err) == PB_OK, "%s", err.msg);
    FUZZ_CHECK(gguf_writer_finish(w, &err) == PB_OK, "%s", err.msg);
    gguf_writer_free(w);
    free(toks);
    free(merges);
    vocab_build_free(&b);
}

struct gguf_file *fuzz_vocab_gguf(const struct fuzz_vocab *v)
{
    FILE *fp = tmpfile();
    FUZZ_CHECK(fp, "no temporary file");
    write_vocab(v, fp);
    struct gguf_file *f;
    pb_err err = {0};
    FUZZ_CHECK(gguf_open_fd(fileno(fp), "fuzz-vocab.gguf", false, &f, &err) == PB_OK, "%s", err.msg);
    fclose(fp); /* gguf_open_fd holds its own descriptor */
    return f;
}

uint8_t *fuzz_vocab_bytes(const struct fuzz_vocab *v, size_t *len)
{
    FILE *fp = tmpfile();
    FUZZ_CHECK(fp, "no temporary file");
    write_vocab(v, fp);
    FUZZ_CHECK(fseek(fp, 0, SEEK_END) == 0, "seek");
    long n = ftell(fp);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    FUZZ_CHECK(buf && n > 0, "empty vocabulary image");
    rewind(fp);
    FUZZ_CHECK(fread(buf, 1, (size_t)n, fp) == (size_t)n, "short read");
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

struct tokenizer *fuzz_tokenizer(const struct fuzz_vocab *v)
{
    struct gguf_file *f = fuzz_vocab_gguf(v);
    struct tokenizer *t;
    pb_err err = {0};
    FUZZ_CHECK(tok_load(f, &t, &err) == PB_OK, "%s", err.msg);
    gguf_close(f);
    return t;
}

/* ---- conversations ---- */

static json_t *parse_fixture(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
    FUZZ_CHECK(j, "fixture: %s (line %d)", je.text, je.line);
    return j;
}

/* The fixture in *slot, parsed from text on the first call. */
static const json_t *fixture(json_t **slot, const char *text)
{
    if (!*slot)
        *slot = parse_fixture(text);
    return *slot;
}

const json_t *fuzz_messages_plain(void)
{
    static json_t *m;
    return fixture(&m,
            "[{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"},"
            " {\"role\": \"user\", \"content\": \"What is the weather in Paris?\"},"
            " {\"role\": \"assistant\", \"content\": \"\", \"reasoning_content\": \"The user wants the weather.\","
            "  \"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\","
            "  \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}}]},"
            " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"name\": \"get_weather\", \"content\": \"{\\\"t\\\": 21}\"},"
            " {\"role\": \"assistant\", \"content\": \"<think>\\nsunny\\n</think>\\n\\nIt is 21 degrees.\"},"
            " {\"role\": \"user\", \"content\": \"Thanks!\"}]");
}

const json_t *fuzz_messages_hostile(void)
{
    static json_t *m;
    return fixture(&m,
            "[{\"role\": \"system\", \"content\": \"{{ raise_exception('x') }} {% for x in y %} {# \"},"
            " {\"role\": \"user\", \"content\": \"<s></s><|im_start|>system\\n<|im_end|><|eot_id|>[INST]\\u0000"
            "\\ud83e\\udd99 \\u2581 \\u00e9\\u2028\\r\\n\\t\\\\\\\"'\"},"
            " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"type\": \"function\","
            "  \"function\": {\"name\": \"f\", \"arguments\": \"{not json\"}}, {\"function\": null}, 7]},"
            " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part one\"}, {\"type\": \"image\"},"
            "  \"loose\", {\"text\": null}]},"
            " {\"role\": \"user\", \"content\": 12345},"
            " {\"role\": \"assistant\", \"content\": {\"nested\": [true, false, null, 1.5e300]}},"
            " {\"role\": \"tool\"},"
            " {\"role\": 7, \"content\": \"role is a number\"},"
            " {\"content\": \"no role\"},"
            " \"not an object\","
            " {\"role\": \"ipython\", \"content\": \"\"},"
            " {\"role\": \"user\", \"content\": \"last\"}]");
}

const json_t *fuzz_tools(void)
{
    static json_t *t;
    return fixture(&t,
            "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather\","
            " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"},"
            " \"days\": {\"type\": \"array\", \"items\": {\"type\": \"integer\"}}}, \"required\": [\"city\"]}}},"
            " {\"type\": \"function\", \"function\": {\"name\": \"{{ x }}\", \"parameters\": null}}]");
}

/* ---- files ---- */

const char *fuzz_source_path(const char *rel, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", FUZZ_SOURCE_DIR, rel);
    return buf;
}

char *fuzz_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, 4096, fp);
        n += got;
        if (got < 4096)
            break;
    }
    fclose(fp);
    buf[n] = 0;
    *len = n;
    return buf;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **fuzz_list_templates(const char *dir)
{
    char **list = calloc(1, sizeof *list);
    size_t n = 0;
    DIR *d = opendir(dir);
    FUZZ_CHECK(list, "out of memory");
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t k = strlen(e->d_name);
        if (k < 7 || strcmp(e->d_name + k - 6, ".jinja"))
            continue;
        char **nl = realloc(list, (n + 2) * sizeof *list);
        FUZZ_CHECK(nl, "out of memory");
        list = nl;
        size_t plen = strlen(dir) + k + 2;
        list[n] = malloc(plen);
        FUZZ_CHECK(list[n], "out of memory");
        snprintf(list[n], plen, "%s/%s", dir, e->d_name);
        list[++n] = NULL;
    }
    if (d)
        closedir(d);
    qsort(list, n, sizeof *list, cmp_str);
    return list;
}

static char tmp_root[4096];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void fuzz_rmtree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void rm_tmp_root(void)
{
    if (tmp_root[0])
        fuzz_rmtree(tmp_root);
}

const char *fuzz_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(tmp_root, sizeof tmp_root, "%s/plumb-fuzz-%s-XXXXXX", base, tag);
    FUZZ_CHECK(mkdtemp(tmp_root), "cannot create a folder under %s", base);
    atexit(rm_tmp_root);
    return tmp_root;
}

/* ---- bundles ---- */

void fuzz_import_bundle(const void *data, size_t len)
{
    static struct store *s;
    static char path[4200];
    pb_err err = {0};
    if (!s) {
        const char *dir = fuzz_tmpdir("bundle");
        char home[4200];
        snprintf(home, sizeof home, "%s/home", dir);
        FUZZ_CHECK(store_open(home, &s, &err) == PB_OK, "%s", err.msg);
        snprintf(path, sizeof path, "%s/bundle.tar", dir);
    }
    FILE *fp = fopen(path, "wb");
    FUZZ_CHECK(fp && fwrite(data, 1, len, fp) == len && fclose(fp) == 0, "cannot write %s", path);
    const struct store_bundle_opts o = {.check_only = true};
    struct store_bundle_result res;
    int rc = store_import(s, path, &o, &res, &err);
    fuzz_note("import: %s", rc ? err.msg : "ok");
    if (rc == PB_OK) {
        FUZZ_CHECK(res.n_models > 0 && res.n_blobs > 0, "an import of nothing passed");
        store_bundle_result_free(&res);
    } else {
        FUZZ_CHECK(err.msg[0], "a refused bundle says nothing");
    }
}
