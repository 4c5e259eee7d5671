/* GBNF grammars (the request's "grammar" field) compiled and run. The
 * input is grammar text, then optionally a NUL byte and text to match.
 *
 * The compiler must refuse bad grammars with a message and never crash
 * or hang. A grammar that compiles is run on the text: fed whole and fed
 * a byte at a time, the verdicts and completeness agree; and the mask of
 * a small vocabulary (every byte and some multi-byte pieces, in a trie)
 * allows exactly the tokens gmatch_accepts takes, at the start and after
 * the text's accepted prefix. */
#include "fuzz.h"

#include "sampler/grammar.h"

#include <stdlib.h>
#include <string.h>

static const char *const extra[] = {"{\"", "\":", "true", "null", "\\u00e9", "é", "€", "😀", "\xf0\x9f", "  ", "\n",
                                    "abc", "123", "-1", "[]", "{}", "\"\"", "::=", "\xe2\x82"};
#define N_EXTRA (sizeof extra / sizeof extra[0])
#define N_VOCAB ((int)(255 + N_EXTRA))

static struct gtrie *trie;
static char pieces[4096];
static uint32_t off[N_VOCAB + 1];

static void setup(void)
{
    if (trie)
        return;
    size_t n = 0;
    for (int i = 0; i < N_VOCAB; i++) {
        off[i] = (uint32_t)n;
        if (i < 255) {
            pieces[n++] = (char)(i + 1); /* every byte but NUL */
        } else {
            size_t l = strlen(extra[i - 255]);
            memcpy(pieces + n, extra[i - 255], l);
            n += l;
        }
    }
    off[N_VOCAB] = (uint32_t)n;
    pb_err err = {0};
    FUZZ_CHECK(gtrie_build(pieces, off, N_VOCAB, NULL, &trie, &err) == PB_OK, "%s", err.msg);
}

static void check_mask(struct gmatch *m)
{
    uint8_t allowed[N_VOCAB];
    int32_t n = gmatch_mask(m, trie, allowed);
    int32_t count = 0;
    for (int i = 0; i < N_VOCAB; i++) {
        const bool takes = gmatch_accepts(m, pieces + off[i], off[i + 1] - off[i]);
        FUZZ_CHECK(allowed[i] == takes, "token %d: mask %d, accepts %d", i, allowed[i], takes);
        count += allowed[i];
    }
    FUZZ_CHECK(n == count, "mask says %d allowed, %d are", n, count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const char *in = (const char *)data;
    const char *nul = memchr(in, 0, size);
    const size_t glen = nul ? (size_t)(nul - in) : size;
    const char *text = nul ? nul + 1 : NULL;
    const size_t tlen = nul ? size - glen - 1 : 0;
    struct grammar *g = NULL;
    pb_err err = {0};
    if (grammar_parse(in, glen, &g, &err)) {
        FUZZ_CHECK(err.msg[0], "a refusal without a message");
        fuzz_note("refused: %s", err.msg);
        return 0;
    }
    fuzz_note("compiled: %u rules", grammar_n_rules(g));
    struct gmatch *whole, *bytes;
    FUZZ_CHECK(gmatch_create(g, &whole, &err) == PB_OK, "%s", err.msg);
    FUZZ_CHECK(gmatch_create(g, &bytes, &err) == PB_OK, "%s", err.msg);
    check_mask(whole);
    if (text) {
        const bool ok = gmatch_feed(whole, text, tlen);
        size_t i = 0;
        while (i < tlen && gmatch_feed(bytes, text + i, 1))
            i++;
        /* a byte-wise refusal inside a multi-byte character may come at the
         * character's last byte; fed whole, it is refused all the same */
        FUZZ_CHECK(ok == (i == tlen), "whole: %d, byte by byte: %zu of %zu", ok, i, tlen);
        if (ok)
            FUZZ_CHECK(gmatch_complete(whole) == gmatch_complete(bytes), "completeness depends on the cut");
        check_mask(bytes);
    }
    gmatch_free(whole);
    gmatch_free(bytes);
    grammar_free(g);
    return 0;
}
