/* Tokenizers read from GGUF metadata (tokenizer.ggml.*).
 *
 * Supported:
 *  - SentencePiece-style vocabularies (tokenizer.ggml.model = "llama"):
 *    scores, byte fallback, BOS/EOS, the leading-space prefix;
 *  - byte-level BPE (tokenizer.ggml.model = "gpt2"): merges by rank over
 *    the GPT-2 byte-to-unicode mapping, after a pre-tokenizer split chosen
 *    by tokenizer.ggml.pre (Unicode-aware regexes, run by PCRE2);
 *  - WordPiece (tokenizer.ggml.model = "bert", wpm.c): encoders' words
 *    split into the longest vocabulary pieces, [CLS] and [SEP] added.
 * Encoding follows the reference implementation's algorithm so that ids
 * agree with it token for token.
 *
 * Special tokens (control, user-defined) written in the text are matched
 * as single tokens only when the caller passes parse_special; user text
 * does not by default.
 */
#ifndef PLUMB_TOKENIZER_TOKENIZER_H
#define PLUMB_TOKENIZER_TOKENIZER_H

#include "base/err.h"
#include "gguf/gguf.h"
#include "plumb/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tok_kind {
    TOK_KIND_SPM, /* "llama": SentencePiece with byte fallback */
    TOK_KIND_BPE, /* "gpt2": byte-level BPE */
    TOK_KIND_WPM, /* "bert": WordPiece, [CLS] ... [SEP] around the text */
};

/* Token attributes, numbered as GGUF's tokenizer.ggml.token_type. */
enum tok_attr {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER_DEFINED = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6,
};

/* Public: tok_open, tok_free, tok_n_vocab, tok_is_eog, tok_encode,
 * tok_piece (plumb/tokenizer.h). */

int tok_load(const struct gguf_file *f, struct tokenizer **out, pb_err *err);
/* Bytes the loaded tokenizer holds (vocabulary, merges, indexes). */
size_t tok_mem_bytes(const struct tokenizer *t);

enum tok_kind tok_kind(const struct tokenizer *t);
int32_t tok_bos(const struct tokenizer *t); /* -1 when none */
int32_t tok_eos(const struct tokenizer *t); /* -1 when none */
bool tok_add_bos(const struct tokenizer *t);
enum tok_attr tok_attr(const struct tokenizer *t, int32_t id);
/* The token's text as stored in the vocabulary. */
const char *tok_text(const struct tokenizer *t, int32_t id, size_t *len);

/* As tok_encode, but a special token is matched only where literal (len
 * flags, may be NULL) is 0 over all its bytes: for prompts mixing trusted
 * template markup with user text that must not become control tokens. */
int tok_encode_ex(const struct tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                  const uint8_t *literal, int32_t **out, size_t *n_out, pb_err *err);

/* Streaming helper: how many leading bytes of buf end on a complete UTF-8
 * character. A trailing incomplete sequence is held back; invalid bytes
 * are let through so that nothing is held forever. */
size_t tok_utf8_complete(const char *buf, size_t len);

#endif
