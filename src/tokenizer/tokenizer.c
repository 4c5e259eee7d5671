/* Vocabulary loading, lookup, special-token splitting, decoding; the
 * encoding of raw text is in spm.c and bpe.c. */
#include "tokenizer/tokenizer_internal.h"

#include "base/vec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPACE_MARK "\xe2\x96\x81" /* U+2581, SentencePiece's visible space */

int32_t tok_lookup(const struct tokenizer *t, const char *text, size_t len)
{
    return str_index_find(&t->index, t->tok, sizeof *t->tok, text, len);
}

int tok_ids_push(struct tok_ids *ids, int32_t id)
{
    if (vec_reserve((void **)&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v))
        return PB_ENOMEM;
    ids->v[ids->n++] = id;
    return PB_OK;
}

/* Reads an optional token id key; absent keeps *id. */
static int read_id(const struct gguf_file *f, const char *key, int32_t n, int32_t *id, pb_err *err)
{
    int64_t v;
    int rc = gguf_get_int(f, key, &v, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return PB_OK;
    if (v == UINT32_MAX) /* u32 -1: converters write it for "none" */
        v = -1;
    if (v < -1 || v >= n)
        return pb_fail(err, PB_EFORMAT, "%s: %s is %" PRId64 ", outside the vocabulary of %" PRId32 " tokens",
                       gguf_name(f), key, v, n);
    *id = (int32_t)v;
    return PB_OK;
}

static int read_flag(const struct gguf_file *f, const char *key, bool *flag, pb_err *err)
{
    int rc = gguf_get_bool(f, key, flag, err);
    return rc < 0 ? rc : PB_OK;
}

static int load_vocab(const struct gguf_file *f, struct tokenizer *t, pb_err *err)
{
    const char *name = gguf_name(f);
    struct gguf_arr toks, scores = {0}, types = {0};
    int rc = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return pb_fail(err, PB_EFORMAT, "%s: no vocabulary (tokenizer.ggml.tokens is missing)", name);
    if (toks.type != GGUF_STRING || toks.n == 0 || toks.n > INT32_MAX / 4)
        return pb_fail(err, PB_EFORMAT, "%s: tokenizer.ggml.tokens must be a non-empty array of strings", name);
    t->n = (int32_t)toks.n;
    if ((rc = gguf_get_arr(f, "tokenizer.ggml.scores", &scores, err)) < 0)
        return rc;
    if (rc && (scores.n != toks.n || (scores.type != GGUF_F32 && scores.type != GGUF_F64)))
        return pb_fail(err, PB_EFORMAT, "%s: tokenizer.ggml.scores must hold %" PRId32 " floats", name, t->n);
    if ((rc = gguf_get_arr(f, "tokenizer.ggml.token_type", &types, err)) < 0)
        return rc;
    if (rc && (types.n != toks.n || !gguf_arr_is_int(&types)))
        return pb_fail(err, PB_EFORMAT, "%s: tokenizer.ggml.token_type must hold %" PRId32 " integers", name, t->n);

    size_t arena = 0;
    for (int32_t i = 0; i < t->n; i++) {
        struct gguf_str s = gguf_arr_str(&toks, (uint64_t)i);
        if (s.len > 65535)
            return pb_fail(err, PB_EFORMAT, "%s: token %" PRId32 " is %" PRIu64 " bytes long", name, i, s.len);
        arena += s.len + 1;
    }
    t->tok = calloc((size_t)t->n, sizeof *t->tok);
    t->arena = malloc(arena);
    if (!t->tok || !t->arena)
        return pb_fail(err, PB_ENOMEM, "%s: out of memory for a vocabulary of %" PRId32 " tokens", name, t->n);
    char *p = t->arena;
    for (int32_t i = 0; i < t->n; i++) {
        struct gguf_str s = gguf_arr_str(&toks, (uint64_t)i);
        memcpy(p, s.data, s.len);
        p[s.len] = 0;
        struct tok_entry *e = &t->tok[i];
        e->s = (struct tok_str){p, (uint32_t)s.len};
        e->score = scores.n ? (float)gguf_arr_float(&scores, (uint64_t)i) : 0.0f;
        int64_t ty = types.n ? gguf_arr_int(&types, (uint64_t)i) : TOK_NORMAL;
        e->attr = (uint8_t)(ty >= TOK_NORMAL && ty <= TOK_BYTE ? ty : TOK_UNDEFINED);
        p += s.len + 1;
    }
    /* a text listed twice finds its last id, as llama.cpp's map does */
    if (str_index_build(&t->index, t->tok, sizeof *t->tok, t->n, false))
        return pb_fail(err, PB_ENOMEM, "%s: out of memory indexing the vocabulary", name);
    return PB_OK;
}

struct special_key {
    uint32_t len;
    int32_t id;
};

/* longest text first, then lowest id */
static int cmp_special(const void *a, const void *b)
{
    const struct special_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Tokens that are matched as a whole inside text: control, user-defined
 * and unknown tokens with non-empty text, longest first. */
static int collect_specials(struct tokenizer *t, pb_err *err)
{
    struct special_key *keys = malloc((size_t)t->n * sizeof *keys);
    t->specials = malloc((size_t)t->n * sizeof *t->specials);
    if (!keys || !t->specials) {
        free(keys);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    for (int32_t i = 0; i < t->n; i++) {
        uint8_t a = t->tok[i].attr;
        if ((a == TOK_CONTROL || a == TOK_USER_DEFINED || a == TOK_UNKNOWN) && t->tok[i].s.len > 0) {
            keys[t->n_specials++] = (struct special_key){t->tok[i].s.len, i};
            unsigned char c = (unsigned char)t->tok[i].s.p[0];
            t->special_first[c / 8] |= (uint8_t)(1u << (c % 8));
        }
    }
    qsort(keys, (size_t)t->n_specials, sizeof *keys, cmp_special);
    for (int32_t i = 0; i < t->n_specials; i++)
        t->specials[i] = keys[i].id;
    free(keys);
    return PB_OK;
}

static void add_eog(struct tokenizer *t, int32_t id)
{
    if (id < 0)
        return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return;
    if (t->n_eog < (int)(sizeof t->eog / sizeof t->eog[0]))
        t->eog[t->n_eog++] = id;
}

/* End-of-generation ids: EOS, EOT, EOM from the metadata, and control (or
 * user-defined) tokens with the texts chat models end their turns with
 * (files often name only one of them; llama.cpp does the same).
 *
 * Such a token is a control token whatever type the file gives it: a
 * converter marks an added token user-defined when its tokenizer config
 * says "special": false (Phi-3's <|endoftext|>, its EOS, or a </s> so
 * marked), and a user-defined token is matched in plain text, so a user
 * typing its text would end the prompt with an end-of-sequence. As a
 * control token it is matched only where specials are parsed and rendered
 * only on request, as llama.cpp treats it.
 *
 * OpenAI's harmony vocabulary (gpt-oss) ends turns with <|return|> and
 * <|call|>; its <|end|> separates messages and, with <|start|>,
 * <|channel|>, <|message|> and <|constrain|>, is markup the output must
 * show (the reasoning parser reads it): those are user-defined. */
static void collect_eog(struct tokenizer *t)
{
    static const char *const ends[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                       "<|eom_id|>", "<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>",
                                       "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>" /* DeepSeek */};
    static const char *const harmony_markup[] = {"<|end|>", "<|start|>", "<|channel|>", "<|message|>",
                                                 "<|constrain|>"};
    const bool harmony = tok_lookup(t, "<|return|>", 10) >= 0 && tok_lookup(t, "<|call|>", 8) >= 0;
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    add_eog(t, t->eom);
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        int32_t id = tok_lookup(t, ends[i], strlen(ends[i]));
        if (harmony && !strcmp(ends[i], "<|end|>"))
            continue;
        if (id >= 0 && (t->tok[id].attr == TOK_CONTROL || t->tok[id].attr == TOK_USER_DEFINED))
            add_eog(t, id);
    }
    for (int i = 0; i < t->n_eog; i++)
        if (t->tok[t->eog[i]].attr == TOK_USER_DEFINED)
            t->tok[t->eog[i]].attr = TOK_CONTROL;
    for (size_t i = 0; harmony && i < sizeof harmony_markup / sizeof harmony_markup[0]; i++) {
        int32_t id = tok_lookup(t, harmony_markup[i], strlen(harmony_markup[i]));
        if (id >= 0 && (t->tok[id].attr == TOK_CONTROL || t->tok[id].attr == TOK_USER_DEFINED))
            t->tok[id].attr = TOK_USER_DEFINED;
    }
}

static void find_byte_tokens(struct tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_id[b] = tok_lookup(t, hex, 6);
    }
}

int tok_load(const struct gguf_file *f, struct tokenizer **out, pb_err *err)
{
    *out = NULL;
    const char *name = gguf_name(f);
    struct gguf_str model;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return pb_fail(err, PB_EFORMAT, "%s: no tokenizer (tokenizer.ggml.model is missing)", name);
    enum tok_kind kind;
    if (gguf_str_eq(model, "llama"))
        kind = TOK_KIND_SPM;
    else if (gguf_str_eq(model, "gpt2"))
        kind = TOK_KIND_BPE;
    else if (gguf_str_eq(model, "bert"))
        kind = TOK_KIND_WPM;
    else
        return pb_fail(err, PB_EUNSUPPORTED, "%s: tokenizer '%.*s' is not supported yet (supported: llama, gpt2, bert)",
                       name, (int)(model.len > 32 ? 32 : model.len), model.data);

    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    t->kind = kind;
    t->eot = t->eom = -1;
    if (kind == TOK_KIND_SPM) {
        /* SentencePiece defaults, as the reference loader has them */
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_bos = true;
        t->add_space_prefix = true;
    } else {
        t->bos = t->eos = t->unk = -1;
    }
    if ((rc = load_vocab(f, t, err)))
        goto fail;
    if (t->bos >= t->n || t->eos >= t->n) /* the defaults point past a tiny vocabulary */
        t->bos = t->eos = t->unk = -1;
    if (kind == TOK_KIND_BPE && (rc = bpe_load(t, f, err))) /* sets add_bos per pre-tokenizer */
        goto fail;
    if (kind == TOK_KIND_WPM) { /* [CLS] text [SEP] */
        if ((rc = read_id(f, "tokenizer.ggml.cls_token_id", t->n, &t->bos, err)) ||
            (rc = read_id(f, "tokenizer.ggml.seperator_token_id", t->n, &t->eos, err)))
            goto fail;
        t->add_bos = t->add_eos = true;
    }
    if ((rc = read_id(f, "tokenizer.ggml.bos_token_id", t->n, &t->bos, err)) ||
        (rc = read_id(f, "tokenizer.ggml.eos_token_id", t->n, &t->eos, err)) ||
        (rc = read_id(f, "tokenizer.ggml.unknown_token_id", t->n, &t->unk, err)) ||
        (rc = read_id(f, "tokenizer.ggml.eot_token_id", t->n, &t->eot, err)) ||
        (rc = read_id(f, "tokenizer.ggml.eom_token_id", t->n, &t->eom, err)) ||
        (rc = read_flag(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err)) ||
        (rc = read_flag(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err)) ||
        (rc = read_flag(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err)) ||
        (rc = collect_specials(t, err)))
        goto fail;
    if (kind == TOK_KIND_SPM)
        find_byte_tokens(t);
    collect_eog(t);
    *out = t;
    return PB_OK;
fail:
    tok_free(t);
    return rc;
}

void tok_free(struct tokenizer *t)
{
    if (!t)
        return;
    bpe_free(t);
    free(t->tok);
    free(t->arena);
    str_index_free(&t->index);
    free(t->specials);
    free(t);
}

int tok_open(const char *path, struct tokenizer **out, pb_err *err)
{
    *out = NULL;
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err);
    if (rc)
        return rc;
    rc = tok_load(f, out, err); /* the vocabulary is copied: the file can go */
    gguf_close(f);
    return rc;
}

size_t tok_mem_bytes(const struct tokenizer *t)
{
    size_t n = sizeof *t + (size_t)t->n * sizeof *t->tok + t->index.n_slots * sizeof *t->index.slots +
               (size_t)t->n_specials * sizeof *t->specials;
    for (int32_t i = 0; i < t->n; i++)
        n += t->tok[i].s.len + 1;
    n += (size_t)t->n_merges * sizeof *t->merges + t->merge_index.n_slots * sizeof *t->merge_index.slots;
    for (int32_t i = 0; i < t->n_merges; i++)
        n += t->merges[i].len + 1;
    return n;
}

enum tok_kind tok_kind(const struct tokenizer *t) { return t->kind; }
int32_t tok_n_vocab(const struct tokenizer *t) { return t->n; }
int32_t tok_bos(const struct tokenizer *t) { return t->bos; }
int32_t tok_eos(const struct tokenizer *t) { return t->eos; }
bool tok_add_bos(const struct tokenizer *t) { return t->add_bos && t->bos >= 0; }

bool tok_is_eog(const struct tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

enum tok_attr tok_attr(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n ? (enum tok_attr)t->tok[id].attr : TOK_UNDEFINED;
}

const char *tok_text(const struct tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n) {
        *len = 0;
        return "";
    }
    *len = t->tok[id].s.len;
    return t->tok[id].s.p;
}

/* The special token matching text at its start, or -1. */
static int32_t match_special(const struct tokenizer *t, const char *text, size_t len, bool parse_special)
{
    unsigned char c = (unsigned char)text[0];
    if (!(t->special_first[c / 8] & (1u << (c % 8))))
        return -1;
    for (int32_t i = 0; i < t->n_specials; i++) {
        const struct tok_entry *e = &t->tok[t->specials[i]];
        if (!parse_special && e->attr != TOK_USER_DEFINED)
            continue;
        if (e->s.len <= len && memcmp(e->s.p, text, e->s.len) == 0)
            return t->specials[i];
    }
    return -1;
}

/* Encodes one run of text without special tokens. */
static int encode_raw(const struct tokenizer *t, const char *text, size_t len, bool prefix_space, struct tok_ids *ids)
{
    if (t->kind == TOK_KIND_BPE)
        return bpe_encode(t, text, len, ids);
    if (t->kind == TOK_KIND_WPM)
        return wpm_encode(t, text, len, ids);
    if (!prefix_space)
        return spm_encode(t, text, len, ids);
    char *buf = malloc(len + 1);
    if (!buf)
        return PB_ENOMEM;
    buf[0] = ' ';
    memcpy(buf + 1, text, len);
    int rc = spm_encode(t, buf, len + 1, ids);
    free(buf);
    return rc;
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
               int32_t **out, size_t *n_out, pb_err *err)
{
    return tok_encode_ex(t, text, len, add_special, parse_special, NULL, out, n_out, err);
}

int tok_encode_ex(const struct tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                  const uint8_t *literal, int32_t **out, size_t *n_out, pb_err *err)
{
    struct tok_ids ids = {0};
    int rc = PB_OK;
    *out = NULL;
    *n_out = 0;
    if (add_special && tok_add_bos(t))
        rc = tok_ids_push(&ids, t->bos);
    /* split the text at special tokens; each raw run is encoded on its own,
     * the first (and any after a special token) with the SentencePiece
     * space prefix */
    bool prev_special = true;
    size_t run = 0;
    for (size_t i = 0; i <= len && rc == PB_OK;) {
        int32_t sp = i < len && t->n_specials ? match_special(t, text + i, len - i, parse_special) : -1;
        if (sp >= 0 && literal && memchr(literal + i, 1, t->tok[sp].s.len))
            sp = -1; /* inside user text: not a special token */
        if (i < len && sp < 0) {
            i++;
            continue;
        }
        if (i > run) {
            rc = encode_raw(t, text + run, i - run, t->add_space_prefix && prev_special, &ids);
            prev_special = false;
        }
        if (sp < 0 || rc != PB_OK)
            break; /* i == len */
        rc = tok_ids_push(&ids, sp);
        prev_special = true;
        i += t->tok[sp].s.len;
        run = i;
    }
    if (rc == PB_OK && add_special && t->add_eos && t->eos >= 0)
        rc = tok_ids_push(&ids, t->eos);
    if (rc) {
        free(ids.v);
        if (rc == PB_ERANGE)
            return pb_fail(err, rc, "the pre-tokenizer's pattern hit its match limit on this text (%zu bytes)", len);
        return pb_fail(err, rc, "out of memory tokenizing %zu bytes", len);
    }
    *out = ids.v;
    *n_out = ids.n;
    return PB_OK;
}

static size_t put(char *buf, size_t size, const char *s, size_t n)
{
    if (size)
        memcpy(buf, s, n < size ? n : size);
    return n;
}

/* SentencePiece normal token: the visible-space mark decodes to a space. */
static size_t spm_decode_text(const char *text, size_t len, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        bool mark = len - i >= 3 && memcmp(text + i, SPACE_MARK, 3) == 0;
        if (o < size)
            buf[o] = mark ? ' ' : text[i];
        o++;
        i += mark ? 3 : 1;
    }
    return o;
}

size_t tok_piece(const struct tokenizer *t, int32_t id, bool special, char *buf, size_t size)
{
    if (id < 0 || id >= t->n)
        return 0;
    const struct tok_entry *e = &t->tok[id];
    switch (e->attr) {
    case TOK_BYTE: {
        unsigned v;
        if (e->s.len == 6 && sscanf(e->s.p, "<0x%02X>", &v) == 1) {
            char b = (char)v;
            return put(buf, size, &b, 1);
        }
        return put(buf, size, e->s.p, e->s.len);
    }
    case TOK_CONTROL:
    case TOK_UNKNOWN:
    case TOK_UNUSED:
    case TOK_UNDEFINED:
        return special ? put(buf, size, e->s.p, e->s.len) : 0;
    case TOK_USER_DEFINED:
        return put(buf, size, e->s.p, e->s.len);
    default:
        if (t->kind == TOK_KIND_BPE)
            return bpe_decode_text(t, e->s.p, e->s.len, buf, size);
        return spm_decode_text(e->s.p, e->s.len, buf, size);
    }
}

size_t tok_utf8_complete(const char *buf, size_t len)
{
    /* look back at most 3 bytes for the start of a multi-byte sequence */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)buf[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? len - back : len;
    }
    return len;
}
