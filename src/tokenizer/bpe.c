/* Byte-level BPE (GPT-2 style), as llama.cpp's "gpt2" tokenizer.
 *
 * Encoding one run of text:
 *  1. invalid UTF-8 becomes U+FFFD (the reference does the same);
 *  2. the pre-tokenizer's regexes split it into pre-tokens, each regex
 *     refining the pieces of the previous one (matches and the gaps
 *     between them both become pieces, so no byte is lost);
 *  3. each pre-token's bytes are mapped to printable code points (GPT-2's
 *     bytes_to_unicode) and merged pairwise, lowest merge rank first, ties
 *     leftmost first;
 *  4. the merged symbols are looked up in the vocabulary.
 * The regexes are the ones of the models' tokenizer.json, run by PCRE2 in
 * UTF + Unicode-property mode.
 */
#include "tokenizer/tokenizer_internal.h"

#include "base/heap.h"
#include "base/vec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- pre-tokenizers ---- */

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RX_LLAMA3                                                                                                      \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"           \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"                 \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_TEKKEN                                                                                                      \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"                        \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}|"                 \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_GPT4O                                                                                                       \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"                         \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"                                                                                   \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"                         \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

struct pretok {
    const char *names; /* tokenizer.ggml.pre values, space-separated */
    const char *regex[BPE_MAX_REGEX];
    bool ignore_merges; /* a pre-token that is a whole token skips merging */
    bool add_bos;       /* default when the file has no add_bos_token */
};

static const struct pretok pretoks[] = {
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false},
    {"gpt-2 phi-2 jina-es jina-de jina-v2-es jina-v2-de jina-v2-code mpt olmo jais trillion", {RX_GPT2}, false, false},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2", {RX_LLAMA3}, true, true},
    {"dbrx smaug-bpe chatglm-bpe", {RX_LLAMA3}, false, false},
    {"qwen2 deepseek-r1-qwen stablelm2 megrez", {RX_QWEN2}, false, false},
    {"smollm starcoder refact command-r codeshell exaone minerva-7b", {"\\p{N}", RX_GPT2}, false, false},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"}, false, false},
    {"tekken", {RX_TEKKEN}, true, true},
    {"gpt-4o llama4", {RX_GPT4O}, false, false},
};

static const struct pretok *find_pretok(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof pretoks / sizeof pretoks[0]; i++) {
        for (const char *p = pretoks[i].names; *p;) {
            const char *end = strchr(p, ' ');
            size_t k = end ? (size_t)(end - p) : strlen(p);
            if (k == n && memcmp(p, name, n) == 0)
                return &pretoks[i];
            p += k + (end ? 1 : 0);
        }
    }
    return NULL;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the others (controls, space, ...) for 256, 257, ... in byte order. */
static void build_byte_encoding(struct tokenizer *t)
{
    int extra = 0;
    for (int cp = 0; cp < 324; cp++)
        t->cp_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra++;
        t->cp_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->byte_enc[b][0] = (char)cp;
            t->byte_enc_len[b] = 1;
        } else {
            t->byte_enc[b][0] = (char)(0xC0 | (cp >> 6));
            t->byte_enc[b][1] = (char)(0x80 | (cp & 0x3F));
            t->byte_enc_len[b] = 2;
        }
    }
}

int bpe_load(struct tokenizer *t, const struct gguf_file *f, pb_err *err)
{
    const char *name = gguf_name(f);
    struct gguf_str pre = {7, "default"};
    int rc = gguf_get_str(f, "tokenizer.ggml.pre", &pre, err);
    if (rc < 0)
        return rc;
    if (pre.len >= sizeof t->pre || memchr(pre.data, 0, pre.len))
        return pb_fail(err, PB_EFORMAT, "%s: tokenizer.ggml.pre is not a valid name", name);
    memcpy(t->pre, pre.data, pre.len);
    t->pre[pre.len] = 0;
    const struct pretok *pt = find_pretok(t->pre);
    if (!pt)
        return pb_fail(err, PB_EUNSUPPORTED,
                       "%s: pre-tokenizer '%s' is not supported (supported: default, gpt-2, llama-bpe, qwen2, smollm, "
                       "tekken, gpt-4o and their aliases)",
                       name, t->pre);
    t->ignore_merges = pt->ignore_merges;
    t->add_bos = pt->add_bos;
    for (int i = 0; i < BPE_MAX_REGEX && pt->regex[i]; i++) {
        int code;
        PCRE2_SIZE at;
        t->re[i] = pcre2_compile((PCRE2_SPTR)pt->regex[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at,
                                 NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof msg);
            return pb_fail(err, PB_EINVAL, "pre-tokenizer '%s': regex %d does not compile at %zu: %s", t->pre, i,
                           (size_t)at, (const char *)msg);
        }
        pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
        t->n_re = i + 1;
    }

    struct gguf_arr merges;
    rc = gguf_get_arr(f, "tokenizer.ggml.merges", &merges, err);
    if (rc < 0)
        return rc;
    if (rc == 0 || merges.type != GGUF_STRING || merges.n > INT32_MAX / 4)
        return pb_fail(err, PB_EFORMAT, "%s: a gpt2 tokenizer needs tokenizer.ggml.merges (an array of strings)", name);
    t->n_merges = (int32_t)merges.n;
    size_t arena = 0;
    for (int32_t i = 0; i < t->n_merges; i++) {
        uint64_t len = gguf_arr_str(&merges, (uint64_t)i).len;
        if (len > 65535)
            return pb_fail(err, PB_EFORMAT, "%s: merge %d is %llu bytes long", name, (int)i, (unsigned long long)len);
        arena += len;
    }
    t->merges = malloc(((size_t)t->n_merges + 1) * sizeof *t->merges);
    t->merges_arena = malloc(arena + 1);
    if (!t->merges || !t->merges_arena)
        return pb_fail(err, PB_ENOMEM, "%s: out of memory for %d merges", name, (int)t->n_merges);
    char *p = t->merges_arena;
    for (int32_t i = 0; i < t->n_merges; i++) {
        struct gguf_str s = gguf_arr_str(&merges, (uint64_t)i);
        memcpy(p, s.data, s.len);
        t->merges[i] = (struct tok_str){p, (uint32_t)s.len};
        p += s.len;
    }
    /* a merge listed twice keeps its first (best) rank */
    if (str_index_build(&t->merge_index, t->merges, sizeof *t->merges, t->n_merges, true))
        return pb_fail(err, PB_ENOMEM, "%s: out of memory indexing merges", name);
    build_byte_encoding(t);
    return PB_OK;
}

void bpe_free(struct tokenizer *t)
{
    for (int i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    t->n_re = 0;
    free(t->merges);
    free(t->merges_arena);
    str_index_free(&t->merge_index);
}

/* ---- step 1: valid UTF-8 ---- */

/* Length of the valid UTF-8 character at s (1..4), 0 if invalid. */
static size_t utf8_valid(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (len == 0 || len > n || s[0] > 0xF4)
        return 0;
    uint32_t cp = s[0] & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Copies text with every invalid byte replaced by U+FFFD; *out_len set.
 * Overlong forms and UTF-16 surrogates count as invalid here (each of
 * their bytes becomes U+FFFD), where llama.cpp decodes them leniently:
 * such input differs between the two, valid UTF-8 never does. */
static char *sanitize(const char *text, size_t len, size_t *out_len)
{
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_valid((const unsigned char *)text + i, len - i);
        if (k) {
            memcpy(out + o, text + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    *out_len = o;
    return out;
}

/* ---- step 2: pre-token split ---- */

struct span {
    size_t off, len;
};

struct spans {
    struct span *v;
    size_t n, cap;
};

static int spans_push(struct spans *s, size_t off, size_t len)
{
    if (len == 0)
        return PB_OK;
    if (vec_reserve((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v))
        return PB_ENOMEM;
    s->v[s->n++] = (struct span){off, len};
    return PB_OK;
}

/* Splits each span of in by regex re into out: matches and gaps. */
static int split(const pcre2_code *re, const char *text, const struct spans *in, struct spans *out)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return PB_ENOMEM;
    int rc = PB_OK;
    for (size_t i = 0; i < in->n && rc == PB_OK; i++) {
        const PCRE2_SPTR subject = (PCRE2_SPTR)(text + in->v[i].off);
        const size_t n = in->v[i].len;
        size_t pos = 0, last = 0;
        while (pos < n && rc == PB_OK) {
            int m = pcre2_match(re, subject, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (m == PCRE2_ERROR_NOMATCH)
                break; /* the rest is one gap */
            if (m < 0) { /* a match or depth limit: never split silently wrong */
                rc = PB_ERANGE;
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t s = ov[0], e = ov[1];
            if (e <= s) { /* empty match: step one character */
                pos = s + 1;
                while (pos < n && (subject[pos] & 0xC0) == 0x80)
                    pos++;
                continue;
            }
            rc = spans_push(out, in->v[i].off + last, s - last);
            if (rc == PB_OK)
                rc = spans_push(out, in->v[i].off + s, e - s);
            pos = last = e;
        }
        if (rc == PB_OK)
            rc = spans_push(out, in->v[i].off + last, n - last);
    }
    pcre2_match_data_free(md);
    return rc;
}

/* ---- step 3: merges ---- */

struct sym {
    int prev, next;
    size_t off, n; /* in the encoded word; n == 0 once merged away */
};

struct pair {
    int32_t rank;
    int left, right;
    size_t left_n, right_n; /* sizes when queued: a change makes it stale */
};

static bool pair_before(const void *pa, const void *pb)
{
    const struct pair *a = pa, *b = pb;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

struct word_ctx {
    const struct tokenizer *t;
    const char *enc; /* the byte-encoded word */
    struct sym *s;
    struct heap heap;
    char *key; /* scratch for "left right" */
};

static int queue_pair(struct word_ctx *w, int left, int right)
{
    if (left < 0 || right < 0)
        return PB_OK;
    const struct sym *l = &w->s[left], *r = &w->s[right];
    memcpy(w->key, w->enc + l->off, l->n);
    w->key[l->n] = ' ';
    memcpy(w->key + l->n + 1, w->enc + r->off, r->n);
    int32_t rank = str_index_find(&w->t->merge_index, w->t->merges, sizeof *w->t->merges, w->key, l->n + 1 + r->n);
    if (rank < 0)
        return PB_OK;
    struct pair p = {rank, left, right, l->n, r->n};
    return heap_push(&w->heap, &p);
}

/* Emits the tokens of one encoded pre-token. */
static int encode_word(struct word_ctx *w, size_t len, struct tok_ids *ids)
{
    const struct tokenizer *t = w->t;
    if (t->ignore_merges) {
        int32_t id = tok_lookup(t, w->enc, len);
        if (id >= 0)
            return tok_ids_push(ids, id);
    }
    int n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t k = utf8_seq_len((unsigned char)w->enc[off]);
        if (k > len - off)
            k = len - off;
        w->s[n] = (struct sym){n - 1, off + k == len ? -1 : n + 1, off, k};
        off += k;
    }
    w->heap.n = 0;
    int rc = PB_OK;
    for (int i = 1; i < n && rc == PB_OK; i++)
        rc = queue_pair(w, i - 1, i);
    while (w->heap.n > 0 && rc == PB_OK) {
        struct pair p;
        heap_pop(&w->heap, &p);
        struct sym *l = &w->s[p.left], *r = &w->s[p.right];
        if (l->n != p.left_n || r->n != p.right_n || l->next != p.right)
            continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->s[r->next].prev = p.left;
        rc = queue_pair(w, l->prev, p.left);
        if (rc == PB_OK)
            rc = queue_pair(w, p.left, l->next);
    }
    for (int i = 0; i != -1 && rc == PB_OK; i = w->s[i].next) {
        const struct sym *s = &w->s[i];
        int32_t id = tok_lookup(t, w->enc + s->off, s->n);
        if (id >= 0) {
            rc = tok_ids_push(ids, id);
            continue;
        }
        /* not in the vocabulary: each byte of it as a token, where one exists */
        for (size_t k = 0; k < s->n && rc == PB_OK; k++) {
            int32_t b = tok_lookup(t, w->enc + s->off + k, 1);
            if (b >= 0)
                rc = tok_ids_push(ids, b);
        }
    }
    return rc;
}

/* Steps 1 and 2: the sanitized text and its pre-token spans. */
static int pretokenize(const struct tokenizer *t, const char *text, size_t len, char **clean, struct spans *out)
{
    size_t n;
    struct spans b = {0};
    *clean = sanitize(text, len, &n);
    int rc = *clean ? spans_push(out, 0, n) : PB_ENOMEM;
    for (int i = 0; i < t->n_re && rc == PB_OK; i++) {
        b.n = 0;
        rc = split(t->re[i], *clean, out, &b);
        struct spans tmp = *out;
        *out = b;
        b = tmp;
    }
    free(b.v);
    return rc;
}

int bpe_pretokenize(const struct tokenizer *t, const char *text, size_t len, char **out, size_t *n_pieces)
{
    char *clean = NULL;
    struct spans a = {0};
    int rc = pretokenize(t, text, len, &clean, &a);
    *out = NULL;
    *n_pieces = 0;
    if (rc == PB_OK) {
        size_t total = 0;
        for (size_t i = 0; i < a.n; i++)
            total += a.v[i].len + 1;
        *out = malloc(total + 1);
        if (*out) {
            char *p = *out;
            for (size_t i = 0; i < a.n; i++) {
                memcpy(p, clean + a.v[i].off, a.v[i].len);
                p[a.v[i].len] = 0;
                p += a.v[i].len + 1;
            }
            *n_pieces = a.n;
        } else {
            rc = PB_ENOMEM;
        }
    }
    free(clean);
    free(a.v);
    return rc;
}

int bpe_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_ids *ids)
{
    char *clean = NULL;
    struct spans a = {0};
    struct word_ctx w = {.t = t};
    heap_init(&w.heap, sizeof(struct pair), pair_before);
    int rc = pretokenize(t, text, len, &clean, &a);
    /* scratch sized for the longest pre-token: 2 encoded bytes per byte */
    size_t longest = 0;
    for (size_t i = 0; i < a.n; i++)
        if (a.v[i].len > longest)
            longest = a.v[i].len;
    char *enc = NULL;
    if (rc == PB_OK) {
        enc = malloc(2 * longest + 1);
        w.key = malloc(4 * longest + 2);
        w.s = malloc((longest + 1) * sizeof *w.s);
        if (!enc || !w.key || !w.s)
            rc = PB_ENOMEM;
    }
    w.enc = enc;
    for (size_t i = 0; i < a.n && rc == PB_OK; i++) {
        size_t e = 0;
        for (size_t k = 0; k < a.v[i].len; k++) {
            unsigned char c = (unsigned char)clean[a.v[i].off + k];
            memcpy(enc + e, t->byte_enc[c], t->byte_enc_len[c]);
            e += t->byte_enc_len[c];
        }
        rc = encode_word(&w, e, ids);
    }
    free(clean);
    free(a.v);
    free(enc);
    free(w.key);
    free(w.s);
    heap_free(&w.heap);
    return rc;
}

/* ---- decoding ---- */

size_t bpe_decode_text(const struct tokenizer *t, const char *text, size_t len, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        const unsigned char *c = (const unsigned char *)text + i;
        size_t k = utf8_valid(c, len - i);
        unsigned cp = k == 1 ? c[0] : k == 2 ? (c[0] & 0x1Fu) << 6 | (c[1] & 0x3Fu) : 0x7FFFFFFF;
        int byte = cp < 324 ? t->cp_byte[cp] : -1;
        if (k == 0)
            k = 1;
        if (byte >= 0) {
            if (o < size)
                buf[o] = (char)byte;
            o++;
        } else { /* not a byte symbol: keep the text as it is */
            for (size_t j = 0; j < k; j++, o++)
                if (o < size)
                    buf[o] = text[i + j];
        }
        i += k;
    }
    return o;
}
