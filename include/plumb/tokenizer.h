/* A model's vocabulary: text to token ids and back.
 *
 * The tokenizer is read from a GGUF file's tokenizer.ggml.* metadata (a
 * model, or a vocabulary-only file): SentencePiece vocabularies
 * ("llama") and byte-level BPE ("gpt2", with the pre-tokenizer that
 * tokenizer.ggml.pre names). Ids agree with llama.cpp's token for token.
 * A loaded engine has one (engine_tokenizer).
 */
#ifndef PLUMB_TOKENIZER_H
#define PLUMB_TOKENIZER_H

#include "plumb/base.h"

struct tokenizer;

/* The vocabulary of the GGUF file at path. */
int tok_open(const char *path, struct tokenizer **out, pb_err *err);
void tok_free(struct tokenizer *t);

int32_t tok_n_vocab(const struct tokenizer *t);
/* True for ids that end generation (EOS, EOT, EOM). */
bool tok_is_eog(const struct tokenizer *t, int32_t id);

/* Encodes len bytes of text. add_special adds BOS (and EOS) where the
 * vocabulary says to; parse_special lets special tokens written in the
 * text (such as "<|im_start|>") become their ids. *out (allocated, the
 * caller frees) receives *n_out ids. */
int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
               int32_t **out, size_t *n_out, pb_err *err);

/* The bytes token id stands for when decoded; control and other special
 * tokens give nothing unless special is set, then their text. Writes at
 * most size bytes to buf and returns the piece's full length. */
size_t tok_piece(const struct tokenizer *t, int32_t id, bool special, char *buf, size_t size);

#endif
